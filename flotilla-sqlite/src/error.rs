//! Mapping of sqlx / SQLite failures onto `flotilla::Error` kinds.

use flotilla::Error;
use sqlx::error::ErrorKind as DbKind;

/// SQLite primary result codes (the low byte of an extended code) that mean
/// "try again later": BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN, PROTOCOL.
const TRANSIENT: [i64; 7] = [5, 6, 7, 10, 13, 14, 15];

/// Maps a sqlx error onto the flotilla kind a caller reacts to.
pub(crate) fn from_sqlx(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(db) => {
            let msg = db.message().to_string();
            let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            let err = match db.kind() {
                DbKind::UniqueViolation => Error::conflict(format!("already exists: {msg}")),
                DbKind::ForeignKeyViolation | DbKind::NotNullViolation | DbKind::CheckViolation => {
                    Error::invalid(format!("rejected: {msg}"))
                }
                _ if TRANSIENT.contains(&(code & 0xff)) => {
                    Error::unavailable(format!("database unavailable (SQLite code {code}): {msg}"))
                }
                _ => Error::internal(format!("database error (SQLite code {code}): {msg}")),
            };
            err.with_source(e)
        }
        sqlx::Error::RowNotFound => Error::not_found("not found").with_source(e),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => {
            let msg = format!("database unavailable: {e}");
            Error::unavailable(msg).with_source(e)
        }
        sqlx::Error::Configuration(_) => {
            let msg = format!("database configuration: {e}");
            Error::invalid(msg).with_source(e)
        }
        _ => {
            let msg = format!("database: {e}");
            Error::internal(msg).with_source(e)
        }
    }
}

/// `e` mapped as [`from_sqlx`] does, but a unique violation becomes a
/// `Conflict` saying `message()` (which names the field), the database's
/// error kept as its source.
pub(crate) fn conflict_as(e: sqlx::Error, message: impl FnOnce() -> String) -> Error {
    let err = from_sqlx(e);
    if err.kind() == flotilla::ErrorKind::Conflict {
        Error::conflict(message()).with_source(err)
    } else {
        err
    }
}

/// Maps a migration failure.
pub(crate) fn from_migrate(e: sqlx::migrate::MigrateError) -> Error {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => {
            let mapped = from_sqlx(inner);
            let msg = format!("migration failed: {}", mapped.message());
            Error::new(mapped.kind(), msg).with_source(mapped)
        }
        other => {
            let msg = format!("migration failed: {other}");
            Error::internal(msg).with_source(other)
        }
    }
}

/// A serde failure on a stored document: a bug or a foreign writer.
pub(crate) fn from_json(what: &str, e: serde_json::Error) -> Error {
    Error::internal(format!("stored {what} is not readable: {e}")).with_source(e)
}

pub(crate) use flotilla::validate::check_no_nul as check_text;

/// The same failure again, for every caller that shared it (a batch whose
/// commit failed): same kind, same message.
pub(crate) fn again(e: &Error) -> Error {
    Error::new(e.kind(), e.message().to_string())
}
