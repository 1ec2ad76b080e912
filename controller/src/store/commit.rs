//! Group commit: writers queue their already-applied (but not yet durable) changes here, and one
//! flusher thread makes everything queued durable with a single flush, then publishes the
//! changes (to readers and watchers, in `resourceVersion` order) and wakes their writers. While a
//! flush runs, new writes pile up and share the next one, so concurrent writers share flushes.
//!
//! The flusher is an OS thread rather than a task: flushing is blocking file I/O, and the store
//! can be opened (and dropped) outside any async runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{StoreError, StoredObject, WatchEvent};

/// One unit of work for the flusher.
pub(super) enum Job {
    /// A change applied to the database, to be made durable and published.
    Write {
        /// The change.
        event: WatchEvent,
        /// Where the writer waits for the outcome.
        reply: oneshot::Sender<Result<StoredObject, StoreError>>,
    },
    /// Answered once everything queued before it is durable and published.
    Barrier {
        /// Where the caller waits.
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// What the flusher drives: the database and the published state.
pub(super) trait Durable: Send + Sync + 'static {
    /// Makes every change applied so far durable (flush and fsync).
    fn make_durable(&self) -> Result<(), String>;
    /// Publishes durable changes, in `resourceVersion` order.
    fn publish(&self, events: &[WatchEvent]);
    /// Records that durability failed: the store must refuse further writes.
    fn fail(&self, message: &str);
}

#[derive(Default)]
struct QueueState {
    jobs: Vec<Job>,
    closed: bool,
    /// The flusher is asleep on the condvar and must be woken by the next submit. While it
    /// flushes, writers queue without a wake-up (a futex call per write, measurable at tens of
    /// thousands of writes per second); it looks at the queue again before it sleeps.
    flusher_waiting: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic elsewhere never leaves the queue half-updated (every change is one push or one
        // take), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counters of the group commit, for benchmarks and diagnostics.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Flushes done.
    pub flushes: AtomicU64,
    /// Writes made durable.
    pub writes: AtomicU64,
}

/// The queue and its flusher thread. Dropping it makes everything queued durable and stops the
/// thread.
pub(super) struct Committer {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

impl Committer {
    /// Starts the flusher thread for `target`.
    pub(super) fn start(target: Arc<dyn Durable>) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::default());
        let stats = Arc::new(CommitStats::default());
        let thread = std::thread::Builder::new().name("berth-store-commit".into()).spawn({
            let queue = queue.clone();
            let stats = stats.clone();
            move || run(&queue, &*target, &stats)
        })?;
        Ok(Self { queue, thread: Some(thread), stats })
    }

    /// Queues a job. Writers call this while holding the store's write lock, so the queue is in
    /// `resourceVersion` order.
    pub(super) fn submit(&self, job: Job) -> Result<(), StoreError> {
        let mut q = self.queue.lock();
        if q.closed {
            return Err(StoreError::Closed);
        }
        q.jobs.push(job);
        let wake = std::mem::take(&mut q.flusher_waiting);
        drop(q);
        if wake {
            self.queue.wake.notify_one();
        }
        Ok(())
    }

    /// The counters.
    pub(super) fn stats(&self) -> &CommitStats {
        &self.stats
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the store's commit thread panicked");
        }
    }
}

/// The flusher loop: take everything queued, make it durable with one flush, publish, reply.
fn run(queue: &Queue, target: &dyn Durable, stats: &CommitStats) {
    loop {
        let jobs = {
            let mut q = queue.lock();
            while q.jobs.is_empty() && !q.closed {
                q.flusher_waiting = true;
                q = queue.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            q.flusher_waiting = false;
            if q.jobs.is_empty() {
                return;
            }
            std::mem::take(&mut q.jobs)
        };
        let outcome = target.make_durable();
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                let events: Vec<WatchEvent> = jobs
                    .iter()
                    .filter_map(|j| match j {
                        Job::Write { event, .. } => Some(event.clone()),
                        Job::Barrier { .. } => None,
                    })
                    .collect();
                stats.writes.fetch_add(events.len() as u64, Ordering::Relaxed);
                target.publish(&events);
                for job in jobs {
                    // A writer that stopped waiting (its request was cancelled) still had its
                    // write committed; nobody is left to tell.
                    match job {
                        Job::Write { event, reply } => drop(reply.send(Ok(event.object))),
                        Job::Barrier { reply } => drop(reply.send(Ok(()))),
                    }
                }
            }
            Err(message) => {
                tracing::error!(error = %message, "flushing the store failed; refusing further writes");
                target.fail(&message);
                for job in jobs {
                    let err = || StoreError::Flush { message: message.clone() };
                    match job {
                        Job::Write { reply, .. } => drop(reply.send(Err(err()))),
                        Job::Barrier { reply } => drop(reply.send(Err(err()))),
                    }
                }
            }
        }
    }
}
