//! Operations on accounts, tokens and buckets that the operator CLI runs today and the dashboard
//! will run tomorrow: validation, the bucket write test, and storage, written once.

pub mod buckets;
pub mod passwords;
