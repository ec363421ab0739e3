//! Manifests: a job's sources read from a JSON Lines or CSV file, over HTTP or from the
//! project's bucket, a line at a time; a bad line fails the job naming it; a million lines are
//! recorded within the worker's memory budget.

use zipkit_domain::models::{Bucket, ManifestFormat, NewManifest, ResultSettings, Zip};
use zipkit_domain::values::{BucketName, SourceUrl};
use zipkit_domain::{Compression, OnError, ZipStatus};
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
