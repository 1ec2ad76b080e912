//! Background operations of Leases. A reconcile never waits for Docker work that can take long
//! (pulls, startup verification, volume copies): it starts the operation here and returns, so
//! that the next event of the Lease — a close, a delete, an expiry — is handled at once and can
//! cancel the operation ([`Tasks::cancel`] drops its future and waits for it to end). When an
//! operation finishes, its [`Finished`] outcome is kept for the Lease and the Lease is queued
//! for a reconcile, which applies the outcome through the state machine.
//!
//! At most one operation runs per Lease (kube-runtime already runs at most one reconcile per
//! object, and a reconcile replaces or keeps the running operation, never adds a second).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::worker::Outcome;

/// A kind of background operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Pending → Provisioning → Ready.
    Provision,
    /// Ready/Failed → Updating → Ready.
    Update,
    /// Ready/Failed → Restarting → Ready.
    Restart,
    /// → Deprovisioning → Closed/Retained.
    Deprovision,
}

impl Op {
    /// Lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Provision => "provision",
            Op::Update => "update",
            Op::Restart => "restart",
            Op::Deprovision => "deprovision",
        }
    }
}

/// What a reconcile sees of a Lease's operation.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskView {
    /// None runs and none finished unseen.
    Idle,
    /// Running: which operation, for which configuration (`key`), since when.
    Running {
        /// The operation.
        op: Op,
        /// What it works on (the config hash, revision, …): a different key means it is stale.
        key: String,
    },
    /// Finished; the outcome has not been applied yet.
    Finished(Box<Finished>),
}

/// A finished operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The operation.
    pub op: Op,
    /// Its key.
    pub key: String,
    /// What it achieved.
    pub outcome: Outcome,
    /// When it started.
    pub started_at: Time,
}

struct Running {
    op: Op,
    key: String,
    token: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// Operations by Lease uid.
pub struct Tasks<R> {
    running: Mutex<HashMap<String, Running>>,
    finished: std::sync::Arc<Mutex<HashMap<String, Finished>>>,
    wake: mpsc::UnboundedSender<R>,
}

impl<R> std::fmt::Debug for Tasks<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish()
    }
}

impl<R: Clone + Send + 'static> Tasks<R> {
    /// A table whose finished operations send their reference to `wake`.
    pub fn new(wake: mpsc::UnboundedSender<R>) -> Self {
        Self { running: Mutex::new(HashMap::new()), finished: Default::default(), wake }
    }

    /// What runs or finished for `uid`.
    pub fn view(&self, uid: &str) -> TaskView {
        if let Some(f) = self.finished.lock().unwrap_or_else(|e| e.into_inner()).get(uid) {
            return TaskView::Finished(Box::new(f.clone()));
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(uid) {
            Some(r) if !r.handle.is_finished() => TaskView::Running { op: r.op, key: r.key.clone() },
            Some(_) => {
                // Ended without an outcome (cancelled, or panicked): nothing runs.
                running.remove(uid);
                TaskView::Idle
            }
            None => TaskView::Idle,
        }
    }

    /// Marks the finished outcome of `uid` as applied.
    pub fn take_finished(&self, uid: &str) -> Option<Finished> {
        self.finished.lock().unwrap_or_else(|e| e.into_inner()).remove(uid)
    }

    /// Starts `work` for `uid`. Must not be called while one runs (cancel it first).
    pub fn spawn<F>(&self, uid: &str, op: Op, key: String, reference: R, work: F)
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let token = CancellationToken::new();
        let child = token.clone();
        let finished = self.finished.clone();
        let wake = self.wake.clone();
        let uid_owned = uid.to_string();
        let key_owned = key.clone();
        let started_at = super::now();
        let handle = tokio::spawn(async move {
            let begun = Instant::now();
            let outcome = tokio::select! {
                _ = child.cancelled() => None,
                o = work => Some(o),
            };
            match outcome {
                Some(outcome) => {
                    tracing::debug!(lease_uid = %uid_owned, op = op.as_str(), took = ?begun.elapsed(), "operation finished");
                    finished
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(uid_owned, Finished { op, key: key_owned, outcome, started_at });
                    let _ = wake.send(reference);
                }
                None => tracing::info!(lease_uid = %uid_owned, op = op.as_str(), "operation cancelled"),
            }
        });
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = running.insert(uid.to_string(), Running { op, key, token, handle }) {
            // Defensive: never leave two operations on one Lease.
            old.token.cancel();
        }
    }

    /// Cancels the operation of `uid` (if any) and waits up to `wait` for it to stop; its
    /// outcome, if it finished meanwhile, is discarded. Returns whether one was running.
    pub async fn cancel(&self, uid: &str, wait: Duration) -> bool {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        self.finished.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        let Some(r) = running else { return false };
        r.token.cancel();
        let was_running = !r.handle.is_finished();
        if tokio::time::timeout(wait, r.handle).await.is_err() {
            tracing::warn!(lease_uid = %uid, op = r.op.as_str(), "the operation did not stop in time; it is abandoned");
        }
        self.finished.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        was_running
    }

    /// Forgets everything of `uid` (the Lease is gone).
    pub fn forget(&self, uid: &str) {
        if let Some(r) = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(uid) {
            r.token.cancel();
        }
        self.finished.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    /// Number of running operations (metrics).
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|r| !r.handle.is_finished()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_finished_operation_wakes_its_lease_and_is_seen_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let tasks = Tasks::new(tx);
        tasks.spawn("u1", Op::Provision, "h1".into(), "lease-1", async { Outcome::Transient("pull failed".into()) });
        assert_eq!(rx.recv().await, Some("lease-1"));
        match tasks.view("u1") {
            TaskView::Finished(f) => {
                assert_eq!((f.op, f.key.as_str()), (Op::Provision, "h1"));
                assert_eq!(f.outcome, Outcome::Transient("pull failed".into()));
            }
            other => panic!("{other:?}"),
        }
        assert!(tasks.take_finished("u1").is_some());
        assert_eq!(tasks.view("u1"), TaskView::Idle);
    }

    #[tokio::test]
    async fn cancelling_stops_a_long_operation_promptly_and_drops_its_outcome() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let tasks = Tasks::new(tx);
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("u1", Op::Provision, "h1".into(), "lease-1", async move {
            let _guard = dropped_tx; // dropped when the future is dropped
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Outcome::Transient("never".into())
        });
        assert!(matches!(tasks.view("u1"), TaskView::Running { op: Op::Provision, .. }));
        let started = Instant::now();
        assert!(tasks.cancel("u1", Duration::from_secs(5)).await);
        assert!(started.elapsed() < Duration::from_secs(5), "cancel waited for the whole operation");
        assert!(dropped_rx.await.is_err(), "the operation's future was dropped");
        assert_eq!(tasks.view("u1"), TaskView::Idle);
        assert!(rx.try_recv().is_err(), "a cancelled operation wakes nobody");
        assert!(!tasks.cancel("u1", Duration::from_secs(1)).await, "nothing left to cancel");
    }
}
