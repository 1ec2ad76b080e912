//! The watch machinery of the store: the in-memory history window of recent changes (what a
//! watch resuming from a `resourceVersion` replays, and what a paged list undoes to serve a
//! consistent snapshot) and the fan-out of new changes to live watchers.
//!
//! Fan-out never waits: each watcher has a bounded buffer, and a watcher whose buffer is full is
//! dropped and told to list again ([`StoreError::WatcherTooSlow`]) instead of holding back the
//! writer that publishes. (sled's own `watch_prefix` is not used for this: an undrained
//! subscriber there blocks writers.)

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use tokio::sync::mpsc;

use super::{ResourceRef, StoreError, WatchEvent, WatchStream};

/// The last `capacity` changes of every resource, in `resourceVersion` order.
#[derive(Debug)]
pub(super) struct History {
    events: VecDeque<WatchEvent>,
    capacity: usize,
    /// Every change with a `resourceVersion` greater than this is in `events`.
    complete_after: u64,
}

impl History {
    /// An empty history that is complete after `resource_version` (the store's state when
    /// opened: nothing older can be replayed).
    pub(super) fn new(capacity: usize, resource_version: u64) -> Self {
        Self { events: VecDeque::with_capacity(capacity.min(4096)), capacity, complete_after: resource_version }
    }

    /// Appends a change (changes arrive in `resourceVersion` order), forgetting the oldest when
    /// full.
    pub(super) fn push(&mut self, event: WatchEvent) {
        if self.capacity == 0 {
            self.complete_after = event.resource_version;
            return;
        }
        if self.events.len() == self.capacity
            && let Some(old) = self.events.pop_front()
        {
            self.complete_after = old.resource_version;
        }
        self.events.push_back(event);
    }

    /// The oldest `resourceVersion` from which every later change is known.
    pub(super) fn complete_after(&self) -> u64 {
        self.complete_after
    }

    /// Changes with a `resourceVersion` greater than `since`, oldest first; `None` when some of
    /// them were forgotten already.
    pub(super) fn after(&self, since: u64) -> Option<impl Iterator<Item = &WatchEvent>> {
        if since < self.complete_after {
            return None;
        }
        let first = self.events.partition_point(|e| e.resource_version <= since);
        Some(self.events.range(first..))
    }
}

/// What a live watcher and the fan-out share.
#[derive(Debug, Default)]
struct Lag {
    /// Set when the fan-out dropped the watcher because its buffer was full.
    overflowed: AtomicBool,
}

/// One live watcher.
#[derive(Debug)]
struct Slot {
    namespace: Option<String>,
    tx: mpsc::Sender<WatchEvent>,
    lag: Arc<Lag>,
}

/// Live watchers by resource.
#[derive(Debug)]
pub(super) struct Watchers {
    by_resource: HashMap<ResourceRef, Vec<Slot>>,
    buffer: usize,
}

impl Watchers {
    /// No watchers; each new one gets a buffer of `buffer` events.
    pub(super) fn new(buffer: usize) -> Self {
        Self { by_resource: HashMap::new(), buffer: buffer.max(1) }
    }

    /// Delivers a change to every watcher of its resource and namespace, dropping watchers that
    /// are gone or too far behind. Never blocks.
    pub(super) fn publish(&mut self, event: &WatchEvent) {
        let Some(slots) = self.by_resource.get_mut(&event.object.key.resource) else { return };
        slots.retain(|slot| {
            if slot.namespace.as_deref().is_some_and(|ns| ns != event.object.key.namespace) {
                return !slot.tx.is_closed();
            }
            match slot.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slot.lag.overflowed.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Registers a watcher and returns its stream: `replay` first, then every change published
    /// after this call whose `resourceVersion` is greater than `since`.
    ///
    /// The caller holds the lock under which changes are published, so nothing falls between
    /// `replay` and the live changes.
    pub(super) fn subscribe(
        &mut self,
        resource: &ResourceRef,
        namespace: Option<&str>,
        since: u64,
        replay: Vec<WatchEvent>,
    ) -> WatchStream {
        let (tx, rx) = mpsc::channel(self.buffer);
        let lag = Arc::new(Lag::default());
        let slots = self.by_resource.entry(resource.clone()).or_default();
        // Watchers that went away while their resource was quiet are cleaned up here.
        slots.retain(|s| !s.tx.is_closed());
        slots.push(Slot { namespace: namespace.map(str::to_string), tx, lag: lag.clone() });
        let last = replay.last().map_or(since, |e| e.resource_version);
        let live = Live { rx, lag, last, capacity: self.buffer, finished: false };
        futures::stream::iter(replay.into_iter().map(Ok)).chain(futures::stream::unfold(live, Live::next)).boxed()
    }
}

/// The live part of one watch stream.
struct Live {
    rx: mpsc::Receiver<WatchEvent>,
    lag: Arc<Lag>,
    /// The last `resourceVersion` delivered (or the starting point).
    last: u64,
    capacity: usize,
    finished: bool,
}

impl Live {
    async fn next(mut self) -> Option<(Result<WatchEvent, StoreError>, Self)> {
        if self.finished {
            return None;
        }
        loop {
            match self.rx.recv().await {
                // A watch from a future resourceVersion skips what it asked not to see.
                Some(ev) if ev.resource_version <= self.last => continue,
                Some(ev) => {
                    self.last = ev.resource_version;
                    return Some((Ok(ev), self));
                }
                None if self.lag.overflowed.load(Ordering::Acquire) => {
                    self.finished = true;
                    let err = StoreError::WatcherTooSlow { resource_version: self.last, capacity: self.capacity };
                    return Some((Err(err), self));
                }
                // The store closed.
                None => return None,
            }
        }
    }
}
