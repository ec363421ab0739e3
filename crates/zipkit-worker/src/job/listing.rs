//! A job's prefixes listed (and its manifest read, `manifest.rs`) into entries, before its first
//! build: the store's pages are read one at a time, each object kept by the item's globs becomes
//! an entry (its name the item's `path` and the key below the prefix, its size and time the
//! store's), written in batches at the prefix's place among the job's sources. All of it is one
//! transaction: a worker that dies while listing leaves the job as it was, and the next one lists
//! again. What the listing holds in memory is one page, one batch, and 8 bytes per name (to find
//! two that would extract to the same file), however many objects the prefix has.

use zipkit_domain::Service;
use zipkit_domain::models::{EntryLoad, NewZipEntry, Zip, ZipListing};
use zipkit_domain::values::{EntryName, KeyFilter, SourceUrl};

use super::JobContext;
use super::entry_writer::{Failed, Writer};
use crate::failure::{Blame, JobFailure, Retry};
use crate::source_buckets::SourceBuckets;

/// Lists the job's prefixes and reads its manifest, if it has any left, into its entries; adds
/// the buckets it read to `buckets`.
pub async fn list_prefixes(
    ctx: &JobContext,
    zip: &Zip,
    service: Service,
    buckets: &mut SourceBuckets,
) -> Result<(), JobFailure> {
    let mut conn = ctx.pool.get().await.map_err(JobFailure::database)?;
    let listings = Zip::listings(&mut conn, zip.id)
        .await
        .map_err(JobFailure::database)?;
    if listings.is_empty() {
        return Ok(());
    }
    // An http(s) manifest reads no bucket.
    let names: Vec<String> = listings
        .iter()
        .map(|l| l.bucket.to_string())
        .filter(|name| !name.is_empty())
        .collect();
    let names = names.iter().map(String::as_str);
    buckets
        .add(&mut conn, (&ctx.keyring, &ctx.buckets), zip, service, names)
        .await?;
    drop(conn);
    let listed = write_listing(ctx, zip, &listings, buckets).await;
    match listed {
        Ok(total) => {
            tracing::info!(zip.id = %zip.id, entries = total, "sources listed");
            Ok(())
        }
        Err(Failed::Database(e)) => Err(JobFailure::database(e)),
        Err(Failed::Job(failure)) => Err(failure),
    }
}

/// The entries in archive order: the waiting ones at their items, each prefix's objects at its,
/// in one transaction.
async fn write_listing(
    ctx: &JobContext,
    zip: &Zip,
    listings: &[ZipListing],
    buckets: &SourceBuckets,
) -> Result<usize, Failed> {
    let mut load = EntryLoad::begin(&ctx.database, zip.id).await?;
    let waiting = load.take_waiting().await?;
    let mut out = Writer::new(load, &waiting);
    let mut waiting = waiting.into_iter().peekable();
    for listing in listings {
        while let Some(entry) = waiting.next_if(|e| e.entry_index < listing.item_index) {
            out.push(entry.into(), None).await?;
        }
        if let Some(manifest) = listing.manifest() {
            super::manifest::read(ctx, &mut out, manifest, buckets).await?;
            continue;
        }
        let before = out.total();
        list_one(&mut out, listing, buckets).await?;
        if out.total() == before {
            return Err(request_failure(
                "source_prefix_empty",
                listing,
                format!(
                    "no object under s3://{}/{} was taken (none there, or none matched `include` \
                     and `exclude`)",
                    listing.bucket, listing.prefix
                ),
            )
            .into());
        }
    }
    for entry in waiting {
        out.push(entry.into(), None).await?;
    }
    out.commit().await
}

/// One prefix, page by page.
async fn list_one(
    out: &mut Writer,
    listing: &ZipListing,
    buckets: &SourceBuckets,
) -> Result<(), Failed> {
    let patterns = |list: &[Option<String>]| list.iter().flatten().cloned().collect::<Vec<_>>();
    let filter = KeyFilter::new(&patterns(&listing.include), &patterns(&listing.exclude))
        .map_err(|e| request_failure("pattern_invalid", listing, e.to_string()))?;
    let bucket = buckets
        .get(listing.bucket.as_str())
        .ok_or_else(|| JobFailure::internal("a listed bucket was not loaded"))?;
    let mut after = None;
    loop {
        let (objects, next) = zipkit_storage::list_page(
            &bucket.client,
            &bucket.location,
            &listing.prefix,
            after.take(),
        )
        .await
        .map_err(|refusal| {
            let denied = refusal.provider_code.as_deref() == Some("AccessDenied");
            let message = if denied {
                format!(
                    "the keys of bucket `{}` may not list it: their policy must allow \
                     s3:ListBucket (and s3:GetObject to read the objects)",
                    listing.bucket
                )
            } else {
                format!(
                    "listing s3://{}/{}: {}",
                    listing.bucket, listing.prefix, refusal.why
                )
            };
            let retry = Retry::from(refusal.retry());
            let blame = if retry == Retry::Never {
                Blame::Request
            } else {
                Blame::Service
            };
            JobFailure::new("source_listing_failed", message, blame, retry)
                .with_param(format!("urls[{}].url", listing.item_index))
        })?;
        for object in objects {
            // Folder markers (`photos/2026/`, zero bytes) are not files.
            if object.key.ends_with('/') {
                continue;
            }
            let below = object.key.get(listing.prefix.len()..).unwrap_or_default();
            if !filter.takes(below) {
                continue;
            }
            let entry = listed_entry(listing, &object)?;
            let at = format!("urls[{}].url", listing.item_index);
            out.push(entry, Some(at)).await?;
        }
        match next {
            Some(token) => after = Some(token),
            None => return Ok(()),
        }
    }
}

/// An object's entry: its name under the item's `path`, its size and time the store's.
fn listed_entry(
    listing: &ZipListing,
    object: &zipkit_storage::ListedObject,
) -> Result<NewZipEntry, JobFailure> {
    let source = format!("s3://{}/{}", listing.bucket, object.key);
    let below = &object.key[listing.prefix.len()..];
    let name = format!("{}{below}", listing.path);
    let filename = EntryName::parse(&name).map_err(|e| {
        request_failure(
            "listed_name_invalid",
            listing,
            format!("{source} cannot be a name in the archive ({name} {e})"),
        )
    })?;
    if let Some(problem) = filename.windows_problem() {
        return Err(request_failure(
            "listed_name_not_windows_safe",
            listing,
            format!("{source} would be {name} in the archive, which {problem}"),
        ));
    }
    let url = SourceUrl::bucket_object(&listing.bucket, &object.key)
        .map_err(|e| request_failure("listed_name_invalid", listing, format!("{source} {e}")))?;
    Ok(NewZipEntry {
        url,
        filename,
        given_filename: None,
        modified_at: object.last_modified,
        declared_size: Some(object.size),
    })
}

fn request_failure(code: &'static str, listing: &ZipListing, message: String) -> JobFailure {
    JobFailure::new(code, message, Blame::Request, Retry::Never)
        .with_param(format!("urls[{}].url", listing.item_index))
}
