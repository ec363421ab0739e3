//! The case "8 x 1 GiB already in the destination store": the same job run twice on objects in
//! the bucket the archive goes to, once assembled by the store (UploadPartCopy, what the bucket
//! test found it takes) and once streamed through the worker (the bucket recorded as a store
//! that refuses UploadPartCopy). For each: wall time, the bytes the worker downloaded and
//! uploaded (its own counters), its CPU time and peak RSS, and the ceiling the store sets: for
//! the copy, the store copying the same objects into one plain multipart object; for the
//! stream, the objects downloaded while as many bytes go up as one plain multipart object.

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_s3::types::CompletedPart;
use bytes::Bytes;
use zipkit_domain::Compression;
use zipkit_domain::models::{Bucket, BucketTestResult, NewZipEntry};
use zipkit_domain::values::{EntryName, SourceUrl};
use zipkit_egress::EgressPolicy;
use zipkit_runtime::metrics::{BYTES_DOWNLOADED, BYTES_UPLOADED};
use zipkit_storage::{BucketClients, BucketLocation};
use zipkit_test_support::services::loopback_egress;

use crate::corpus::MIB;
use crate::harness::{Bench, mib_s};

pub const NAME: &str = "8 x 1 GiB already in the destination store";
const OBJECTS: u64 = 8;
const SIZE: u64 = 1024 * MIB;

/// Stores the objects (with their CRC-32 as their checksum, as a store keeps one it was sent),
/// runs the job copied and streamed, prints a line for each, and deletes what it wrote.
pub async fn run(bench: &Bench) -> anyhow::Result<()> {
    let client = bench.store.client();
    let bucket = bench.store.name();
    let mut keys = Vec::new();
    for i in 0..OBJECTS {
        let key = format!("assembly/object-{i}.bin");
        let body = object_bytes(i);
        let crc = crc32fast::hash(&body).to_be_bytes();
        client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .checksum_crc32(aws_smithy_types::base64::encode(crc))
            .body(body.into())
            .send()
            .await
            .with_context(|| format!("PUT {key}"))?;
        keys.push(key);
    }
    let entries: Vec<NewZipEntry> = keys
        .iter()
        .map(|key| {
            Ok(NewZipEntry {
                url: SourceUrl::bucket_object(&bench.bucket.name, key).context("url")?,
                filename: EntryName::parse(key).context("name")?,
                given_filename: None,
                modified_at: None,
                declared_size: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;

    let tested = test_bucket(bench).await?;
    let mut lines = Vec::new();
    for (strategy, copies) in [("copied", true), ("streamed", false)] {
        let mut capabilities = tested;
        capabilities.upload_part_copy = copies;
        let mut conn = bench.db.connect().await;
        let result = BucketTestResult::passed(capabilities);
        Bucket::record_test(&mut conn, bench.bucket.id, &result).await?;
        let down_before = bench.counter(BYTES_DOWNLOADED).await?;
        let up_before = bench.counter(BYTES_UPLOADED).await?;
        bench.reset_peak_rss()?;
        let cpu_before = bench.cpu_time()?;
        let key = format!("assembly-{strategy}.zip");
        let run = bench
            .run_entries(NAME, Compression::Store, entries.clone(), &key)
            .await?;
        let cpu = bench.cpu_time()? - cpu_before;
        let rss = bench.peak_rss_mib()?;
        let down = bench.counter(BYTES_DOWNLOADED).await? - down_before;
        let up = bench.counter(BYTES_UPLOADED).await? - up_before;
        bench.delete(&key).await;
        let ceiling = if copies {
            store_copy(bench, &keys).await?
        } else {
            let urls = presigned(bench, &keys).await?;
            let corpus = Bytes::from(block(0));
            bench.ceiling(&urls, run.archive, &corpus).await?.0
        };
        lines.push(format!(
            "{NAME}, {strategy}: {:.2} s ({:.0} MiB/s), through the worker {:.1} MiB down and \
             {:.1} MiB up, CPU {:.1} s, peak RSS {rss} MiB; ceiling {:.2} s ({:.0} % of it)",
            run.took.as_secs_f64(),
            mib_s(run.archive, run.took),
            down / MIB as f64,
            up / MIB as f64,
            cpu.as_secs_f64(),
            ceiling.as_secs_f64(),
            ceiling.as_secs_f64() / run.took.as_secs_f64() * 100.0,
        ));
    }
    for key in &keys {
        bench.delete(key).await;
    }
    for line in lines {
        println!("{line}");
    }
    println!(
        "(ceiling when copied: the store copying the same objects into one plain multipart \
         object, a part each; when streamed: the objects downloaded while as many bytes go up as \
         one plain multipart object)"
    );
    Ok(())
}

/// 1 GiB of object `i`: a MiB of its own, repeated (what a copy moves does not matter).
fn object_bytes(i: u64) -> Vec<u8> {
    block(i).repeat((SIZE / MIB) as usize)
}

fn block(i: u64) -> Vec<u8> {
    (0..MIB)
        .map(|n| (n * 31 + i * 7 + n / 4099) as u8)
        .collect()
}

/// What the bench bucket's keys may do, as the real bucket test finds it; jobs may read it.
async fn test_bucket(bench: &Bench) -> anyhow::Result<zipkit_domain::models::BucketCapabilities> {
    let clients = BucketClients::new(EgressPolicy::new(&loopback_egress()));
    let location = BucketLocation::from(&bench.bucket);
    let credentials = bench.bucket.credentials(&bench.keyring)?;
    let capabilities = clients.test_bucket(&location, &credentials).await?;
    anyhow::ensure!(
        capabilities.upload_part_copy,
        "the store does not take UploadPartCopy"
    );
    let mut conn = bench.db.connect().await;
    Bucket::set_read_sources(&mut conn, bench.bucket.project_id, bench.bucket.id, true).await?;
    Ok(capabilities)
}

/// The store copying `keys` into one plain multipart object, a part each, all at once.
async fn store_copy(bench: &Bench, keys: &[String]) -> anyhow::Result<Duration> {
    let (client, bucket, target) = (bench.store.client(), bench.store.name(), "ceiling-copy.bin");
    let started = Instant::now();
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(target)
        .send()
        .await?;
    let upload_id = upload.upload_id().context("upload id")?;
    let copies = keys.iter().enumerate().map(|(n, key)| async move {
        let part = client
            .upload_part_copy()
            .bucket(bucket)
            .key(target)
            .upload_id(upload_id)
            .part_number(n as i32 + 1)
            .copy_source(zipkit_storage::copy_source(bucket, key))
            .send()
            .await?;
        let etag = part.copy_part_result().and_then(|r| r.e_tag());
        Ok::<_, anyhow::Error>(
            CompletedPart::builder()
                .part_number(n as i32 + 1)
                .set_e_tag(etag.map(str::to_owned))
                .build(),
        )
    });
    let parts = futures_util::future::try_join_all(copies).await?;
    bench.complete_upload(target, upload_id, parts).await?;
    let took = started.elapsed();
    bench.delete(target).await;
    Ok(took)
}

/// GETs of `keys` signed with the bench's keys, for the streamed ceiling's downloads.
async fn presigned(bench: &Bench, keys: &[String]) -> anyhow::Result<Vec<String>> {
    let mut urls = Vec::new();
    for key in keys {
        let url = zipkit_storage::presigned_get(
            bench.store.client(),
            bench.store.name(),
            key,
            Duration::from_secs(3600),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        urls.push(url);
    }
    Ok(urls)
}
