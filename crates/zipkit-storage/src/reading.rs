//! Reading a project's bucket as a job's source: its objects listed a page at a time, and a GET
//! of one object presigned with the bucket's keys, which the worker's downloader fetches like
//! any HTTPS source (ranges, retries, the egress policy), so a bucket object needs no second
//! download path. Signing makes no call to the store. An object in the store an archive goes to
//! can also be copied into it (`stored_object`, `copy_source`).

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{ChecksumMode, ChecksumType};
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::{BucketLocation, StoreRefusal};

/// One object of a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: i64,
    pub last_modified: Option<DateTime<Utc>>,
}

/// One page of the objects under `prefix` (at most 1,000, the store's page), in key order, and
/// the token of the next page when there is one.
pub async fn list_page(
    client: &Client,
    location: &BucketLocation,
    prefix: &str,
    after: Option<String>,
) -> Result<(Vec<ListedObject>, Option<String>), StoreRefusal> {
    let page = client
        .list_objects_v2()
        .bucket(location.name.as_str())
        .prefix(prefix)
        .set_continuation_token(after)
        .send()
        .await
        .map_err(|e| StoreRefusal::read(location, &e))?;
    let objects = page
        .contents()
        .iter()
        .filter_map(|o| {
            Some(ListedObject {
                key: o.key()?.to_owned(),
                size: o.size().unwrap_or(0),
                last_modified: o
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
            })
        })
        .collect();
    let next = page
        .is_truncated()
        .unwrap_or(false)
        .then(|| page.next_continuation_token().map(str::to_owned))
        .flatten();
    Ok((objects, next))
}

/// A GET of `key` signed with the client's keys, valid for `ttl`.
pub async fn presigned_get(
    client: &Client,
    bucket: &str,
    key: &str,
    ttl: Duration,
) -> Result<String, String> {
    let config = PresigningConfig::expires_in(ttl).map_err(|e| e.to_string())?;
    let presigned = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .presigned(config)
        .await
        .map_err(|e| e.to_string())?;
    Ok(presigned.uri().to_owned())
}

/// What the store says of one object (HeadObject): its size, ETag, and its full-object CRC-32
/// when the store keeps one (a multipart upload's composite checksum, `…-N`, is not one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub size: u64,
    pub etag: String,
    pub crc32: Option<u32>,
}

pub async fn stored_object(
    client: &Client,
    location: &BucketLocation,
    key: &str,
) -> Result<StoredObject, StoreRefusal> {
    let head = client
        .head_object()
        .bucket(location.name.as_str())
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|e| StoreRefusal::read(location, &e))?;
    let full_object = head
        .checksum_type()
        .is_none_or(|t| *t == ChecksumType::FullObject);
    let crc32 = head
        .checksum_crc32()
        .filter(|_| full_object)
        .and_then(|b64| aws_smithy_types::base64::decode(b64).ok())
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map(u32::from_be_bytes);
    Ok(StoredObject {
        size: head
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .unwrap_or(0),
        etag: head.e_tag().unwrap_or_default().to_owned(),
        crc32,
    })
}

/// Bytes a key keeps as they are in `x-amz-copy-source`: the unreserved ones and `/`.
const COPY_SOURCE_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The `x-amz-copy-source` of an object: its bucket and its key, URL-encoded.
pub fn copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", utf8_percent_encode(key, COPY_SOURCE_KEEPS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_source_encodes_the_key_but_its_slashes() {
        assert_eq!(
            copy_source("photos", "2024/été et hiver+1.jpg"),
            "photos/2024/%C3%A9t%C3%A9%20et%20hiver%2B1.jpg"
        );
    }
}
