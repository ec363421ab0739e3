//! The job's multipart upload as recorded: its id, the parts the store took (which a worker
//! taking the job over continues from), and uploads left behind for the sweeper to abort.

use chrono::Duration;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::ids::{BucketId, ZipId};
use crate::schema::{zip_parts, zip_uploads, zips};
use crate::values::ObjectKey;

use super::Zip;

/// A multipart upload nobody will complete: its job ended without it, or the job's lease died
/// long ago. Taken by `Zip::take_orphaned_uploads` for the sweeper to abort.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct OrphanedUpload {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub zip_id: ZipId,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub bucket_id: BucketId,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub object_key: ObjectKey,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub upload_id: String,
}

/// A part of a job's multipart upload the store took.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = zip_parts, check_for_backend(diesel::pg::Pg))]
pub struct ZipPart {
    pub part_number: i32,
    pub etag: String,
    pub size: i64,
    /// CRC-32 of the part's bytes as sent (absent on parts recorded before it was kept).
    pub crc32: Option<i64>,
}

impl Zip {
    /// Records the multipart upload the owner started and how its archive is cut (`plan`: the
    /// worker's own description), so a worker taking the job over can resume it. `false` when
    /// the owner lost the job meanwhile.
    pub async fn set_upload_id(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        upload_id: &str,
        plan: &str,
    ) -> QueryResult<bool> {
        conn.transaction(async |conn| {
            let updated = diesel::update(zips::table.find(id))
                .filter(zips::lease_owner.eq(owner))
                .set((
                    zips::upload_id.eq(upload_id),
                    zips::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
            if updated == 1 {
                diesel::insert_into(zip_uploads::table)
                    .values((
                        zip_uploads::zip_id.eq(id),
                        zip_uploads::upload_id.eq(upload_id),
                        zip_uploads::plan.eq(plan),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            Ok(updated == 1)
        })
        .await
    }

    /// How the archive of one of the job's uploads is cut, as recorded when it started.
    pub async fn upload_plan(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        upload_id: &str,
    ) -> QueryResult<Option<String>> {
        zip_uploads::table
            .find((id, upload_id))
            .select(zip_uploads::plan)
            .first(conn)
            .await
            .optional()
    }

    /// Marks one of the job's uploads ended (completed or aborted): nothing resumes it and no
    /// sweeper needs to clean it up.
    pub async fn end_upload(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        upload_id: &str,
    ) -> QueryResult<()> {
        diesel::update(zip_uploads::table.find((id, upload_id)))
            .filter(zip_uploads::ended_at.is_null())
            .set(zip_uploads::ended_at.eq(diesel::dsl::now))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Stores an uploaded part's ETag as soon as the part is written.
    pub async fn record_part(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        upload_id: &str,
        part_number: i32,
        etag: &str,
        size: i64,
        crc32: u32,
    ) -> QueryResult<()> {
        diesel::insert_into(zip_parts::table)
            .values((
                zip_parts::zip_id.eq(id),
                zip_parts::upload_id.eq(upload_id),
                zip_parts::part_number.eq(part_number),
                zip_parts::etag.eq(etag),
                zip_parts::size.eq(size),
                zip_parts::crc32.eq(i64::from(crc32)),
            ))
            .on_conflict((
                zip_parts::zip_id,
                zip_parts::upload_id,
                zip_parts::part_number,
            ))
            .do_update()
            .set((
                zip_parts::etag.eq(etag),
                zip_parts::size.eq(size),
                zip_parts::crc32.eq(i64::from(crc32)),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// The parts recorded for one of the job's uploads, by number.
    pub async fn parts(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        upload_id: &str,
    ) -> QueryResult<Vec<ZipPart>> {
        zip_parts::table
            .filter(zip_parts::zip_id.eq(id))
            .filter(zip_parts::upload_id.eq(upload_id))
            .order(zip_parts::part_number.asc())
            .select(ZipPart::as_select())
            .load(conn)
            .await
    }

    /// Takes up to `limit` open uploads nobody will complete and marks them ended, so exactly one
    /// sweeper aborts each: uploads of jobs that failed or were cancelled, uploads of succeeded
    /// jobs other than the one that made the archive, and uploads of jobs whose lease (or, with
    /// none, the upload itself) is older than `stale`.
    pub async fn take_orphaned_uploads(
        conn: &mut AsyncPgConnection,
        stale: Duration,
        limit: i64,
    ) -> QueryResult<Vec<OrphanedUpload>> {
        // Raw SQL: the join and SKIP LOCKED sub-select read more clearly than the query builder.
        diesel::sql_query(
            "WITH taken AS ( \
                 UPDATE zip_uploads SET ended_at = now() \
                 WHERE (zip_id, upload_id) IN ( \
                     SELECT u.zip_id, u.upload_id FROM zip_uploads u JOIN zips z ON z.id = u.zip_id \
                     WHERE u.ended_at IS NULL AND ( \
                         z.status IN ('failed', 'cancelled') \
                         OR (z.status = 'succeeded' AND z.upload_id IS DISTINCT FROM u.upload_id) \
                         OR (z.status IN ('none', 'processing') \
                             AND coalesce(z.lease_expires_at, u.started_at) < now() - $1)) \
                     ORDER BY u.started_at LIMIT $2 FOR UPDATE OF u SKIP LOCKED) \
                 RETURNING zip_id, upload_id) \
             SELECT taken.zip_id, z.bucket_id, z.object_key, taken.upload_id \
             FROM taken JOIN zips z ON z.id = taken.zip_id",
        )
        .bind::<diesel::sql_types::Interval, _>(stale)
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .load(conn)
        .await
    }

    /// Forgets the job's upload (it was aborted, or is gone): the next attempt starts a new one.
    pub async fn forget_upload(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
    ) -> QueryResult<bool> {
        let updated = diesel::update(zips::table.find(id))
            .filter(zips::lease_owner.eq(owner))
            .set((
                zips::upload_id.eq(None::<String>),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }
}
