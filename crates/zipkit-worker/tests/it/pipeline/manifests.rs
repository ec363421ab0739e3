//! Manifests: a job's sources read from a JSON Lines or CSV file, over HTTP or from the
//! project's bucket, a line at a time; a bad line fails the job naming it; a million lines are
//! recorded within the worker's memory budget.

use zipkit_domain::models::{Bucket, ManifestFormat, NewManifest, ResultSettings, Zip};
use zipkit_domain::values::{BucketName, SourceUrl};
use zipkit_domain::{Compression, OnError, ZipStatus};
use zipkit_test_support::process::memory_mib;
use zipkit_test_support::sources::{Behaviour, SourceServer};

use crate::harness::Harness;

use super::read_with_python;

fn manifest(url: &str, format: ManifestFormat, max_entries: i32) -> NewManifest {
    let url = match url.strip_prefix("s3://") {
        Some(rest) => {
            let (bucket, key) = rest.split_once('/').unwrap();
            SourceUrl::bucket_object(&BucketName::parse(bucket).unwrap(), key).unwrap()
        }
        None => SourceUrl::parse(url).unwrap(),
    };
    NewManifest {
        url,
        format,
        max_entries,
    }
}

fn job() -> (Compression, OnError, ResultSettings) {
    (Compression::Auto, OnError::Fail, ResultSettings::default())
}

async fn run(harness: &Harness, bucket: &Bucket, key: &str, manifest: NewManifest) -> Zip {
    let id = harness
        .submit_listing(bucket, key, (vec![], vec![], Some(manifest)), job())
        .await;
    harness.wait_finished(id).await
}

#[tokio::test]
async fn json_lines_over_http_and_csv_in_the_bucket_become_the_jobs_entries_in_order() {
    let harness = Harness::start().await;
    let bucket = harness.readable_bucket().await;
    harness
        .store
        .put("stored/photo.jpg", b"jpeg bytes".to_vec())
        .await;
    let sources = SourceServer::start(vec![
        ("a.txt", Behaviour::Serve(b"alpha".to_vec())),
        ("b.txt", Behaviour::Serve(b"bravo".to_vec())),
    ])
    .await;
    let lines = format!(
        "\u{feff}{{\"url\": \"{a}\", \"filename\": \"docs/a.txt\", \"modified_at\": \"2026-03-01T09:30:00Z\"}}\r\n\
         \n\
         {{\"url\": \"s3://{bucket}/stored/photo.jpg\"}}\n\
         {{\"url\": \"{b}\", \"filename\": \"b.txt\", \"size\": 5}}",
        a = sources.url("a.txt"),
        b = sources.url("b.txt"),
        bucket = bucket.name,
    );
    let served =
        SourceServer::start(vec![("list.jsonl", Behaviour::Serve(lines.into_bytes()))]).await;
    let zip = run(
        &harness,
        &bucket,
        "from-jsonl.zip",
        manifest(&served.url("list.jsonl"), ManifestFormat::JsonLines, 1000),
    )
    .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.files_total, 3);
    let archive = harness.store.get("from-jsonl.zip").await;
    let names: Vec<_> = super::times_and_names(&archive)
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["docs/a.txt", "photo.jpg", "b.txt"]);
    let read = read_with_python(&archive);
    assert_eq!(read["photo.jpg"], b"jpeg bytes");
    let mut conn = harness.db.connect().await;
    let entries = Zip::entries(&mut conn, zip.id).await.unwrap();
    assert_eq!(entries[2].declared_size, Some(5));
    assert_eq!(
        entries[0].modified_at.map(|t| t.to_rfc3339()),
        Some("2026-03-01T09:30:00+00:00".to_owned())
    );

    // CSV, kept in the bucket: a header, quoted fields with commas, an empty size.
    let csv = format!(
        "url,filename,size\n\
         {a},\"reports/a, final.txt\",5\n\
         s3://{bucket}/stored/photo.jpg,\"it's, the final one.jpg\",\n",
        a = sources.url("a.txt"),
        bucket = bucket.name,
    );
    harness
        .store
        .put("manifests/list.csv", csv.into_bytes())
        .await;
    let zip = run(
        &harness,
        &bucket,
        "from-csv.zip",
        manifest(
            &format!("s3://{}/manifests/list.csv", bucket.name),
            ManifestFormat::Csv,
            1000,
        ),
    )
    .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let read = read_with_python(&harness.store.get("from-csv.zip").await);
    assert_eq!(
        read.keys().collect::<Vec<_>>(),
        ["it's, the final one.jpg", "reports/a, final.txt"]
    );
}

#[tokio::test]
async fn a_bad_line_fails_the_job_naming_its_line_and_a_long_manifest_its_limit() {
    let harness = Harness::start().await;
    let bucket = harness.readable_bucket().await;
    let sources = SourceServer::start(vec![("a.txt", Behaviour::Serve(b"alpha".to_vec()))]).await;
    let a = sources.url("a.txt");
    let good = |i: usize| format!("{{\"url\": \"{a}\", \"filename\": \"f{i}.txt\"}}\n");
    let cases = [
        (
            format!(
                "{}{}{{\"url\": \"{a}\", \"filename\": \"../up.txt\"}}\n",
                good(1),
                good(2)
            ),
            1000,
            "manifest_line_invalid",
            "manifest:3",
        ),
        (
            format!(
                "{}{{\"url\": \"{a}\", \"filename\": \"x\", \"colour\": 1}}\n",
                good(1)
            ),
            1000,
            "manifest_line_invalid",
            "manifest:2",
        ),
        (
            format!(
                "{}{{\"url\": \"ftp://example.com/a\", \"filename\": \"x\"}}\n",
                good(1)
            ),
            1000,
            "manifest_line_invalid",
            "manifest:2",
        ),
        (
            format!(
                "{}{{\"url\": \"{a}\", \"filename\": \"F1.TXT\"}}\n",
                good(1)
            ),
            1000,
            "filename_duplicate",
            "manifest:2",
        ),
        (
            format!("{}{}{}", good(1), good(2), good(3)),
            2,
            "manifest_too_large",
            "manifest:3",
        ),
        ("\n\n".to_owned(), 1000, "manifest_empty", "manifest"),
        // After a batch of 5,000 entries was copied in: the whole listing is rolled back.
        (
            format!(
                "{}{{\"url\": \"{a}\", \"filename\": \"../up.txt\"}}\n",
                (1..=6000).map(good).collect::<String>()
            ),
            10_000,
            "manifest_line_invalid",
            "manifest:6001",
        ),
    ];
    let served: Vec<(String, Behaviour)> = cases
        .iter()
        .enumerate()
        .map(|(i, (body, ..))| {
            (
                format!("m{i}.jsonl"),
                Behaviour::Serve(body.clone().into_bytes()),
            )
        })
        .collect();
    let names: Vec<String> = served.iter().map(|(n, _)| n.clone()).collect();
    let server = SourceServer::start(
        served
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect(),
    )
    .await;
    for (i, (_, max, code, param)) in cases.iter().enumerate() {
        let url = server.url(&names[i]);
        let zip = run(
            &harness,
            &bucket,
            &format!("bad{i}.zip"),
            manifest(&url, ManifestFormat::JsonLines, *max),
        )
        .await;
        assert_eq!(zip.status, ZipStatus::Failed, "case {i}");
        assert_eq!(
            (zip.error_code.as_deref(), zip.error_param.as_deref()),
            (Some(*code), Some(*param)),
            "case {i}: {:?}",
            zip.error_message
        );
        assert_eq!(zip.error_type.as_deref(), Some("invalid_request_error"));
        let mut conn = harness.db.connect().await;
        assert!(
            Zip::entries(&mut conn, zip.id).await.unwrap().is_empty(),
            "case {i}: nothing recorded"
        );
    }
    // A manifest that is not there.
    let zip = run(
        &harness,
        &bucket,
        "gone.zip",
        manifest(&sources.url("gone.jsonl"), ManifestFormat::JsonLines, 10),
    )
    .await;
    assert_eq!(
        (zip.error_code.as_deref(), zip.error_param.as_deref()),
        (Some("source_not_found"), Some("manifest"))
    );
}

/// A million lines, in JSON Lines and in CSV, each read and recorded by the worker binary while
/// it holds no more than the process, its buffer budget and the names' hashes: the manifest's
/// size does not show in its memory. The jobs are cancelled once recorded.
#[tokio::test]
async fn a_manifest_of_a_million_lines_is_recorded_within_the_workers_memory_budget() {
    const LINES: usize = 1_000_000;
    let harness = Harness::services_only().await;
    let bucket = harness.readable_bucket().await;
    let sources = SourceServer::start(vec![("tiny.txt", Behaviour::Serve(b"t".to_vec()))]).await;
    let tiny = sources.url("tiny.txt");
    let mut jsonl = String::with_capacity(LINES * 90);
    let mut csv = String::with_capacity(LINES * 70);
    csv.push_str("url,filename,size\n");
    for i in 0..LINES {
        let name = format!("batch-{:03}/record-{i:07}.txt", i / 10_000);
        jsonl.push_str(&format!(
            "{{\"url\":\"{tiny}?n={i}\",\"filename\":\"{name}\",\"size\":1}}\n"
        ));
        csv.push_str(&format!("{tiny}?n={i},{name},1\n"));
    }
    let served = SourceServer::start(vec![
        ("million.jsonl", Behaviour::Serve(jsonl.into_bytes())),
        ("million.csv", Behaviour::Serve(csv.into_bytes())),
    ])
    .await;
    let mut conn = harness.db.connect().await;
    for (file, format) in [
        ("million.jsonl", ManifestFormat::JsonLines),
        ("million.csv", ManifestFormat::Csv),
    ] {
        // A worker of its own for each: what one build left does not count for the next.
        let worker = harness.spawn_binary_with(&[("ZIPKIT__WORKER__CONCURRENCY", "1")]);
        let pid = worker.0.id();
        let asked = manifest(&served.url(file), format, LINES as i32);
        let id = harness
            .submit_listing(
                &bucket,
                &format!("{file}.zip"),
                (vec![], vec![], Some(asked)),
                job(),
            )
            .await;
        // Sampled until the entries are recorded (the job then counts them), and no longer: the
        // build that follows holds what each entry's download needs (PERFORMANCE.md).
        let mut peak: f64 = 0.0;
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
        let recorded = loop {
            peak = peak.max(memory_mib(pid, "VmRSS"));
            let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
            if zip.files_total as usize == LINES || zip.status.is_terminal() {
                break zip;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{file} not recorded within 10 minutes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        Zip::cancel(&mut conn, bucket.project_id, id).await.unwrap();
        assert_eq!(
            recorded.files_total as usize, LINES,
            "{file}: {:?}",
            recorded.error_message
        );
        let count: i64 = {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;
            zipkit_domain::schema::zip_entries::table
                .filter(zipkit_domain::schema::zip_entries::zip_id.eq(id))
                .count()
                .get_result(&mut conn)
                .await
                .unwrap()
        };
        assert_eq!(count as usize, LINES, "{file}: every line recorded");
        // The process (~27 MiB) and `buffer_mib` (48), and 8 bytes of hash per name in a table
        // that doubles as it grows (~18 MiB for a million).
        let budget = 27.0 + 48.0 + 18.0;
        eprintln!(
            "{file}: worker RSS at most {peak:.1} MiB while reading and recording {LINES} lines (budget {budget:.0} MiB)"
        );
        assert!(peak < budget, "{file}: {peak:.1} MiB over {budget:.0} MiB");
        let _ = harness
            .wait_finished_within(id, std::time::Duration::from_secs(120))
            .await;
    }
}

/// A manifest of 100,000 sources built into one archive by the worker binary, within its
/// documented memory budget (~27 MiB and `buffer_mib`), and with no more memory than one of
/// 10,000: the entries do not show in it (their sources are read a page at a time, the
/// central directory past its first megabyte waits in a temporary file).
#[tokio::test]
async fn a_manifest_of_100_000_sources_is_built_in_the_memory_one_of_10_000_takes() {
    let harness = Harness::services_only().await;
    let bucket = harness.readable_bucket().await;
    // 3 KiB each, so both archives span several parts and use all the part buffers they may
    // (`buffer_mib`): what is left to compare is what the entries cost.
    let body = "a small source of three kilobytes\n".repeat(93);
    let sources = SourceServer::start(vec![(
        "small.txt",
        Behaviour::Serve(body.clone().into_bytes()),
    )])
    .await;
    let tiny = sources.url("small.txt");
    let lines = |count: usize| {
        let mut jsonl = String::with_capacity(count * 90);
        for i in 0..count {
            jsonl.push_str(&format!(
                "{{\"url\":\"{tiny}?n={i}\",\"filename\":\"part-{:02}/item-{i:06}.txt\"}}\n",
                i / 10_000
            ));
        }
        jsonl.into_bytes()
    };
    let served = SourceServer::start(vec![
        ("ten-thousand.jsonl", Behaviour::Serve(lines(10_000))),
        ("hundred-thousand.jsonl", Behaviour::Serve(lines(100_000))),
    ])
    .await;
    let mut peaks = Vec::new();
    for (count, name) in [
        (10_000_usize, "ten-thousand"),
        (100_000, "hundred-thousand"),
    ] {
        // A worker of its own for each: its peak is this job's.
        let worker = harness.spawn_binary();
        let asked = manifest(
            &served.url(&format!("{name}.jsonl")),
            ManifestFormat::JsonLines,
            count as i32,
        );
        let key = format!("{name}.zip");
        let id = harness
            .submit_listing(
                &bucket,
                &key,
                (vec![], vec![], Some(asked)),
                (Compression::Store, OnError::Fail, ResultSettings::default()),
            )
            .await;
        let zip = harness
            .wait_finished_within(id, std::time::Duration::from_secs(900))
            .await;
        let peak = memory_mib(worker.0.id(), "VmHWM");
        drop(worker);
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        assert_eq!(zip.result_entries, Some(count as i32));
        let summary: serde_json::Value = super::python_json(
            &harness.store.get(&key).await,
            r#"
import zipfile, sys, json
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
print(json.dumps({"count": len(names), "last": names[-1], "sample": z.read(names[4321]).decode(), "bad": z.testzip()}))
"#,
        );
        assert_eq!(summary["count"], count);
        let last = count - 1;
        assert_eq!(
            summary["last"],
            format!("part-{:02}/item-{last:06}.txt", last / 10_000)
        );
        assert_eq!(summary["sample"], body);
        assert_eq!(summary["bad"], serde_json::Value::Null);
        eprintln!("worker peak RSS {peak:.1} MiB building {count} entries");
        peaks.push(peak);
    }
    // The process, `buffer_mib` (48), and a few MiB whatever the entries: the directory's
    // first megabyte, the sources read ahead, the names' hashes while the manifest is read.
    let budget = 27.0 + 48.0 + 4.0;
    let (small, large) = (peaks[0], peaks[1]);
    assert!(
        large < budget,
        "peak RSS {large:.1} MiB over {budget:.1} MiB"
    );
    // 90,000 entries more: 4 MiB would be 47 bytes each (their URLs and names alone take ~110).
    assert!(
        large - small < 4.0,
        "100,000 entries took {large:.1} MiB, 10,000 took {small:.1} MiB"
    );
}
