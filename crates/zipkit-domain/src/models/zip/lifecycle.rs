//! A worker's hold on a job, each change one conditional UPDATE so that races have one winner:
//! claim (or take over an expired lease), heartbeat, progress, finish, release for a retry,
//! hand back.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::enums::ZipStatus;
use crate::ids::ZipId;
use crate::schema::{zip_expected_sizes, zips};

use super::Zip;

/// How a job ended.
#[derive(Debug, Clone)]
pub enum ZipOutcome {
    Succeeded {
        size: i64,
        etag: String,
        entries: i32,
    },
    Failed(JobError),
}

/// A failure as the API shows it in `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub error_type: String,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
}

impl Zip {
    /// Takes the job for `owner` until `now + lease`: only a job not started yet, or one whose
    /// previous owner's lease ran out. Exactly one of any number of racing workers wins.
    pub async fn claim(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        lease: Duration,
    ) -> QueryResult<Option<Self>> {
        let now = Utc::now();
        diesel::update(zips::table.find(id))
            .filter(
                zips::status.eq(ZipStatus::None).or(zips::status
                    .eq(ZipStatus::Processing)
                    .and(zips::lease_expires_at.lt(now))),
            )
            .set((
                zips::status.eq(ZipStatus::Processing),
                zips::lease_owner.eq(owner),
                zips::lease_expires_at.eq(now + lease),
                zips::attempts.eq(zips::attempts + 1),
                zips::started_at.eq(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                >("coalesce(started_at, now())")),
                zips::updated_at.eq(now),
            ))
            .returning(Zip::as_returning())
            .get_result(conn)
            .await
            .optional()
    }

    /// Extends the owner's lease; `false` means the job was taken over, finished or cancelled.
    pub async fn heartbeat(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        lease: Duration,
    ) -> QueryResult<bool> {
        let updated = diesel::update(zips::table.find(id))
            .filter(zips::status.eq(ZipStatus::Processing))
            .filter(zips::lease_owner.eq(owner))
            .set(zips::lease_expires_at.eq(Utc::now() + lease))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }

    /// Progress counters, written by the owner at a modest rate.
    pub async fn record_progress(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        files_done: i32,
        bytes_downloaded: i64,
        bytes_uploaded: i64,
    ) -> QueryResult<()> {
        diesel::update(zips::table.find(id))
            .filter(zips::lease_owner.eq(owner))
            .set((
                zips::files_done.eq(files_done),
                zips::bytes_downloaded.eq(bytes_downloaded),
                zips::bytes_uploaded.eq(bytes_uploaded),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Records the archive's exact size as the owner came to know it (again, after a source was
    /// skipped).
    pub async fn record_expected_size(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        size: i64,
    ) -> QueryResult<()> {
        // One statement: only while `owner` holds the job, whatever happens meanwhile.
        let owned = zips::table
            .filter(zips::id.eq(id))
            .filter(zips::lease_owner.eq(owner))
            .select((zips::id, size.into_sql::<diesel::sql_types::BigInt>()));
        diesel::insert_into(zip_expected_sizes::table)
            .values(owned)
            .into_columns((zip_expected_sizes::zip_id, zip_expected_sizes::size))
            .on_conflict(zip_expected_sizes::zip_id)
            .do_update()
            .set((
                zip_expected_sizes::size.eq(size),
                zip_expected_sizes::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Sets the terminal state, only if `owner` still holds the job; returns the finished row.
    pub async fn finish(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        outcome: &ZipOutcome,
    ) -> QueryResult<Option<Self>> {
        let target = zips::table
            .find(id)
            .filter(zips::status.eq(ZipStatus::Processing))
            .filter(zips::lease_owner.eq(owner));
        let release = (
            zips::lease_owner.eq(None::<String>),
            zips::lease_expires_at.eq(None::<DateTime<Utc>>),
            zips::finished_at.eq(diesel::dsl::now),
            zips::updated_at.eq(diesel::dsl::now),
        );
        let query = match outcome {
            ZipOutcome::Succeeded {
                size,
                etag,
                entries,
            } => {
                diesel::update(target)
                    .set((
                        zips::status.eq(ZipStatus::Succeeded),
                        zips::result_size.eq(size),
                        zips::bytes_uploaded.eq(size),
                        zips::result_etag.eq(etag),
                        zips::result_entries.eq(entries),
                        release,
                    ))
                    .returning(Zip::as_returning())
                    .get_result(conn)
                    .await
            }
            ZipOutcome::Failed(error) => {
                diesel::update(target)
                    .set((
                        zips::status.eq(ZipStatus::Failed),
                        zips::error_type.eq(&error.error_type),
                        zips::error_code.eq(&error.code),
                        zips::error_message.eq(&error.message),
                        zips::error_param.eq(&error.param),
                        release,
                    ))
                    .returning(Zip::as_returning())
                    .get_result(conn)
                    .await
            }
        };
        query.optional()
    }

    /// Gives the job back for another attempt after a transient failure: `none` again, no
    /// lease, counters reset (the next attempt builds the archive from the start). Only while
    /// `owner` still holds it; says whether it did.
    pub async fn release_for_retry(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        failure: &str,
    ) -> QueryResult<bool> {
        let updated = diesel::update(zips::table.find(id))
            .filter(zips::status.eq(ZipStatus::Processing))
            .filter(zips::lease_owner.eq(owner))
            .set((
                zips::status.eq(ZipStatus::None),
                zips::lease_owner.eq(None::<String>),
                zips::lease_expires_at.eq(None::<DateTime<Utc>>),
                zips::upload_id.eq(None::<String>),
                zips::files_done.eq(0),
                zips::bytes_downloaded.eq(0),
                zips::bytes_uploaded.eq(0),
                zips::last_failure.eq(failure),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }

    /// Gives a job back from a worker that is stopping (scale-in, rollout), for the next worker
    /// to take at once: the lease ends now, and the attempt it was on is not counted, as
    /// nothing failed. The upload and its recorded parts stay, so the next worker continues it.
    /// `false` when `owner` no longer held the job.
    pub async fn hand_back(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
    ) -> QueryResult<bool> {
        let updated = diesel::update(zips::table.find(id))
            .filter(zips::status.eq(ZipStatus::Processing))
            .filter(zips::lease_owner.eq(owner))
            .set((
                // Just expired (the owner stays recorded until the next claim), so a claim takes
                // it at once. Not further back: the upload sweeper treats a lease that ended an
                // hour ago as an abandoned upload.
                zips::lease_expires_at.eq(Utc::now() - chrono::Duration::seconds(1)),
                zips::attempts.eq(zips::attempts - 1),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }
}
