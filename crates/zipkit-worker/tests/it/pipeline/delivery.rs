//! The other side of a job: a store that refuses, a broker that goes away, retries through
//! the delay queue, and the signed webhook events.

use std::time::Duration;

use secrecy::SecretString;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::messages::JobMessage;
use zipkit_domain::models::{Bucket, BucketCredentials, Encryption, ResultSettings, Zip};
use zipkit_domain::{Compression, OnError, ZipStatus};
use zipkit_egress::EgressSettings;
use zipkit_test_support::internal::InternalService;
use zipkit_test_support::services::{s3_access_key, s3_secret_key};
use zipkit_test_support::sources::{Behaviour, SourceServer};

use crate::harness::{Harness, loopback};

use super::read_with_python;

#[tokio::test]
async fn a_bucket_endpoint_outside_the_egress_policy_fails_the_job_without_a_connection() {
    let internal = InternalService::start().await;
    let endpoint = internal.url();
    let harness = Harness::start_full(|_| {}, |url| url, EgressSettings::default()).await;
    let bucket = harness.bucket_at(&endpoint).await;
    let zip = harness
        .build_stored(
            &bucket,
            "never.zip",
            &[("https://example.com/a.txt".to_owned(), "a.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(
        zip.error_code.as_deref(),
        Some("bucket_endpoint_forbidden"),
        "{:?}",
        zip.error_message
    );
    internal.assert_untouched().await;
    harness.stop().await;
}

#[tokio::test]
async fn revoked_bucket_keys_fail_the_job_at_once_with_the_providers_code() {
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 3;
        w.retry_backoff_secs = 1;
    })
    .await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let keyring = KeyRing::from_settings(&harness.crypto).unwrap();
    let mut conn = harness.db.connect().await;
    // The secret changes at the provider after the bucket was saved; or the key is deleted.
    let cases = [
        (
            (s3_access_key(), "rotated-elsewhere".to_owned()),
            "SignatureDoesNotMatch",
            "The secret access key does not match the access key ID. Check that it was copied completely.",
        ),
        // AWS answers an unknown key with InvalidAccessKeyId, the local store with a 403 of
        // its own (NotSignedUp): whichever, it is kept.
        (
            ("AKIADELETEDKEY0000".to_owned(), s3_secret_key()),
            "",
            "The credentials are valid but may not write to this bucket.",
        ),
    ];
    for ((key, secret), provider_code, words) in cases {
        let bucket = harness.bucket().await;
        let revoked = BucketCredentials {
            access_key_id: SecretString::from(key),
            secret_access_key: SecretString::from(secret),
        };
        Bucket::update_credentials(
            &mut conn,
            &keyring,
            bucket.project_id,
            bucket.id,
            &revoked,
            None,
        )
        .await
        .unwrap()
        .unwrap();
        let zip = harness
            .build_stored(
                &bucket,
                "denied.zip",
                &[sources.entry("a.txt")],
                OnError::Fail,
            )
            .await;
        assert_eq!(zip.status, ZipStatus::Failed);
        assert_eq!(
            zip.error_code.as_deref(),
            Some("bucket_access_denied"),
            "{:?}",
            zip.error_message
        );
        let message = zip.error_message.unwrap_or_default();
        assert!(message.starts_with(words), "{message}");
        assert!(
            message.contains(&format!("PutObject answered {provider_code}")),
            "the provider's code is kept: {message}"
        );
        assert!(!message.contains("test upload"), "{message}");
        assert_eq!(zip.error_type.as_deref(), Some("api_error"));
        assert_eq!(zip.error_param, None);
        assert_eq!(zip.attempts, 1, "not retried: the key will not come back");
    }
    assert_eq!(harness.broker.depth("zipkit.jobs.dead").await, 0);
    harness.stop().await;
}

/// What a job asks of its archive object reaches the store with it, whether the archive goes up
/// in one request or in parts: Cache-Control, tags, KMS encryption with the job's key and the
/// storage class.
#[tokio::test]
async fn the_archive_object_carries_the_cache_control_tags_and_encryption_the_job_asked_for() {
    let harness = Harness::start().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let sources = SourceServer::start(vec![
        ("small.txt", Behaviour::Serve(b"small".to_vec())),
        (
            "large.bin",
            Behaviour::Serve(super::pseudo_random(6 * 1024 * 1024, 5)),
        ),
    ])
    .await;
    let bucket = harness.bucket_at(proxy.url()).await;
    let settings = ResultSettings {
        download_url_ttl_secs: None,
        cache_control: Some("private, max-age=600".to_owned()),
        tags: [("project", "Q4"), ("owner", "finance team")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        encryption: Some(Encryption::Kms {
            key_id: Some("alias/archives".to_owned()),
        }),
        storage_class: Some("REDUCED_REDUNDANCY".to_owned()),
        expires_in_days: None,
    };
    for (key, source, call) in [
        ("small.zip", "small.txt", "PutObject"),
        ("large.zip", "large.bin", "CreateMultipartUpload"),
    ] {
        let job = (Compression::Store, OnError::Fail, settings.clone());
        let entry = super::sized_entry(&sources, source, source, None);
        let id = harness.submit_asking(&bucket, key, vec![entry], job).await;
        let zip = harness.wait_finished(id).await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        let sent = proxy
            .calls()
            .into_iter()
            .find(|c| c.operation == call && c.status == 200)
            .unwrap_or_else(|| panic!("no {call}: {:?}", proxy.operations()));
        let header = |name: &str| sent.headers.get(name).map(String::as_str);
        assert_eq!(
            header("cache-control"),
            Some("private, max-age=600"),
            "{key}"
        );
        assert_eq!(
            header("x-amz-tagging"),
            Some("owner=finance+team&project=Q4"),
            "{key}"
        );
        assert_eq!(
            header("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{key}"
        );
        let class = header("x-amz-storage-class");
        assert_eq!(class, Some("REDUCED_REDUNDANCY"), "{key}");
        assert_eq!(
            header("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("alias/archives"),
            "{key}"
        );
        // The store keeps what it supports of it.
        let head = harness.store.head(key).await;
        assert_eq!(head.cache_control(), Some("private, max-age=600"));
    }
    harness.stop().await;
}

/// An archive asked to expire is deleted by a sweeper once its days are up, exactly once, and
/// only it; from then on no link is made for it.
#[tokio::test]
async fn an_archive_asked_to_expire_is_deleted_when_its_days_are_up_and_not_before() {
    use diesel_async::RunQueryDsl;
    let harness = Harness::start().await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket().await;
    let expiring = ResultSettings {
        expires_in_days: Some(1),
        ..ResultSettings::default()
    };
    let mut ids = Vec::new();
    for key in ["due.zip", "not-yet.zip"] {
        let job = (Compression::Store, OnError::Fail, expiring.clone());
        let entry = super::sized_entry(&sources, "a.txt", "a.txt", None);
        let id = harness.submit_asking(&bucket, key, vec![entry], job).await;
        assert_eq!(harness.wait_finished(id).await.status, ZipStatus::Succeeded);
        ids.push(id);
    }
    let sweeper = harness.sweeper();
    assert_eq!(sweeper.expire_once().await, 0, "a day has not passed");
    // The first job finished two days ago.
    let mut conn = harness.db.connect().await;
    diesel::sql_query("UPDATE zips SET finished_at = now() - interval '2 days' WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(ids[0])
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(sweeper.expire_once().await, 1);
    assert!(!harness.store.has("due.zip").await, "deleted");
    assert!(harness.store.has("not-yet.zip").await, "kept");
    assert_eq!(sweeper.expire_once().await, 0, "taken once");
    let sources = Zip::download_sources(&mut conn, &ids).await.unwrap();
    let due = sources.iter().find(|s| s.zip_id == ids[0]).unwrap();
    assert!(due.archive_deleted_at.is_some());
    let kept = sources.iter().find(|s| s.zip_id == ids[1]).unwrap();
    assert_eq!(kept.archive_deleted_at, None);
    harness.stop().await;
}

#[tokio::test]
async fn a_store_that_answers_the_same_500_again_is_not_asked_a_third_time() {
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 5;
        w.retry_backoff_secs = 1;
    })
    .await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket_at(proxy.url()).await;
    proxy.refuse("PutObject", 500, "InternalError", None);
    let zip = harness
        .build_stored(
            &bucket,
            "refused.zip",
            &[sources.entry("a.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("bucket_unavailable"));
    assert_eq!(
        zip.attempts, 2,
        "retried once; the same answer again is final"
    );
    assert!(
        zip.error_message
            .as_deref()
            .is_some_and(|m| m.contains("InternalError")),
        "{:?}",
        zip.error_message
    );
    // A store that had a moment: the answer differs on the next attempt, which succeeds.
    proxy.clear();
    proxy.refuse("PutObject", 500, "InternalError", Some(3));
    let zip = harness
        .build_stored(
            &bucket,
            "moment.zip",
            &[sources.entry("a.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2);
    harness.stop().await;
}

#[tokio::test]
async fn a_job_failing_transiently_is_retried_through_the_delay_queue_then_dead_lettered() {
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 2;
        w.retry_backoff_secs = 1;
    })
    .await;
    let per_job = zipkit_worker::download::ATTEMPTS as usize;
    let sources = SourceServer::start(vec![
        // Down for the whole first attempt, up during the second.
        (
            "flaky.txt",
            Behaviour::FailThenServe(per_job + 1, b"second time lucky".to_vec()),
        ),
        ("down.txt", Behaviour::Status(503)),
    ])
    .await;
    let bucket = harness.bucket().await;
    let zip = harness
        .build_stored(
            &bucket,
            "retried.zip",
            &[sources.entry("flaky.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2);
    assert_eq!(sources.hits("flaky.txt"), per_job + 2);
    assert_eq!(
        read_with_python(&harness.store.get("retried.zip").await)["flaky.txt"],
        b"second time lucky"
    );
    assert_eq!(harness.broker.depth("zipkit.jobs.dead").await, 0);

    let zip = harness
        .build_stored(
            &bucket,
            "down.zip",
            &[sources.entry("down.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.attempts, 2, "max_attempts");
    assert_eq!(
        zip.error_code.as_deref(),
        Some("source_unavailable"),
        "the last error"
    );
    assert_eq!(sources.hits("down.txt"), 2 * per_job);
    let dead = harness
        .broker
        .take("zipkit.jobs.dead", Duration::from_secs(5))
        .await
        .expect("the exhausted job's message is dead-lettered");
    let message = JobMessage::from_bytes(&dead.body).unwrap();
    assert_eq!(message.zip_id, zip.id);
    assert_eq!(message.attempt, 2);
    harness.stop().await;
}

#[tokio::test]
async fn a_finished_zip_sends_a_signed_event_retried_after_the_receiver_fails() {
    use zipkit_domain::models::{NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint};
    use zipkit_domain::webhooks::{SIGNATURE_HEADER, verify};
    use zipkit_test_support::receiver::WebhookReceiver;

    let harness = Harness::start().await;
    let receiver = WebhookReceiver::start(1).await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket().await;
    let secret = SecretString::from("whsec_test_secret".to_owned());
    let endpoint = {
        let mut conn = harness.db.connect().await;
        let keyring = KeyRing::from_settings(&harness.crypto).unwrap();
        WebhookEndpoint::create(
            &mut conn,
            &keyring,
            NewWebhookEndpoint {
                project_id: bucket.project_id,
                url: receiver.url(),
                description: "test receiver",
                signing_secret: &secret,
            },
        )
        .await
        .unwrap()
    };
    let zip = harness
        .build_stored(
            &bucket,
            "hooked.zip",
            &[sources.entry("a.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);

    let received = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 2, "a 500, then the retry");
    assert_eq!((received[0].status, received[1].status), (500, 200));
    assert_eq!(
        received[0].body, received[1].body,
        "the same event, byte for byte"
    );
    let now = chrono::Utc::now().timestamp();
    for request in &received {
        let header = &request.headers[&SIGNATURE_HEADER.to_ascii_lowercase()];
        assert!(
            verify("whsec_test_secret", header, &request.body, now, 300),
            "{header}"
        );
        assert!(!verify("whsec_wrong", header, &request.body, now, 300));
    }
    let event: serde_json::Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "zip.completed");
    assert_eq!(event["data"]["object"]["id"], zip.id.to_string());
    assert_eq!(event["data"]["object"]["status"], "succeeded");
    assert_eq!(event["data"]["object"]["result"]["entries"], 1);
    let event_id = event["id"].as_str().unwrap();
    assert!(event_id.starts_with("evt_"));

    // Recorded: one delivery, delivered, with both attempts.
    let mut conn = harness.db.connect().await;
    let mut deliveries = Vec::new();
    for _ in 0..50 {
        deliveries = WebhookDelivery::for_event(&mut conn, event_id)
            .await
            .unwrap();
        if deliveries.first().is_some_and(|d| d.attempts == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].endpoint_id, endpoint.id);
    assert_eq!(deliveries[0].state, zipkit_domain::DeliveryState::Succeeded);
    assert_eq!(deliveries[0].last_status_code, Some(200));
    let attempts = WebhookDelivery::attempts(&mut conn, deliveries[0].id)
        .await
        .unwrap();
    let codes: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(200)]);
    harness.stop().await;
}

#[tokio::test]
async fn webhooks_to_internal_addresses_are_refused_in_every_form_without_a_connection() {
    use zipkit_domain::models::{NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint};

    let (harness, bucket, _store) = Harness::start_guarded().await;
    let internal = InternalService::start().await;
    let port = internal.port();
    let sources = SourceServer::start_on(
        "127.0.0.3",
        vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))],
    )
    .await;
    // Stored as they might have been before the API refused them, or under another policy.
    let urls = [
        format!("https://127.0.0.2:{port}/x"),
        format!("https://2130706434:{port}/x"),
        format!("https://[::ffff:127.0.0.2]:{port}/x"),
        format!("https://localhost:{port}/x"),
    ];
    {
        let mut conn = harness.db.connect().await;
        let keyring = KeyRing::from_settings(&harness.crypto).unwrap();
        for url in &urls {
            WebhookEndpoint::create(
                &mut conn,
                &keyring,
                NewWebhookEndpoint {
                    project_id: bucket.project_id,
                    url: url.as_str(),
                    description: "internal",
                    signing_secret: &SecretString::from("whsec_x".to_owned()),
                },
            )
            .await
            .unwrap();
        }
    }
    let zip = harness
        .build_stored(
            &bucket,
            "hooked.zip",
            &[sources.entry("a.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);

    let mut conn = harness.db.connect().await;
    let mut attempts = Vec::new();
    for _ in 0..100 {
        attempts.clear();
        for endpoint in WebhookEndpoint::list(&mut conn, bucket.project_id)
            .await
            .unwrap()
        {
            for delivery in WebhookDelivery::recent(&mut conn, endpoint.id, 10)
                .await
                .unwrap()
            {
                attempts.extend(
                    WebhookDelivery::attempts(&mut conn, delivery.id)
                        .await
                        .unwrap(),
                );
            }
        }
        if attempts.len() >= urls.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A refused address is final: one attempt each, no retry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(attempts.len(), urls.len(), "one attempt per endpoint");
    for endpoint in WebhookEndpoint::list(&mut conn, bucket.project_id)
        .await
        .unwrap()
    {
        let deliveries = WebhookDelivery::recent(&mut conn, endpoint.id, 10)
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].attempts, 1, "{}", endpoint.url);
        assert_eq!(
            deliveries[0].state,
            zipkit_domain::DeliveryState::Failed,
            "{}",
            endpoint.url
        );
    }
    for attempt in &attempts {
        assert_eq!(attempt.status_code, None);
        let error = attempt.error.as_deref().unwrap_or_default();
        assert!(error.contains("internal"), "{error}");
    }
    internal.assert_untouched().await;
    harness.stop().await;
}

#[tokio::test]
async fn the_consumer_reconnects_after_losing_the_broker_and_takes_new_jobs() {
    use zipkit_test_support::proxy::TcpProxy;
    use zipkit_test_support::services::amqp_host_port;

    let mut proxy = TcpProxy::closed(amqp_host_port());
    proxy.open().await;
    let port = proxy.port();
    let harness = Harness::start_full(
        |_| {},
        |url| url.replace(&amqp_host_port(), &format!("127.0.0.1:{port}")),
        loopback(),
    )
    .await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket().await;
    let entries = [sources.entry("a.txt")];
    let first = harness
        .submit(
            &bucket,
            "before.zip",
            &entries,
            Compression::Store,
            OnError::Fail,
        )
        .await;
    assert_eq!(
        harness.wait_finished(first).await.status,
        ZipStatus::Succeeded
    );

    // The broker "goes away" (every connection through the proxy is cut), then comes back.
    // The probes say so: live all along, not ready while the broker is away, ready again after.
    assert_eq!(harness.readyz_becomes(200).await["checks"]["broker"], "ok");
    proxy.close();
    let down = harness.readyz_becomes(503).await;
    assert_eq!(down["checks"]["broker"], "down", "{down}");
    assert_eq!(down["checks"]["database"], "ok", "{down}");
    assert_eq!(harness.probe("/healthz").await.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = harness
        .submit(
            &bucket,
            "during.zip",
            &entries,
            Compression::Store,
            OnError::Fail,
        )
        .await;
    proxy.open().await;
    let after = harness
        .submit(
            &bucket,
            "after.zip",
            &entries,
            Compression::Store,
            OnError::Fail,
        )
        .await;
    for id in [during, after] {
        let zip = harness.wait_finished(id).await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    }
    harness.readyz_becomes(200).await;
    assert_eq!(
        read_with_python(&harness.store.get("after.zip").await)["a.txt"],
        b"alpha"
    );
    harness.stop().await;
}
