//! Sources that fail, stall, break, wait, grow past a limit or point inside the network: what
//! the job does with each, and what it reports.

use std::time::Duration;

use zipkit_domain::models::Zip;
use zipkit_domain::values::BucketName;
use zipkit_domain::{Compression, OnError, Service, ZipStatus};
use zipkit_test_support::sources::{Behaviour, SourceServer};

use crate::harness::Harness;

use super::{pseudo_random, read_with_python};

#[tokio::test]
async fn a_missing_source_fails_the_job_with_its_param_or_is_skipped_when_asked() {
    let harness = Harness::start().await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let bucket = harness.bucket().await;
    let entries = [sources.entry("a.txt"), sources.entry("missing.txt")];

    let failed = harness
        .build_stored(&bucket, "fail.zip", &entries, OnError::Fail)
        .await;
    assert_eq!(failed.status, ZipStatus::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("source_not_found"));
    assert_eq!(failed.error_type.as_deref(), Some("invalid_request_error"));
    assert_eq!(failed.error_param.as_deref(), Some("urls[1]"));
    assert!(
        !harness.store.has("fail.zip").await,
        "a failed job leaves no archive behind"
    );

    let skipped = harness
        .build_stored(&bucket, "skip.zip", &entries, OnError::Skip)
        .await;
    assert_eq!(
        skipped.status,
        ZipStatus::Succeeded,
        "{:?}",
        skipped.error_message
    );
    assert_eq!(skipped.result_entries, Some(1));
    let read = read_with_python(&harness.store.get("skip.zip").await);
    assert_eq!(read.keys().collect::<Vec<_>>(), ["a.txt"]);
    let mut conn = harness.db.connect().await;
    let left_out = harness.skipped(skipped.id).await;
    assert_eq!(left_out.len(), 1);
    assert_eq!(left_out[0].error_code.as_deref(), Some("source_not_found"));

    // Skipping every source leaves nothing to archive: a failure, not an empty archive.
    let nothing_left = harness
        .build_stored(
            &bucket,
            "nothing.zip",
            &[sources.entry("missing.txt"), sources.entry("gone.txt")],
            OnError::Skip,
        )
        .await;
    assert_eq!(nothing_left.status, ZipStatus::Failed);
    assert_eq!(
        nothing_left.error_code.as_deref(),
        Some("all_sources_skipped")
    );
    assert_eq!(
        nothing_left.error_type.as_deref(),
        Some("invalid_request_error")
    );
    let left_out = Zip::skipped_entries(&mut conn, &[nothing_left.id])
        .await
        .unwrap()
        .remove(&nothing_left.id)
        .unwrap_or_default();
    assert_eq!(left_out.count, 2, "each source's reason is kept");
    assert_eq!(left_out.first.len(), 2);
    // And reported: the job object (the API's and the webhook's) lists them under `error`.
    let bucket_ref = zipkit_domain::views::BucketRef {
        service: Service::S3,
        name: BucketName::parse("any").unwrap(),
    };
    let object =
        zipkit_domain::views::ZipObject::new(nothing_left.clone(), bucket_ref, None, left_out);
    let object = serde_json::to_value(&object).unwrap();
    let reported: Vec<(&str, &str)> = object["error"]["skipped"]
        .as_array()
        .expect("error.skipped")
        .iter()
        .map(|s| (s["filename"].as_str().unwrap(), s["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reported,
        [
            ("missing.txt", "source_not_found"),
            ("gone.txt", "source_not_found")
        ],
        "{object}"
    );
    assert!(
        !harness.store.has("nothing.zip").await,
        "no empty archive is written"
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_egress_policy_refuses_internal_sources_in_every_form_and_allows_exactly_the_listed_network()
 {
    // The policy lists only 127.0.0.3/32: the store is reached there through a forwarder, and
    // one source server listens there; the other listens on 127.0.0.1, outside the list.
    let (harness, bucket, _store) = Harness::start_guarded().await;
    let internal = SourceServer::start(vec![(
        "a.txt",
        Behaviour::Serve(b"secret internal data".to_vec()),
    )])
    .await;
    let by_address = internal.url("a.txt");
    let port = by_address
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let by_name = by_address.replace("127.0.0.1", "localhost");
    let allowed = SourceServer::start_on(
        "127.0.0.3",
        vec![
            ("ok.txt", Behaviour::Serve(b"public enough".to_vec())),
            ("to-address", Behaviour::Redirect(by_address.clone())),
            ("to-name", Behaviour::Redirect(by_name.clone())),
        ],
    )
    .await;

    for url in [
        by_address.clone(),
        by_name,
        format!("http://2130706433:{port}/files/a.txt"),
        format!("http://0x7f.1:{port}/files/a.txt"),
        format!("http://0177.0.0.1:{port}/files/a.txt"),
        format!("http://[::ffff:127.0.0.1]:{port}/files/a.txt"),
        allowed.url("to-address"),
        allowed.url("to-name"),
    ] {
        let zip = harness
            .build_stored(
                &bucket,
                "guarded.zip",
                &[(url.clone(), "a.txt")],
                OnError::Fail,
            )
            .await;
        assert_eq!(zip.status, ZipStatus::Failed, "{url}");
        assert_eq!(
            zip.error_code.as_deref(),
            Some("source_address_forbidden"),
            "{url}: {:?}",
            zip.error_message
        );
        assert_eq!(zip.error_param.as_deref(), Some("urls[0]"));
    }
    assert_eq!(
        internal.hits("a.txt"),
        0,
        "the internal source was never contacted"
    );
    assert_eq!(allowed.hits("to-address"), 1);

    // The listed network works, for the store and for a source.
    let zip = harness
        .build_stored(
            &bucket,
            "allowed.zip",
            &[allowed.entry("ok.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let read = read_with_python(&harness.store.get("allowed.zip").await);
    assert_eq!(read["ok.txt"], b"public enough");
    harness.stop().await;
}

#[tokio::test]
async fn a_source_that_fails_then_recovers_is_retried_and_one_that_keeps_failing_is_not_forever() {
    let harness = Harness::start().await;
    let sources = SourceServer::start(vec![
        (
            "flaky.txt",
            Behaviour::FailThenServe(2, b"eventually".to_vec()),
        ),
        ("down.txt", Behaviour::Status(503)),
    ])
    .await;
    let bucket = harness.bucket().await;
    let zip = harness
        .build_stored(
            &bucket,
            "flaky.zip",
            &[sources.entry("flaky.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(sources.hits("flaky.txt"), 3, "two 500s, then the file");
    assert_eq!(
        read_with_python(&harness.store.get("flaky.zip").await)["flaky.txt"],
        b"eventually"
    );

    let zip = harness
        .build_stored(
            &bucket,
            "down.zip",
            &[sources.entry("down.txt")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_unavailable"));
    assert_eq!(
        sources.hits("down.txt"),
        zipkit_worker::download::ATTEMPTS as usize
    );
    harness.stop().await;
}

#[tokio::test]
async fn with_skip_a_source_that_stops_before_its_length_is_left_out_and_reported() {
    // Cut before any part is full, after one part went up, and after two (parts of 5 MiB): not a
    // byte of it stays for any reader, those walking local headers included.
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 3;
        w.retry_backoff_secs = 1;
        w.part_size_mib = 5;
    })
    .await;
    let whole = pseudo_random(16 * 1024 * 1024, 7);
    let cuts = [120_000, 6 * 1024 * 1024, 11 * 1024 * 1024];
    let mut files = vec![
        ("a.txt".to_owned(), Behaviour::Serve(b"alpha".to_vec())),
        ("c.txt".to_owned(), Behaviour::Serve(b"gamma".repeat(1000))),
    ];
    for cut in cuts {
        files.push((
            format!("cut-{cut}.bin"),
            Behaviour::Truncated {
                bytes: whole.clone(),
                cut,
            },
        ));
    }
    let sources =
        SourceServer::start(files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect()).await;
    let bucket = harness.bucket().await;
    for compression in [Compression::Store, Compression::Deflate] {
        for cut in cuts {
            let key = format!("cut-{cut}-{compression:?}.zip");
            let cut_name = format!("cut-{cut}.bin");
            let id = harness
                .submit(
                    &bucket,
                    &key,
                    &[
                        sources.entry("a.txt"),
                        (sources.url(&cut_name), "cut.bin"),
                        sources.entry("c.txt"),
                    ],
                    compression,
                    OnError::Skip,
                )
                .await;
            let zip = harness.wait_finished(id).await;
            assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
            assert_eq!(zip.attempts, 1);
            assert_eq!(zip.result_entries, Some(2));
            let read = read_with_python(&harness.store.get(&key).await);
            assert_eq!(
                read.keys().collect::<Vec<_>>(),
                ["a.txt", "c.txt"],
                "{compression:?}, cut at {cut}"
            );
            assert_eq!(read["c.txt"], b"gamma".repeat(1000));
            let left_out = harness.skipped(id).await;
            assert_eq!(left_out.len(), 1);
            assert_eq!(
                left_out[0].error_code.as_deref(),
                Some("source_unreachable")
            );
        }
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_source_that_keeps_the_job_waiting_fails_for_good_after_source_wait_secs() {
    let harness = Harness::start_configured(|w| {
        w.max_attempts = 3;
        w.retry_backoff_secs = 1;
        w.source_read_timeout_secs = 1;
        w.source_wait_secs = 3;
    })
    .await;
    let sources = SourceServer::start(vec![(
        "silent.bin",
        Behaviour::Slow {
            chunk: 1024,
            chunks: 10,
            pause: Duration::from_secs(3600),
        },
    )])
    .await;
    let bucket = harness.bucket().await;
    let started = std::time::Instant::now();
    let zip = harness
        .build_stored(
            &bucket,
            "silent.zip",
            &[sources.entry("silent.bin")],
            OnError::Fail,
        )
        .await;
    let took = started.elapsed();
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_stalled"));
    assert!(
        zip.error_message
            .as_deref()
            .is_some_and(|m| m.contains("worker.source_wait_secs")),
        "{:?}",
        zip.error_message
    );
    assert_eq!(zip.attempts, 1, "the job is not retried to wait again");
    assert!(took < Duration::from_secs(10), "held the job {took:?}");
    harness.stop().await;
}

#[tokio::test]
async fn a_broken_download_resumes_with_range_and_if_range() {
    let harness = Harness::start().await;
    let body = pseudo_random(3 * 1024 * 1024 + 17, 7);
    let sources = SourceServer::start(vec![(
        "big.bin",
        Behaviour::BreakThenResume {
            bytes: body.clone(),
            cut: 1024 * 1024,
        },
    )])
    .await;
    let bucket = harness.bucket().await;
    let zip = harness
        .build_stored(
            &bucket,
            "resumed.zip",
            &[sources.entry("big.bin")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(sources.hits("big.bin"), 2, "one broken request, one ranged");
    let read = read_with_python(&harness.store.get("resumed.zip").await);
    assert_eq!(read["big.bin"], body, "every byte, none twice");
    assert_eq!(zip.bytes_downloaded, body.len() as i64);
    harness.stop().await;
}

#[tokio::test]
async fn a_broken_download_without_ranges_starts_over_and_checks_the_bytes_already_written() {
    let harness = Harness::start().await;
    let body = pseudo_random(3 * 1024 * 1024 + 5, 11);
    let mut edited = body.clone();
    edited[1000] ^= 0xff; // within the part written before the break
    let sources = SourceServer::start(vec![
        (
            "same.bin",
            Behaviour::BreakThenServe {
                bytes: body.clone(),
                cut: 2 * 1024 * 1024,
                then: body.clone(),
            },
        ),
        (
            "edited.bin",
            Behaviour::BreakThenServe {
                bytes: body.clone(),
                cut: 2 * 1024 * 1024,
                then: edited,
            },
        ),
    ])
    .await;
    let bucket = harness.bucket().await;
    // The same bytes again: the entry is completed from the second download.
    let id = harness
        .submit(
            &bucket,
            "restarted.zip",
            &[sources.entry("same.bin")],
            Compression::Deflate,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(sources.hits("same.bin"), 2, "one broken request, one whole");
    let read = read_with_python(&harness.store.get("restarted.zip").await);
    assert_eq!(read["same.bin"], body, "every byte, none twice");
    assert_eq!(zip.bytes_downloaded, body.len() as i64);
    // Changed bytes: the archive would mix two versions, so the job fails and writes nothing.
    let zip = harness
        .build_stored(
            &bucket,
            "changed.zip",
            &[sources.entry("edited.bin")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_changed"));
    assert_eq!(zip.error_param.as_deref(), Some("urls[0]"));
    assert!(
        !harness.store.has("changed.zip").await,
        "no archive mixing two versions"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_stalled_source_fails_with_source_stalled() {
    let harness = Harness::start_configured(|w| {
        w.stall_window_secs = 1;
        w.stall_min_bytes = 4096;
    })
    .await;
    let sources = SourceServer::start(vec![
        (
            "trickle.bin",
            Behaviour::Slow {
                chunk: 16,
                chunks: 1000,
                pause: Duration::from_millis(100),
            },
        ),
        ("ok.txt", Behaviour::Serve(b"fine".to_vec())),
    ])
    .await;
    let bucket = harness.bucket().await;
    let started = std::time::Instant::now();
    let zip = harness
        .build_stored(
            &bucket,
            "stalled.zip",
            &[sources.entry("ok.txt"), sources.entry("trickle.bin")],
            OnError::Fail,
        )
        .await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_stalled"));
    assert_eq!(zip.error_param.as_deref(), Some("urls[1]"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a trickle of 160 B/s is caught by the 1 s window, not the 100 s it would take"
    );
    assert!(sources.chunks_sent("trickle.bin") < 1000);
    harness.stop().await;
}

#[tokio::test]
async fn sources_over_the_size_limit_are_refused_by_length_or_while_streaming() {
    let harness = Harness::start_configured(|w| w.max_source_bytes = 1024 * 1024).await;
    let sources = SourceServer::start(vec![
        ("ok.txt", Behaviour::Serve(b"small".to_vec())),
        ("known.bin", Behaviour::Serve(vec![1; 2 * 1024 * 1024])),
        (
            "unsized.bin",
            Behaviour::Slow {
                chunk: 64 * 1024,
                chunks: 40,
                pause: Duration::from_millis(1),
            },
        ),
    ])
    .await;
    let bucket = harness.bucket().await;
    // Content-Length says too much: skipped before a byte is read.
    let skipped = harness
        .build_stored(
            &bucket,
            "skip.zip",
            &[sources.entry("known.bin"), sources.entry("ok.txt")],
            OnError::Skip,
        )
        .await;
    assert_eq!(
        skipped.status,
        ZipStatus::Succeeded,
        "{:?}",
        skipped.error_message
    );
    let left_out = harness.skipped(skipped.id).await;
    assert_eq!(left_out[0].error_code.as_deref(), Some("source_too_large"));
    let read = read_with_python(&harness.store.get("skip.zip").await);
    assert_eq!(read.keys().collect::<Vec<_>>(), ["ok.txt"]);
    // No length given: refused once the bytes pass the limit.
    let failed = harness
        .build_stored(
            &bucket,
            "fail.zip",
            &[sources.entry("unsized.bin")],
            OnError::Fail,
        )
        .await;
    assert_eq!(failed.status, ZipStatus::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("source_too_large"));
    assert_eq!(failed.error_param.as_deref(), Some("urls[0]"));
    harness.stop().await;
}
