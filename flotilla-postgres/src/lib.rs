//! PostgreSQL `Store` and `Queue` for flotilla (in progress).
#![forbid(unsafe_code)]
