//! The storage crate's integration tests against the real S3-compatible store and canned answers.

mod capabilities;
mod write_test;

use secrecy::SecretString;
use zipkit_domain::Service;
use zipkit_domain::models::BucketCredentials;
use zipkit_domain::values::BucketName;
use zipkit_egress::EgressPolicy;
use zipkit_storage::{BucketClients, BucketLocation};
use zipkit_test_support::services::loopback_egress;

pub fn location(bucket: &str, endpoint: String) -> BucketLocation {
    BucketLocation {
        service: Service::S3,
        name: BucketName::parse(bucket).expect("a valid bucket name"),
        region: "us-east-1".into(),
        r2_account_id: None,
        endpoint_url: Some(endpoint),
        force_path_style: true,
        acl: None,
    }
}

/// Bucket clients for the test store, which is on loopback.
pub fn loopback() -> BucketClients {
    BucketClients::new(EgressPolicy::new(&loopback_egress()))
}

pub fn credentials(access: &str, secret: &str) -> BucketCredentials {
    BucketCredentials {
        access_key_id: SecretString::from(access.to_owned()),
        secret_access_key: SecretString::from(secret.to_owned()),
    }
}
