//! Save and Test's capability checks against the real store; a proxy in front of it refuses
//! chosen calls as the store refuses a key whose policy lacks that permission.

use zipkit_domain::models::{BucketCapabilities, StorageClasses};
use zipkit_storage::WRITE_TEST_KEY;
use zipkit_test_support::TestBucket;
use zipkit_test_support::services::{s3_access_key, s3_endpoint, s3_secret_key};
use zipkit_test_support::store_proxy::StoreProxy;

use crate::{credentials, location, loopback};

async fn tested_at(endpoint: &str, bucket: &TestBucket) -> BucketCapabilities {
    loopback()
        .test_bucket(
            &location(bucket.name(), endpoint.to_owned()),
            &credentials(&s3_access_key(), &s3_secret_key()),
        )
        .await
        .expect("the keys may write")
}

/// The test object, as the write test left it, and nothing else in the bucket.
async fn only_the_test_object_is_left(bucket: &TestBucket) {
    assert_eq!(bucket.keys().await, [WRITE_TEST_KEY]);
    assert_eq!(
        bucket.get(WRITE_TEST_KEY).await,
        b"zipkit checked that it can write here.\n"
    );
}

#[tokio::test]
async fn keys_that_may_do_everything_are_found_able_to_and_leave_only_the_test_object() {
    let bucket = TestBucket::new().await;
    let found = tested_at(&s3_endpoint(), &bucket).await;
    assert_eq!(
        found,
        BucketCapabilities {
            write: true,
            read: true,
            list: true,
            abort_multipart: true,
            acl: true,
            full_object_crc32: true,
            upload_part_copy: true,
            tagging: true,
            sse_s3: true,
            sse_kms: true,
            delete: true,
            // The local store, as MinIO, has one class besides STANDARD.
            storage_classes: StorageClasses::default().with("REDUCED_REDUNDANCY"),
        }
    );
    only_the_test_object_is_left(&bucket).await;
}

#[tokio::test]
async fn keys_without_get_object_may_neither_read_nor_copy_a_part() {
    let bucket = TestBucket::new().await;
    let proxy = StoreProxy::start().await;
    proxy.refuse("GetObject", 403, "AccessDenied", None);
    proxy.refuse("HeadObject", 403, "AccessDenied", None);
    let found = tested_at(proxy.url(), &bucket).await;
    assert!(!found.read && !found.full_object_crc32 && !found.upload_part_copy);
    assert!(
        found.write && found.list && found.abort_multipart,
        "{found:?}"
    );
    // Copying a part reads its source: not tried for keys that may not read.
    assert_eq!(proxy.count("UploadPartCopy"), 0);
    only_the_test_object_is_left(&bucket).await;
}

#[tokio::test]
async fn keys_that_may_not_abort_complete_their_upload_into_the_test_object() {
    let bucket = TestBucket::new().await;
    let proxy = StoreProxy::start().await;
    proxy.refuse("AbortMultipartUpload", 403, "AccessDenied", None);
    let found = tested_at(proxy.url(), &bucket).await;
    assert!(!found.abort_multipart);
    assert!(found.upload_part_copy && found.read, "{found:?}");
    let completed: Vec<_> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "CompleteMultipartUpload")
        .map(|c| c.status)
        .collect();
    assert_eq!(completed, [200], "the upload was completed, not left open");
    only_the_test_object_is_left(&bucket).await;
}

#[tokio::test]
async fn a_store_that_cannot_copy_parts_or_keys_that_may_not_list_say_so() {
    let bucket = TestBucket::new().await;
    let proxy = StoreProxy::start().await;
    proxy.refuse("UploadPartCopy", 501, "NotImplemented", None);
    proxy.refuse("ListObjectsV2", 403, "AccessDenied", None);
    proxy.refuse("DeleteObject", 403, "AccessDenied", None);
    let found = tested_at(proxy.url(), &bucket).await;
    assert!(
        !found.upload_part_copy && !found.list && !found.delete,
        "{found:?}"
    );
    assert!(found.read && found.abort_multipart && found.full_object_crc32);
    only_the_test_object_is_left(&bucket).await;
}

/// A store that refuses object tags, encryption headers and storage classes (R2 refuses tags and
/// KMS): found missing, and the test object left plain.
#[tokio::test]
async fn a_store_that_refuses_tags_and_encryption_says_so_and_keeps_its_object_plain() {
    let bucket = TestBucket::new().await;
    let proxy = StoreProxy::start().await;
    proxy.refuse_carrying("PutObject", "x-amz-tagging", 501, "NotImplemented");
    proxy.refuse_carrying(
        "PutObject",
        "x-amz-server-side-encryption",
        400,
        "InvalidArgument",
    );
    proxy.refuse_carrying(
        "PutObject",
        "x-amz-storage-class",
        400,
        "InvalidStorageClass",
    );
    let found = tested_at(proxy.url(), &bucket).await;
    assert_eq!(found.storage_classes, StorageClasses::default());
    assert!(
        !found.tagging && !found.sse_kms && !found.sse_s3,
        "{found:?}"
    );
    assert!(found.read && found.abort_multipart, "{found:?}");
    // The last write to the test object carried no encryption header.
    let last_put = proxy
        .calls()
        .into_iter()
        .rfind(|c| c.operation == "PutObject" && c.status == 200)
        .expect("a write");
    assert!(
        !last_put
            .headers
            .contains_key("x-amz-server-side-encryption")
    );
    assert!(!last_put.headers.contains_key("x-amz-storage-class"));
    only_the_test_object_is_left(&bucket).await;
}
