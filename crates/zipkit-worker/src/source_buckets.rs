//! The project's buckets a job reads its sources from (`s3://<bucket>/…`): each one found by
//! name, allowed to be read (`read_sources`), with a client made from its own keys. Objects are
//! fetched through a presigned GET, so the downloader treats them as any HTTPS source. A bucket
//! in the same store as the archive's, read with the same keys, may instead have its objects
//! copied into the archive by the store (`SourceBucket::copies`).

use std::collections::HashMap;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use secrecy::ExposeSecret;
use zipkit_domain::Service;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::models::{Bucket, BucketCapabilities, Zip};
use zipkit_storage::{BucketClients, BucketLocation};

use crate::download::SourceError;
use crate::failure::{Blame, JobFailure, Retry};

/// One readable bucket: where it is and a client with its keys, and whether its objects may be
/// copied into the archive by the store.
#[derive(Debug, Clone)]
pub struct SourceBucket {
    pub location: BucketLocation,
    pub client: aws_sdk_s3::Client,
    pub copies: bool,
}

/// The buckets one job reads, by name.
#[derive(Debug, Clone, Default)]
pub struct SourceBuckets {
    by_name: HashMap<String, SourceBucket>,
    /// The archive's bucket, when it was found to take UploadPartCopy.
    copies_into: Option<OpenedBucket>,
}

/// A bucket's client with its own keys, where it is, and which key signs for it.
#[derive(Debug, Clone)]
pub struct OpenedBucket {
    pub location: BucketLocation,
    pub client: aws_sdk_s3::Client,
    access_key_id: String,
}

impl OpenedBucket {
    /// Whether `other` is on the same store and read with the same key: then a copy signed for
    /// this bucket can read `other`'s objects.
    fn shares_store_and_key(&self, other: &OpenedBucket) -> bool {
        let (a, b) = (&self.location, &other.location);
        a.service == b.service
            && a.region == b.region
            && a.endpoint_url == b.endpoint_url
            && a.r2_account_id == b.r2_account_id
            && self.access_key_id == other.access_key_id
    }
}

/// A client for `bucket` with its own keys, and where it is: for its sources as for its
/// archives.
pub fn open(
    keyring: &KeyRing,
    clients: &BucketClients,
    bucket: &Bucket,
) -> Result<OpenedBucket, JobFailure> {
    let credentials = bucket.credentials(keyring).map_err(|e| {
        JobFailure::new(
            "bucket_credentials_unreadable",
            e.to_string(),
            Blame::Service,
            Retry::Never,
        )
    })?;
    let location = BucketLocation::from(bucket);
    let client = clients.client(&location, &credentials).map_err(|why| {
        JobFailure::new(
            why.job_code(),
            why.to_string(),
            Blame::Service,
            Retry::Never,
        )
    })?;
    Ok(OpenedBucket {
        location,
        client,
        access_key_id: credentials.access_key_id.expose_secret().to_owned(),
    })
}

/// The longest a presigned GET may live (SigV4's limit).
const MAX_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl SourceBuckets {
    /// The buckets of a job whose archive goes to `destination`: their objects are copied
    /// into it where the store allows (the bucket test found UploadPartCopy works; never on R2,
    /// whose parts must all be the same size) and the source is in the same store, read with
    /// the same keys.
    pub fn for_destination(
        destination: &OpenedBucket,
        capabilities: Option<&BucketCapabilities>,
    ) -> Self {
        let takes_copies = capabilities.is_some_and(|c| c.upload_part_copy)
            && destination.location.service != Service::R2;
        Self {
            by_name: HashMap::new(),
            copies_into: takes_copies.then(|| destination.clone()),
        }
    }

    /// Adds each bucket named that is not here yet: found by name (the one registered for the
    /// job's `service` first), still letting jobs read it, its keys opened.
    pub async fn add<'a>(
        &mut self,
        conn: &mut AsyncPgConnection,
        (keyring, clients): (&KeyRing, &BucketClients),
        zip: &Zip,
        service: Service,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), JobFailure> {
        for name in names {
            if self.by_name.contains_key(name) {
                continue;
            }
            let found = Bucket::named(conn, zip.project_id, name, service)
                .await
                .map_err(JobFailure::database)?;
            let Some(bucket) = found.into_iter().next() else {
                return Err(JobFailure::new(
                    "source_bucket_not_found",
                    format!("the sources' bucket `{name}` was removed from the project"),
                    Blame::Request,
                    Retry::Never,
                ));
            };
            if !bucket.read_sources {
                return Err(JobFailure::new(
                    "bucket_sources_not_allowed",
                    format!(
                        "bucket `{name}` no longer lets jobs read their sources from it \
                         (\"Jobs may read sources\" was turned off)"
                    ),
                    Blame::Request,
                    Retry::Never,
                ));
            }
            let opened = open(keyring, clients, &bucket)?;
            let copies = self
                .copies_into
                .as_ref()
                .is_some_and(|target| target.shares_store_and_key(&opened));
            self.by_name.insert(
                name.to_owned(),
                SourceBucket {
                    location: opened.location,
                    client: opened.client,
                    copies,
                },
            );
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&SourceBucket> {
        self.by_name.get(name)
    }

    /// The URL to fetch `key` of bucket `name` from, signed to live `ttl` (at most 7 days).
    pub async fn link(
        &self,
        name: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<url::Url, SourceError> {
        let unreadable = |why: String| {
            SourceError::permanent(
                "source_unreadable",
                format!("s3://{name}/{key} could not be signed for: {why}"),
            )
        };
        let bucket = self
            .get(name)
            .ok_or_else(|| unreadable("its bucket was not loaded".into()))?;
        let link = zipkit_storage::presigned_get(
            &bucket.client,
            bucket.location.name.as_str(),
            key,
            ttl.min(MAX_LINK_TTL),
        )
        .await
        .map_err(unreadable)?;
        url::Url::parse(&link).map_err(|e| unreadable(e.to_string()))
    }
}
