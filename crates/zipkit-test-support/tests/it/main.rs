//! The harness tested on the real services it hands out.

mod harness;
