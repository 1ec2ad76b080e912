//! Observing one host for one Stack: the shared per-host listing ([`HostHandle::observe`], one
//! listing per host per pass whatever the number of Stacks), narrowed to the Stack's objects and
//! completed with what a listing does not say, at the least cost:
//! - stopped containers, and containers Docker reported an event for, are inspected (exit code,
//!   OOM kill, restart count) so that tier-3 drift says what happened;
//! - the image id each desired reference resolves to on the host, once per host and listing for
//!   every Stack (tier-2 "image changed");
//! - a wanted volume that exists without berth's labels (pre-created by hand) counts as present.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_crds::common::LABEL_OWNER_UID;
use futures::StreamExt;

use super::plan::{Health, Observation, ObservedContainer, ObservedNetwork, ObservedVolume, RunState};
use super::render::DesiredState;
use crate::controllers::pool::HostHandle;
use crate::docker::{ContainerState, ContainerSummary, DockerError, HealthState};

/// Container inspections in flight at once for one Stack on one host.
const MAX_CONCURRENT_INSPECTIONS: usize = 16;

/// When a reference was resolved (the listing it belongs to) and to which image id.
type ImageResolution = (Instant, Option<String>);

/// Caches shared by every reconcile of the Stack controller.
#[derive(Debug, Default)]
pub struct ObserveCaches {
    /// `(host, reference)` → the listing it was resolved for and the image id (`None`: absent).
    images: Mutex<HashMap<(String, String), ImageResolution>>,
    /// Ids of containers Docker reported an event for since berth last inspected them.
    dirty: Mutex<HashSet<String>>,
}

impl ObserveCaches {
    /// Notes that a container changed (a Docker event): its details are read again.
    pub fn mark_dirty(&self, container_id: &str) {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).insert(container_id.to_string());
    }

    /// Forgets what `reference` resolves to on `host` (after a pull).
    pub fn forget_image(&self, host: &str, reference: &str) {
        self.images.lock().unwrap_or_else(|e| e.into_inner()).remove(&(host.to_string(), reference.to_string()));
    }

    fn is_dirty(&self, id: &str) -> bool {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
    }

    fn clean(&self, id: &str) {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// What berth knows of one of the Stack's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFacts {
    /// The listing's facts.
    pub summary: ContainerSummary,
    /// Restarts Docker made (from inspection, or carried over from the last status).
    pub restarts: i64,
    /// Exit code of the last run, when inspected while stopped.
    pub exit_code: Option<i64>,
    /// OOM-killed, when inspected while stopped.
    pub oom_killed: bool,
}

/// One host as one Stack sees it.
#[derive(Debug, Clone, Default)]
pub struct HostObservation {
    /// Input of the planner.
    pub observation: Observation,
    /// The Stack's containers, for status.
    pub facts: Vec<ContainerFacts>,
}

/// Converts Docker's state to the planner's.
pub fn run_state(s: ContainerState) -> RunState {
    match s {
        ContainerState::Created => RunState::Created,
        ContainerState::Running => RunState::Running,
        ContainerState::Paused => RunState::Paused,
        ContainerState::Restarting => RunState::Restarting,
        ContainerState::Removing => RunState::Removing,
        ContainerState::Exited => RunState::Exited,
        ContainerState::Dead => RunState::Dead,
    }
}

/// Converts Docker's health to the planner's.
pub fn health(h: HealthState) -> Health {
    match h {
        HealthState::Starting => Health::Starting,
        HealthState::Healthy => Health::Healthy,
        HealthState::Unhealthy => Health::Unhealthy,
    }
}

/// Observes `handle` for the Stack with `owner_uid`.
///
/// `known_restarts` maps container ids to the restart count the last status recorded: running
/// containers found there (and not marked dirty by an event) are not inspected again.
pub async fn observe_host(
    handle: &HostHandle,
    instance: &str,
    owner_uid: &str,
    desired: &DesiredState,
    max_age: Duration,
    caches: &ObserveCaches,
    known_restarts: &HashMap<String, i64>,
) -> Result<HostObservation, DockerError> {
    let snapshot = handle.observe(instance, max_age).await?;
    let taken_at = snapshot.taken_at.unwrap_or_else(Instant::now);
    let owned = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(LABEL_OWNER_UID).map(String::as_str) == Some(owner_uid)
    };

    let mut observation = Observation::default();
    let mut facts = Vec::new();
    let mine: Vec<&ContainerSummary> = snapshot.containers.iter().filter(|c| owned(&c.labels)).collect();
    // The inspections a listing cannot replace, at once (a Stack just created has many).
    let inspections: Vec<_> = mine
        .iter()
        .map(|c| {
            let known = known_restarts.get(&c.id).copied();
            let needs_details = c.state != ContainerState::Running || known.is_none() || caches.is_dirty(&c.id);
            async move { if needs_details { Some(handle.docker.inspect_container(&c.id).await) } else { None } }
        })
        .collect();
    let inspected: Vec<_> = futures::stream::iter(inspections).buffered(MAX_CONCURRENT_INSPECTIONS).collect().await;
    for (c, details) in mine.into_iter().zip(inspected) {
        let (summary, restarts, exit_code, oom_killed) = match details {
            Some(Ok(d)) => {
                caches.clean(&c.id);
                (d.summary, d.restart_count, d.exit_code, d.oom_killed)
            }
            // Removed between the listing and now: it is not there.
            Some(Err(e)) if e.is_not_found() => continue,
            Some(Err(e)) => return Err(e),
            None => (c.clone(), known_restarts.get(&c.id).copied().unwrap_or(0), None, false),
        };
        let stopped = summary.state != ContainerState::Running;
        observation.containers.push(ObservedContainer {
            id: summary.id.clone(),
            name: summary.name.clone(),
            labels: summary.labels.clone(),
            state: run_state(summary.state),
            health: summary.health.map(health),
            oom_killed: stopped && oom_killed,
            exit_code: if stopped { exit_code } else { None },
            image_id: summary.image_id.clone(),
        });
        facts.push(ContainerFacts { summary, restarts, exit_code, oom_killed });
    }
    observation.networks = snapshot
        .networks
        .iter()
        .map(|n| ObservedNetwork { id: n.id.clone(), name: n.name.clone(), labels: n.labels.clone() })
        .collect();
    observation.volumes =
        snapshot.volumes.iter().map(|v| ObservedVolume { name: v.name.clone(), labels: v.labels.clone() }).collect();
    // A wanted volume missing from berth's listing may exist without berth's labels (created by
    // hand beforehand): it is used as is, never relabelled or removed. One unfiltered listing,
    // only in that case.
    let missing: Vec<&str> = desired
        .volumes
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| !observation.volumes.iter().any(|o| o.name == *n))
        .collect();
    if !missing.is_empty() {
        for v in handle.docker.list_volumes(&Vec::new()).await? {
            if missing.contains(&v.name.as_str()) {
                observation.volumes.push(ObservedVolume { name: v.name, labels: v.labels });
            }
        }
    }

    let references: BTreeSet<&str> = desired.services.iter().map(|s| s.image.as_str()).collect();
    for reference in references {
        let key = (handle.name.clone(), reference.to_string());
        let cached = caches.images.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        let id = match cached {
            Some((at, id)) if at == taken_at => id,
            _ => {
                let id = handle.docker.inspect_image(reference).await?.map(|i| i.id);
                caches.images.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (taken_at, id.clone()));
                id
            }
        };
        if let Some(id) = id {
            observation.images.insert(reference.to_string(), id);
        }
    }
    Ok(HostObservation { observation, facts })
}
