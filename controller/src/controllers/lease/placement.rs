//! Placement: which host a Pending Lease goes to. Pure: [`candidates`] turns the Host objects
//! (readiness, cordon, labels, capacity), the connections' last listings, the Leases of the store
//! and in-memory reservations into what each host has free (allocations of live Leases from their
//! status, and from container labels for containers whose Lease the store does not know), and
//! [`place`] picks, among Ready, uncordoned hosts matching the Lease's selector where the Lease
//! fits, the least-loaded one after placement (the larger of its CPU and memory utilisation),
//! ties broken by name. When nothing fits it says why for every host, so the Lease's condition
//! tells an operator what to change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use berth_crds::Lease;
use berth_crds::common::{ConditionStatus, LABEL_OWNER_KIND, LABEL_OWNER_UID, LABEL_SKU, find_condition};
use berth_crds::host::Host;
use berth_crds::lease::{LeaseAllocation, LeasePhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::machine::is_live;
use super::render;
use crate::config::Sku;
use crate::controllers::pool::HostSnapshot;
use crate::docker::ContainerState;

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Host name.
    pub name: String,
    /// Host labels.
    pub labels: BTreeMap<String, String>,
    /// `Ready=True` and connected.
    pub ready: bool,
    /// `spec.cordoned`.
    pub cordoned: bool,
    /// CPUs and memory (MiB) available to Leases, when known.
    pub capacity: Option<(f64, i64)>,
    /// What live Leases already hold there.
    pub allocated: LeaseAllocation,
}

/// Why one host cannot take a Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not `Ready=True`, or not connected.
    HostNotReady,
    /// `spec.cordoned`.
    HostCordoned,
    /// Neither the daemon nor `spec.capacity` gave its CPUs and memory yet.
    CapacityUnknown,
    /// What live Leases hold there leaves too little room.
    InsufficientCapacity,
}

impl RejectReason {
    /// The reason as plans show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostNotReady => "HostNotReady",
            Self::HostCordoned => "HostCordoned",
            Self::CapacityUnknown => "CapacityUnknown",
            Self::InsufficientCapacity => "InsufficientCapacity",
        }
    }
}

/// Why one matching host was passed over.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Host name.
    pub host: String,
    /// Why.
    pub reason: RejectReason,
    /// In words, starting with the host's name.
    pub message: String,
}

/// Why a Lease cannot be placed now.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unplaceable {
    /// The selector is malformed.
    #[error("spec.hostSelector is invalid: {0}")]
    InvalidSelector(String),
    /// No host matches the selector (or none exists).
    #[error("no Host matches spec.hostSelector{0}; label a Host to match or change the selector")]
    NoMatchingHost(String),
    /// Hosts match, but none is Ready, uncordoned and with room.
    #[error("no matching Host has room for {cpus} CPUs and {memory_mb} MiB: {}", join(.rejected))]
    InsufficientCapacity {
        /// CPUs asked for.
        cpus: f64,
        /// Memory asked for.
        memory_mb: i64,
        /// Per matching host, why not.
        rejected: Vec<Rejection>,
    },
}

fn join(rejected: &[Rejection]) -> String {
    rejected.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("; ")
}

impl Unplaceable {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSelector(_) => "InvalidSelector",
            Self::NoMatchingHost(_) => "NoMatchingHost",
            Self::InsufficientCapacity { .. } => "InsufficientCapacity",
        }
    }
}

/// Picks the host of a Lease needing `request`, optionally restricted to `only` (the host
/// holding the volumes a restore adopts).
pub fn place(
    request: &LeaseAllocation,
    selector: Option<&LabelSelector>,
    only: Option<&str>,
    candidates: &[Candidate],
) -> Result<String, Unplaceable> {
    let selector = match selector {
        Some(s) => Some(Selector::try_from(s.clone()).map_err(|e| Unplaceable::InvalidSelector(e.to_string()))?),
        None => None,
    };
    let matching: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| selector.as_ref().is_none_or(|s| s.matches(&c.labels)))
        .filter(|c| only.is_none_or(|o| o == c.name))
        .collect();
    if matching.is_empty() {
        let what = match (only, selector.is_some()) {
            (Some(h), _) => format!(" and holds the restored volumes (host {h})"),
            (None, _) => String::new(),
        };
        return Err(Unplaceable::NoMatchingHost(what));
    }
    let mut rejected = Vec::new();
    let mut reject = |c: &Candidate, reason: RejectReason, message: String| {
        rejected.push(Rejection { host: c.name.clone(), reason, message });
    };
    let mut best: Option<(f64, &str)> = None;
    for c in matching {
        if !c.ready {
            reject(c, RejectReason::HostNotReady, format!("{} is not Ready", c.name));
            continue;
        }
        if c.cordoned {
            reject(c, RejectReason::HostCordoned, format!("{} is cordoned", c.name));
            continue;
        }
        let Some((cpus, memory)) = c.capacity else {
            reject(c, RejectReason::CapacityUnknown, format!("{} has not reported its capacity yet", c.name));
            continue;
        };
        let used_cpus = c.allocated.cpus + request.cpus;
        let used_mem = c.allocated.memory_mb + request.memory_mb;
        // A small tolerance: 0.1 + 0.2 must fit in 0.3.
        if used_cpus > cpus + 1e-9 || used_mem > memory {
            let message = format!(
                "{} has {:.2} of {:.2} CPUs and {} of {} MiB free",
                c.name,
                (cpus - c.allocated.cpus).max(0.0),
                cpus,
                (memory - c.allocated.memory_mb).max(0),
                memory
            );
            reject(c, RejectReason::InsufficientCapacity, message);
            continue;
        }
        let load = (used_cpus / cpus.max(f64::MIN_POSITIVE)).max(used_mem as f64 / (memory.max(1) as f64));
        if best.is_none_or(|(l, n)| load < l - 1e-12 || ((load - l).abs() <= 1e-12 && c.name.as_str() < n)) {
            best = Some((load, &c.name));
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_string()),
        None => Err(Unplaceable::InsufficientCapacity { cpus: request.cpus, memory_mb: request.memory_mb, rejected }),
    }
}

/// A host's connection as placement sees it.
#[derive(Debug, Clone, Default)]
pub struct HostLink {
    /// Host name.
    pub name: String,
    /// Connected and answering.
    pub reachable: bool,
    /// Its last listing, however old (containers of unknown Leases are counted from it).
    pub last_listing: Option<Arc<HostSnapshot>>,
}

/// The hosts as placement sees them: every Host object, Ready when its condition says so and
/// its connection answers, with what live Leases hold there. Held are: `reservations` (uid →
/// host and allocation: placements not yet visible in `leases`), the `status.allocated` of every
/// other live, placed Lease (Closed, Retained and Pending ones hold nothing), and one SKU per
/// running container of a Lease `leases` does not hold (gone without its containers), counted
/// from its labels.
pub fn candidates<'a>(
    leases: impl IntoIterator<Item = &'a Lease>,
    hosts: impl IntoIterator<Item = &'a Host>,
    reservations: &HashMap<String, (String, LeaseAllocation)>,
    links: &[HostLink],
    skus: &BTreeMap<String, Sku>,
) -> Vec<Candidate> {
    let mut held: Vec<(String, LeaseAllocation)> = reservations.values().cloned().collect();
    let mut known: HashSet<String> = reservations.keys().cloned().collect();
    for l in leases {
        let u = l.metadata.uid.clone().unwrap_or_default();
        if known.contains(&u) {
            continue;
        }
        // Every Lease the store knows is accounted for by its status: leftover containers of a
        // closing one are on their way out.
        known.insert(u);
        let Some(st) = &l.status else { continue };
        if !is_live(st.phase) || st.phase == Some(LeasePhase::Pending) {
            continue;
        }
        if let (Some(h), Some(a)) = (&st.host, &st.allocated) {
            held.push((h.clone(), a.clone()));
        }
    }
    for link in links.iter().filter(|l| l.reachable) {
        let Some(listing) = &link.last_listing else { continue };
        for c in &listing.containers {
            if c.labels.get(LABEL_OWNER_KIND).map(String::as_str) != Some(render::OWNER_KIND) {
                continue;
            }
            let Some(owner) = c.labels.get(LABEL_OWNER_UID) else { continue };
            if known.contains(owner) || c.state != ContainerState::Running {
                continue;
            }
            if let Some(sku) = c.labels.get(LABEL_SKU).and_then(|s| skus.get(s)) {
                held.push((link.name.clone(), render::allocation(sku, 1)));
            }
        }
    }
    let sums = allocations(held.iter().map(|(h, a)| (h.as_str(), a)));
    hosts
        .into_iter()
        .map(|h| {
            let name = h.name_any();
            let st = h.status.clone().unwrap_or_default();
            let ready = find_condition(&st.conditions, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
                && links.iter().any(|l| l.name == name && l.reachable);
            let capacity = st.capacity.as_ref().and_then(|c| Some((c.cpus?, c.memory_mb?)));
            Candidate {
                allocated: sums.get(&name).cloned().unwrap_or_default(),
                labels: h.labels().clone(),
                ready,
                cordoned: h.spec.cordoned,
                capacity,
                name,
            }
        })
        .collect()
}

/// Sums allocations per host.
pub fn allocations<'a>(
    leases: impl IntoIterator<Item = (&'a str, &'a LeaseAllocation)>,
) -> BTreeMap<String, LeaseAllocation> {
    let mut out: BTreeMap<String, LeaseAllocation> = BTreeMap::new();
    for (host, a) in leases {
        let e = out.entry(host.to_string()).or_default();
        e.cpus += a.cpus;
        e.memory_mb += a.memory_mb;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, cpus: f64, mem: i64, used: (f64, i64)) -> Candidate {
        Candidate {
            name: name.into(),
            labels: BTreeMap::from([("pool".into(), "previews".into())]),
            ready: true,
            cordoned: false,
            capacity: Some((cpus, mem)),
            allocated: LeaseAllocation { cpus: used.0, memory_mb: used.1 },
        }
    }

    fn req(cpus: f64, mem: i64) -> LeaseAllocation {
        LeaseAllocation { cpus, memory_mb: mem }
    }

    fn selector(k: &str, v: &str) -> LabelSelector {
        LabelSelector { match_labels: Some(BTreeMap::from([(k.into(), v.into())])), match_expressions: None }
    }

    #[test]
    fn the_least_loaded_fitting_host_wins() {
        let hosts =
            [host("a", 4.0, 4096, (3.0, 1024)), host("b", 4.0, 4096, (1.0, 3072)), host("c", 4.0, 4096, (1.0, 1024))];
        assert_eq!(place(&req(0.5, 256), None, None, &hosts), Ok("c".into()));
        // Ties go to the first name.
        let tie = [host("z", 2.0, 1024, (0.0, 0)), host("y", 2.0, 1024, (0.0, 0))];
        assert_eq!(place(&req(0.5, 256), None, None, &tie), Ok("y".into()));
    }

    #[test]
    fn load_is_the_larger_of_cpu_and_memory_use() {
        // a: cpu 50% mem 90% after placement; b: cpu 75% mem 25%.
        let hosts = [host("a", 4.0, 1000, (1.5, 850)), host("b", 4.0, 1000, (2.5, 200))];
        assert_eq!(place(&req(0.5, 50), None, None, &hosts), Ok("b".into()));
    }

    #[test]
    fn full_cordoned_unready_and_unmeasured_hosts_are_skipped_and_named() {
        let mut cordoned = host("b", 8.0, 8192, (0.0, 0));
        cordoned.cordoned = true;
        let mut down = host("c", 8.0, 8192, (0.0, 0));
        down.ready = false;
        let mut unknown = host("d", 8.0, 8192, (0.0, 0));
        unknown.capacity = None;
        let hosts = [host("a", 1.0, 512, (0.75, 0)), cordoned, down, unknown];
        let err = place(&req(0.5, 256), None, None, &hosts).unwrap_err();
        assert_eq!(err.reason(), "InsufficientCapacity");
        let text = err.to_string();
        for want in ["a has 0.25 of 1.00 CPUs", "b is cordoned", "c is not Ready", "d has not reported"] {
            assert!(text.contains(want), "{want:?} missing from {text}");
        }
        let Unplaceable::InsufficientCapacity { rejected, .. } = err else { unreachable!() };
        let per_host: Vec<(&str, RejectReason)> = rejected.iter().map(|r| (r.host.as_str(), r.reason)).collect();
        assert_eq!(
            per_host,
            [
                ("a", RejectReason::InsufficientCapacity),
                ("b", RejectReason::HostCordoned),
                ("c", RejectReason::HostNotReady),
                ("d", RejectReason::CapacityUnknown)
            ]
        );
    }

    #[test]
    fn an_exact_fit_fits() {
        let hosts = [host("a", 0.3, 512, (0.1, 256))];
        assert_eq!(place(&req(0.2, 256), None, None, &hosts), Ok("a".into()));
        assert!(place(&req(0.2, 257), None, None, &hosts).is_err());
    }

    #[test]
    fn selectors_and_restores_narrow_the_candidates() {
        let mut other = host("b", 8.0, 8192, (0.0, 0));
        other.labels = BTreeMap::from([("pool".into(), "batch".into())]);
        let hosts = [host("a", 1.0, 1024, (0.5, 0)), other];
        assert_eq!(place(&req(0.5, 1), Some(&selector("pool", "previews")), None, &hosts), Ok("a".into()));
        assert_eq!(place(&req(0.5, 1), None, Some("b"), &hosts), Ok("b".into()));
        let err = place(&req(0.5, 1), Some(&selector("pool", "gpu")), None, &hosts).unwrap_err();
        assert_eq!(err.reason(), "NoMatchingHost");
        let err = place(&req(0.5, 1), Some(&selector("pool", "previews")), Some("b"), &hosts).unwrap_err();
        assert!(err.to_string().contains("restored volumes"), "{err}");
    }

    fn live_lease(uid: &str, phase: LeasePhase, host: &str, cpus: f64) -> Lease {
        let mut l = Lease::new(uid, Default::default());
        l.metadata.uid = Some(uid.into());
        l.status = Some(berth_crds::lease::LeaseStatus {
            phase: Some(phase),
            host: Some(host.into()),
            allocated: Some(req(cpus, 100)),
            ..Default::default()
        });
        l
    }

    fn host_object(name: &str, ready: bool) -> Host {
        let mut h = Host::new(name, Default::default());
        let status = if ready { ConditionStatus::True } else { ConditionStatus::False };
        h.status = Some(berth_crds::host::HostStatus {
            conditions: vec![berth_crds::common::Condition::new("Ready", status, "R", "")],
            capacity: Some(berth_crds::host::HostCapacity { cpus: Some(4.0), memory_mb: Some(4096), disk_mb: None }),
            ..Default::default()
        });
        h
    }

    fn lease_container(owner: &str, sku: &str, state: ContainerState) -> crate::docker::ContainerSummary {
        crate::docker::ContainerSummary {
            id: format!("c-{owner}"),
            name: format!("c-{owner}"),
            image: "busybox".into(),
            image_id: String::new(),
            labels: BTreeMap::from([
                (LABEL_OWNER_KIND.to_string(), "Lease".to_string()),
                (LABEL_OWNER_UID.to_string(), owner.to_string()),
                (LABEL_SKU.to_string(), sku.to_string()),
            ]),
            state,
            health: None,
            created: 0,
            ports: vec![],
        }
    }

    #[test]
    fn candidates_count_live_leases_reservations_and_containers_of_unknown_leases() {
        let leases = [
            live_lease("ready", LeasePhase::Ready, "a", 1.0),
            live_lease("pending", LeasePhase::Pending, "a", 8.0),
            live_lease("closed", LeasePhase::Closed, "a", 8.0),
            // Its reservation is newer than its status: the reservation counts.
            live_lease("reserved", LeasePhase::Provisioning, "a", 8.0),
        ];
        let hosts = [host_object("a", true), host_object("b", true), host_object("c", false)];
        let reservations = HashMap::from([("reserved".to_string(), ("b".to_string(), req(0.5, 50)))]);
        let listing = HostSnapshot {
            containers: vec![
                lease_container("gone", "small", ContainerState::Running),
                lease_container("gone-stopped", "small", ContainerState::Exited),
                lease_container("ready", "small", ContainerState::Running),
            ],
            ..Default::default()
        };
        let links = [
            HostLink { name: "a".into(), reachable: true, last_listing: Some(Arc::new(listing)) },
            HostLink { name: "b".into(), reachable: false, last_listing: None },
            HostLink { name: "c".into(), reachable: true, last_listing: None },
        ];
        let skus =
            BTreeMap::from([("small".to_string(), Sku { cpus: 0.25, memory_mb: 64, disk_mb: None, pids: None })]);
        let got = candidates(&leases, &hosts, &reservations, &links, &skus);
        let view: Vec<(&str, bool, f64, i64)> =
            got.iter().map(|c| (c.name.as_str(), c.ready, c.allocated.cpus, c.allocated.memory_mb)).collect();
        assert_eq!(
            view,
            [
                // The Ready Lease and one running container of a Lease the store does not know.
                ("a", true, 1.25, 164),
                // Not connected: not Ready, whatever its condition says.
                ("b", false, 0.5, 50),
                // Connected, but its Ready condition is False.
                ("c", false, 0.0, 0),
            ]
        );
        assert_eq!(got[0].capacity, Some((4.0, 4096)));
    }

    #[test]
    fn allocations_add_up_per_host() {
        let a = req(0.5, 256);
        let b = req(1.0, 512);
        let sums = allocations([("h1", &a), ("h2", &b), ("h1", &b)]);
        assert_eq!(sums["h1"], req(1.5, 768));
        assert_eq!(sums["h2"], req(1.0, 512));
    }
}
