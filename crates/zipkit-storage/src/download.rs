//! Download links of finished archives: a GET of the object presigned with the bucket's own keys.
//! Signing happens here, without a call to the store; a link is made only where the bucket's
//! last test found that its keys may read, since a link signed by keys that may not would only
//! ever answer 403.

use std::time::Duration;

use zipkit_domain::crypto::KeyRing;
use zipkit_domain::models::DownloadSource;
use zipkit_domain::values::ObjectKey;
use zipkit_domain::views::DownloadLink;

use crate::{BucketClients, BucketLocation};

impl BucketClients {
    /// A link to download the archive at `key` for `source.ttl_secs` from now; `None` where the
    /// keys may not read, the archive was deleted, or the link cannot be made (logged: unreadable keys, an endpoint the
    /// egress policy refuses).
    pub async fn download_link(
        &self,
        keyring: &KeyRing,
        source: &DownloadSource,
        key: &ObjectKey,
    ) -> Option<DownloadLink> {
        let bucket = &source.bucket;
        if !bucket.capabilities.is_some_and(|c| c.read) || source.archive_deleted_at.is_some() {
            return None;
        }
        let why_not = |error: String| {
            tracing::warn!(zip.id = %source.zip_id, bucket = %bucket.name, error, "no download link");
        };
        let credentials = bucket
            .credentials(keyring)
            .map_err(|e| why_not(e.to_string()))
            .ok()?;
        let location = BucketLocation::from(bucket);
        let client = self
            .client(&location, &credentials)
            .map_err(|e| why_not(e.to_string()))
            .ok()?;
        let ttl = Duration::from_secs(source.ttl_secs.into());
        let expires_at = chrono::Utc::now() + ttl;
        let url = crate::presigned_get(&client, location.name.as_str(), key.as_str(), ttl)
            .await
            .map_err(why_not)
            .ok()?;
        Some(DownloadLink { url, expires_at })
    }
}
