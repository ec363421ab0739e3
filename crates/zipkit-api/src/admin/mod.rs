//! Operations on buckets, tokens and webhook endpoints that both the operator CLI and the
//! dashboard run: validation, the bucket write test, and storage, written once.

pub mod buckets;
pub mod passwords;
pub mod tokens;
pub mod webhooks;
