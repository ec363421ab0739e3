//! Adding, editing, testing and deleting a project's buckets. A bucket is tested ("Save and
//! Test") before it is stored unless the operator explicitly skips the test.

use diesel::result::Error as DieselError;
use diesel_async::AsyncPgConnection;
use secrecy::SecretString;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::models::{
    Bucket, BucketCapabilities, BucketCredentials, BucketTestResult, DeleteBucketError, ModelError,
    NewBucket,
};
use zipkit_domain::values::BucketName;
use zipkit_domain::{BucketId, ProjectId, Service};
use zipkit_egress::CheckError;
use zipkit_storage::{BucketClients, BucketLocation, BucketTestError};

/// What a person types to add a bucket.
#[derive(Debug, Clone)]
pub struct BucketInput {
    pub service: Service,
    pub name: String,
    /// S3 only; R2 is always `auto`.
    pub region: String,
    /// R2 only.
    pub account_id: Option<String>,
    /// S3-compatible stores only (MinIO, Garage, Ceph, B2, …).
    pub endpoint_url: Option<String>,
    pub path_style: bool,
    pub acl: Option<String>,
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
}

#[derive(Debug, thiserror::Error)]
pub enum BucketAdminError {
    /// A field is invalid; `field` names it (for the form or the CLI flag).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("a {service} bucket named `{name}` is already configured in this project")]
    Duplicate { service: Service, name: String },
    #[error("bucket not found in this project")]
    NotFound,
    #[error("{0}")]
    TestFailed(BucketTestError),
    #[error("cannot delete: {} to this bucket (jobs keep their bucket so their history stays complete)", still_refer(*.jobs))]
    InUse { jobs: i64 },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<DieselError> for BucketAdminError {
    fn from(err: DieselError) -> Self {
        Self::Model(ModelError::Query(err))
    }
}

/// "1 zip job still refers" / "3 zip jobs still refer": why a bucket cannot be deleted.
pub fn still_refer(jobs: i64) -> String {
    if jobs == 1 {
        "1 zip job still refers".to_owned()
    } else {
        format!("{jobs} zip jobs still refer")
    }
}

const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
];

fn invalid(field: &'static str, message: impl Into<String>) -> BucketAdminError {
    BucketAdminError::Invalid {
        field,
        message: message.into(),
    }
}

/// Checks every field; returns the location to test and store.
pub fn validate(input: &BucketInput) -> Result<BucketLocation, BucketAdminError> {
    let name = BucketName::parse(&input.name)
        .map_err(|e| invalid("name", format!("the bucket name {e}")))?;
    if input.service == Service::R2 && name.as_str().contains('.') {
        return Err(invalid(
            "name",
            "R2 bucket names may contain only lowercase letters, digits and hyphens",
        ));
    }
    let region = match input.service {
        Service::R2 => "auto".to_owned(),
        Service::S3 => {
            let region = input.region.trim();
            let valid = !region.is_empty()
                && region.len() <= 64
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(invalid(
                    "region",
                    "the region looks like `us-east-1` (lowercase letters, digits, hyphens)",
                ));
            }
            region.to_owned()
        }
    };
    let account_id = match (input.service, input.account_id.as_deref().map(str::trim)) {
        (Service::R2, Some(id)) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(id.to_ascii_lowercase())
        }
        (Service::R2, _) => {
            return Err(invalid(
                "account_id",
                "the R2 account id is 32 hexadecimal characters",
            ));
        }
        (Service::S3, None) => None,
        (Service::S3, Some(_)) => {
            return Err(invalid(
                "account_id",
                "an account id applies to R2 buckets only",
            ));
        }
    };
    let endpoint_url = match (input.service, input.endpoint_url.as_deref().map(str::trim)) {
        (_, None | Some("")) => None,
        (Service::R2, Some(_)) => {
            return Err(invalid(
                "endpoint_url",
                "R2 buckets use their account's endpoint",
            ));
        }
        (Service::S3, Some(raw)) => {
            let url = url::Url::parse(raw)
                .map_err(|_| invalid("endpoint_url", "the endpoint must be an absolute URL"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(
                    "endpoint_url",
                    "the endpoint must be an http(s) URL with a host",
                ));
            }
            Some(raw.trim_end_matches('/').to_owned())
        }
    };
    if let Some(acl) = &input.acl {
        if input.service == Service::R2 {
            return Err(invalid(
                "acl",
                "R2 rejects ACL headers; leave the ACL empty",
            ));
        }
        if !CANNED_ACLS.contains(&acl.as_str()) {
            return Err(invalid(
                "acl",
                format!("the ACL must be one of: {}", CANNED_ACLS.join(", ")),
            ));
        }
    }
    if secrecy::ExposeSecret::expose_secret(&input.access_key_id)
        .trim()
        .is_empty()
    {
        return Err(invalid("access_key_id", "the access key id is required"));
    }
    if secrecy::ExposeSecret::expose_secret(&input.secret_access_key).is_empty() {
        return Err(invalid(
            "secret_access_key",
            "the secret access key is required",
        ));
    }
    Ok(BucketLocation {
        service: input.service,
        name,
        region,
        r2_account_id: account_id,
        endpoint_url,
        force_path_style: input.path_style && input.service == Service::S3,
        acl: input.acl.clone(),
    })
}

/// A custom endpoint is a customer-supplied address: one the egress policy forbids is refused
/// in plain words before anything connects to it (with or without the write test). A name that
/// does not resolve from here is left to the write test to explain.
async fn check_endpoint(
    location: &BucketLocation,
    buckets: &BucketClients,
) -> Result<(), BucketAdminError> {
    let Some(endpoint) = &location.endpoint_url else {
        return Ok(());
    };
    let url = url::Url::parse(endpoint)
        .map_err(|_| invalid("endpoint_url", "the endpoint must be an absolute URL"))?;
    match buckets.egress().check_url_now(&url).await {
        Err(CheckError::Forbidden(forbidden)) => Err(invalid(
            "endpoint_url",
            BucketTestError::ForbiddenEndpoint(forbidden.host).to_string(),
        )),
        Ok(()) | Err(CheckError::Unresolvable { .. } | CheckError::NoHost) => Ok(()),
    }
}

fn credentials(input: &BucketInput) -> BucketCredentials {
    BucketCredentials {
        access_key_id: input.access_key_id.clone(),
        secret_access_key: input.secret_access_key.clone(),
    }
}

/// Validates, tests (unless `skip_test`), and stores the bucket with sealed credentials.
pub async fn add(
    conn: &mut AsyncPgConnection,
    keyring: &KeyRing,
    project: ProjectId,
    input: BucketInput,
    skip_test: bool,
    buckets: &BucketClients,
) -> Result<Bucket, BucketAdminError> {
    let location = validate(&input)?;
    check_endpoint(&location, buckets).await?;
    let credentials = credentials(&input);
    let capabilities = test_unless(skip_test, buckets, &location, &credentials).await?;
    let new = NewBucket {
        project_id: project,
        service: location.service,
        name: location.name.clone(),
        region: location.region.clone(),
        r2_account_id: location.r2_account_id.clone(),
        endpoint_url: location.endpoint_url.clone(),
        force_path_style: location.force_path_style,
        acl: location.acl.clone(),
        credentials,
    };
    let bucket = match Bucket::create(conn, keyring, new).await {
        Ok(bucket) => bucket,
        Err(ModelError::BucketNameTaken) => {
            return Err(BucketAdminError::Duplicate {
                service: location.service,
                name: location.name.into_string(),
            });
        }
        Err(err) => return Err(err.into()),
    };
    record_passed(conn, bucket, capabilities).await
}

/// The bucket test, unless the operator skips it (`--no-test`): what the keys may do.
async fn test_unless(
    skip_test: bool,
    buckets: &BucketClients,
    location: &BucketLocation,
    credentials: &BucketCredentials,
) -> Result<Option<BucketCapabilities>, BucketAdminError> {
    if skip_test {
        return Ok(None);
    }
    let found = buckets.test_bucket(location, credentials).await;
    found.map(Some).map_err(BucketAdminError::TestFailed)
}

/// Records a passed test on the stored bucket; a bucket saved untested stays as it is.
async fn record_passed(
    conn: &mut AsyncPgConnection,
    bucket: Bucket,
    capabilities: Option<BucketCapabilities>,
) -> Result<Bucket, BucketAdminError> {
    match capabilities {
        Some(found) => {
            let passed = BucketTestResult::passed(found);
            Ok(Bucket::record_test(conn, bucket.id, &passed).await?)
        }
        None => Ok(bucket),
    }
}

/// Tests a stored bucket with its stored credentials and records the outcome: what the keys may
/// do, or why they may not write.
pub async fn test(
    conn: &mut AsyncPgConnection,
    keyring: &KeyRing,
    project: ProjectId,
    id: BucketId,
    buckets: &BucketClients,
) -> Result<BucketCapabilities, BucketAdminError> {
    let bucket = Bucket::find(conn, project, id)
        .await?
        .ok_or(BucketAdminError::NotFound)?;
    let credentials = bucket.credentials(keyring)?;
    let outcome = buckets
        .test_bucket(&BucketLocation::from(&bucket), &credentials)
        .await;
    let record = match &outcome {
        Ok(found) => BucketTestResult::passed(*found),
        Err(e) => BucketTestResult::failed(e.to_string()),
    };
    Bucket::record_test(conn, bucket.id, &record).await?;
    outcome.map_err(BucketAdminError::TestFailed)
}

/// Lets jobs read their sources from the bucket (`s3://<bucket>/…`), or stops them.
pub async fn set_read_sources(
    conn: &mut AsyncPgConnection,
    project: ProjectId,
    id: BucketId,
    allow: bool,
) -> Result<Bucket, BucketAdminError> {
    Bucket::set_read_sources(conn, project, id, allow)
        .await?
        .ok_or(BucketAdminError::NotFound)
}

/// What reading sources from the bucket needs that its last test did not find, in words
/// (`None` when its keys were found to read and list it).
pub fn read_sources_missing(bucket: &Bucket) -> Option<String> {
    let Some(found) = bucket.capabilities else {
        return Some(
            "its keys have not been tested: test the bucket to see whether they may \
             s3:GetObject and s3:ListBucket"
                .to_owned(),
        );
    };
    let missing: Vec<&str> = [(found.read, "s3:GetObject"), (found.list, "s3:ListBucket")]
        .into_iter()
        .filter_map(|(allowed, needs)| (!allowed).then_some(needs))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "its last test found its keys may not {}: jobs reading it will fail until they may",
            missing.join(" or ")
        )
    })
}

/// New credentials for a bucket, and optionally a new region.
#[derive(Debug)]
pub struct CredentialsEdit {
    pub credentials: BucketCredentials,
    pub region: Option<String>,
    /// Store them without the write test (CLI `--no-test`).
    pub skip_test: bool,
}

/// Replaces the credentials (and optionally the region), testing the new ones first.
pub async fn edit_credentials(
    conn: &mut AsyncPgConnection,
    keyring: &KeyRing,
    project: ProjectId,
    id: BucketId,
    edit: CredentialsEdit,
    buckets: &BucketClients,
) -> Result<Bucket, BucketAdminError> {
    let CredentialsEdit {
        credentials,
        region,
        skip_test,
    } = edit;
    let bucket = Bucket::find(conn, project, id)
        .await?
        .ok_or(BucketAdminError::NotFound)?;
    let mut location = BucketLocation::from(&bucket);
    if let Some(region) = &region {
        let probe = BucketInput {
            service: bucket.service,
            name: bucket.name.to_string(),
            region: region.clone(),
            account_id: bucket.r2_account_id.clone(),
            endpoint_url: bucket.endpoint_url.clone(),
            path_style: bucket.force_path_style,
            acl: bucket.acl.clone(),
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.clone(),
        };
        location = validate(&probe)?;
    }
    let capabilities = test_unless(skip_test, buckets, &location, &credentials).await?;
    let region = (bucket.service == Service::S3)
        .then_some(location.region)
        .filter(|_| region.is_some());
    let updated =
        Bucket::update_credentials(conn, keyring, project, id, &credentials, region.as_deref())
            .await?
            .ok_or(BucketAdminError::NotFound)?;
    record_passed(conn, updated, capabilities).await
}

pub async fn delete(
    conn: &mut AsyncPgConnection,
    project: ProjectId,
    id: BucketId,
) -> Result<(), BucketAdminError> {
    Bucket::delete(conn, project, id)
        .await
        .map_err(|e| match e {
            DeleteBucketError::NotFound => BucketAdminError::NotFound,
            DeleteBucketError::InUse { jobs } => BucketAdminError::InUse { jobs },
            DeleteBucketError::Query(q) => q.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(service: Service) -> BucketInput {
        BucketInput {
            service,
            name: "my-archives".into(),
            region: "eu-west-1".into(),
            account_id: (service == Service::R2).then(|| "0123456789abcdef0123456789abcdef".into()),
            endpoint_url: None,
            path_style: false,
            acl: None,
            access_key_id: SecretString::from("AKIA".to_owned()),
            secret_access_key: SecretString::from("s".to_owned()),
        }
    }

    fn field(result: Result<BucketLocation, BucketAdminError>) -> &'static str {
        match result {
            Err(BucketAdminError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn valid_s3_and_r2_inputs_give_their_locations() {
        let s3 = validate(&input(Service::S3)).unwrap();
        assert_eq!((s3.region.as_str(), s3.endpoint()), ("eu-west-1", None));
        let r2 = validate(&input(Service::R2)).unwrap();
        assert_eq!(r2.region, "auto");
        assert!(
            r2.endpoint()
                .unwrap()
                .starts_with("https://0123456789abcdef")
        );
        let mut custom = input(Service::S3);
        custom.endpoint_url = Some("http://127.0.0.1:9000/".into());
        custom.path_style = true;
        let custom = validate(&custom).unwrap();
        assert_eq!(custom.endpoint().as_deref(), Some("http://127.0.0.1:9000"));
        assert!(custom.force_path_style);
    }

    #[test]
    fn each_bad_field_is_named() {
        let with = |f: &dyn Fn(&mut BucketInput), service| {
            let mut i = input(service);
            f(&mut i);
            field(validate(&i))
        };
        assert_eq!(with(&|i| i.name = "Bad_Name".into(), Service::S3), "name");
        assert_eq!(with(&|i| i.name = "has.dots".into(), Service::R2), "name");
        assert_eq!(with(&|i| i.region = "".into(), Service::S3), "region");
        assert_eq!(
            with(&|i| i.account_id = Some("xyz".into()), Service::R2),
            "account_id"
        );
        assert_eq!(
            with(
                &|i| i.account_id = Some("0123456789abcdef0123456789abcdef".into()),
                Service::S3
            ),
            "account_id"
        );
        assert_eq!(
            with(&|i| i.endpoint_url = Some("ftp://x".into()), Service::S3),
            "endpoint_url"
        );
        assert_eq!(
            with(&|i| i.endpoint_url = Some("https://x".into()), Service::R2),
            "endpoint_url"
        );
        assert_eq!(
            with(&|i| i.acl = Some("private".into()), Service::R2),
            "acl"
        );
        assert_eq!(
            with(&|i| i.acl = Some("everyone".into()), Service::S3),
            "acl"
        );
        assert_eq!(
            with(
                &|i| i.access_key_id = SecretString::from(" ".to_owned()),
                Service::S3
            ),
            "access_key_id"
        );
        assert_eq!(
            with(
                &|i| i.secret_access_key = SecretString::from(String::new()),
                Service::S3
            ),
            "secret_access_key"
        );
    }
}
