//! PostgreSQL benchmark (work in progress).
fn main() {}
