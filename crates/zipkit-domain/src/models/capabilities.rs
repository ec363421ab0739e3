//! What a bucket's keys may do, as its last test found: each capability checked against the
//! store, never assumed from the provider's name. Stored with the bucket as a JSON object of
//! booleans, shown on the bucket's page and by the CLI, and read by the worker to choose how it
//! works with the bucket.

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Jsonb;
use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = Jsonb)]
#[serde(default)]
pub struct BucketCapabilities {
    /// PutObject: every bucket that passed its test may be written.
    pub write: bool,
    /// GetObject on an object it wrote.
    pub read: bool,
    /// ListObjectsV2.
    pub list: bool,
    /// AbortMultipartUpload: a failed or cancelled job's parts can be removed.
    pub abort_multipart: bool,
    /// A canned ACL on an upload (`x-amz-acl`; refused by R2 and owner-enforced S3 buckets).
    pub acl: bool,
    /// The store keeps a full-object CRC-32 checksum it was sent and returns it.
    pub full_object_crc32: bool,
    /// UploadPartCopy: a part copied from an object in the store.
    pub upload_part_copy: bool,
    /// Object tags sent with an upload (`x-amz-tagging`; refused by R2).
    pub tagging: bool,
    /// Server-side encryption with the store's own keys (`AES256`).
    pub sse_s3: bool,
    /// Server-side encryption with KMS keys (`aws:kms`; refused by R2).
    pub sse_kms: bool,
    /// DeleteObject: archives a job asked to expire can be removed.
    pub delete: bool,
}

/// One capability, for listing them in order with the words a person reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityLine {
    /// The JSON member's name.
    pub name: &'static str,
    pub label: &'static str,
    /// What grants it, or what the store must support, said where it is missing.
    pub needs: &'static str,
    pub allowed: bool,
}

impl BucketCapabilities {
    /// Every capability, in the order they are shown.
    pub fn lines(&self) -> [CapabilityLine; 11] {
        let line = |name, label, needs, allowed| CapabilityLine {
            name,
            label,
            needs,
            allowed,
        };
        [
            line("write", "Write", "s3:PutObject", self.write),
            line("read", "Read", "s3:GetObject", self.read),
            line("list", "List", "s3:ListBucket", self.list),
            line(
                "abort_multipart",
                "Abort multipart uploads",
                "s3:AbortMultipartUpload",
                self.abort_multipart,
            ),
            line(
                "acl",
                "Canned ACLs",
                "s3:PutObjectAcl, and a bucket that accepts ACLs",
                self.acl,
            ),
            line(
                "full_object_crc32",
                "Full-object CRC-32 checksums",
                "a store that keeps checksums (s3:GetObject to read them)",
                self.full_object_crc32,
            ),
            line(
                "upload_part_copy",
                "UploadPartCopy",
                "a store that copies parts (and s3:GetObject on the source)",
                self.upload_part_copy,
            ),
            line(
                "tagging",
                "Object tags",
                "s3:PutObjectTagging, and a store that keeps tags",
                self.tagging,
            ),
            line(
                "sse_s3",
                "Encryption with the store's keys (AES256)",
                "a store that encrypts objects it is asked to",
                self.sse_s3,
            ),
            line(
                "sse_kms",
                "Encryption with KMS keys (aws:kms)",
                "a store with KMS, and kms:GenerateDataKey on the key",
                self.sse_kms,
            ),
            line("delete", "Delete", "s3:DeleteObject", self.delete),
        ]
    }
}

impl ToSql<Jsonb, Pg> for BucketCapabilities {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        let value = serde_json::to_value(self)?;
        <serde_json::Value as ToSql<Jsonb, Pg>>::to_sql(&value, &mut out.reborrow())
    }
}

/// A member missing from a stored object (a capability added later) reads as not allowed until
/// the bucket is tested again.
impl FromSql<Jsonb, Pg> for BucketCapabilities {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let value = <serde_json::Value as FromSql<Jsonb, Pg>>::from_sql(value)?;
        Ok(serde_json::from_value(value)?)
    }
}
