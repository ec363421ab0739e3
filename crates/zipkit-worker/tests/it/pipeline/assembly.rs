//! Server-side assembly: objects in the archive's own store, read with the same keys, are copied
//! into the archive by the store (UploadPartCopy) and only the bytes each part before a copy
//! needs cross the worker. Counted at the store (the recording proxy in front of the real
//! S3-compatible store), with the objects' CRC-32 from the store's checksums and from one read of
//! the objects; and a job taken over midway continues its upload, copied parts included.

use std::time::Duration;

use zipkit_domain::models::{Bucket, BucketTestResult, NewZipEntry, ResultSettings, Zip};
use zipkit_domain::values::{EntryName, SourceUrl};
use zipkit_domain::{Compression, OnError, ZipStatus};
use zipkit_egress::EgressPolicy;
use zipkit_storage::{BucketClients, BucketLocation};
use zipkit_test_support::exclusive::exclusive;
use zipkit_test_support::readers::{Seen, assert_every_reader_sees_file};
use zipkit_test_support::services::loopback_egress;
use zipkit_test_support::store_proxy::StoreProxy;

use crate::harness::Harness;

use super::{HEAVY_ON_THE_STORE, bucket_object as object, pseudo_random};

const MIB: usize = 1024 * 1024;

/// The shipped read timeout (30 s) instead of the harness's 5: these tests count what crosses
/// the worker, and a store busy with gigabytes may pause longer than 5 s between reads.
fn shipped_read_timeout(worker: &mut zipkit_worker::WorkerSettings) {
    worker.source_read_timeout_secs = 30;
}

/// A bucket on the store behind `proxy` whose keys the real bucket test has checked (so a job
/// knows the store takes UploadPartCopy), letting jobs read their sources from it.
async fn tested_bucket(harness: &Harness, proxy: &StoreProxy) -> Bucket {
    let bucket = harness.bucket_at(proxy.url()).await;
    let keyring = zipkit_domain::crypto::KeyRing::from_settings(&harness.crypto).unwrap();
    let clients = BucketClients::new(EgressPolicy::new(&loopback_egress()));
    let capabilities = clients
        .test_bucket(
            &BucketLocation::from(&bucket),
            &bucket.credentials(&keyring).unwrap(),
        )
        .await
        .expect("the bucket test passes");
    assert!(
        capabilities.upload_part_copy,
        "the store takes UploadPartCopy"
    );
    let mut conn = harness.db.connect().await;
    Bucket::record_test(
        &mut conn,
        bucket.id,
        &BucketTestResult::passed(capabilities),
    )
    .await
    .unwrap();
    Bucket::set_read_sources(&mut conn, bucket.project_id, bucket.id, true)
        .await
        .unwrap()
        .unwrap()
}

/// Stores `bytes` under `key` straight in the store (not through the proxy), with their CRC-32
/// as the object's checksum when `checksum`.
async fn put(harness: &Harness, key: &str, bytes: Vec<u8>, checksum: bool) {
    let crc = checksum.then(|| crc32fast::hash(&bytes));
    put_body(harness, key, bytes.into(), crc).await;
}

async fn put_body(
    harness: &Harness,
    key: &str,
    body: aws_sdk_s3::primitives::ByteStream,
    crc32: Option<u32>,
) {
    harness
        .store
        .client()
        .put_object()
        .bucket(harness.store.name())
        .key(key)
        .set_checksum_crc32(crc32.map(|c| aws_smithy_types::base64::encode(c.to_be_bytes())))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
}

/// The archive at `key`, in a file for the readers; removed when dropped.
struct ArchiveFile(std::path::PathBuf);

impl ArchiveFile {
    async fn of(harness: &Harness, key: &str) -> Self {
        let name = format!("zipkit-assembly-{}-{key}.zip", std::process::id()).replace('/', "-");
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, harness.store.get(key).await).unwrap();
        Self(path)
    }
}

impl Drop for ArchiveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_objects_of_256_mib_in_the_archives_store_are_copied_with_under_2_percent_sent() {
    // Each object read exactly once is a count the 5 GiB test beside it would disturb.
    let _alone = exclusive(HEAVY_ON_THE_STORE).await;
    let harness = Harness::start_configured(shipped_read_timeout).await;
    let proxy = StoreProxy::start().await;
    let bucket = tested_bucket(&harness, &proxy).await;
    for checksum in [true, false] {
        let folder = if checksum { "checksummed" } else { "plain" };
        let mut entries = Vec::new();
        let mut expected = Vec::new();
        for i in 0..8u64 {
            let bytes = pseudo_random(256 * MIB, 100 + i);
            let (key, name) = (format!("{folder}/clip-{i}.mp4"), format!("clip-{i}.mp4"));
            expected.push(Seen::of(&name, &bytes));
            put(&harness, &key, bytes, checksum).await;
            entries.push(object(&bucket, &key, &name));
        }
        let sent_before = proxy.body_bytes();
        let read_before = proxy.calls().len();
        let out = format!("out/{folder}.zip");
        let job = (Compression::Auto, OnError::Fail, ResultSettings::default());
        let id = harness.submit_asking(&bucket, &out, entries, job).await;
        let zip = harness
            .wait_finished_within(id, Duration::from_secs(900))
            .await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        let size = zip.result_size.expect("a size") as u64;
        assert!(size > 2048 * MIB as u64, "{size}");

        // What the worker sent the store, counted there: request bodies of every call.
        let sent = proxy.body_bytes() - sent_before;
        let share = sent as f64 / size as f64;
        eprintln!(
            "{folder}: archive {size} bytes, {sent} sent by the worker ({:.3} %)",
            share * 100.0
        );
        assert!(share < 0.02, "{folder}: {sent} of {size} bytes sent");
        let copies: Vec<_> = proxy
            .calls()
            .into_iter()
            .filter(|c| {
                c.operation == "UploadPartCopy"
                    && c.headers
                        .get("x-amz-copy-source")
                        .is_some_and(|s| s.contains(folder))
            })
            .collect();
        assert_eq!(copies.len(), 8, "one copied part per object");
        // Each copy is conditional on the object the worker looked at.
        assert!(
            copies
                .iter()
                .all(|c| c.headers.contains_key("x-amz-copy-source-if-match")),
            "{copies:?}"
        );
        // Each object read once (its head, or all of it): one read from its first byte; a read
        // the worker had to cut (a store too slow for the stall watch) continues from where it
        // stopped, never from the start.
        let ranges: Vec<Option<String>> = proxy.calls()[read_before..]
            .iter()
            .filter(|c| c.operation == "GetObject")
            .map(|c| c.headers.get("range").cloned())
            .collect();
        let from_start = ranges
            .iter()
            .filter(|r| r.as_deref().is_none_or(|r| r.starts_with("bytes=0-")))
            .count();
        assert_eq!(
            from_start, 8,
            "{folder}: each object read once from its start; reads: {ranges:?}; attempts: {}, \
             last failure: {:?}",
            zip.attempts, zip.last_failure
        );

        // Read: the objects' first bytes with their checksums, all of them without.
        let read = zip.bytes_downloaded as u64;
        if checksum {
            assert!(read <= 8 * 5 * MIB as u64, "{read}");
        } else {
            assert_eq!(read, 8 * 256 * MIB as u64);
        }

        let file = ArchiveFile::of(&harness, &out).await;
        assert_every_reader_sees_file(&file.0, &expected);
    }
}

/// Writes `size` bytes to `path` (each MiB different from the others, so a range copied to the
/// wrong place shows), without holding them; returns their CRC-32.
fn write_object_file(path: &std::path::Path, size: u64) -> u32 {
    use std::io::Write;
    let pattern = pseudo_random(MIB, 77);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut crc = crc32fast::Hasher::new();
    let mut chunk = pattern.clone();
    let mut written = 0u64;
    for i in 0u64.. {
        let len = usize::try_from(size - written).unwrap_or(MIB).min(MIB);
        if len == 0 {
            break;
        }
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        file.write_all(&chunk[..len]).unwrap();
        crc.update(&chunk[..len]);
        written += len as u64;
    }
    file.flush().unwrap();
    crc.finalize()
}

/// Stores the file at `path` under `key` straight in the store, with `crc32` as the object's
/// checksum when given.
async fn put_file(harness: &Harness, key: &str, path: &std::path::Path, crc32: Option<u32>) {
    let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
        .await
        .unwrap();
    put_body(harness, key, body, crc32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_5_gib_is_copied_in_ranges_no_larger_than_a_part() {
    const MIN_PART: u64 = 5 * MIB as u64;
    let _alone = exclusive(HEAVY_ON_THE_STORE).await;
    let harness = Harness::start_configured(shipped_read_timeout).await;
    let proxy = StoreProxy::start().await;
    let bucket = tested_bucket(&harness, &proxy).await;
    // Over S3's largest part: it cannot be one copied part.
    let size = 5 * 1024 * MIB as u64 + 24 * MIB as u64;
    let file = ArchiveFile(std::env::temp_dir().join(format!(
        "zipkit-assembly-{}-footage.mov",
        std::process::id()
    )));
    let crc32 = tokio::task::spawn_blocking({
        let path = file.0.clone();
        move || write_object_file(&path, size)
    })
    .await
    .unwrap();
    let expected = [Seen {
        name: "footage.mov".into(),
        size,
        crc32,
    }];
    for checksum in [true, false] {
        let key = "large/footage.mov";
        put_file(&harness, key, &file.0, checksum.then_some(crc32)).await;
        // A size the request declares (as a prefix's listing does): the job's copies are
        // counted in part numbers before any object is looked at.
        let entry = NewZipEntry {
            declared_size: Some(size as i64),
            ..object(&bucket, key, "footage.mov")
        };
        let (sent_before, calls_before) = (proxy.body_bytes(), proxy.calls().len());
        let out = format!("out/large-{checksum}.zip");
        let job = (Compression::Store, OnError::Fail, ResultSettings::default());
        let id = harness.submit_asking(&bucket, &out, vec![entry], job).await;
        let zip = harness
            .wait_finished_within(id, Duration::from_secs(1200))
            .await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        let archive_size = zip.result_size.expect("a size") as u64;

        // Two copied parts: the last 5 GiB, and the range between the bytes sent first and it
        // (at least 5 MiB, so every part but the archive's last is large enough).
        let ranges: Vec<String> = proxy.calls()[calls_before..]
            .iter()
            .filter(|c| c.operation == "UploadPartCopy")
            .map(|c| c.headers["x-amz-copy-source-range"].clone())
            .collect();
        assert_eq!(ranges.len(), 2, "{ranges:?}");
        let first: Vec<u64> = ranges[0]["bytes=".len()..]
            .split('-')
            .map(|n| n.parse().unwrap())
            .collect();
        let last_start = size - 5 * 1024 * MIB as u64;
        assert!(first[0] < MIN_PART, "{ranges:?}");
        assert_eq!(first[1], last_start - 1, "{ranges:?}");
        assert_eq!(
            ranges[1],
            format!("bytes={last_start}-{}", size - 1),
            "the last 5 GiB"
        );

        let sent = proxy.body_bytes() - sent_before;
        eprintln!(
            "checksum {checksum}: archive {archive_size} bytes, {sent} sent, {} read",
            zip.bytes_downloaded
        );
        assert!((sent as f64) < archive_size as f64 * 0.02, "{sent} sent");
        // Read: with the store's checksum, the bytes before the last range; without, all.
        let read = zip.bytes_downloaded as u64;
        if checksum {
            assert_eq!(read, last_start);
        } else {
            assert_eq!(read, size);
        }

        let archive = ArchiveFile(file.0.with_extension(format!("{checksum}.zip")));
        assert_eq!(
            harness.store.get_to_file(&out, &archive.0).await,
            archive_size
        );
        assert_every_reader_sees_file(&archive.0, &expected);
    }
}

/// What a takeover test's second worker finds: how often the store was asked for each part of
/// the upload (sent or copied) and answered 200.
fn part_calls(proxy: &StoreProxy, upload_id: &str, part: i32) -> Vec<String> {
    proxy
        .calls()
        .into_iter()
        .filter(|c| {
            c.part == Some(part) && c.upload_id.as_deref() == Some(upload_id) && c.status == 200
        })
        .map(|c| c.operation)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_job_taken_over_continues_its_upload_without_copying_a_part_twice() {
    let harness = Harness::services_only().await;
    let proxy = StoreProxy::start().await;
    let bucket = tested_bucket(&harness, &proxy).await;
    let mut expected = Vec::new();
    let mut entries = Vec::new();
    // Three objects copied, the first two with their checksums, the third read once; then an
    // HTTP source trickling, which keeps the job going until the first worker is killed.
    for i in 0..3u64 {
        let bytes = pseudo_random(24 * MIB, 200 + i);
        let (key, name) = (format!("media/take-{i}.mov"), format!("take-{i}.mov"));
        expected.push(Seen::of(&name, &bytes));
        put(&harness, &key, bytes, i < 2).await;
        entries.push(object(&bucket, &key, &name));
    }
    let tail = pseudo_random(16 * MIB, 9);
    expected.push(Seen::of("tail.bin", &tail));
    let sources = zipkit_test_support::sources::SourceServer::start(vec![(
        "tail.bin",
        zipkit_test_support::sources::Behaviour::Trickle {
            bytes: tail,
            chunk: 256 * 1024,
            pause: Duration::from_millis(100),
            then: None,
            ranges: true,
        },
    )])
    .await;
    let (url, name) = sources.entry("tail.bin");
    entries.push(NewZipEntry {
        url: SourceUrl::parse(&url).unwrap(),
        filename: EntryName::parse(name).unwrap(),
        given_filename: None,
        modified_at: None,
        declared_size: None,
    });
    // The bucket test made (and aborted) an upload of its own.
    let before = |operation| proxy.count(operation);
    let tested = (
        before("CreateMultipartUpload"),
        before("CompleteMultipartUpload"),
        before("AbortMultipartUpload"),
    );
    let mut first = harness.spawn_binary_with(&[("ZIPKIT__WORKER__CONCURRENCY", "1")]);
    let job = (Compression::Store, OnError::Fail, ResultSettings::default());
    let id = harness
        .submit_asking(&bucket, "takes.zip", entries, job)
        .await;

    // Each object is a part sent (its header and first bytes) and a part copied: six parts,
    // recorded, and the three entries done, before the kill.
    let mut conn = harness.db.connect().await;
    let mut upload_id = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
        let done = Zip::recorded_entries(&mut conn, id, -1, i64::MAX)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.index < 3 && e.state == zipkit_domain::EntryState::Done)
            .count();
        if let Some(upload) = &zip.upload_id {
            let recorded = Zip::parts(&mut conn, id, upload).await.unwrap();
            if recorded.len() >= 6 && done == 3 {
                upload_id = Some(upload.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let upload_id = upload_id.unwrap_or_else(|| {
        panic!(
            "the first worker did not record six parts; the store saw {:?}",
            proxy.operations()
        )
    });
    assert!(
        sources.chunks_sent("tail.bin") < 64,
        "killed while tail.bin was still downloading"
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let _second = harness.spawn_binary();
    let zip = harness
        .wait_finished_within(id, Duration::from_secs(600))
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.attempts, 2, "claimed once by each worker");
    for (part, operation) in [
        (1, "UploadPart"),
        (2, "UploadPartCopy"),
        (3, "UploadPart"),
        (4, "UploadPartCopy"),
        (5, "UploadPart"),
        (6, "UploadPartCopy"),
    ] {
        assert_eq!(
            part_calls(&proxy, &upload_id, part),
            [operation],
            "part {part}: made once, before the kill"
        );
    }
    let made = |operation| proxy.count(operation);
    assert_eq!(
        (
            made("CreateMultipartUpload") - tested.0,
            made("CompleteMultipartUpload") - tested.1,
            made("AbortMultipartUpload") - tested.2,
        ),
        (1, 1, 0),
        "the one upload was continued and completed, never aborted"
    );
    let file = ArchiveFile::of(&harness, "takes.zip").await;
    assert_every_reader_sees_file(&file.0, &expected);
    let resumed = std::fs::read(&file.0).unwrap();

    // Byte for byte what one uninterrupted run of the job builds.
    harness.rerun(zip.id).await;
    let _worker = harness.spawn_binary();
    let again = harness.wait_finished(zip.id).await;
    assert_eq!(again.status, ZipStatus::Succeeded);
    assert!(
        harness.store.get("takes.zip").await == resumed,
        "the resumed archive differs from an uninterrupted run's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entry_is_copied_only_where_it_may_be_and_streamed_otherwise() {
    let harness = Harness::start().await;
    let proxy = StoreProxy::start().await;
    let bucket = tested_bucket(&harness, &proxy).await;
    let big = pseudo_random(12 * MIB, 31);
    let text = "a line of notes\n".repeat(12 * MIB / 16).into_bytes();
    let small = pseudo_random(3 * MIB, 32);
    put(&harness, "in/big.zip", big.clone(), true).await;
    put(&harness, "in/notes.txt", text.clone(), true).await;
    put(&harness, "in/small.zip", small.clone(), true).await;
    let sources = zipkit_test_support::sources::SourceServer::start(vec![(
        "web.zip",
        zipkit_test_support::sources::Behaviour::Serve(big.clone()),
    )])
    .await;
    let (url, _) = sources.entry("web.zip");
    let web = NewZipEntry {
        url: SourceUrl::parse(&url).unwrap(),
        filename: EntryName::parse("web.zip").unwrap(),
        given_filename: None,
        modified_at: None,
        declared_size: None,
    };
    let entries = || {
        vec![
            object(&bucket, "in/big.zip", "big.zip"),
            object(&bucket, "in/notes.txt", "notes.txt"),
            object(&bucket, "in/small.zip", "small.zip"),
            web.clone(),
        ]
    };
    let copies = || proxy.count("UploadPartCopy");
    let job = || (Compression::Auto, OnError::Fail, ResultSettings::default());

    // Copied: the large object `auto` stores by its name. Streamed: the text `auto` deflates,
    // the object too small for a part of its own, and the HTTP source.
    let before = copies();
    let id = harness
        .submit_asking(&bucket, "out/mixed.zip", entries(), job())
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(copies() - before, 1, "{:?}", proxy.operations());
    let read = super::read_with_python(&harness.store.get("out/mixed.zip").await);
    assert_eq!(read["big.zip"], big);
    assert_eq!(read["notes.txt"], text);
    assert_eq!(read["small.zip"], small);
    assert_eq!(read["web.zip"], big);

    // A bucket never tested: nothing is known of UploadPartCopy, so nothing is copied.
    let untested = harness.bucket_at(proxy.url()).await;
    let mut conn = harness.db.connect().await;
    let untested = Bucket::set_read_sources(&mut conn, untested.project_id, untested.id, true)
        .await
        .unwrap()
        .unwrap();
    assert!(untested.capabilities.is_none());
    let before = copies();
    let entries = vec![object(&untested, "in/big.zip", "big.zip")];
    let id = harness
        .submit_asking(&untested, "out/untested.zip", entries, job())
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(copies(), before, "streamed: {:?}", proxy.operations());
    let read = super::read_with_python(&harness.store.get("out/untested.zip").await);
    assert_eq!(read["big.zip"], big);

    // An object replaced between its HeadObject and its copy: the store refuses the copy
    // (`x-amz-copy-source-if-match`), and the job fails for a reason a new attempt may not meet.
    proxy.refuse("UploadPartCopy", 412, "PreconditionFailed", Some(1));
    let entries = vec![object(&bucket, "in/big.zip", "big.zip")];
    let id = harness
        .submit_asking(&bucket, "out/changed.zip", entries, job())
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Failed);
    assert_eq!(zip.error_code.as_deref(), Some("source_changed"), "{zip:?}");
}
