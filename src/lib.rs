//! End-to-end tests for wsgate live in `tests/`; this crate has no code of its own.
