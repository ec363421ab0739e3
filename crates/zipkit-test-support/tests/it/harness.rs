//! The harness cleans up after itself on the real services.

use aws_sdk_s3::primitives::ByteStream;
use zipkit_test_support::{TestBroker, TestBucket, bucket};

#[tokio::test]
async fn a_test_bucket_holds_objects_and_is_deleted_with_them_afterwards() {
    let name = {
        let test_bucket = TestBucket::new().await;
        test_bucket
            .client()
            .put_object()
            .bucket(test_bucket.name())
            .key("dir/héllo.txt")
            .body(ByteStream::from_static(b"hello"))
            .send()
            .await
            .expect("put object");
        assert_eq!(test_bucket.get("dir/héllo.txt").await, b"hello");
        test_bucket.name().to_owned()
    };
    let listed = bucket::client().list_buckets().send().await.unwrap();
    assert!(
        !listed
            .buckets()
            .iter()
            .any(|b| b.name() == Some(name.as_str())),
        "bucket {name} outlived its test"
    );
}

#[tokio::test]
async fn the_store_checks_signatures() {
    let test_bucket = TestBucket::new().await;
    let wrong = bucket::client_with(
        &zipkit_test_support::services::s3_access_key(),
        "not-the-secret",
    );
    let denied = wrong
        .put_object()
        .bucket(test_bucket.name())
        .key("x")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    let err = denied.expect_err("a wrong secret is refused");
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(403), "{err:?}");
}

#[tokio::test]
async fn a_test_vhost_is_deleted_afterwards() {
    let vhost = {
        let broker = TestBroker::new().await;
        assert!(broker.queues().await.is_empty());
        broker.vhost().to_owned()
    };
    // Deleted: a fresh broker sees no such vhost any more (its queue listing would 404).
    let again = TestBroker::new().await;
    assert_ne!(again.vhost(), vhost);
    let api = zipkit_test_support::services::rabbitmq_api_url();
    let url = url::Url::parse(&api).unwrap();
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}:{}/api/vhosts/{vhost}",
            url.host_str().unwrap(),
            url.port().unwrap()
        ))
        .basic_auth(url.username(), url.password())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}
