//! The worker's integration tests, one binary: each file a module. Jobs built end to end on the
//! real services, uploads against the real store, ZIP64 archives, and the binary itself.

mod binary;
mod harness;
mod pipeline;
mod upload;
mod zip64;
