//! Provider answers the local store does not reproduce, with AWS S3's exact bodies.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is how a test fails"
)]

use bytes::Bytes;
use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};
use zipkit_domain::Service;
use zipkit_domain::models::BucketCredentials;
use zipkit_storage::BucketLocation;
use zipkit_test_support::canned_http::{CannedHttp, s3_error};
use zipkit_worker::upload::{PartPlan, Target, UploadError, upload};

#[tokio::test]
async fn a_complete_that_answers_200_with_an_error_body_is_a_failure() {
    // S3 may answer CompleteMultipartUpload with 200 and an <Error> body (the status is sent
    // before the work is done). UploadPart (a PUT) is accepted; the completion (a POST) gets that.
    let failure = s3_error(
        "InternalError",
        "We encountered an internal error. Please try again.",
    );
    let server = CannedHttp::start_by(&[
        ("PUT ", 200, &[("ETag", r#""0123456789abcdef""#)], ""),
        ("POST ", 200, &[], &failure),
    ])
    .await;
    let location = BucketLocation {
        service: Service::S3,
        name: "customer-bucket".into(),
        region: "us-east-1".into(),
        r2_account_id: None,
        endpoint_url: Some(server.url().to_owned()),
        force_path_style: true,
        acl: None,
    };
    let credentials = BucketCredentials {
        access_key_id: SecretString::from("AKIAEXAMPLE".to_owned()),
        secret_access_key: SecretString::from("secret".to_owned()),
    };
    let target = Target {
        client: zipkit_storage::BucketClients::new(zipkit_egress::EgressPolicy::new(
            &zipkit_test_support::services::loopback_egress(),
        ))
        .client(&location, &credentials)
        .unwrap(),
        bucket: "customer-bucket".into(),
        key: "archive.zip".into(),
        upload_id: "upload-1".into(),
    };
    let (chunks, rx) = mpsc::channel(2);
    chunks.send(Bytes::from(vec![7u8; 1024])).await.unwrap();
    drop(chunks);
    let (complete, complete_rx) = oneshot::channel();
    complete.send(true).unwrap();
    let mut parts = Vec::new();
    let mut record = |number: i32, etag: String, _size: i64| {
        parts.push((number, etag));
        Box::pin(async { Ok(()) })
            as std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    };
    let result = upload(
        &target,
        rx,
        PartPlan::new(5 * 1024 * 1024, 2, None),
        &mut record,
        complete_rx,
    )
    .await;
    match result {
        Err(UploadError::Complete { code, .. }) => {
            assert_eq!(code.as_deref(), Some("InternalError"))
        }
        other => panic!("expected the completion to fail, got {other:?}"),
    }
    assert_eq!(
        parts,
        [(1, "\"0123456789abcdef\"".to_owned())],
        "the one part was recorded"
    );
}

#[tokio::test]
async fn every_part_is_recorded_once_while_later_parts_keep_uploading() {
    // More parts than may fly at once, and a slow recorder (parts are recorded while the next
    // ones upload): none recorded twice, none lost, and the object is the bytes sent.
    let store = zipkit_test_support::TestBucket::new().await;
    let key = "parts.zip";
    let started = store
        .client()
        .create_multipart_upload()
        .bucket(store.name())
        .key(key)
        .send()
        .await
        .unwrap();
    let target = Target {
        client: store.client().clone(),
        bucket: store.name().to_owned(),
        key: key.into(),
        upload_id: started.upload_id().unwrap().to_owned(),
    };
    let mib = 1024 * 1024;
    let archive: Vec<u8> = (0..6 * 5 * mib + 12_345)
        .map(|i: usize| (i % 251) as u8 ^ (i / 4099) as u8)
        .collect();
    let (chunks, rx) = mpsc::channel(4);
    let feeding = {
        let archive = Bytes::from(archive.clone());
        tokio::spawn(async move {
            for piece in archive.chunks(300_000) {
                chunks.send(Bytes::copy_from_slice(piece)).await.unwrap();
            }
        })
    };
    let (complete, complete_rx) = oneshot::channel();
    complete.send(true).unwrap();
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut record = {
        let recorded = recorded.clone();
        move |number: i32, etag: String, size: i64| {
            let recorded = recorded.clone();
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                recorded.lock().unwrap().push((number, etag, size));
                Ok(())
            }) as std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        }
    };
    let (size, _etag) = upload(
        &target,
        rx,
        PartPlan::new(5 * mib, 2, None),
        &mut record,
        complete_rx,
    )
    .await
    .unwrap();
    feeding.await.unwrap();
    assert_eq!(size as usize, archive.len());
    let mut recorded = recorded.lock().unwrap().clone();
    recorded.sort();
    let numbers: Vec<i32> = recorded.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(numbers, (1..=7).collect::<Vec<_>>(), "each part once");
    assert!(recorded.iter().all(|(_, etag, _)| !etag.is_empty()));
    let sizes: i64 = recorded.iter().map(|(_, _, size)| size).sum();
    assert_eq!(sizes as usize, archive.len());
    assert_eq!(
        store.get(key).await,
        archive,
        "the object is the bytes sent"
    );
}
