//! The local-process engine and its log source.

mod engine;
mod logs;

pub use engine::{LocalConfig, LocalEngine};
pub use logs::LocalLogSource;
