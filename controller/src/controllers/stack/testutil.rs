//! Helpers of the Stack controller's unit tests: a sample three-service Stack, a fake host in a
//! pool, and one-call passes over it.

use std::collections::HashMap;
use std::sync::Arc;

use berth_crds::common::{EnvVar, HealthcheckSpec, MountSpec};
use berth_crds::stack::{
    Dependency, DependencyCondition, DriftPolicy, NetworkSpec, ServiceNetwork, ServiceSpec, Stack, StackSpec,
    VolumeSpec,
};

use super::events::Collect;
use super::executor::ExecOptions;
use super::pass::{HostResult, Mode, PassContext, reconcile_host};
use super::render::{DesiredState, References, RenderContext, render};
use crate::controllers::pool::HostPool;
use crate::docker::fake::FakeDocker;

/// The test image.
pub const IMAGE: &str = "berth-e2e/busybox:latest";
/// Instance name of the tests.
pub const INSTANCE: &str = "test";

/// No Secrets or ConfigMaps.
pub struct NoRefs;

impl References for NoRefs {
    fn secret(&self, _: &str, _: &str, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn config_map(&self, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

/// `db` (health check, volume) ← `api` (waits for db Healthy) ← `web` (waits for api Started).
pub fn sample_stack(name: &str, uid: &str) -> Stack {
    let health = HealthcheckSpec {
        test: vec!["CMD".into(), "true".into()],
        interval_seconds: Some(1),
        timeout_seconds: Some(1),
        retries: Some(3),
        start_period_seconds: None,
    };
    let mut s = Stack::new(
        name,
        StackSpec {
            networks: vec![NetworkSpec { name: "back".into(), internal: false }],
            volumes: vec![VolumeSpec { name: "data".into(), retain: true }],
            services: vec![
                ServiceSpec {
                    name: "web".into(),
                    image: IMAGE.into(),
                    command: Some(vec!["sleep".into(), "3600".into()]),
                    env: vec![env("MODE", "web")],
                    networks: vec![ServiceNetwork { name: "back".into(), aliases: vec![] }],
                    depends_on: vec![Dependency { service: "api".into(), condition: DependencyCondition::Started }],
                    replicas: 1,
                    ..Default::default()
                },
                ServiceSpec {
                    name: "api".into(),
                    image: IMAGE.into(),
                    command: Some(vec!["sleep".into(), "3600".into()]),
                    env: vec![env("MODE", "api")],
                    networks: vec![ServiceNetwork { name: "back".into(), aliases: vec![] }],
                    depends_on: vec![Dependency { service: "db".into(), condition: DependencyCondition::Healthy }],
                    replicas: 1,
                    ..Default::default()
                },
                ServiceSpec {
                    name: "db".into(),
                    image: IMAGE.into(),
                    command: Some(vec!["sleep".into(), "3600".into()]),
                    env: vec![env("MODE", "db")],
                    networks: vec![ServiceNetwork { name: "back".into(), aliases: vec![] }],
                    mounts: vec![MountSpec {
                        mount_path: "/data".into(),
                        volume: Some("data".into()),
                        host_path: None,
                        tmpfs: None,
                        read_only: false,
                    }],
                    healthcheck: Some(health),
                    replicas: 1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    );
    s.metadata.namespace = Some("default".into());
    s.metadata.uid = Some(uid.into());
    s.metadata.generation = Some(1);
    s
}

/// Renders with no references and no allowed host paths.
pub fn desired_of(stack: &Stack) -> DesiredState {
    render(stack, &RenderContext { instance: INSTANCE, hash_key: b"k", allowed_host_paths: &[], references: &NoRefs })
        .expect("the sample renders")
}

/// One fake host, `local`, in a pool.
pub struct FakeHost {
    /// The daemon.
    pub fake: FakeDocker,
    /// The pool it is connected in.
    pub pool: Arc<HostPool>,
    /// The pass context over the pool.
    pub cx: PassContext,
}

impl FakeHost {
    /// A connected host with the test image loaded.
    pub fn new() -> Self {
        let fake = FakeDocker::default();
        fake.add_image(IMAGE);
        let pool = Arc::new(HostPool::new());
        pool.set_connected("local", Arc::new(fake.clone()));
        let cx = PassContext::new(pool.clone(), INSTANCE);
        Self { fake, pool, cx }
    }

    /// One pass of `stack` under `policy` with `exec`, returning the result and the events.
    pub async fn pass_with(
        &self,
        stack: &Stack,
        policy: DriftPolicy,
        exec: ExecOptions,
        previously_applied: bool,
        known: &HashMap<String, i64>,
    ) -> (HostResult, Collect) {
        let desired = desired_of(stack);
        let notes = Collect::default();
        let uid = stack.metadata.uid.clone().unwrap_or_default();
        let mode = Mode::Apply { policy, exec };
        let r = reconcile_host(&self.cx, &uid, &desired, "local", &mode, previously_applied, known, &notes).await;
        (r, notes)
    }

    /// One pass under `Reconcile` with fast polling.
    pub async fn pass(&self, stack: &Stack, previously_applied: bool) -> (HostResult, Collect) {
        self.pass_with(stack, DriftPolicy::Reconcile, fast(), previously_applied, &HashMap::new()).await
    }

    /// Calls that change something on the host, in order.
    pub fn mutations(&self) -> Vec<String> {
        const MUTATING: [&str; 14] = [
            "create_container",
            "start_container",
            "stop_container",
            "restart_container",
            "kill_container",
            "remove_container",
            "rename_container",
            "create_network",
            "remove_network",
            "connect_network",
            "disconnect_network",
            "create_volume",
            "remove_volume",
            "pull_image",
        ];
        self.fake.call_log().into_iter().filter(|c| MUTATING.iter().any(|m| c.starts_with(m))).collect()
    }
}

/// Rollout options with quick polls and a short health timeout (the fake answers at once).
pub fn fast() -> ExecOptions {
    ExecOptions {
        poll_interval: std::time::Duration::from_millis(20),
        health_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    }
}

/// Restart counts by container id, as a status would carry them.
pub fn known(r: &HostResult) -> HashMap<String, i64> {
    r.facts.iter().map(|f| (f.summary.id.clone(), f.restarts)).collect()
}
