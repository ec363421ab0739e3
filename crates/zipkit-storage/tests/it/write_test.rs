//! The bucket write test against a real S3-compatible store (s3s-fs, which checks signatures).

use zipkit_domain::Service;
use zipkit_domain::values::BucketName;
use zipkit_egress::EgressPolicy;
use zipkit_storage::{BucketClients, BucketLocation, BucketTestError, WRITE_TEST_KEY};
use zipkit_test_support::TestBucket;
use zipkit_test_support::canned_http::{CannedHttp, s3_error};
use zipkit_test_support::internal::InternalService;
use zipkit_test_support::process::free_port;
use zipkit_test_support::services::{s3_access_key, s3_endpoint, s3_secret_key};

use crate::{credentials, location, loopback};

#[tokio::test]
async fn the_right_credentials_pass_and_leave_only_the_probe_object() {
    let bucket = TestBucket::new().await;
    let result = loopback()
        .test_write_access(
            &location(bucket.name(), s3_endpoint()),
            &credentials(&s3_access_key(), &s3_secret_key()),
        )
        .await;
    assert_eq!(result, Ok(()));
    assert_eq!(
        bucket.get(WRITE_TEST_KEY).await,
        b"zipkit checked that it can write here.\n"
    );
    // A second test overwrites the same object instead of piling up new ones.
    loopback()
        .test_write_access(
            &location(bucket.name(), s3_endpoint()),
            &credentials(&s3_access_key(), &s3_secret_key()),
        )
        .await
        .unwrap();
    assert_eq!(bucket.keys().await, [WRITE_TEST_KEY]);
}

#[tokio::test]
async fn a_wrong_secret_says_so_in_plain_words() {
    let bucket = TestBucket::new().await;
    let err = loopback()
        .test_write_access(
            &location(bucket.name(), s3_endpoint()),
            &credentials(&s3_access_key(), "not-the-secret"),
        )
        .await
        .unwrap_err();
    assert_eq!(err, BucketTestError::WrongSecret);
    assert_eq!(
        err.to_string(),
        "The secret access key does not match the access key ID. Check that it was copied completely."
    );
}

/// Answers as AWS S3 does for `code` and checks the explanation.
async fn explained(status: u16, code: &str, headers: &[(&str, &str)]) -> BucketTestError {
    let server = CannedHttp::start(status, headers, &s3_error(code, "recorded AWS answer")).await;
    loopback()
        .test_write_access(
            &location("customer-bucket", server.url().to_owned()),
            &credentials("AKIAEXAMPLE", "secret"),
        )
        .await
        .expect_err("the canned answer is a refusal")
}

#[tokio::test]
async fn each_provider_refusal_is_explained_in_plain_words() {
    assert_eq!(
        explained(403, "InvalidAccessKeyId", &[]).await,
        BucketTestError::UnknownAccessKey
    );
    assert_eq!(
        explained(403, "SignatureDoesNotMatch", &[]).await,
        BucketTestError::WrongSecret
    );
    assert_eq!(
        explained(403, "AccessDenied", &[]).await,
        BucketTestError::AccessDenied
    );
    let missing = explained(404, "NoSuchBucket", &[]).await;
    assert_eq!(
        missing,
        BucketTestError::NoSuchBucket(BucketName::parse("customer-bucket").unwrap())
    );
    assert_eq!(
        missing.to_string(),
        "The bucket `customer-bucket` does not exist. zipkit never creates buckets: create it first, or check its name."
    );
    let region = explained(
        301,
        "PermanentRedirect",
        &[("x-amz-bucket-region", "eu-central-1")],
    )
    .await;
    assert_eq!(
        region,
        BucketTestError::WrongRegion(Some("eu-central-1".into()))
    );
    assert_eq!(
        region.to_string(),
        "The bucket is in another region (eu-central-1). Set the bucket's region to match."
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_names_it() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let err = loopback()
        .test_write_access(
            &location("any-bucket", endpoint.clone()),
            &credentials("a", "b"),
        )
        .await
        .unwrap_err();
    assert_eq!(err, BucketTestError::Unreachable(endpoint.clone()));
    assert!(err.to_string().contains(&endpoint));
}

#[tokio::test]
async fn an_endpoint_outside_the_egress_policy_is_refused_without_a_connection() {
    let internal = InternalService::start().await;
    let port = internal.port();
    let public_only = BucketClients::new(EgressPolicy::public_only());
    for (endpoint, host) in [
        (format!("http://127.0.0.2:{port}"), "127.0.0.2"),
        (format!("http://2130706434:{port}"), "127.0.0.2"),
        (
            format!("http://[::ffff:127.0.0.2]:{port}"),
            "[::ffff:7f00:2]",
        ),
        // A name is checked when it is resolved, on the connection itself.
        (format!("http://localhost:{port}"), "localhost"),
    ] {
        let err = public_only
            .test_write_access(
                &location("any-bucket", endpoint.clone()),
                &credentials("a", "b"),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            BucketTestError::ForbiddenEndpoint(host.to_owned()),
            "{endpoint}"
        );
        assert_eq!(err.job_code(), "bucket_endpoint_forbidden");
    }
    internal.assert_untouched().await;
}

#[test]
fn r2_buckets_use_the_account_endpoint_and_region_auto() {
    let r2 = BucketLocation {
        service: Service::R2,
        name: BucketName::parse("archives").unwrap(),
        region: "auto".into(),
        r2_account_id: Some("0123456789abcdef0123456789abcdef".into()),
        endpoint_url: None,
        force_path_style: false,
        acl: None,
    };
    assert_eq!(
        r2.endpoint().as_deref(),
        Some("https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com")
    );
    let aws = BucketLocation {
        service: Service::S3,
        r2_account_id: None,
        ..r2
    };
    assert_eq!(
        aws.endpoint(),
        None,
        "AWS S3 resolves its endpoint from the region"
    );
}
