//! Customer buckets. Credentials are sealed (see `crypto`) before they touch the database and are
//! opened only by code about to call the provider.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};

use super::{BucketCapabilities, ModelError};
use crate::crypto::{KeyRing, Sealed, SecretBinding};
use crate::enums::Service;
use crate::ids::{BucketId, ProjectId};
use crate::schema::{buckets, zips};
use crate::values::BucketName;

pub(crate) const ACCESS_KEY_ID_FIELD: &str = "buckets.access_key_id";
pub(crate) const SECRET_ACCESS_KEY_FIELD: &str = "buckets.secret_access_key";

#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = buckets, check_for_backend(diesel::pg::Pg))]
pub struct Bucket {
    pub id: BucketId,
    pub project_id: ProjectId,
    pub service: Service,
    pub name: BucketName,
    pub region: String,
    pub r2_account_id: Option<String>,
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
    pub access_key_id_ciphertext: Vec<u8>,
    pub secret_access_key_ciphertext: Vec<u8>,
    pub encryption_key_id: String,
    pub access_key_hint: String,
    pub acl: Option<String>,
    pub last_tested_at: Option<DateTime<Utc>>,
    pub last_test_ok: Option<bool>,
    pub last_test_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// As the last test found them; `None` before a test that checked them, or after one that
    /// failed.
    pub capabilities: Option<BucketCapabilities>,
    /// Jobs may read their sources from this bucket (`s3://<bucket>/…`) with its keys.
    pub read_sources: bool,
}

// Hand-written so ciphertexts never reach a log line, even as bytes.
impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("service", &self.service)
            .field("name", &self.name)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Opened credentials, only for the storage client.
#[derive(Debug, Clone)]
pub struct BucketCredentials {
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
}

/// A bucket to add; the name is already parsed, the credentials are still in clear.
#[derive(Debug)]
pub struct NewBucket {
    pub project_id: ProjectId,
    pub service: Service,
    pub name: BucketName,
    pub region: String,
    pub r2_account_id: Option<String>,
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
    pub acl: Option<String>,
    pub credentials: BucketCredentials,
}

/// The outcome of a "Save and Test", stored for the bucket list.
#[derive(Debug, Clone)]
pub struct BucketTestResult {
    pub ok: bool,
    pub message: String,
    pub capabilities: Option<BucketCapabilities>,
}

impl BucketTestResult {
    /// The keys may write; what else they may do.
    pub fn passed(capabilities: BucketCapabilities) -> Self {
        Self {
            ok: true,
            message: "write test passed".into(),
            capabilities: Some(capabilities),
        }
    }

    /// The keys may not write, for this reason; nothing else is known.
    pub fn failed(why: String) -> Self {
        Self {
            ok: false,
            message: why,
            capabilities: None,
        }
    }
}

/// Why a bucket was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteBucketError {
    #[error("bucket not found")]
    NotFound,
    #[error("{jobs} zip job(s) still refer to this bucket; they keep its history")]
    InUse { jobs: i64 },
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

fn hint(access_key_id: &str) -> String {
    let chars: Vec<char> = access_key_id.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}

fn seal_credentials(
    keyring: &KeyRing,
    id: BucketId,
    credentials: &BucketCredentials,
) -> Result<(Sealed, Sealed), ModelError> {
    let row = *id.as_uuid();
    let access = keyring.seal_str(
        &credentials.access_key_id,
        SecretBinding {
            field: ACCESS_KEY_ID_FIELD,
            row,
        },
    )?;
    let secret = keyring.seal_str(
        &credentials.secret_access_key,
        SecretBinding {
            field: SECRET_ACCESS_KEY_FIELD,
            row,
        },
    )?;
    Ok((access, secret))
}

impl Bucket {
    pub async fn create(
        conn: &mut AsyncPgConnection,
        keyring: &KeyRing,
        new: NewBucket,
    ) -> Result<Self, ModelError> {
        // `BucketNameTaken` when the project has this service and name (the only unique rule a
        // fresh id can meet).
        let id = BucketId::new();
        let (access, secret) = seal_credentials(keyring, id, &new.credentials)?;
        let bucket = diesel::insert_into(buckets::table)
            .values((
                buckets::id.eq(id),
                buckets::project_id.eq(new.project_id),
                buckets::service.eq(new.service),
                buckets::name.eq(new.name.as_str()),
                buckets::region.eq(&new.region),
                buckets::r2_account_id.eq(&new.r2_account_id),
                buckets::endpoint_url.eq(&new.endpoint_url),
                buckets::force_path_style.eq(new.force_path_style),
                buckets::access_key_id_ciphertext.eq(&access.ciphertext),
                buckets::secret_access_key_ciphertext.eq(&secret.ciphertext),
                buckets::encryption_key_id.eq(&access.key_id),
                buckets::access_key_hint.eq(hint(new.credentials.access_key_id.expose_secret())),
                buckets::acl.eq(&new.acl),
            ))
            .on_conflict_do_nothing()
            .returning(Bucket::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        bucket.ok_or(ModelError::BucketNameTaken)
    }

    /// The credentials in clear; fails if the ciphertexts were altered or moved between rows.
    pub fn credentials(&self, keyring: &KeyRing) -> Result<BucketCredentials, ModelError> {
        let row = *self.id.as_uuid();
        let open = |field, ciphertext: &Vec<u8>| {
            keyring.open(
                &Sealed {
                    key_id: self.encryption_key_id.clone(),
                    ciphertext: ciphertext.clone(),
                },
                SecretBinding { field, row },
            )
        };
        Ok(BucketCredentials {
            access_key_id: open(ACCESS_KEY_ID_FIELD, &self.access_key_id_ciphertext)?,
            secret_access_key: open(SECRET_ACCESS_KEY_FIELD, &self.secret_access_key_ciphertext)?,
        })
    }

    /// A bucket of this project only: ids of other projects' buckets find nothing.
    pub async fn find(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        id: BucketId,
    ) -> QueryResult<Option<Self>> {
        buckets::table
            .find(id)
            .filter(buckets::project_id.eq(project))
            .select(Bucket::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// For the worker, which acts for whichever project owns the job.
    pub async fn find_any(conn: &mut AsyncPgConnection, id: BucketId) -> QueryResult<Option<Self>> {
        buckets::table
            .find(id)
            .select(Bucket::as_select())
            .first(conn)
            .await
            .optional()
    }

    pub async fn find_by_name(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        service: Service,
        name: &str,
    ) -> QueryResult<Option<Self>> {
        buckets::table
            .filter(buckets::project_id.eq(project))
            .filter(buckets::service.eq(service))
            .filter(buckets::name.eq(name))
            .select(Bucket::as_select())
            .first(conn)
            .await
            .optional()
    }

    pub async fn list(conn: &mut AsyncPgConnection, project: ProjectId) -> QueryResult<Vec<Self>> {
        buckets::table
            .filter(buckets::project_id.eq(project))
            .order((buckets::name.asc(), buckets::service.asc()))
            .select(Bucket::as_select())
            .load(conn)
            .await
    }

    /// Replaces the credentials (sealed under the active key) and, when given, the region.
    pub async fn update_credentials(
        conn: &mut AsyncPgConnection,
        keyring: &KeyRing,
        project: ProjectId,
        id: BucketId,
        credentials: &BucketCredentials,
        region: Option<&str>,
    ) -> Result<Option<Self>, ModelError> {
        let (access, secret) = seal_credentials(keyring, id, credentials)?;
        let mut query = diesel::update(buckets::table.find(id))
            .filter(buckets::project_id.eq(project))
            .set((
                buckets::access_key_id_ciphertext.eq(&access.ciphertext),
                buckets::secret_access_key_ciphertext.eq(&secret.ciphertext),
                buckets::encryption_key_id.eq(&access.key_id),
                buckets::access_key_hint.eq(hint(credentials.access_key_id.expose_secret())),
                buckets::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Bucket::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        if let (Some(bucket), Some(region)) = (&query, region) {
            query = diesel::update(buckets::table.find(bucket.id))
                .set(buckets::region.eq(region))
                .returning(Bucket::as_returning())
                .get_result(conn)
                .await
                .optional()?;
        }
        Ok(query)
    }

    pub async fn record_test(
        conn: &mut AsyncPgConnection,
        id: BucketId,
        result: &BucketTestResult,
    ) -> QueryResult<Bucket> {
        diesel::update(buckets::table.find(id))
            .set((
                buckets::last_tested_at.eq(diesel::dsl::now),
                buckets::last_test_ok.eq(result.ok),
                buckets::last_test_message.eq(&result.message),
                buckets::capabilities.eq(result.capabilities),
            ))
            .returning(Bucket::as_returning())
            .get_result(conn)
            .await
    }

    /// Lets jobs read their sources from the bucket, or stops them.
    pub async fn set_read_sources(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        id: BucketId,
        read_sources: bool,
    ) -> QueryResult<Option<Bucket>> {
        diesel::update(buckets::table.find(id))
            .filter(buckets::project_id.eq(project))
            .set((
                buckets::read_sources.eq(read_sources),
                buckets::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Bucket::as_returning())
            .get_result(conn)
            .await
            .optional()
    }

    /// The project's buckets of this name (one per service at most), the job's `service` first.
    pub async fn named(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        name: &str,
        service_first: Service,
    ) -> QueryResult<Vec<Self>> {
        let mut found: Vec<Self> = buckets::table
            .filter(buckets::project_id.eq(project))
            .filter(buckets::name.eq(name))
            .select(Bucket::as_select())
            .load(conn)
            .await?;
        found.sort_by_key(|b| b.service != service_first);
        Ok(found)
    }

    /// How many zip jobs refer to the bucket.
    pub async fn job_count(conn: &mut AsyncPgConnection, id: BucketId) -> QueryResult<i64> {
        zips::table
            .filter(zips::bucket_id.eq(id))
            .count()
            .get_result(conn)
            .await
    }

    /// Deletes the bucket unless zip jobs refer to it (their history would lose its bucket).
    pub async fn delete(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        id: BucketId,
    ) -> Result<(), DeleteBucketError> {
        conn.transaction(async move |conn| {
            // Lock the row so a job created meanwhile cannot slip in between count and delete.
            let locked: Option<BucketId> = buckets::table
                .find(id)
                .filter(buckets::project_id.eq(project))
                .select(buckets::id)
                .for_update()
                .first(conn)
                .await
                .optional()?;
            if locked.is_none() {
                return Err(DeleteBucketError::NotFound);
            }
            let jobs = Self::job_count(conn, id).await?;
            if jobs > 0 {
                return Err(DeleteBucketError::InUse { jobs });
            }
            diesel::delete(buckets::table.find(id))
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn the_hint_shows_only_the_last_four_characters() {
        assert_eq!(hint("AKIAIOSFODNN7EXAMPLE"), "…MPLE");
        assert_eq!(hint("ab"), "…ab");
    }
}
