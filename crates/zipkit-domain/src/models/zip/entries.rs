//! The job's entries: what each source became (written, skipped, failed) and where its bytes
//! sit in the archive, recorded in batches so a worker taking the job over can rebuild it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::enums::EntryState;
use crate::ids::ZipId;
use crate::schema::zip_entries;
use crate::values::{EntryName, SourceUrl};

use super::Zip;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = zip_entries, check_for_backend(diesel::pg::Pg))]
pub struct ZipEntry {
    pub zip_id: ZipId,
    pub entry_index: i32,
    pub url: SourceUrl,
    pub filename: EntryName,
    pub state: EntryState,
    pub size: Option<i64>,
    pub crc32: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The name as the request gave it, when `windows_safe_names` rewrote it into `filename`.
    pub given_filename: Option<String>,
    /// The entry's time as the request gave it.
    pub modified_at: Option<DateTime<Utc>>,
    /// The source's size as the request declared it.
    pub declared_size: Option<i64>,
}

/// How many skipped entries a job object lists; the rest are paged through on their own.
pub const SKIPPED_LISTED: i64 = 100;

/// A job's entries left out by `on_error: skip`: how many, and the first `SKIPPED_LISTED` in
/// order.
#[derive(Debug, Clone, Default)]
pub struct SkippedEntries {
    pub count: i64,
    pub first: Vec<ZipEntry>,
}

/// What a worker needs of an entry to fetch and name it (and, to write it again in archive
/// order while the job's prefixes are listed, the name as given).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = zip_entries, check_for_backend(diesel::pg::Pg))]
pub struct EntrySource {
    pub entry_index: i32,
    pub url: SourceUrl,
    pub filename: EntryName,
    pub given_filename: Option<String>,
    pub modified_at: Option<DateTime<Utc>>,
    pub declared_size: Option<i64>,
}

impl From<EntrySource> for super::NewZipEntry {
    fn from(entry: EntrySource) -> Self {
        Self {
            url: entry.url,
            filename: entry.filename,
            given_filename: entry.given_filename,
            modified_at: entry.modified_at,
            declared_size: entry.declared_size,
        }
    }
}

/// What happened to one entry of a job.
#[derive(Debug, Clone)]
pub struct EntryOutcome {
    pub index: i32,
    pub state: EntryState,
    pub size: Option<i64>,
    pub crc32: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Where an entry's bytes sit in the archive being built: its local header (where, and what
/// it says: method, ZIP64) and, once its last byte is out, where that ends. With the end, a
/// worker taking the job over can keep the entry without its source; with only the start, pick
/// its source up where the uploaded parts end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPlacement {
    pub index: i32,
    pub offset: i64,
    pub deflated: bool,
    pub zip64: bool,
    /// The source's strong ETag or Last-Modified as it first answered, recorded with the start:
    /// a continued download sends it as `If-Range`.
    pub source_validator: Option<String>,
    /// The time in the entry's headers (absent on entries placed before it was kept, which all
    /// carry the job's creation time).
    pub entry_time: Option<DateTime<Utc>>,
    pub end: Option<PlacedEnd>,
}

/// The end of an entry's bytes, its compressed size, and the CRC-32
/// of the archive up to that end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedEnd {
    pub end: i64,
    pub compressed_size: i64,
    pub archive_crc32: u32,
}

/// An entry as a worker taking the job over finds it: its outcome and, once its bytes are in
/// the archive, their placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEntry {
    pub index: i32,
    pub filename: EntryName,
    pub state: EntryState,
    pub size: Option<i64>,
    pub crc32: Option<i64>,
    pub placement: Option<EntryPlacement>,
}

impl Zip {
    pub async fn entries(conn: &mut AsyncPgConnection, id: ZipId) -> QueryResult<Vec<ZipEntry>> {
        zip_entries::table
            .filter(zip_entries::zip_id.eq(id))
            .order(zip_entries::entry_index.asc())
            .select(ZipEntry::as_select())
            .load(conn)
            .await
    }

    /// The job's first `limit` entries, by index (a page that shows some of a job's entries
    /// never loads a million).
    pub async fn first_entries(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        limit: i64,
    ) -> QueryResult<Vec<ZipEntry>> {
        zip_entries::table
            .filter(zip_entries::zip_id.eq(id))
            .order(zip_entries::entry_index.asc())
            .limit(limit)
            .select(ZipEntry::as_select())
            .load(conn)
            .await
    }

    /// Up to `limit` entries' sources after `after` (an entry index), in order: a job of a
    /// million entries is read a page at a time, never as a million full rows at once.
    pub async fn entry_sources(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        after: i32,
        limit: i64,
    ) -> QueryResult<Vec<EntrySource>> {
        zip_entries::table
            .filter(zip_entries::zip_id.eq(id))
            .filter(zip_entries::entry_index.gt(after))
            .order(zip_entries::entry_index.asc())
            .limit(limit)
            .select(EntrySource::as_select())
            .load(conn)
            .await
    }

    /// Entries left out by `on_error: skip`, for the jobs given: how many each has, and its
    /// first `SKIPPED_LISTED` in order (a job of a million entries may skip most of them).
    pub async fn skipped_entries(
        conn: &mut AsyncPgConnection,
        ids: &[ZipId],
    ) -> QueryResult<HashMap<ZipId, SkippedEntries>> {
        let counts: Vec<(ZipId, i64)> = zip_entries::table
            .filter(zip_entries::zip_id.eq_any(ids))
            .filter(zip_entries::state.eq(EntryState::Skipped))
            .group_by(zip_entries::zip_id)
            .select((zip_entries::zip_id, diesel::dsl::count_star()))
            .load(conn)
            .await?;
        let mut skipped = HashMap::with_capacity(counts.len());
        for (id, count) in counts {
            let first = Self::skipped_page(conn, id, -1, SKIPPED_LISTED).await?;
            skipped.insert(id, SkippedEntries { count, first });
        }
        Ok(skipped)
    }

    /// Up to `limit` of a job's skipped entries after entry index `after`, in order.
    pub async fn skipped_page(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        after: i32,
        limit: i64,
    ) -> QueryResult<Vec<ZipEntry>> {
        zip_entries::table
            .filter(zip_entries::zip_id.eq(id))
            .filter(zip_entries::state.eq(EntryState::Skipped))
            .filter(zip_entries::entry_index.gt(after))
            .order(zip_entries::entry_index.asc())
            .limit(limit)
            .select(ZipEntry::as_select())
            .load(conn)
            .await
    }

    /// Records what happened to many entries of a job in one statement (a job of 70,000 small
    /// files must not cost 70,000 round trips).
    pub async fn record_entries(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        outcomes: &[EntryOutcome],
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
        if outcomes.is_empty() {
            return Ok(());
        }
        // Raw SQL: an UPDATE from unnest()ed arrays, which the query builder cannot express.
        diesel::sql_query(
            "UPDATE zip_entries e SET state = v.state, size = v.size, crc32 = v.crc32, \
             error_code = v.error_code, error_message = v.error_message \
             FROM unnest($2::int4[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[]) \
               AS v(entry_index, state, size, crc32, error_code, error_message) \
             WHERE e.zip_id = $1 AND e.entry_index = v.entry_index",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<Array<Integer>, _>(outcomes.iter().map(|o| o.index).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            outcomes
                .iter()
                .map(|o| o.state.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<BigInt>>, _>(outcomes.iter().map(|o| o.size).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(outcomes.iter().map(|o| o.crc32).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            outcomes
                .iter()
                .map(|o| o.error_code.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            outcomes
                .iter()
                .map(|o| o.error_message.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(conn)
        .await
        .map(drop)
    }

    /// Records where entries' bytes went in the archive, many in one statement; only while
    /// `owner` holds the job (a worker that lost it must not overwrite what its successor
    /// records).
    pub async fn record_placements(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        placements: &[EntryPlacement],
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
        if placements.is_empty() {
            return Ok(());
        }
        let ends = |f: fn(&PlacedEnd) -> i64| -> Vec<Option<i64>> {
            placements.iter().map(|p| p.end.as_ref().map(f)).collect()
        };
        // Raw SQL: an UPDATE from unnest()ed arrays, as in `record_entries`.
        diesel::sql_query(
            "UPDATE zip_entries e SET archive_offset = v.archive_offset, deflated = v.deflated, \
               zip64 = v.zip64, archive_end = v.archive_end, \
               compressed_size = v.compressed_size, archive_crc32 = v.archive_crc32, \
               source_validator = CASE WHEN v.archive_end IS NULL THEN v.source_validator \
                                       ELSE e.source_validator END, \
               entry_time = v.entry_time \
             FROM unnest($3::int4[], $4::int8[], $5::bool[], $6::bool[], $7::int8[], $8::int8[], \
                         $9::int8[], $10::text[], $11::timestamptz[]) \
               AS v(entry_index, archive_offset, deflated, zip64, archive_end, compressed_size, \
                    archive_crc32, source_validator, entry_time) \
             WHERE e.zip_id = $1 AND e.entry_index = v.entry_index \
               AND EXISTS (SELECT 1 FROM zips z WHERE z.id = $1 AND z.lease_owner = $2)",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<Text, _>(owner)
        .bind::<Array<Integer>, _>(placements.iter().map(|p| p.index).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(placements.iter().map(|p| p.offset).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(placements.iter().map(|p| p.deflated).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(placements.iter().map(|p| p.zip64).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(ends(|e| e.end))
        .bind::<Array<Nullable<BigInt>>, _>(ends(|e| e.compressed_size))
        .bind::<Array<Nullable<BigInt>>, _>(ends(|e| i64::from(e.archive_crc32)))
        .bind::<Array<Nullable<Text>>, _>(
            placements
                .iter()
                .map(|p| p.source_validator.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Timestamptz>>, _>(
            placements.iter().map(|p| p.entry_time).collect::<Vec<_>>(),
        )
        .execute(conn)
        .await
        .map(drop)
    }

    /// Forgets every entry's placement: a build that starts from byte zero places them anew,
    /// and none of an earlier build's may be taken for its own.
    pub async fn clear_placements(conn: &mut AsyncPgConnection, id: ZipId) -> QueryResult<()> {
        diesel::update(zip_entries::table)
            .filter(zip_entries::zip_id.eq(id))
            .filter(zip_entries::archive_offset.is_not_null())
            .set((
                zip_entries::archive_offset.eq(None::<i64>),
                zip_entries::deflated.eq(None::<bool>),
                zip_entries::zip64.eq(None::<bool>),
                zip_entries::source_validator.eq(None::<String>),
                zip_entries::entry_time.eq(None::<DateTime<Utc>>),
                zip_entries::archive_end.eq(None::<i64>),
                zip_entries::compressed_size.eq(None::<i64>),
                zip_entries::archive_crc32.eq(None::<i64>),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Up to `limit` of the job's entries after entry `after`, as recorded so far, by index: what
    /// a worker taking it over needs, a page at a time.
    pub async fn recorded_entries(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        after: i32,
        limit: i64,
    ) -> QueryResult<Vec<RecordedEntry>> {
        type Row = (
            (i32, EntryName, EntryState, Option<i64>, Option<i64>),
            (
                Option<i64>,
                Option<bool>,
                Option<bool>,
                Option<String>,
                Option<DateTime<Utc>>,
            ),
            (Option<i64>, Option<i64>, Option<i64>),
        );
        let rows: Vec<Row> = zip_entries::table
            .filter(zip_entries::zip_id.eq(id))
            .filter(zip_entries::entry_index.gt(after))
            .order(zip_entries::entry_index.asc())
            .limit(limit)
            .select((
                (
                    zip_entries::entry_index,
                    zip_entries::filename,
                    zip_entries::state,
                    zip_entries::size,
                    zip_entries::crc32,
                ),
                (
                    zip_entries::archive_offset,
                    zip_entries::deflated,
                    zip_entries::zip64,
                    zip_entries::source_validator,
                    zip_entries::entry_time,
                ),
                (
                    zip_entries::archive_end,
                    zip_entries::compressed_size,
                    zip_entries::archive_crc32,
                ),
            ))
            .load(conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |((index, filename, state, size, crc32), start, (end, compressed, archive))| {
                    let end = match (end, compressed, archive.map(u32::try_from)) {
                        (Some(end), Some(compressed_size), Some(Ok(archive_crc32))) => {
                            Some(PlacedEnd {
                                end,
                                compressed_size,
                                archive_crc32,
                            })
                        }
                        _ => None,
                    };
                    let placement = match start {
                        (
                            Some(offset),
                            Some(deflated),
                            Some(zip64),
                            source_validator,
                            entry_time,
                        ) => Some(EntryPlacement {
                            index,
                            offset,
                            deflated,
                            zip64,
                            source_validator,
                            entry_time,
                            end,
                        }),
                        _ => None,
                    };
                    RecordedEntry {
                        index,
                        filename,
                        state,
                        size,
                        crc32,
                        placement,
                    }
                },
            )
            .collect())
    }
}
