//! What a built archive holds: entries, names, times, sizes, ZIP64, and the same bytes every
//! time; read back by the readers people use.

use std::time::Duration;

use zipkit_domain::models::{NewZipEntry, Zip};
use zipkit_domain::values::{EntryName, SourceUrl};
use zipkit_domain::{Compression, OnError, ZipStatus};
use zipkit_test_support::sources::{Behaviour, SourceServer, word_salad};

use crate::harness::Harness;

use super::{hex, local_headers, pseudo_random, read_with_python, sized_entry, times_and_names};

#[tokio::test]
async fn a_job_is_streamed_into_a_valid_archive_in_the_bucket() {
    let harness = Harness::start().await;
    let text = "zipkit ".repeat(50_000).into_bytes();
    let noise = pseudo_random(12 * 1024 * 1024, 42); // three 5 MiB parts, uploaded concurrently
    let image = pseudo_random(300_000, 7);
    let sources = SourceServer::start(vec![
        ("report.txt", Behaviour::Serve(text.clone())),
        ("noise.bin", Behaviour::Serve(noise.clone())),
        ("photo.jpg", Behaviour::Serve(image.clone())),
    ])
    .await;
    let bucket = harness.bucket().await;
    let entries = [
        (sources.url("report.txt"), "docs/report.txt"),
        (sources.url("noise.bin"), "data/深い/noise.bin"),
        (sources.url("photo.jpg"), "photos/été.jpg"),
    ];
    let id = harness
        .submit(
            &bucket,
            "exports/archive.zip",
            &entries,
            Compression::Auto,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.result_entries, Some(3));
    assert_eq!(zip.files_done, 3);

    let archive = harness.store.get("exports/archive.zip").await;
    assert_eq!(zip.result_size, Some(archive.len() as i64));
    let read = read_with_python(&archive);
    assert_eq!(read.len(), 3);
    assert_eq!(read["docs/report.txt"], text);
    assert_eq!(read["data/深い/noise.bin"], noise);
    assert_eq!(read["photos/été.jpg"], image);
    assert!(
        archive.len() < text.len() + noise.len() + image.len(),
        "the text was deflated"
    );

    let mut conn = harness.db.connect().await;
    let parts: i64 = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        zipkit_domain::schema::zip_parts::table
            .filter(zipkit_domain::schema::zip_parts::zip_id.eq(id))
            .count()
            .get_result(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(parts, 3, "a 12 MiB archive in 5 MiB parts");
    harness.stop().await;
}

/// Saved by a browser as a zip under the archive's own name, whichever way it was uploaded: in
/// one request (it fits in a part) or in parts.
#[tokio::test]
async fn the_archive_downloads_as_a_zip_named_after_its_key() {
    let harness = Harness::start().await;
    let large = pseudo_random(6 * 1024 * 1024, 3);
    let sources = SourceServer::start(vec![
        ("small.txt", Behaviour::Serve(b"small".to_vec())),
        ("large.bin", Behaviour::Serve(large)),
    ])
    .await;
    let bucket = harness.bucket().await;
    for (key, source, disposition) in [
        (
            "exports/Q4 report.zip",
            "small.txt",
            "attachment; filename=\"Q4 report.zip\"",
        ),
        (
            "客户/归档 2026.zip",
            "large.bin",
            "attachment; filename=\"__ 2026.zip\"; filename*=UTF-8''%E5%BD%92%E6%A1%A3%202026.zip",
        ),
    ] {
        let zip = harness
            .build_stored(&bucket, key, &[sources.entry(source)], OnError::Fail)
            .await;
        assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
        let head = harness.store.head(key).await;
        assert_eq!(head.content_type(), Some("application/zip"), "{key}");
        assert_eq!(head.content_disposition(), Some(disposition), "{key}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn the_same_job_built_twice_gives_the_same_bytes() {
    // Multi-block deflate entries compressed on every core (which thread takes which block
    // varies from run to run), a stored one, and `auto` deciding by content on sources served
    // in chunks of whatever size the network makes.
    let harness = Harness::start().await;
    let mib = 1024 * 1024;
    let mut routes = vec![
        (
            "photo",
            Behaviour::Serve([b"\xff\xd8\xff\xe0".to_vec(), pseudo_random(mib, 3)].concat()),
        ),
        ("notes", Behaviour::Serve(word_salad(100_000, 4))),
    ];
    let names: Vec<String> = (0..4).map(|i| format!("text-{i}.txt")).collect();
    for (i, name) in names.iter().enumerate() {
        routes.push((
            name.as_str(),
            Behaviour::Serve(word_salad(3 * mib + 12_345 * i, 10 + i as u64)),
        ));
    }
    let sources = SourceServer::start(routes).await;
    let bucket = harness.bucket().await;
    let mut entries = vec![sources.entry("photo"), sources.entry("notes")];
    entries.extend(names.iter().map(|n| (sources.url(n), n.as_str())));
    let id = harness
        .submit(
            &bucket,
            "twice.zip",
            &entries,
            Compression::Auto,
            OnError::Fail,
        )
        .await;
    let first_run = harness.wait_finished(id).await;
    assert_eq!(
        first_run.status,
        ZipStatus::Succeeded,
        "{:?}",
        first_run.error_message
    );
    let first = harness.store.get("twice.zip").await;
    let read = read_with_python(&first);
    assert_eq!(read["notes"], word_salad(100_000, 4));
    assert_eq!(read["text-3.txt"], word_salad(3 * mib + 3 * 12_345, 13));

    // Another job in between, so the compressing threads have other work behind them.
    let other = SourceServer::start(vec![(
        "other.txt",
        Behaviour::Serve(word_salad(3 * mib, 99)),
    )])
    .await;
    let between = harness
        .submit(
            &bucket,
            "between.zip",
            &[other.entry("other.txt")],
            Compression::Deflate,
            OnError::Fail,
        )
        .await;
    assert_eq!(
        harness.wait_finished(between).await.status,
        ZipStatus::Succeeded
    );

    harness.rerun(id).await;
    let second_run = harness.wait_finished(id).await;
    assert_eq!(
        second_run.status,
        ZipStatus::Succeeded,
        "{:?}",
        second_run.error_message
    );
    let second = harness.store.get("twice.zip").await;
    assert_eq!(first.len(), second.len());
    assert!(first == second, "the two archives differ");
    harness.stop().await;
}

#[tokio::test]
async fn entries_keep_their_sources_time_and_non_ascii_names_their_unicode_path() {
    use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
    let harness = Harness::start().await;
    let sources = SourceServer::start(vec![
        (
            "dated",
            Behaviour::ServeModified(b"dated".to_vec(), "Wed, 21 Oct 2015 07:28:01 GMT".into()),
        ),
        ("undated", Behaviour::Serve(b"undated".to_vec())),
        (
            "overridden",
            Behaviour::ServeModified(b"given".to_vec(), "Wed, 21 Oct 2015 07:28:01 GMT".into()),
        ),
        (
            "ancient",
            // HTTP's obsolete asctime form, and a time before DOS dates begin.
            Behaviour::ServeModified(b"ancient".to_vec(), "Thu Jan  1 00:00:10 1970".into()),
        ),
    ])
    .await;
    let bucket = harness.bucket().await;
    let given = Utc.with_ymd_and_hms(2020, 2, 29, 12, 34, 57).unwrap();
    let entry = |route: &str, name: &str, modified_at: Option<DateTime<Utc>>| NewZipEntry {
        url: SourceUrl::parse(&sources.url(route)).unwrap(),
        filename: EntryName::parse(name).unwrap(),
        given_filename: None,
        modified_at,
        declared_size: None,
    };
    let entries = vec![
        entry("dated", "dated.txt", None),
        entry("undated", "été/naïve.txt", None),
        entry("overridden", "given.txt", Some(given)),
        entry("ancient", "ancient.txt", None),
    ];
    let id = harness
        .submit_entries(
            &bucket,
            "times.zip",
            entries,
            Compression::Auto,
            OnError::Fail,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let first = harness.store.get("times.zip").await;
    read_with_python(&first);

    let ut = |seconds: i64| format!("01{}", hex(&(seconds as u32).to_le_bytes()));
    let dos = |at: DateTime<Utc>| {
        serde_json::json!([
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute(),
            at.second() / 2 * 2
        ])
    };
    let dated = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 1).unwrap();
    let name = "été/naïve.txt".as_bytes();
    let unicode_path = format!(
        "01{}{}",
        hex(&crc32fast::hash(name).to_le_bytes()),
        hex(name)
    );
    let expected = [
        (
            "dated.txt",
            dos(dated),
            ut(dated.timestamp()),
            String::new(),
        ),
        (
            "été/naïve.txt",
            dos(zip.created_at),
            ut(zip.created_at.timestamp()),
            unicode_path,
        ),
        (
            "given.txt",
            dos(given),
            ut(given.timestamp()),
            String::new(),
        ),
        (
            "ancient.txt",
            serde_json::json!([1980, 1, 1, 0, 0, 0]),
            ut(10),
            String::new(),
        ),
    ];
    let seen = times_and_names(&first);
    assert_eq!(seen.len(), expected.len());
    for (row, (name, dos, ut, up)) in seen.iter().zip(expected) {
        assert_eq!(row["name"], name);
        assert_eq!(row["dos"], dos, "{name}");
        assert_eq!(
            (&row["local_ut"], &row["central_ut"]),
            (&ut.clone().into(), &ut.into()),
            "{name}"
        );
        assert_eq!(
            (&row["local_up"], &row["central_up"]),
            (&up.clone().into(), &up.into()),
            "{name}"
        );
    }

    // Built again from the start: the same times, so the same bytes.
    harness.rerun(id).await;
    let again = harness.wait_finished(id).await;
    assert_eq!(
        again.status,
        ZipStatus::Succeeded,
        "{:?}",
        again.error_message
    );
    assert!(
        first == harness.store.get("times.zip").await,
        "the rebuilt archive differs"
    );
    harness.stop().await;
}

#[tokio::test]
async fn downloads_ahead_share_one_byte_budget_without_starving_the_entry_being_written() {
    // A budget smaller than one source: the sources ahead take all of it, and the one being
    // written still gets on with its own share.
    let harness = Harness::start_configured(|w| {
        w.download_buffer_mib = 1;
        w.downloads_ahead = 64;
    })
    .await;
    let mut routes: Vec<(String, Behaviour)> = (0..5)
        .map(|i| {
            (
                format!("big-{i}.bin"),
                Behaviour::Serve(pseudo_random(3 << 20, i)),
            )
        })
        .collect();
    // And many small ones that wait before their first byte.
    routes.extend((0..200).map(|i| {
        (
            format!("small-{i}.txt"),
            Behaviour::Slow {
                chunk: 1000,
                chunks: 1,
                pause: Duration::from_millis(50),
            },
        )
    }));
    let sources = SourceServer::start(
        routes
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect(),
    )
    .await;
    let bucket = harness.bucket().await;
    let entries: Vec<(String, &str)> = routes
        .iter()
        .map(|(name, _)| (sources.url(name), name.as_str()))
        .collect();
    let zip = harness
        .build_stored(&bucket, "budget.zip", &entries, OnError::Fail)
        .await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let read = read_with_python(&harness.store.get("budget.zip").await);
    assert_eq!(read.len(), 205);
    assert_eq!(read["big-4.bin"], pseudo_random(3 << 20, 4));
    assert_eq!(read["small-199.txt"], vec![b'x'; 1000]);
    harness.stop().await;
}

#[tokio::test]
async fn a_declared_size_decides_zip64_and_the_source_must_send_exactly_that() {
    let harness = Harness::start().await;
    let data = pseudo_random(300 * 1024, 5);
    let sources = SourceServer::start(vec![
        ("chunked", Behaviour::Chunked(data.clone())),
        ("short", Behaviour::Chunked(vec![b's'; 100])),
        ("long", Behaviour::Chunked(vec![b'l'; 300])),
        ("announced", Behaviour::Serve(vec![b'a'; 50])),
    ])
    .await;
    let bucket = harness.bucket().await;
    let entry =
        |route: &str, name: &str, size: Option<i64>| sized_entry(&sources, route, name, size);
    let entries = vec![
        entry("chunked", "declared.bin", Some(data.len() as i64)),
        entry("chunked", "undeclared.bin", None),
        entry("short", "short.bin", Some(200)),
        entry("long", "long.bin", Some(200)),
        entry("announced", "announced.bin", Some(60)),
    ];
    let id = harness
        .submit_entries(
            &bucket,
            "sizes.zip",
            entries,
            Compression::Store,
            OnError::Skip,
        )
        .await;
    let zip = harness.wait_finished(id).await;
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    let archive = harness.store.get("sizes.zip").await;
    let read = read_with_python(&archive);
    assert_eq!(read["declared.bin"], data);
    assert_eq!(read["undeclared.bin"], data);
    // Declared: no room for ZIP64 at all. Unknown: room kept, and filled with padding.
    assert_eq!(
        local_headers(&archive),
        [
            ("declared.bin".to_owned(), 20, vec![0x5455]),
            ("undeclared.bin".to_owned(), 20, vec![0xD935, 0x5455]),
        ]
    );
    let mut conn = harness.db.connect().await;
    let left_out = harness.skipped(id).await;
    let mut reasons: Vec<(String, Option<String>, Option<String>)> = left_out
        .into_iter()
        .map(|e| (e.filename.into_string(), e.error_code, e.error_message))
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    for ((name, code, message), (expected_name, what)) in reasons.iter().zip([
        ("announced.bin", "the source announces 50"),
        ("long.bin", "the source sent more"),
        ("short.bin", "the source sent 100"),
    ]) {
        assert_eq!(name, expected_name);
        assert_eq!(code.as_deref(), Some("source_size_mismatch"), "{name}");
        let message = message.as_deref().unwrap_or_default();
        assert!(
            message.contains(what) && message.contains("declared"),
            "{name}: {message}"
        );
    }
    // Worked out again after each source left out: the size of the archive in the bucket.
    let expected = Zip::expected_size(&mut conn, id).await.unwrap();
    assert_eq!(expected, Some(archive.len() as i64));
    assert_eq!(zip.result_size, expected);
    harness.stop().await;
}

#[tokio::test]
async fn the_expected_size_is_known_while_a_source_streams_and_follows_a_skipped_source() {
    let harness = Harness::start().await;
    let first = pseudo_random(100_000, 11);
    // Looks gzipped: `auto` stores it by its first bytes.
    let mut slow = pseudo_random(2 * 1024 * 1024, 12);
    slow[..2].copy_from_slice(b"\x1f\x8b");
    let cut = pseudo_random(3 * 1024 * 1024, 13);
    let sources = SourceServer::start(vec![
        ("first.jpg", Behaviour::Serve(first.clone())),
        (
            "slow.bin",
            Behaviour::Trickle {
                bytes: slow.clone(),
                chunk: 64 * 1024,
                pause: Duration::from_millis(60),
                then: None,
                ranges: false,
            },
        ),
        (
            "cut.jpg",
            Behaviour::Truncated {
                bytes: cut.clone(),
                cut: 1024 * 1024,
            },
        ),
    ])
    .await;
    let bucket = harness.bucket().await;
    let entry = |route: &str, size: Option<usize>| {
        sized_entry(&sources, route, route, size.map(|s| s as i64))
    };
    // `auto`: the photos are stored by their names with their sizes given; the slow source is
    // stored by its first bytes and gives its length when it answers. From then on the size is
    // certain, unless a source fails.
    let entries = vec![
        entry("first.jpg", Some(first.len())),
        entry("slow.bin", None),
        entry("cut.jpg", Some(cut.len())),
    ];
    let id = harness
        .submit_entries(
            &bucket,
            "expected.zip",
            entries,
            Compression::Auto,
            OnError::Skip,
        )
        .await;
    let mut conn = harness.db.connect().await;
    let mut seen_while_building = Vec::new();
    let zip = loop {
        let zip = Zip::find_any(&mut conn, id).await.unwrap().unwrap();
        if zip.status.is_terminal() {
            break zip;
        }
        if let Some(size) = Zip::expected_size(&mut conn, id).await.unwrap()
            && seen_while_building.last() != Some(&size)
        {
            seen_while_building.push(size);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(zip.status, ZipStatus::Succeeded, "{:?}", zip.error_message);
    assert_eq!(zip.result_entries, Some(2));
    let archive = harness.store.get("expected.zip").await;
    let size = archive.len() as i64;
    assert_eq!(zip.result_size, Some(size));
    // Worked out again once the cut source was left out: the archive's size.
    assert_eq!(Zip::expected_size(&mut conn, id).await.unwrap(), Some(size));
    // While the slow source streamed, the size counted the cut source whole: its header, its
    // bytes, its central record.
    let with_cut = size
        + cut.len() as i64
        + zipkit_zip::format::local_header_len(b"cut.jpg", false) as i64
        + zipkit_zip::format::central_header_len(b"cut.jpg", 3 << 20, 3 << 20, 0) as i64;
    assert_eq!(
        seen_while_building.first(),
        Some(&with_cut),
        "{seen_while_building:?}"
    );
    assert!(
        seen_while_building
            .iter()
            .all(|s| [with_cut, size].contains(s)),
        "{seen_while_building:?}"
    );
    read_with_python(&archive);
    harness.stop().await;
}
