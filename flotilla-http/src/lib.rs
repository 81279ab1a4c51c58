//! The flotilla reference server (in progress).
#![forbid(unsafe_code)]
