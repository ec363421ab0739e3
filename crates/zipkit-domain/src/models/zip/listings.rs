//! A job's prefixes in the project's buckets (`s3://<bucket>/<prefix>/`), kept until a worker
//! lists them. Listing turns each into one entry per object found, at the prefix's place among
//! the job's sources; the job's other entries wait at their item's index meanwhile, and are
//! renumbered into archive order when the listing is written.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::ids::ZipId;
use crate::schema::{zip_entries, zip_listings};
use crate::values::{BucketName, SourceUrl};

use super::{NewZipEntry, Zip};

/// A prefix to list for a new job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewListing {
    /// The item's place among the request's `urls`.
    pub item_index: i32,
    pub bucket: BucketName,
    /// Every object whose key starts with this; empty for the whole bucket.
    pub prefix: String,
    /// Glob patterns on the key below the prefix: an object is taken when it matches one of
    /// `include` (or `include` is empty) and none of `exclude`.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The folder in the archive the objects go under (empty, or ending in `/`).
    pub path: String,
}

/// A manifest to read for a new job: its entries, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewManifest {
    /// Where it is: an http(s) URL, or an object of the project's bucket.
    pub url: SourceUrl,
    pub format: ManifestFormat,
    /// The most lines it may give (the deployment's `api.max_manifest_entries`).
    pub max_entries: i32,
}

/// How a manifest's lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// One JSON object a line: `{"url": …, "filename": …, "modified_at": …, "size": …}`.
    JsonLines,
    /// A header line naming the columns (`url`, `filename`, `modified_at`, `size`), then a
    /// source a line.
    Csv,
}

impl ManifestFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JsonLines => "jsonl",
            Self::Csv => "csv",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "jsonl" => Some(Self::JsonLines),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// A prefix or a manifest as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = zip_listings, check_for_backend(diesel::pg::Pg))]
pub struct ZipListing {
    pub zip_id: ZipId,
    pub item_index: i32,
    /// The bucket listed, or the manifest's bucket (empty for an http(s) manifest).
    pub bucket: BucketName,
    pub prefix: String,
    pub include: Vec<Option<String>>,
    pub exclude: Vec<Option<String>>,
    pub path: String,
    pub manifest: Option<SourceUrl>,
    pub manifest_format: Option<String>,
    pub max_entries: Option<i32>,
}

impl ZipListing {
    /// The manifest this row stands for, if it is one.
    pub fn manifest(&self) -> Option<(&SourceUrl, ManifestFormat, i32)> {
        let format = self
            .manifest_format
            .as_deref()
            .and_then(ManifestFormat::parse)
            .unwrap_or(ManifestFormat::JsonLines);
        let url = self.manifest.as_ref()?;
        Some((url, format, self.max_entries.unwrap_or(i32::MAX)))
    }
}

// Postgres allows 65,535 bind parameters per statement; an entry row takes seven.
const ENTRY_INSERT_CHUNK: usize = 9_000;

impl Zip {
    /// The job's prefixes still to list, in request order (none once listed).
    pub async fn listings(conn: &mut AsyncPgConnection, id: ZipId) -> QueryResult<Vec<ZipListing>> {
        zip_listings::table
            .filter(zip_listings::zip_id.eq(id))
            .order(zip_listings::item_index.asc())
            .select(ZipListing::as_select())
            .load(conn)
            .await
    }
}

/// Writes each entry at its index, in statements of at most `ENTRY_INSERT_CHUNK` rows.
pub(super) async fn insert_numbered(
    conn: &mut AsyncPgConnection,
    id: ZipId,
    entries: impl Iterator<Item = (i32, &NewZipEntry)>,
) -> QueryResult<()> {
    let rows: Vec<_> = entries
        .map(|(index, entry)| {
            (
                zip_entries::zip_id.eq(id),
                zip_entries::entry_index.eq(index),
                zip_entries::url.eq(entry.url.as_str()),
                zip_entries::filename.eq(entry.filename.as_str()),
                zip_entries::given_filename.eq(entry.given_filename.as_deref()),
                zip_entries::modified_at.eq(entry.modified_at),
                zip_entries::declared_size.eq(entry.declared_size),
            )
        })
        .collect();
    for chunk in rows.chunks(ENTRY_INSERT_CHUNK) {
        diesel::insert_into(zip_entries::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Stores a new job's manifest (inside its create transaction), as its only item.
pub(super) async fn insert_manifest(
    conn: &mut AsyncPgConnection,
    id: ZipId,
    manifest: &NewManifest,
) -> QueryResult<()> {
    let bucket = match manifest.url.location() {
        crate::values::SourceLocation::Bucket { bucket, .. } => bucket.to_owned(),
        crate::values::SourceLocation::Web(_) => String::new(),
    };
    diesel::insert_into(zip_listings::table)
        .values((
            zip_listings::zip_id.eq(id),
            zip_listings::item_index.eq(0),
            zip_listings::bucket.eq(bucket),
            zip_listings::prefix.eq(""),
            zip_listings::manifest.eq(manifest.url.as_str()),
            zip_listings::manifest_format.eq(manifest.format.as_str()),
            zip_listings::max_entries.eq(manifest.max_entries),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Stores a new job's prefixes (inside its create transaction).
pub(super) async fn insert_listings(
    conn: &mut AsyncPgConnection,
    id: ZipId,
    listings: &[NewListing],
) -> QueryResult<()> {
    if listings.is_empty() {
        return Ok(());
    }
    let texts = |list: &[String]| list.iter().map(|s| Some(s.clone())).collect::<Vec<_>>();
    let rows: Vec<_> = listings
        .iter()
        .map(|l| {
            (
                zip_listings::zip_id.eq(id),
                zip_listings::item_index.eq(l.item_index),
                zip_listings::bucket.eq(l.bucket.as_str()),
                zip_listings::prefix.eq(&l.prefix),
                zip_listings::include.eq(texts(&l.include)),
                zip_listings::exclude.eq(texts(&l.exclude)),
                zip_listings::path.eq(&l.path),
            )
        })
        .collect();
    diesel::insert_into(zip_listings::table)
        .values(rows)
        .execute(conn)
        .await
        .map(drop)
}
