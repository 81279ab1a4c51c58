//! AWS API calls per run (written in the next step).
fn main() {}
