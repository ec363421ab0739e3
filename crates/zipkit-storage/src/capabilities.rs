//! Save and Test beyond the write: what else the keys may do, each checked with a call the store
//! answers, never assumed from the provider's name. Every call targets the write-test object
//! (rewritten with the same bytes each time), so a test leaves nothing behind, not even when the
//! keys may not abort a multipart upload: the upload it opened is then completed into that
//! object instead.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectCannedAcl,
    ServerSideEncryption, StorageClass,
};
use zipkit_domain::models::{BucketCapabilities, BucketCredentials, StorageClasses};

use crate::{BucketClients, BucketLocation, BucketTestError, StoreRefusal, WRITE_TEST_KEY};

/// What the write test writes.
pub(crate) const WRITE_TEST_BODY: &[u8] = b"zipkit checked that it can write here.\n";

impl BucketClients {
    /// Proves the credentials can write to the bucket, using only `s3:PutObject`.
    pub async fn test_write_access(
        &self,
        location: &BucketLocation,
        credentials: &BucketCredentials,
    ) -> Result<(), BucketTestError> {
        self.probe(location, credentials)?.write_test().await
    }

    fn probe<'a>(
        &self,
        location: &'a BucketLocation,
        credentials: &BucketCredentials,
    ) -> Result<Probe<'a>, BucketTestError> {
        let client = self.client(location, credentials)?;
        Ok(Probe { client, location })
    }

    /// The write test, then every capability. Fails only when the keys cannot write, which is
    /// the one thing a bucket must allow; anything else they may not do is a `false`.
    pub async fn test_bucket(
        &self,
        location: &BucketLocation,
        credentials: &BucketCredentials,
    ) -> Result<BucketCapabilities, BucketTestError> {
        let probe = self.probe(location, credentials)?;
        probe.write_test().await?;
        let read = probe.read().await;
        let list = probe.list().await;
        // A configured canned ACL was just sent with the write test.
        let acl = location.acl.is_some() || probe.acl().await;
        // Reading the checksum back needs HeadObject, which s3:GetObject grants.
        let full_object_crc32 = read && probe.full_object_crc32().await;
        let (upload_part_copy, abort_multipart) = probe.multipart(read).await;
        let tagging = probe
            .write_with("tagging", |put| put.tagging("zipkit=bucket-test"))
            .await;
        let sse_s3 = probe
            .write_with("sse_s3", |put| {
                put.server_side_encryption(ServerSideEncryption::Aes256)
            })
            .await;
        // The store's default KMS key: a job may name its own, which its keys must be allowed.
        let sse_kms = probe
            .write_with("sse_kms", |put| {
                put.server_side_encryption(ServerSideEncryption::AwsKms)
            })
            .await;
        let mut storage_classes = StorageClasses::default();
        for class in StorageClasses::TRIED {
            let tried = |put: PutObjectFluentBuilder| put.storage_class(StorageClass::from(class));
            if probe.write_with("storage_classes", tried).await {
                storage_classes = storage_classes.with(class);
            }
        }
        // Deleted, then written again: it ends as the write test left it, plain.
        let delete = probe.delete().await;
        if delete || sse_s3 || sse_kms || storage_classes != StorageClasses::default() {
            probe.write_with("write", |put| put).await;
        }
        Ok(BucketCapabilities {
            write: true,
            read,
            list,
            abort_multipart,
            acl,
            full_object_crc32,
            upload_part_copy,
            tagging,
            sse_s3,
            sse_kms,
            delete,
            storage_classes,
        })
    }
}

struct Probe<'a> {
    client: Client,
    location: &'a BucketLocation,
}

impl Probe<'_> {
    fn bucket(&self) -> &str {
        self.location.name.as_str()
    }

    /// Whether a call was answered; a refusal is logged with the provider's code.
    fn answered<T, E>(
        &self,
        capability: &str,
        result: Result<T, SdkError<E, HttpResponse>>,
    ) -> Option<T>
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        match result {
            Ok(answer) => Some(answer),
            Err(err) => {
                let refusal = StoreRefusal::read(self.location, &err);
                tracing::info!(
                    capability,
                    provider_code = refusal.provider_code.as_deref().unwrap_or(""),
                    status = refusal.status,
                    "the bucket test found a capability missing"
                );
                None
            }
        }
    }

    /// The first byte of the write-test object.
    async fn read(&self) -> bool {
        let answer = self
            .client
            .get_object()
            .bucket(self.bucket())
            .key(WRITE_TEST_KEY)
            .range("bytes=0-0")
            .send()
            .await;
        self.answered("read", answer).is_some()
    }

    /// One key of the write test's folder.
    async fn list(&self) -> bool {
        let answer = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(".zipkit/")
            .max_keys(1)
            .send()
            .await;
        self.answered("list", answer).is_some()
    }

    /// The test object deleted (the caller writes it again).
    async fn delete(&self) -> bool {
        let answer = self
            .client
            .delete_object()
            .bucket(self.bucket())
            .key(WRITE_TEST_KEY)
            .send()
            .await;
        self.answered("delete", answer).is_some()
    }

    /// The write again with the one canned ACL that grants nobody anything.
    async fn acl(&self) -> bool {
        self.write_with("acl", |put| put.acl(ObjectCannedAcl::Private))
            .await
    }

    /// The write test: the test object written (with the bucket's canned ACL, if it has one);
    /// the store's refusal in words.
    async fn write_test(&self) -> Result<(), BucketTestError> {
        let answer = self.put(|put| put).await;
        answer
            .map(drop)
            .map_err(|err| StoreRefusal::read(self.location, &err).why)
    }

    /// The write test's PutObject again, with what `adjust` adds; whether the store took it.
    async fn write_with(
        &self,
        capability: &str,
        adjust: impl FnOnce(PutObjectFluentBuilder) -> PutObjectFluentBuilder,
    ) -> bool {
        let answer = self.put(adjust).await;
        self.answered(capability, answer).is_some()
    }

    async fn put(
        &self,
        adjust: impl FnOnce(PutObjectFluentBuilder) -> PutObjectFluentBuilder,
    ) -> Result<PutObjectOutput, SdkError<PutObjectError, HttpResponse>> {
        let put = self
            .client
            .put_object()
            .bucket(self.bucket())
            .key(WRITE_TEST_KEY)
            .content_type("text/plain")
            .set_acl(self.location.acl.as_deref().map(ObjectCannedAcl::from))
            .body(ByteStream::from_static(WRITE_TEST_BODY));
        adjust(put).send().await
    }

    /// The write again with its CRC-32, then whether the store gives that CRC-32 back as the
    /// whole object's.
    async fn full_object_crc32(&self) -> bool {
        let crc = aws_smithy_types::base64::encode(crc32fast::hash(WRITE_TEST_BODY).to_be_bytes());
        let put = self.write_with("full_object_crc32", |put| put.checksum_crc32(&crc));
        if !put.await {
            return false;
        }
        let head = self
            .client
            .head_object()
            .bucket(self.bucket())
            .key(WRITE_TEST_KEY)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        self.answered("full_object_crc32", head)
            .is_some_and(|head| {
                head.checksum_crc32() == Some(crc.as_str())
                    && head
                        .checksum_type()
                        .is_none_or(|t| *t == ChecksumType::FullObject)
            })
    }

    /// A multipart upload onto the write-test object: its part copied from the object itself
    /// (UploadPartCopy, which reads the source), then aborted. Where aborting is refused, the
    /// upload is completed with that part (sent, if it could not be copied), which rewrites the
    /// object as it was. Answers (UploadPartCopy, AbortMultipartUpload).
    async fn multipart(&self, read: bool) -> (bool, bool) {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(WRITE_TEST_KEY)
            .content_type("text/plain")
            .set_acl(self.location.acl.as_deref().map(ObjectCannedAcl::from))
            .send()
            .await;
        let Some(upload_id) = self
            .answered("abort_multipart", created)
            .and_then(|c| c.upload_id().map(str::to_owned))
        else {
            return (false, false);
        };
        let mut part_etag = None;
        if read {
            let copied = self
                .client
                .upload_part_copy()
                .bucket(self.bucket())
                .key(WRITE_TEST_KEY)
                .upload_id(&upload_id)
                .part_number(1)
                .copy_source(format!("{}/{WRITE_TEST_KEY}", self.bucket()))
                .send()
                .await;
            part_etag = self.answered("upload_part_copy", copied).and_then(|c| {
                c.copy_part_result()
                    .and_then(|r| r.e_tag())
                    .map(str::to_owned)
            });
        }
        let copied = part_etag.is_some();
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(self.bucket())
            .key(WRITE_TEST_KEY)
            .upload_id(&upload_id)
            .send()
            .await;
        if self.answered("abort_multipart", aborted).is_some() {
            return (copied, true);
        }
        if part_etag.is_none() {
            let sent = self
                .client
                .upload_part()
                .bucket(self.bucket())
                .key(WRITE_TEST_KEY)
                .upload_id(&upload_id)
                .part_number(1)
                .body(ByteStream::from_static(WRITE_TEST_BODY))
                .send()
                .await;
            part_etag = self
                .answered("abort_multipart", sent)
                .and_then(|p| p.e_tag().map(str::to_owned));
        }
        let completed = match part_etag {
            Some(etag) => {
                let part = CompletedPart::builder().part_number(1).e_tag(etag).build();
                let answer = self
                    .client
                    .complete_multipart_upload()
                    .bucket(self.bucket())
                    .key(WRITE_TEST_KEY)
                    .upload_id(&upload_id)
                    .multipart_upload(CompletedMultipartUpload::builder().parts(part).build())
                    .send()
                    .await;
                self.answered("abort_multipart", answer).is_some()
            }
            None => false,
        };
        if !completed {
            tracing::warn!(
                bucket = self.bucket(),
                upload_id,
                "the bucket test could neither abort nor complete its multipart upload of \
                 {WRITE_TEST_KEY}; a lifecycle rule for incomplete uploads removes it"
            );
        }
        (copied, false)
    }
}
