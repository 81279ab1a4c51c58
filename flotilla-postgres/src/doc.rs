//! The JSONB documents of stored rows, decoded straight into their types.

use flotilla::{Error, Result};
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::error::from_sqlx;

/// The document in `row`'s JSONB column `col` (`None` when it is NULL),
/// parsed from the column's bytes into `T` without an intermediate
/// `serde_json::Value`: a page of 50 runs, or a claim of 500, builds no
/// tree of its documents first. `what` names the document in the error when
/// it does not parse.
pub(crate) fn doc_column<T: DeserializeOwned>(
    row: &PgRow,
    col: &str,
    what: &str,
) -> Result<Option<T>> {
    match row.try_get::<Option<Json<T>>, _>(col) {
        Ok(doc) => Ok(doc.map(|Json(v)| v)),
        // A document that does not parse: a bug or a foreign writer.
        Err(e @ sqlx::Error::ColumnDecode { .. }) => {
            Err(Error::internal(format!("stored {what} is not readable: {e}")).with_source(e))
        }
        Err(e) => Err(from_sqlx(e)),
    }
}

/// The document in `row`'s column `doc`, which the row must have: a NULL
/// there is an error naming `what`.
pub(crate) fn doc_of_row<T: DeserializeOwned>(row: &PgRow, what: &str) -> Result<T> {
    doc_column(row, "doc", what)?
        .ok_or_else(|| Error::internal(format!("a {what} row without its document")))
}
