//! The executor of Lease operations on one host: provisioning (network, images, volumes,
//! restore, containers, startup verification), updates with rollback, restarts, and
//! deprovisioning with retention. Each operation is one `async fn` returning an [`Outcome`]; the
//! controller runs it as a cancellable background task ([`super::tasks`]), so dropping the
//! future (a close or delete arriving during a slow pull) stops it at its next Docker call.
//!
//! Every operation is idempotent: after a restart of berth the controller runs it again and it
//! picks up what exists (containers of the same release and config hash are reused, volumes and
//! networks are created only when missing).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::{Duration, Instant};

use berth_crds::common::{
    LABEL_CONFIG_HASH, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID,
    LABEL_RELEASE, LABEL_REPLICA, LABEL_RETAINED_UNTIL, LABEL_ROLE, LABEL_SERVICE, LABEL_TENANT, LABEL_VOLUME,
    MANAGED_BY_VALUE, ROLE_RETAINED_VOLUME,
};
use berth_crds::lease::{LeaseDiagnostics, LeaseEndpoint, LeaseInstanceStatus};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::render::{LeaseNaming, RenderedInstance, RenderedLease};
use crate::config::LeaseConfig;
use crate::controllers::pool::HostHandle;
use crate::controllers::stack::events::{Note, Notify};
use crate::controllers::stack::executor::PullTracker;
use crate::controllers::stack::render::redact;
use crate::docker::{
    ContainerDetails, ContainerSpec, ContainerState, ContainerSummary, DockerError, GoneIsDone, HealthState,
    LabelFilter, LogOptions, Mount, PullProgress, VolumeSpec, VolumeSummary,
};

/// Log lines kept in diagnostics.
pub const DIAGNOSTIC_LOG_LINES: u64 = 50;
/// Label of a Lease volume that received a restored Lease's data (value: the old Lease's name).
pub const LABEL_RESTORED_FROM: &str = "berth.dev/restored-from";
/// Role of the short-lived containers that copy volume data (never started).
pub const ROLE_HELPER: &str = "copy-helper";

/// Event reasons of the Lease controller.
pub mod reason {
    /// A host was chosen.
    pub const PLACED: &str = "Placed";
    /// No host has room.
    pub const INSUFFICIENT_CAPACITY: &str = "InsufficientCapacity";
    /// An image pull started.
    pub const PULLING: &str = "Pulling";
    /// An image was pulled.
    pub const PULLED: &str = "Pulled";
    /// An image could not be pulled.
    pub const PULL_FAILED: &str = "PullFailed";
    /// A container was created and started.
    pub const CREATED: &str = "Created";
    /// Every instance passed its startup check.
    pub const VERIFIED: &str = "Verified";
    /// A container failed its startup check or died.
    pub const FAILED: &str = "Failed";
    /// A container of a Ready Lease stopped.
    pub const FAILING: &str = "Failing";
    /// A new release is being rolled out.
    pub const UPDATING: &str = "Updating";
    /// An update failed and the previous release runs again.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// Containers were restarted on request.
    pub const RESTARTED: &str = "Restarted";
    /// The Lease reached its expiry.
    pub const EXPIRED: &str = "Expired";
    /// The Lease is being deprovisioned.
    pub const CLOSING: &str = "Closing";
    /// Containers and volumes are gone.
    pub const CLOSED: &str = "Closed";
    /// Volumes were kept under retained names.
    pub const RETAINED: &str = "Retained";
    /// A retained Lease's volumes were adopted.
    pub const RESTORED: &str = "Restored";
    /// Retained volumes were removed after their grace period.
    pub const REAPED: &str = "Reaped";
    /// A provisioning step failed and is retried.
    pub const RETRYING: &str = "Retrying";
    /// The host did not answer.
    pub const HOST_UNREACHABLE: &str = "HostUnreachable";
    /// A terminal-transition callback was delivered.
    pub const CALLBACK_DELIVERED: &str = "CallbackDelivered";
}

/// Facts of a Ready release.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadyInfo {
    /// Containers.
    pub instances: Vec<LeaseInstanceStatus>,
    /// Published ports.
    pub endpoints: Vec<LeaseEndpoint>,
}

/// What an operation achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every instance runs and passed its startup check.
    Ready(ReadyInfo),
    /// A step failed in a way retrying can fix (pull, unreachable daemon, name or port in
    /// use); the message says what and what to do.
    Transient(String),
    /// The Lease cannot run as written (a container failed its startup check, a restore was
    /// refused); the diagnostics say why.
    Failed {
        /// What happened.
        message: String,
        /// Exit code, OOM, last log lines.
        diagnostics: Option<LeaseDiagnostics>,
    },
    /// An update failed and the previous release was put back.
    RolledBack {
        /// Why the update failed.
        cause: String,
        /// Diagnostics of the failed release.
        diagnostics: Option<LeaseDiagnostics>,
        /// The restored release.
        ready: ReadyInfo,
    },
    /// Everything is gone from the host; these volumes were kept.
    Deprovisioned {
        /// Retained volume names.
        retained: Vec<String>,
    },
}

/// The retained volumes a restore adopts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSource {
    /// Namespace of the old Lease.
    pub namespace: String,
    /// Name of the old Lease.
    pub name: String,
    /// Tenant the new Lease belongs to (the retained volumes must be this tenant's).
    pub tenant: String,
}

/// How a deprovisioning keeps volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retain {
    /// Tenant (recorded on the retained volumes).
    pub tenant: String,
    /// Until when they are kept (Unix seconds).
    pub until: i64,
}

/// Tunables (tests shorten them).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How often startup verification inspects containers.
    pub poll: Duration,
    /// How long a container without a health check must keep running.
    pub verify_window: Duration,
    /// How long a health check may take to pass.
    pub health_timeout: Duration,
}

impl WorkerOptions {
    /// From the operator configuration.
    pub fn from_config(config: &LeaseConfig) -> Self {
        Self {
            poll: Duration::from_millis(250),
            verify_window: config.verify_window.0,
            health_timeout: config.health_timeout.0,
        }
    }
}

/// Runs Lease operations on one host.
pub struct Worker<'a> {
    /// The host.
    pub host: &'a HostHandle,
    /// This berth instance.
    pub instance: &'a str,
    /// Owner uid of the Lease.
    pub uid: &'a str,
    /// Names of the Lease's objects.
    pub naming: &'a LeaseNaming,
    /// Event sink.
    pub notify: &'a dyn Notify,
    /// Secret values to keep out of messages.
    pub secrets: &'a [String],
    /// Host name in endpoint URLs.
    pub public_host: &'a str,
    /// Tunables.
    pub options: WorkerOptions,
}

/// A failed step: transient (retry) or permanent (the Lease fails).
#[derive(Debug)]
enum StepError {
    Transient(String),
    Permanent(String, Option<LeaseDiagnostics>),
}

type Step<T> = Result<T, StepError>;

impl StepError {
    fn into_outcome(self) -> Outcome {
        match self {
            StepError::Transient(m) => Outcome::Transient(m),
            StepError::Permanent(message, diagnostics) => Outcome::Failed { message, diagnostics },
        }
    }
}

fn now_time() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_else(|_| jiff::Timestamp::now()))
}

impl Worker<'_> {
    fn docker_err(&self, what: &str, e: &DockerError) -> StepError {
        StepError::Transient(redact(&format!("host {}: {what}: {e}", self.host.name), self.secrets))
    }

    fn filter(&self, extra: &[(&str, &str)]) -> LabelFilter {
        let mut f = vec![
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.to_string()),
        ];
        f.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        f
    }

    /// The Lease's containers on the host, listed now.
    async fn owned_containers(&self) -> Step<Vec<ContainerSummary>> {
        let f = self.filter(&[(LABEL_OWNER_UID, self.uid)]);
        self.host.docker.list_containers(&f).await.map_err(|e| self.docker_err("listing the Lease's containers", &e))
    }

    async fn ensure_network(&self, rendered: &RenderedLease) -> Step<()> {
        let spec = &rendered.network;
        let tenant = spec.labels.get(LABEL_TENANT).cloned().unwrap_or_default();
        let f = self.filter(&[(LABEL_TENANT, &tenant), (LABEL_ROLE, &spec.labels[LABEL_ROLE])]);
        let existing =
            self.host.docker.list_networks(&f).await.map_err(|e| self.docker_err("listing tenant networks", &e))?;
        if existing.iter().any(|n| n.name == spec.name) {
            return Ok(());
        }
        match self.host.docker.create_network(spec).await {
            Ok(_) => {
                self.host.invalidate();
                Ok(())
            }
            Err(DockerError::Conflict { .. }) => {
                // Created meanwhile by another Lease of the tenant, or a foreign network of
                // that name: only the former may be used.
                let again = self
                    .host
                    .docker
                    .list_networks(&f)
                    .await
                    .map_err(|e| self.docker_err("listing tenant networks", &e))?;
                if again.iter().any(|n| n.name == spec.name) {
                    Ok(())
                } else {
                    Err(StepError::Transient(format!(
                        "host {}: a network named {} exists that berth does not own; remove or rename it so that \
                         berth can create the tenant network",
                        self.host.name, spec.name
                    )))
                }
            }
            Err(e) => Err(self.docker_err(&format!("creating network {}", spec.name), &e)),
        }
    }

    async fn ensure_image(&self, image: &str) -> Step<()> {
        let present = self
            .host
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| self.docker_err(&format!("inspecting image {image}"), &e))?;
        if present.is_some() {
            return Ok(());
        }
        let host = &self.host.name;
        self.notify.note(Note::normal(reason::PULLING, "Pull", format!("host {host}: pulling image {image}")));
        let tracker = PullTracker::new(host, image, self.notify);
        let progress = |p: &PullProgress| tracker.update(p);
        match self.host.docker.pull_image(image, &progress).await {
            Ok(()) => {
                self.notify.note(Note::normal(
                    reason::PULLED,
                    "Pull",
                    format!("host {host}: pulled image {image}{}", tracker.summary()),
                ));
                Ok(())
            }
            Err(e) => {
                let message = redact(&format!("host {host}: {e}"), self.secrets);
                self.notify.note(Note::warning(reason::PULL_FAILED, "Pull", message.clone()));
                Err(StepError::Transient(message))
            }
        }
    }

    async fn ensure_volume(&self, spec: &VolumeSpec) -> Step<()> {
        self.host
            .docker
            .create_volume(spec)
            .await
            .map_err(|e| self.docker_err(&format!("creating volume {}", spec.name), &e))
    }

    /// Creates (or reuses) the containers of a release, without starting them.
    async fn create_instances(&self, rendered: &RenderedLease, existing: &[ContainerSummary]) -> Step<Vec<String>> {
        let mut ids = Vec::new();
        for inst in &rendered.instances {
            let spec = &inst.spec;
            if let Some(c) = existing.iter().find(|c| c.name == spec.name) {
                if c.labels.get(LABEL_CONFIG_HASH) == spec.labels.get(LABEL_CONFIG_HASH) {
                    ids.push(c.id.clone());
                    continue;
                }
                // Same release number, other configuration (the spec changed while this
                // release was being provisioned): replace it.
                self.host
                    .docker
                    .remove_container(&c.id, true)
                    .await
                    .gone_is_done()
                    .map_err(|e| self.docker_err(&format!("removing outdated container {}", c.name), &e))?;
            }
            match self.host.docker.create_container(spec).await {
                Ok(id) => ids.push(id),
                Err(DockerError::Conflict { message, .. }) => {
                    return Err(StepError::Transient(format!(
                        "host {}: cannot create container {}: {message}; a container of that name that this Lease \
                         does not own is in the way: remove or rename it",
                        self.host.name, spec.name
                    )));
                }
                Err(e) => return Err(self.docker_err(&format!("creating container {}", spec.name), &e)),
            }
        }
        self.host.invalidate();
        Ok(ids)
    }

    async fn start_all(&self, rendered: &RenderedLease, ids: &[String]) -> Step<()> {
        for (inst, id) in rendered.instances.iter().zip(ids) {
            let d = self
                .host
                .docker
                .inspect_container(id)
                .await
                .map_err(|e| self.docker_err(&format!("inspecting container {}", inst.spec.name), &e))?;
            if d.summary.state == ContainerState::Running {
                continue;
            }
            if let Err(e) = self.host.docker.start_container(id).await {
                // A port already taken is the typical transient failure here.
                return Err(self.docker_err(&format!("starting container {}", inst.spec.name), &e));
            }
            self.notify.note(Note::normal(
                reason::CREATED,
                "Start",
                format!("host {}: started {} ({})", self.host.name, inst.display(), inst.spec.name),
            ));
        }
        self.host.invalidate();
        Ok(())
    }

    /// Waits until every container passed its startup check: healthy when the image has a
    /// health check, else still running after the verification window.
    async fn verify(&self, rendered: &RenderedLease, ids: &[String]) -> Step<()> {
        let checks = rendered.instances.iter().zip(ids).map(|(inst, id)| self.verify_one(inst, id));
        for r in futures::future::join_all(checks).await {
            r?;
        }
        Ok(())
    }

    async fn verify_one(&self, inst: &RenderedInstance, id: &str) -> Step<()> {
        let started = Instant::now();
        loop {
            let d = self
                .host
                .docker
                .inspect_container(id)
                .await
                .map_err(|e| self.docker_err(&format!("inspecting container {}", inst.spec.name), &e))?;
            let elapsed = started.elapsed();
            let failure = match (d.summary.state, d.summary.health) {
                (ContainerState::Running, Some(HealthState::Healthy)) => return Ok(()),
                (ContainerState::Running, Some(HealthState::Unhealthy)) => Some("its health check failed".to_string()),
                (ContainerState::Running, Some(HealthState::Starting)) if elapsed > self.options.health_timeout => {
                    Some(format!("its health check did not pass within {}s", self.options.health_timeout.as_secs()))
                }
                (ContainerState::Running, None) if elapsed >= self.options.verify_window => return Ok(()),
                (ContainerState::Running, _) => None,
                (state, _) => Some(match d.exit_code {
                    Some(code) if d.oom_killed => format!("it was killed by the OOM killer (exit code {code})"),
                    Some(code) => format!("it exited with code {code} during startup ({})", state.as_str()),
                    None => format!("it is {} instead of running", state.as_str()),
                }),
            };
            if let Some(why) = failure {
                let diagnostics = self.diagnose_details(inst.display(), &d).await;
                let message = format!(
                    "host {}: {} ({}) did not pass its startup check: {why}",
                    self.host.name,
                    inst.display(),
                    inst.spec.name
                );
                return Err(StepError::Permanent(message, Some(diagnostics)));
            }
            tokio::time::sleep(self.options.poll).await;
        }
    }

    /// Exit code, OOM, Docker's error and the last log lines of a container.
    pub async fn diagnose(&self, display: String, id: &str) -> LeaseDiagnostics {
        match self.host.docker.inspect_container(id).await {
            Ok(d) => self.diagnose_details(display, &d).await,
            Err(e) => LeaseDiagnostics {
                container: display,
                error: redact(&format!("inspecting the container failed: {e}"), self.secrets),
                at: Some(now_time()),
                ..Default::default()
            },
        }
    }

    async fn diagnose_details(&self, display: String, d: &ContainerDetails) -> LeaseDiagnostics {
        let opts = LogOptions { tail: Some(DIAGNOSTIC_LOG_LINES), ..Default::default() };
        let collect =
            self.host.docker.logs(&d.summary.id, &opts).take(DIAGNOSTIC_LOG_LINES as usize).collect::<Vec<_>>();
        let lines = tokio::time::timeout(Duration::from_secs(10), collect).await.unwrap_or_default();
        let last_log_lines = lines
            .into_iter()
            .filter_map(Result::ok)
            .map(|l| redact(l.text.trim_end(), self.secrets))
            .collect::<Vec<_>>();
        LeaseDiagnostics {
            container: display,
            exit_code: d.exit_code.filter(|_| d.summary.state != ContainerState::Running),
            oom_killed: d.oom_killed,
            error: redact(&d.error, self.secrets),
            last_log_lines,
            at: Some(now_time()),
        }
    }

    /// Instances and endpoints of running containers.
    async fn ready_info(&self, rendered: &RenderedLease, ids: &[String]) -> Step<ReadyInfo> {
        let mut info = ReadyInfo::default();
        for (inst, id) in rendered.instances.iter().zip(ids) {
            let d = self
                .host
                .docker
                .inspect_container(id)
                .await
                .map_err(|e| self.docker_err(&format!("inspecting container {}", inst.spec.name), &e))?;
            info.instances.push(instance_status(inst, &d.summary));
            info.endpoints.extend(endpoints(inst, &d.summary, self.public_host));
        }
        Ok(info)
    }

    /// Pull, network, volumes, (restore), containers, start, verify.
    pub async fn provision(&self, rendered: &RenderedLease, restore: Option<&RestoreSource>) -> Outcome {
        match self.provision_steps(rendered, restore).await {
            Ok(info) => Outcome::Ready(info),
            Err(e) => e.into_outcome(),
        }
    }

    async fn prepare(&self, rendered: &RenderedLease) -> Step<()> {
        let images: BTreeSet<&str> = rendered.instances.iter().map(|i| i.spec.image.as_str()).collect();
        for image in images {
            self.ensure_image(image).await?;
        }
        self.ensure_network(rendered).await
    }

    async fn provision_steps(&self, rendered: &RenderedLease, restore: Option<&RestoreSource>) -> Step<ReadyInfo> {
        self.prepare(rendered).await?;
        if let Some(source) = restore {
            self.restore(rendered, source).await?;
        }
        for v in &rendered.volumes {
            self.ensure_volume(v).await?;
        }
        let existing = self.owned_containers().await?;
        let ids = self.create_instances(rendered, &existing).await?;
        self.start_all(rendered, &ids).await?;
        self.verify(rendered, &ids).await?;
        self.ready_info(rendered, &ids).await
    }

    /// Rolls out `new`; on failure puts release `old_revision` back (when there is one).
    pub async fn update(&self, new: &RenderedLease, old_revision: Option<i64>) -> Outcome {
        // Pull and network first, while the old release still serves.
        if let Err(e) = self.prepare(new).await {
            return e.into_outcome();
        }
        let existing = match self.owned_containers().await {
            Ok(c) => c,
            Err(e) => return e.into_outcome(),
        };
        let new_revision = new.instances.first().and_then(|i| i.spec.labels.get(LABEL_RELEASE).cloned());
        let old: Vec<&ContainerSummary> =
            existing.iter().filter(|c| c.labels.get(LABEL_RELEASE) != new_revision.as_ref()).collect();
        for c in &old {
            if c.state == ContainerState::Running
                && let Err(e) = self.host.docker.stop_container(&c.id, Some(super::render::STOP_TIMEOUT_SECONDS)).await
                && !e.is_not_found()
            {
                return self.docker_err(&format!("stopping container {}", c.name), &e).into_outcome();
            }
        }
        let attempt = async {
            for v in &new.volumes {
                self.ensure_volume(v).await?;
            }
            let ids = self.create_instances(new, &existing).await?;
            self.start_all(new, &ids).await?;
            self.verify(new, &ids).await?;
            self.ready_info(new, &ids).await
        }
        .await;
        match attempt {
            Ok(info) => {
                // The new release runs: the old containers go.
                for c in &old {
                    let _ = self.host.docker.remove_container(&c.id, true).await;
                }
                self.host.invalidate();
                Outcome::Ready(info)
            }
            Err(StepError::Transient(m)) => {
                // Nothing is decided yet: put the old release back so the Lease keeps serving
                // while the update is retried.
                self.restart_containers(&old).await;
                Outcome::Transient(m)
            }
            Err(StepError::Permanent(cause, diagnostics)) => {
                let failed: Vec<ContainerSummary> = match self.owned_containers().await {
                    Ok(all) => {
                        all.into_iter().filter(|c| c.labels.get(LABEL_RELEASE) == new_revision.as_ref()).collect()
                    }
                    Err(_) => vec![],
                };
                for c in &failed {
                    let _ = self.host.docker.remove_container(&c.id, true).await;
                }
                self.host.invalidate();
                let Some(old_revision) = old_revision.filter(|_| !old.is_empty()) else {
                    return Outcome::Failed { message: cause, diagnostics };
                };
                match self.rollback(&old, old_revision).await {
                    Ok(ready) => Outcome::RolledBack { cause, diagnostics, ready },
                    Err(why) => Outcome::Failed {
                        message: format!("{cause}; rolling back to release {old_revision} failed too: {why}"),
                        diagnostics,
                    },
                }
            }
        }
    }

    async fn restart_containers(&self, containers: &[&ContainerSummary]) {
        for c in containers {
            let _ = self.host.docker.start_container(&c.id).await;
        }
        self.host.invalidate();
    }

    async fn rollback(&self, old: &[&ContainerSummary], revision: i64) -> Result<ReadyInfo, String> {
        self.restart_containers(old).await;
        let mut info = ReadyInfo::default();
        for c in old {
            let inst = pseudo_instance(c);
            if let Err(e) = self.verify_one(&inst, &c.id).await {
                return Err(match e {
                    StepError::Transient(m) | StepError::Permanent(m, _) => m,
                });
            }
            let d = self.host.docker.inspect_container(&c.id).await.map_err(|e| e.to_string())?;
            info.instances.push(instance_status(&inst, &d.summary));
            info.endpoints.extend(endpoints(&inst, &d.summary, self.public_host));
        }
        info.instances.sort_by(|a, b| (&a.service, a.instance).cmp(&(&b.service, b.instance)));
        self.notify.note(Note::normal(
            reason::ROLLED_BACK,
            "Rollback",
            format!("host {}: release {revision} runs again", self.host.name),
        ));
        Ok(info)
    }

    /// Restarts the containers of the running release and verifies them again.
    pub async fn restart(&self, rendered: &RenderedLease) -> Outcome {
        let existing = match self.owned_containers().await {
            Ok(c) => c,
            Err(e) => return e.into_outcome(),
        };
        let mut ids = Vec::new();
        for inst in &rendered.instances {
            let Some(c) = existing.iter().find(|c| c.name == inst.spec.name) else {
                return Outcome::Failed {
                    message: format!(
                        "host {}: container {} of {} is gone; update the Lease (or close it) to replace it",
                        self.host.name,
                        inst.spec.name,
                        inst.display()
                    ),
                    diagnostics: None,
                };
            };
            if let Err(e) = self.host.docker.restart_container(&c.id, Some(super::render::STOP_TIMEOUT_SECONDS)).await {
                return self.docker_err(&format!("restarting container {}", c.name), &e).into_outcome();
            }
            ids.push(c.id.clone());
        }
        self.host.invalidate();
        let result = async {
            self.verify(rendered, &ids).await?;
            self.ready_info(rendered, &ids).await
        }
        .await;
        match result {
            Ok(info) => Outcome::Ready(info),
            Err(e) => e.into_outcome(),
        }
    }

    /// Copies the content of volume `from` into volume `to` through a helper container of
    /// `image` that mounts both and is never started.
    async fn copy_volume(&self, from: &str, to: &str, image: &str, purpose: &str) -> Step<()> {
        let mut labels = BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.to_string()),
            (LABEL_OWNER_UID.to_string(), self.uid.to_string()),
            (LABEL_ROLE.to_string(), ROLE_HELPER.to_string()),
        ]);
        labels.insert(berth_crds::common::LABEL_OWNER_KIND.into(), super::render::OWNER_KIND.into());
        let name = self.naming.helper(purpose);
        let spec = ContainerSpec {
            name: name.clone(),
            image: image.to_string(),
            entrypoint: Some(vec!["/berth-copy-helper-never-started".into()]),
            labels,
            mounts: vec![
                Mount::Volume { name: from.to_string(), target: "/berth/src".into(), read_only: true },
                Mount::Volume { name: to.to_string(), target: "/berth/dst".into(), read_only: false },
            ],
            restart_policy: "no".into(),
            cap_drop: vec!["ALL".into()],
            no_new_privileges: true,
            ..Default::default()
        };
        // A helper left by an interrupted copy is replaced.
        let _ = self.host.docker.remove_container(&name, true).await;
        let id = self
            .host
            .docker
            .create_container(&spec)
            .await
            .map_err(|e| self.docker_err(&format!("creating helper {name} to copy volume {from}"), &e))?;
        let result = async {
            let tar = self
                .host
                .docker
                .download_archive(&id, "/berth/src")
                .await
                .map_err(|e| self.docker_err(&format!("reading volume {from}"), &e))?;
            let stripped = strip_top_directory(&tar).map_err(|e| {
                StepError::Transient(format!(
                    "host {}: the archive of volume {from} is unreadable: {e}",
                    self.host.name
                ))
            })?;
            self.host
                .docker
                .upload_archive(&id, "/berth/dst", stripped.into())
                .await
                .map_err(|e| self.docker_err(&format!("writing volume {to}"), &e))
        }
        .await;
        let _ = self.host.docker.remove_container(&id, true).await;
        result
    }

    /// Adopts a retained Lease's volumes: checks tenant and shape, copies each into the new
    /// Lease's volume (labelled with where it came from) and removes the retained one.
    async fn restore(&self, rendered: &RenderedLease, source: &RestoreSource) -> Step<()> {
        let f = self.filter(&[
            (LABEL_ROLE, ROLE_RETAINED_VOLUME),
            (LABEL_OWNER_NAMESPACE, &source.namespace),
            (LABEL_OWNER_NAME, &source.name),
        ]);
        let retained =
            self.host.docker.list_volumes(&f).await.map_err(|e| self.docker_err("listing retained volumes", &e))?;
        if retained.is_empty() {
            let done = self
                .host
                .docker
                .list_volumes(&self.filter(&[(LABEL_OWNER_UID, self.uid), (LABEL_RESTORED_FROM, &source.name)]))
                .await
                .map_err(|e| self.docker_err("listing the Lease's volumes", &e))?;
            if !done.is_empty() {
                return Ok(()); // restored by an earlier, interrupted attempt
            }
            return Err(StepError::Permanent(
                format!(
                    "restoreFrom {}: host {} holds no retained volumes of Lease {}/{} (reaped, or never retained)",
                    source.name, self.host.name, source.namespace, source.name
                ),
                None,
            ));
        }
        if let Some(v) = retained.iter().find(|v| v.labels.get(LABEL_TENANT) != Some(&source.tenant)) {
            return Err(StepError::Permanent(
                format!(
                    "restoreFrom {}: the retained volumes belong to tenant {}, not {}; a Lease can only restore its \
                     own tenant's data",
                    source.name,
                    v.labels.get(LABEL_TENANT).map(String::as_str).unwrap_or("(none)"),
                    source.tenant
                ),
                None,
            ));
        }
        let have: BTreeMap<(String, String, String), &VolumeSummary> =
            retained.iter().filter_map(|v| Some((volume_key(&v.labels)?, v))).collect();
        let want: BTreeMap<(String, String, String), (&RenderedInstance, &super::render::InstanceVolume)> = rendered
            .instances
            .iter()
            .flat_map(|i| {
                i.volumes.iter().map(move |v| ((i.service.clone(), i.instance.to_string(), v.logical.clone()), (i, v)))
            })
            .collect();
        if have.keys().ne(want.keys()) {
            let show = |keys: Vec<&(String, String, String)>| {
                keys.iter().map(|(s, i, v)| format!("{s}-{i}:{v}")).collect::<Vec<_>>().join(", ")
            };
            return Err(StepError::Permanent(
                format!(
                    "restoreFrom {}: the service shape differs: the retained volumes are [{}], this Lease has [{}]; \
                     give it the same services, quantities and volumes",
                    source.name,
                    show(have.keys().collect()),
                    show(want.keys().collect())
                ),
                None,
            ));
        }
        for (key, old) in &have {
            let (inst, vol) = want[key];
            let mut spec = rendered
                .volumes
                .iter()
                .find(|v| v.name == vol.name)
                .cloned()
                .unwrap_or_else(|| VolumeSpec { name: vol.name.clone(), labels: BTreeMap::new() });
            spec.labels.insert(LABEL_RESTORED_FROM.into(), source.name.clone());
            self.ensure_volume(&spec).await?;
            self.copy_volume(
                &old.name,
                &vol.name,
                &inst.spec.image,
                &format!("restore-{}-{}", inst.display(), vol.logical),
            )
            .await?;
        }
        for old in have.values() {
            self.host
                .docker
                .remove_volume(&old.name)
                .await
                .gone_is_done()
                .map_err(|e| self.docker_err(&format!("removing adopted volume {}", old.name), &e))?;
        }
        self.host.invalidate();
        self.notify.note(Note::normal(
            reason::RESTORED,
            "Restore",
            format!(
                "host {}: adopted {} volume(s) of retained Lease {}/{}",
                self.host.name,
                have.len(),
                source.namespace,
                source.name
            ),
        ));
        Ok(())
    }

    /// Stops and removes the Lease's containers; keeps its volumes under retained names when
    /// asked, else removes them; removes the tenant network when no container of the tenant is
    /// left on the host.
    pub async fn deprovision(&self, tenant: &str, images: &[String], retain: Option<&Retain>) -> Outcome {
        match self.deprovision_steps(tenant, images, retain).await {
            Ok(retained) => Outcome::Deprovisioned { retained },
            Err(e) => e.into_outcome(),
        }
    }

    async fn deprovision_steps(&self, tenant: &str, images: &[String], retain: Option<&Retain>) -> Step<Vec<String>> {
        let containers = self.owned_containers().await?;
        let stops = containers.iter().filter(|c| c.state == ContainerState::Running).map(|c| async move {
            self.host
                .docker
                .stop_container(&c.id, Some(super::render::STOP_TIMEOUT_SECONDS))
                .await
                .gone_is_done()
                .map_err(|e| self.docker_err(&format!("stopping container {}", c.name), &e))
        });
        for r in futures::future::join_all(stops).await {
            r?;
        }
        let volumes = self
            .host
            .docker
            .list_volumes(&self.filter(&[(LABEL_OWNER_UID, self.uid)]))
            .await
            .map_err(|e| self.docker_err("listing the Lease's volumes", &e))?;
        let volumes: Vec<&VolumeSummary> = volumes
            .iter()
            .filter(|v| v.labels.get(LABEL_ROLE).map(String::as_str) != Some(ROLE_RETAINED_VOLUME))
            .collect();
        let mut retained = Vec::new();
        if let Some(r) = retain {
            let image = self.helper_image(&containers, images).await?;
            for v in &volumes {
                let Some((service, replica, logical)) = volume_key(&v.labels) else { continue };
                let instance: i32 = replica.parse().unwrap_or(0);
                let name = self.naming.retained_volume(&service, instance, &logical);
                let mut labels = v.labels.clone();
                labels.remove(LABEL_RESTORED_FROM);
                labels.insert(LABEL_ROLE.into(), ROLE_RETAINED_VOLUME.into());
                labels.insert(LABEL_TENANT.into(), r.tenant.clone());
                labels.insert(LABEL_RETAINED_UNTIL.into(), r.until.to_string());
                self.ensure_volume(&VolumeSpec { name: name.clone(), labels }).await?;
                self.copy_volume(&v.name, &name, &image, &format!("retain-{service}-{instance}-{logical}")).await?;
                retained.push(name);
            }
        }
        for c in &containers {
            self.host
                .docker
                .remove_container(&c.id, true)
                .await
                .gone_is_done()
                .map_err(|e| self.docker_err(&format!("removing container {}", c.name), &e))?;
        }
        for v in &volumes {
            self.host
                .docker
                .remove_volume(&v.name)
                .await
                .gone_is_done()
                .map_err(|e| self.docker_err(&format!("removing volume {}", v.name), &e))?;
        }
        self.host.invalidate();
        self.remove_tenant_network_if_unused(tenant).await;
        retained.sort();
        Ok(retained)
    }

    /// An image present on the host to run the copy helper from.
    async fn helper_image(&self, containers: &[ContainerSummary], images: &[String]) -> Step<String> {
        for candidate in containers.iter().map(|c| c.image.clone()).chain(images.iter().cloned()) {
            if let Ok(Some(_)) = self.host.docker.inspect_image(&candidate).await {
                return Ok(candidate);
            }
        }
        Err(StepError::Transient(format!(
            "host {}: none of the Lease's images ({}) is on the host, and one is needed to copy its volumes for \
             retention; load or pull one of them",
            self.host.name,
            images.join(", ")
        )))
    }

    /// Removes the tenant's network when none of its containers remain on the host.
    pub async fn remove_tenant_network_if_unused(&self, tenant: &str) {
        let users = self.host.docker.list_containers(&self.filter(&[(LABEL_TENANT, tenant)])).await;
        let Ok(users) = users else { return };
        if users.iter().any(|c| c.labels.get(LABEL_ROLE).map(String::as_str) != Some(ROLE_HELPER)) {
            return;
        }
        let f = self.filter(&[(LABEL_TENANT, tenant), (LABEL_ROLE, berth_crds::common::ROLE_TENANT_NETWORK)]);
        if let Ok(networks) = self.host.docker.list_networks(&f).await {
            for n in networks {
                if self.host.docker.remove_network(&n.id).await.is_ok() {
                    tracing::info!(host = %self.host.name, network = %n.name, "removed the tenant network");
                }
            }
        }
    }
}

/// (service, replica, volume) of a Lease volume's labels.
fn volume_key(labels: &BTreeMap<String, String>) -> Option<(String, String, String)> {
    Some((labels.get(LABEL_SERVICE)?.clone(), labels.get(LABEL_REPLICA)?.clone(), labels.get(LABEL_VOLUME)?.clone()))
}

/// A stand-in instance for a container known only from a listing (rollback).
fn pseudo_instance(c: &ContainerSummary) -> RenderedInstance {
    RenderedInstance {
        service: c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
        instance: c.labels.get(LABEL_REPLICA).and_then(|r| r.parse().ok()).unwrap_or(0),
        spec: ContainerSpec { name: c.name.clone(), image: c.image.clone(), ..Default::default() },
        volumes: vec![],
    }
}

/// The status of one container.
pub fn instance_status(inst: &RenderedInstance, c: &ContainerSummary) -> LeaseInstanceStatus {
    LeaseInstanceStatus {
        service: inst.service.clone(),
        instance: inst.instance,
        container_id: c.id.chars().take(12).collect(),
        state: c.state.as_str().to_string(),
        health: c.health.map(|h| h.as_str().to_string()).unwrap_or_default(),
    }
}

/// The endpoints of one container's published ports.
pub fn endpoints(inst: &RenderedInstance, c: &ContainerSummary, public_host: &str) -> Vec<LeaseEndpoint> {
    let mut out: Vec<LeaseEndpoint> = c
        .ports
        .iter()
        .filter(|p| p.host_port != 0)
        .map(|p| LeaseEndpoint {
            service: inst.service.clone(),
            instance: inst.instance,
            container_port: i32::from(p.container_port),
            protocol: if p.protocol == "udp" { berth_crds::common::Protocol::Udp } else { Default::default() },
            host_ip: p.host_ip.clone(),
            host_port: i32::from(p.host_port),
            url: if p.protocol == "udp" { String::new() } else { format!("http://{public_host}:{}", p.host_port) },
        })
        .collect();
    // Docker lists a port once per address family; one endpoint per port is enough.
    out.sort_by(|a, b| (a.container_port, a.host_port, &a.host_ip).cmp(&(b.container_port, b.host_port, &b.host_ip)));
    out.dedup_by(|a, b| a.container_port == b.container_port && a.host_port == b.host_port && a.protocol == b.protocol);
    out
}

/// Rewrites a `docker cp`-style archive of a directory (`dir/…`) into an archive of its
/// content (`…`), so that it can be unpacked into another directory of the same container.
pub fn strip_top_directory(tar: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut components = path.components();
        components.next();
        let rest = components.as_path().to_path_buf();
        if rest.as_os_str().is_empty() {
            continue;
        }
        let mut header = entry.header().clone();
        let link = entry.link_name()?.map(|l| l.into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        match link {
            Some(target) if header.entry_type().is_hard_link() => {
                let mut tc = target.components();
                tc.next();
                out.append_link(&mut header, &rest, tc.as_path())?;
            }
            Some(target) => out.append_link(&mut header, &rest, &target)?,
            None => out.append_data(&mut header, &rest, data.as_slice())?,
        }
    }
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_size(d.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o640);
                    b.append_data(&mut h, path, d.as_bytes()).unwrap();
                }
                None => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn stripping_keeps_content_modes_and_nesting() {
        let tar =
            archive(&[("src/", None), ("src/a.txt", Some("hello")), ("src/sub/", None), ("src/sub/b", Some("x"))]);
        let out = strip_top_directory(&tar).unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            seen.push((e.path().unwrap().display().to_string(), s, e.header().mode().unwrap()));
        }
        assert_eq!(
            seen,
            [
                ("a.txt".to_string(), "hello".to_string(), 0o640),
                ("sub".to_string(), String::new(), 0o755),
                ("sub/b".to_string(), "x".to_string(), 0o640)
            ]
        );
    }

    #[test]
    fn endpoints_list_each_published_port_once() {
        let inst =
            RenderedInstance { service: "app".into(), instance: 1, spec: ContainerSpec::default(), volumes: vec![] };
        let c = ContainerSummary {
            id: "0123456789abcdef".into(),
            name: "n".into(),
            image: "i".into(),
            image_id: String::new(),
            labels: BTreeMap::new(),
            state: ContainerState::Running,
            health: None,
            created: 0,
            ports: vec![
                crate::docker::PublishedPort {
                    container_port: 8080,
                    protocol: "tcp".into(),
                    host_ip: "0.0.0.0".into(),
                    host_port: 49153,
                },
                crate::docker::PublishedPort {
                    container_port: 8080,
                    protocol: "tcp".into(),
                    host_ip: "::".into(),
                    host_port: 49153,
                },
            ],
        };
        let e = endpoints(&inst, &c, "edge-1");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].url, "http://edge-1:49153");
        assert_eq!((e[0].service.as_str(), e[0].instance, e[0].container_port), ("app", 1, 8080));
        assert_eq!(instance_status(&inst, &c).container_id, "0123456789ab");
    }
}
