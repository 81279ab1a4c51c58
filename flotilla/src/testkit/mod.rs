//! Conformance suites every backend runs against itself (feature `testkit`).
