//! Taking jobs from the queue. The row is the truth: a message only names a job, which is
//! claimed with one conditional UPDATE; a message for a job already claimed, finished or
//! cancelled is acked and dropped. A message is acked only after the job's terminal state is
//! committed, so a worker that dies mid-job leaves the message to be redelivered. A worker told
//! to stop hands its jobs back at once (`Zip::hand_back` + requeue), for another worker to
//! continue from their last recorded part.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncConnection;
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;
use zipkit_domain::messages::JobMessage;
use zipkit_domain::models::{Zip, ZipOutcome};
use zipkit_runtime::backoff::Backoff;
use zipkit_runtime::broker::Broker;
use zipkit_runtime::jobs::{IncomingJob, OutgoingJob};
use zipkit_runtime::metrics as names;
use zipkit_runtime::telemetry;

use crate::failure::JobFailure;
use crate::job::{self, JobContext};
use crate::lease::{Interrupt, Lease};
use zipkit_runtime::allocator;

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub concurrency: u16,
    pub lease: Duration,
    pub grace: Duration,
    /// Attempts at a job that keeps failing transiently before it fails for good.
    pub max_attempts: i32,
    /// How long the delay queue holds a job after its n-th attempt failed.
    pub retry_backoff: Backoff,
}

/// Consumes until `stop` turns true; then every job in flight is handed back (lease released,
/// attempt not counted, message requeued), within the grace period at most.
pub async fn consume(
    broker: Broker,
    ctx: JobContext,
    settings: ConsumerSettings,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(usize::from(settings.concurrency)));
    metrics::gauge!(names::WORKER_SLOTS).set(f64::from(settings.concurrency));
    'connection: loop {
        if *stop.borrow() {
            break;
        }
        let Some(channel) = broker.open_channel().await else {
            if tokio::time::timeout(Duration::from_millis(500), stop.changed())
                .await
                .is_ok()
            {
                break;
            }
            continue;
        };
        let prefetch = settings.concurrency;
        let tag = format!("{}-{}", ctx.owner, uuid_suffix());
        let consumer = async {
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            channel
                .basic_consume(
                    broker.topology().jobs.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        let mut deliveries = match consumer.await {
            Ok(consumer) => consumer,
            Err(err) => {
                tracing::warn!(error = %err, "could not start consuming; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(queue = %broker.topology().jobs, prefetch, "consuming");
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                        break 'connection;
                    }
                }
                next = deliveries.next() => {
                    let Some(Ok(delivery)) = next else {
                        tracing::warn!("the consumer stopped (connection lost?); reconnecting");
                        continue 'connection;
                    };
                    let permit = Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed");
                    let ctx = ctx.clone();
                    let broker = broker.clone();
                    let settings = settings.clone();
                    let stopping = stop.clone();
                    tokio::spawn(async move {
                        handle(&ctx, &broker, delivery.into(), &settings, stopping).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    // In-flight jobs are handing themselves back; wait for that up to the grace period. Any
    // still unsettled then return to the queue when the channel closes, and their leases expire
    // so another worker takes over.
    let all = u32::from(settings.concurrency);
    if tokio::time::timeout(settings.grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; jobs not yet handed back return when their leases end");
    }
}

/// When the job is `processing` under another owner's lease: how long until that lease can
/// have expired (plus a margin). `None` when the job is finished, cancelled or gone.
async fn held_elsewhere(ctx: &JobContext, zip_id: zipkit_domain::ZipId) -> Option<Duration> {
    let mut conn = ctx.pool.get().await.ok()?;
    let zip = Zip::find_any(&mut conn, zip_id).await.ok()??;
    if zip.status != zipkit_domain::ZipStatus::Processing {
        return None;
    }
    let left = zip.lease_expires_at? - chrono::Utc::now();
    Some(left.to_std().unwrap_or_default() + Duration::from_secs(1))
}

/// Hands the message back to the queue (for a moment of trouble on this side).
async fn requeue(delivery: &IncomingJob) {
    if let Err(e) = delivery.requeue().await {
        tracing::warn!(error = %e, "requeue failed; the broker will redeliver when the channel closes");
    }
}

/// Settles the message: the job is done with.
async fn ack(delivery: &IncomingJob) {
    if let Err(e) = delivery.ack().await {
        tracing::warn!(error = %e, "ack failed");
    }
}

/// The same job again after `delay`, as the next attempt, in the trace of the request that
/// created it.
async fn publish_next_attempt(
    broker: &Broker,
    message: &JobMessage,
    delay: Duration,
) -> Result<(), String> {
    let next = JobMessage {
        attempt: message.attempt + 1,
        ..message.clone()
    };
    let id = next.zip_id.to_string();
    let job = OutgoingJob {
        id: &id,
        body: &next.to_bytes(),
        traceparent: next.traceparent.as_deref(),
    };
    broker
        .delay_job(job, delay)
        .await
        .map_err(|e| e.to_string())
}

fn uuid_suffix() -> String {
    zipkit_domain::ZipId::new().to_string()[..8].to_owned()
}

async fn handle(
    ctx: &JobContext,
    broker: &Broker,
    delivery: IncomingJob,
    settings: &ConsumerSettings,
    stopping: watch::Receiver<bool>,
) {
    let Ok(message) = JobMessage::from_bytes(delivery.body()) else {
        tracing::error!("a message that is not a job message; dead-lettering it");
        if let Err(e) = delivery.dead_letter().await {
            tracing::warn!(error = %e, "dead-lettering failed");
        }
        return;
    };
    // The job's span continues the trace of whoever published the message (the request, the
    // sweeper, or this worker's own delayed retry).
    let queue = broker.topology().jobs.clone();
    let span = tracing::info_span!(
        "job",
        otel.name = format!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = %queue,
        zip.id = %message.zip_id,
        project.id = tracing::field::Empty,
        attempt = message.attempt,
    );
    let traceparent = delivery
        .traceparent()
        .or_else(|| message.traceparent.clone());
    telemetry::continue_trace(&span, traceparent.as_deref());
    process(ctx, broker, delivery, settings, message, stopping)
        .instrument(span)
        .await;
    allocator::release_free_memory();
}

/// Claims the job a message names, runs it and settles the message.
async fn process(
    ctx: &JobContext,
    broker: &Broker,
    delivery: IncomingJob,
    settings: &ConsumerSettings,
    message: JobMessage,
    mut stopping: watch::Receiver<bool>,
) {
    let lease = settings.lease;
    let zip_id = message.zip_id;
    let claimed = Lease::claim(&ctx.pool, zip_id, &ctx.owner, lease).await;
    let (zip, lease) = match claimed {
        Ok(Some(claimed)) => claimed,
        Ok(None) => {
            // Held by another worker's live lease: that worker may have died, so come back when
            // the lease can have expired (through the delay queue) instead of dropping the job.
            if let Some(retry_in) = held_elsewhere(ctx, zip_id).await {
                match publish_next_attempt(broker, &message, retry_in).await {
                    Ok(()) => {
                        tracing::info!(zip.id = %zip_id, retry_in_ms = retry_in.as_millis() as u64, "job held by another worker; checking again after its lease")
                    }
                    Err(e) => {
                        tracing::warn!(zip.id = %zip_id, error = %e, "could not delay the message; requeueing");
                        requeue(&delivery).await;
                        return;
                    }
                }
            } else {
                tracing::info!(zip.id = %zip_id, "job already finished or cancelled; dropping the message");
            }
            ack(&delivery).await;
            return;
        }
        Err(e) => {
            tracing::warn!(zip.id = %zip_id, error = %e, "claiming failed; requeueing");
            requeue(&delivery).await;
            return;
        }
    };
    tracing::Span::current().record("project.id", tracing::field::display(zip.project_id));
    tracing::info!(zip.id = %zip_id, attempt = zip.attempts, "job claimed");
    let started = std::time::Instant::now();
    if zip.attempts == 1 {
        let waited = (chrono::Utc::now() - zip.created_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!(names::JOB_QUEUE_WAIT).record(waited.as_secs_f64());
    }
    let _in_flight = InFlight::start();

    let interrupted = lease.interrupted();
    let run_ctx = ctx.clone();
    let run_zip = zip.clone();
    // A panic inside the job fails the job, never the consumer.
    let mut running = tokio::spawn(
        async move { job::run(&run_ctx, &run_zip, interrupted).await }
            .instrument(tracing::Span::current()),
    );
    let joined = tokio::select! {
        joined = &mut running => joined,
        Ok(()) = async { stopping.wait_for(|stop| *stop).await.map(|_| ()) } => {
            lease.hand_back();
            running.await
        }
    };
    let result = match joined {
        Ok(result) => result,
        Err(e) => Err(JobFailure::internal(format!(
            "the job stopped unexpectedly: {e}"
        ))),
    };
    let interrupt = lease.interrupt();
    drop(lease);
    if interrupt == Interrupt::HandBack && result.is_err() {
        hand_back(ctx, &delivery, zip_id, started).await;
        return;
    }
    let (outcome_label, code) = match &result {
        Ok(_) => ("succeeded", String::new()),
        Err(failure) if failure.is_cancelled() => ("cancelled", String::new()),
        Err(failure) => ("failed", failure.code.to_owned()),
    };
    let worth_retrying = matches!(&result, Err(f) if f.worth_retrying(zip.last_failure.as_deref()));
    let retried = worth_retrying && zip.attempts < settings.max_attempts;
    // Out of attempts on a failure that was worth retrying: dead-lettered for inspection.
    let exhausted = worth_retrying && !retried;
    let attempt_label = if retried { "retried" } else { outcome_label };
    metrics::histogram!(names::JOB_DURATION, "outcome" => attempt_label)
        .record(started.elapsed().as_secs_f64());
    if retried {
        metrics::counter!(names::RETRIES, "stage" => "job", "cause" => code).increment(1);
    } else {
        metrics::counter!(names::JOBS_FINISHED, "outcome" => outcome_label, "code" => code)
            .increment(1);
        let since_created = (chrono::Utc::now() - zip.created_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!(names::JOB_END_TO_END, "outcome" => outcome_label)
            .record(since_created.as_secs_f64());
    }
    let outcome = match result {
        Ok(built) => ZipOutcome::Succeeded {
            size: i64::try_from(built.size).unwrap_or(i64::MAX),
            etag: built.etag,
            entries: built.entries,
        },
        Err(failure) => {
            if retried {
                let delay = settings
                    .retry_backoff
                    .delay(u32::try_from(zip.attempts).unwrap_or(1));
                if retry_later(ctx, broker, &message, delay, &failure).await {
                    ack(&delivery).await;
                } else {
                    requeue(&delivery).await;
                }
                return;
            }
            ZipOutcome::Failed(failure.to_job_error())
        }
    };
    let finished = match ctx.pool.get().await {
        // The final state and the webhook event commit together: no event is ever lost.
        Ok(mut conn) => {
            conn.transaction(async |conn| {
                let row = Zip::finish(conn, zip_id, &ctx.owner, &outcome).await?;
                if let Some(row) = &row {
                    let links = (&ctx.buckets, &*ctx.keyring);
                    crate::webhooks::enqueue_completed(conn, row, links).await?;
                }
                Ok::<_, diesel::result::Error>(row)
            })
            .await
        }
        Err(e) => {
            tracing::warn!(zip.id = %zip_id, error = %e, "cannot record the outcome; the message is requeued");
            requeue(&delivery).await;
            return;
        }
    };
    match finished {
        Ok(Some(row)) => tracing::info!(zip.id = %zip_id, status = %row.status, "job finished"),
        Ok(None) => tracing::info!(zip.id = %zip_id, "job was cancelled or taken over meanwhile"),
        Err(e) => tracing::warn!(zip.id = %zip_id, error = %e, "recording the outcome failed"),
    }
    if exhausted {
        // Out of attempts: the message goes to the dead-letter queue for inspection.
        tracing::warn!(zip.id = %zip_id, attempts = zip.attempts, "job failed after its last attempt; dead-lettering the message");
        if let Err(e) = delivery.dead_letter().await {
            tracing::warn!(error = %e, "dead-lettering failed");
        }
    } else {
        ack(&delivery).await;
    }
}

/// Gives the job of a stopping worker back: lease ended and the attempt uncounted, then the
/// message requeued, so another worker claims it at once and continues its upload.
async fn hand_back(
    ctx: &JobContext,
    delivery: &IncomingJob,
    zip_id: zipkit_domain::ZipId,
    started: std::time::Instant,
) {
    // Without the database the lease ends by itself, and the next claim counts one more attempt.
    let released = match ctx.pool.get().await {
        Ok(mut conn) => Zip::hand_back(&mut conn, zip_id, &ctx.owner)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match released {
        Ok(true) => {
            tracing::info!(zip.id = %zip_id, ran_ms = started.elapsed().as_millis() as u64, "worker stopping; job handed back")
        }
        Ok(false) => {
            tracing::info!(zip.id = %zip_id, "worker stopping; the job had ended or moved on already")
        }
        Err(e) => {
            tracing::warn!(zip.id = %zip_id, error = %e, "could not release the job's lease; it is requeued")
        }
    }
    metrics::histogram!(names::JOB_DURATION, "outcome" => "handed_back")
        .record(started.elapsed().as_secs_f64());
    requeue(delivery).await;
}

/// Gives the job back and schedules its next attempt through the delay queue. `false` when that
/// could not be done (the caller requeues the message instead).
async fn retry_later(
    ctx: &JobContext,
    broker: &Broker,
    message: &JobMessage,
    delay: Duration,
    failure: &JobFailure,
) -> bool {
    let zip_id = message.zip_id;
    let mut conn = match ctx.pool.get().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(zip.id = %zip_id, error = %e, "could not release the job for a retry");
            return false;
        }
    };
    match Zip::release_for_retry(&mut conn, zip_id, &ctx.owner, &failure.fingerprint()).await {
        Ok(true) => {}
        // Cancelled or taken over meanwhile: nothing to retry.
        Ok(false) => return true,
        Err(e) => {
            tracing::warn!(zip.id = %zip_id, error = %e, "could not release the job for a retry");
            return false;
        }
    }
    match publish_next_attempt(broker, message, delay).await {
        Ok(()) => {
            tracing::info!(zip.id = %zip_id, retry_in_ms = delay.as_millis() as u64, "transient failure; job retried after a delay");
            true
        }
        Err(e) => {
            tracing::warn!(zip.id = %zip_id, error = %e, "could not schedule the retry");
            false
        }
    }
}

/// Counts a job in `zipkit_jobs_in_flight` for as long as it lives, however `handle` returns.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn start() -> Self {
        let gauge = metrics::gauge!(names::JOBS_IN_FLIGHT);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
