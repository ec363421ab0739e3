//! The worker's integration tests, one binary: each file a module. Jobs built end to end on the
//! real services, uploads against the real store, ZIP64 archives, and the binary itself.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside a #[test] may unwrap too: a panic is how a test fails"
)]

mod binary;
mod harness;
mod pipeline;
mod upload;
mod zip64;
