//! The worker's buffer memory: one budget over all its jobs (`worker.buffer_mib`), and the part
//! buffers, mapped straight from the kernel.
//!
//! What draws on the budget: each job's *floor* (one part, reserved before its first download so a
//! started job can always make progress), the *lane* (two parts for the whole worker, set aside
//! when it starts, used by one job at a time: a job whose floor is a part held back for an
//! entry's header, and that finds no free budget, fills its next parts there; two, because a
//! header cut by a part boundary holds back the part after it too), more parts in flight (taken
//! only when free, never waited for), and downloads read ahead of the writer, their bytes and
//! their connections' buffers (waited for; the entry being written never needs them). Nothing that holds the budget waits on something that
//! needs more of it, so jobs cannot deadlock on it: the job in the lane needs nothing more to
//! finish its entry, and the jobs waiting for the lane wait only for that. Part buffers are anonymous mappings, not allocator blocks: a general-purpose
//! allocator keeps freed 8 MiB blocks for reuse, and the worker's resident memory stayed at 2–3×
//! its live buffers (docs/PERFORMANCE.md); an unmapped part is gone at once.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget counts KiB, so a permit count fits `u32` for any part S3 allows.
const UNIT: usize = 1024;

/// Bytes the worker's buffers may hold, shared by all its jobs.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    units: Arc<Semaphore>,
    bytes: usize,
    /// The lane (see the module header): one job at a time holds the pass, and takes its part
    /// buffers from the lane's two.
    lane_pass: Arc<Semaphore>,
    lane: Arc<Semaphore>,
    lane_bytes: usize,
}

/// The right to the lane's buffers, kept by a job while it holds a part back.
#[derive(Debug)]
pub struct LanePass(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

/// Bytes taken from the budget, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl BufferBudget {
    /// `bytes` in all, of which the lane's two buffers of `part_bytes` (at most half of it).
    pub fn new(bytes: usize, part_bytes: usize) -> Self {
        let lane_bytes = part_bytes.min(bytes / 4);
        let shared = bytes - 2 * lane_bytes;
        Self {
            units: Arc::new(Semaphore::new(shared.div_ceil(UNIT))),
            bytes: shared,
            lane_pass: Arc::new(Semaphore::new(1)),
            lane: Arc::new(Semaphore::new(2)),
            lane_bytes,
        }
    }

    /// What is not reserved now.
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }

    fn units(&self, bytes: usize) -> u32 {
        // Never more than the whole budget: a reservation larger than it would wait forever.
        u32::try_from(bytes.min(self.bytes).div_ceil(UNIT).max(1)).unwrap_or(u32::MAX)
    }

    /// Waits until `bytes` are free (first come, first served) and takes them; at most the whole
    /// budget is taken for a larger request.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let permit = waiting_for_memory(&self.units, self.units(bytes)).await;
        Reservation {
            _permit: permit,
            bytes,
        }
    }

    /// Takes `bytes` if they are free now (and nobody waits ahead).
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let permit = self
            .units
            .clone()
            .try_acquire_many_owned(self.units(bytes))
            .ok()?;
        Some(Reservation {
            _permit: permit,
            bytes,
        })
    }
}

/// Takes `units` of a semaphore of buffer memory, waiting when they are not free at once and
/// recording how long that took (`zipkit_buffer_wait_seconds`).
async fn waiting_for_memory(semaphore: &Arc<Semaphore>, units: u32) -> OwnedSemaphorePermit {
    if let Ok(permit) = semaphore.clone().try_acquire_many_owned(units) {
        return permit;
    }
    let started = std::time::Instant::now();
    let permit = semaphore
        .clone()
        .acquire_many_owned(units)
        .await
        .expect("the buffer memory's semaphores are never closed");
    metrics::histogram!(zipkit_runtime::metrics::BUFFER_WAIT)
        .record(started.elapsed().as_secs_f64());
    permit
}

/// A job's part buffers: its floor, one part reserved from the budget before the job starts,
/// and, for more parts in flight, whatever the budget has free at the moment.
#[derive(Debug)]
pub struct PartMemory {
    budget: BufferBudget,
    /// One permit: the floor's part buffer, in use or not.
    floor: Arc<Semaphore>,
    floor_bytes: usize,
    _floor: Reservation,
}

/// The memory behind one part buffer.
#[derive(Debug)]
pub enum PartPermit {
    /// The job's floor; `growth` covers a part larger than the floor (they double after 1,000
    /// parts on S3) when the budget had it free, else the part goes over the budget by that much.
    Floor {
        _floor: OwnedSemaphorePermit,
        _growth: Option<Reservation>,
    },
    Shared(Reservation),
    /// The worker's lane; `growth` as for the floor.
    Lane {
        _lane: OwnedSemaphorePermit,
        _growth: Option<Reservation>,
    },
}

impl PartMemory {
    /// Waits until the budget has `floor_bytes` free and keeps them for the job's lifetime.
    pub async fn reserve(budget: &BufferBudget, floor_bytes: usize) -> Self {
        let floor = budget.reserve(floor_bytes).await;
        Self {
            budget: budget.clone(),
            floor: Arc::new(Semaphore::new(1)),
            floor_bytes,
            _floor: floor,
        }
    }

    /// Memory for a part buffer of `bytes`, if there is some now: the floor when none of the
    /// job's parts holds it, else free budget.
    pub fn try_take(&self, bytes: usize) -> Option<PartPermit> {
        if let Ok(floor) = self.floor.clone().try_acquire_owned() {
            return Some(PartPermit::Floor {
                _floor: floor,
                _growth: self.growth(bytes),
            });
        }
        self.budget.try_reserve(bytes).map(PartPermit::Shared)
    }

    /// Waits for the floor: only the job's own parts hold it, and they finish by themselves.
    pub async fn take_floor(&self, bytes: usize) -> PartPermit {
        let floor = self
            .floor
            .clone()
            .acquire_owned()
            .await
            .expect("the floor's semaphore is never closed");
        PartPermit::Floor {
            _floor: floor,
            _growth: self.growth(bytes),
        }
    }

    /// Waits for the lane's pass: for a job whose floor is held back while its entry goes on
    /// (first come, first served; the job in the lane needs nothing more to finish).
    pub async fn lane_pass(&self) -> LanePass {
        LanePass(waiting_for_memory(&self.budget.lane_pass, 1).await)
    }

    /// One of the lane's buffers, for the job with the pass: free, or soon (the job's own, or
    /// the previous holder's, parts in flight give them back).
    pub async fn take_lane(&self, _pass: &LanePass, bytes: usize) -> PartPermit {
        let lane = self
            .budget
            .lane
            .clone()
            .acquire_owned()
            .await
            .expect("the lane's semaphore is never closed");
        let over = bytes.saturating_sub(self.budget.lane_bytes);
        PartPermit::Lane {
            _lane: lane,
            _growth: (over > 0).then(|| self.budget.try_reserve(over)).flatten(),
        }
    }

    fn growth(&self, bytes: usize) -> Option<Reservation> {
        (bytes > self.floor_bytes)
            .then(|| self.budget.try_reserve(bytes - self.floor_bytes))
            .flatten()
    }
}

/// A buffer for one part: `capacity` bytes of fresh pages, filled in order, then frozen into the
/// body the store is sent. Its pages return to the kernel, and its reservation to whoever gave it,
/// when the last handle on that body is dropped (after the part is up, retries included).
pub struct PartBuffer<R: Send + 'static> {
    map: memmap2::MmapMut,
    len: usize,
    reservation: R,
}

impl<R: Send + 'static> std::fmt::Debug for PartBuffer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartBuffer")
            .field("len", &self.len)
            .field("capacity", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl<R: Send + 'static> PartBuffer<R> {
    /// Maps `capacity` bytes (pre-faulted: the part will be filled, and one call is cheaper than
    /// a page fault per 4 KiB).
    pub fn new(capacity: usize, reservation: R) -> std::io::Result<Self> {
        let map = memmap2::MmapOptions::new()
            .len(capacity.max(1))
            .populate()
            .map_anon()?;
        Ok(Self {
            map,
            len: 0,
            reservation,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// Appends as much of `data` as fits; returns how many bytes went in.
    pub fn fill(&mut self, data: &[u8]) -> usize {
        let take = data.len().min(self.capacity() - self.len);
        self.map[self.len..self.len + take].copy_from_slice(&data[..take]);
        self.len += take;
        take
    }

    /// Replaces the bytes at `at` (within those written) with `bytes`: an entry's header, once
    /// its values are known.
    pub fn overwrite(&mut self, at: usize, bytes: &[u8]) {
        assert!(
            at + bytes.len() <= self.len,
            "overwrite past what was written"
        );
        self.map[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Forgets what was written from `len` on (an entry left out of the archive).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The bytes written so far, as a body that keeps the mapping and the reservation alive.
    pub fn freeze(self) -> Bytes {
        let len = self.len;
        Bytes::from_owner(Frozen {
            map: self.map,
            _reservation: self.reservation,
        })
        .slice(..len)
    }
}

/// What a frozen part's `Bytes` owns.
struct Frozen<R> {
    map: memmap2::MmapMut,
    _reservation: R,
}

impl<R> AsRef<[u8]> for Frozen<R> {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn reservations_come_back_when_dropped_and_waiters_are_served_in_order() {
        let budget = BufferBudget::new(10 * MIB, 0);
        let first = budget.reserve(8 * MIB).await;
        assert_eq!(budget.available(), 2 * MIB);
        assert!(budget.try_reserve(4 * MIB).is_none());
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(4 * MIB).await.bytes() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Somebody waits ahead: a small try does not jump the queue.
        assert!(budget.try_reserve(MIB).is_none());
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.unwrap(), 4 * MIB);
        assert_eq!(budget.available(), 10 * MIB);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_takes_all_of_it_instead_of_waiting_forever() {
        let budget = BufferBudget::new(4 * MIB, 0);
        let all = budget.reserve(64 * MIB).await;
        assert_eq!(budget.available(), 0);
        drop(all);
        assert_eq!(budget.available(), 4 * MIB);
    }

    #[tokio::test]
    async fn a_job_keeps_its_floor_and_borrows_more_parts_only_while_the_budget_has_them() {
        let budget = BufferBudget::new(20 * MIB, 0);
        let job = Arc::new(PartMemory::reserve(&budget, 8 * MIB).await);
        assert_eq!(budget.available(), 12 * MIB);
        let first = job.try_take(8 * MIB).expect("the floor");
        assert!(matches!(first, PartPermit::Floor { .. }));
        let second = job.try_take(8 * MIB).expect("free budget");
        assert!(matches!(second, PartPermit::Shared(_)));
        assert!(job.try_take(8 * MIB).is_none(), "4 MiB left");
        let waiting = tokio::spawn({
            let job = job.clone();
            async move { job.take_floor(8 * MIB).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the floor is in use");
        drop(first);
        let again = waiting.await.unwrap();
        assert!(matches!(again, PartPermit::Floor { .. }));
        drop((second, again));
        assert_eq!(budget.available(), 12 * MIB, "the floor stays with the job");
    }

    #[tokio::test]
    async fn a_frozen_part_holds_its_reservation_until_its_last_handle_is_dropped() {
        let budget = BufferBudget::new(16 * MIB, 0);
        let mut part = PartBuffer::new(8 * MIB, budget.reserve(8 * MIB).await).unwrap();
        assert_eq!(part.fill(&[7u8; 5 * MIB]), 5 * MIB);
        assert_eq!(
            part.fill(&[9u8; 5 * MIB]),
            3 * MIB,
            "only what fits goes in"
        );
        assert_eq!(part.len(), part.capacity());
        let body = part.freeze();
        assert_eq!(body.len(), 8 * MIB);
        assert_eq!((body[0], body[5 * MIB - 1], body[5 * MIB]), (7, 7, 9));
        let retry = body.clone();
        drop(body);
        assert_eq!(budget.available(), 8 * MIB, "a retry still holds the part");
        drop(retry);
        assert_eq!(budget.available(), 16 * MIB);
    }

    #[tokio::test]
    async fn a_short_last_part_is_only_what_was_written() {
        let mut part = PartBuffer::new(MIB, ()).unwrap();
        part.fill(b"end of the archive");
        assert_eq!(&part.freeze()[..], b"end of the archive");
    }
}
