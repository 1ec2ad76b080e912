//! The pure core of orphan collection: [`plan_orphans`] takes one host's listing, the owners the
//! store knows, the orphan policy and the clock, and decides — with no I/O — which berth objects
//! on the host are orphans, what every safety gate says, and which orphans may be removed. The
//! executor ([`super::prune`]) carries the removals out; Host status and `berth plan` show the
//! same value ([`OrphanPlan::to_scan`]).
//!
//! An orphan is a container, network or volume carrying this instance's labels whose owner
//! (kind, namespace, name, uid) is not in the store. Leftovers of an owner that still exists (a
//! removed service, a scaled-down replica) are not orphans: the owner's controller removes them.
//! Objects of another berth instance, and objects without berth's labels, are never considered.
//!
//! Removal is destructive, so it passes six gates, evaluated in this order and all reported:
//! 1. [`OrphanGate::CachesSynced`]: the view of the store is complete;
//! 2. [`OrphanGate::ListingComplete`]: the host listing succeeded;
//! 3. [`OrphanGate::StoreNotEmpty`]: a store that knows no owner while the host carries berth
//!    containers looks lost, and blocks every removal;
//! 4. [`OrphanGate::BelowThreshold`]: more removable orphans than `orphans.threshold` block every
//!    removal (condition `OrphansBlocked`);
//! 5. [`OrphanGate::MinAge`]: per object, younger than `orphans.minAge` waits;
//! 6. [`OrphanGate::VolumesKept`]: volumes are reported, never removed.
//!
//! An operator's confirmation (annotation [`CONFIRM_ANNOTATION`]) waives gates 3 and 4 for one
//! scan, never 1, 2, 5 or 6.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_crds::common::{
    LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID,
    LABEL_ROLE, MANAGED_BY_VALUE, ROLE_RETAINED_VOLUME, ROLE_TENANT_NETWORK,
};
use berth_crds::duration::format_duration;
use berth_crds::host::{GateResult, OrphanRecord, OrphanScan};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::config::{OrphanAction, OrphanConfig};
use crate::controllers::pool::HostSnapshot;

/// Annotation on a Host by which an operator confirms one orphan removal despite the
/// `StoreNotEmpty` and `BelowThreshold` gates (`berth orphans prune --host H --confirm` sets it;
/// the value is a timestamp). The controller removes it once a scan has used it.
pub const CONFIRM_ANNOTATION: &str = "berth.dev/confirm-orphan-prune";

/// The safety gates of orphan removal, in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrphanGate {
    /// berth's view of the store is complete (never act on a partial view).
    CachesSynced,
    /// The host listing succeeded completely.
    ListingComplete,
    /// The store is not suspiciously empty (possible store loss).
    StoreNotEmpty,
    /// The number of removable orphans is at most `orphans.threshold`.
    BelowThreshold,
    /// The object is older than `orphans.minAge`.
    MinAge,
    /// Volumes are never removed.
    VolumesKept,
}

impl OrphanGate {
    /// Every gate, in evaluation order.
    pub const ALL: [OrphanGate; 6] = [
        Self::CachesSynced,
        Self::ListingComplete,
        Self::StoreNotEmpty,
        Self::BelowThreshold,
        Self::MinAge,
        Self::VolumesKept,
    ];

    /// The name shown in status and `berth plan`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CachesSynced => "CachesSynced",
            Self::ListingComplete => "ListingComplete",
            Self::StoreNotEmpty => "StoreNotEmpty",
            Self::BelowThreshold => "BelowThreshold",
            Self::MinAge => "MinAge",
            Self::VolumesKept => "VolumesKept",
        }
    }

    /// Gates that an operator's confirmation may waive.
    pub fn confirmable(self) -> bool {
        matches!(self, Self::StoreNotEmpty | Self::BelowThreshold)
    }
}

/// An owner as recorded in labels and in the store. The uid is part of the identity: a Stack
/// deleted and recreated under the same name is another owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerKey {
    /// `Stack` or `Lease`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl OwnerKey {
    /// The owner named by berth's labels, when all four labels are present.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Self {
            kind: get(LABEL_OWNER_KIND)?,
            namespace: get(LABEL_OWNER_NAMESPACE)?,
            name: get(LABEL_OWNER_NAME)?,
            uid: get(LABEL_OWNER_UID)?,
        })
    }

    /// `kind/namespace/name`.
    pub fn display(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Owners the store holds (Stacks and Leases of every namespace).
pub type KnownOwners = BTreeSet<OwnerKey>;

/// Kind of a Docker object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// A container.
    Container,
    /// A network.
    Network,
    /// A volume.
    Volume,
}

impl ObjectKind {
    /// `container`, `network`, `volume`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Network => "network",
            Self::Volume => "volume",
        }
    }
}

/// What happens (or happened) to one orphan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// To be removed (every gate passed and the action is `Remove`).
    Remove,
    /// Reported only (the action is `Report`).
    Report,
    /// Younger than `minAge`; eligible after the given time.
    Waiting {
        /// Time left until it is old enough.
        eligible_in: Duration,
    },
    /// A host-wide gate blocks removal.
    Blocked(OrphanGate),
    /// A volume: reported, never removed.
    KeptVolume,
    /// berth's labels name no complete owner, so berth cannot attribute it and leaves it alone.
    KeptUnattributed,
    /// Removed by the executor.
    Removed,
    /// Already gone when the executor came (someone else removed it).
    AlreadyGone,
    /// Not removed because it is still in use (a network with containers attached).
    InUse(String),
    /// The removal failed.
    RemoveFailed(String),
}

impl Disposition {
    /// Whether berth tried, or will try, to remove the object.
    pub fn is_removal(&self) -> bool {
        matches!(self, Self::Remove | Self::Removed | Self::AlreadyGone | Self::InUse(_) | Self::RemoveFailed(_))
    }

    /// The text shown in status (`OrphanRecord.action`).
    pub fn describe(&self, min_age: Duration) -> String {
        match self {
            Self::Remove => "Remove".into(),
            Self::Report => "Reported".into(),
            Self::Waiting { eligible_in } => format!(
                "Waiting: younger than minAge {}; eligible in {}",
                format_duration(min_age),
                format_duration(round_up_secs(*eligible_in))
            ),
            Self::Blocked(g) => format!("Kept: removal blocked by gate {}", g.as_str()),
            Self::KeptVolume => "Kept: volumes are never removed by orphan collection".into(),
            Self::KeptUnattributed => {
                "Kept: berth's ownership labels are incomplete; remove it by hand if nothing needs it".into()
            }
            Self::Removed => "Removed".into(),
            Self::AlreadyGone => "Removed (it was already gone)".into(),
            Self::InUse(m) => format!("Kept: still in use ({m})"),
            Self::RemoveFailed(m) => format!("RemoveFailed: {m}"),
        }
    }
}

fn round_up_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// An orphan found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Container, network or volume.
    pub kind: ObjectKind,
    /// Docker id (the name for volumes).
    pub id: String,
    /// Docker name.
    pub name: String,
    /// The missing owner, when the labels name one completely.
    pub owner: Option<OwnerKey>,
    /// Age at the scan.
    pub age: Duration,
    /// What happens to it.
    pub disposition: Disposition,
}

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateOutcome {
    /// The gate.
    pub gate: OrphanGate,
    /// Whether it allows removal.
    pub passed: bool,
    /// Why, in words an operator can act on.
    pub message: String,
}

/// What became of an operator's confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// None was pending.
    NotGiven,
    /// Used by this scan: gates 3 and 4 were waived. The annotation is to be removed.
    Used(String),
    /// Read but without effect (why); the annotation is to be removed.
    Ignored(String, String),
    /// Kept for a later scan (why): this scan has no complete view to act on.
    Held(String, String),
}

impl Confirmation {
    /// Whether the controller should remove the annotation after this scan.
    pub fn consumed(&self) -> bool {
        matches!(self, Self::Used(_) | Self::Ignored(..))
    }

    /// The text shown in status (`OrphanScan.confirmation`).
    pub fn describe(&self) -> String {
        match self {
            Self::NotGiven => String::new(),
            Self::Used(v) => {
                format!("confirmation {v:?} used: gates StoreNotEmpty and BelowThreshold were waived for this scan")
            }
            Self::Ignored(v, why) => format!("confirmation {v:?} ignored: {why}"),
            Self::Held(v, why) => format!("confirmation {v:?} held for a later scan: {why}"),
        }
    }
}

/// Everything [`plan_orphans`] looks at.
#[derive(Debug, Clone)]
pub struct OrphanInput<'a> {
    /// Host name (for messages).
    pub host: &'a str,
    /// This berth instance (label `berth.dev/instance`).
    pub instance: &'a str,
    /// The host's berth objects, or why listing them failed.
    pub listing: Result<&'a HostSnapshot, &'a str>,
    /// Owners in the store.
    pub owners: &'a KnownOwners,
    /// Whether berth's view of the store is complete (informer caches synced, owner lists
    /// complete).
    pub caches_synced: bool,
    /// Orphan policy.
    pub config: &'a OrphanConfig,
    /// The clock.
    pub now: Timestamp,
    /// A pending operator confirmation (the annotation's value).
    pub confirmation: Option<&'a str>,
    /// When earlier scans first saw orphans whose creation time Docker does not report (key:
    /// [`Orphan::seen_key`]); their age counts from then.
    pub first_seen: &'a BTreeMap<String, Timestamp>,
}

/// The result of [`plan_orphans`].
#[derive(Debug, Clone, PartialEq)]
pub struct OrphanPlan {
    /// The requested action.
    pub requested: OrphanAction,
    /// Every gate, in order.
    pub gates: Vec<GateOutcome>,
    /// Orphans: containers, then networks, then volumes, each by name.
    pub orphans: Vec<Orphan>,
    /// What became of a pending confirmation.
    pub confirmation: Confirmation,
    /// The first-seen times to pass to the next scan.
    pub first_seen: BTreeMap<String, Timestamp>,
    /// `minAge`, for messages.
    pub min_age: Duration,
}

impl Orphan {
    /// Key of the object in [`OrphanInput::first_seen`].
    pub fn seen_key(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.id)
    }
}

impl OrphanPlan {
    /// Indexes (into `orphans`) of the removals to carry out, in order: containers before
    /// networks (a network cannot go while containers are attached).
    pub fn removals(&self) -> Vec<usize> {
        let mut idx: Vec<usize> =
            (0..self.orphans.len()).filter(|&i| self.orphans[i].disposition == Disposition::Remove).collect();
        idx.sort_by_key(|&i| self.orphans[i].kind);
        idx
    }

    /// The first gate that failed, if any.
    pub fn blocked_by(&self) -> Option<OrphanGate> {
        self.gates.iter().find(|g| !g.passed).map(|g| g.gate)
    }

    /// `None` when nothing was found, `Remove` when berth removes (or tried to remove) at least
    /// one object, else `Report`.
    pub fn effective_action(&self) -> &'static str {
        if self.orphans.is_empty() {
            "None"
        } else if self.orphans.iter().any(|o| o.disposition.is_removal()) {
            "Remove"
        } else {
            "Report"
        }
    }

    /// The status form, stamped with `time`.
    pub fn to_scan(&self, time: Option<Time>) -> OrphanScan {
        OrphanScan {
            time,
            requested_action: self.requested.as_str().to_string(),
            effective_action: self.effective_action().to_string(),
            blocked_by: self.blocked_by().map(|g| g.as_str().to_string()).unwrap_or_default(),
            gates: self
                .gates
                .iter()
                .map(|g| GateResult { gate: g.gate.as_str().to_string(), passed: g.passed, message: g.message.clone() })
                .collect(),
            orphans: self
                .orphans
                .iter()
                .map(|o| OrphanRecord {
                    object: o.kind.as_str().to_string(),
                    name: o.name.clone(),
                    id: if o.kind == ObjectKind::Volume { String::new() } else { o.id.clone() },
                    owner: o.owner.as_ref().map(OwnerKey::display).unwrap_or_else(|| "unknown".into()),
                    owner_uid: o.owner.as_ref().map(|k| k.uid.clone()).unwrap_or_default(),
                    age_seconds: o.age.as_secs() as i64,
                    action: o.disposition.describe(self.min_age),
                })
                .collect(),
            removed: self.orphans.iter().filter(|o| o.disposition == Disposition::Removed).count() as i64,
            confirmation: self.confirmation.describe(),
        }
    }
}

/// Whether labels mark an object of this berth instance.
fn is_ours(labels: &BTreeMap<String, String>, instance: &str) -> bool {
    labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && labels.get(LABEL_INSTANCE).map(String::as_str) == Some(instance)
}

/// Parses Docker's RFC 3339 creation time; Go's zero time and garbage count as unknown.
fn parse_created(created: Option<&str>) -> Option<Timestamp> {
    let t: Timestamp = created?.parse().ok()?;
    (t.as_second() > 0).then_some(t)
}

fn age_between(created: Timestamp, now: Timestamp) -> Duration {
    let d = now.duration_since(created);
    if d.is_negative() { Duration::ZERO } else { d.unsigned_abs() }
}

/// One listed object: kind, id, name, labels, and its creation time when Docker reports it.
type Listed<'a> = (ObjectKind, &'a str, &'a str, &'a BTreeMap<String, String>, Option<Timestamp>);

/// Decides what orphan collection does on one host. Pure: same input, same plan.
pub fn plan_orphans(input: &OrphanInput<'_>) -> OrphanPlan {
    let now = input.now;
    let min_age = input.config.min_age.0;
    let mut orphans = Vec::new();
    let mut first_seen = BTreeMap::new();
    let mut managed_containers = 0usize;

    if let Ok(snapshot) = input.listing {
        // Each object: (kind, id, name, labels, creation time if Docker reports it).
        let mut objects: Vec<Listed<'_>> = Vec::new();
        for c in &snapshot.containers {
            let created = Timestamp::from_second(c.created).ok().filter(|t| t.as_second() > 0);
            objects.push((ObjectKind::Container, &c.id, &c.name, &c.labels, created));
        }
        for n in &snapshot.networks {
            objects.push((ObjectKind::Network, &n.id, &n.name, &n.labels, parse_created(n.created.as_deref())));
        }
        for v in &snapshot.volumes {
            objects.push((ObjectKind::Volume, &v.name, &v.name, &v.labels, parse_created(v.created.as_deref())));
        }
        for (kind, id, name, labels, created) in objects {
            // The listing is filtered by instance already; checking again means a listing that
            // ignored the filter can never make berth touch another installation's objects.
            if !is_ours(labels, input.instance) {
                continue;
            }
            if kind == ObjectKind::Container {
                managed_containers += 1;
            }
            // Tenant networks and retained volumes outlive any one owner by design: the Lease
            // controller removes them (with the tenant's last Lease; after the retention grace
            // period). Orphan collection neither reports nor touches them.
            if labels.get(LABEL_ROLE).is_some_and(|r| r == ROLE_TENANT_NETWORK || r == ROLE_RETAINED_VOLUME) {
                continue;
            }
            let owner = OwnerKey::from_labels(labels);
            if owner.as_ref().is_some_and(|o| input.owners.contains(o)) {
                continue; // the owner exists: its controller handles leftovers
            }
            let mut orphan = Orphan {
                kind,
                id: id.to_string(),
                name: name.to_string(),
                owner,
                age: Duration::ZERO,
                disposition: Disposition::Report,
            };
            let born = match created {
                Some(t) => t,
                None => {
                    let key = orphan.seen_key();
                    let seen = input.first_seen.get(&key).copied().unwrap_or(now);
                    first_seen.insert(key, seen);
                    seen
                }
            };
            orphan.age = age_between(born, now);
            orphans.push(orphan);
        }
    }
    orphans.sort_by(|a, b| (a.kind, &a.name, &a.id).cmp(&(b.kind, &b.name, &b.id)));

    let removable = |o: &Orphan| o.kind != ObjectKind::Volume && o.owner.is_some();
    let removable_count = orphans.iter().filter(|o| removable(o)).count();
    let volume_count = orphans.iter().filter(|o| o.kind == ObjectKind::Volume).count();
    let threshold = input.config.threshold as usize;
    let action = input.config.action;
    let host = input.host;

    // Gates 1 and 2 decide whether this scan sees enough to act at all, and so whether a
    // pending confirmation can be spent on it.
    let g1 = GateOutcome {
        gate: OrphanGate::CachesSynced,
        passed: input.caches_synced,
        message: if input.caches_synced {
            "berth's view of Hosts, Stacks and Leases is complete".into()
        } else {
            "berth has not yet completed its initial list of Hosts, Stacks and Leases; nothing is removed from a \
             partial view (this clears by itself once the lists complete)"
                .into()
        },
    };
    let g2 = match input.listing {
        Ok(s) => GateOutcome {
            gate: OrphanGate::ListingComplete,
            passed: true,
            message: format!(
                "listed {} containers, {} networks and {} volumes of berth instance {:?}",
                s.containers.len(),
                s.networks.len(),
                s.volumes.len(),
                input.instance
            ),
        },
        Err(e) => GateOutcome {
            gate: OrphanGate::ListingComplete,
            passed: false,
            message: format!(
                "listing berth's objects on host {host} failed: {e}; nothing is reported or removed until a \
                 listing succeeds"
            ),
        },
    };
    let view_complete = g1.passed && g2.passed;

    let confirmation = match input.confirmation {
        None => Confirmation::NotGiven,
        Some(v) if !view_complete => {
            let failed = if g1.passed { OrphanGate::ListingComplete } else { OrphanGate::CachesSynced };
            Confirmation::Held(
                v.to_string(),
                format!(
                    "gate {} failed; the confirmation applies to the first scan with a complete view",
                    failed.as_str()
                ),
            )
        }
        Some(v) if action == OrphanAction::Report => Confirmation::Ignored(
            v.to_string(),
            "orphans.action is Report, so berth only reports orphans; set orphans.action: Remove in the berth \
             config to let it remove them"
                .into(),
        ),
        Some(v) => Confirmation::Used(v.to_string()),
    };
    let waived = matches!(confirmation, Confirmation::Used(_));
    let waive = |mut g: GateOutcome| {
        if !g.passed && waived {
            g.passed = true;
            g.message = format!("{}; waived by the operator's confirmation", g.message);
        }
        g
    };
    let not_evaluated =
        |gate| GateOutcome { gate, passed: false, message: "not evaluated: the host listing did not succeed".into() };

    let g3 = if !g2.passed {
        not_evaluated(OrphanGate::StoreNotEmpty)
    } else if input.owners.is_empty() && managed_containers > 0 {
        waive(GateOutcome {
            gate: OrphanGate::StoreNotEmpty,
            passed: false,
            message: format!(
                "the store knows no Stack or Lease, yet host {host} carries {managed_containers} containers of berth \
                 instance {:?}: possible store loss (a wiped or wrong data directory?), so nothing is removed. If the \
                 store really is meant to be empty, confirm with `berth orphans prune --host {host} --confirm`",
                input.instance
            ),
        })
    } else {
        GateOutcome {
            gate: OrphanGate::StoreNotEmpty,
            passed: true,
            message: format!(
                "the store knows {} owners; host {host} carries {managed_containers} berth containers",
                input.owners.len()
            ),
        }
    };
    let g4 = if !g2.passed {
        not_evaluated(OrphanGate::BelowThreshold)
    } else if removable_count > threshold {
        waive(GateOutcome {
            gate: OrphanGate::BelowThreshold,
            passed: false,
            message: format!(
                "{removable_count} removable orphans exceed orphans.threshold {threshold}, so nothing is removed \
                 until an operator confirms with `berth orphans prune --host {host} --confirm` (annotation {})",
                CONFIRM_ANNOTATION
            ),
        })
    } else {
        GateOutcome {
            gate: OrphanGate::BelowThreshold,
            passed: true,
            message: format!("{removable_count} removable orphans, at most orphans.threshold {threshold}"),
        }
    };
    let young: Vec<Duration> =
        orphans.iter().filter(|o| removable(o) && o.age < min_age).map(|o| min_age - o.age).collect();
    let g5 = if !g2.passed {
        not_evaluated(OrphanGate::MinAge)
    } else if young.is_empty() {
        GateOutcome {
            gate: OrphanGate::MinAge,
            passed: true,
            message: format!("no removable orphan is younger than orphans.minAge {}", format_duration(min_age)),
        }
    } else {
        let next = young.iter().min().copied().unwrap_or_default();
        GateOutcome {
            gate: OrphanGate::MinAge,
            passed: false,
            message: format!(
                "{} orphans are younger than orphans.minAge {} and wait until they are older (the next in {})",
                young.len(),
                format_duration(min_age),
                format_duration(round_up_secs(next))
            ),
        }
    };
    let g6 = GateOutcome {
        gate: OrphanGate::VolumesKept,
        passed: true,
        message: format!("{volume_count} orphaned volumes are reported; orphan collection never removes volumes"),
    };
    let gates = vec![g1, g2, g3, g4, g5, g6];
    let host_gate_failed = gates[..4].iter().find(|g| !g.passed).map(|g| g.gate);

    for o in &mut orphans {
        o.disposition = if o.kind == ObjectKind::Volume {
            Disposition::KeptVolume
        } else if o.owner.is_none() {
            Disposition::KeptUnattributed
        } else if let (OrphanAction::Remove, Some(gate)) = (action, host_gate_failed) {
            Disposition::Blocked(gate)
        } else if o.age < min_age {
            Disposition::Waiting { eligible_in: min_age - o.age }
        } else if action == OrphanAction::Report {
            Disposition::Report
        } else {
            Disposition::Remove
        };
    }

    OrphanPlan { requested: action, gates, orphans, confirmation, first_seen, min_age }
}

#[cfg(test)]
mod tests;
