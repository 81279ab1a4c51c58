//! The local-process engine and its log source.
//!
//! [`LocalEngine`] runs each run attempt's command as a child process
//! (`sh -c <command>`) on this host, in its own process group, with its
//! output appended to a file under the engine's data directory;
//! [`LocalLogSource`] reads those files back page by page. The image is
//! recorded and ignored: nothing is pulled or isolated, so this engine is
//! for development, tests and single-host installations.
//!
//! On-disk layout under `data_dir`:
//!
//! ```text
//! runs/<run_id>/attempt-<n>/        working directory of attempt n
//! runs/<run_id>/attempt-<n>/spawned.json   written before submit returns: pid, engine_ref, ...
//! runs/<run_id>/attempt-<n>/output.log     stdout and stderr, interleaved as written
//! runs/<run_id>/attempt-<n>/exit-status    written by the attempt's supervisor: the command's `$?`
//! runs/<run_id>/attempt-<n>/stop.json      written when flotilla stops it: terminate or deadline
//! runs/<run_id>/attempt-<n>/exit.json      written when the engine saw it end (after the output upload): exit code, failure, output_url, ...
//! runs/<run_id>/attempt-<n>/input/         the unpacked input zip (with artifacts)
//! runs/<run_id>/attempt-<n>/output/        what the job leaves here is zipped and uploaded
//! ```
//!
//! The JSON files make submit idempotent across engine objects on the
//! same directory (a restarted server never starts an attempt twice) and
//! let a new engine object answer polls for attempts an earlier one
//! started; `exit-status`, written by the attempt's own supervisor process
//! (see `supervisor.rs`), keeps the real exit status of an attempt that
//! ended while no server was running.

mod engine;
mod exit;
mod logs;
mod supervisor;

pub use engine::{DEFAULT_INHERITED_ENV, ENV_INPUT_DIR, ENV_OUTPUT_DIR, LocalConfig, LocalEngine};
pub use logs::LocalLogSource;
