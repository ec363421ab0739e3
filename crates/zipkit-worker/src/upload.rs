//! Multipart upload of the archive as it grows: chunks arrive from the writer, are cut into
//! parts of a fixed size (so R2's "equal parts except the last" holds), and each part's ETag is
//! stored as soon as the part is written.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

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
/// The upload is completed only when `complete` says so once the chunks end: a job that failed or
/// was cancelled must not leave a (truncated or otherwise) archive behind.
pub async fn upload(
    target: &Target,
    mut chunks: mpsc::Receiver<Bytes>,
    part_size: usize,
    record: PartRecorder<'_>,
    complete: tokio::sync::oneshot::Receiver<bool>,
) -> Result<(u64, String), UploadError> {
    let mut parts = Vec::new();
    let mut buffer = BytesMut::with_capacity(part_size);
    let mut total = 0u64;
    let mut done = false;
    while !done {
        match chunks.recv().await {
            Some(chunk) => {
                total += chunk.len() as u64;
                buffer.extend_from_slice(&chunk);
            }
            None => done = true,
        }
        while buffer.len() >= part_size || (done && !buffer.is_empty()) {
            let take = buffer.len().min(part_size);
            let body = buffer.split_to(take).freeze();
            let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
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
            let etag = answer.e_tag().unwrap_or_default().to_owned();
            record(number, etag.clone(), size)
                .await
                .map_err(UploadError::Record)?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
        }
    }
    if !complete.await.unwrap_or(false) {
        return Err(UploadError::Abandoned);
    }
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
