//! `POST /v1/zips` with `"dry_run": true`: the archive a job of the request would build, without
//! creating the job. Every source is asked for its first bytes (`zipkit_sources::probe`, through
//! the egress policy like a download), which give its length and, for `auto`, how it is stored;
//! the layout is `zipkit_zip`'s, the one the worker writes, so the size is exact when every entry
//! is stored and a bound when any is deflated.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zipkit_domain::{OnError, Service};
use zipkit_egress::EgressPolicy;
use zipkit_zip::layout::{PlannedEntry, layout};
use zipkit_zip::method::{HEAD_BYTES, method_for};
use zipkit_zip::parts::PartPlan;

use crate::zips::request::ValidZip;

/// Sources asked at once.
const PROBES_AT_ONCE: usize = 16;

/// What the API reads of `[worker]`: the parts and limits of the archive a worker would build,
/// and how long it waits for a source. Both processes must be given the same values (the chart
/// gives every process the same settings).
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerPlanSettings {
    pub part_size_mib: u32,
    pub max_source_bytes: u64,
    pub max_archive_bytes: u64,
    pub source_connect_timeout_secs: u64,
    pub source_read_timeout_secs: u64,
}

impl WorkerPlanSettings {
    /// The checks the worker makes of the same keys, so that both refuse to start on them.
    pub fn validate(&self) -> Result<(), String> {
        let range = zipkit_zip::parts::PART_MIB_RANGE;
        if !range.contains(&self.part_size_mib) {
            return Err(format!(
                "worker.part_size_mib must be between {} (S3's smallest part) and {} (its largest) (it is {})",
                range.start(),
                range.end(),
                self.part_size_mib
            ));
        }
        Ok(())
    }
}

/// Asks sources what a dry run needs; one per API process.
#[derive(Debug, Clone)]
pub struct DryRunner {
    client: reqwest::Client,
    egress: EgressPolicy,
    plan: WorkerPlanSettings,
}

/// The archive a job of the request would build.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRun {
    /// Always `dry_run`.
    #[schema(example = "dry_run")]
    pub object: &'static str,
    /// The archive's size in bytes: exact when `size_exact`, else the most it can be (an entry
    /// is deflated). `null` when a source gives no length and the request declares no `size`.
    pub size: Option<u64>,
    pub size_exact: bool,
    /// Whether the archive has ZIP64 records (with a bound: may have).
    pub zip64: bool,
    /// Entries the archive would hold (sources that would be skipped are not counted).
    pub entries: u64,
    /// The size of the upload's parts, and how many (1: a single PutObject); `null` with `size`.
    pub part_size: Option<u64>,
    pub parts: Option<u64>,
    /// Each source that would be left out (`on_error: skip`) or fail the job, in request order.
    pub problems: Vec<Problem>,
    /// How the job would fail, if it would.
    pub failure: Option<Failure>,
}

/// A source that would not go into the archive.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    pub index: usize,
    pub url: String,
    pub filename: String,
    /// The code the job would report (`source_not_found`, `source_forbidden`, …).
    pub code: String,
    pub message: String,
    /// The source may answer differently later (a 5xx, 429, a timeout): the job retries these.
    pub transient: bool,
    /// `skipped` (`on_error: skip`) or `fails_job`.
    pub outcome: &'static str,
}

/// The job's failure a dry run foresees.
#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    pub code: String,
    pub message: String,
    /// The url item at fault, as `urls[i]`, if one is.
    pub param: Option<String>,
}

impl Failure {
    /// A job failure's code (docs/JOBS.md), not one of the API's own error codes.
    fn of(code: &str, message: String, param: Option<String>) -> Self {
        Self {
            code: code.to_owned(),
            message,
            param,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunResponse {
    pub data: DryRun,
}

/// One source as the dry run found it.
struct Found {
    length: Option<u64>,
    head: Vec<u8>,
}

impl DryRunner {
    pub fn new(egress: EgressPolicy, plan: WorkerPlanSettings) -> Self {
        let client = zipkit_sources::client(
            std::time::Duration::from_secs(plan.source_connect_timeout_secs),
            std::time::Duration::from_secs(plan.source_read_timeout_secs),
            PROBES_AT_ONCE,
            &egress,
        );
        Self {
            client,
            egress,
            plan,
        }
    }

    pub async fn run(&self, zip: &ValidZip, service: Service) -> DryRun {
        let found: Vec<Result<Found, zipkit_sources::SourceError>> =
            futures_util::stream::iter(&zip.entries)
                .map(|entry| self.ask(entry.url.web_url(), entry.declared_size))
                .buffered(PROBES_AT_ONCE)
                .collect()
                .await;
        let skipping = zip.on_error == OnError::Skip;
        let (mut problems, mut failure) = (Vec::new(), None);
        let mut planned = Vec::with_capacity(found.len());
        let mut unknown_length = false;
        let mut total_source_bytes = 0u64;
        for (index, (entry, found)) in zip.entries.iter().zip(found).enumerate() {
            match found {
                Ok(found) => {
                    let method = method_for(zip.compression, entry.filename.as_str(), &found.head);
                    match found.length {
                        Some(length) => {
                            total_source_bytes = total_source_bytes.saturating_add(length);
                            planned.push(PlannedEntry {
                                name: entry.filename.as_str(),
                                method,
                                length,
                            });
                        }
                        None => unknown_length = true,
                    }
                }
                Err(error) => {
                    let outcome = if skipping { "skipped" } else { "fails_job" };
                    if !skipping && failure.is_none() {
                        failure = Some(Failure::of(
                            error.code,
                            format!("urls[{index}]: {}", error.message),
                            Some(format!("urls[{index}]")),
                        ));
                    }
                    problems.push(Problem {
                        index,
                        url: entry.url.to_string(),
                        filename: entry.filename.to_string(),
                        code: error.code.into(),
                        message: error.message.clone(),
                        transient: error.transient,
                        outcome,
                    });
                }
            }
        }
        let included = zip.entries.len() - problems.len();
        if failure.is_none() && included == 0 {
            failure = Some(Failure::of(
                "all_sources_skipped",
                "every source would fail and be skipped (on_error: skip), so no archive would be written".into(),
                None,
            ));
        }
        if failure.is_none() && total_source_bytes > self.plan.max_archive_bytes {
            failure = Some(Failure::of(
                "archive_too_large",
                format!(
                    "the sources add up to more than this deployment's limit of {} bytes",
                    self.plan.max_archive_bytes
                ),
                None,
            ));
        }
        let laid_out = (!unknown_length).then(|| layout(planned.iter().copied()));
        let parts = laid_out.map(|l| self.parts(l.size, service));
        DryRun {
            object: "dry_run",
            size: laid_out.map(|l| l.size),
            size_exact: laid_out.is_some_and(|l| l.exact),
            zip64: laid_out.is_none_or(|l| l.zip64),
            entries: included as u64,
            part_size: parts.map(|(size, _)| size),
            parts: parts.map(|(_, count)| count),
            problems,
            failure,
        }
    }

    /// A source's length and first bytes, with the checks a download makes on them.
    async fn ask(
        &self,
        url: Option<url::Url>,
        declared: Option<i64>,
    ) -> Result<Found, zipkit_sources::SourceError> {
        use zipkit_sources::SourceError;
        // The create request refuses a dry run of bucket sources before it gets here.
        let url = url.ok_or_else(|| {
            SourceError::permanent(
                "dry_run_unsupported",
                "a dry run fetches only http(s) sources",
            )
        })?;
        // However a source dawdles, a dry run answers within a connection and a read.
        let deadline = std::time::Duration::from_secs(
            self.plan.source_connect_timeout_secs + self.plan.source_read_timeout_secs,
        );
        let probe = zipkit_sources::probe(&self.client, &url, &self.egress, HEAD_BYTES);
        let probed = tokio::time::timeout(deadline, probe).await.map_err(|_| {
            SourceError::transient(
                "source_unreachable",
                "the source could not be reached (timed out)",
            )
        })??;
        let declared = declared.and_then(|d| u64::try_from(d).ok());
        if let (Some(announced), Some(declared)) = (probed.length, declared)
            && announced != declared
        {
            return Err(SourceError::size_mismatch(
                declared,
                &format!("announces {announced}"),
            ));
        }
        let length = probed.length.or(declared);
        if length.is_some_and(|l| l > self.plan.max_source_bytes) {
            return Err(SourceError::too_large(self.plan.max_source_bytes));
        }
        Ok(Found {
            length,
            head: probed.head,
        })
    }

    /// The part size and count an archive of `size` bytes goes up in, as the worker cuts it: a
    /// single PutObject (one part) when it fits in the first part.
    fn parts(&self, size: u64, service: Service) -> (u64, u64) {
        let plan = PartPlan::new(
            self.plan.part_size_mib as usize * 1024 * 1024,
            1,
            (service == Service::R2).then_some(self.plan.max_archive_bytes),
        );
        let first = plan.size(1) as u64;
        let (mut covered, mut count) = (0u64, 0u64);
        while covered < size.max(1) {
            count += 1;
            covered += plan.size(i32::try_from(count).unwrap_or(i32::MAX)) as u64;
        }
        (first, count)
    }
}
