//! Events of the Stack controller: the reason constants (what `kubectl get events` and
//! `berth describe` show), the [`Note`] the executor emits for every action it takes, and the
//! [`Notify`] sink it emits them to. In the controller the sink forwards to a single publisher
//! task that writes `events.k8s.io/v1` Events through kube-runtime's `Recorder`, in order; in unit
//! tests it collects them.

use std::sync::Mutex;

/// Reasons of events and conditions.
pub mod reason {
    /// A container was created and started.
    pub const CREATED: &str = "Created";
    /// A container was replaced by one with the desired configuration.
    pub const RECREATED: &str = "Recreated";
    /// A stopped container was started.
    pub const STARTED: &str = "Started";
    /// An unhealthy container was restarted.
    pub const RESTARTED: &str = "Restarted";
    /// A container the Stack no longer wants was removed.
    pub const REMOVED: &str = "Removed";
    /// An image pull started.
    pub const PULLING: &str = "Pulling";
    /// An image was pulled.
    pub const PULLED: &str = "Pulled";
    /// An image could not be pulled.
    pub const PULL_FAILED: &str = "PullFailed";
    /// A network was created.
    pub const NETWORK_CREATED: &str = "NetworkCreated";
    /// A network was removed.
    pub const NETWORK_REMOVED: &str = "NetworkRemoved";
    /// A container was connected to a re-created network.
    pub const NETWORK_CONNECTED: &str = "NetworkConnected";
    /// A volume was created.
    pub const VOLUME_CREATED: &str = "VolumeCreated";
    /// A volume was removed (`retain: false` at deletion).
    pub const VOLUME_REMOVED: &str = "VolumeRemoved";
    /// A volume was kept at deletion (`retain: true`).
    pub const VOLUME_RETAINED: &str = "VolumeRetained";
    /// Drift was found (the note says the tier, what, and whether it is corrected).
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    /// A replacement did not become ready and the previous configuration was put back.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// A container did not become ready in time.
    pub const NOT_READY: &str = "NotReady";
    /// A name berth wants is used by something berth does not own.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// The Stack cannot be applied as written.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A reconcile pass failed (the note says why; it is retried).
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
    /// Every service runs as specified on every host.
    pub const READY: &str = "Ready";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// `spec.suspend` went back to false.
    pub const RESUMED: &str = "Resumed";
    /// A host did not answer.
    pub const HOST_UNREACHABLE: &str = "HostUnreachable";
    /// The Stack was removed from a host.
    pub const CLEANED_UP: &str = "CleanedUp";
    /// Removal from a host is blocked (host unreachable); the finalizer stays.
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
}

/// One thing the controller did or found, as an event of the Stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// A Warning (something is wrong) rather than a Normal event.
    pub warning: bool,
    /// Reason (see [`reason`]).
    pub reason: &'static str,
    /// What the controller did, a verb (`Create`, `Pull`, `Reconcile`, …).
    pub action: &'static str,
    /// For a person; never contains a secret value.
    pub message: String,
}

impl Note {
    /// A Normal event.
    pub fn normal(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Self { warning: false, reason, action, message: message.into() }
    }

    /// A Warning event.
    pub fn warning(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Self { warning: true, reason, action, message: message.into() }
    }
}

/// Where the executor reports what it does. Must not block.
pub trait Notify: Send + Sync {
    /// An event.
    fn note(&self, note: Note);
    /// Progress of a long operation (an image pull), for the `Progressing` condition.
    fn progress(&self, _message: String) {}
}

/// A [`Notify`] that keeps everything, for tests and for callers that publish afterwards.
#[derive(Debug, Default)]
pub struct Collect {
    notes: Mutex<Vec<Note>>,
    progress: Mutex<Vec<String>>,
}

impl Collect {
    /// Everything noted so far.
    pub fn notes(&self) -> Vec<Note> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reasons noted so far, in order.
    pub fn reasons(&self) -> Vec<&'static str> {
        self.notes().iter().map(|n| n.reason).collect()
    }

    /// Progress messages so far.
    pub fn progress_messages(&self) -> Vec<String> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Notify for Collect {
    fn note(&self, note: Note) {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).push(note);
    }

    fn progress(&self, message: String) {
        self.progress.lock().unwrap_or_else(|e| e.into_inner()).push(message);
    }
}
