//! Reading a project's bucket as a job's source: its objects listed a page at a time, and a GET
//! of one object presigned with the bucket's keys, which the worker's downloader fetches like
//! any HTTPS source (ranges, retries, the egress policy), so a bucket object needs no second
//! download path. Signing makes no call to the store.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use chrono::{DateTime, Utc};

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
