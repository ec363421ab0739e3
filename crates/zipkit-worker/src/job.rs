//! One zip job, from its row to the finished object: sources are downloaded in order and streamed
//! into the archive writer, whose output is streamed into the multipart upload.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{Bucket, EntryOutcome, JobError, Zip, ZipOutcome};
use zipkit_domain::{EntryState, OnError};
use zipkit_storage::BucketLocation;

use crate::archive::{ArchiveInput, method_for, timestamp, write_archive};
use crate::download::fetch_with_retries;
use crate::upload::{self, Target};

/// Everything a job needs from the worker.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub pool: PgPool,
    pub keyring: Arc<KeyRing>,
    pub http: reqwest::Client,
    pub part_size: usize,
    /// Parts uploading at once.
    pub parts_in_flight: usize,
    pub owner: String,
    pub allow_private_networks: bool,
}

/// Entries whose size is unknown or near 4 GiB are written with ZIP64 fields.
const ZIP64_THRESHOLD: u64 = 4 * 1024 * 1024 * 1024 - 64 * 1024 * 1024;

/// A failed outcome. The source's problems are the request's (`invalid_request_error`: fix the
/// URL and resubmit); everything else — the bucket, the database, the archive — is `api_error`.
fn failed(code: &str, message: impl Into<String>, param: Option<String>) -> ZipOutcome {
    let error_type = if code.starts_with("source_") {
        "invalid_request_error"
    } else {
        "api_error"
    };
    ZipOutcome::Failed(JobError {
        error_type: error_type.into(),
        code: code.into(),
        message: message.into(),
        param,
    })
}

/// Builds the archive for a claimed job and says how it ended. Never panics on bad input.
pub async fn run(
    ctx: &JobContext,
    zip: &Zip,
    cancelled: tokio::sync::watch::Receiver<bool>,
) -> ZipOutcome {
    let mut conn = match ctx.pool.get().await {
        Ok(conn) => conn,
        Err(e) => return failed("internal_error", format!("database unavailable: {e}"), None),
    };
    let bucket = match Bucket::find_any(&mut conn, zip.bucket_id).await {
        Ok(Some(bucket)) => bucket,
        Ok(None) => return failed("bucket_not_found", "the bucket was removed", None),
        Err(e) => return failed("internal_error", e.to_string(), None),
    };
    let credentials = match bucket.credentials(&ctx.keyring) {
        Ok(c) => c,
        Err(e) => return failed("bucket_credentials_unreadable", e.to_string(), None),
    };
    let entries = match Zip::entries(&mut conn, zip.id).await {
        Ok(e) => e,
        Err(e) => return failed("internal_error", e.to_string(), None),
    };
    drop(conn);

    let location = BucketLocation::from(&bucket);
    let client = zipkit_storage::client(&location, &credentials);
    let mut create = client
        .create_multipart_upload()
        .bucket(&bucket.name)
        .key(&zip.object_key)
        .content_type("application/zip");
    if let Some(acl) = &location.acl {
        create = create.acl(aws_sdk_s3::types::ObjectCannedAcl::from(acl.as_str()));
    }
    let upload_id = match create.send().await {
        Ok(out) => out.upload_id().unwrap_or_default().to_owned(),
        Err(e) => {
            let why = zipkit_storage::explain(&location, &e);
            return failed(why.job_code(), why.to_string(), None);
        }
    };
    let target = Target {
        client,
        bucket: bucket.name.clone(),
        key: zip.object_key.clone(),
        upload_id: upload_id.clone(),
    };
    if let Ok(mut conn) = ctx.pool.get().await {
        let _ = Zip::set_upload_id(&mut conn, zip.id, &ctx.owner, &upload_id).await;
    }

    // Writer thread and uploader, connected by bounded channels.
    let (input, input_rx) = mpsc::channel::<ArchiveInput>(16);
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(16);
    let modified = timestamp(zip.created_at);
    let writer = tokio::task::spawn_blocking(move || write_archive(input_rx, chunks_tx, modified));
    let pool = ctx.pool.clone();
    let zip_id = zip.id;
    let part_upload_id = upload_id.clone();
    let upload_target = target.clone();
    let part_size = ctx.part_size;
    let in_flight = ctx.parts_in_flight;
    let (complete, complete_rx) = tokio::sync::oneshot::channel::<bool>();
    let uploader = tokio::spawn(async move {
        let mut record = move |number: i32, etag: String, size: i64| {
            let pool = pool.clone();
            let upload_id = part_upload_id.clone();
            Box::pin(async move {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                Zip::record_part(&mut conn, zip_id, &upload_id, number, &etag, size)
                    .await
                    .map_err(|e| e.to_string())
            }) as std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        };
        upload::upload(
            &upload_target,
            chunks_rx,
            part_size,
            in_flight,
            &mut record,
            complete_rx,
        )
        .await
    });

    let feed = feed_sources(ctx, zip, &entries, &input, &cancelled).await;
    drop(input);
    let written = writer.await;
    // Complete the upload only if every source went in and the archive was finished.
    let _ = complete.send(feed.is_ok() && matches!(written, Ok(Ok(_))));
    let uploaded = uploader.await;

    let outcome = match (feed, written, uploaded) {
        (Err(outcome), _, _) => outcome,
        (_, Ok(Err(e)), _) => failed("archive_failed", e.to_string(), None),
        (_, Err(e), _) => failed(
            "internal_error",
            format!("the archive writer stopped: {e}"),
            None,
        ),
        (_, _, Err(e)) => failed("internal_error", format!("the uploader stopped: {e}"), None),
        (_, _, Ok(Err(e))) => failed("bucket_upload_failed", e.to_string(), None),
        (Ok(done), Ok(Ok(_)), Ok(Ok((size, etag)))) => ZipOutcome::Succeeded {
            size: i64::try_from(size).unwrap_or(i64::MAX),
            etag,
            entries: done,
        },
    };
    if matches!(outcome, ZipOutcome::Failed(_)) {
        upload::abort(&target).await;
    }
    outcome
}

/// Downloads each source in order and feeds it to the writer; returns how many entries went in.
async fn feed_sources(
    ctx: &JobContext,
    zip: &Zip,
    entries: &[zipkit_domain::models::ZipEntry],
    input: &mpsc::Sender<ArchiveInput>,
    cancelled: &tokio::sync::watch::Receiver<bool>,
) -> Result<i32, ZipOutcome> {
    let stop_if_cancelled = || {
        if *cancelled.borrow() {
            Err(failed(
                "cancelled",
                "the job was cancelled (or taken over by another worker)",
                None,
            ))
        } else {
            Ok(())
        }
    };
    let stopped = || failed("internal_error", "the archive writer stopped early", None);
    let (mut done, mut downloaded) = (0i32, 0i64);
    for entry in entries {
        stop_if_cancelled()?;
        let param = Some(format!("urls[{}]", entry.entry_index));
        let response =
            match fetch_with_retries(&ctx.http, &entry.url, ctx.allow_private_networks).await {
                Ok(response) => response,
                Err(e) if zip.on_error == OnError::Skip => {
                    record(
                        ctx,
                        zip,
                        EntryOutcome {
                            index: entry.entry_index,
                            state: EntryState::Skipped,
                            size: None,
                            crc32: None,
                            error_code: Some(e.code.into()),
                            error_message: Some(e.message.clone()),
                        },
                    )
                    .await;
                    continue;
                }
                Err(e) => {
                    return Err(failed(
                        e.code,
                        format!("urls[{}]: {}", entry.entry_index, e.message),
                        param,
                    ));
                }
            };
        let large = response
            .content_length()
            .is_none_or(|l| l >= ZIP64_THRESHOLD);
        let compression = method_for(zip.compression, &entry.filename);
        input
            .send(ArchiveInput::Start {
                name: entry.filename.clone(),
                compression,
                large,
            })
            .await
            .map_err(|_| stopped())?;
        let mut size = 0i64;
        let mut body = response.bytes_stream();
        let mut cancel_wait = cancelled.clone();
        loop {
            // A quiet source must not delay a cancel: wait for whichever comes first.
            let next = tokio::select! {
                next = body.next() => next,
                _ = cancel_wait.wait_for(|c| *c) => return Err(stop_if_cancelled().expect_err("cancelled")),
            };
            let Some(chunk) = next else { break };
            // Bytes of this entry are already in the archive: no skipping from here on.
            let chunk = chunk.map_err(|_| {
                failed(
                    "source_unreachable",
                    format!(
                        "urls[{}]: the source stopped sending before the end",
                        entry.entry_index
                    ),
                    param.clone(),
                )
            })?;
            stop_if_cancelled()?;
            size += chunk.len() as i64;
            downloaded += chunk.len() as i64;
            input
                .send(ArchiveInput::Data(chunk))
                .await
                .map_err(|_| stopped())?;
        }
        done += 1;
        record(
            ctx,
            zip,
            EntryOutcome {
                index: entry.entry_index,
                state: EntryState::Done,
                size: Some(size),
                crc32: None,
                error_code: None,
                error_message: None,
            },
        )
        .await;
        if let Ok(mut conn) = ctx.pool.get().await {
            let _ = Zip::record_progress(&mut conn, zip.id, &ctx.owner, done, downloaded, 0).await;
        }
    }
    Ok(done)
}

async fn record(ctx: &JobContext, zip: &Zip, outcome: EntryOutcome) {
    match ctx.pool.get().await {
        Ok(mut conn) => {
            if let Err(e) = Zip::record_entry(&mut conn, zip.id, &outcome).await {
                tracing::warn!(zip.id = %zip.id, error = %e, "recording an entry failed");
            }
        }
        Err(e) => tracing::warn!(zip.id = %zip.id, error = %e, "recording an entry failed"),
    }
}
