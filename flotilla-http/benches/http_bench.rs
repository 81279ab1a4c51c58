//! Load bench of the reference server (filled in below).
fn main() {}
