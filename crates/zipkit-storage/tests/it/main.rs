//! The storage crate's integration tests against the real S3-compatible store and canned answers.

mod write_test;
