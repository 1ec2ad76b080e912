//! The Host controller: keeps one Docker connection per Host in the [`HostPool`] (reconnecting
//! with backoff, following the daemon's events, pinging it), writes each Host's status
//! (reachability, readiness, daemon facts, capacity, owner counts, the last orphan scan) only when
//! it changed, and runs the guarded orphan scan on every reconcile (at the resync interval, when
//! reachability changes, and when the Host's spec or annotations change, e.g. an operator's
//! confirmation).
//!
//! Layout, one file per concept: [`connection`] (the connection lifecycle state machine),
//! [`link`] (the per-host connection task), [`docker_events`] (which Docker events concern an
//! owner), [`metered`] (Docker call metrics), [`orphans`] (the pure orphan scan and its gates),
//! [`prune`] (the executor of orphan removal), [`status`] (the pure status computation) and
//! `controller.rs` (the kube-runtime wiring: reconcile, error policy, registration of `local`).
//!
//! `berth serve` starts it with one call: [`run`].
//!
//! [`HostPool`]: crate::controllers::pool::HostPool

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::controllers::context::Context;

pub mod connection;
mod controller;
pub mod docker_events;
pub mod link;
pub mod metered;
pub mod orphans;
pub mod prune;
pub mod status;

pub use controller::event_reason;
pub use orphans::{CONFIRM_ANNOTATION, OrphanGate, OrphanInput, OrphanPlan, plan_orphans};

/// Timing of the Host controller. The defaults suit production; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostControllerOptions {
    /// First delay before reconnecting after a failure or a drop.
    pub reconnect_min_delay: Duration,
    /// Longest delay between reconnect attempts (the delay doubles up to it, with jitter).
    pub reconnect_max_delay: Duration,
    /// How often a connected daemon is pinged, so that one that silently disappears is noticed.
    pub ping_interval: Duration,
    /// Limit of a connect (with `info`) and of a ping.
    pub call_timeout: Duration,
    /// Oldest shared snapshot the orphan scan accepts (Docker events invalidate it anyway).
    pub observe_max_age: Duration,
    /// First delay before retrying a failed reconcile.
    pub retry_min_delay: Duration,
    /// Longest delay before retrying a failed reconcile.
    pub retry_max_delay: Duration,
}

impl Default for HostControllerOptions {
    fn default() -> Self {
        Self {
            reconnect_min_delay: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(30),
            ping_interval: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            observe_max_age: Duration::from_secs(2),
            retry_min_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
        }
    }
}

impl HostControllerOptions {
    /// The delays between reconnect attempts (fresh after every successful connection).
    pub fn reconnect_backoff(&self) -> backon::ExponentialBackoff {
        link::exponential(self.reconnect_min_delay, self.reconnect_max_delay)
    }

    /// The delays between retries of a failing reconcile (fresh after every success).
    pub fn retry_backoff(&self) -> backon::ExponentialBackoff {
        link::exponential(self.retry_min_delay, self.retry_max_delay)
    }
}

/// Why a Host reconcile failed. Every one is transient: the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Listing Stacks and Leases (the owners orphans are judged against) failed.
    #[error(
        "listing Stacks and Leases to tell orphans from owned objects failed: {source}; nothing was removed, berth \
         retries with backoff"
    )]
    ListOwners {
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Removing the orphan-prune confirmation annotation failed (so it was not used).
    #[error(
        "removing the used annotation {annotation} from Host {host} failed: {source}; no orphan was removed in this \
         scan, berth retries with backoff"
    )]
    RemoveConfirmation {
        /// Host name.
        host: String,
        /// The annotation.
        annotation: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the Host's status failed.
    #[error("writing the status of Host {host} failed: {source}; berth retries with backoff")]
    WriteStatus {
        /// Host name.
        host: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Runs the Host controller until `shutdown` is cancelled: registers the `local` Host when no
/// Host exists, then reconciles every Host. Connections are closed on return.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    run_with(ctx, shutdown, HostControllerOptions::default()).await
}

/// [`run`] with explicit timing.
pub async fn run_with(ctx: Arc<Context>, shutdown: CancellationToken, options: HostControllerOptions) {
    controller::run(ctx, shutdown, options).await
}
