//! Talking to a customer's bucket with the official `aws-sdk-s3`: AWS S3 by region, Cloudflare
//! R2 by account id, or any S3-compatible store by custom endpoint (path-style). Shared by the
//! API (Save and Test) and the worker (multipart upload).

mod capabilities;
mod disposition;
mod download;
mod reading;

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::SharedHttpClient;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use secrecy::ExposeSecret;
use zipkit_domain::Service;
use zipkit_domain::models::BucketCredentials;
use zipkit_domain::values::BucketName;
use zipkit_egress::{EgressPolicy, SmithyResolver};

pub use disposition::attachment;
pub use reading::{
    ListedObject, StoredObject, copy_source, list_page, presigned_get, stored_object,
};

/// Where and how to reach one bucket (the non-secret part of a bucket row).
#[derive(Debug, Clone)]
pub struct BucketLocation {
    pub service: Service,
    pub name: BucketName,
    pub region: String,
    pub r2_account_id: Option<String>,
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
    /// Canned ACL for uploads; `None` sends no ACL header (R2 and owner-enforced S3 buckets reject them).
    pub acl: Option<String>,
}

impl From<&zipkit_domain::models::Bucket> for BucketLocation {
    fn from(b: &zipkit_domain::models::Bucket) -> Self {
        Self {
            service: b.service,
            name: b.name.clone(),
            region: b.region.clone(),
            r2_account_id: b.r2_account_id.clone(),
            endpoint_url: b.endpoint_url.clone(),
            force_path_style: b.force_path_style,
            acl: b.acl.clone(),
        }
    }
}

impl BucketLocation {
    /// The endpoint requests go to: custom, R2's per-account one, or AWS's default (`None`).
    pub fn endpoint(&self) -> Option<String> {
        match self.service {
            Service::R2 => self
                .r2_account_id
                .as_ref()
                .map(|a| format!("https://{a}.r2.cloudflarestorage.com")),
            Service::S3 => self.endpoint_url.clone(),
        }
    }

    /// The host of a custom endpoint, as the customer wrote it.
    pub fn endpoint_host(&self) -> Option<String> {
        let endpoint = self.endpoint()?;
        url::Url::parse(&endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
    }

    fn region(&self) -> String {
        match self.service {
            Service::R2 => "auto".into(),
            Service::S3 => self.region.clone(),
        }
    }
}

/// Timeouts for calls to the provider; the worker's uploads configure their own.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes clients for customers' buckets. They share one SDK HTTP client, built once per process
/// (TLS roots loaded once, connections pooled across jobs), whose every connection passes the
/// egress policy: a custom endpoint is a customer-supplied address.
#[derive(Debug, Clone)]
pub struct BucketClients {
    egress: EgressPolicy,
    http: SharedHttpClient,
}

impl BucketClients {
    pub fn new(egress: EgressPolicy) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_with_resolver(SmithyResolver(egress.clone()));
        Self { egress, http }
    }

    /// The policy its connections pass.
    pub fn egress(&self) -> &EgressPolicy {
        &self.egress
    }

    /// A client for this bucket with these credentials. Refused at once when the endpoint is a
    /// literal the policy forbids (the SDK's connector does not resolve literals); names are
    /// checked by the resolver on each connection.
    pub fn client(
        &self,
        location: &BucketLocation,
        credentials: &BucketCredentials,
    ) -> Result<Client, BucketTestError> {
        if let Some(endpoint) = location.endpoint() {
            let forbidden = || BucketTestError::ForbiddenEndpoint(endpoint.clone());
            let url = url::Url::parse(&endpoint).map_err(|_| forbidden())?;
            self.egress
                .check_url(&url)
                .map_err(|f| BucketTestError::ForbiddenEndpoint(f.host))?;
        }
        Ok(client(location, credentials, self.http.clone()))
    }
}

fn client(
    location: &BucketLocation,
    credentials: &BucketCredentials,
    http: SharedHttpClient,
) -> Client {
    let credentials = Credentials::new(
        credentials.access_key_id.expose_secret(),
        credentials.secret_access_key.expose_secret(),
        None,
        None,
        "zipkit-bucket",
    );
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(location.region()))
        .credentials_provider(credentials)
        .http_client(http)
        // R2 (and some S3-compatible stores) reject the SDK's default CRC checksums.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = location.endpoint() {
        config = config.endpoint_url(endpoint);
    }
    if location.service == Service::S3
        && (location.force_path_style || location.endpoint_url.is_some())
    {
        config = config.force_path_style(location.force_path_style);
    }
    Client::from_conf(config.build())
}

/// Why a bucket failed its write test, in words a person configuring it can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketTestError {
    #[error("The access key ID is not known to the provider. Check that it was copied completely.")]
    UnknownAccessKey,
    #[error(
        "The secret access key does not match the access key ID. Check that it was copied completely."
    )]
    WrongSecret,
    #[error(
        "The bucket `{0}` does not exist. zipkit never creates buckets: create it first, or check its name."
    )]
    NoSuchBucket(BucketName),
    #[error(
        "The credentials are valid but may not write to this bucket. Their policy must allow s3:PutObject on it."
    )]
    AccessDenied,
    #[error("The bucket is in another region{}. Set the bucket's region to match.", .0.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    WrongRegion(Option<String>),
    #[error(
        "The storage endpoint {0} could not be reached. Check the endpoint address and that it is online."
    )]
    Unreachable(String),
    #[error(
        "The storage endpoint's host `{0}` is a private, loopback or link-local address, which this deployment does not connect to. Use the store's public address, or ask the operator to allow its network (egress.allowed_networks)."
    )]
    ForbiddenEndpoint(String),
    /// Said of the write test and of a job's upload alike.
    #[error("The provider refused the request: {0}")]
    Other(String),
}

impl BucketTestError {
    /// The stable code a failed job shows for this refusal.
    pub fn job_code(&self) -> &'static str {
        match self {
            Self::UnknownAccessKey | Self::WrongSecret | Self::AccessDenied => {
                "bucket_access_denied"
            }
            Self::NoSuchBucket(_) => "bucket_not_found",
            Self::WrongRegion(_) => "bucket_wrong_region",
            Self::Unreachable(_) => "bucket_unreachable",
            Self::ForbiddenEndpoint(_) => "bucket_endpoint_forbidden",
            Self::Other(_) => "bucket_unavailable",
        }
    }
}

/// The key of the one small object the write test puts (and overwrites on every test):
/// the minimal policy has no DeleteObject, so the test never tries to clean up.
pub const WRITE_TEST_KEY: &str = ".zipkit/write-test";

/// A store's refusal of a call, read once from the SDK's error by the one owner of S3's error
/// vocabulary: the words a person can act on, the provider's code and HTTP status, and from
/// them what another attempt may bring and whether a multipart upload is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRefusal {
    pub why: BucketTestError,
    /// The provider's error code (`AccessDenied`, `NoSuchUpload`), when it sent one.
    pub provider_code: Option<String>,
    /// The HTTP status of the store's answer; `None` when there was none (network, timeout).
    pub status: Option<u16>,
}

/// What trying the same call again may bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// The network, a timeout, or an upload someone removed: the next attempt may well work.
    Later,
    /// Trouble on the store's side (a 5xx, also when S3 sends one in a 200's body, or an answer
    /// the SDK could not read): once more, unless the same answer comes again.
    UnlessRepeated,
    /// Keys, permissions, the bucket's name or region, the egress policy, a request the store
    /// refuses: another attempt would be refused the same way.
    Never,
}

/// Provider codes of trouble on the store's side, whatever the HTTP status they came with.
const SERVER_TROUBLE: &[&str] = &[
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
];

/// The code of a multipart upload that no longer exists (aborted by someone, or by a lifecycle
/// rule for incomplete uploads).
const NO_SUCH_UPLOAD: &str = "NoSuchUpload";

impl StoreRefusal {
    pub fn read<E: ProvideErrorMetadata + std::error::Error + 'static>(
        location: &BucketLocation,
        err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Self {
        Self {
            why: explain(location, err),
            provider_code: err.code().map(str::to_owned),
            status: match err {
                SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
                _ => None,
            },
        }
    }

    /// The multipart upload the call named is gone: a resumed upload starts a new one.
    pub fn upload_lost(&self) -> bool {
        self.provider_code.as_deref() == Some(NO_SUCH_UPLOAD)
    }

    pub fn retry(&self) -> RetryClass {
        let code = self.provider_code.as_deref();
        match &self.why {
            BucketTestError::Unreachable(_) => RetryClass::Later,
            BucketTestError::Other(_) if self.upload_lost() => RetryClass::Later,
            BucketTestError::Other(_)
                if self.status.is_none_or(|s| s >= 500)
                    || code.is_some_and(|c| SERVER_TROUBLE.contains(&c)) =>
            {
                RetryClass::UnlessRepeated
            }
            _ => RetryClass::Never,
        }
    }

    /// Whether `why`'s words already carry the provider's code (the refusals zipkit has no
    /// words of its own for quote it).
    pub fn names_its_code(&self) -> bool {
        self.provider_code.is_some() && matches!(self.why, BucketTestError::Other(_))
    }
}

/// A provider's refusal of any call on this bucket, in plain words (`StoreRefusal::why`).
fn explain<E: ProvideErrorMetadata + std::error::Error + 'static>(
    location: &BucketLocation,
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> BucketTestError {
    let endpoint = location
        .endpoint()
        .unwrap_or_else(|| format!("s3.{}.amazonaws.com", location.region));
    match err {
        SdkError::DispatchFailure(_) if zipkit_egress::is_forbidden(err) => {
            BucketTestError::ForbiddenEndpoint(location.endpoint_host().unwrap_or(endpoint))
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            BucketTestError::Unreachable(endpoint)
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let status = service.raw().status().as_u16();
            let region = service
                .raw()
                .headers()
                .get("x-amz-bucket-region")
                .map(str::to_owned);
            match code {
                "InvalidAccessKeyId" => BucketTestError::UnknownAccessKey,
                "SignatureDoesNotMatch" => BucketTestError::WrongSecret,
                "NoSuchBucket" => BucketTestError::NoSuchBucket(location.name.clone()),
                "AccessDenied" | "AllAccessDisabled" => BucketTestError::AccessDenied,
                "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException" => BucketTestError::WrongRegion(region),
                _ if status == 301 => BucketTestError::WrongRegion(region),
                _ if status == 404 => BucketTestError::NoSuchBucket(location.name.clone()),
                _ if status == 403 => BucketTestError::AccessDenied,
                _ => BucketTestError::Other(service.err().message().map_or_else(
                    || format!("HTTP {status} {code}"),
                    |m| format!("{code}: {m}"),
                )),
            }
        }
        other => BucketTestError::Other(other.to_string()),
    }
}
