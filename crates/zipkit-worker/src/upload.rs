//! Multipart upload of the archive as it grows: chunks arrive from the writer, are cut into
//! parts of a fixed size (so R2's "equal parts except the last" holds), and each part's ETag is
//! stored as soon as the part is written.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Where the archive goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub client: Client,
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("uploading part {part} failed: {message}")]
    Part {
        part: i32,
        message: String,
        code: Option<String>,
    },
    #[error("completing the upload failed: {message}")]
    Complete {
        message: String,
        code: Option<String>,
    },
    #[error("recording a part failed: {0}")]
    Record(String),
    #[error("the job did not finish; the upload was not completed")]
    Abandoned,
}

/// Called after each part with (part number, ETag, size); stores it in PostgreSQL.
pub type PartRecorder<'a> = &'a mut (
            dyn FnMut(
    i32,
    String,
    i64,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
                + Send
        );

/// Uploads everything `chunks` yields, in parts of `part_size`; returns (size, ETag).
/// Uploads everything `chunks` yields, in parts of `part_size`, with up to `in_flight` parts
/// uploading at once (memory: about `(in_flight + 1) × part_size`); returns (size, ETag).
/// The upload is completed only when `complete` says so once the chunks end: a job that failed or
/// was cancelled must not leave a (truncated or otherwise) archive behind.
pub async fn upload(
    target: &Target,
    mut chunks: mpsc::Receiver<Bytes>,
    part_size: usize,
    in_flight: usize,
    record: PartRecorder<'_>,
    complete: tokio::sync::oneshot::Receiver<bool>,
) -> Result<(u64, String), UploadError> {
    let mut uploading: JoinSet<Result<(i32, String, i64), UploadError>> = JoinSet::new();
    let mut parts = Vec::new();
    let mut buffer = BytesMut::with_capacity(part_size);
    let (mut total, mut next_number, mut done) = (0u64, 1i32, false);
    while !done {
        match chunks.recv().await {
            Some(chunk) => {
                total += chunk.len() as u64;
                buffer.extend_from_slice(&chunk);
            }
            None => done = true,
        }
        while buffer.len() >= part_size || (done && !buffer.is_empty()) {
            // At the limit: wait for a part to finish (and record it) before cutting another.
            if uploading.len() >= in_flight.max(1) {
                finish_one(&mut uploading, record, &mut parts).await?;
            }
            let body = buffer.split_to(buffer.len().min(part_size)).freeze();
            uploading.spawn(upload_part(target.clone(), next_number, body));
            next_number += 1;
        }
    }
    while !uploading.is_empty() {
        finish_one(&mut uploading, record, &mut parts).await?;
    }
    if !complete.await.unwrap_or(false) {
        return Err(UploadError::Abandoned);
    }
    parts.sort_by_key(|p: &CompletedPart| p.part_number());
    let completed = target
        .client
        .complete_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(&target.upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_s3::error::ProvideErrorMetadata;
            UploadError::Complete {
                code: e.code().map(str::to_owned),
                message: e.to_string(),
            }
        })?;
    Ok((total, completed.e_tag().unwrap_or_default().to_owned()))
}

async fn upload_part(
    target: Target,
    number: i32,
    body: Bytes,
) -> Result<(i32, String, i64), UploadError> {
    let size = body.len() as i64;
    let answer = target
        .client
        .upload_part()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(&target.upload_id)
        .part_number(number)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_s3::error::ProvideErrorMetadata;
            UploadError::Part {
                part: number,
                code: e.code().map(str::to_owned),
                message: e.to_string(),
            }
        })?;
    Ok((number, answer.e_tag().unwrap_or_default().to_owned(), size))
}

/// Waits for one part upload, records its ETag, and adds it to the list for completion.
async fn finish_one(
    uploading: &mut JoinSet<Result<(i32, String, i64), UploadError>>,
    record: PartRecorder<'_>,
    parts: &mut Vec<CompletedPart>,
) -> Result<(), UploadError> {
    let Some(joined) = uploading.join_next().await else {
        return Ok(());
    };
    let (number, etag, size) = joined.map_err(|e| UploadError::Part {
        part: 0,
        code: None,
        message: e.to_string(),
    })??;
    record(number, etag.clone(), size)
        .await
        .map_err(UploadError::Record)?;
    parts.push(
        CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build(),
    );
    Ok(())
}

/// Tries to abort the upload; the minimal policy lacks AbortMultipartUpload, so a refusal is
/// logged, not fatal (a bucket lifecycle rule cleans incomplete uploads).
pub async fn abort(target: &Target) {
    if let Err(err) = target
        .client
        .abort_multipart_upload()
        .bucket(&target.bucket)
        .key(&target.key)
        .upload_id(&target.upload_id)
        .send()
        .await
    {
        tracing::warn!(error = %err, "could not abort the multipart upload");
    }
}
