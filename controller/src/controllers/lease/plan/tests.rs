//! Table tests of [`plan_lease`]: one row per situation of the lifecycle, each with the plan in
//! a compact form (findings `!`, actions `>`), so a row reads as what `berth plan` would say.

use std::collections::BTreeMap;

use berth_crds::LeaseSpec;
use berth_crds::common::{
    Condition, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_UID, LABEL_RELEASE, LABEL_REPLICA,
    LABEL_SERVICE, MANAGED_BY_VALUE,
};
use berth_crds::lease::{LeaseAllocation, LeaseRelease, LeaseService, LeaseVolume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::config::Sku;
use crate::controllers::lease::render::{LeaseRenderContext, render};
use crate::controllers::stack::references::FetchedReferences;
use crate::docker::{NetworkSummary, VolumeSummary};

const UID: &str = "uid-1";
const CREATED: &str = "2026-01-01T10:00:00Z";
/// Half an hour into a two-hour Lease.
const NOW: &str = "2026-01-01T10:30:00Z";

fn config() -> LeaseConfig {
    let mut c = LeaseConfig::default();
    c.skus.insert("small".into(), Sku { cpus: 0.5, memory_mb: 128, disk_mb: None, pids: Some(64) });
    c
}

fn time(t: &str) -> Time {
    Time(t.parse().unwrap())
}

/// Lease `previews/pr-1`: `web` with a volume and one `worker`, 1 CPU and 256 MiB in all.
fn lease() -> Lease {
    let mut l = Lease::new(
        "pr-1",
        LeaseSpec {
            tenant: "acme".into(),
            sku: "small".into(),
            duration: Some("2h".into()),
            services: vec![
                LeaseService {
                    name: "web".into(),
                    image: "busybox".into(),
                    volumes: vec![LeaseVolume { name: "data".into(), mount_path: "/data".into() }],
                    quantity: 1,
                    ..Default::default()
                },
                LeaseService { name: "worker".into(), image: "busybox".into(), quantity: 1, ..Default::default() },
            ],
            ..Default::default()
        },
    );
    l.metadata.namespace = Some("previews".into());
    l.metadata.uid = Some(UID.into());
    l.metadata.generation = Some(1);
    l.metadata.creation_timestamp = Some(time(CREATED));
    l
}

fn rendered(l: &Lease, c: &LeaseConfig) -> Result<RenderedLease, String> {
    let refs = FetchedReferences::default();
    let ctx = LeaseRenderContext { instance: "test", hash_key: b"key", config: c, references: &refs };
    render(l, next_revision(&l.status.clone().unwrap_or_default()), &ctx).map_err(|e| e.to_string())
}

fn status(phase: LeasePhase) -> LeaseStatus {
    LeaseStatus { phase: Some(phase), observed_generation: Some(1), ..Default::default() }
}

/// Placed on `local` with release 1 (of `hash`) Active.
fn placed(phase: LeasePhase, hash: &str) -> LeaseStatus {
    LeaseStatus {
        host: Some("local".into()),
        allocated: Some(LeaseAllocation { cpus: 1.0, memory_mb: 256 }),
        releases: vec![LeaseRelease {
            revision: 1,
            generation: 1,
            config_hash: hash.into(),
            outcome: status::ACTIVE.into(),
            message: String::new(),
            started_at: None,
        }],
        ..status(phase)
    }
}

fn candidate(name: &str, used_cpus: f64) -> Candidate {
    Candidate {
        name: name.into(),
        labels: BTreeMap::new(),
        ready: true,
        cordoned: false,
        capacity: Some((2.0, 1024)),
        allocated: LeaseAllocation { cpus: used_cpus, memory_mb: 0 },
    }
}

fn container(service: &str, release: i64, state: ContainerState) -> ContainerSummary {
    ContainerSummary {
        id: format!("id-{service}-r{release}"),
        name: LeaseNaming::new("previews", "pr-1").container(service, 0, release),
        image: "busybox".into(),
        image_id: String::new(),
        labels: BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
            (LABEL_INSTANCE.to_string(), "test".to_string()),
            (LABEL_OWNER_KIND.to_string(), "Lease".to_string()),
            (LABEL_OWNER_UID.to_string(), UID.to_string()),
            (LABEL_SERVICE.to_string(), service.to_string()),
            (LABEL_REPLICA.to_string(), "0".to_string()),
            (LABEL_RELEASE.to_string(), release.to_string()),
        ]),
        state,
        health: None,
        created: 0,
        ports: vec![],
    }
}

/// Release 1 running, with the tenant network and the volume.
fn running() -> HostSnapshot {
    HostSnapshot {
        containers: vec![container("web", 1, ContainerState::Running), container("worker", 1, ContainerState::Running)],
        networks: vec![NetworkSummary {
            id: "n1".into(),
            name: render::tenant_network("test", "acme"),
            labels: BTreeMap::new(),
            internal: false,
            created: None,
        }],
        volumes: vec![VolumeSummary {
            name: LeaseNaming::new("previews", "pr-1").volume("web", 0, "data"),
            labels: BTreeMap::new(),
            created: None,
        }],
        taken_at: None,
    }
}

/// One row: how the Lease, its world and the clock differ from the base case.
#[derive(Clone)]
struct Case {
    lease: Lease,
    now: &'static str,
    candidates: Vec<Candidate>,
    restore_host: Option<&'static str>,
    listing: Option<HostSnapshot>,
    unreachable: Option<&'static str>,
    render_error: Option<&'static str>,
}

fn base(st: Option<LeaseStatus>) -> Case {
    let mut l = lease();
    l.status = st;
    Case {
        lease: l,
        now: NOW,
        candidates: vec![candidate("local", 0.0), candidate("edge", 1.5)],
        restore_host: None,
        listing: Some(running()),
        unreachable: None,
        render_error: None,
    }
}

/// The hash release 1 must carry for the Lease to need no rollout.
fn current_hash() -> String {
    rendered(&lease(), &config()).unwrap().config_hash
}

fn run(case: &Case) -> WorkloadPlan {
    let c = config();
    let r = rendered(&case.lease, &c);
    let observed = match (&case.unreachable, &case.listing) {
        (Some(why), _) => Observed::Unreachable(why),
        (None, Some(l)) => Observed::Listing(l),
        (None, None) => Observed::Nothing,
    };
    plan_lease(&LeasePlanInput {
        lease: &case.lease,
        now: case.now.parse().unwrap(),
        config: &c,
        rendered: match (case.render_error, &r) {
            (Some(e), _) => Err(e),
            (None, Ok(r)) => Ok(r),
            (None, Err(e)) => Err(e.as_str()),
        },
        candidates: &case.candidates,
        restore_host: case.restore_host,
        observed,
    })
}

/// The plan in lines: `converged` or not, object findings, then per host its findings and
/// actions (`> action tier reason [object] [rN] [retain] [in progress]`).
fn summary(p: &WorkloadPlan) -> Vec<String> {
    let mut out = vec![if p.converged { "converged".to_string() } else { "not converged".to_string() }];
    for f in &p.findings {
        out.push(format!("! {} {}", f.tier, f.reason));
    }
    for h in &p.hosts {
        out.push(format!("host {}{}", h.host, if h.converged { " converged" } else { "" }));
        for f in &h.findings {
            out.push(format!(
                "  ! {} {}{}",
                f.tier,
                f.reason,
                f.object.as_ref().map(|o| format!(" {o}")).unwrap_or_default()
            ));
        }
        for a in h.steps.iter().flat_map(|s| &s.actions) {
            let object = [&a.container, &a.volume, &a.image, &a.network].into_iter().flatten().next();
            let mut line = format!("  > {} {} {}", a.action, a.tier, a.reason);
            if let Some(o) = object {
                line.push_str(&format!(" {o}"));
            }
            if let Some(r) = a.release {
                line.push_str(&format!(" r{r}"));
            }
            if let Some(keep) = a.retain_volumes {
                line.push_str(&format!(" retain={keep}"));
            }
            if a.in_progress {
                line.push_str(" (in progress)");
            }
            out.push(line);
        }
    }
    out
}

#[test]
fn every_phase_plans_what_the_controller_does_next() {
    let hash = current_hash();
    let c = |n: &str, r: i64| format!("lease.previews.pr-1.{n}-0.r{r}");
    let mut rows: Vec<(&str, Case, Vec<String>)> = Vec::new();
    let mut row = |name: &'static str, case: Case, want: &[&str]| {
        rows.push((name, case, want.iter().map(|s| s.to_string()).collect()));
    };

    // Pending: placed on the least-loaded host, then release 1 provisioned there.
    let mut case = base(Some(status(LeasePhase::Pending)));
    case.listing = Some(HostSnapshot::default());
    let (create_web, create_worker) = (
        format!("  > create 1 NotProvisioned {} r1", c("web", 1)),
        format!("  > create 1 NotProvisioned {} r1", c("worker", 1)),
    );
    let unplaced = [
        "not converged",
        "! 1 NotPlaced",
        "host local",
        "  > place 1 NotPlaced",
        "  > provision 1 NotProvisioned r1",
        "  > ensureImage 1 NotProvisioned busybox",
        "  > createNetwork 1 NotProvisioned berth-test-tenant-acme",
        "  > createVolume 1 NotProvisioned lease.previews.pr-1.web-0.data",
        &create_web,
        &create_worker,
    ];
    row("pending, room on two hosts", case.clone(), &unplaced);
    case.lease.status = None;
    row("not yet seen by the controller: the same", case, &unplaced);
    let mut case = base(Some(status(LeasePhase::Pending)));
    case.candidates[0].allocated.cpus = 1.5;
    case.candidates[1].cordoned = true;
    row(
        "pending over capacity: why, per host",
        case,
        &[
            "not converged",
            "! 1 InsufficientCapacity",
            "host local",
            "  ! 1 InsufficientCapacity",
            "host edge",
            "  ! 1 HostCordoned",
        ],
    );
    let mut case = base(Some(status(LeasePhase::Pending)));
    case.lease.spec.sku = "huge".into();
    row("pending with an unknown SKU", case, &["not converged", "! 1 UnknownSku"]);
    let mut case = base(Some(status(LeasePhase::Pending)));
    case.lease.spec.restore_from = Some("pr-0".into());
    row("pending restore without its volumes", case, &["not converged", "! 1 RestoreSourceNotFound"]);
    let mut case = base(Some(status(LeasePhase::Pending)));
    case.lease.spec.closed = true;
    row("closed before it was placed", case, &["not converged", "! 1 Closed"]);

    // Operations in progress.
    row(
        "provisioning",
        base(Some(LeaseStatus { releases: vec![], ..placed(LeasePhase::Provisioning, "") })),
        &["not converged", "host local", "  ! 1 NotProvisioned", "  > provision 1 NotProvisioned r1 (in progress)"],
    );
    row(
        "updating",
        base(Some(placed(LeasePhase::Updating, &hash))),
        &[
            "not converged",
            "host local",
            "  ! 1 DesiredStateChanged",
            "  > update 1 DesiredStateChanged r2 (in progress)",
        ],
    );
    row(
        "restarting",
        base(Some(placed(LeasePhase::Restarting, &hash))),
        &["not converged", "host local", "  ! 1 RestartRequested", "  > restart 1 RestartRequested r1 (in progress)"],
    );
    row(
        "failing",
        base(Some(placed(LeasePhase::Failing, &hash))),
        &["not converged", "host local", "  ! 3 Diagnosing", "  > diagnose 3 Diagnosing r1 (in progress)"],
    );

    // Ready.
    row("ready and running", base(Some(placed(LeasePhase::Ready, &hash))), &["converged", "host local converged"]);
    let mut case = base(Some(placed(LeasePhase::Ready, "an-older-hash")));
    case.lease.metadata.generation = Some(2);
    row(
        "ready with a changed spec: update to release 2",
        case,
        &[
            "not converged",
            "! 0 SpecChanged",
            "host local",
            "  ! 1 DesiredStateChanged",
            "  > update 1 DesiredStateChanged r2",
            "  > ensureImage 1 DesiredStateChanged busybox",
            &format!("  > create 1 DesiredStateChanged {} r2", c("web", 2)),
            &format!("  > create 1 DesiredStateChanged {} r2", c("worker", 2)),
            &format!("  > remove 1 DesiredStateChanged {} r1", c("web", 1)),
            &format!("  > remove 1 DesiredStateChanged {} r1", c("worker", 1)),
        ],
    );
    let mut case = base(Some(LeaseStatus {
        allocated: Some(LeaseAllocation { cpus: 0.5, memory_mb: 128 }),
        ..placed(LeasePhase::Ready, "an-older-hash")
    }));
    case.candidates[0].allocated.cpus = 2.0;
    row(
        "ready with a spec that needs more room than the host has",
        case,
        &["not converged", "host local", "  ! 1 DesiredStateChanged", "  ! 1 InsufficientCapacity"],
    );
    let mut case = base(Some(placed(LeasePhase::Ready, &hash)));
    case.lease.metadata.annotations = Some(BTreeMap::from([(RESTART_ANNOTATION.to_string(), "t2".to_string())]));
    row(
        "ready with a restart asked for",
        case.clone(),
        &["not converged", "host local", "  ! 1 RestartRequested", "  > restart 1 RestartRequested r1"],
    );
    case.lease.status.as_mut().unwrap().restarted_for = Some("t2".into());
    row("ready with the restart done", case, &["converged", "host local converged"]);
    let mut case = base(Some(placed(LeasePhase::Ready, &hash)));
    case.listing = Some(HostSnapshot { containers: vec![container("web", 1, ContainerState::Exited)], ..running() });
    row(
        "ready with a dead and a vanished container",
        case,
        &[
            "not converged",
            "host local",
            &format!("  ! 3 NotRunning {}", c("web", 1)),
            &format!("  ! 2 ContainerMissing {}", c("worker", 1)),
            &format!("  > diagnose 3 NotRunning {} r1", c("web", 1)),
            &format!("  > diagnose 2 ContainerMissing {} r1", c("worker", 1)),
        ],
    );
    let mut case = base(Some(placed(LeasePhase::Ready, &hash)));
    case.listing = Some(HostSnapshot {
        containers: vec![
            container("web", 2, ContainerState::Exited),
            container("web", 1, ContainerState::Running),
            container("worker", 1, ContainerState::Running),
        ],
        ..running()
    });
    row("ready: containers of other releases do not count", case, &["converged", "host local converged"]);
    let mut case = base(Some(placed(LeasePhase::Ready, &hash)));
    case.unreachable = Some("connection refused");
    row("ready on a host that does not answer", case, &["not converged", "host local", "  ! 2 HostUnreachable"]);
    let mut case = base(Some(placed(LeasePhase::Ready, &hash)));
    case.render_error = Some("Secret previews/db has no key \"password\"");
    row("ready with a spec that cannot be rendered", case, &["not converged", "! 1 InvalidSpec", "host local"]);

    // Failed: nothing to do until a change.
    row("failed", base(Some(placed(LeasePhase::Failed, &hash))), &["converged", "host local converged"]);
    let mut case = base(Some(placed(LeasePhase::Failed, &hash)));
    case.lease.metadata.annotations = Some(BTreeMap::from([(RESTART_ANNOTATION.to_string(), "again".to_string())]));
    row(
        "failed with a restart asked for",
        case,
        &["not converged", "host local", "  ! 1 RestartRequested", "  > restart 1 RestartRequested r1"],
    );

    // Closing.
    let mut case = base(Some(placed(LeasePhase::Ready, &hash)));
    case.lease.spec.closed = true;
    row(
        "closed while ready: containers and volumes go",
        case,
        &[
            "not converged",
            "! 1 Closed",
            "host local",
            "  > deprovision 1 Closed r1 retain=false",
            &format!("  > remove 1 Closed {} r1", c("web", 1)),
            &format!("  > remove 1 Closed {} r1", c("worker", 1)),
        ],
    );
    let mut case = base(Some(placed(LeasePhase::Updating, &hash)));
    case.lease.spec.retain_on_close = true;
    case.now = "2026-01-01T12:00:00Z";
    row(
        "expired during an update, volumes retained",
        case,
        &[
            "not converged",
            "! 1 Expired",
            "host local",
            "  > deprovision 1 Expired r1 retain=true",
            &format!("  > remove 1 Expired {} r1", c("web", 1)),
            &format!("  > remove 1 Expired {} r1", c("worker", 1)),
        ],
    );
    let mut case = base(Some(placed(LeasePhase::Deprovisioning, &hash)));
    case.lease.metadata.deletion_timestamp = Some(time(NOW));
    case.listing = Some(HostSnapshot::default());
    row(
        "deleted, deprovisioning under way",
        case,
        &["not converged", "! 1 Deleted", "host local", "  > deprovision 1 Deleted r1 retain=false (in progress)"],
    );

    // After the end.
    let retained = LeaseStatus {
        retained_volumes: vec!["retained.previews.pr-1.web-0.data".into()],
        retained_until: Some(time("2026-01-01T11:00:00Z")),
        allocated: None,
        ..placed(LeasePhase::Retained, &hash)
    };
    row("retained, grace period running", base(Some(retained.clone())), &["converged", "host local converged"]);
    let mut case = base(Some(retained));
    case.now = "2026-01-01T11:00:01Z";
    row(
        "retained, grace period over",
        case,
        &[
            "not converged",
            "host local",
            "  ! 1 RetentionEnded",
            "  > reap 1 RetentionEnded retained.previews.pr-1.web-0.data",
        ],
    );
    row("closed", base(Some(placed(LeasePhase::Closed, &hash))), &["converged"]);

    for (name, case, want) in &rows {
        let plan = run(case);
        assert_eq!(&summary(&plan), want, "{name}: {plan:#?}");
    }
}

#[test]
fn the_item_names_the_lease_and_says_why_in_words() {
    let mut case = base(Some(status(LeasePhase::Pending)));
    case.candidates[0].allocated.cpus = 1.5;
    case.candidates.truncate(1);
    let p = run(&case);
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str(), p.uid.as_str(), p.phase.as_deref()),
        ("previews", "pr-1", UID, Some("Pending"))
    );
    assert_eq!(
        p.findings[0].message,
        "no matching Host has room for 1 CPUs and 256 MiB: local has 0.50 of 2.00 CPUs and 1024 of 1024 MiB free"
    );
    assert_eq!(p.hosts[0].findings[0].message, "local has 0.50 of 2.00 CPUs and 1024 of 1024 MiB free");
    assert!(p.notes.iter().any(|n| n.contains("tries again")), "{:?}", p.notes);

    let p = run(&base(Some(placed(LeasePhase::Ready, &current_hash()))));
    assert_eq!(
        p.notes,
        [
            "expires at 2026-01-01T12:00:00Z: then it is deprovisioned and its volumes are removed",
            "release 1 runs on host local"
        ]
    );
}

#[test]
fn a_configuration_that_failed_is_not_retried_and_the_plan_says_so() {
    let hash = current_hash();
    let mut st = placed(LeasePhase::Ready, "first");
    st.releases.push(LeaseRelease {
        revision: 2,
        generation: 2,
        config_hash: hash,
        outcome: status::ROLLED_BACK.into(),
        message: "exit code 3".into(),
        started_at: None,
    });
    st.conditions.push(Condition::new("RolledBack", ConditionStatus::True, "UpdateFailed", ""));
    let mut case = base(Some(st));
    // Release 1's containers run (they carry release label 1).
    case.listing = Some(running());
    let p = run(&case);
    assert_eq!(summary(&p), ["converged", "host local converged"]);
    assert!(p.notes.iter().any(|n| n.contains("release 2 of this configuration ended RolledBack")), "{:?}", p.notes);
}

#[test]
fn the_observed_host_is_the_leases_own_or_the_one_placement_picks() {
    let c = config();
    let candidates = [candidate("local", 1.0), candidate("edge", 0.0)];
    let mut l = lease();
    assert_eq!(host_to_observe(&l, &c, &candidates, None).as_deref(), Some("edge"));
    l.status = Some(placed(LeasePhase::Ready, "h"));
    assert_eq!(host_to_observe(&l, &c, &candidates, None).as_deref(), Some("local"));
    l.status = Some(placed(LeasePhase::Closed, "h"));
    assert_eq!(host_to_observe(&l, &c, &candidates, None), None);
    let mut full = lease();
    full.status = Some(status(LeasePhase::Pending));
    assert_eq!(host_to_observe(&full, &c, &[candidate("local", 2.0)], None), None);
}
