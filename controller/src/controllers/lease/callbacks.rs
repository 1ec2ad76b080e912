//! The persistent callback outbox of the Lease controller: one signed HTTP POST per terminal
//! transition of a Lease (phases Ready, Failed, Closed, Retained), written durably to disk
//! before it is sent, retried with backoff across restarts of berth, and never queued twice for
//! the same Lease and phase.
//!
//! # What the controller does
//! On a terminal transition it builds the body with [`callback_body`], signs it with
//! [`NewDelivery::signed`] (the secret comes from the Lease's `spec.callback.secretRef` or from
//! [`operator_secret`]; only the signature is kept, never the secret) and calls
//! [`Outbox::enqueue`], which returns once the delivery is on disk; only then does it write the
//! new phase to the Lease's status. [`run_sender`] delivers what is queued and calls `on_change`
//! after every attempt, so the controller can mirror [`DeliveryRecord::to_status`] into
//! `status.callbacks`.
//!
//! # What a receiver sees
//! `POST <spec.callback.url>` with a JSON body ([`CallbackPayload`]:
//! `{"apiVersion":"berth.dev/v1alpha1","kind":"LeaseCallback","lease":{"namespace","name","uid"},
//! "tenant","phase","host","message","time","endpoints":[…],"diagnostics":{…}|null}`) and headers
//! - `Content-Type: application/json`
//! - `X-Berth-Timestamp: <unix seconds>`: when the callback was queued (so every retry carries
//!   the same value and signature; it can be old on a late retry);
//! - `X-Berth-Signature: sha256=<hex>`: HMAC-SHA256 with the shared secret over
//!   `"<timestamp>.<body>"` (the exact body bytes); check it with [`verify`];
//! - `X-Berth-Delivery: <lease uid>-<phase>`: the same on every attempt: the receiver's
//!   idempotency key;
//! - `User-Agent: berth/<version>`.
//!
//! Any 2xx answer marks the delivery done; any other answer, a transport error or no answer
//! within 10 s is retried after 1 s, 2 s, 4 s, … up to 5 min between attempts, each delay plus a
//! random jitter of up to the same again, for 7 days after the callback was queued; then it is
//! recorded as Failed. Delivery is at least once: berth stopping between a receiver's 2xx and
//! the write of that outcome sends it again after the restart, so a receiver drops repeated
//! `X-Berth-Delivery` values (and uses them, not the timestamp, against replays).
//!
//! # On disk
//! `<data-dir>/callbacks/<lease uid>-<phase>.json`, one [`DeliveryRecord`] per file, each write
//! atomic (temporary file, fsync, rename, fsync of the directory); left-over temporary files of
//! an interrupted write are removed on open. A finished delivery stays as a tombstone (which is
//! what makes a second enqueue of the same Lease and phase a no-op, across restarts) and is
//! removed 7 days after it finished. A file that cannot be read blocks its key rather than let it
//! be queued again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backon::ExponentialBuilder;
use berth_crds::lease::{CallbackRecord, LeaseDiagnostics, LeaseEndpoint};
use berth_crds::{Lease, LeasePhase, LeaseStatus};
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::LeaseConfig;

/// Header carrying `sha256=<hex>` of the HMAC over `"<timestamp>.<body>"`.
pub const SIGNATURE_HEADER: &str = "X-Berth-Signature";
/// Header carrying the signed timestamp (unix seconds, fixed when the callback was queued).
pub const TIMESTAMP_HEADER: &str = "X-Berth-Timestamp";
/// Header carrying the delivery id `<lease uid>-<phase>`, the same on every attempt.
pub const DELIVERY_HEADER: &str = "X-Berth-Delivery";
/// `kind` of the callback body.
pub const PAYLOAD_KIND: &str = "LeaseCallback";
/// How long one attempt may take, answer included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delivery is retried after it was queued before it is recorded as Failed.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a finished delivery is kept (as the tombstone that prevents a second one).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

const RECORD_VERSION: u32 = 1;
const TEMP_PREFIX: &str = ".tmp-";
const RECORD_SUFFIX: &str = ".json";
/// Most bytes of a refusing receiver's answer quoted in `lastError`.
const ERROR_BODY_QUOTE: usize = 200;

/// Why the outbox, a delivery or a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The outbox directory cannot be created or restricted to berth's user.
    #[error(
        "cannot create the callback outbox directory {dir}: {source}; check that berth's data directory is writable"
    )]
    CreateDir {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The outbox directory cannot be listed.
    #[error("cannot read the callback outbox directory {dir}: {source}; check its permissions")]
    ReadDir {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A delivery record cannot be written durably.
    #[error(
        "cannot write callback {delivery} to {path}: {source}; check free space and permissions of berth's data directory"
    )]
    WriteRecord {
        /// Delivery id.
        delivery: String,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A finished delivery record cannot be removed.
    #[error("cannot remove the finished callback record {path}: {source}")]
    RemoveRecord {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The delivery cannot be queued as given (a bug in the caller).
    #[error("callback {delivery} cannot be queued: {reason}")]
    InvalidDelivery {
        /// Delivery id.
        delivery: String,
        /// What is wrong.
        reason: String,
    },
    /// The operator's secret file cannot be read (the message never quotes its content).
    #[error(
        "cannot read the callback secret file {path} (operator config key leases.callbacks.secretFile): {source}; \
         check that it exists and is readable by berth"
    )]
    ReadSecretFile {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The operator's secret is empty.
    #[error("the callback secret of operator config key {key} is empty; put the HMAC key there")]
    EmptySecret {
        /// `leases.callbacks.secret` or `leases.callbacks.secretFile`.
        key: &'static str,
    },
    /// The HTTP client cannot be built.
    #[error("cannot build the callback HTTP client: {message}")]
    HttpClient {
        /// What reqwest said.
        message: String,
    },
}

// ---- signing ----

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Berth-Signature` value: `sha256=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"`
/// under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// What a receiver does with `X-Berth-Signature` (`header`) and `X-Berth-Timestamp`
/// (`timestamp`): true when the body was signed with `secret`. The comparison takes constant
/// time.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(Ok(expected)) = header.strip_prefix("sha256=").map(hex::decode) else { return false };
    mac(secret, timestamp, body).verify_slice(&expected).is_ok()
}

/// The operator's default callback secret (`leases.callbacks.secret`, or the content of
/// `leases.callbacks.secretFile` without its trailing line break), or `None` when the config
/// sets neither. The secret is never logged nor quoted in an error.
pub fn operator_secret(config: &LeaseConfig) -> Result<Option<Vec<u8>>, CallbackError> {
    let c = &config.callbacks;
    if let Some(secret) = &c.secret {
        if secret.is_empty() {
            return Err(CallbackError::EmptySecret { key: "leases.callbacks.secret" });
        }
        return Ok(Some(secret.as_bytes().to_vec()));
    }
    let Some(path) = &c.secret_file else { return Ok(None) };
    let mut bytes =
        std::fs::read(path).map_err(|source| CallbackError::ReadSecretFile { path: path.clone(), source })?;
    while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(CallbackError::EmptySecret { key: "leases.callbacks.secretFile" });
    }
    Ok(Some(bytes))
}

// ---- the body ----

/// The Lease a callback is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackLease {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid` (a Lease re-created under the same name has another).
    pub uid: String,
}

/// The JSON body of a callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackPayload {
    /// `berth.dev/v1alpha1`.
    pub api_version: String,
    /// [`PAYLOAD_KIND`].
    pub kind: String,
    /// The Lease.
    pub lease: CallbackLease,
    /// Its tenant.
    pub tenant: String,
    /// The phase it entered.
    pub phase: LeasePhase,
    /// Host it is (or was) placed on.
    pub host: Option<String>,
    /// Why it is in this phase.
    pub message: String,
    /// When it entered the phase.
    pub time: Timestamp,
    /// Published ports (for Ready).
    pub endpoints: Vec<LeaseEndpoint>,
    /// What berth gathered (for Failed; `null` otherwise).
    pub diagnostics: Option<LeaseDiagnostics>,
}

/// The body of the callback for `lease` entering `phase` at `time`, with host, message,
/// endpoints and (for Failed only) diagnostics taken from `status`, the status being written
/// with that phase.
pub fn callback_body(lease: &Lease, status: &LeaseStatus, phase: LeasePhase, time: Timestamp) -> Vec<u8> {
    let payload = CallbackPayload {
        api_version: format!("{}/v1alpha1", berth_crds::GROUP),
        kind: PAYLOAD_KIND.into(),
        lease: CallbackLease {
            namespace: lease.namespace_or_default().into(),
            name: lease.name().into(),
            uid: lease.metadata.uid.clone().unwrap_or_default(),
        },
        tenant: lease.spec.tenant.clone(),
        phase,
        host: status.host.clone(),
        message: status.message.clone(),
        time,
        endpoints: status.endpoints.clone(),
        diagnostics: if phase == LeasePhase::Failed { status.diagnostics.clone() } else { None },
    };
    serde_json::to_vec(&payload).expect("a callback payload has only string keys")
}

// ---- records ----

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Queued; sent at `nextAttemptAt`.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Retried for [`GIVE_UP_AFTER`] without success; not sent again.
    Failed,
}

impl DeliveryState {
    /// The spelling in `status.callbacks[].state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Delivered => "Delivered",
            Self::Failed => "Failed",
        }
    }
}

/// The delivery id (and file stem): `<lease uid>-<phase>`.
pub fn delivery_id(lease_uid: &str, phase: LeasePhase) -> String {
    format!("{lease_uid}-{}", phase.as_str())
}

/// One callback as kept on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// Format version of the file.
    pub version: u32,
    /// The Lease's `metadata.uid`.
    pub lease_uid: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// Phase reported.
    pub phase: LeasePhase,
    /// Receiver.
    pub url: String,
    /// The JSON body, exactly as signed.
    pub body: String,
    /// Signed timestamp, unix seconds.
    pub timestamp: i64,
    /// `sha256=<hex>`.
    pub signature: String,
    /// Where the delivery stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When it was queued.
    pub enqueued_at: Timestamp,
    /// When a Pending delivery is sent next.
    pub next_attempt_at: Timestamp,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: String,
    /// When it was Delivered or Failed.
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
}

impl DeliveryRecord {
    /// `<lease uid>-<phase>`: file stem and `X-Berth-Delivery`.
    pub fn id(&self) -> String {
        delivery_id(&self.lease_uid, self.phase)
    }

    /// The entry for the Lease's `status.callbacks`.
    pub fn to_status(&self) -> CallbackRecord {
        CallbackRecord {
            phase: self.phase,
            state: self.state.as_str().into(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
        }
    }

    /// Records the outcome of an attempt made at `now`: Delivered, or the next attempt after the
    /// backoff for this many attempts, or Failed once `give_up_after` has passed since queueing.
    fn record_attempt(
        &mut self,
        outcome: Result<(), String>,
        now: Timestamp,
        backoff: &ExponentialBuilder,
        give_up_after: Duration,
    ) {
        self.attempts = self.attempts.saturating_add(1);
        match outcome {
            Ok(()) => {
                self.state = DeliveryState::Delivered;
                self.last_error.clear();
                self.finished_at = Some(now);
            }
            Err(e) => {
                let queued_for = Duration::try_from(now.duration_since(self.enqueued_at)).unwrap_or_default();
                if queued_for >= give_up_after {
                    self.state = DeliveryState::Failed;
                    self.last_error = format!(
                        "gave up after {} attempts over {}: {e}",
                        self.attempts,
                        berth_crds::duration::format_duration(Duration::from_secs(queued_for.as_secs()))
                    );
                    self.finished_at = Some(now);
                } else {
                    self.last_error = e;
                    let delay = retry_delay(backoff, self.attempts);
                    self.next_attempt_at = now.checked_add(delay).unwrap_or(Timestamp::MAX);
                }
            }
        }
    }
}

/// The delay before the attempt after `attempts` failed ones: the backoff's `attempts`-th
/// delay (built afresh, since the count survives restarts).
fn retry_delay(backoff: &ExponentialBuilder, attempts: u32) -> Duration {
    use backon::BackoffBuilder;
    let mut delays = backoff.build();
    let mut last = Duration::from_secs(1);
    for _ in 0..attempts.max(1) {
        match delays.next() {
            Some(d) => last = d,
            None => break,
        }
    }
    last
}

/// A callback to queue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The Lease's `metadata.uid`.
    pub lease_uid: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// Phase reported.
    pub phase: LeasePhase,
    /// Receiver (`spec.callback.url`).
    pub url: String,
    /// JSON body ([`callback_body`]).
    pub body: Vec<u8>,
    /// Signed timestamp, unix seconds.
    pub timestamp: i64,
    /// [`sign`] of `timestamp` and `body`. The secret itself is never kept.
    pub signature: String,
}

impl NewDelivery {
    /// The callback of `lease` entering `phase`, to `url`, signed with `secret` at `now`.
    pub fn signed(lease: &Lease, phase: LeasePhase, url: &str, body: Vec<u8>, secret: &[u8], now: Timestamp) -> Self {
        let timestamp = now.as_second();
        Self {
            lease_uid: lease.metadata.uid.clone().unwrap_or_default(),
            namespace: lease.namespace_or_default().into(),
            name: lease.name().into(),
            phase,
            url: url.into(),
            signature: sign(secret, timestamp, &body),
            body,
            timestamp,
        }
    }
}

// ---- the outbox ----

#[derive(Default)]
struct Entries {
    records: BTreeMap<String, DeliveryRecord>,
    /// Ids whose files exist but cannot be read: never queued again.
    unreadable: BTreeSet<String>,
}

/// The directory-backed outbox (see the module doc). Methods that write (`enqueue`,
/// `collect_garbage`) block on an fsync, a few milliseconds.
pub struct Outbox {
    dir: PathBuf,
    entries: Mutex<Entries>,
    wake: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 128 && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Outbox {
    /// Opens (creating) the outbox in `dir` (`<data-dir>/callbacks`), reading every record and
    /// removing temporary files left by an interrupted write.
    pub fn open(dir: &Path) -> Result<Self, CallbackError> {
        let create = |source| CallbackError::CreateDir { dir: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(create)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Bodies carry tenants' endpoints and diagnostics: berth's user only.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
        }
        let read_dir = |source| CallbackError::ReadDir { dir: dir.to_path_buf(), source };
        let mut entries = Entries::default();
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let entry = entry.map_err(read_dir)?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            let path = entry.path();
            if file_name.starts_with(TEMP_PREFIX) {
                // A write interrupted before its rename: the record it was replacing (if any) is
                // intact under its own name.
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a left-over temporary callback file");
                }
                continue;
            }
            let Some(id) = file_name.strip_suffix(RECORD_SUFFIX) else { continue };
            let parsed =
                std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| serde_json::from_slice::<DeliveryRecord>(&bytes).map_err(|e| e.to_string()))
                    .and_then(|r| {
                        if r.id() == id { Ok(r) } else { Err(format!("it holds delivery {}, not {id}", r.id())) }
                    });
            match parsed {
                Ok(record) => {
                    entries.records.insert(id.to_string(), record);
                }
                Err(e) => {
                    tracing::error!(
                        path = %path.display(), error = %e,
                        "cannot read a callback record; it is neither sent nor queued again until the file is repaired or removed"
                    );
                    entries.unreadable.insert(id.to_string());
                }
            }
        }
        Ok(Self { dir: dir.to_path_buf(), entries: Mutex::new(entries), wake: Notify::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{RECORD_SUFFIX}"))
    }

    /// Writes `record` atomically: temporary file, fsync, rename over the record, fsync of the
    /// directory.
    fn write(&self, record: &DeliveryRecord) -> Result<(), CallbackError> {
        let id = record.id();
        let path = self.path_of(&id);
        let tmp = self.dir.join(format!("{TEMP_PREFIX}{id}-{}", uuid::Uuid::new_v4().simple()));
        let bytes = serde_json::to_vec_pretty(record).expect("a delivery record has only string keys");
        let result = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|source| CallbackError::WriteRecord { delivery: id, path, source })
    }

    /// Queues `delivery` and returns once it is on disk: `true` if it is new, `false` if a
    /// delivery for this Lease uid and phase was ever queued (pending, delivered or failed, and
    /// not yet collected), in which case nothing changes. Wakes the sender.
    pub fn enqueue(&self, delivery: NewDelivery) -> Result<bool, CallbackError> {
        let id = delivery_id(&delivery.lease_uid, delivery.phase);
        let invalid = |reason: &str| CallbackError::InvalidDelivery { delivery: id.clone(), reason: reason.into() };
        if !valid_uid(&delivery.lease_uid) {
            return Err(invalid("the Lease uid is empty or has characters other than letters, digits, - and _"));
        }
        let body = String::from_utf8(delivery.body).map_err(|_| invalid("the body is not UTF-8"))?;
        if serde_json::from_str::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(invalid("the body is not JSON"));
        }
        let mut entries = self.lock();
        if entries.records.contains_key(&id) || entries.unreadable.contains(&id) {
            return Ok(false);
        }
        let now = Timestamp::now();
        let record = DeliveryRecord {
            version: RECORD_VERSION,
            lease_uid: delivery.lease_uid,
            namespace: delivery.namespace,
            name: delivery.name,
            phase: delivery.phase,
            url: delivery.url,
            body,
            timestamp: delivery.timestamp,
            signature: delivery.signature,
            state: DeliveryState::Pending,
            attempts: 0,
            enqueued_at: now,
            next_attempt_at: now,
            last_error: String::new(),
            finished_at: None,
        };
        // Under the lock, so that two enqueues of one key cannot both write.
        self.write(&record)?;
        entries.records.insert(id, record);
        drop(entries);
        self.kick();
        Ok(true)
    }

    /// The delivery for this Lease uid and phase, if one was queued (and not yet collected).
    pub fn get(&self, lease_uid: &str, phase: LeasePhase) -> Option<DeliveryRecord> {
        self.lock().records.get(&delivery_id(lease_uid, phase)).cloned()
    }

    /// Every delivery of this Lease uid, oldest first (for `status.callbacks`).
    pub fn for_lease(&self, lease_uid: &str) -> Vec<DeliveryRecord> {
        let mut records: Vec<DeliveryRecord> =
            self.lock().records.values().filter(|r| r.lease_uid == lease_uid).cloned().collect();
        records.sort_by_key(|r| r.enqueued_at);
        records
    }

    /// Every Pending delivery, soonest due first.
    pub fn pending(&self) -> Vec<DeliveryRecord> {
        let mut records: Vec<DeliveryRecord> =
            self.lock().records.values().filter(|r| r.state == DeliveryState::Pending).cloned().collect();
        records.sort_by_key(|r| r.next_attempt_at);
        records
    }

    /// Wakes the sender (after an enqueue, which does it itself).
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Removes the finished deliveries that finished at least `ttl` before `now`; returns how
    /// many. After that, the same Lease uid and phase could be queued again.
    pub fn collect_garbage(&self, now: Timestamp, ttl: Duration) -> Result<usize, CallbackError> {
        let mut entries = self.lock();
        let old: Vec<String> = entries
            .records
            .iter()
            .filter(|(_, r)| {
                r.finished_at.is_some_and(|at| Duration::try_from(now.duration_since(at)).is_ok_and(|age| age >= ttl))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            let path = self.path_of(id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CallbackError::RemoveRecord { path, source }),
            }
            entries.records.remove(id);
        }
        if !old.is_empty() {
            sync_dir(&self.dir).map_err(|source| CallbackError::RemoveRecord { path: self.dir.clone(), source })?;
        }
        Ok(old.len())
    }

    /// The Pending delivery due soonest that is not in `busy`.
    fn next_due(&self, busy: &HashSet<String>) -> Option<DeliveryRecord> {
        self.lock()
            .records
            .values()
            .filter(|r| r.state == DeliveryState::Pending && !busy.contains(&r.id()))
            .min_by_key(|r| r.next_attempt_at)
            .cloned()
    }

    /// Applies the outcome of an attempt and persists it. The in-memory record changes even if
    /// the write fails (logged), so this process does not send a delivered callback again.
    fn finish_attempt(
        &self,
        id: &str,
        outcome: Result<(), String>,
        now: Timestamp,
        options: &SenderOptions,
    ) -> Option<DeliveryRecord> {
        let mut entries = self.lock();
        let record = entries.records.get_mut(id)?;
        record.record_attempt(outcome, now, &options.backoff, options.give_up_after);
        let record = record.clone();
        if let Err(e) = self.write(&record) {
            tracing::error!(delivery = %id, error = %e, "cannot record a callback attempt; it may be repeated after a restart");
        }
        Some(record)
    }
}

// ---- the sender ----

/// Called after every attempt with the updated record.
pub type OnChange = Arc<dyn Fn(&DeliveryRecord) + Send + Sync>;

/// Tuning of [`run_sender_with`]; [`Default`] is what [`run_sender`] uses.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Delays between attempts (the count survives restarts; see [`default_backoff`]).
    pub backoff: ExponentialBuilder,
    /// Limit of one attempt, answer included.
    pub attempt_timeout: Duration,
    /// Deliveries attempted at once (so that a few receivers that never answer, each holding an
    /// attempt for its timeout, do not hold up the others).
    pub max_in_flight: usize,
    /// How long after queueing a delivery is retried.
    pub give_up_after: Duration,
    /// How long finished deliveries are kept.
    pub tombstone_ttl: Duration,
    /// How often finished deliveries are collected.
    pub gc_interval: Duration,
}

/// 1 s doubling to a 5 min cap, with jitter, never giving up by count.
pub fn default_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            backoff: default_backoff(),
            attempt_timeout: ATTEMPT_TIMEOUT,
            max_in_flight: 8,
            give_up_after: GIVE_UP_AFTER,
            tombstone_ttl: TOMBSTONE_TTL,
            gc_interval: Duration::from_secs(3600),
        }
    }
}

/// The HTTP client for callbacks: redirects are not followed (a redirected POST would lose its
/// body or go where the tenant did not say), and connections are attempted for at most the
/// attempt timeout.
pub fn http_client() -> Result<reqwest::Client, CallbackError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(ATTEMPT_TIMEOUT)
        .build()
        .map_err(|e| CallbackError::HttpClient { message: error_chain(&e) })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Sends one attempt of `record`; `Err` says why it did not count as delivered.
async fn post(http: &reqwest::Client, record: &DeliveryRecord, timeout: Duration) -> Result<(), String> {
    let sent = http
        .post(&record.url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, concat!("berth/", env!("CARGO_PKG_VERSION")))
        .header(SIGNATURE_HEADER, &record.signature)
        .header(TIMESTAMP_HEADER, record.timestamp.to_string())
        .header(DELIVERY_HEADER, record.id())
        .body(record.body.clone())
        .send()
        .await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(format!("no answer from {} within {}s", record.url, timeout.as_secs()));
        }
        Err(e) => return Err(error_chain(&e)),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut quoted = Vec::new();
    while quoted.len() < ERROR_BODY_QUOTE {
        match response.chunk().await {
            Ok(Some(chunk)) => quoted.extend_from_slice(&chunk),
            _ => break,
        }
    }
    quoted.truncate(ERROR_BODY_QUOTE);
    // One line, whatever the receiver's page looks like.
    let quoted = String::from_utf8_lossy(&quoted).split_whitespace().collect::<Vec<_>>().join(" ");
    Err(if quoted.is_empty() {
        format!("{} answered HTTP {status}", record.url)
    } else {
        format!("{} answered HTTP {status}: {quoted}", record.url)
    })
}

/// [`run_sender_with`] with [`SenderOptions::default`].
pub async fn run_sender(outbox: Arc<Outbox>, http: reqwest::Client, on_change: OnChange, shutdown: CancellationToken) {
    run_sender_with(outbox, http, SenderOptions::default(), on_change, shutdown).await;
}

/// Delivers Pending deliveries in order of due time, up to `options.max_in_flight` at once,
/// until `shutdown`; collects finished ones every `options.gc_interval`. On shutdown, attempts
/// in flight get 2 s to finish; one cut short is sent again after the restart.
pub async fn run_sender_with(
    outbox: Arc<Outbox>,
    http: reqwest::Client,
    options: SenderOptions,
    on_change: OnChange,
    shutdown: CancellationToken,
) {
    let options = Arc::new(options);
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut busy: HashSet<String> = HashSet::new();
    let mut task_ids: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut next_gc = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_gc {
            match outbox.collect_garbage(Timestamp::now(), options.tombstone_ttl) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "collected finished callback records"),
                Err(e) => tracing::warn!(error = %e, "cannot collect finished callback records"),
            }
            next_gc = tokio::time::Instant::now() + options.gc_interval;
        }
        let mut wait = next_gc.saturating_duration_since(tokio::time::Instant::now());
        while busy.len() < options.max_in_flight.max(1) {
            let Some(record) = outbox.next_due(&busy) else { break };
            let now = Timestamp::now();
            if record.next_attempt_at > now {
                let until = Duration::try_from(record.next_attempt_at.duration_since(now)).unwrap_or_default();
                wait = wait.min(until);
                break;
            }
            let id = record.id();
            let (outbox, http, options, on_change) = (outbox.clone(), http.clone(), options.clone(), on_change.clone());
            let handle = tasks.spawn({
                let id = id.clone();
                async move {
                    let outcome = post(&http, &record, options.attempt_timeout).await;
                    match &outcome {
                        Ok(()) => tracing::info!(delivery = %id, url = %record.url, "callback delivered"),
                        Err(e) => tracing::warn!(delivery = %id, attempt = record.attempts + 1, error = %e, "callback not delivered"),
                    }
                    let finished = tokio::task::spawn_blocking(move || {
                        outbox.finish_attempt(&id, outcome, Timestamp::now(), &options)
                    })
                    .await;
                    if let Ok(Some(record)) = finished {
                        on_change(&record);
                    }
                }
            });
            task_ids.insert(handle.id(), id.clone());
            busy.insert(id);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = outbox.wake.notified() => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let task = match done {
                    Ok((task, ())) => task,
                    Err(e) => e.id(),
                };
                if let Some(id) = task_ids.remove(&task) {
                    busy.remove(&id);
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use berth_crds::LeaseSpec;
    use tokio::sync::mpsc;

    use super::*;

    const SECRET: &[u8] = b"s3cr3t-hmac-key-never-shown";

    /// A scripted answer body replaced by everything the request carried.
    const ECHO: &str = "<echo>";

    /// What the test receiver got.
    #[derive(Debug, Clone)]
    struct Received {
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> &str {
            self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
        }
    }

    /// A local HTTP receiver answering from a script (then 200), recording every request.
    #[derive(Default)]
    struct Receiver {
        script: Mutex<VecDeque<(u16, String)>>,
        received: Mutex<Vec<Received>>,
    }

    impl Receiver {
        async fn start(script: &[(u16, &str)]) -> (Arc<Self>, SocketAddr) {
            let receiver = Arc::new(Receiver {
                script: Mutex::new(script.iter().map(|(c, b)| (*c, b.to_string())).collect()),
                ..Default::default()
            });
            async fn handle(
                State(r): State<Arc<Receiver>>,
                headers: HeaderMap,
                body: axum::body::Bytes,
            ) -> (StatusCode, String) {
                r.received.lock().unwrap().push(Received { headers: headers.clone(), body: body.to_vec() });
                let (code, mut text) = r.script.lock().unwrap().pop_front().unwrap_or((200, "ok".into()));
                if text == ECHO {
                    text = format!("you sent {headers:?} {}", String::from_utf8_lossy(&body));
                }
                (StatusCode::from_u16(code).unwrap(), text)
            }
            let app = axum::Router::new().route("/hook", axum::routing::post(handle)).with_state(receiver.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            (receiver, addr)
        }

        fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }

        fn count(&self, delivery: &str) -> usize {
            self.received().iter().filter(|r| r.header(DELIVERY_HEADER) == delivery).count()
        }
    }

    fn lease(uid: &str) -> Lease {
        let mut l = Lease::new("pr-1", LeaseSpec { tenant: "acme".into(), sku: "small".into(), ..Default::default() });
        l.metadata.namespace = Some("previews".into());
        l.metadata.uid = Some(uid.into());
        l
    }

    fn delivery(uid: &str, phase: LeasePhase, addr: SocketAddr) -> NewDelivery {
        let l = lease(uid);
        let status =
            LeaseStatus { host: Some("local".into()), message: "all instances verified".into(), ..Default::default() };
        let body = callback_body(&l, &status, phase, Timestamp::now());
        NewDelivery::signed(&l, phase, &format!("http://{addr}/hook"), body, SECRET, Timestamp::now())
    }

    fn fast() -> SenderOptions {
        SenderOptions {
            backoff: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(10))
                .with_max_delay(Duration::from_millis(50))
                .with_jitter()
                .without_max_times(),
            attempt_timeout: Duration::from_secs(5),
            ..Default::default()
        }
    }

    /// A running sender whose attempts arrive on `changes`.
    struct Sender {
        changes: mpsc::UnboundedReceiver<DeliveryRecord>,
        seen: Vec<DeliveryRecord>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Sender {
        fn start(outbox: &Arc<Outbox>, options: SenderOptions) -> Self {
            let (tx, changes) = mpsc::unbounded_channel();
            let on_change: OnChange = Arc::new(move |r: &DeliveryRecord| {
                let _ = tx.send(r.clone());
            });
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(run_sender_with(
                outbox.clone(),
                http_client().unwrap(),
                options,
                on_change,
                shutdown.clone(),
            ));
            Self { changes, seen: Vec::new(), shutdown, task }
        }

        /// The first change of `id` matching `want` seen so far or within 10 s.
        async fn until(&mut self, id: &str, want: impl Fn(&DeliveryRecord) -> bool) -> DeliveryRecord {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(r) = self.seen.iter().find(|r| r.id() == id && want(r)) {
                    return r.clone();
                }
                let r = tokio::time::timeout_at(deadline, self.changes.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no matching change of {id} within 10s; seen {:?}", self.seen))
                    .expect("sender stopped");
                self.seen.push(r);
            }
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.unwrap();
        }
    }

    #[test]
    fn signatures_match_an_independent_hmac_and_verify_rejects_tampering() {
        // Python: hmac.new(b'key', b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        let expected = "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03";
        assert_eq!(sign(b"key", 1_700_000_000, br#"{"a":1}"#), expected);
        assert!(verify(b"key", 1_700_000_000, br#"{"a":1}"#, expected));
        assert!(!verify(b"other", 1_700_000_000, br#"{"a":1}"#, expected));
        assert!(!verify(b"key", 1_700_000_001, br#"{"a":1}"#, expected));
        assert!(!verify(b"key", 1_700_000_000, br#"{"a":2}"#, expected));
        assert!(!verify(b"key", 1_700_000_000, br#"{"a":1}"#, &expected[7..]));
        assert!(!verify(b"key", 1_700_000_000, br#"{"a":1}"#, "sha256=zz"));
    }

    #[test]
    fn the_body_carries_the_lease_the_phase_and_diagnostics_only_for_failed() {
        let l = lease("u-1");
        let status = LeaseStatus {
            host: Some("edge-1".into()),
            message: "container app-0 exited with code 3".into(),
            endpoints: vec![LeaseEndpoint {
                service: "app".into(),
                instance: 0,
                container_port: 8080,
                protocol: Default::default(),
                host_ip: "0.0.0.0".into(),
                host_port: 49153,
                url: "http://edge-1:49153".into(),
            }],
            diagnostics: Some(LeaseDiagnostics { container: "app-0".into(), exit_code: Some(3), ..Default::default() }),
            ..Default::default()
        };
        let time: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let failed: serde_json::Value =
            serde_json::from_slice(&callback_body(&l, &status, LeasePhase::Failed, time)).unwrap();
        assert_eq!(failed["apiVersion"], "berth.dev/v1alpha1");
        assert_eq!(failed["kind"], "LeaseCallback");
        assert_eq!(failed["lease"], serde_json::json!({"namespace": "previews", "name": "pr-1", "uid": "u-1"}));
        assert_eq!(failed["tenant"], "acme");
        assert_eq!(failed["phase"], "Failed");
        assert_eq!(failed["host"], "edge-1");
        assert_eq!(failed["time"], "2026-01-02T03:04:05Z");
        assert_eq!(failed["endpoints"][0]["hostPort"], 49153);
        assert_eq!(failed["diagnostics"]["exitCode"], 3);
        let ready: serde_json::Value =
            serde_json::from_slice(&callback_body(&l, &status, LeasePhase::Ready, time)).unwrap();
        assert!(ready["diagnostics"].is_null() && ready.get("diagnostics").is_some(), "{ready}");
        let parsed: CallbackPayload =
            serde_json::from_slice(&callback_body(&l, &status, LeasePhase::Closed, time)).unwrap();
        assert_eq!(parsed.phase, LeasePhase::Closed);
    }

    #[tokio::test]
    async fn a_signed_callback_is_delivered_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, addr) = Receiver::start(&[]).await;
        let outbox = Arc::new(Outbox::open(dir.path()).unwrap());
        assert!(outbox.enqueue(delivery("uid-a", LeasePhase::Ready, addr)).unwrap());
        assert!(!outbox.enqueue(delivery("uid-a", LeasePhase::Ready, addr)).unwrap(), "a second enqueue is a no-op");
        let mut sender = Sender::start(&outbox, fast());
        let done = sender.until("uid-a-Ready", |r| r.state == DeliveryState::Delivered).await;
        assert_eq!(done.attempts, 1);
        assert_eq!(
            done.to_status(),
            CallbackRecord {
                phase: LeasePhase::Ready,
                state: "Delivered".into(),
                attempts: 1,
                last_error: String::new()
            }
        );

        // Enqueueing after delivery is still a no-op; another phase is a new callback. Once it is
        // delivered, the first has still been received once.
        assert!(!outbox.enqueue(delivery("uid-a", LeasePhase::Ready, addr)).unwrap());
        assert!(outbox.enqueue(delivery("uid-a", LeasePhase::Closed, addr)).unwrap());
        sender.until("uid-a-Closed", |r| r.state == DeliveryState::Delivered).await;
        sender.stop().await;
        assert_eq!(receiver.count("uid-a-Ready"), 1);
        assert_eq!(receiver.count("uid-a-Closed"), 1);

        let got = receiver.received().into_iter().find(|r| r.header(DELIVERY_HEADER) == "uid-a-Ready").unwrap();
        assert_eq!(got.header("content-type"), "application/json");
        assert!(got.header("user-agent").starts_with("berth/"), "{:?}", got.headers);
        let timestamp: i64 = got.header(TIMESTAMP_HEADER).parse().unwrap();
        assert!(verify(SECRET, timestamp, &got.body, got.header(SIGNATURE_HEADER)));
        assert!(!verify(b"another secret", timestamp, &got.body, got.header(SIGNATURE_HEADER)));
        let payload: CallbackPayload = serde_json::from_slice(&got.body).unwrap();
        assert_eq!((payload.lease.uid.as_str(), payload.phase), ("uid-a", LeasePhase::Ready));
        assert_eq!(payload.message, "all instances verified");
        assert_eq!(outbox.for_lease("uid-a").len(), 2);
        assert!(outbox.pending().is_empty());
    }

    #[tokio::test]
    async fn a_refused_attempt_is_retried_with_the_same_signature() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, addr) = Receiver::start(&[(500, "database is down"), (503, "")]).await;
        let outbox = Arc::new(Outbox::open(dir.path()).unwrap());
        outbox.enqueue(delivery("uid-b", LeasePhase::Failed, addr)).unwrap();
        let mut sender = Sender::start(&outbox, fast());
        let first = sender.until("uid-b-Failed", |r| r.attempts == 1).await;
        assert_eq!(first.state, DeliveryState::Pending);
        assert!(first.last_error.contains("HTTP 500") && first.last_error.contains("database is down"), "{first:?}");
        assert_eq!(first.to_status().state, "Pending");
        let done = sender.until("uid-b-Failed", |r| r.state == DeliveryState::Delivered).await;
        sender.stop().await;
        assert_eq!(done.attempts, 3);
        assert!(done.last_error.is_empty());
        let got = receiver.received();
        assert_eq!(got.len(), 3);
        for r in &got[1..] {
            for h in [SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER] {
                assert_eq!(r.header(h), got[0].header(h), "{h}");
            }
            assert_eq!(r.body, got[0].body);
        }
    }

    #[tokio::test]
    async fn queued_and_delivered_callbacks_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, addr) = Receiver::start(&[(500, "not yet")]).await;
        {
            let outbox = Outbox::open(dir.path()).unwrap();
            assert!(outbox.enqueue(delivery("uid-c", LeasePhase::Retained, addr)).unwrap());
        } // berth stops before sending
        let outbox = Arc::new(Outbox::open(dir.path()).unwrap());
        let pending = outbox.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].id().as_str(), pending[0].attempts), ("uid-c-Retained", 0));

        // One refused attempt, then berth stops: the count and the error survive. A long
        // backoff keeps the next attempt in the future.
        let slow = SenderOptions {
            backoff: ExponentialBuilder::default().with_min_delay(Duration::from_secs(3600)).without_max_times(),
            ..fast()
        };
        let mut sender = Sender::start(&outbox, slow);
        sender.until("uid-c-Retained", |r| r.attempts == 1).await;
        sender.stop().await;
        drop(outbox);
        let outbox = Arc::new(Outbox::open(dir.path()).unwrap());
        let record = outbox.get("uid-c", LeasePhase::Retained).unwrap();
        assert_eq!((record.attempts, record.state), (1, DeliveryState::Pending));
        assert!(record.last_error.contains("not yet"), "{record:?}");
        assert!(record.next_attempt_at > Timestamp::now() + Duration::from_secs(3000));

        // The next attempt is due now (as after a long stop): the restarted sender delivers it.
        {
            let mut entries = outbox.lock();
            entries.records.get_mut("uid-c-Retained").unwrap().next_attempt_at = Timestamp::now();
        }
        let mut sender = Sender::start(&outbox, fast());
        let done = sender.until("uid-c-Retained", |r| r.state == DeliveryState::Delivered).await;
        assert_eq!(done.attempts, 2);
        sender.stop().await;
        drop(outbox);

        // The tombstone outlives another restart: no second callback for this Lease and phase.
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.get("uid-c", LeasePhase::Retained).unwrap().state, DeliveryState::Delivered);
        assert!(!outbox.enqueue(delivery("uid-c", LeasePhase::Retained, addr)).unwrap());
        assert!(outbox.pending().is_empty());
        assert_eq!(receiver.count("uid-c-Retained"), 2, "one refused attempt and one delivery");
    }

    #[tokio::test]
    async fn torn_temporary_files_are_ignored_and_unreadable_records_block_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let torn = dir.path().join(".tmp-uid-d-Ready-0123");
        std::fs::write(&torn, br#"{"version":1,"leaseUid":"uid-d","#).unwrap();
        std::fs::write(dir.path().join("uid-e-Ready.json"), b"\0\0garbage").unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        assert!(outbox.pending().is_empty());
        assert!(!torn.exists(), "the torn temporary file is removed");
        assert!(outbox.get("uid-d", LeasePhase::Ready).is_none());
        assert!(outbox.enqueue(delivery("uid-d", LeasePhase::Ready, addr)).unwrap());
        // The unreadable record may have been sent: it is never queued again by itself.
        assert!(!outbox.enqueue(delivery("uid-e", LeasePhase::Ready, addr)).unwrap());
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.starts_with(TEMP_PREFIX)), "{names:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(dir.path()), 0o700);
            assert_eq!(mode(&dir.path().join("uid-d-Ready.json")), 0o600);
        }
    }

    #[test]
    fn enqueue_refuses_what_it_cannot_store_or_send() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut d = delivery("uid-f", LeasePhase::Ready, addr);
        d.lease_uid = String::new();
        assert!(matches!(outbox.enqueue(d), Err(CallbackError::InvalidDelivery { .. })));
        let mut d = delivery("uid-f", LeasePhase::Ready, addr);
        d.lease_uid = "../../etc/x".into();
        assert!(matches!(outbox.enqueue(d), Err(CallbackError::InvalidDelivery { .. })));
        let mut d = delivery("uid-f", LeasePhase::Ready, addr);
        d.body = b"not json".to_vec();
        assert!(matches!(outbox.enqueue(d), Err(CallbackError::InvalidDelivery { .. })));
        assert!(outbox.pending().is_empty());
    }

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes_and_gives_up_after_the_deadline() {
        let plain = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_factor(2.0)
            .with_max_delay(Duration::from_secs(300))
            .without_max_times();
        let secs: Vec<u64> = [1, 2, 3, 8, 9, 10, 500].iter().map(|&n| retry_delay(&plain, n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 128, 256, 300, 300]);
        // The default adds jitter of up to the delay itself.
        for (n, base) in [(1, 1), (5, 16), (40, 300)] {
            let d = retry_delay(&default_backoff(), n);
            assert!(d >= Duration::from_secs(base) && d <= Duration::from_secs(2 * base), "{n}: {d:?}");
        }

        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        outbox.enqueue(delivery("uid-g", LeasePhase::Closed, addr)).unwrap();
        let options = SenderOptions { backoff: plain, ..Default::default() };
        let now = Timestamp::now();
        let r = outbox.finish_attempt("uid-g-Closed", Err("refused".into()), now, &options).unwrap();
        assert_eq!(r.state, DeliveryState::Pending);
        assert_eq!(r.next_attempt_at, now + Duration::from_secs(1));
        let later = now + GIVE_UP_AFTER + Duration::from_secs(1);
        let r = outbox.finish_attempt("uid-g-Closed", Err("refused".into()), later, &options).unwrap();
        assert_eq!(r.state, DeliveryState::Failed);
        assert!(r.last_error.starts_with("gave up after 2 attempts over 168h") && r.last_error.ends_with("refused"));
        assert!(outbox.pending().is_empty());
        // Finished deliveries are kept for the tombstone TTL, then collected (file included).
        assert_eq!(outbox.collect_garbage(later + Duration::from_secs(60), TOMBSTONE_TTL).unwrap(), 0);
        assert!(!outbox.enqueue(delivery("uid-g", LeasePhase::Closed, addr)).unwrap());
        assert_eq!(outbox.collect_garbage(later + TOMBSTONE_TTL, TOMBSTONE_TTL).unwrap(), 1);
        assert!(outbox.get("uid-g", LeasePhase::Closed).is_none());
        assert!(!dir.path().join("uid-g-Closed.json").exists());
        drop(outbox);
        assert!(Outbox::open(dir.path()).unwrap().get("uid-g", LeasePhase::Closed).is_none());
    }

    #[tokio::test]
    async fn secrets_never_appear_in_errors_or_records() {
        let dir = tempfile::tempdir().unwrap();
        let secret_text = std::str::from_utf8(SECRET).unwrap();
        // A receiver that echoes back everything it got.
        let (receiver, addr) = Receiver::start(&[(401, ECHO)]).await;
        let outbox = Arc::new(Outbox::open(dir.path()).unwrap());
        let d = delivery("uid-h", LeasePhase::Ready, addr);
        assert!(!format!("{d:?}").contains(secret_text));
        outbox.enqueue(d).unwrap();
        // Closed port: a transport error.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        outbox.enqueue(delivery("uid-i", LeasePhase::Ready, closed)).unwrap();
        let slow = SenderOptions {
            backoff: ExponentialBuilder::default().with_min_delay(Duration::from_secs(3600)).without_max_times(),
            ..fast()
        };
        let mut sender = Sender::start(&outbox, slow);
        let refused = sender.until("uid-h-Ready", |r| r.attempts == 1).await;
        let unreachable = sender.until("uid-i-Ready", |r| r.attempts == 1).await;
        sender.stop().await;
        assert!(refused.last_error.contains("HTTP 401") && refused.last_error.contains("you sent"), "{refused:?}");
        assert_eq!(receiver.received().len(), 1);
        assert!(unreachable.last_error.contains(&closed.to_string()), "{unreachable:?}");
        for text in [&refused.last_error, &unreachable.last_error] {
            assert!(!text.contains(secret_text), "{text}");
        }
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(secret_text));
        }

        // The operator's secret: inline, or from a file without its line break; errors name the
        // key and the file, never the content.
        let mut config = LeaseConfig::default();
        assert_eq!(operator_secret(&config).unwrap(), None);
        config.callbacks.secret = Some(secret_text.into());
        assert_eq!(operator_secret(&config).unwrap().unwrap(), SECRET);
        let file = dir.path().join("secret");
        std::fs::write(&file, format!("{secret_text}\n")).unwrap();
        config.callbacks.secret = None;
        config.callbacks.secret_file = Some(file.display().to_string());
        assert_eq!(operator_secret(&config).unwrap().unwrap(), SECRET);
        std::fs::write(&file, "\n").unwrap();
        let err = operator_secret(&config).unwrap_err().to_string();
        assert!(err.contains("leases.callbacks.secretFile") && err.contains("empty"), "{err}");
        config.callbacks.secret_file = Some(dir.path().join("missing").display().to_string());
        let err = operator_secret(&config).unwrap_err().to_string();
        assert!(err.contains("leases.callbacks.secretFile") && err.contains("missing"), "{err}");
        config.callbacks.secret_file = Some(dir.path().display().to_string()); // a directory
        let err = operator_secret(&config).unwrap_err().to_string();
        assert!(!err.contains(secret_text), "{err}");
    }
}
