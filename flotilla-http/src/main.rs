//! The `flotilla` binary: the reference server (`flotilla serve`, the
//! default) and a command line client of it.
#![forbid(unsafe_code)]

/// mimalloc instead of glibc's allocator: the scheduler's hot path
/// allocates and frees `Run` values between workers, and glibc spent a
/// quarter of a burst's time in malloc and free (`benches/benches/scheduler.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Crash tests arm fault-injection points through `FAILPOINTS`; the
    // scenario lives as long as the process.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    flotilla_http::cli::main()
}
