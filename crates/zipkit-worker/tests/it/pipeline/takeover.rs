//! Workers that die, stop or are cancelled mid-job: another worker continues the same upload
//! from its recorded parts, and nothing is built or sent twice.

use std::time::Duration;

use zipkit_domain::models::Zip;
use zipkit_domain::{Compression, OnError, ZipStatus};
use zipkit_test_support::sources::{Behaviour, SourceServer};

use crate::harness::Harness;

use super::{pseudo_random, read_with_python};

#[tokio::test]
async fn a_job_cancelled_while_processing_stops_within_seconds_and_writes_no_object() {
    let harness = Harness::start().await;
    let pause = Duration::from_millis(300);
    let sources = SourceServer::start(vec![(
        "slow.bin",
        Behaviour::Slow {
            chunk: 64 * 1024,
            chunks: 200,
            pause,
        },
    )])
    .await;
    let bucket = harness.bucket().await;
    let id = harness
        .submit(
            &bucket,
            "cancelled.zip",
            &[sources.entry("slow.bin")],
            Compression::Store,
            OnError::Fail,
        )
        .await;

    let mut conn = harness.db.connect().await;
    for _ in 0..100 {
        if Zip::find_any(&mut conn, id).await.unwrap().unwrap().status == ZipStatus::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..100 {
        if sources.chunks_sent("slow.bin") >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sources.chunks_sent("slow.bin") >= 3,
        "bytes are flowing before the cancel"
    );
    let cancelled_at = std::time::Instant::now();
    let zip = Zip::cancel(&mut conn, bucket.project_id, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(zip.status, ZipStatus::Cancelled);

    // The worker notices and lets go of the source: no more chunks are sent.
    let mut stopped_after = None;
    let mut last = sources.chunks_sent("slow.bin");
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(700)).await; // over two of the source's pauses
        let now = sources.chunks_sent("slow.bin");
        if now == last {
            stopped_after = Some(cancelled_at.elapsed());
            break;
        }
        last = now;
    }
    let stopped_after = stopped_after.expect("the download stopped");
    assert!(
        last < 200,
        "the source was not read to its end ({last} of 200 chunks)"
    );
    assert!(
        stopped_after < Duration::from_secs(8),
        "stopped within seconds: {stopped_after:?}"
    );
    let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(zip.status, ZipStatus::Cancelled, "cancel is final");
    assert!(
        !harness.store.has("cancelled.zip").await,
        "no archive was completed"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_job_whose_worker_is_killed_mid_job_is_finished_by_another_worker() {
    let harness = Harness::services_only().await;
    let chunks = 40;
    let sources = SourceServer::start(vec![(
        "slow.bin",
        Behaviour::Slow {
            chunk: 64 * 1024,
            chunks,
            pause: Duration::from_millis(100),
        },
    )])
    .await;
    let bucket = harness.bucket().await;
    let mut first = harness.spawn_binary();
    let id = harness
        .submit(
            &bucket,
            "takeover.zip",
            &[sources.entry("slow.bin")],
            Compression::Store,
            OnError::Fail,
        )
        .await;

    // Wait until the first worker is mid-download, then kill it without warning.
    for _ in 0..200 {
        if sources.chunks_sent("slow.bin") >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sources.chunks_sent("slow.bin") >= 5,
        "the first worker started downloading"
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let _second = harness.spawn_binary();
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2, "claimed once by each worker");
    let read = read_with_python(&harness.store.get("takeover.zip").await);
    assert_eq!(read["slow.bin"].len(), chunks * 64 * 1024);
    assert_eq!(
        sources.hits("slow.bin"),
        2,
        "downloaded again from the start by the second worker"
    );
}

/// A 5 MiB-part job on a worker binary behind the counting store proxy: `a.bin` (7 MiB, in parts
/// 1 and 2), `c.bin` (9 MiB, fast, from part 2 into part 4) and `b.bin` (16 MiB, trickling), so
/// the parts holding `a.bin`'s and `c.bin`'s headers go up once those entries are done (parts 1
/// to 3), and part 4, which holds `b.bin`'s, waits. The first worker is killed (SIGKILL) once two
/// parts from the first are recorded (a part is recorded once the next is on its way) and
/// `c.bin` is recorded done; `between` runs before a second worker takes the job over.
/// Returns the finished job, the first upload's id, the archive and the sources (still served).
async fn killed_after_two_parts(
    harness: &Harness,
    proxy: &zipkit_test_support::store_proxy::StoreProxy,
    sources: Sources,
    compression: Compression,
    between: impl FnOnce(&str),
) -> (Zip, String, Vec<u8>, SourceServer) {
    let first = Interruption::Kill;
    takeover_after_parts(harness, proxy, sources, compression, 2, between, first).await
}

/// The sources of a takeover test: `a.bin`, and how `c.bin` (9 MiB of `pseudo_random(_, 3)`,
/// the entry cut by the end of the uploaded parts) answers: what it serves after the first
/// request, and whether it honours `Range`. `b.bin` (16 MiB of `pseudo_random(_, 2)`, trickled)
/// keeps the job going until the first worker is taken out.
struct Sources {
    a: Behaviour,
    c_then: Option<Vec<u8>>,
    c_ranges: bool,
}

impl Sources {
    fn a(a: Behaviour) -> Self {
        Self {
            a,
            c_then: None,
            c_ranges: true,
        }
    }
}

/// Where `c.bin`'s data starts in a stored takeover archive: after `a.bin`'s header (30 bytes, its
/// name and its 9-byte extended timestamp), its 7 MiB, and `c.bin`'s header.
const C_DATA_START: usize = (30 + 5 + 9) + 7 * 1024 * 1024 + (30 + 5 + 9);

/// How the first worker is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interruption {
    /// SIGKILL: the process is gone.
    Kill,
    /// SIGSTOP, and SIGCONT once the second worker has claimed the job: the first comes back
    /// to find its lease lost (a long GC-like pause, a frozen node).
    Pause,
    /// SIGTERM (scale-in, a rollout) with a lease of a minute: the first worker must hand the
    /// job back itself, and exit, for the second to continue it within seconds.
    Term,
}

/// As `killed_after_two_parts`, the first worker taken out by `interruption` once `parts` parts
/// are recorded.
async fn takeover_after_parts(
    harness: &Harness,
    proxy: &zipkit_test_support::store_proxy::StoreProxy,
    Sources {
        a,
        c_then,
        c_ranges,
    }: Sources,
    compression: Compression,
    parts: usize,
    between: impl FnOnce(&str),
    interruption: Interruption,
) -> (Zip, String, Vec<u8>, SourceServer) {
    let mib = 1024 * 1024;
    let sources = SourceServer::start(vec![
        ("a.bin", a),
        (
            "c.bin",
            Behaviour::Trickle {
                bytes: pseudo_random(9 * mib, 3),
                chunk: 256 * 1024,
                pause: Duration::from_millis(1),
                then: c_then,
                ranges: c_ranges,
            },
        ),
        (
            "b.bin",
            Behaviour::Trickle {
                bytes: pseudo_random(16 * mib, 2),
                chunk: 256 * 1024,
                pause: Duration::from_millis(100),
                then: None,
                ranges: true,
            },
        ),
    ])
    .await;
    let bucket = harness.bucket_at(proxy.url()).await;
    // One job at a time: the broker delivers nothing more to the first worker while it holds
    // this job's message (a paused worker would otherwise take the job's next message too).
    let lease = if interruption == Interruption::Term {
        "60"
    } else {
        "3"
    };
    let mut first = harness.spawn_binary_with(&[
        ("ZIPKIT__WORKER__CONCURRENCY", "1"),
        ("ZIPKIT__WORKER__LEASE_SECS", lease),
    ]);
    let id = harness
        .submit(
            &bucket,
            "takeover.zip",
            &[
                sources.entry("a.bin"),
                sources.entry("c.bin"),
                sources.entry("b.bin"),
            ],
            compression,
            OnError::Fail,
        )
        .await;
    let mut conn = harness.db.connect().await;
    let mut upload_id = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
        let c_done = Zip::recorded_entries(&mut conn, id, -1, i64::MAX)
            .await
            .unwrap()
            .iter()
            .any(|e| e.index == 1 && e.state == zipkit_domain::EntryState::Done);
        if let Some(upload) = &zip.upload_id {
            let recorded = Zip::parts(&mut conn, id, upload).await.unwrap();
            let from_first = (1..)
                .zip(&recorded)
                .take_while(|(n, p)| p.part_number == *n)
                .count();
            if from_first >= parts && c_done {
                upload_id = Some(upload.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let upload_id = upload_id.unwrap_or_else(|| {
        panic!(
            "the first worker did not record {parts} parts; the store saw {:?}",
            proxy.operations()
        )
    });
    let first_pid = first.0.id().to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([format!("-{name}"), first_pid.clone()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    };
    match interruption {
        Interruption::Kill => signal("KILL"),
        Interruption::Pause => signal("STOP"),
        Interruption::Term => {
            let asked = std::time::Instant::now();
            signal("TERM");
            let (status, _) =
                zipkit_test_support::process::wait_for_exit(&mut first.0, Duration::from_secs(30));
            assert!(status.success(), "exit {status:?}");
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "the job was handed back at once, not finished first ({:?})",
                asked.elapsed()
            );
        }
    }
    assert!(
        sources.chunks_sent("b.bin") < 64,
        "killed while b.bin was still downloading"
    );
    between(&upload_id);
    let handed_back = std::time::Instant::now();
    let _second = harness.spawn_binary_with(&[("ZIPKIT__WORKER__LEASE_SECS", lease)]);
    if interruption == Interruption::Pause {
        // The paused worker's connection stays open, so its message is not redelivered: send
        // the job again, as it would come back once the broker gave up on that connection.
        harness.publish(id).await;
        // Wake the first worker once the second holds the job and is continuing the upload.
        for _ in 0..300 {
            let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
            if zip.attempts == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal("CONT");
    }
    let zip = harness.wait_finished(id).await;
    if interruption == Interruption::Term {
        // Another worker continued it without waiting out the minute's lease.
        assert!(
            handed_back.elapsed() < Duration::from_secs(30),
            "{:?}",
            handed_back.elapsed()
        );
    }
    if interruption == Interruption::Pause {
        // Its heartbeat (every second) finds the lease gone; give it time to act on it.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    drop(first);
    let archive = harness.store.get("takeover.zip").await;
    (zip, upload_id, archive, sources)
}

/// How often the store received `operation` for part `part` of `upload_id` (and answered 200).
fn part_uploads(
    proxy: &zipkit_test_support::store_proxy::StoreProxy,
    upload_id: &str,
    part: i32,
) -> usize {
    proxy
        .calls()
        .iter()
        .filter(|c| {
            c.operation == "UploadPart"
                && c.part == Some(part)
                && c.upload_id.as_deref() == Some(upload_id)
                && c.status == 200
        })
        .count()
}

/// After an interruption at two parts: those parts were sent once, the one upload was
/// continued and completed (never aborted), and the archive holds `a.bin`, `c.bin` and all of
/// `b.bin`.
fn assert_the_upload_was_continued(
    proxy: &zipkit_test_support::store_proxy::StoreProxy,
    upload_id: &str,
    archive: &[u8],
    a: &[u8],
) {
    for part in [1, 2] {
        assert_eq!(
            part_uploads(proxy, upload_id, part),
            1,
            "part {part} was uploaded before the interruption and not again"
        );
    }
    assert_eq!(
        proxy.count("CreateMultipartUpload"),
        1,
        "the first upload was continued: {:?}",
        proxy.operations()
    );
    assert_eq!(proxy.count("CompleteMultipartUpload"), 1);
    assert_eq!(proxy.count("AbortMultipartUpload"), 0);
    let read = read_with_python(archive);
    assert_eq!(read["a.bin"], a);
    assert_eq!(read["c.bin"], pseudo_random(9 * 1024 * 1024, 3));
    assert_eq!(read["b.bin"], pseudo_random(16 * 1024 * 1024, 2));
}

#[tokio::test]
async fn a_job_taken_over_after_a_kill_continues_its_upload_without_sending_a_part_twice() {
    for compression in [Compression::Store, Compression::Deflate] {
        let harness = Harness::services_only().await;
        let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
        let a = pseudo_random(7 * 1024 * 1024, 1);
        let (zip, upload_id, archive, sources) = killed_after_two_parts(
            &harness,
            &proxy,
            Sources::a(Behaviour::Serve(a.clone())),
            compression,
            |_| {},
        )
        .await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        assert_eq!(zip.attempts, 2, "claimed once by each worker");
        assert_eq!(
            sources.hits("a.bin"),
            1,
            "{compression:?}: a.bin is wholly inside the uploaded parts: not downloaded again"
        );
        assert_eq!(
            sources.ranges_asked("b.bin"),
            [None, None],
            "{compression:?}: b.bin, whose header's part was held back, is built again from its \
             start"
        );
        assert_eq!((zip.files_done, zip.result_entries), (3, Some(3)));
        assert_the_upload_was_continued(&proxy, &upload_id, &archive, &a);

        // Byte for byte what one uninterrupted run of the job builds.
        harness.rerun(zip.id).await;
        let _worker = harness.spawn_binary();
        let again = harness.wait_finished(zip.id).await;
        assert_eq!(again.status, ZipStatus::Succeeded);
        assert_eq!(again.attempts, 1);
        let uninterrupted = harness.store.get("takeover.zip").await;
        assert!(
            uninterrupted == archive,
            "{compression:?}: the resumed archive differs from an uninterrupted run's"
        );
    }
}

#[tokio::test]
async fn a_stored_source_cut_by_the_uploaded_parts_is_picked_up_with_range_at_the_last_part() {
    let mib = 1024 * 1024;
    let a = pseudo_random(7 * mib, 1);
    let (b, c) = (pseudo_random(16 * mib, 2), pseudo_random(9 * mib, 3));
    // Part 3 (the last uploaded) starts at 10 MiB, inside c.bin, done and recorded with its
    // CRC-32: the source is asked for from there on.
    let from = 10 * mib - C_DATA_START;
    for c_ranges in [true, false] {
        let harness = Harness::services_only().await;
        let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
        let sources = Sources {
            c_ranges,
            ..Sources::a(Behaviour::Serve(a.clone()))
        };
        let (zip, upload_id, archive, sources) = takeover_after_parts(
            &harness,
            &proxy,
            sources,
            Compression::Store,
            3,
            |_| {},
            Interruption::Kill,
        )
        .await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        assert_eq!(sources.hits("a.bin"), 1, "kept: not downloaded again");

        let asked = sources.ranges_asked("c.bin");
        if c_ranges {
            assert_eq!(asked, [None, Some(format!("bytes={from}-"))]);
        } else {
            // No ETag to send as If-Range: built again from its start.
            assert_eq!(asked, [None, None], "{:?}", proxy.operations());
        }
        for part in [1, 2, 3] {
            assert_eq!(
                part_uploads(&proxy, &upload_id, part),
                1,
                "ranges {c_ranges}: part {part} was uploaded before the kill and not again"
            );
        }
        assert_eq!(proxy.count("CreateMultipartUpload"), 1);
        assert_eq!(proxy.count("CompleteMultipartUpload"), 1);
        assert_eq!(proxy.count("AbortMultipartUpload"), 0);
        let read = read_with_python(&archive);
        assert!(read["a.bin"] == a && read["c.bin"] == c && read["b.bin"] == b);

        harness.rerun(zip.id).await;
        let _worker = harness.spawn_binary();
        assert_eq!(harness.wait_finished(zip.id).await.attempts, 1);
        assert!(
            harness.store.get("takeover.zip").await == archive,
            "ranges {c_ranges}: the resumed archive differs from an uninterrupted run's"
        );
    }
}

#[tokio::test]
async fn a_worker_that_wakes_up_to_find_its_job_taken_over_leaves_the_upload_alone() {
    let harness = Harness::services_only().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let a = pseudo_random(7 * 1024 * 1024, 1);
    let (zip, _, archive, _sources) = takeover_after_parts(
        &harness,
        &proxy,
        Sources::a(Behaviour::Serve(a.clone())),
        Compression::Store,
        2,
        |_| {},
        Interruption::Pause,
    )
    .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2, "the second worker took the job over");
    assert_eq!(
        proxy.count("AbortMultipartUpload"),
        0,
        "the paused worker did not abort the upload the new owner continued: {:?}",
        proxy.operations()
    );
    assert_eq!(proxy.count("CreateMultipartUpload"), 1);
    assert_eq!(read_with_python(&archive)["a.bin"], a);
}

#[tokio::test]
async fn a_job_taken_over_whose_source_changed_starts_a_new_upload_and_aborts_the_old() {
    let mib = 1024 * 1024;
    let a = pseudo_random(7 * mib, 1);

    // Killed once parts 1 to 3 are up, c.bin (done, cut by the end of part 3) is asked for from
    // 10 MiB on with If-Range, which its new ETag refuses: built again from its start, it
    // differs from part 2 or 3, checked once its header has its values. Either way the change
    // is seen, wherever it is.
    for changed_at in [1000, 3 * mib] {
        let harness = Harness::services_only().await;
        let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
        let mut then = pseudo_random(9 * mib, 3);
        then[changed_at] ^= 0xFF;
        let sources = Sources {
            c_then: Some(then.clone()),
            ..Sources::a(Behaviour::Serve(a.clone()))
        };
        let kill = Interruption::Kill;
        let (zip, upload_id, archive, sources) = takeover_after_parts(
            &harness,
            &proxy,
            sources,
            Compression::Store,
            3,
            |_| {},
            kill,
        )
        .await;

        assert_eq!(
            sources.hits("a.bin"),
            2,
            "kept on takeover, downloaded again for the new upload"
        );
        // The first worker's request, the second's (with the range, refused: then again from
        // the start), and the new upload's.
        let range = Some(format!("bytes={}-", 10 * mib - C_DATA_START));
        assert_eq!(
            sources.ranges_asked("c.bin"),
            [None, range, None, None],
            "changed at {changed_at}"
        );
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        assert_eq!(proxy.count("CreateMultipartUpload"), 2, "a new upload");
        let aborted: Vec<_> = proxy
            .calls()
            .into_iter()
            .filter(|c| c.operation == "AbortMultipartUpload")
            .collect();
        assert_eq!(aborted.len(), 1, "{:?}", proxy.operations());
        assert_eq!(aborted[0].upload_id.as_deref(), Some(upload_id.as_str()));
        let read = read_with_python(&archive);
        assert_eq!(read["a.bin"], a);
        assert!(
            read["c.bin"] == then,
            "the source as it is now, never a mix"
        );
    }
}

#[tokio::test]
async fn a_job_taken_over_whose_upload_the_store_lost_starts_a_new_one() {
    let harness = Harness::services_only().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let a = pseudo_random(7 * 1024 * 1024, 1);
    let (zip, _, archive, _) = killed_after_two_parts(
        &harness,
        &proxy,
        Sources::a(Behaviour::Serve(a.clone())),
        Compression::Deflate,
        |upload_id| {
            for operation in ["UploadPart", "CompleteMultipartUpload"] {
                proxy.refuse_upload(operation, upload_id, 404, "NoSuchUpload");
            }
        },
    )
    .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2);
    assert_eq!(proxy.count("CreateMultipartUpload"), 2, "a new upload");
    assert_eq!(read_with_python(&archive)["a.bin"], a);
}

#[tokio::test]
async fn the_sweeper_aborts_uploads_nobody_will_complete_and_only_those() {
    use zipkit_domain::models::{JobError, ZipOutcome};
    let harness = Harness::services_only().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let bucket = harness.bucket_at(proxy.url()).await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let mut conn = harness.db.connect().await;
    // Three jobs whose worker started an upload: one then failed (its worker died before it could
    // abort), one's worker died long ago, one is alive.
    let mut uploads = Vec::new();
    for (key, lease) in [
        ("failed.zip", chrono::Duration::seconds(60)),
        ("abandoned.zip", chrono::Duration::seconds(-7200)),
        ("alive.zip", chrono::Duration::seconds(60)),
    ] {
        let id = harness
            .submit(
                &bucket,
                key,
                &[sources.entry("a.txt")],
                Compression::Store,
                OnError::Fail,
            )
            .await;
        Zip::claim(&mut conn, id, "gone-worker", lease)
            .await
            .unwrap()
            .unwrap();
        let started = harness
            .store
            .client()
            .create_multipart_upload()
            .bucket(harness.store.name())
            .key(key)
            .send()
            .await
            .unwrap();
        let upload_id = started.upload_id().unwrap().to_owned();
        assert!(
            Zip::set_upload_id(&mut conn, id, "gone-worker", &upload_id, "plan")
                .await
                .unwrap()
        );
        uploads.push((id, upload_id));
    }
    let failure = ZipOutcome::Failed(JobError {
        error_type: "api_error".into(),
        code: "internal_error".into(),
        message: "the worker failed".into(),
        param: None,
    });
    Zip::finish(&mut conn, uploads[0].0, "gone-worker", &failure)
        .await
        .unwrap()
        .unwrap();

    let sweeper = harness.sweeper();
    assert_eq!(sweeper.sweep_once().await, 2);
    let mut aborted: Vec<String> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "AbortMultipartUpload" && c.status == 204)
        .filter_map(|c| c.upload_id)
        .collect();
    aborted.sort();
    let mut expected = vec![uploads[0].1.clone(), uploads[1].1.clone()];
    expected.sort();
    assert_eq!(
        aborted, expected,
        "the failed job's and the abandoned job's, not the live one's"
    );
    assert_eq!(sweeper.sweep_once().await, 0, "each is tried once");
}

#[tokio::test]
async fn three_workers_build_thirty_jobs_each_exactly_once() {
    let harness = Harness::services_only().await;
    let files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| {
            (
                format!("f{i}.txt"),
                format!("file {i} ").repeat(100 + i).into_bytes(),
            )
        })
        .collect();
    let sources = SourceServer::start(
        files
            .iter()
            .map(|(n, b)| (n.as_str(), Behaviour::Serve(b.clone())))
            .collect(),
    )
    .await;
    let bucket = harness.bucket().await;
    let _workers = [
        harness.spawn_binary(),
        harness.spawn_binary(),
        harness.spawn_binary(),
    ];
    let mut ids = Vec::new();
    for (name, _) in &files {
        let key = format!("many/{name}.zip");
        ids.push((
            harness
                .submit(
                    &bucket,
                    &key,
                    &[(sources.url(name), name.as_str())],
                    Compression::Deflate,
                    OnError::Fail,
                )
                .await,
            key,
        ));
    }
    for ((id, key), (name, bytes)) in ids.iter().zip(&files) {
        let zip = harness.wait_finished(*id).await;
        assert_eq!(
            zip.status,
            ZipStatus::Succeeded,
            "{name}: {:?}",
            zip.error_message
        );
        assert_eq!(zip.attempts, 1, "{name} was claimed once");
        assert_eq!(
            &read_with_python(&harness.store.get(key).await)[name.as_str()],
            bytes
        );
        assert_eq!(sources.hits(name), 1, "{name} was downloaded once");
    }
}

#[tokio::test]
async fn sigterm_hands_the_job_back_at_once_and_another_worker_continues_it_from_its_last_part() {
    let harness = Harness::services_only().await;
    let proxy = zipkit_test_support::store_proxy::StoreProxy::start().await;
    let a = pseudo_random(7 * 1024 * 1024, 1);
    let (zip, upload_id, archive, sources) = takeover_after_parts(
        &harness,
        &proxy,
        Sources::a(Behaviour::Serve(a.clone())),
        Compression::Store,
        2,
        |_| {},
        Interruption::Term,
    )
    .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(
        zip.attempts, 1,
        "a hand-back is not a failed attempt: only the finishing claim counts"
    );
    assert_eq!(zip.last_failure, None);
    assert_eq!(
        sources.hits("b.bin"),
        2,
        "the second worker built the rest of the job"
    );
    assert_the_upload_was_continued(&proxy, &upload_id, &archive, &a);
}
