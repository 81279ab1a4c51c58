//! The `flotilla` binary: the reference server (`flotilla serve`, the
//! default) and a command line client of it.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    flotilla_http::cli::main()
}
