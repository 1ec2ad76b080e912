//! The executor: applies one host's [`HostPlan`] through the [`DockerApi`] of that host.
//!
//! Steps run in the plan's order: unwanted containers are removed (concurrently), networks and
//! volumes prepared, then the services change concurrently (at most [`MAX_CONCURRENT_CHANGES`]
//! at once, so a Stack of 20 independent services costs about what its slowest container
//! costs, not the sum), each one once the services it depends on are done and `Started` or
//! `Healthy` (waited for with a deadline of `rollout.healthTimeoutSeconds`, reporting the
//! dependency's last log lines when it is not). Within a service at most `rollout.maxParallel`
//! replicas change at once. Services sharing an image check (and pull) it one at a time. A changed container is replaced per `rollout.strategy`:
//! - `Recreate`: stop and remove the old container, create and start the new one;
//! - `StartFirst`: create and start the new one under a temporary name, wait until it is ready,
//!   then remove the old one and give the new one its name.
//!
//! With `autoRollback`, a replacement that does not become ready in time is removed and the
//! previous container put back (under `Recreate` the old container is kept, renamed and stopped,
//! until the new one is ready). A failed service stops the services that depend on it; the
//! others go on. Every mutation invalidates the host's shared snapshot and is reported as a
//! [`Note`]. Deletes converge: an object already gone counts as removed. A name held by
//! something berth does not own is a [`StackError::NameConflict`]: berth never removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_crds::common::{LABEL_OWNER_KIND, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID};
use berth_crds::stack::{DependencyCondition, PullPolicy, RolloutStrategy, StackSpec};
use futures::StreamExt;
use tokio::sync::{Semaphore, watch};

use super::error::StackError;
use super::events::{Note, Notify, reason as ev};
use super::observe::ObserveCaches;
use super::plan::{Action, HostPlan, Observation, Step, WaitFor, reason};
use super::render::{DesiredContainer, DesiredService, DesiredState, MountSource, redact};
use crate::controllers::pool::HostHandle;
use crate::docker::{
    ContainerSpec, ContainerState, DockerError, HealthState, Healthcheck, LogOptions, Mount, NetworkJoin, NetworkSpec,
    PortMapping, PullProgress, VolumeSpec,
};

/// Changes in flight at once on one host within one pass: services changed concurrently, and
/// unwanted containers removed concurrently (each still honours its own grace period).
pub const MAX_CONCURRENT_CHANGES: usize = 16;
/// Default of `rollout.healthTimeoutSeconds`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines quoted when a container does not become ready.
const LOG_LINES: u64 = 5;

/// How a plan is applied (from the Stack's `rollout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    /// Replacement order.
    pub strategy: RolloutStrategy,
    /// Replicas of one service changed at once.
    pub max_parallel: usize,
    /// How long a new container (or a dependency) may take to become ready.
    pub health_timeout: Duration,
    /// Put the previous container back when its replacement does not become ready.
    pub auto_rollback: bool,
    /// How often readiness is polled.
    pub poll_interval: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::Recreate,
            max_parallel: 1,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            auto_rollback: false,
            poll_interval: Duration::from_millis(500),
        }
    }
}

impl ExecOptions {
    /// The options of a Stack's `rollout`.
    pub fn from_spec(spec: &StackSpec) -> Self {
        let mut o = Self::default();
        if let Some(r) = &spec.rollout {
            o.strategy = r.strategy;
            o.max_parallel = r.max_parallel.unwrap_or(1).max(1) as usize;
            o.health_timeout =
                r.health_timeout_seconds.map_or(DEFAULT_HEALTH_TIMEOUT, |s| Duration::from_secs(s.max(1) as u64));
            o.auto_rollback = r.auto_rollback;
        }
        o
    }
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct ExecOutcome {
    /// Whether anything on the host changed.
    pub mutated: bool,
    /// What failed (the first failure of each service, and of the shared steps).
    pub errors: Vec<StackError>,
    /// Services whose new configuration was rolled back.
    pub rolled_back: BTreeSet<String>,
}

/// The Docker spec of a desired container, created under `name`.
pub fn container_spec(d: &DesiredContainer, name: &str) -> ContainerSpec {
    let c = &d.config;
    ContainerSpec {
        name: name.to_string(),
        image: c.image.clone(),
        entrypoint: c.command.clone(),
        cmd: c.args.clone(),
        env: c.env_values.clone(),
        working_dir: c.working_dir.clone(),
        user: c.user.clone(),
        labels: d.labels.clone(),
        ports: c
            .ports
            .iter()
            .map(|p| PortMapping {
                container_port: p.container_port,
                protocol: p.protocol.clone(),
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
            })
            .collect(),
        mounts: c
            .mounts
            .iter()
            .map(|m| match &m.source {
                MountSource::Volume(v) => {
                    Mount::Volume { name: v.clone(), target: m.target.clone(), read_only: m.read_only }
                }
                MountSource::HostPath(p) => {
                    Mount::Bind { source: p.clone(), target: m.target.clone(), read_only: m.read_only }
                }
                MountSource::Tmpfs(size) => Mount::Tmpfs { target: m.target.clone(), size_bytes: *size, options: None },
            })
            .collect(),
        networks: c
            .networks
            .iter()
            .map(|n| NetworkJoin { network: n.network.clone(), aliases: n.aliases.clone() })
            .collect(),
        healthcheck: c.healthcheck.as_ref().map(|h| Healthcheck {
            test: h.test.clone(),
            interval_seconds: h.interval_seconds,
            timeout_seconds: h.timeout_seconds,
            retries: h.retries,
            start_period_seconds: h.start_period_seconds,
        }),
        nano_cpus: c.resources.nano_cpus,
        memory_bytes: c.resources.memory_bytes,
        memory_swap_bytes: c.resources.memory_swap_bytes,
        pids_limit: c.resources.pids,
        read_only_root_filesystem: c.security.read_only_root_filesystem,
        cap_add: c.security.cap_add.clone(),
        cap_drop: c.security.cap_drop.clone(),
        no_new_privileges: c.security.no_new_privileges,
        privileged: c.security.privileged,
        restart_policy: c.restart_policy.clone(),
        stop_timeout_seconds: c.stop_grace_period_seconds,
        log_max_size_mb: c.logging.and_then(|l| l.0),
        log_max_files: c.logging.and_then(|l| l.1),
        storage_size_bytes: None,
    }
}

/// Name of the new container while a `StartFirst` replacement runs beside the old one.
pub fn next_name(name: &str) -> String {
    format!("{name}-next")
}

/// Name of the old container while a `Recreate` replacement with rollback is verified.
pub fn previous_name(name: &str) -> String {
    format!("{name}-prev")
}

/// Applies plans on one host.
pub struct Executor<'a> {
    handle: &'a HostHandle,
    desired: &'a DesiredState,
    observed: &'a Observation,
    opts: &'a ExecOptions,
    notify: &'a dyn Notify,
    caches: Option<&'a ObserveCaches>,
    secrets: Vec<String>,
    mutated: AtomicBool,
    /// Per image reference: whether this execution made sure it is on the host.
    images: tokio::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<bool>>>>,
}

impl<'a> Executor<'a> {
    /// An executor for `handle`, where `observed` is what the plan was made from.
    pub fn new(
        handle: &'a HostHandle,
        desired: &'a DesiredState,
        observed: &'a Observation,
        opts: &'a ExecOptions,
        notify: &'a dyn Notify,
    ) -> Self {
        Self {
            handle,
            desired,
            observed,
            opts,
            notify,
            caches: None,
            secrets: desired.secret_values(),
            mutated: AtomicBool::new(false),
            images: Default::default(),
        }
    }

    /// Forget cached image ids in `caches` after pulls.
    pub fn with_caches(mut self, caches: &'a ObserveCaches) -> Self {
        self.caches = Some(caches);
        self
    }

    fn host(&self) -> &str {
        &self.handle.name
    }

    fn changed(&self) {
        self.mutated.store(true, Ordering::SeqCst);
        self.handle.invalidate();
    }

    fn docker_err(&self, operation: impl Into<String>, e: &DockerError) -> StackError {
        StackError::docker(self.host(), operation, e, &self.secrets)
    }

    /// Applies `plan`: the steps before the services in order (a failed one stops the plan),
    /// then the services concurrently, each once the services it depends on are done, then the
    /// cleanup.
    pub async fn execute(&self, plan: &HostPlan) -> ExecOutcome {
        let mut out = ExecOutcome::default();
        let steps = &plan.steps;
        let mut i = 0;
        while i < steps.len() {
            let step = &steps[i];
            if step.phase == "service" {
                let end = steps[i..].iter().position(|s| s.phase != "service").map_or(steps.len(), |n| i + n);
                for (service, result) in self.run_services(&steps[i..end]).await {
                    if let Err(e) = result {
                        if matches!(e, StackError::RolledBack { .. }) {
                            out.rolled_back.insert(service);
                        }
                        out.errors.push(e);
                    }
                }
                i = end;
                continue;
            }
            let errors = if step.phase == "removeUnwanted" {
                // Independent removals (each stop waits out a grace period): at once.
                let runs: Vec<_> = step.actions.iter().map(|a| self.run_action(a)).collect();
                let results: Vec<Result<(), StackError>> =
                    futures::stream::iter(runs).buffered(MAX_CONCURRENT_CHANGES).collect().await;
                results.into_iter().filter_map(Result::err).collect()
            } else {
                let mut errors = Vec::new();
                for a in &step.actions {
                    if let Err(e) = self.run_action(a).await {
                        errors.push(e);
                        if step.phase != "cleanup" {
                            break;
                        }
                    }
                }
                errors
            };
            let step_failed = !errors.is_empty();
            out.errors.extend(errors);
            // Services cannot be changed safely without their networks and volumes, nor while
            // unwanted containers may still hold their ports.
            if step_failed && step.phase != "cleanup" {
                break;
            }
            i += 1;
        }
        out.mutated = self.mutated.load(Ordering::SeqCst);
        out
    }

    /// Runs the service steps of a plan concurrently (at most [`MAX_CONCURRENT_CHANGES`] at a
    /// time): a step whose dependency has a step of its own in this plan starts once that step
    /// succeeded (then, as always, waits for the dependency's condition on the host); when it
    /// failed, the dependent is not changed and reports nothing (the dependency's error says
    /// why). Only earlier steps are waited for (the plan lists services in dependency order),
    /// so no cycle can hang the pass. Returns `(service, outcome)` in plan order, `None` for a
    /// service skipped because a dependency failed.
    async fn run_services(&self, steps: &[Step]) -> Vec<(String, Result<(), StackError>)> {
        let signals: Vec<(String, watch::Sender<Option<bool>>)> =
            steps.iter().map(|s| (s.service.clone().unwrap_or_default(), watch::channel(None).0)).collect();
        let slots = Semaphore::new(MAX_CONCURRENT_CHANGES);
        let runs = steps.iter().enumerate().map(|(k, step)| {
            let (signals, slots) = (&signals, &slots);
            async move {
                let service = step.service.clone().unwrap_or_default();
                let mut dependency_failed = false;
                for w in &step.wait_for {
                    let Some((_, tx)) = signals[..k].iter().find(|(name, _)| *name == w.service) else { continue };
                    let mut rx = tx.subscribe();
                    let ok = rx.wait_for(Option::is_some).await.map(|v| *v == Some(true)).unwrap_or(false);
                    if !ok {
                        dependency_failed = true;
                        break;
                    }
                }
                let result = if dependency_failed {
                    None
                } else {
                    let r = async {
                        for w in &step.wait_for {
                            self.wait_for_dependency(&service, w).await?;
                        }
                        let _slot = slots.acquire().await.map_err(|_| StackError::Docker {
                            host: self.host().to_string(),
                            operation: format!("changing service {service}"),
                            message: "the executor was shut down".into(),
                            transient: true,
                        })?;
                        self.run_service(&service, &step.actions).await
                    }
                    .await;
                    Some(r)
                };
                signals[k].1.send_replace(Some(matches!(result, Some(Ok(())))));
                (service, result)
            }
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .filter_map(|(service, result)| result.map(|r| (service, r)))
            .collect()
    }

    async fn run_service(&self, service: &str, actions: &[Action]) -> Result<(), StackError> {
        let mut rest = Vec::new();
        for a in actions {
            match a {
                Action::EnsureImage { image, policy } => {
                    // Services sharing an image run concurrently: one checks (and pulls) it,
                    // the others wait and reuse the outcome when it succeeded.
                    let lock = self.images.lock().await.entry(image.clone()).or_default().clone();
                    let mut ensured = lock.lock().await;
                    if !*ensured {
                        self.ensure_image(image, *policy).await?;
                        *ensured = true;
                    }
                }
                other => rest.push(other),
            }
        }
        let svc = self.desired.service(service);
        for batch in rest.chunks(self.opts.max_parallel.max(1)) {
            let results = futures::future::join_all(batch.iter().map(|a| self.run_service_action(svc, a))).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn run_service_action(&self, svc: Option<&DesiredService>, action: &Action) -> Result<(), StackError> {
        match (action, svc) {
            (Action::Create { container, .. }, Some(svc)) => {
                let d = desired_container(svc, container)?;
                self.create_and_start(d, &d.name).await?;
                self.notify.note(Note::normal(
                    ev::CREATED,
                    "Create",
                    format!("host {}: created and started container {} (service {})", self.host(), d.name, svc.name),
                ));
                Ok(())
            }
            (Action::Recreate { container, id, reason: why, .. }, Some(svc)) => {
                let d = desired_container(svc, container)?;
                self.replace(svc, d, id, why).await
            }
            (other, _) => self.run_action(other).await,
        }
    }

    async fn run_action(&self, action: &Action) -> Result<(), StackError> {
        let host = self.host().to_string();
        match action {
            Action::Remove { container, id, reason: why } => {
                self.remove_container(id, container, None).await?;
                self.notify.note(Note::normal(
                    ev::REMOVED,
                    "Remove",
                    format!("host {host}: removed container {container} ({why})"),
                ));
            }
            Action::CreateNetwork { name, internal } => {
                let labels = self
                    .desired
                    .networks
                    .iter()
                    .find(|n| &n.name == name)
                    .map(|n| n.labels.clone())
                    .unwrap_or_default();
                let spec = NetworkSpec { name: name.clone(), internal: *internal, labels };
                match self.handle.docker.create_network(&spec).await {
                    Ok(_) => {}
                    Err(DockerError::Conflict { .. }) => {
                        return Err(StackError::NameConflict {
                            host,
                            name: name.clone(),
                            what: "network",
                            holder: self.holder_of_network(name),
                        });
                    }
                    Err(e) => return Err(self.docker_err(format!("creating network {name}"), &e)),
                }
                self.changed();
                self.notify.note(Note::normal(
                    ev::NETWORK_CREATED,
                    "Create",
                    format!("host {host}: created network {name}"),
                ));
            }
            Action::CreateVolume { name } => {
                let labels =
                    self.desired.volumes.iter().find(|v| &v.name == name).map(|v| v.labels.clone()).unwrap_or_default();
                self.handle
                    .docker
                    .create_volume(&VolumeSpec { name: name.clone(), labels })
                    .await
                    .map_err(|e| self.docker_err(format!("creating volume {name}"), &e))?;
                self.changed();
                self.notify.note(Note::normal(
                    ev::VOLUME_CREATED,
                    "Create",
                    format!("host {host}: created volume {name}"),
                ));
            }
            Action::Connect { network, container, aliases } => {
                match self.handle.docker.connect_network(network, container, aliases).await {
                    // Already attached (a concurrent pass did it, or Docker kept it).
                    Ok(()) | Err(DockerError::Conflict { .. }) => {}
                    Err(e) => return Err(self.docker_err(format!("connecting {container} to network {network}"), &e)),
                }
                self.changed();
                self.notify.note(Note::normal(
                    ev::NETWORK_CONNECTED,
                    "Connect",
                    format!("host {host}: connected container {container} to re-created network {network}"),
                ));
            }
            Action::Start { container, id, reason: why } => {
                match self.handle.docker.start_container(id).await {
                    Ok(()) => {}
                    // Gone since the listing: the next pass creates it.
                    Err(e) if e.is_not_found() => return Ok(()),
                    Err(e) => return Err(self.docker_err(format!("starting container {container}"), &e)),
                }
                self.changed();
                self.notify.note(Note::normal(
                    ev::STARTED,
                    "Start",
                    format!("host {host}: started container {container} ({why})"),
                ));
            }
            Action::Restart { container, id, reason: why } => {
                match self.handle.docker.restart_container(id, None).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => return Ok(()),
                    Err(e) => return Err(self.docker_err(format!("restarting container {container}"), &e)),
                }
                self.changed();
                self.notify.note(Note::normal(
                    ev::RESTARTED,
                    "Restart",
                    format!("host {host}: restarted container {container} ({why})"),
                ));
            }
            Action::RemoveNetwork { name, id } => {
                match self.handle.docker.remove_network(id).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(self.docker_err(format!("removing network {name}"), &e)),
                }
                self.changed();
                self.notify.note(Note::normal(
                    ev::NETWORK_REMOVED,
                    "Remove",
                    format!("host {host}: removed network {name}"),
                ));
            }
            Action::EnsureImage { image, policy } => self.ensure_image(image, *policy).await?,
            Action::Create { container, .. } | Action::Recreate { container, .. } => {
                // Only reachable for a service missing from the desired state: a broken plan.
                return Err(StackError::Docker {
                    host,
                    operation: format!("creating container {container}"),
                    message: "the plan names a service that is not in the desired state".into(),
                    transient: true,
                });
            }
        }
        Ok(())
    }

    /// Stops (gracefully) and removes a container; a container already gone counts as removed.
    async fn remove_container(&self, id: &str, name: &str, grace: Option<i64>) -> Result<(), StackError> {
        match self.handle.docker.stop_container(id, grace).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(self.docker_err(format!("stopping container {name}"), &e)),
        }
        self.changed();
        match self.handle.docker.remove_container(id, true).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(self.docker_err(format!("removing container {name}"), &e)),
        }
        self.changed();
        Ok(())
    }

    fn holder_of_container(&self, name: &str) -> String {
        match self.observed.containers.iter().find(|c| c.name == name) {
            Some(c) => describe_owner(&c.labels),
            None => "a container without this berth installation's labels".into(),
        }
    }

    fn holder_of_network(&self, name: &str) -> String {
        match self.observed.networks.iter().find(|n| n.name == name) {
            Some(n) => describe_owner(&n.labels),
            None => "a network without this berth installation's labels".into(),
        }
    }

    async fn create_and_start(&self, d: &DesiredContainer, name: &str) -> Result<String, StackError> {
        let spec = container_spec(d, name);
        let id = match self.handle.docker.create_container(&spec).await {
            Ok(id) => id,
            Err(DockerError::Conflict { .. }) => {
                return Err(StackError::NameConflict {
                    host: self.host().to_string(),
                    name: name.to_string(),
                    what: "container",
                    holder: self.holder_of_container(name),
                });
            }
            Err(e) => return Err(self.docker_err(format!("creating container {name}"), &e)),
        };
        self.changed();
        if let Err(e) = self.handle.docker.start_container(&id).await {
            return Err(self.docker_err(format!("starting container {name}"), &e));
        }
        self.changed();
        Ok(id)
    }

    /// Replaces container `old_id` with the desired `d`.
    async fn replace(
        &self,
        svc: &DesiredService,
        d: &DesiredContainer,
        old_id: &str,
        why: &str,
    ) -> Result<(), StackError> {
        // Rolling back makes sense for a new configuration only: a dead or drifted container is
        // not worth putting back.
        let rollback = self.opts.auto_rollback && why == reason::DESIRED_STATE_CHANGED;
        let grace = d.config.stop_grace_period_seconds;
        match self.opts.strategy {
            RolloutStrategy::StartFirst => self.replace_start_first(svc, d, old_id, grace, rollback).await?,
            RolloutStrategy::Recreate if rollback => self.replace_with_rollback(svc, d, old_id, grace).await?,
            RolloutStrategy::Recreate => {
                self.remove_container(old_id, &d.name, grace).await?;
                let id = self.create_and_start(d, &d.name).await?;
                self.wait_ready(svc, &id, &d.name).await?;
            }
        }
        self.notify.note(Note::normal(
            ev::RECREATED,
            "Recreate",
            format!("host {}: replaced container {} (service {}, {why})", self.host(), d.name, svc.name),
        ));
        Ok(())
    }

    async fn replace_start_first(
        &self,
        svc: &DesiredService,
        d: &DesiredContainer,
        old_id: &str,
        grace: Option<i64>,
        rollback: bool,
    ) -> Result<(), StackError> {
        let temp = next_name(&d.name);
        let attempt = async {
            let id = self.create_and_start(d, &temp).await?;
            self.wait_ready(svc, &id, &temp).await.map(|_| id)
        }
        .await;
        let new_id = match attempt {
            Ok(id) => id,
            Err(e) => {
                if !matches!(e, StackError::NameConflict { .. }) {
                    // The old container never stopped serving; the new one goes.
                    self.remove_container(&temp, &temp, Some(0)).await?;
                }
                return Err(self.rolled_back_or(svc, e, rollback));
            }
        };
        self.remove_container(old_id, &d.name, grace).await?;
        self.handle
            .docker
            .rename_container(&new_id, &d.name)
            .await
            .map_err(|e| self.docker_err(format!("renaming container {temp} to {}", d.name), &e))?;
        self.changed();
        Ok(())
    }

    async fn replace_with_rollback(
        &self,
        svc: &DesiredService,
        d: &DesiredContainer,
        old_id: &str,
        grace: Option<i64>,
    ) -> Result<(), StackError> {
        let prev = previous_name(&d.name);
        // The old container steps aside (renamed, stopped) but stays until the new one is ready.
        let old_exists = match self.handle.docker.rename_container(old_id, &prev).await {
            Ok(()) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(self.docker_err(format!("renaming container {} to {prev}", d.name), &e)),
        };
        self.changed();
        if old_exists {
            match self.handle.docker.stop_container(old_id, grace).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(self.docker_err(format!("stopping container {prev}"), &e)),
            }
            self.changed();
        }
        let attempt = async {
            let id = self.create_and_start(d, &d.name).await?;
            self.wait_ready(svc, &id, &d.name).await
        }
        .await;
        match attempt {
            Ok(()) => {
                if old_exists {
                    self.remove_container(old_id, &prev, Some(0)).await?;
                }
                Ok(())
            }
            Err(e) => {
                if !old_exists {
                    return Err(e);
                }
                if !matches!(e, StackError::NameConflict { .. }) {
                    self.remove_container(&d.name, &d.name, Some(0)).await.map_err(|re| {
                        StackError::RollbackFailed {
                            host: self.host().to_string(),
                            service: svc.name.clone(),
                            message: re.to_string(),
                        }
                    })?;
                }
                let restore = async {
                    self.handle.docker.rename_container(old_id, &d.name).await?;
                    self.handle.docker.start_container(old_id).await
                }
                .await;
                self.changed();
                if let Err(re) = restore {
                    return Err(StackError::RollbackFailed {
                        host: self.host().to_string(),
                        service: svc.name.clone(),
                        message: redact(&re.to_string(), &self.secrets),
                    });
                }
                Err(self.rolled_back_or(svc, e, true))
            }
        }
    }

    fn rolled_back_or(&self, svc: &DesiredService, cause: StackError, rolled_back: bool) -> StackError {
        if !rolled_back || matches!(cause, StackError::NameConflict { .. }) {
            return cause;
        }
        let err = StackError::RolledBack {
            host: self.host().to_string(),
            service: svc.name.clone(),
            cause: cause.to_string(),
        };
        self.notify.note(Note::warning(ev::ROLLED_BACK, "Rollback", err.to_string()));
        err
    }

    /// Waits until container `id` is ready: healthy when the service has a health check,
    /// running otherwise.
    async fn wait_ready(&self, svc: &DesiredService, id: &str, name: &str) -> Result<(), StackError> {
        let started = Instant::now();
        let condition = if svc.has_healthcheck { "healthy" } else { "running" };
        loop {
            let d = self
                .handle
                .docker
                .inspect_container(id)
                .await
                .map_err(|e| self.docker_err(format!("inspecting container {name}"), &e))?;
            let state = d.summary.state;
            let ready = state == ContainerState::Running
                && (!svc.has_healthcheck || d.summary.health == Some(HealthState::Healthy));
            if ready {
                return Ok(());
            }
            // A container that stopped will not become ready by waiting.
            let stopped = matches!(state, ContainerState::Exited | ContainerState::Dead);
            if stopped || started.elapsed() >= self.opts.health_timeout {
                let what = describe_state(state, d.summary.health, d.exit_code, d.oom_killed);
                let err = StackError::NotReady {
                    host: self.host().to_string(),
                    service: svc.name.clone(),
                    container: name.to_string(),
                    condition,
                    waited_secs: round_secs(started.elapsed()),
                    detail: format!("{what}{}", self.last_logs(id).await),
                };
                self.notify.note(Note::warning(ev::NOT_READY, "Wait", err.to_string()));
                return Err(err);
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    async fn wait_for_dependency(&self, service: &str, w: &WaitFor) -> Result<(), StackError> {
        let Some(dep) = self.desired.service(&w.service) else { return Ok(()) };
        let healthy = w.condition == DependencyCondition::Healthy && dep.has_healthcheck;
        let started = Instant::now();
        loop {
            let mut unsatisfied = None;
            for c in &dep.containers {
                let (ok, what, id) = match self.handle.docker.inspect_container(&c.name).await {
                    Ok(d) => {
                        let running = d.summary.state == ContainerState::Running;
                        let ok = running && (!healthy || d.summary.health == Some(HealthState::Healthy));
                        let what = format!(
                            "{}: {}",
                            c.name,
                            describe_state(d.summary.state, d.summary.health, d.exit_code, d.oom_killed)
                        );
                        (ok, what, Some(d.summary.id))
                    }
                    Err(e) if e.is_not_found() => (false, format!("{} does not exist", c.name), None),
                    Err(e) => return Err(self.docker_err(format!("inspecting container {}", c.name), &e)),
                };
                if !ok {
                    unsatisfied = Some((what, id));
                    break;
                }
            }
            let Some((what, id)) = unsatisfied else { return Ok(()) };
            if started.elapsed() >= self.opts.health_timeout {
                let logs = match id {
                    Some(id) => self.last_logs(&id).await,
                    None => String::new(),
                };
                return Err(StackError::DependencyNotReady {
                    host: self.host().to_string(),
                    service: service.to_string(),
                    dependency: w.service.clone(),
                    condition: if healthy { "Healthy" } else { "Started" },
                    waited_secs: round_secs(started.elapsed()),
                    detail: format!("{what}{logs}"),
                });
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    /// `; last log lines: a | b | c`, scrubbed of secret values, or empty.
    async fn last_logs(&self, id: &str) -> String {
        let opts = LogOptions { tail: Some(LOG_LINES), ..Default::default() };
        let collect = self.handle.docker.logs(id, &opts).take(LOG_LINES as usize).collect::<Vec<_>>();
        let Ok(lines) = tokio::time::timeout(Duration::from_secs(5), collect).await else { return String::new() };
        let text: Vec<String> =
            lines.into_iter().filter_map(Result::ok).map(|l| l.text.trim_end().to_string()).collect();
        if text.is_empty() {
            return String::new();
        }
        let mut joined = redact(&text.join(" | "), &self.secrets);
        if joined.len() > 600 {
            let mut cut = 600;
            while !joined.is_char_boundary(cut) {
                cut -= 1;
            }
            joined.truncate(cut);
            joined.push('…');
        }
        format!("; last log lines: {joined}")
    }

    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), StackError> {
        let host = self.host().to_string();
        let present = || async {
            self.handle
                .docker
                .inspect_image(image)
                .await
                .map_err(|e| self.docker_err(format!("inspecting image {image}"), &e))
        };
        match policy {
            PullPolicy::Never => {
                if present().await?.is_none() {
                    return Err(StackError::ImageMissing { host, image: image.to_string() });
                }
                return Ok(());
            }
            PullPolicy::IfNotPresent => {
                if present().await?.is_some() {
                    return Ok(());
                }
            }
            PullPolicy::Always => {}
        }
        self.notify.note(Note::normal(ev::PULLING, "Pull", format!("host {host}: pulling image {image}")));
        let tracker = PullTracker::new(&host, image, self.notify);
        let progress = |p: &PullProgress| tracker.update(p);
        let result = self.handle.docker.pull_image(image, &progress).await;
        if let Some(c) = self.caches {
            c.forget_image(&host, image);
        }
        match result {
            Ok(()) => {
                self.notify.note(Note::normal(
                    ev::PULLED,
                    "Pull",
                    format!("host {host}: pulled image {image}{}", tracker.summary()),
                ));
                Ok(())
            }
            Err(e) if e.is_unreachable() => Err(self.docker_err(format!("pulling image {image}"), &e)),
            Err(e) => {
                let message = match &e {
                    DockerError::PullFailed { message, .. } => redact(message, &self.secrets),
                    other => redact(&other.to_string(), &self.secrets),
                };
                let err = StackError::PullFailed { host, image: image.to_string(), message };
                self.notify.note(Note::warning(ev::PULL_FAILED, "Pull", err.to_string()));
                Err(err)
            }
        }
    }
}

fn desired_container<'s>(svc: &'s DesiredService, name: &str) -> Result<&'s DesiredContainer, StackError> {
    svc.containers.iter().find(|c| c.name == name).ok_or_else(|| StackError::Docker {
        host: String::new(),
        operation: format!("creating container {name}"),
        message: format!("service {} has no container {name} in the desired state", svc.name),
        transient: true,
    })
}

/// `owned by Stack prod/shop (uid …)`, or what is known of labels that are not berth's.
fn describe_owner(labels: &BTreeMap<String, String>) -> String {
    match (labels.get(LABEL_OWNER_KIND), labels.get(LABEL_OWNER_NAMESPACE), labels.get(LABEL_OWNER_NAME)) {
        (Some(k), Some(ns), Some(n)) => format!(
            "owned by {k} {ns}/{n}, uid {}",
            labels.get(LABEL_OWNER_UID).map(String::as_str).unwrap_or("unknown")
        ),
        _ => "no berth owner labels".into(),
    }
}

fn describe_state(state: ContainerState, health: Option<HealthState>, exit_code: Option<i64>, oom: bool) -> String {
    match state {
        ContainerState::Running => match health {
            Some(h) => format!("running, {}", h.as_str()),
            None => "running".into(),
        },
        ContainerState::Exited | ContainerState::Dead if oom => "killed by the OOM killer".into(),
        ContainerState::Exited | ContainerState::Dead => match exit_code {
            Some(code) => format!("exited with code {code}"),
            None => state.as_str().to_string(),
        },
        other => other.as_str().to_string(),
    }
}

fn round_secs(d: Duration) -> u64 {
    d.as_secs_f64().round() as u64
}

/// Sums pull progress over layers and reports it at most once a second.
pub(crate) struct PullTracker<'a> {
    host: String,
    image: String,
    notify: &'a dyn Notify,
    state: Mutex<PullState>,
}

/// Bytes done and total per layer, and when progress was last reported.
type PullState = (BTreeMap<String, (i64, i64)>, Option<Instant>);

impl<'a> PullTracker<'a> {
    pub(crate) fn new(host: &str, image: &str, notify: &'a dyn Notify) -> Self {
        Self { host: host.to_string(), image: image.to_string(), notify, state: Mutex::new((BTreeMap::new(), None)) }
    }

    fn totals(layers: &BTreeMap<String, (i64, i64)>) -> (i64, i64) {
        layers.values().fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt))
    }

    pub(crate) fn update(&self, p: &PullProgress) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(layer), Some(total)) = (&p.layer, p.total) {
            st.0.insert(layer.clone(), (p.current.unwrap_or(0), total));
        } else if let Some(layer) = &p.layer
            && p.status.to_ascii_lowercase().contains("complete")
            && let Some(entry) = st.0.get_mut(layer)
        {
            entry.0 = entry.1;
        }
        let due = st.1.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            st.1 = Some(Instant::now());
            let (done, total) = Self::totals(&st.0);
            let message = format!("host {}: pulling image {}: {} of {}", self.host, self.image, mb(done), mb(total));
            tracing::info!(host = %self.host, image = %self.image, done, total, "pulling image");
            self.notify.progress(message);
        }
    }

    pub(crate) fn summary(&self) -> String {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (_, total) = Self::totals(&st.0);
        if total > 0 { format!(" ({})", mb(total)) } else { String::new() }
    }
}

fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests;
