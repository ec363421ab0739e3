//! Multipart upload of the archive as it grows: chunks arrive from the writer, are cut into
//! parts (`PartPlan`: growing on S3, equal on R2), several upload at once, and each part's ETag
//! is stored as soon as the part is written.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

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

/// S3's limits: at most 10,000 parts, each at most 5 GiB.
pub const MAX_PARTS: u64 = 10_000;
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// On S3, part sizes double after every this many parts.
const GROW_EVERY: i32 = 1_000;

/// How the archive is cut into parts so it fits in 10,000 of them whatever its size. The archive's
/// size is unknown until the end, so on S3 (and S3-compatible stores) parts start at the
/// configured size and double every 1,000 parts (8 MiB start: 1,000 parts reach 7.8 GiB, 10,000
/// parts over 5 TiB, S3's object limit). R2 requires equal parts except the last, so there the
/// size is fixed up front from the largest archive the deployment accepts. Fewer parts upload at
/// once as they grow, so memory stays near `(in_flight + 1) × first part size`.
#[derive(Debug, Clone, Copy)]
pub struct PartPlan {
    first: u64,
    in_flight: usize,
    equal: bool,
}

impl PartPlan {
    pub fn new(first: usize, in_flight: usize, equal_parts_for: Option<u64>) -> Self {
        let first = first as u64;
        match equal_parts_for {
            Some(largest) => Self {
                first: first.max(largest.div_ceil(MAX_PARTS)).min(MAX_PART),
                in_flight: in_flight.max(1),
                equal: true,
            },
            None => Self {
                first,
                in_flight: in_flight.max(1),
                equal: false,
            },
        }
    }

    /// The size of part `number` (1-based).
    pub fn size(&self, number: i32) -> usize {
        if self.equal {
            return self.first as usize;
        }
        let doublings = ((number.max(1) - 1) / GROW_EVERY).min(20) as u32;
        (self.first << doublings).min(MAX_PART) as usize
    }

    /// Parts uploading at once while part `number` is cut.
    pub fn in_flight(&self, number: i32) -> usize {
        let grown = self.size(number) as u64 / self.first.max(1);
        (self.in_flight as u64 / grown.max(1)).max(1) as usize
    }
}

/// Uploads everything `chunks` yields, in parts cut by `plan`, several at once (memory: about
/// `(in_flight + 1) × part size`); returns (size, ETag). The upload is completed only when
/// `complete` says so once the chunks end: a job that failed or was cancelled must not leave a
/// (truncated or otherwise) archive behind. An archive smaller than one part is one part.
pub async fn upload(
    target: &Target,
    mut chunks: mpsc::Receiver<Bytes>,
    plan: PartPlan,
    record: PartRecorder<'_>,
    complete: tokio::sync::oneshot::Receiver<bool>,
) -> Result<(u64, String), UploadError> {
    let mut uploading: JoinSet<Result<FinishedPart, UploadError>> = JoinSet::new();
    let mut parts = Vec::new();
    // Each part is filled to exactly its size in its own allocation, so a part in flight never
    // shares (and keeps alive) a larger buffer with the next one.
    let mut buffer = BytesMut::with_capacity(plan.size(1));
    let (mut total, mut next_number) = (0u64, 1i32);
    loop {
        let chunk = chunks.recv().await;
        let done = chunk.is_none();
        let mut chunk = chunk.unwrap_or_default();
        total += chunk.len() as u64;
        loop {
            let part_size = plan.size(next_number);
            let take = chunk.len().min(part_size - buffer.len());
            buffer.extend_from_slice(&chunk.split_to(take));
            let full = buffer.len() == part_size;
            let last = done && chunk.is_empty() && !buffer.is_empty();
            if !(full || last) {
                break;
            }
            // At the limit: wait for a part to finish before starting this one, and record the
            // finished part only once this one is on its way, so the store never waits on
            // PostgreSQL.
            let mut finished = Vec::new();
            while uploading.len() >= plan.in_flight(next_number) {
                finished.push(next_finished(&mut uploading).await?);
            }
            next_number += 1;
            let next = BytesMut::with_capacity(plan.size(next_number));
            let body = std::mem::replace(&mut buffer, next).freeze();
            let span = tracing::info_span!(
                "upload part",
                otel.kind = "client",
                part = next_number - 1,
                bytes = body.len(),
            );
            uploading.spawn(upload_part(target.clone(), next_number - 1, body).instrument(span));
            for part in finished {
                keep(part, record, &mut parts).await?;
            }
        }
        if done {
            break;
        }
    }
    while !uploading.is_empty() {
        let part = next_finished(&mut uploading).await?;
        keep(part, record, &mut parts).await?;
    }
    if !complete.await.unwrap_or(false) {
        return Err(UploadError::Abandoned);
    }
    parts.sort_by_key(|p: &CompletedPart| p.part_number());
    let span = tracing::info_span!("complete upload", otel.kind = "client", parts = parts.len());
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
        .instrument(span)
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
) -> Result<FinishedPart, UploadError> {
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
    metrics::counter!(zipkit_runtime::metrics::PARTS_UPLOADED).increment(1);
    metrics::counter!(zipkit_runtime::metrics::BYTES_UPLOADED).increment(size as u64);
    Ok((number, answer.e_tag().unwrap_or_default().to_owned(), size))
}

/// A part the store has taken: (number, ETag, size).
type FinishedPart = (i32, String, i64);

/// Waits for the next part upload to finish.
async fn next_finished(
    uploading: &mut JoinSet<Result<FinishedPart, UploadError>>,
) -> Result<FinishedPart, UploadError> {
    let joined = uploading
        .join_next()
        .await
        .ok_or_else(|| UploadError::Part {
            part: 0,
            code: None,
            message: "no part was uploading".into(),
        })?;
    joined.map_err(|e| UploadError::Part {
        part: 0,
        code: None,
        message: e.to_string(),
    })?
}

/// Records a finished part's ETag and adds it to the list for completion.
async fn keep(
    (number, etag, size): FinishedPart,
    record: PartRecorder<'_>,
    parts: &mut Vec<CompletedPart>,
) -> Result<(), UploadError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn growing_parts_fit_s3s_largest_object_in_10000_parts() {
        let plan = PartPlan::new(8 * MIB, 4, None);
        assert_eq!(plan.size(1), 8 * MIB);
        assert_eq!(plan.size(1000), 8 * MIB);
        assert_eq!(plan.size(1001), 16 * MIB);
        assert_eq!(plan.in_flight(1), 4);
        assert_eq!(plan.in_flight(2001), 1);
        let total: u64 = (1..=MAX_PARTS as i32).map(|n| plan.size(n) as u64).sum();
        assert!(
            total >= 5 * 1024 * 1024 * MIB as u64,
            "10,000 parts hold {total} bytes"
        );
    }

    #[test]
    fn equal_parts_cover_the_largest_archive() {
        let largest = 500 * 1024 * MIB as u64;
        let plan = PartPlan::new(8 * MIB, 4, Some(largest));
        assert_eq!(plan.size(1), plan.size(9_999));
        assert!(plan.size(1) as u64 * MAX_PARTS >= largest);
        let small = PartPlan::new(8 * MIB, 4, Some(10 * MIB as u64));
        assert_eq!(small.size(1), 8 * MIB);
    }
}
