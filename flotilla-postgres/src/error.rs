//! Mapping of sqlx failures onto `flotilla::Error` kinds.

use flotilla::Error;

/// Maps a sqlx error onto the flotilla kind a caller reacts to.
pub(crate) fn from_sqlx(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let msg = db.message().to_string();
            let err = match code.as_str() {
                // unique_violation
                "23505" => Error::conflict(format!("already exists: {msg}")),
                // foreign key, not null, check
                c if c.starts_with("23") => Error::invalid(format!("rejected: {msg}")),
                // serialization failure, deadlock: retry
                "40001" | "40P01" => Error::unavailable(format!("database conflict, retry: {msg}")),
                // data exceptions (bad text encoding, NUL bytes, out of range)
                c if c.starts_with("22") => Error::invalid(format!("invalid value: {msg}")),
                // connection exceptions, insufficient resources, operator
                // intervention (shutdown, restart), cancelled statements
                c if c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57")
                    || c.starts_with("58") =>
                {
                    Error::unavailable(format!("database unavailable: {msg}"))
                }
                _ => Error::internal(format!("database error {code}: {msg}")),
            };
            err.with_source(e)
        }
        sqlx::Error::RowNotFound => Error::not_found("not found").with_source(e),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
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

pub(crate) use flotilla::validate::check_no_nul as check_text;
