//! Placement: which host a Pending Lease goes to. Pure: the caller gathers the candidates (Host
//! objects with their readiness, cordon, labels and capacity) and the allocations of every live
//! Lease (from the store, and from container labels for Leases whose status lags), and
//! [`place`] picks, among Ready, uncordoned hosts matching the Lease's selector where the Lease
//! fits, the least-loaded one after placement (the larger of its CPU and memory utilisation),
//! ties broken by name. When nothing fits it says why for every host, so the Lease's condition
//! tells an operator what to change.

use std::collections::BTreeMap;

use berth_crds::lease::LeaseAllocation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

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
    #[error("no matching Host has room for {cpus} CPUs and {memory_mb} MiB: {reasons}")]
    InsufficientCapacity {
        /// CPUs asked for.
        cpus: f64,
        /// Memory asked for.
        memory_mb: i64,
        /// Per host, why not.
        reasons: String,
    },
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
    let mut reasons = Vec::new();
    let mut best: Option<(f64, &str)> = None;
    for c in matching {
        if !c.ready {
            reasons.push(format!("{} is not Ready", c.name));
            continue;
        }
        if c.cordoned {
            reasons.push(format!("{} is cordoned", c.name));
            continue;
        }
        let Some((cpus, memory)) = c.capacity else {
            reasons.push(format!("{} has not reported its capacity yet", c.name));
            continue;
        };
        let used_cpus = c.allocated.cpus + request.cpus;
        let used_mem = c.allocated.memory_mb + request.memory_mb;
        // A small tolerance: 0.1 + 0.2 must fit in 0.3.
        if used_cpus > cpus + 1e-9 || used_mem > memory {
            reasons.push(format!(
                "{} has {:.2} of {:.2} CPUs and {} of {} MiB free",
                c.name,
                (cpus - c.allocated.cpus).max(0.0),
                cpus,
                (memory - c.allocated.memory_mb).max(0),
                memory
            ));
            continue;
        }
        let load = (used_cpus / cpus.max(f64::MIN_POSITIVE)).max(used_mem as f64 / (memory.max(1) as f64));
        if best.is_none_or(|(l, n)| load < l - 1e-12 || ((load - l).abs() <= 1e-12 && c.name.as_str() < n)) {
            best = Some((load, &c.name));
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_string()),
        None => Err(Unplaceable::InsufficientCapacity {
            cpus: request.cpus,
            memory_mb: request.memory_mb,
            reasons: reasons.join("; "),
        }),
    }
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

    #[test]
    fn allocations_add_up_per_host() {
        let a = req(0.5, 256);
        let b = req(1.0, 512);
        let sums = allocations([("h1", &a), ("h2", &b), ("h1", &b)]);
        assert_eq!(sums["h1"], req(1.5, 768));
        assert_eq!(sums["h2"], req(1.0, 512));
    }
}
