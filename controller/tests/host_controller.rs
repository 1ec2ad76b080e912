//! Component tests of the Host controller: `host::run_with` against the in-process API server
//! (a real `kube::Client` over the router, the real sled store in a temp dir) and fake Docker
//! daemons behind the `FakeConnector`. Every wait is a poll with a generous deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth::apiserver::{self, ApiState};
use berth::config::{ConfigDuration, OperatorConfig, OrphanAction, OrphanConfig};
use berth::controllers::context::Context;
use berth::controllers::host::{self, CONFIRM_ANNOTATION, HostControllerOptions};
use berth::controllers::pool::HostPool;
use berth::docker::fake::{FakeConnector, FakeDocker};
use berth::docker::local_endpoint;
use berth::metrics::{KindLabels, Metrics, RequestLabels};
use berth::store::{StoreOptions, open as open_store};
use berth_crds::common::{
    ConditionStatus, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE,
    LABEL_OWNER_UID, find_condition,
};
use berth_crds::host::{Host, HostStatus, LOCAL_HOST};
use berth_crds::{Stack, StackSpec, stack::ServiceSpec};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const INSTANCE: &str = "prod";
const DEADLINE: Duration = Duration::from_secs(60);

struct Env {
    _dir: tempfile::TempDir,
    client: Client,
    ctx: Arc<Context>,
    /// The API server's metrics (to count writes).
    api_metrics: Arc<Metrics>,
    local: FakeDocker,
    connector: FakeConnector,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Env {
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(DEADLINE, t).await.expect("the controller stops on shutdown").unwrap();
        }
    }

    fn hosts(&self) -> Api<Host> {
        Api::all(self.client.clone())
    }

    async fn status(&self) -> Option<HostStatus> {
        self.hosts().get_opt(LOCAL_HOST).await.unwrap().and_then(|h| h.status)
    }

    async fn create_stack(&self, name: &str) -> String {
        let api: Api<Stack> = Api::namespaced(self.client.clone(), "default");
        let stack = Stack::new(
            name,
            StackSpec {
                services: vec![ServiceSpec {
                    name: "web".into(),
                    image: "busybox:1".into(),
                    replicas: 1,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        api.create(&PostParams::default(), &stack).await.unwrap().uid().unwrap()
    }

    async fn confirm(&self, value: &str) {
        self.hosts()
            .patch(
                LOCAL_HOST,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {CONFIRM_ANNOTATION: value}}})),
            )
            .await
            .unwrap();
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    /// Successful patches of Hosts (status or not) the API server answered.
    fn host_patches(&self) -> u64 {
        let labels = RequestLabels { verb: "patch".into(), resource: "hosts".into(), code: "200".into() };
        self.api_metrics.requests.get_or_create(&labels).get()
    }

    /// Host reconciles completed so far.
    fn reconciles(&self) -> u64 {
        self.ctx.metrics.reconciles.get_or_create(&KindLabels { kind: "Host".into() }).get()
    }
}

fn orphans(action: OrphanAction, threshold: u32) -> OperatorConfig {
    OperatorConfig {
        orphans: OrphanConfig { action, threshold, min_age: ConfigDuration(Duration::ZERO) },
        resync_interval: ConfigDuration(Duration::from_secs(1)),
        ..Default::default()
    }
}

fn fast() -> HostControllerOptions {
    HostControllerOptions {
        reconnect_min_delay: Duration::from_millis(50),
        reconnect_max_delay: Duration::from_millis(200),
        ping_interval: Duration::from_millis(100),
        call_timeout: Duration::from_secs(5),
        observe_max_age: Duration::ZERO,
        retry_min_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_secs(1),
    }
}

fn start(config: OperatorConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let state = ApiState::new(store);
    let api_metrics = state.metrics.clone();
    let client = Client::new(apiserver::router(state), "default");
    let connector = FakeConnector::new();
    let local = connector.daemon(&local_endpoint());
    local.add_image("busybox:1");
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: Arc::new(config),
        instance: INSTANCE.into(),
        hash_key: b"test".to_vec(),
        pool: Arc::new(HostPool::new()),
        connector: Arc::new(connector.clone()),
        metrics: Arc::new(Metrics::new()),
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(host::run_with(ctx.clone(), shutdown.clone(), fast()));
    Env { _dir: dir, client, ctx, api_metrics, local, connector, shutdown, task: Some(task) }
}

/// Polls `f` until it returns `Some`, failing after the deadline with `what`.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn condition(status: &HostStatus, type_: &str) -> Option<(ConditionStatus, String, String)> {
    find_condition(&status.conditions, type_).map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

fn labels(instance: &str, kind: &str, name: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), "berth".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_OWNER_KIND.to_string(), kind.to_string()),
        (LABEL_OWNER_NAMESPACE.to_string(), "default".to_string()),
        (LABEL_OWNER_NAME.to_string(), name.to_string()),
        (LABEL_OWNER_UID.to_string(), uid.to_string()),
    ])
}

/// Waits until the local Host is Reachable and Ready and a scan saw a complete view.
async fn ready(env: &Env) -> HostStatus {
    eventually("Host local Reachable and Ready", async || {
        let s = env.status().await?;
        let reachable = condition(&s, "Reachable")?.0 == ConditionStatus::True;
        let ready = condition(&s, "Ready")?.0 == ConditionStatus::True;
        let synced = s.orphan_scan.as_ref()?.gates.iter().any(|g| g.gate == "CachesSynced" && g.passed);
        (reachable && ready && synced).then_some(s)
    })
    .await
}

/// Waits until `n` more Host reconciles have completed.
async fn reconciled(env: &Env, n: u64) {
    let before = env.reconciles();
    eventually("more reconciles", async || (env.reconciles() >= before + n).then_some(())).await;
}

#[tokio::test]
async fn local_host_is_registered_with_facts_and_its_status_is_not_rewritten_needlessly() {
    let env = start(orphans(OrphanAction::Report, 5));
    let s = ready(&env).await;
    let host = env.hosts().get(LOCAL_HOST).await.unwrap();
    assert_eq!(host.spec.endpoint, local_endpoint());
    let d = s.daemon.clone().unwrap();
    assert_eq!((d.version.as_str(), d.api_version.as_str(), d.os.as_str()), ("20.10.24-fake", "1.41", "linux"));
    assert_eq!((d.cpus, d.memory_mb), (4, 8192));
    let cap = s.capacity.clone().unwrap();
    assert_eq!((cap.cpus, cap.memory_mb), (Some(4.0), Some(8192)));
    assert_eq!(s.observed_generation, Some(1));
    let (_, reason, msg) = condition(&s, "Reachable").unwrap();
    assert_eq!(reason, "Connected");
    assert!(msg.contains("20.10.24-fake"), "{msg}");

    // A converged host is not rewritten: neither by resyncs nor by a reconcile that an
    // annotation change triggers. The only Host patch is the test's own.
    reconciled(&env, 1).await;
    let patches = env.host_patches();
    let poked = env
        .hosts()
        .patch(
            LOCAL_HOST,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": "1"}}})),
        )
        .await
        .unwrap();
    reconciled(&env, 3).await;
    assert_eq!(env.host_patches(), patches + 1, "no status write for an unchanged status");
    let after = env.hosts().get(LOCAL_HOST).await.unwrap();
    assert_eq!(after.resource_version(), poked.resource_version());

    // The counted Docker calls of the host are exported.
    let metrics = env.ctx.metrics.render();
    assert!(metrics.contains("berth_docker_api_calls_total{host=\"local\"}"), "{metrics}");
    env.stop().await;
}

#[tokio::test]
async fn an_existing_host_prevents_registration_of_local() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store"), StoreOptions::default()).unwrap();
    let client = Client::new(apiserver::router(ApiState::new(store)), "default");
    let hosts: Api<Host> = Api::all(client.clone());
    let edge =
        Host::new("edge-1", berth_crds::HostSpec { endpoint: "tcp://10.0.0.5:2375".into(), ..Default::default() });
    hosts.create(&PostParams::default(), &edge).await.unwrap();
    let connector = FakeConnector::new();
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: Arc::new(orphans(OrphanAction::Report, 5)),
        instance: INSTANCE.into(),
        hash_key: vec![],
        pool: Arc::new(HostPool::new()),
        connector: Arc::new(connector),
        metrics: Arc::new(Metrics::new()),
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(host::run_with(ctx.clone(), shutdown.clone(), fast()));
    // No daemon answers at edge-1's endpoint: the Host says so, and no `local` appears.
    let s = eventually("edge-1 Reachable=False", async || {
        let s = hosts.get("edge-1").await.ok()?.status?;
        (condition(&s, "Reachable")?.0 == ConditionStatus::False).then_some(s)
    })
    .await;
    let (_, reason, msg) = condition(&s, "Reachable").unwrap();
    assert_eq!(reason, "Unreachable");
    assert!(msg.contains("tcp://10.0.0.5:2375") && msg.contains("retrying"), "{msg}");
    assert!(hosts.get_opt(LOCAL_HOST).await.unwrap().is_none());
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn an_unreachable_daemon_turns_reachable_false_and_back() {
    let env = start(orphans(OrphanAction::Report, 5));
    ready(&env).await;
    env.local.set_unreachable(true);
    let s = eventually("Reachable=False", async || {
        let s = env.status().await?;
        (condition(&s, "Reachable")?.0 == ConditionStatus::False).then_some(s)
    })
    .await;
    let (_, reason, msg) = condition(&s, "Reachable").unwrap();
    assert_eq!(reason, "Unreachable");
    assert!(msg.contains("unreachable") && msg.contains("retrying"), "{msg}");
    assert_eq!(condition(&s, "Ready").unwrap().0, ConditionStatus::False);
    assert!(env.ctx.pool.get(LOCAL_HOST).is_err(), "the pool hands out no unreachable host");

    env.local.set_unreachable(false);
    ready(&env).await;
    assert!(env.ctx.pool.get(LOCAL_HOST).is_ok());
    env.stop().await;
}

#[tokio::test]
async fn an_orphan_is_reported_under_report_and_kept() {
    let env = start(orphans(OrphanAction::Report, 5));
    let uid = env.create_stack("blog").await;
    env.local.add_foreign_container("blog-web-0", "busybox:1", labels(INSTANCE, "Stack", "blog", &uid));
    env.local.add_foreign_container("shop-web-0", "busybox:1", labels(INSTANCE, "Stack", "shop", "uid-gone"));
    let scan = eventually("the orphan reported", async || {
        let scan = env.status().await?.orphan_scan?;
        scan.orphans.iter().any(|o| o.name == "shop-web-0").then_some(scan)
    })
    .await;
    assert_eq!(scan.requested_action, "Report");
    assert_eq!(scan.effective_action, "Report");
    assert_eq!(scan.orphans.len(), 1, "the live Stack's container is not an orphan: {scan:?}");
    let o = &scan.orphans[0];
    assert_eq!(
        (o.object.as_str(), o.owner.as_str(), o.owner_uid.as_str()),
        ("container", "Stack/default/shop", "uid-gone")
    );
    assert_eq!(o.action, "Reported");
    let gates: Vec<(&str, bool)> = scan.gates.iter().map(|g| (g.gate.as_str(), g.passed)).collect();
    assert_eq!(
        gates,
        [
            ("CachesSynced", true),
            ("ListingComplete", true),
            ("StoreNotEmpty", true),
            ("BelowThreshold", true),
            ("MinAge", true),
            ("VolumesKept", true)
        ]
    );
    let s = env.status().await.unwrap();
    assert_eq!(s.stacks, 1, "one Stack in the store owns containers here");
    assert_eq!(condition(&s, "OrphansBlocked").unwrap().1, "ReportOnly");
    // Several scans later the orphan is still there.
    reconciled(&env, 2).await;
    assert!(env.local.container("shop-web-0").is_some());
    assert_eq!(env.local.calls("remove_container"), 0);
    env.stop().await;
}

#[tokio::test]
async fn an_orphan_is_removed_under_remove_when_every_gate_passes_and_foreign_objects_are_never_touched() {
    let env = start(orphans(OrphanAction::Remove, 5));
    let uid = env.create_stack("blog").await;
    let l = &env.local;
    l.add_foreign_container("blog-web-0", "busybox:1", labels(INSTANCE, "Stack", "blog", &uid));
    l.add_foreign_container("shop-web-0", "busybox:1", labels(INSTANCE, "Stack", "shop", "uid-gone"));
    l.add_foreign_container("other-web-0", "busybox:1", labels("staging", "Stack", "shop", "uid-gone"));
    l.add_foreign_container("hand-made", "busybox:1", BTreeMap::new());
    eventually("the orphan removed", async || env.local.container("shop-web-0").is_none().then_some(())).await;
    let removed = eventually("an OrphanRemoved event", async || {
        let e = env.events("OrphanRemoved").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    let note = removed[0].note.clone().unwrap_or_default();
    assert!(note.contains("shop-web-0") && note.contains("Stack/default/shop"), "{note}");
    assert_eq!(removed[0].regarding.as_ref().and_then(|r| r.name.as_deref()), Some(LOCAL_HOST));

    // More scans: nothing else goes.
    reconciled(&env, 2).await;
    for name in ["blog-web-0", "other-web-0", "hand-made"] {
        assert!(env.local.container(name).is_some(), "{name} must never be touched");
    }
    let log = env.local.call_log();
    assert!(
        log.iter().filter(|c| c.starts_with("stop_container") || c.starts_with("remove_container")).count() == 2,
        "only the orphan was stopped and removed: {log:?}"
    );
    let scan = env.status().await.unwrap().orphan_scan.unwrap();
    assert!(scan.orphans.iter().all(|o| o.name == "shop-web-0"), "{scan:?}");
    env.stop().await;
}

#[tokio::test]
async fn an_empty_store_blocks_every_removal_until_an_operator_confirms() {
    let env = start(orphans(OrphanAction::Remove, 5));
    env.local.add_foreign_container("shop-web-0", "busybox:1", labels(INSTANCE, "Stack", "shop", "uid-gone"));
    let s = eventually("StoreNotEmpty blocks", async || {
        let s = env.status().await?;
        (s.orphan_scan.as_ref()?.blocked_by == "StoreNotEmpty").then_some(s)
    })
    .await;
    let (status, reason, msg) = condition(&s, "OrphansBlocked").unwrap();
    assert_eq!((status, reason.as_str()), (ConditionStatus::True, "PossibleStoreLoss"));
    assert!(msg.contains("possible store loss") && msg.contains("--confirm"), "{msg}");
    assert!(env.local.container("shop-web-0").is_some());
    eventually("an OrphanRemovalBlocked event", async || {
        (!env.events("OrphanRemovalBlocked").await.is_empty()).then_some(())
    })
    .await;

    env.confirm("2025-01-01T00:00:00Z").await;
    eventually("the confirmed removal", async || env.local.container("shop-web-0").is_none().then_some(())).await;
    eventually("the confirmation annotation removed", async || {
        let h = env.hosts().get(LOCAL_HOST).await.ok()?;
        (!h.annotations().contains_key(CONFIRM_ANNOTATION)).then_some(())
    })
    .await;
    eventually("OrphansBlocked=False", async || {
        let s = env.status().await?;
        (condition(&s, "OrphansBlocked")?.0 == ConditionStatus::False).then_some(())
    })
    .await;
    let confirmed = env.events("OrphanPruneConfirmed").await;
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert!(confirmed[0].note.as_deref().unwrap_or_default().contains("2025-01-01T00:00:00Z"));
    env.stop().await;
}

#[tokio::test]
async fn above_the_threshold_nothing_is_removed_until_confirmed() {
    let env = start(orphans(OrphanAction::Remove, 1));
    env.create_stack("blog").await;
    for i in 0..2 {
        env.local.add_foreign_container(
            &format!("shop-web-{i}"),
            "busybox:1",
            labels(INSTANCE, "Stack", "shop", "uid-gone"),
        );
    }
    let s = eventually("OrphansBlocked=True", async || {
        let s = env.status().await?;
        (condition(&s, "OrphansBlocked")?.0 == ConditionStatus::True).then_some(s)
    })
    .await;
    let (_, reason, msg) = condition(&s, "OrphansBlocked").unwrap();
    assert_eq!(reason, "ThresholdExceeded");
    assert!(msg.contains("2 removable orphans exceed orphans.threshold 1"), "{msg}");
    let scan = s.orphan_scan.unwrap();
    assert_eq!((scan.blocked_by.as_str(), scan.effective_action.as_str()), ("BelowThreshold", "Report"));
    assert!(scan.orphans.iter().all(|o| o.action == "Kept: removal blocked by gate BelowThreshold"), "{scan:?}");

    // Still blocked a few scans later.
    reconciled(&env, 2).await;
    assert_eq!(env.local.containers().len(), 2);

    env.confirm("now").await;
    eventually("both orphans removed", async || {
        (env.local.container("shop-web-0").is_none() && env.local.container("shop-web-1").is_none()).then_some(())
    })
    .await;
    eventually("OrphansBlocked=False and the annotation gone", async || {
        let h = env.hosts().get(LOCAL_HOST).await.ok()?;
        let s = h.status.as_ref()?;
        let cleared = condition(s, "OrphansBlocked")?.0 == ConditionStatus::False;
        (cleared && !h.annotations().contains_key(CONFIRM_ANNOTATION)).then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test]
async fn an_endpoint_change_reconnects_and_a_deleted_host_leaves_the_pool() {
    let env = start(orphans(OrphanAction::Report, 5));
    ready(&env).await;
    assert_eq!(env.ctx.pool.get(LOCAL_HOST).unwrap().docker.endpoint(), local_endpoint());

    // Another daemon answers at the new endpoint: the connection moves there.
    let other = env.connector.daemon("unix:///srv/other.sock");
    let set_endpoint = async |endpoint: &str| {
        env.hosts()
            .patch(LOCAL_HOST, &PatchParams::default(), &Patch::Merge(json!({"spec": {"endpoint": endpoint}})))
            .await
            .unwrap()
    };
    set_endpoint("unix:///srv/other.sock").await;
    let s = eventually("connected to the new endpoint", async || {
        let s = env.status().await?;
        let (status, _, msg) = condition(&s, "Reachable")?;
        (s.observed_generation == Some(2) && status == ConditionStatus::True && msg.contains("unix:///srv/other.sock"))
            .then_some(s)
    })
    .await;
    assert_eq!(condition(&s, "Ready").unwrap().0, ConditionStatus::True);
    assert_eq!(env.ctx.pool.get(LOCAL_HOST).unwrap().docker.endpoint(), "unix:///srv/other.sock");
    assert!(other.calls("info") >= 1);

    // Nobody answers at the next one: the Host says so.
    set_endpoint("unix:///srv/nobody.sock").await;
    let s = eventually("Reachable=False", async || {
        let s = env.status().await?;
        (s.observed_generation == Some(3) && condition(&s, "Reachable")?.0 == ConditionStatus::False).then_some(s)
    })
    .await;
    assert!(condition(&s, "Reachable").unwrap().2.contains("unix:///srv/nobody.sock"), "{s:?}");

    // Deleting the Host closes its connection and forgets it.
    env.hosts().delete(LOCAL_HOST, &Default::default()).await.unwrap();
    eventually("the pool forgets the host", async || env.ctx.pool.hosts().is_empty().then_some(())).await;
    env.stop().await;
}

#[tokio::test]
async fn a_die_event_reaches_the_owner_subscribers() {
    let env = start(orphans(OrphanAction::Report, 5));
    let mut events = env.ctx.pool.subscribe();
    ready(&env).await;
    eventually("the event stream is followed", async || (env.local.calls("events") >= 1).then_some(())).await;
    let uid = env.create_stack("blog").await;
    env.local.add_foreign_container("blog-web-0", "busybox:1", labels(INSTANCE, "Stack", "blog", &uid));
    env.local.kill_by_hand("blog-web-0");
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = events.recv().await.unwrap();
            if e.event.action == "die" {
                return e;
            }
        }
    })
    .await
    .expect("the die event is published");
    assert_eq!(
        (got.host.as_str(), got.owner_kind.as_str(), got.namespace.as_str(), got.name.as_str()),
        (LOCAL_HOST, "Stack", "default", "blog")
    );
    env.stop().await;
}
