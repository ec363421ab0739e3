//! The one owner of every call zipkit makes on the archive's object: a single PutObject for an
//! archive that fits in one part, or CreateMultipartUpload, UploadPart, UploadPartCopy,
//! CompleteMultipartUpload and AbortMultipartUpload. Each call gets a time limit that fits its body, and each refusal
//! becomes a `JobFailure` that keeps the provider's code and says whether it is worth retrying.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ObjectCannedAcl, ServerSideEncryption, StorageClass,
};
use bytes::Bytes;
use tracing::Instrument;
use zipkit_domain::ZipId;
use zipkit_domain::models::{BucketCapabilities, ResultSettings};
use zipkit_domain::values::ObjectKey;
use zipkit_storage::{BucketLocation, BucketTestError, StoreRefusal, attachment};

use crate::archive::CopiedRange;
use crate::failure::{Blame, JobFailure, Retry};

/// A part the store has taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: String,
    pub size: i64,
    /// CRC-32 of the bytes sent: a worker resuming the upload checks its rebuilt archive by it.
    pub crc32: u32,
}

/// A call the store refused.
#[derive(Debug, Clone)]
pub struct StoreFailure {
    pub failure: JobFailure,
    /// The upload is gone from the bucket (`NoSuchUpload`: aborted by someone, or by a lifecycle
    /// rule): a resumed upload falls back to a new one.
    pub upload_lost: bool,
}

impl From<StoreFailure> for JobFailure {
    fn from(refused: StoreFailure) -> Self {
        refused.failure
    }
}

/// How long a call on the store may take: a fixed allowance for the round trip plus the body at
/// the slowest rate that still counts as working, so a 64 MiB part on a slow link is not cut off
/// by a limit made for a 5 MiB one.
#[derive(Debug, Clone, Copy)]
pub struct StoreTimeouts {
    /// Bytes per second below which an upload counts as failed.
    pub min_rate: u64,
}

/// The allowance for a call's round trip, whatever its body.
const ROUND_TRIP: Duration = Duration::from_secs(30);
/// Attempts the SDK makes at one call (its standard retry policy: 5xx, throttling, timeouts).
const SDK_ATTEMPTS: u32 = 3;

/// How many times faster than `min_rate` a store that assembles an object by copying its parts
/// still counts as working.
const ASSEMBLY_SPEEDUP: u64 = 64;

impl StoreTimeouts {
    /// The limits for completing an upload of `size` bytes: what a body of a 64th of it may
    /// take (a 5 GiB archive 30 s + 320 s at the default rate), per attempt.
    fn for_assembly(self, size: u64) -> TimeoutConfig {
        self.for_body(usize::try_from(size / ASSEMBLY_SPEEDUP).unwrap_or(usize::MAX))
    }

    /// The limits for one call carrying `body` bytes.
    fn for_body(self, body: usize) -> TimeoutConfig {
        let attempt = ROUND_TRIP + Duration::from_secs(body as u64 / self.min_rate);
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(attempt)
            .operation_timeout(attempt * SDK_ATTEMPTS + Duration::from_secs(10))
            .build()
    }
}

/// The archive's object in the customer's bucket. Cheap to clone (parts upload on their own
/// tasks).
#[derive(Debug, Clone)]
pub struct Destination {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    location: BucketLocation,
    key: ObjectKey,
    zip_id: ZipId,
    timeouts: StoreTimeouts,
    /// Bodies go unsigned (`UNSIGNED-PAYLOAD`): see `signs_bodies`.
    unsigned_bodies: bool,
    /// The bucket's last test found that its keys may not abort an upload: none is tried.
    may_not_abort: bool,
    /// What the archive object is created with, worked out once.
    object: ObjectHeaders,
}

/// The archive object's headers: its type and download name, the bucket's ACL, and the
/// Cache-Control, tags, encryption and storage class the job asked for.
#[derive(Debug)]
struct ObjectHeaders {
    disposition: String,
    cache_control: Option<String>,
    /// `x-amz-tagging`: the tags as a URL query (`key=value&…`).
    tagging: Option<String>,
    encryption: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    storage_class: Option<StorageClass>,
    acl: Option<ObjectCannedAcl>,
}

impl ObjectHeaders {
    fn new(location: &BucketLocation, key: &ObjectKey, settings: ResultSettings) -> Self {
        let tags = &settings.tags;
        let tagging = (!tags.is_empty()).then(|| {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(tags)
                .finish()
        });
        let encryption = settings.encryption.as_ref();
        Self {
            disposition: attachment(key.file_name()),
            tagging,
            encryption: encryption.map(|e| ServerSideEncryption::from(e.header())),
            kms_key_id: encryption.and_then(|e| e.kms_key_id()).map(str::to_owned),
            storage_class: settings.storage_class.as_deref().map(StorageClass::from),
            acl: location.acl.as_deref().map(ObjectCannedAcl::from),
            cache_control: settings.cache_control,
        }
    }
}

/// Sets the archive object's headers on a PutObject or a CreateMultipartUpload (two builder
/// types with the same setters).
macro_rules! with_object_headers {
    ($request:expr, $object:expr) => {
        $request
            .content_type("application/zip")
            .content_disposition(&$object.disposition)
            .set_cache_control($object.cache_control.clone())
            .set_tagging($object.tagging.clone())
            .set_server_side_encryption($object.encryption.clone())
            .set_ssekms_key_id($object.kms_key_id.clone())
            .set_storage_class($object.storage_class.clone())
            .set_acl($object.acl.clone())
    };
}

/// Whether the bodies of UploadPart and PutObject are hashed into their SigV4 signature. Over
/// HTTPS they are not: TLS already protects them in transit, and hashing every byte a second
/// time was 43 % of the worker's CPU when storing. Over plain HTTP (a store on a private
/// network) the signed hash is the only integrity check, so it stays.
pub fn signs_bodies(location: &BucketLocation) -> bool {
    location.endpoint().is_some_and(|e| {
        e.get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
    })
}

/// Counts a body the store took (a part, or a whole archive).
fn count_sent(bytes: usize) {
    metrics::counter!(zipkit_runtime::metrics::PARTS_UPLOADED).increment(1);
    metrics::counter!(zipkit_runtime::metrics::BYTES_UPLOADED).increment(bytes as u64);
    metrics::counter!(zipkit_runtime::metrics::BYTES_UPLOADED_DEPRECATED).increment(bytes as u64);
}

impl Destination {
    /// `capabilities` as the bucket's last test found them; `None` (not checked) tries
    /// everything. `settings`: what the job asked of the archive object.
    pub fn new(
        client: Client,
        location: BucketLocation,
        capabilities: Option<BucketCapabilities>,
        (key, settings): (ObjectKey, ResultSettings),
        zip_id: ZipId,
        timeouts: StoreTimeouts,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                unsigned_bodies: !signs_bodies(&location),
                may_not_abort: capabilities.is_some_and(|c| !c.abort_multipart),
                object: ObjectHeaders::new(&location, &key, settings),
                location,
                key,
                zip_id,
                timeouts,
            }),
        }
    }

    fn config(&self, body: usize) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default().timeout_config(self.inner.timeouts.for_body(body))
    }

    /// The whole archive in one request (it fits in one part).
    pub async fn put_object(&self, body: Bytes) -> Result<String, JobFailure> {
        let size = body.len();
        let span = tracing::info_span!("put object", otel.kind = "client", bytes = size);
        let request = self
            .inner
            .client
            .put_object()
            .bucket(self.inner.location.name.as_str())
            .key(self.inner.key.as_str());
        let answer = with_object_headers!(request, self.inner.object)
            .body(ByteStream::from(body))
            .customize()
            .config_override(self.config(size));
        let answer = if self.inner.unsigned_bodies {
            answer.disable_payload_signing()
        } else {
            answer
        };
        let answer = answer
            .send()
            .instrument(span)
            .await
            .map_err(|e| self.failure("PutObject", &e).failure)?;
        count_sent(size);
        Ok(answer.e_tag().unwrap_or_default().to_owned())
    }

    /// Starts a multipart upload; returns its id.
    pub async fn create_multipart(&self) -> Result<String, JobFailure> {
        let span = tracing::info_span!("create upload", otel.kind = "client");
        let request = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(self.inner.location.name.as_str())
            .key(self.inner.key.as_str());
        let answer = with_object_headers!(request, self.inner.object)
            .customize()
            .config_override(self.config(0))
            .send()
            .instrument(span)
            .await
            .map_err(|e| self.failure("CreateMultipartUpload", &e).failure)?;
        match answer.upload_id() {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(JobFailure::new(
                "bucket_unavailable",
                "The provider answered CreateMultipartUpload without an upload id.",
                Blame::Service,
                Retry::UnlessRepeated,
            )),
        }
    }

    pub async fn upload_part(
        &self,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreFailure> {
        let size = body.len();
        let crc32 = crc32fast::hash(&body);
        let answer = self
            .inner
            .client
            .upload_part()
            .bucket(self.inner.location.name.as_str())
            .key(self.inner.key.as_str())
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .customize()
            .config_override(self.config(size));
        let answer = if self.inner.unsigned_bodies {
            answer.disable_payload_signing()
        } else {
            answer
        };
        let answer = answer
            .send()
            .await
            .map_err(|e| self.failure("UploadPart", &e))?;
        count_sent(size);
        Ok(UploadedPart {
            number,
            etag: answer.e_tag().unwrap_or_default().to_owned(),
            size: size as i64,
            crc32,
        })
    }

    /// Has the store copy `range` of an object it holds as part `number` (UploadPartCopy), as
    /// long as the object still has the ETag the range was read with.
    pub async fn copy_part(
        &self,
        upload_id: &str,
        number: i32,
        range: CopiedRange,
    ) -> Result<UploadedPart, StoreFailure> {
        let len = usize::try_from(range.len).unwrap_or(usize::MAX);
        let last = range.start + range.len - 1;
        let answer = self
            .inner
            .client
            .upload_part_copy()
            .bucket(self.inner.location.name.as_str())
            .key(self.inner.key.as_str())
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(zipkit_storage::copy_source(&range.bucket, &range.key))
            .copy_source_range(format!("bytes={}-{last}", range.start))
            .copy_source_if_match(&range.etag)
            .customize()
            // The store moves the bytes; they are timed as if sent.
            .config_override(self.config(len))
            .send()
            .await
            .map_err(|e| {
                if e.code() == Some("PreconditionFailed") {
                    // The object was replaced since it was looked at: the next attempt reads it
                    // again (its new checksum, its new first bytes).
                    let failure = JobFailure::new(
                        "source_changed",
                        format!(
                            "s3://{}/{} changed while it was copied into the archive",
                            range.bucket, range.key
                        ),
                        Blame::Request,
                        Retry::Later,
                    );
                    return StoreFailure {
                        failure,
                        upload_lost: false,
                    };
                }
                self.failure("UploadPartCopy", &e)
            })?;
        metrics::counter!(zipkit_runtime::metrics::PARTS_COPIED).increment(1);
        metrics::counter!(zipkit_runtime::metrics::BYTES_COPIED).increment(range.len);
        let etag = answer
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default();
        Ok(UploadedPart {
            number,
            etag: etag.to_owned(),
            size: range.len as i64,
            crc32: range.crc32,
        })
    }

    /// Completes the upload from its parts (in any order); returns the object's ETag.
    pub async fn complete(
        &self,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<String, StoreFailure> {
        let mut listed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        listed.sort_by_key(CompletedPart::part_number);
        let span =
            tracing::info_span!("complete upload", otel.kind = "client", parts = parts.len());
        let answer = self
            .inner
            .client
            .complete_multipart_upload()
            .bucket(self.inner.location.name.as_str())
            .key(self.inner.key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(listed))
                    .build(),
            )
            .customize()
            // The store assembles the parts before it answers, which on a store that copies
            // them into one file takes time with the archive's size.
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(
                    self.inner
                        .timeouts
                        .for_assembly(parts.iter().map(|p| p.size as u64).sum()),
                ),
            )
            .send()
            .instrument(span)
            .await
            .map_err(|e| self.failure("CompleteMultipartUpload", &e))?;
        Ok(answer.e_tag().unwrap_or_default().to_owned())
    }

    /// Aborts the upload so its parts stop costing storage. The seed's minimal policy does not
    /// allow it: a refusal is logged once, with what an operator needs to find the upload, and
    /// left to the bucket's lifecycle rule (docs/JOBS.md). Keys the bucket test found unable to
    /// abort are not asked to.
    pub async fn abort(&self, upload_id: &str) {
        if self.inner.may_not_abort {
            tracing::info!(
                zip.id = %self.inner.zip_id,
                bucket = %self.inner.location.name,
                key = %self.inner.key,
                upload.id = upload_id,
                "not aborting the multipart upload: the bucket's test found its keys may not; \
                 the bucket's lifecycle rule for incomplete multipart uploads will remove its parts"
            );
            return;
        }
        let sent = self
            .inner
            .client
            .abort_multipart_upload()
            .bucket(self.inner.location.name.as_str())
            .key(self.inner.key.as_str())
            .upload_id(upload_id)
            .customize()
            .config_override(self.config(0))
            .send()
            .await;
        match sent {
            Ok(_) => tracing::info!(
                zip.id = %self.inner.zip_id,
                bucket = %self.inner.location.name,
                key = %self.inner.key,
                upload.id = upload_id,
                "multipart upload aborted"
            ),
            Err(e) => tracing::warn!(
                zip.id = %self.inner.zip_id,
                bucket = %self.inner.location.name,
                key = %self.inner.key,
                upload.id = upload_id,
                provider.code = e.code().unwrap_or("none"),
                error = %aws_sdk_s3::error::DisplayErrorContext(&e),
                "could not abort the multipart upload; the bucket's lifecycle rule for incomplete \
                 multipart uploads will remove its parts"
            ),
        }
    }

    /// Deletes the archive (its job asked it to expire); the store's refusal, in words, if it
    /// refused.
    pub async fn delete_archive(&self) -> Result<(), BucketTestError> {
        self.inner
            .client
            .delete_object()
            .bucket(self.inner.location.name.as_str())
            .key(self.inner.key.as_str())
            .customize()
            .config_override(self.config(0))
            .send()
            .await
            .map(drop)
            .map_err(|e| StoreRefusal::read(&self.inner.location, &e).why)
    }

    /// The job's failure for a refused call: the words of the dashboard's bucket test, the
    /// provider's code, and whether the next attempt could go differently (all read by
    /// `StoreRefusal`).
    fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        operation: &str,
        err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreFailure {
        let refusal = StoreRefusal::read(&self.inner.location, err);
        let mut message = refusal.why.to_string();
        match &refusal.provider_code {
            Some(code) if !refusal.names_its_code() => {
                message.push_str(&format!(" ({operation} answered {code}.)"));
            }
            _ => message.push_str(&format!(" ({operation})")),
        }
        tracing::warn!(
            zip.id = %self.inner.zip_id,
            operation,
            provider.code = refusal.provider_code.as_deref().unwrap_or("none"),
            http.status = refusal.status.unwrap_or_default(),
            error = %aws_sdk_s3::error::DisplayErrorContext(err),
            "the store refused a call"
        );
        let failure = JobFailure::new(
            refusal.why.job_code(),
            message,
            Blame::Service,
            refusal.retry().into(),
        );
        StoreFailure {
            upload_lost: refusal.upload_lost(),
            failure: match refusal.provider_code {
                Some(code) => failure.answered(code),
                None => failure,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(service: zipkit_domain::Service, endpoint: Option<&str>) -> BucketLocation {
        BucketLocation {
            service,
            name: zipkit_domain::values::BucketName::parse("bucket-b").unwrap(),
            region: "us-east-1".into(),
            r2_account_id: Some("0123456789abcdef0123456789abcdef".into()),
            endpoint_url: endpoint.map(str::to_owned),
            force_path_style: true,
            acl: None,
        }
    }

    #[test]
    fn bodies_are_signed_only_over_plain_http() {
        use zipkit_domain::Service;
        assert!(!signs_bodies(&at(Service::S3, None)), "AWS: HTTPS");
        assert!(!signs_bodies(&at(Service::R2, None)), "R2: HTTPS");
        assert!(!signs_bodies(&at(
            Service::S3,
            Some("https://minio.example")
        )));
        assert!(signs_bodies(&at(Service::S3, Some("http://10.0.0.5:9000"))));
        assert!(signs_bodies(&at(
            Service::S3,
            Some("HTTP://store.internal")
        )));
    }
}
