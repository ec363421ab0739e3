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
    /// The storage classes besides STANDARD the store took (of those the test tries).
    pub storage_classes: StorageClasses,
}

/// Storage classes a store took, of those the bucket test tries: the ones a 40-byte test object
/// may be written in and replaced without a minimum-duration charge beyond a month. The archive
/// tiers (GLACIER, GLACIER_IR, DEEP_ARCHIVE) bill 90 to 180 days for any object replaced sooner,
/// so they are neither tried nor offered: a bucket lifecycle transition moves archives there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageClasses(u8);

impl StorageClasses {
    /// Every class the test tries, as S3 names them.
    pub const TRIED: [&str; 4] = [
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "REDUCED_REDUNDANCY",
    ];

    fn bit(class: &str) -> Option<u8> {
        Self::TRIED.iter().position(|c| *c == class).map(|i| 1 << i)
    }

    /// These classes and `class` (one the test tries; any other is ignored).
    #[must_use]
    pub fn with(self, class: &str) -> Self {
        Self(self.0 | Self::bit(class).unwrap_or(0))
    }

    pub fn accepts(&self, class: &str) -> bool {
        Self::bit(class).is_some_and(|bit| self.0 & bit != 0)
    }

    pub fn names(&self) -> Vec<&'static str> {
        Self::TRIED
            .into_iter()
            .filter(|c| self.accepts(c))
            .collect()
    }
}

/// A JSON array of the classes' names.
impl Serialize for StorageClasses {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.names())
    }
}

/// A name it does not know (a class no longer tried) is left out.
impl<'de> Deserialize<'de> for StorageClasses {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        Ok(names.iter().fold(Self::default(), |all, c| all.with(c)))
    }
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
    pub fn lines(&self) -> [CapabilityLine; 12] {
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
            line(
                "storage_classes",
                "Storage classes besides STANDARD",
                "a store with storage classes",
                self.storage_classes != StorageClasses::default(),
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_classes_are_a_list_of_names_and_unknown_ones_are_left_out() {
        let classes = StorageClasses::default()
            .with("STANDARD_IA")
            .with("REDUCED_REDUNDANCY")
            .with("GLACIER");
        assert!(classes.accepts("STANDARD_IA") && !classes.accepts("ONEZONE_IA"));
        assert!(!classes.accepts("GLACIER"), "not a class the test tries");
        let json = serde_json::to_value(classes).unwrap();
        assert_eq!(
            json,
            serde_json::json!(["STANDARD_IA", "REDUCED_REDUNDANCY"])
        );
        let read: StorageClasses =
            serde_json::from_value(serde_json::json!(["REDUCED_REDUNDANCY", "OLD_CLASS"])).unwrap();
        assert_eq!(read.names(), ["REDUCED_REDUNDANCY"]);
    }
}
