//! The `flotilla` binary: the reference server (`flotilla serve`, the
//! default) and a command line client of it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    // Crash tests arm fault-injection points through `FAILPOINTS`; the
    // scenario lives as long as the process.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    flotilla_http::cli::main()
}
