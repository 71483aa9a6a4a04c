//! The benchmark runner (see `src/bin/bench.rs`).
