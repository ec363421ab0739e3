//! The parts of a source item (`urls[i]` of a request, or a line of a manifest) parsed by one
//! set of rules, wherever the item comes from: what its `url` names, its time, its size.

use chrono::{DateTime, Utc};

use super::{BUCKET_SCHEME, BucketName, MAX_SOURCE_KEY_BYTES, SourceUrl};

/// What an item's `url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceItem {
    /// Fetched over HTTP(S).
    Web(SourceUrl),
    /// One object of the project's bucket; `name` is the key's last segment (the entry's name
    /// unless the item gives one).
    Object {
        bucket: BucketName,
        url: SourceUrl,
        name: String,
    },
    /// Every object under `prefix` (empty: the whole bucket).
    Prefix { bucket: BucketName, prefix: String },
}

impl SourceItem {
    /// The item's `url`; the error completes "`url` …".
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix(BUCKET_SCHEME) else {
            return SourceUrl::parse(text)
                .map(Self::Web)
                .map_err(|e| e.to_string());
        };
        let Some((bucket, key)) = rest.split_once('/') else {
            return Err(
                "must be `s3://<bucket_name>/<key>`, or `s3://<bucket_name>/<prefix>/` \
                        for every object under a prefix"
                    .to_owned(),
            );
        };
        let bucket = BucketName::parse(bucket)
            .map_err(|e| format!("names no valid bucket: the bucket name {e}"))?;
        if key.is_empty() || key.ends_with('/') {
            if key.len() > MAX_SOURCE_KEY_BYTES || key.chars().any(char::is_control) {
                return Err(
                    "has a prefix longer than 1,024 bytes or with control characters".to_owned(),
                );
            }
            return Ok(Self::Prefix {
                bucket,
                prefix: key.to_owned(),
            });
        }
        let url = SourceUrl::bucket_object(&bucket, key).map_err(|e| e.to_string())?;
        let name = key.rsplit('/').next().unwrap_or(key).to_owned();
        Ok(Self::Object { bucket, url, name })
    }
}

/// An item's `modified_at`: an RFC 3339 time, any offset; the error completes "`modified_at` …".
pub fn parse_entry_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| format!("must be an RFC 3339 time such as `2026-03-01T09:30:00Z` ({e})"))
}

/// Largest `size` accepted: the largest integer every JSON reader holds exactly (2^53 - 1).
pub const MAX_DECLARED_SIZE: i64 = 9_007_199_254_740_991;

/// An item's `size`: a JSON number that is a whole number of bytes (`5.0` is one, as JSON
/// Schema counts) from 0 to `MAX_DECLARED_SIZE`.
pub fn parse_declared_size(value: &serde_json::Value) -> Option<i64> {
    let n = match value.as_i64() {
        Some(n) => n,
        None => {
            let f = value.as_f64()?;
            if f.fract() != 0.0 || !(0.0..=MAX_DECLARED_SIZE as f64).contains(&f) {
                return None;
            }
            f as i64
        }
    };
    (0..=MAX_DECLARED_SIZE).contains(&n).then_some(n)
}
