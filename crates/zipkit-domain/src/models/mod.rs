//! Rows and the queries that read and change them, one module per aggregate.
//! State changes that can race (claiming or finishing a job) are single conditional UPDATEs.

pub mod access_token;
mod account;
mod bucket;
mod capabilities;
mod rate_limit;
mod rotation;
mod session;
mod webhook;
mod webhook_delivery;
mod zip;

pub use access_token::{AccessToken, NewAccessToken};
pub use account::{NewUser, Project, User};
pub use bucket::{Bucket, BucketCredentials, BucketTestResult, DeleteBucketError, NewBucket};
pub use capabilities::{BucketCapabilities, CapabilityLine, StorageClasses};
pub use rate_limit::{Grant, Quota, RateLimit};
pub use rotation::{RotationReport, rotate_encryption_keys};
pub use session::{LoginThrottle, RecentFailures, Session, SessionError};
pub use webhook::{NewWebhookEndpoint, WebhookEndpoint};
pub use webhook_delivery::{AttemptResult, DeliveryAttempt, WebhookDelivery};
pub use zip::{
    DEFAULT_DOWNLOAD_URL_TTL_SECS, DownloadSource, Encryption, EntryLoad, EntryOutcome,
    EntryPlacement, EntrySource, ExpiredArchive, JobError, LoadError, ManifestFormat, NewListing,
    NewManifest, NewZip, NewZipEntry, OrphanedUpload, PlacedEnd, RecordedEntry, ResultSettings,
    SKIPPED_LISTED, SkippedEntries, Zip, ZipEntry, ZipListing, ZipOutcome, ZipPage, ZipPart,
    ZipWithBucket,
};

/// Errors of the model layer: a row that would take a name already taken, the query failed, or
/// a stored secret would not decrypt.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The project already has a job under this `Idempotency-Key`.
    #[error("the project already has a job with this idempotency key")]
    IdempotencyKeyTaken,
    /// The project already has a bucket of this service and name.
    #[error("the project already has a bucket of this service and name")]
    BucketNameTaken,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
}
