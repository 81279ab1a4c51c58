//! Benchmark harnesses; run them with `cargo bench -p benches`.
