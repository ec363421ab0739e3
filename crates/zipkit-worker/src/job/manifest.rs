//! A job's manifest read into entries: fetched like a source (an http(s) URL through the egress
//! policy, or a bucket object through a GET presigned with its bucket's keys), split into lines
//! as its bytes arrive, each line checked by the rules of an item of `urls` and written in
//! batches by the listing's writer. What it holds is one chunk, one line and one batch, however
//! long the manifest.

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use zipkit_domain::models::{ManifestFormat, NewZipEntry};
use zipkit_domain::values::{
    EntryName, SourceItem, SourceLocation, SourceUrl, parse_declared_size, parse_entry_time,
};

use super::JobContext;
use super::entry_writer::{Failed, Writer};
use crate::download;
use crate::failure::{Blame, JobFailure, Retry};
use crate::source_buckets::SourceBuckets;

/// The longest line a manifest may have (a URL of 4 KiB, a name of 1 KiB and room to spare).
const MAX_LINE_BYTES: usize = 64 * 1024;

/// How long a presigned GET of a manifest in a bucket lives: reading it takes minutes at most.
const LINK_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Reads the manifest `url` into entries written by `out`.
pub(super) async fn read(
    ctx: &JobContext,
    out: &mut Writer,
    (url, format, max): (&SourceUrl, ManifestFormat, i32),
    buckets: &SourceBuckets,
) -> Result<(), Failed> {
    let unreachable = |e: download::SourceError| {
        let retry = if e.transient {
            Retry::Later
        } else {
            Retry::Never
        };
        JobFailure::new(
            e.code,
            format!("manifest: {}", e.message),
            Blame::Request,
            retry,
        )
        .with_param("manifest")
    };
    let request_url = match url.location() {
        SourceLocation::Web(web) => web,
        SourceLocation::Bucket { bucket, key } => buckets
            .link(bucket, key, LINK_TTL)
            .await
            .map_err(unreachable)?,
    };
    let response =
        download::fetch_with_retries(&ctx.http, &request_url, &ctx.downloads.egress, None)
            .await
            .map_err(unreachable)?;
    let mut body = response.bytes_stream();
    let mut lines = Lines {
        format,
        columns: None,
        number: 0,
        entries: 0,
        max: usize::try_from(max).unwrap_or(usize::MAX),
    };
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            JobFailure::new(
                "manifest_unreachable",
                format!("manifest: the connection broke while reading it ({e})"),
                Blame::Request,
                Retry::Later,
            )
            .with_param("manifest")
        })?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + end];
            if let Some(entry) = lines.entry(line)? {
                out.push(entry, Some(format!("manifest:{}", lines.number)))
                    .await?;
            }
            start += end + 1;
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE_BYTES {
            return Err(lines
                .refused(lines.number + 1, "is longer than 64 KiB")
                .into());
        }
    }
    if let Some(entry) = lines.entry(&pending)? {
        let at = format!("manifest:{}", lines.number);
        out.push(entry, Some(at)).await?;
    }
    if lines.entries == 0 {
        return Err(JobFailure::new(
            "manifest_empty",
            "the manifest lists no source",
            Blame::Request,
            Retry::Never,
        )
        .with_param("manifest")
        .into());
    }
    Ok(())
}

/// A manifest's lines as they come, numbered from 1.
struct Lines {
    format: ManifestFormat,
    /// A CSV manifest's header: which column holds which field.
    columns: Option<Vec<Column>>,
    number: usize,
    entries: usize,
    max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Url,
    Filename,
    ModifiedAt,
    Size,
}

/// A line of a JSON Lines manifest: an item of `urls`, without a prefix's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    url: String,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    modified_at: Option<String>,
    #[serde(default)]
    size: Option<Value>,
}

impl Lines {
    fn refused(&self, number: usize, why: &str) -> JobFailure {
        JobFailure::new(
            "manifest_line_invalid",
            format!("manifest line {number} {why}"),
            Blame::Request,
            Retry::Never,
        )
        .with_param(format!("manifest:{number}"))
    }

    /// The entry of one line; `None` for a blank line or a CSV header.
    fn entry(&mut self, line: &[u8]) -> Result<Option<NewZipEntry>, JobFailure> {
        self.number += 1;
        let n = self.number;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|_| self.refused(n, "is not UTF-8"))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Ok(None);
        }
        let item = match self.format {
            ManifestFormat::JsonLines => serde_json::from_str::<Item>(text)
                .map_err(|e| self.refused(n, &format!("is not a source item ({e})")))?,
            ManifestFormat::Csv => match self.csv_item(n, text)? {
                Some(item) => item,
                None => return Ok(None),
            },
        };
        if self.entries >= self.max {
            return Err(JobFailure::new(
                "manifest_too_large",
                format!(
                    "the manifest lists more than {} sources (api.max_manifest_entries)",
                    self.max
                ),
                Blame::Request,
                Retry::Never,
            )
            .with_param(format!("manifest:{n}")));
        }
        let entry = self.check(n, item)?;
        self.entries += 1;
        Ok(Some(entry))
    }

    /// A CSV line: the header (first), or an item by its columns.
    fn csv_item(&mut self, n: usize, text: &str) -> Result<Option<Item>, JobFailure> {
        // A buffer the line's size: the default 8 KiB a line would be allocated a million times.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .buffer_capacity(text.len().max(64))
            .from_reader(text.as_bytes());
        let record = reader
            .records()
            .next()
            .transpose()
            .map_err(|e| self.refused(n, &format!("is not a CSV line ({e})")))?
            .unwrap_or_default();
        let Some(columns) = &self.columns else {
            let mut columns = Vec::with_capacity(record.len());
            for name in &record {
                columns.push(match name.trim() {
                    "url" => Column::Url,
                    "filename" => Column::Filename,
                    "modified_at" => Column::ModifiedAt,
                    "size" => Column::Size,
                    other => {
                        return Err(self.refused(
                            n,
                            &format!(
                                "names a column `{other}`; the header names `url` and any of \
                                 `filename`, `modified_at`, `size`"
                            ),
                        ));
                    }
                });
            }
            if !columns.contains(&Column::Url) {
                return Err(self.refused(n, "(the header) names no `url` column"));
            }
            self.columns = Some(columns);
            return Ok(None);
        };
        if record.len() != columns.len() {
            return Err(self.refused(
                n,
                &format!(
                    "has {} fields; the header names {}",
                    record.len(),
                    columns.len()
                ),
            ));
        }
        let mut item = Item {
            url: String::new(),
            filename: None,
            modified_at: None,
            size: None,
        };
        for (column, field) in columns.iter().zip(&record) {
            let given = (!field.is_empty()).then(|| field.to_owned());
            match column {
                Column::Url => item.url = field.to_owned(),
                Column::Filename => item.filename = given,
                Column::ModifiedAt => item.modified_at = given,
                Column::Size => {
                    item.size = given.map(|s| serde_json::from_str(&s).unwrap_or(Value::String(s)));
                }
            }
        }
        Ok(Some(item))
    }

    /// The rules of an item of `urls`, applied to a line.
    fn check(&self, n: usize, item: Item) -> Result<NewZipEntry, JobFailure> {
        let (url, default_name) = match SourceItem::parse(&item.url)
            .map_err(|why| self.refused(n, &format!("has a `url` that {why}")))?
        {
            SourceItem::Web(url) => (url, None),
            SourceItem::Object { url, name, .. } => (url, Some(name)),
            SourceItem::Prefix { .. } => {
                return Err(self.refused(n, "names a prefix; a line names one source"));
            }
        };
        let name = item
            .filename
            .or(default_name)
            .ok_or_else(|| self.refused(n, "has no `filename`"))?;
        let filename = EntryName::parse(&name)
            .map_err(|e| self.refused(n, &format!("has a `filename` that {e}")))?;
        if let Some(problem) = filename.windows_problem() {
            return Err(self.refused(n, &format!("has a `filename` ({filename}) that {problem}")));
        }
        let modified_at = item
            .modified_at
            .map(|t| parse_entry_time(&t))
            .transpose()
            .map_err(|why| self.refused(n, &format!("has a `modified_at` that {why}")))?;
        let declared_size = match item.size {
            None | Some(Value::Null) => None,
            Some(size) => Some(parse_declared_size(&size).ok_or_else(|| {
                self.refused(n, "has a `size` that is not a whole number of bytes")
            })?),
        };
        Ok(NewZipEntry {
            url,
            filename,
            given_filename: None,
            modified_at,
            declared_size,
        })
    }
}
