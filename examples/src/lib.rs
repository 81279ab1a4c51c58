//! Runnable examples; see the `examples` target directory.
