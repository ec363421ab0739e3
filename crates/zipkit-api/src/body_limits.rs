//! Limits on request bodies beyond their size (`api.max_body_bytes`): the whole body must
//! arrive within `api.body_timeout_secs` of the headers (a client trickling a byte every few
//! seconds would otherwise hold a connection and a buffer forever), and all bodies being read
//! at once may hold at most `api.max_body_bytes_in_flight` bytes between them (twenty 15 MB
//! bodies at once would otherwise add 300 MB). A body over either limit fails the extractor
//! reading it with an I/O error that `extractors` turns into 408 `request_timeout` or
//! 503 `server_busy`.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What actix's `Payload::Stream` holds.
type BoxedPayloadStream = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// The shared limits (one per process).
#[derive(Debug, Clone)]
pub struct BodyLimits {
    pub timeout: Duration,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// A trim of the allocator is due (see `enforce`).
    trim_scheduled: Arc<std::sync::atomic::AtomicBool>,
}

/// A body at least this large is followed by giving freed memory back to the kernel: parsing a
/// 15 MB JSON body makes hundreds of thousands of small allocations, which the allocator would
/// otherwise keep (twenty such bodies left ~90 MiB resident).
const TRIM_AFTER_BODY_KIB: usize = 1024;
/// How long after such a body the trim runs: the bodies of a burst are trimmed after once.
const TRIM_DELAY: Duration = Duration::from_millis(250);

/// Why a body stopped being read, carried inside the `io::Error`.
#[derive(Debug, thiserror::Error)]
pub enum BodyLimitError {
    #[error("the request body did not arrive within {0} seconds")]
    TooSlow(u64),
    #[error("the server is reading too many request bodies at once")]
    Busy,
}

impl BodyLimits {
    pub fn new(timeout: Duration, in_flight_bytes: usize) -> Self {
        // A semaphore counts permits in u32 chunks; one permit per KiB keeps any size in range.
        let budget_bytes = in_flight_bytes.max(1024);
        Self {
            timeout,
            budget: Arc::new(Semaphore::new(budget_bytes / 1024)),
            budget_bytes,
            trim_scheduled: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Gives freed memory back a moment after a large body is done (at most one trim waiting).
    fn trim_soon(&self) {
        use std::sync::atomic::Ordering;
        if self.trim_scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let scheduled = Arc::clone(&self.trim_scheduled);
        tokio::spawn(async move {
            tokio::time::sleep(TRIM_DELAY).await;
            scheduled.store(false, Ordering::SeqCst);
            let _ =
                tokio::task::spawn_blocking(zipkit_runtime::allocator::release_free_memory).await;
        });
    }

    /// KiB of the budget in use now (for tests and metrics).
    pub fn in_use_kib(&self) -> usize {
        self.budget_bytes / 1024 - self.budget.available_permits()
    }
}

/// Wraps the request's payload in the limits; what it reserved of the budget is held until the
/// response is ready (the handler still holds the body it read), then returned.
pub async fn enforce(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(limits) = req
        .app_data::<Data<BodyLimits>>()
        .map(|l| BodyLimits::clone(l))
    else {
        return next.call(req).await;
    };
    let held = Rc::new(RefCell::new(Vec::new()));
    let inner = req.take_payload();
    let limited = LimitedPayload {
        inner,
        deadline: Box::pin(tokio::time::sleep(limits.timeout)),
        timeout_secs: limits.timeout.as_secs(),
        budget: limits.budget.clone(),
        held: Rc::clone(&held),
        failed: false,
    };
    req.set_payload(Payload::from(Box::pin(limited) as BoxedPayloadStream));
    let response = next.call(req).await;
    let kib: usize = held.borrow().iter().map(|p| p.num_permits()).sum();
    drop(held);
    if kib >= TRIM_AFTER_BODY_KIB {
        limits.trim_soon();
    }
    response
}

struct LimitedPayload {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout_secs: u64,
    budget: Arc<Semaphore>,
    held: Rc<RefCell<Vec<OwnedSemaphorePermit>>>,
    failed: bool,
}

fn io_error(kind: std::io::ErrorKind, why: BodyLimitError) -> PayloadError {
    PayloadError::Io(std::io::Error::new(kind, why))
}

impl Stream for LimitedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                // Round up: a body of a few bytes still takes a KiB of the budget.
                let kib = u32::try_from(chunk.len().div_ceil(1024)).unwrap_or(u32::MAX);
                match Arc::clone(&self.budget).try_acquire_many_owned(kib) {
                    Ok(permit) => {
                        self.held.borrow_mut().push(permit);
                        Poll::Ready(Some(Ok(chunk)))
                    }
                    Err(_) => {
                        self.failed = true;
                        Poll::Ready(Some(Err(io_error(
                            std::io::ErrorKind::OutOfMemory,
                            BodyLimitError::Busy,
                        ))))
                    }
                }
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    self.failed = true;
                    let secs = self.timeout_secs;
                    return Poll::Ready(Some(Err(io_error(
                        std::io::ErrorKind::TimedOut,
                        BodyLimitError::TooSlow(secs),
                    ))));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

/// The limit a payload error stands for, if it is one of ours.
pub fn limit_error(err: &PayloadError) -> Option<&BodyLimitError> {
    match err {
        PayloadError::Io(io) => io.get_ref()?.downcast_ref::<BodyLimitError>(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn payload(chunks: Vec<Bytes>, then_wait: bool) -> Payload {
        let head = futures_util::stream::iter(chunks.into_iter().map(Ok));
        let stream: BoxedPayloadStream = if then_wait {
            Box::pin(head.chain(futures_util::stream::pending()))
        } else {
            Box::pin(head)
        };
        Payload::from(stream)
    }

    fn limited(limits: &BodyLimits, inner: Payload) -> LimitedPayload {
        LimitedPayload {
            inner,
            deadline: Box::pin(tokio::time::sleep(limits.timeout)),
            timeout_secs: limits.timeout.as_secs(),
            budget: limits.budget.clone(),
            held: Rc::new(RefCell::new(Vec::new())),
            failed: false,
        }
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_fails_at_the_deadline() {
        let limits = BodyLimits::new(Duration::from_millis(50), 1 << 20);
        let mut body = limited(&limits, payload(vec![Bytes::from_static(b"{\"ur")], true));
        assert!(body.next().await.expect("a chunk").is_ok());
        let err = body.next().await.expect("an error").unwrap_err();
        assert!(
            matches!(limit_error(&err), Some(BodyLimitError::TooSlow(_))),
            "{err}"
        );
        assert!(body.next().await.is_none(), "nothing after the error");
    }

    #[tokio::test]
    async fn bodies_share_one_budget_returned_when_they_are_done() {
        let limits = BodyLimits::new(Duration::from_secs(5), 8 * 1024);
        let mut first = limited(
            &limits,
            payload(vec![Bytes::from(vec![0u8; 6 * 1024])], false),
        );
        assert!(first.next().await.expect("chunk").is_ok());
        assert_eq!(limits.in_use_kib(), 6);
        let mut second = limited(
            &limits,
            payload(vec![Bytes::from(vec![0u8; 4 * 1024])], false),
        );
        let err = second.next().await.expect("an error").unwrap_err();
        assert!(
            matches!(limit_error(&err), Some(BodyLimitError::Busy)),
            "{err}"
        );
        drop(first);
        assert_eq!(limits.in_use_kib(), 0, "the first body's share came back");
        let mut third = limited(
            &limits,
            payload(vec![Bytes::from(vec![0u8; 4 * 1024])], false),
        );
        assert!(third.next().await.expect("chunk").is_ok());
    }
}
