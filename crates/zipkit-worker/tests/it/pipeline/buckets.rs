//! Sources in the project's buckets: single objects and prefixes listed page by page, with
//! globs and folders, mixed with HTTP sources, read with the bucket's own keys from the real
//! S3-compatible store; and the refusals (a bucket that no longer lets jobs read it, a prefix
//! that takes nothing, two names that would extract onto one file).

use zipkit_domain::models::{Bucket, NewListing, NewZipEntry, ResultSettings, Zip};
use zipkit_domain::values::{BucketName, EntryName, SourceUrl};
use zipkit_domain::{Compression, OnError, ZipStatus};
use zipkit_test_support::exclusive::exclusive;
use zipkit_test_support::sources::{Behaviour, SourceServer};

use crate::harness::Harness;

use super::{HEAVY_ON_THE_STORE, bucket_object as object, pseudo_random, read_with_python};

fn prefix(
    item_index: i32,
    bucket: &Bucket,
    prefix: &str,
    globs: (&[&str], &[&str]),
    path: &str,
) -> NewListing {
    let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
    NewListing {
        item_index,
        bucket: BucketName::parse(bucket.name.as_str()).unwrap(),
        prefix: prefix.to_owned(),
        include: own(globs.0),
        exclude: own(globs.1),
        path: path.to_owned(),
    }
}

fn job() -> (Compression, OnError, ResultSettings) {
    (Compression::Auto, OnError::Fail, ResultSettings::default())
}

#[tokio::test]
async fn objects_and_prefixes_of_the_projects_bucket_are_archived_in_order_with_http_sources() {
    let harness = Harness::start().await;
    let bucket = harness.readable_bucket().await;
    let store = &harness.store;
    let big = pseudo_random(6 << 20, 7);
    for (key, bytes) in [
        ("photos/2026/a.jpg", b"jpeg a".to_vec()),
        ("photos/2026/03/b.jpg", big.clone()),
        ("photos/2026/03/notes.txt", b"not a photo".to_vec()),
        ("photos/drafts/c.jpg", b"draft".to_vec()),
        ("photos/d.JPG", b"upper case".to_vec()),
        ("photos/2026/", Vec::new()),
        ("elsewhere/e.jpg", b"not under the prefix".to_vec()),
        ("docs/report final.pdf", b"%PDF report".to_vec()),
    ] {
        store.put(key, bytes).await;
    }
    let sources = SourceServer::start(vec![
        ("first.txt", Behaviour::Serve(b"from http, first".to_vec())),
        ("last.txt", Behaviour::Serve(b"from http, last".to_vec())),
    ])
    .await;
    let web = |name: &str| {
        let (url, name) = sources.entry(name);
        NewZipEntry {
            url: SourceUrl::parse(&url).unwrap(),
            filename: EntryName::parse(name).unwrap(),
            given_filename: None,
            modified_at: None,
            declared_size: None,
        }
    };
    // Items: 0 http, 1 prefix, 2 one object, 3 http.
    let entries = vec![
        web("first.txt"),
        object(&bucket, "docs/report final.pdf", "report final.pdf"),
        web("last.txt"),
    ];
    let listings = vec![prefix(
        1,
        &bucket,
        "photos/",
        (&["*.jpg", "*.JPG"], &["drafts/**"]),
        "pictures/",
    )];
    let id = harness
        .submit_listing(&bucket, "out/photos.zip", (entries, listings, None), job())
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.files_total, 6);
    assert_eq!(zip.result_entries, Some(6));

    let archive = store.get("out/photos.zip").await;
    let read = read_with_python(&archive);
    let names: Vec<_> = super::times_and_names(&archive)
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "first.txt",
            "pictures/2026/03/b.jpg",
            "pictures/2026/a.jpg",
            "pictures/d.JPG",
            "report final.pdf",
            "last.txt",
        ],
        "request order, each prefix's objects in key order at its place"
    );
    assert_eq!(read["pictures/2026/03/b.jpg"], big);
    assert_eq!(read["pictures/2026/a.jpg"], b"jpeg a");
    assert_eq!(read["report final.pdf"], b"%PDF report");
    assert_eq!(read["last.txt"], b"from http, last");

    // The entries as recorded: the listed ones carry the store's sizes as declared sizes.
    let mut conn = harness.db.connect().await;
    let recorded = Zip::entries(&mut conn, id).await.unwrap();
    assert_eq!(
        recorded.iter().map(|e| e.entry_index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(recorded[1].declared_size, Some(big.len() as i64));
    assert_eq!(
        recorded[1].url.as_str(),
        format!("s3://{}/photos/2026/03/b.jpg", bucket.name)
    );
    assert!(Zip::listings(&mut conn, id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bucket_that_stopped_letting_jobs_read_it_an_empty_prefix_and_a_clash_fail_with_the_item()
{
    let harness = Harness::start().await;
    let bucket = harness.readable_bucket().await;
    harness.store.put("in/a.txt", b"a".to_vec()).await;
    harness.store.put("in/A.TXT", b"b".to_vec()).await;

    // Two keys that would extract onto one file on Windows and macOS.
    let clash = harness
        .submit_listing(
            &bucket,
            "clash.zip",
            (
                vec![],
                vec![prefix(0, &bucket, "in/", (&[], &[]), "")],
                None,
            ),
            job(),
        )
        .await;
    let clash = harness.wait_finished(clash).await;
    assert_eq!(clash.status, ZipStatus::Failed);
    assert_eq!(clash.error_code.as_deref(), Some("filename_duplicate"));
    assert_eq!(clash.error_type.as_deref(), Some("invalid_request_error"));

    // Nothing taken under the prefix: the item is named.
    let entries = vec![object(&bucket, "in/a.txt", "a.txt")];
    let empty = harness
        .submit_listing(
            &bucket,
            "empty.zip",
            (
                entries,
                vec![prefix(1, &bucket, "in/", (&["*.pdf"], &[]), "")],
                None,
            ),
            job(),
        )
        .await;
    let empty = harness.wait_finished(empty).await;
    assert_eq!(empty.status, ZipStatus::Failed);
    assert_eq!(empty.error_code.as_deref(), Some("source_prefix_empty"));
    assert_eq!(empty.error_param.as_deref(), Some("urls[1].url"));
    let mut conn = harness.db.connect().await;
    assert_eq!(
        Zip::entries(&mut conn, empty.id).await.unwrap().len(),
        1,
        "a failed listing leaves the job's entries as they were"
    );

    // The bucket's owner turned reading off after the job was accepted.
    Bucket::set_read_sources(&mut conn, bucket.project_id, bucket.id, false)
        .await
        .unwrap();
    let entries = vec![object(&bucket, "in/a.txt", "a.txt")];
    let off = harness
        .submit_listing(&bucket, "off.zip", (entries, vec![], None), job())
        .await;
    let off = harness.wait_finished(off).await;
    assert_eq!(off.status, ZipStatus::Failed);
    assert_eq!(
        off.error_code.as_deref(),
        Some("bucket_sources_not_allowed")
    );
    for key in ["clash.zip", "empty.zip", "off.zip"] {
        assert!(!harness.store.has(key).await, "{key}");
    }
}

/// s3s-fs walks the whole bucket for every page it lists (here 100 pages of 100,000 files),
/// so this test takes minutes where S3, R2 or MinIO list in proportion to the page.
#[tokio::test]
async fn a_prefix_of_100_000_objects_is_listed_and_built_within_the_workers_memory_budget() {
    use futures_util::StreamExt;
    const OBJECTS: usize = 100_000;
    let _alone = exclusive(HEAVY_ON_THE_STORE).await;
    let harness = Harness::services_only().await;
    let bucket = harness.readable_bucket().await;
    // Nested folders, names of realistic length, a few bytes each (the entries cost the memory,
    // not the bytes); written through the store's API, 32 at a time.
    let key = |i: usize| {
        format!(
            "exports/2026/{:03}/invoice-{i:06}-customer-report.txt",
            i / 1000
        )
    };
    futures_util::stream::iter(0..OBJECTS)
        .map(|i| {
            let store = &harness.store;
            let key = key(i);
            async move { store.put(&key, format!("invoice {i}\n").into_bytes()).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;

    let listing = prefix(0, &bucket, "exports/", (&[], &[]), "");
    let job = (Compression::Store, OnError::Fail, ResultSettings::default());
    let worker = harness.spawn_binary();
    let id = harness
        .submit_listing(&bucket, "many.zip", (vec![], vec![listing], None), job)
        .await;
    let zip = harness
        .wait_finished_within(id, std::time::Duration::from_secs(1800))
        .await;
    let peak = zipkit_test_support::process::memory_mib(worker.0.id(), "VmHWM");
    drop(worker);
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.result_entries, Some(OBJECTS as i32));
    assert_eq!(zip.files_total, OBJECTS as i32);

    // Every entry there, in key order, with its bytes (ZIP64 end records: over 65,535 entries).
    let archive = harness.store.get("many.zip").await;
    let summary: serde_json::Value = super::python_json(
        &archive,
        r#"
import zipfile, sys, json
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
print(json.dumps({"count": len(names), "first": names[0], "last": names[-1],
                  "sample": z.read(names[12345]).decode(), "bad": z.testzip()}))
"#,
    );
    assert_eq!(summary["count"], OBJECTS);
    assert_eq!(
        summary["first"],
        "2026/000/invoice-000000-customer-report.txt"
    );
    assert_eq!(
        summary["last"],
        "2026/099/invoice-099999-customer-report.txt"
    );
    assert_eq!(summary["sample"], "invoice 12345\n");
    assert_eq!(summary["bad"], serde_json::Value::Null);

    // The budget PERFORMANCE.md gives operators: ~27 MiB for the process, `buffer_mib` (48 by
    // default), a few MiB whatever the entries, and 16 bytes for each at the end whose size
    // the listing made certain.
    let budget = 27.0 + 48.0 + 4.0 + OBJECTS as f64 * 16.0 / (1024.0 * 1024.0);
    eprintln!(
        "worker peak RSS {peak:.1} MiB for {OBJECTS} listed entries (budget {budget:.1} MiB)"
    );
    assert!(
        peak < budget,
        "peak RSS {peak:.1} MiB over the budget of {budget:.1} MiB"
    );
}
