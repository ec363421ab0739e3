//! The upload on its own: against the local store through a proxy that counts every call and
//! answers chosen ones itself, and against recorded provider answers the store does not give.

use std::sync::Mutex;

use bytes::Bytes;
use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};
use zipkit_domain::models::{BucketCapabilities, BucketCredentials};
use zipkit_domain::{Service, ZipId};
use zipkit_storage::BucketLocation;
use zipkit_test_support::TestBucket;
use zipkit_test_support::canned_http::{CannedHttp, s3_error};
use zipkit_test_support::services::{s3_access_key, s3_secret_key};
use zipkit_test_support::store_proxy::StoreProxy;
use zipkit_worker::archive::Piece;
use zipkit_worker::failure::{JobFailure, Retry};
use zipkit_worker::memory::{BufferBudget, PartMemory};
use zipkit_worker::upload::{
    Destination, Ending, Ledger, PartPlan, Resume, StoreTimeouts, UploadError, Uploaded,
    UploadedPart, upload,
};

const MIB: usize = 1024 * 1024;

/// Keeps what the upload reports, in memory.
#[derive(Default)]
struct MemoryLedger {
    started: Mutex<Vec<String>>,
    parts: Mutex<Vec<UploadedPart>>,
    ended: Mutex<Vec<String>>,
    /// Fails recording this part (as PostgreSQL going away would).
    fail_part: Option<i32>,
}

impl Ledger for MemoryLedger {
    async fn started(&self, upload_id: &str) -> Result<(), JobFailure> {
        self.started.lock().unwrap().push(upload_id.to_owned());
        Ok(())
    }

    async fn part_uploaded(&self, _upload_id: &str, part: &UploadedPart) -> Result<(), JobFailure> {
        // Slow, as a database is: later parts keep uploading meanwhile.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if self.fail_part == Some(part.number) {
            return Err(JobFailure::internal("the database went away"));
        }
        self.parts.lock().unwrap().push(part.clone());
        Ok(())
    }

    async fn ended(&self, upload_id: &str) {
        self.ended.lock().unwrap().push(upload_id.to_owned());
    }
}

fn destination(endpoint: &str, bucket: &str, key: &str, credentials: (&str, &str)) -> Destination {
    destination_knowing(endpoint, bucket, key, credentials, None)
}

/// As `destination`, for a bucket whose test found these capabilities.
fn destination_knowing(
    endpoint: &str,
    bucket: &str,
    key: &str,
    credentials: (&str, &str),
    capabilities: Option<BucketCapabilities>,
) -> Destination {
    let location = BucketLocation {
        service: Service::S3,
        name: zipkit_domain::values::BucketName::parse(bucket).unwrap(),
        region: "us-east-1".into(),
        r2_account_id: None,
        endpoint_url: Some(endpoint.to_owned()),
        force_path_style: true,
        acl: None,
    };
    let credentials = BucketCredentials {
        access_key_id: SecretString::from(credentials.0.to_owned()),
        secret_access_key: SecretString::from(credentials.1.to_owned()),
    };
    let client = zipkit_storage::BucketClients::new(zipkit_egress::EgressPolicy::new(
        &zipkit_test_support::services::loopback_egress(),
    ))
    .client(&location, &credentials)
    .unwrap();
    Destination::new(
        client,
        location,
        capabilities,
        (
            zipkit_domain::values::ObjectKey::parse(key).unwrap(),
            Default::default(),
        ),
        ZipId::new(),
        StoreTimeouts {
            min_rate: 256 * 1024,
        },
    )
}

fn archive_bytes(len: usize) -> Bytes {
    (0..len)
        .map(|i: usize| (i % 251) as u8 ^ (i / 4099) as u8)
        .collect()
}

/// Feeds `archive` in 300,000-byte chunks, then ends the stream; `ending` is the job's word.
async fn run_upload(
    destination: &Destination,
    archive: Bytes,
    plan: PartPlan,
    ledger: &MemoryLedger,
    ending: Ending,
    resume: Option<Resume>,
) -> Result<Uploaded, UploadError> {
    let budget = BufferBudget::new(64 * MIB, 8 * MIB);
    let run = Run {
        destination,
        plan,
        ledger,
        budget: &budget,
    };
    run.upload(archive, ending, resume).await
}

/// One upload, with the worker's buffer budget it draws on.
struct Run<'a> {
    destination: &'a Destination,
    plan: PartPlan,
    ledger: &'a MemoryLedger,
    budget: &'a BufferBudget,
}

impl Run<'_> {
    async fn upload(
        &self,
        archive: Bytes,
        ending: Ending,
        resume: Option<Resume>,
    ) -> Result<Uploaded, UploadError> {
        self.upload_pieces(chunked(&archive), ending, resume).await
    }

    /// The upload of what the writer would hand it.
    async fn upload_pieces(
        &self,
        pieces: Vec<Piece>,
        ending: Ending,
        resume: Option<Resume>,
    ) -> Result<Uploaded, UploadError> {
        let (destination, plan, ledger) = (self.destination, self.plan, self.ledger);
        let memory = PartMemory::reserve(self.budget, plan.size(1)).await;
        let (chunks, rx) = mpsc::channel(4);
        let (finished, finished_rx) = oneshot::channel();
        let feeding = tokio::spawn(async move {
            for piece in pieces {
                if chunks.send(piece).await.is_err() {
                    break;
                }
            }
            drop(chunks);
            let _ = finished.send(ending);
        });
        let result = upload(destination, rx, plan, &memory, ledger, finished_rx, resume).await;
        feeding.await.unwrap();
        result
    }

    /// Resuming with `rebuilt` stops at `part`, which differs, before anything is sent or
    /// aborted.
    async fn diverges(&self, proxy: &StoreProxy, rebuilt: Bytes, resume: Resume, part: i32) {
        let calls = proxy.calls().len();
        let result = self.upload(rebuilt, Ending::Complete, Some(resume)).await;
        assert!(
            matches!(result, Err(UploadError::Diverged { part: p }) if p == part),
            "{result:?}"
        );
        assert_eq!(proxy.calls().len(), calls, "nothing sent, nothing aborted");
    }
}

/// `bytes` in 300,000-byte pieces.
fn chunked(bytes: &Bytes) -> Vec<Piece> {
    (0..bytes.len())
        .step_by(300_000)
        .map(|at| Piece::Bytes(bytes.slice(at..(at + 300_000).min(bytes.len()))))
        .collect()
}

/// `archive` as the writer hands it with an entry's header of `len` bytes at `at`: zeros first,
/// its bytes in `archive` once everything after it is out (the entry ends with the archive).
fn with_header_at(archive: &Bytes, at: usize, len: usize) -> Vec<Piece> {
    let mut pieces = chunked(&archive.slice(..at));
    pieces.push(Piece::Header(Bytes::from(vec![0u8; len])));
    pieces.extend(chunked(&archive.slice(at + len..)));
    pieces.push(Piece::Patch(archive.slice(at..at + len)));
    pieces
}

/// The order in which parts went up.
fn part_order(proxy: &StoreProxy) -> Vec<i32> {
    proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "UploadPart")
        .filter_map(|c| c.part)
        .collect()
}

fn store_destination(proxy: &StoreProxy, store: &TestBucket, key: &str) -> Destination {
    destination(
        proxy.url(),
        store.name(),
        key,
        (&s3_access_key(), &s3_secret_key()),
    )
}

#[tokio::test]
async fn with_only_a_floor_of_budget_the_upload_completes_and_the_budget_comes_back_whole() {
    // Two parts may fly at once, but the worker's budget holds one part: the job's floor. Each
    // next part's buffer can only come from the floor once the part uploading gives it back (a
    // wait on the budget itself would never end), the archive still arrives whole, and every
    // byte of the budget is free again afterwards (part buffers hold it until they are up).
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let archive = archive_bytes(3 * 5 * MIB + 4_321);
    let budget = BufferBudget::new(5 * MIB, 0);
    let ledger = MemoryLedger::default();
    let destination = store_destination(&proxy, &store, "floor.zip");
    let run = Run {
        destination: &destination,
        plan: PartPlan::new(5 * MIB, 2, None),
        ledger: &ledger,
        budget: &budget,
    };
    let uploaded = run
        .upload(archive.clone(), Ending::Complete, None)
        .await
        .unwrap();
    assert_eq!(uploaded.parts, 4);
    assert_eq!(proxy.count("UploadPart"), 4);
    assert_eq!(store.get("floor.zip").await, archive);
    assert_eq!(budget.available(), 5 * MIB);
}

#[tokio::test]
async fn every_part_is_recorded_once_while_later_parts_keep_uploading() {
    // More parts than may fly at once, and a slow ledger (parts are recorded while the next
    // ones upload): none recorded twice, none lost, and the object is the bytes sent.
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let archive = archive_bytes(6 * 5 * MIB + 12_345);
    let ledger = MemoryLedger::default();
    let uploaded = run_upload(
        &store_destination(&proxy, &store, "parts.zip"),
        archive.clone(),
        PartPlan::new(5 * MIB, 2, None),
        &ledger,
        Ending::Complete,
        None,
    )
    .await
    .unwrap();
    assert_eq!(uploaded.size as usize, archive.len());
    assert_eq!(uploaded.parts, 7);
    let mut parts = ledger.parts.lock().unwrap().clone();
    parts.sort_by_key(|p| p.number);
    let numbers: Vec<i32> = parts.iter().map(|p| p.number).collect();
    assert_eq!(numbers, (1..=7).collect::<Vec<_>>(), "each part once");
    assert!(parts.iter().all(|p| !p.etag.is_empty()));
    assert_eq!(
        parts.iter().map(|p| p.size).sum::<i64>() as usize,
        archive.len()
    );
    assert_eq!(ledger.started.lock().unwrap().len(), 1);
    assert_eq!(proxy.count("CreateMultipartUpload"), 1);
    assert_eq!(proxy.count("UploadPart"), 7, "no part sent twice");
    assert_eq!(proxy.count("CompleteMultipartUpload"), 1);
    assert_eq!(
        store.get("parts.zip").await,
        archive,
        "the object is the bytes sent"
    );
}

#[tokio::test]
async fn an_archive_that_fits_in_one_part_is_one_put_object() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let archive = archive_bytes(5 * MIB - 1);
    let ledger = MemoryLedger::default();
    let uploaded = run_upload(
        &store_destination(&proxy, &store, "small.zip"),
        archive.clone(),
        PartPlan::new(5 * MIB, 2, None),
        &ledger,
        Ending::Complete,
        None,
    )
    .await
    .unwrap();
    assert_eq!(uploaded.parts, 0);
    assert!(!uploaded.etag.is_empty());
    assert_eq!(
        proxy.operations(),
        ["PutObject"],
        "one call, no multipart upload"
    );
    assert!(ledger.started.lock().unwrap().is_empty());
    assert_eq!(store.get("small.zip").await, archive);
}

#[tokio::test]
async fn a_job_that_ends_without_its_archive_sends_nothing_more_and_aborts_the_upload() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    // One whole part and a tail that must not go up.
    let archive = archive_bytes(5 * MIB + 100_000);
    let ledger = MemoryLedger::default();
    let result = run_upload(
        &store_destination(&proxy, &store, "abandoned.zip"),
        archive,
        PartPlan::new(5 * MIB, 2, None),
        &ledger,
        Ending::Abort,
        None,
    )
    .await;
    assert!(matches!(result, Err(UploadError::Abandoned)), "{result:?}");
    let calls = proxy.calls();
    assert!(
        !calls.iter().any(|c| c.part == Some(2)),
        "the buffered tail was not sent: {calls:?}"
    );
    let operations = proxy.operations();
    assert_eq!(
        operations.last().map(String::as_str),
        Some("AbortMultipartUpload")
    );
    assert!(!operations.iter().any(|o| o == "CompleteMultipartUpload"));
    assert!(!store.has("abandoned.zip").await);
}

#[tokio::test]
async fn keys_the_bucket_test_found_unable_to_abort_are_not_asked_to() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let may_not_abort = BucketCapabilities {
        write: true,
        abort_multipart: false,
        ..BucketCapabilities::default()
    };
    let destination = destination_knowing(
        proxy.url(),
        store.name(),
        "kept.zip",
        (&s3_access_key(), &s3_secret_key()),
        Some(may_not_abort),
    );
    let result = run_upload(
        &destination,
        archive_bytes(5 * MIB + 100_000),
        PartPlan::new(5 * MIB, 2, None),
        &MemoryLedger::default(),
        Ending::Abort,
        None,
    )
    .await;
    assert!(matches!(result, Err(UploadError::Abandoned)), "{result:?}");
    let operations = proxy.operations();
    assert!(operations.iter().any(|o| o == "CreateMultipartUpload"));
    assert!(
        !operations.iter().any(|o| o == "AbortMultipartUpload"),
        "{operations:?}"
    );
    assert!(!store.has("kept.zip").await);
}

#[tokio::test]
async fn a_refused_part_keeps_the_providers_code_is_not_retried_and_aborts_the_upload() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    proxy.refuse("UploadPart", 403, "AccessDenied", None);
    let ledger = MemoryLedger::default();
    let result = run_upload(
        &store_destination(&proxy, &store, "denied.zip"),
        archive_bytes(11 * MIB),
        PartPlan::new(5 * MIB, 2, None),
        &ledger,
        Ending::Complete,
        None,
    )
    .await;
    let Err(UploadError::Failed(failure)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(failure.code, "bucket_access_denied");
    assert_eq!(failure.retry, Retry::Never);
    assert!(
        failure.message.contains("UploadPart answered AccessDenied"),
        "{}",
        failure.message
    );
    assert!(
        !failure.message.contains("test upload"),
        "{}",
        failure.message
    );
    assert_eq!(proxy.count("AbortMultipartUpload"), 1);
    assert!(ledger.parts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_part_the_ledger_cannot_record_fails_as_this_sides_error_not_the_buckets() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let ledger = MemoryLedger {
        fail_part: Some(1),
        ..Default::default()
    };
    let result = run_upload(
        &store_destination(&proxy, &store, "unrecorded.zip"),
        archive_bytes(16 * MIB),
        PartPlan::new(5 * MIB, 1, None),
        &ledger,
        Ending::Complete,
        None,
    )
    .await;
    let Err(UploadError::Failed(failure)) = result else {
        panic!("expected a failure, got {result:?}");
    };
    assert_eq!(failure.code, "internal_error");
    assert_eq!(failure.retry, Retry::Later);
    assert_eq!(proxy.count("AbortMultipartUpload"), 1);
    assert!(!store.has("unrecorded.zip").await);
}

#[tokio::test]
async fn a_complete_that_answers_200_with_an_error_body_is_a_failure() {
    // S3 may answer CompleteMultipartUpload with 200 and an <Error> body (the status is sent
    // before the work is done). Creating the upload and its parts are accepted.
    let failure = s3_error(
        "InternalError",
        "We encountered an internal error. Please try again.",
    );
    let created = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult>\
        <Bucket>customer-bucket</Bucket><Key>archive.zip</Key><UploadId>upload-1</UploadId>\
        </InitiateMultipartUploadResult>";
    let server = CannedHttp::start_by(&[
        ("uploads", 200, &[], created),
        ("PUT ", 200, &[("ETag", r#""0123456789abcdef""#)], ""),
        ("POST ", 200, &[], &failure),
        ("DELETE ", 204, &[], ""),
    ])
    .await;
    let ledger = MemoryLedger::default();
    let result = run_upload(
        &destination(
            server.url(),
            "customer-bucket",
            "archive.zip",
            ("AKIAEXAMPLE", "secret"),
        ),
        archive_bytes(5 * MIB + 1024),
        PartPlan::new(5 * MIB, 2, None),
        &ledger,
        Ending::Complete,
        None,
    )
    .await;
    let Err(UploadError::Failed(failure)) = result else {
        panic!("expected the completion to fail, got {result:?}");
    };
    assert_eq!(failure.code, "bucket_unavailable");
    assert_eq!(failure.retry, Retry::UnlessRepeated);
    assert!(
        failure.message.contains("InternalError"),
        "{}",
        failure.message
    );
    assert_eq!(*ledger.started.lock().unwrap(), ["upload-1"]);
    let numbers: Vec<i32> = ledger
        .parts
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.number)
        .collect();
    assert_eq!(numbers.len(), 2, "both parts were recorded");
}

/// A multipart upload of `archive` whose first `parts` parts of `part` bytes are in the bucket,
/// as a worker that died would have left it.
async fn half_done_upload(
    destination: &Destination,
    archive: &Bytes,
    part: usize,
    parts: usize,
) -> Resume {
    let upload_id = destination.create_multipart().await.unwrap();
    let mut uploaded = Vec::new();
    for n in 0..parts {
        let body = archive.slice(n * part..(n + 1) * part);
        uploaded.push(
            destination
                .upload_part(&upload_id, n as i32 + 1, body)
                .await
                .unwrap(),
        );
    }
    Resume {
        upload_id,
        parts: uploaded,
        from: 0,
        crc32_before: 0,
        copies: false,
    }
}

#[tokio::test]
async fn a_resumed_upload_sends_only_the_parts_after_those_in_the_bucket() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let destination = store_destination(&proxy, &store, "resumed.zip");
    let archive = archive_bytes(4 * 5 * MIB + 777);
    let resume = half_done_upload(&destination, &archive, 5 * MIB, 2).await;
    let upload_id = resume.upload_id.clone();
    let ledger = MemoryLedger::default();
    let uploaded = run_upload(
        &destination,
        archive.clone(),
        PartPlan::new(5 * MIB, 2, None),
        &ledger,
        Ending::Complete,
        Some(resume),
    )
    .await
    .unwrap();
    assert_eq!(uploaded.resumed_parts, 2);
    assert_eq!(uploaded.parts, 5);
    let mut sent: Vec<Option<i32>> = proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "UploadPart")
        .map(|c| c.part)
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [Some(1), Some(2), Some(3), Some(4), Some(5)],
        "parts 1 and 2 once (before the takeover), the rest once"
    );
    assert_eq!(proxy.count("CreateMultipartUpload"), 1, "the same upload");
    assert!(ledger.started.lock().unwrap().is_empty());
    assert_eq!(*ledger.ended.lock().unwrap(), [upload_id]);
    assert_eq!(store.get("resumed.zip").await, archive);
}

#[tokio::test]
async fn a_rebuild_that_starts_inside_an_uploaded_part_is_checked_from_there_and_sends_the_rest() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let archive = archive_bytes(4 * 5 * MIB + 777);
    let plan = PartPlan::new(5 * MIB, 2, None);
    // The entries before this offset were kept: the rebuild's bytes start here, in part 2.
    let from = 5 * MIB + 12_345;
    let crc32_before = crc32fast::hash(&archive[..from]);

    let destination = store_destination(&proxy, &store, "continued.zip");
    let mut resume = half_done_upload(&destination, &archive, 5 * MIB, 2).await;
    (resume.from, resume.crc32_before) = (from as u64, crc32_before);
    let ledger = MemoryLedger::default();
    let uploaded = run_upload(
        &destination,
        archive.slice(from..),
        plan,
        &ledger,
        Ending::Complete,
        Some(resume),
    )
    .await
    .unwrap();
    assert_eq!((uploaded.resumed_parts, uploaded.parts), (2, 5));
    assert_eq!(uploaded.size, archive.len() as u64);
    let mut sent: Vec<Option<i32>> = proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "UploadPart")
        .map(|c| c.part)
        .collect();
    sent.sort();
    assert_eq!(sent, [Some(1), Some(2), Some(3), Some(4), Some(5)]);
    assert_eq!(store.get("continued.zip").await, archive);

    // A byte of part 2 after `from` differs, or the bytes before `from` are not what the parts
    // hold (their CRC-32 is another): part 2 does not match, nothing is sent.
    let mut changed = archive.to_vec();
    changed[from + 1000] ^= 1;
    for (rebuilt, before) in [
        (Bytes::from(changed).slice(from..), crc32_before),
        (archive.slice(from..), crc32_before ^ 1),
    ] {
        let destination = store_destination(&proxy, &store, "not-continued.zip");
        let mut resume = half_done_upload(&destination, &archive, 5 * MIB, 2).await;
        (resume.from, resume.crc32_before) = (from as u64, before);
        let run = Run {
            destination: &destination,
            plan,
            ledger: &ledger,
            budget: &BufferBudget::new(64 * MIB, 8 * MIB),
        };
        run.diverges(&proxy, rebuilt, resume, 2).await;
    }
}

#[tokio::test]
async fn a_rebuilt_archive_that_differs_from_the_uploaded_parts_sends_nothing() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let destination = store_destination(&proxy, &store, "diverged.zip");
    let archive = archive_bytes(3 * 5 * MIB);
    let resume = half_done_upload(&destination, &archive, 5 * MIB, 2).await;
    // One byte of the second part differs in the rebuilt archive.
    let mut changed = archive.to_vec();
    changed[5 * MIB + 1234] ^= 1;
    let ledger = MemoryLedger::default();
    let run = Run {
        destination: &destination,
        plan: PartPlan::new(5 * MIB, 2, None),
        ledger: &ledger,
        budget: &BufferBudget::new(64 * MIB, 8 * MIB),
    };
    run.diverges(&proxy, Bytes::from(changed), resume, 2).await;
    assert!(!store.has("diverged.zip").await);
    // Parts cut by another plan are no match either.
    let resume = half_done_upload(&destination, &archive, 5 * MIB, 1).await;
    let result = run_upload(
        &destination,
        archive.clone(),
        PartPlan::new(6 * MIB, 2, None),
        &ledger,
        Ending::Complete,
        Some(resume),
    )
    .await;
    assert!(
        matches!(result, Err(UploadError::Diverged { part: 1 })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_resumed_upload_the_store_no_longer_has_is_reported_lost() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let destination = store_destination(&proxy, &store, "lost.zip");
    let archive = archive_bytes(3 * 5 * MIB);
    let resume = half_done_upload(&destination, &archive, 5 * MIB, 1).await;
    proxy.refuse("UploadPart", 404, "NoSuchUpload", None);
    let ledger = MemoryLedger::default();
    let result = run_upload(
        &destination,
        archive,
        PartPlan::new(5 * MIB, 2, None),
        &ledger,
        Ending::Complete,
        Some(resume),
    )
    .await;
    assert!(matches!(result, Err(UploadError::Lost(_))), "{result:?}");
    assert_eq!(proxy.count("AbortMultipartUpload"), 0);
}

#[tokio::test]
async fn an_upload_handed_over_to_another_worker_is_left_alone() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let ledger = MemoryLedger::default();
    let result = run_upload(
        &store_destination(&proxy, &store, "handed-over.zip"),
        archive_bytes(5 * MIB + 100_000),
        PartPlan::new(5 * MIB, 2, None),
        &ledger,
        Ending::HandOver,
        None,
    )
    .await;
    assert!(matches!(result, Err(UploadError::Abandoned)), "{result:?}");
    let operations = proxy.operations();
    assert_eq!(
        operations.first().map(String::as_str),
        Some("CreateMultipartUpload")
    );
    assert!(
        !operations.iter().any(|o| o == "AbortMultipartUpload"),
        "the new owner may be continuing it: {operations:?}"
    );
    assert!(ledger.ended.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_part_holding_a_header_goes_up_once_the_header_has_its_values_and_later_parts_meanwhile()
{
    // A header cut by the boundary of parts 1 and 2, its values known only at the end: parts 3
    // and 4 go first, then 1 and 2 with the header's final bytes. The worker's budget has room
    // for the job's floor only: the part after the held ones comes from the lane, which holds
    // two (a cut header holds two parts back).
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let archive = archive_bytes(4 * 5 * MIB + 999);
    let at = 5 * MIB - 20;
    let budget = BufferBudget::new(4 * 5 * MIB, 5 * MIB);
    let ledger = MemoryLedger::default();
    let destination = store_destination(&proxy, &store, "held.zip");
    let run = Run {
        destination: &destination,
        plan: PartPlan::new(5 * MIB, 2, None),
        ledger: &ledger,
        budget: &budget,
    };
    let uploaded = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        run.upload_pieces(with_header_at(&archive, at, 46), Ending::Complete, None),
    )
    .await
    .expect("no wait on memory that never comes")
    .unwrap();
    assert_eq!(uploaded.parts, 5);
    let order = part_order(&proxy);
    let first_held = order.iter().position(|&p| p == 1).unwrap();
    assert!(
        order[..first_held].contains(&3) && order[..first_held].contains(&4),
        "parts 3 and 4 went before the held ones: {order:?}"
    );
    assert_eq!(order.len(), 5, "each part once: {order:?}");
    assert_eq!(store.get("held.zip").await, archive);
    assert_eq!(
        budget.available(),
        2 * 5 * MIB,
        "the floor's and the lane's back"
    );
}

#[tokio::test]
async fn a_header_in_an_archive_of_one_part_is_written_over_before_the_put() {
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let archive = archive_bytes(300_123);
    let ledger = MemoryLedger::default();
    let destination = store_destination(&proxy, &store, "small.zip");
    let budget = BufferBudget::new(64 * MIB, 8 * MIB);
    let run = Run {
        destination: &destination,
        plan: PartPlan::new(5 * MIB, 2, None),
        ledger: &ledger,
        budget: &budget,
    };
    let uploaded = run
        .upload_pieces(with_header_at(&archive, 1_000, 30), Ending::Complete, None)
        .await
        .unwrap();
    assert_eq!(uploaded.parts, 0, "one PutObject");
    assert_eq!(store.get("small.zip").await, archive);
}

#[tokio::test]
async fn a_rebuild_with_a_header_in_an_uploaded_part_is_checked_once_the_header_has_its_values() {
    // Parts 1 and 2 are in the bucket; the rebuild starts inside part 1, where an entry's
    // header goes out with zeros: part 1 is checked only once its values come, and passes; with
    // other values it does not match, and nothing is sent.
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let archive = archive_bytes(3 * 5 * MIB + 10);
    let (from, at) = (1_000_000, 1_000_100);
    let crc32_before = crc32fast::hash(&archive[..from]);
    let plan = PartPlan::new(5 * MIB, 2, None);
    let ledger = MemoryLedger::default();
    let budget = BufferBudget::new(64 * MIB, 8 * MIB);
    let rebuilt = |header: Bytes| {
        let mut pieces = chunked(&archive.slice(from..at));
        pieces.push(Piece::Header(Bytes::from(vec![0u8; header.len()])));
        pieces.extend(chunked(&archive.slice(at + header.len()..)));
        pieces.push(Piece::Patch(header));
        pieces
    };

    let destination = store_destination(&proxy, &store, "checked.zip");
    let mut resume = half_done_upload(&destination, &archive, 5 * MIB, 2).await;
    (resume.from, resume.crc32_before) = (from as u64, crc32_before);
    let run = Run {
        destination: &destination,
        plan,
        ledger: &ledger,
        budget: &budget,
    };
    let uploaded = run
        .upload_pieces(
            rebuilt(archive.slice(at..at + 40)),
            Ending::Complete,
            Some(resume),
        )
        .await
        .unwrap();
    assert_eq!((uploaded.resumed_parts, uploaded.parts), (2, 4));
    assert_eq!(store.get("checked.zip").await, archive);

    let destination = store_destination(&proxy, &store, "unchecked.zip");
    let mut resume = half_done_upload(&destination, &archive, 5 * MIB, 2).await;
    (resume.from, resume.crc32_before) = (from as u64, crc32_before);
    let run = Run {
        destination: &destination,
        plan,
        ledger: &ledger,
        budget: &budget,
    };
    let mut other = archive.slice(at..at + 40).to_vec();
    other[14] ^= 1;
    let before = proxy.calls().len();
    let result = run
        .upload_pieces(rebuilt(Bytes::from(other)), Ending::Complete, Some(resume))
        .await;
    assert!(
        matches!(result, Err(UploadError::Diverged { part: 1 })),
        "{result:?}"
    );
    // Parts after it may have gone up meanwhile; the upload is neither completed nor aborted
    // here (the job aborts it and starts a new one).
    let operations = &proxy.operations()[before..];
    assert!(
        !operations
            .iter()
            .any(|o| o.contains("Complete") || o.contains("Abort")),
        "{operations:?}"
    );
    assert!(!store.has("unchecked.zip").await);
}

#[tokio::test]
async fn an_entry_left_out_after_parts_went_up_is_taken_back_and_those_parts_sent_again() {
    // An entry whose header is cut by the end of part 1 fails 12 MiB in (`on_error: skip`):
    // parts 1 and 2 were held back for its header, part 3 went up. The archive continues where
    // the header began: part 1 is filled again from there, parts 2 and 3 are sent again with
    // what follows, and the object holds not a byte of the entry.
    let (store, proxy) = (TestBucket::new().await, StoreProxy::start().await);
    let before = archive_bytes(5 * MIB - 20);
    let rest: Bytes = (0..6 * MIB + 5).map(|i| (i % 13) as u8).collect();
    let mut pieces = chunked(&before);
    pieces.push(Piece::Header(Bytes::from(vec![0u8; 40])));
    pieces.extend(chunked(&Bytes::from(vec![0xEE; 12 * MIB])));
    pieces.push(Piece::Rewind);
    pieces.extend(chunked(&rest));
    let ledger = MemoryLedger::default();
    let destination = store_destination(&proxy, &store, "rewound.zip");
    let budget = BufferBudget::new(64 * MIB, 8 * MIB);
    let run = Run {
        destination: &destination,
        plan: PartPlan::new(5 * MIB, 2, None),
        ledger: &ledger,
        budget: &budget,
    };
    let uploaded = run
        .upload_pieces(pieces, Ending::Complete, None)
        .await
        .unwrap();
    assert_eq!(uploaded.parts, 3);
    let expected: Vec<u8> = before.iter().chain(rest.iter()).copied().collect();
    assert_eq!(uploaded.size, expected.len() as u64);
    assert!(store.get("rewound.zip").await == expected);
    let order = part_order(&proxy);
    assert_eq!(
        order.iter().filter(|&&p| p == 3).count(),
        2,
        "part 3 went up with the entry's bytes, then again: {order:?}"
    );
}
