//! Table-driven tests of the orphan gates, alone and combined.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_crds::common::{
    LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID,
};
use jiff::Timestamp;

use super::*;
use crate::config::ConfigDuration;
use crate::docker::{ContainerState, ContainerSummary, NetworkSummary, VolumeSummary};

const NOW: i64 = 1_700_000_000;
const ME: &str = "prod";
const OLD: i64 = 3600; // seconds: older than the 5 minute minAge used below
const YOUNG: i64 = 60;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn owner(kind: &str, name: &str, uid: &str) -> OwnerKey {
    OwnerKey { kind: kind.into(), namespace: "default".into(), name: name.into(), uid: uid.into() }
}

fn labels(instance: &str, o: Option<&OwnerKey>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), "berth".to_string()),
        (LABEL_INSTANCE.to_string(), instance.to_string()),
    ]);
    if let Some(o) = o {
        l.insert(LABEL_OWNER_KIND.into(), o.kind.clone());
        l.insert(LABEL_OWNER_NAMESPACE.into(), o.namespace.clone());
        l.insert(LABEL_OWNER_NAME.into(), o.name.clone());
        l.insert(LABEL_OWNER_UID.into(), o.uid.clone());
    }
    l
}

fn container(name: &str, labels: BTreeMap<String, String>, age_secs: i64) -> ContainerSummary {
    ContainerSummary {
        id: format!("id-{name}"),
        name: name.into(),
        image: "busybox".into(),
        image_id: String::new(),
        labels,
        state: ContainerState::Running,
        health: None,
        created: NOW - age_secs,
        ports: vec![],
    }
}

fn network(name: &str, labels: BTreeMap<String, String>, age_secs: Option<i64>) -> NetworkSummary {
    NetworkSummary {
        id: format!("net-{name}"),
        name: name.into(),
        labels,
        internal: false,
        created: age_secs.map(|a| Timestamp::from_second(NOW - a).unwrap().to_string()),
    }
}

fn volume(name: &str, labels: BTreeMap<String, String>) -> VolumeSummary {
    VolumeSummary { name: name.into(), labels, created: Some("2020-01-01T00:00:00Z".into()) }
}

/// The orphan `shop-web-0` of a deleted Stack, plus a live Stack `blog` with a container.
fn gone() -> OwnerKey {
    owner("Stack", "shop", "uid-shop")
}
fn live() -> OwnerKey {
    owner("Stack", "blog", "uid-blog")
}

#[derive(Clone)]
struct Case {
    name: &'static str,
    snapshot: Result<HostSnapshot, &'static str>,
    owners: Vec<OwnerKey>,
    synced: bool,
    action: OrphanAction,
    threshold: u32,
    confirmation: Option<&'static str>,
    // expected
    gates: [bool; 6],
    blocked_by: Option<OrphanGate>,
    effective: &'static str,
    dispositions: Vec<(&'static str, Disposition)>,
    confirm: Option<Confirmation>,
}

fn base() -> Case {
    Case {
        name: "",
        snapshot: Ok(HostSnapshot {
            containers: vec![
                container("blog-web-0", labels(ME, Some(&live())), OLD),
                container("shop-web-0", labels(ME, Some(&gone())), OLD),
            ],
            ..Default::default()
        }),
        owners: vec![live()],
        synced: true,
        action: OrphanAction::Remove,
        threshold: 5,
        confirmation: None,
        gates: [true; 6],
        blocked_by: None,
        effective: "Remove",
        dispositions: vec![("shop-web-0", Disposition::Remove)],
        confirm: None,
    }
}

fn with_containers(mut c: Case, extra: Vec<ContainerSummary>) -> Case {
    if let Ok(s) = &mut c.snapshot {
        s.containers.extend(extra);
    }
    c
}

fn many_orphans(n: usize) -> Vec<ContainerSummary> {
    (1..=n).map(|i| container(&format!("shop-web-{i}"), labels(ME, Some(&gone())), OLD)).collect()
}

fn cases() -> Vec<Case> {
    let blocked = |g| Disposition::Blocked(g);
    let held = |gate: &str| {
        Confirmation::Held(
            "t1".into(),
            format!("gate {gate} failed; the confirmation applies to the first scan with a complete view"),
        )
    };
    vec![
        Case { name: "every gate passes: the orphan is removed", ..base() },
        Case {
            name: "action Report only reports",
            action: OrphanAction::Report,
            effective: "Report",
            dispositions: vec![("shop-web-0", Disposition::Report)],
            ..base()
        },
        Case {
            name: "gate 1 alone: caches not synced",
            synced: false,
            gates: [false, true, true, true, true, true],
            blocked_by: Some(OrphanGate::CachesSynced),
            effective: "Report",
            dispositions: vec![("shop-web-0", blocked(OrphanGate::CachesSynced))],
            ..base()
        },
        Case {
            name: "gate 2 alone: listing failed, so nothing is found",
            snapshot: Err("connection refused"),
            gates: [true, false, false, false, false, true],
            blocked_by: Some(OrphanGate::ListingComplete),
            effective: "None",
            dispositions: vec![],
            ..base()
        },
        Case {
            name: "gate 3 alone: store knows no owner while the host has berth containers",
            owners: vec![],
            gates: [true, true, false, true, true, true],
            blocked_by: Some(OrphanGate::StoreNotEmpty),
            effective: "Report",
            dispositions: vec![
                ("blog-web-0", blocked(OrphanGate::StoreNotEmpty)),
                ("shop-web-0", blocked(OrphanGate::StoreNotEmpty)),
            ],
            ..base()
        },
        Case {
            name: "gate 3 passes when the empty store faces only an orphan network",
            snapshot: Ok(HostSnapshot {
                networks: vec![network("shop-back", labels(ME, Some(&gone())), Some(OLD))],
                ..Default::default()
            }),
            owners: vec![],
            dispositions: vec![("shop-back", Disposition::Remove)],
            ..base()
        },
        Case {
            name: "gate 4 alone: more orphans than the threshold",
            threshold: 2,
            gates: [true, true, true, false, true, true],
            blocked_by: Some(OrphanGate::BelowThreshold),
            effective: "Report",
            dispositions: vec![
                ("shop-web-0", blocked(OrphanGate::BelowThreshold)),
                ("shop-web-1", blocked(OrphanGate::BelowThreshold)),
                ("shop-web-2", blocked(OrphanGate::BelowThreshold)),
            ],
            ..with_containers(base(), many_orphans(2))
        },
        Case {
            name: "gate 4 passes at exactly the threshold",
            threshold: 3,
            dispositions: vec![
                ("shop-web-0", Disposition::Remove),
                ("shop-web-1", Disposition::Remove),
                ("shop-web-2", Disposition::Remove),
            ],
            ..with_containers(base(), many_orphans(2))
        },
        Case {
            name: "gate 5 alone: the young orphan waits, the old one goes",
            gates: [true, true, true, true, false, true],
            blocked_by: Some(OrphanGate::MinAge),
            dispositions: vec![
                ("shop-web-0", Disposition::Remove),
                ("shop-young", Disposition::Waiting { eligible_in: Duration::from_secs(240) }),
            ],
            ..with_containers(base(), vec![container("shop-young", labels(ME, Some(&gone())), YOUNG)])
        },
        Case {
            name: "gate 6: volumes are reported and kept; they do not count toward the threshold",
            threshold: 1,
            snapshot: Ok(HostSnapshot {
                containers: vec![container("shop-web-0", labels(ME, Some(&gone())), OLD)],
                volumes: vec![
                    volume("shop-data", labels(ME, Some(&gone()))),
                    volume("shop-logs", labels(ME, Some(&gone()))),
                ],
                ..Default::default()
            }),
            dispositions: vec![
                ("shop-web-0", Disposition::Remove),
                ("shop-data", Disposition::KeptVolume),
                ("shop-logs", Disposition::KeptVolume),
            ],
            ..base()
        },
        Case {
            name: "leftovers of an owner that exists are not orphans",
            snapshot: Ok(HostSnapshot {
                containers: vec![
                    container("blog-web-0", labels(ME, Some(&live())), OLD),
                    container("blog-removed-service-0", labels(ME, Some(&live())), OLD),
                ],
                networks: vec![network("blog-old-net", labels(ME, Some(&live())), Some(OLD))],
                ..Default::default()
            }),
            effective: "None",
            dispositions: vec![],
            ..base()
        },
        Case {
            name: "an owner recreated under the same name is another owner",
            snapshot: Ok(HostSnapshot {
                containers: vec![container("blog-web-0", labels(ME, Some(&owner("Stack", "blog", "uid-old"))), OLD)],
                ..Default::default()
            }),
            dispositions: vec![("blog-web-0", Disposition::Remove)],
            ..base()
        },
        Case {
            name: "objects of another instance or without labels are never considered",
            snapshot: Ok(HostSnapshot {
                containers: vec![
                    container("other-web-0", labels("staging", Some(&gone())), OLD),
                    container("hand-made", BTreeMap::new(), OLD),
                ],
                networks: vec![network("other-net", labels("staging", Some(&gone())), Some(OLD))],
                volumes: vec![volume("other-vol", labels("staging", Some(&gone())))],
                ..Default::default()
            }),
            owners: vec![],
            effective: "None",
            dispositions: vec![],
            ..base()
        },
        Case {
            name: "incomplete ownership labels: reported, never removed, not counted toward the threshold",
            threshold: 1,
            dispositions: vec![("half-labelled", Disposition::KeptUnattributed), ("shop-web-0", Disposition::Remove)],
            ..with_containers(base(), vec![container("half-labelled", labels(ME, None), OLD)])
        },
        Case {
            name: "confirmation waives gate 3",
            owners: vec![],
            confirmation: Some("2024-05-01T10:00:00Z"),
            dispositions: vec![("blog-web-0", Disposition::Remove), ("shop-web-0", Disposition::Remove)],
            confirm: Some(Confirmation::Used("2024-05-01T10:00:00Z".into())),
            ..base()
        },
        Case {
            name: "confirmation waives gate 4",
            threshold: 2,
            confirmation: Some("t1"),
            dispositions: vec![
                ("shop-web-0", Disposition::Remove),
                ("shop-web-1", Disposition::Remove),
                ("shop-web-2", Disposition::Remove),
            ],
            confirm: Some(Confirmation::Used("t1".into())),
            ..with_containers(base(), many_orphans(2))
        },
        Case {
            name: "confirmation never waives gate 1 and is held for a later scan",
            synced: false,
            threshold: 2,
            confirmation: Some("t1"),
            gates: [false, true, true, false, true, true],
            blocked_by: Some(OrphanGate::CachesSynced),
            effective: "Report",
            dispositions: vec![
                ("shop-web-0", blocked(OrphanGate::CachesSynced)),
                ("shop-web-1", blocked(OrphanGate::CachesSynced)),
                ("shop-web-2", blocked(OrphanGate::CachesSynced)),
            ],
            confirm: Some(held("CachesSynced")),
            ..with_containers(base(), many_orphans(2))
        },
        Case {
            name: "confirmation never waives gate 2",
            snapshot: Err("timeout"),
            confirmation: Some("t1"),
            gates: [true, false, false, false, false, true],
            blocked_by: Some(OrphanGate::ListingComplete),
            effective: "None",
            dispositions: vec![],
            confirm: Some(held("ListingComplete")),
            ..base()
        },
        Case {
            name: "confirmation never waives gate 5",
            owners: vec![],
            confirmation: Some("t1"),
            gates: [true, true, true, true, false, true],
            blocked_by: Some(OrphanGate::MinAge),
            dispositions: vec![
                ("blog-web-0", Disposition::Remove),
                ("shop-web-0", Disposition::Remove),
                ("shop-young", Disposition::Waiting { eligible_in: Duration::from_secs(240) }),
            ],
            confirm: Some(Confirmation::Used("t1".into())),
            ..with_containers(base(), vec![container("shop-young", labels(ME, Some(&gone())), YOUNG)])
        },
        Case {
            name: "confirmation never waives gate 6",
            confirmation: Some("t1"),
            snapshot: Ok(HostSnapshot {
                volumes: vec![volume("shop-data", labels(ME, Some(&gone())))],
                ..Default::default()
            }),
            effective: "Report",
            dispositions: vec![("shop-data", Disposition::KeptVolume)],
            confirm: Some(Confirmation::Used("t1".into())),
            ..base()
        },
        Case {
            name: "confirmation under action Report removes nothing and is consumed",
            owners: vec![],
            action: OrphanAction::Report,
            confirmation: Some("t1"),
            gates: [true, true, false, true, true, true],
            blocked_by: Some(OrphanGate::StoreNotEmpty),
            effective: "Report",
            dispositions: vec![("blog-web-0", Disposition::Report), ("shop-web-0", Disposition::Report)],
            confirm: Some(Confirmation::Ignored(
                "t1".into(),
                "orphans.action is Report, so berth only reports orphans; set orphans.action: Remove in the berth \
                 config to let it remove them"
                    .into(),
            )),
            ..base()
        },
        Case {
            name: "gates 1, 3 and 4 fail together: the first one is the blocking reason",
            synced: false,
            owners: vec![],
            threshold: 1,
            gates: [false, true, false, false, true, true],
            blocked_by: Some(OrphanGate::CachesSynced),
            effective: "Report",
            dispositions: vec![
                ("blog-web-0", blocked(OrphanGate::CachesSynced)),
                ("shop-web-0", blocked(OrphanGate::CachesSynced)),
                ("shop-web-1", blocked(OrphanGate::CachesSynced)),
            ],
            ..with_containers(base(), many_orphans(1))
        },
        Case {
            name: "gates 4 and 5 fail together: nothing is removed, old or young",
            threshold: 1,
            gates: [true, true, true, false, false, true],
            blocked_by: Some(OrphanGate::BelowThreshold),
            effective: "Report",
            dispositions: vec![
                ("shop-web-0", blocked(OrphanGate::BelowThreshold)),
                ("shop-young", blocked(OrphanGate::BelowThreshold)),
            ],
            ..with_containers(base(), vec![container("shop-young", labels(ME, Some(&gone())), YOUNG)])
        },
    ]
}

fn run(c: &Case) -> OrphanPlan {
    let owners: KnownOwners = c.owners.iter().cloned().collect();
    let config =
        OrphanConfig { action: c.action, threshold: c.threshold, min_age: ConfigDuration(Duration::from_secs(300)) };
    let listing = c.snapshot.as_ref().map_err(|e| *e);
    let first_seen = BTreeMap::new();
    plan_orphans(&OrphanInput {
        host: "edge-1",
        instance: ME,
        listing,
        owners: &owners,
        caches_synced: c.synced,
        config: &config,
        now: now(),
        confirmation: c.confirmation,
        first_seen: &first_seen,
    })
}

#[test]
fn gates_alone_and_combined() {
    for c in cases() {
        let plan = run(&c);
        let gates: Vec<(OrphanGate, bool)> = plan.gates.iter().map(|g| (g.gate, g.passed)).collect();
        let want: Vec<(OrphanGate, bool)> = OrphanGate::ALL.iter().copied().zip(c.gates).collect();
        assert_eq!(gates, want, "{}: gates", c.name);
        assert_eq!(plan.blocked_by(), c.blocked_by, "{}: blocked_by", c.name);
        assert_eq!(plan.effective_action(), c.effective, "{}: effective action", c.name);
        let mut got: Vec<(String, Disposition)> =
            plan.orphans.iter().map(|o| (o.name.clone(), o.disposition.clone())).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want: Vec<(String, Disposition)> =
            c.dispositions.iter().map(|(n, d)| (n.to_string(), d.clone())).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "{}: dispositions", c.name);
        let confirm = c.confirm.clone().unwrap_or(Confirmation::NotGiven);
        assert_eq!(plan.confirmation, confirm, "{}: confirmation", c.name);
        for g in &plan.gates {
            assert!(!g.message.is_empty(), "{}: gate {:?} has a message", c.name, g.gate);
        }
    }
}

#[test]
fn blocked_gate_messages_tell_the_operator_what_to_do() {
    let mut c = base();
    c.owners = vec![];
    let plan = run(&c);
    let g3 = &plan.gates[2];
    assert!(g3.message.contains("possible store loss"), "{}", g3.message);
    assert!(g3.message.contains("berth orphans prune --host edge-1 --confirm"), "{}", g3.message);

    let mut c = with_containers(base(), many_orphans(5));
    c.threshold = 5;
    let plan = run(&c);
    let g4 = &plan.gates[3];
    assert!(!g4.passed);
    assert!(g4.message.contains("6 removable orphans exceed orphans.threshold 5"), "{}", g4.message);
    assert!(g4.message.contains("--confirm"), "{}", g4.message);

    let mut c = base();
    c.owners = vec![];
    c.confirmation = Some("t1");
    let plan = run(&c);
    assert!(plan.gates[2].passed && plan.gates[2].message.contains("waived by the operator's confirmation"));
    assert!(plan.confirmation.consumed());
}

#[test]
fn removals_run_containers_before_networks() {
    let c = Case {
        snapshot: Ok(HostSnapshot {
            containers: vec![container("zz-shop-web-0", labels(ME, Some(&gone())), OLD)],
            networks: vec![network("aa-shop-back", labels(ME, Some(&gone())), Some(OLD))],
            ..Default::default()
        }),
        ..base()
    };
    let plan = run(&c);
    let order: Vec<(ObjectKind, &str)> =
        plan.removals().into_iter().map(|i| (plan.orphans[i].kind, plan.orphans[i].name.as_str())).collect();
    assert_eq!(order, vec![(ObjectKind::Container, "zz-shop-web-0"), (ObjectKind::Network, "aa-shop-back")]);
}

#[test]
fn objects_without_a_creation_time_age_from_when_berth_first_saw_them() {
    let owners: KnownOwners = [live()].into_iter().collect();
    let config =
        OrphanConfig { action: OrphanAction::Remove, threshold: 5, min_age: ConfigDuration(Duration::from_secs(300)) };
    let snapshot =
        HostSnapshot { networks: vec![network("shop-back", labels(ME, Some(&gone())), None)], ..Default::default() };
    let scan = |now: Timestamp, seen: &BTreeMap<String, Timestamp>| {
        plan_orphans(&OrphanInput {
            host: "edge-1",
            instance: ME,
            listing: Ok(&snapshot),
            owners: &owners,
            caches_synced: true,
            config: &config,
            now,
            confirmation: None,
            first_seen: seen,
        })
    };
    let first = scan(now(), &BTreeMap::new());
    assert_eq!(first.orphans[0].disposition, Disposition::Waiting { eligible_in: Duration::from_secs(300) });
    assert_eq!(first.first_seen.get("network/net-shop-back"), Some(&now()));
    let later = now() + jiff::SignedDuration::from_secs(301);
    let second = scan(later, &first.first_seen);
    assert_eq!(second.orphans[0].disposition, Disposition::Remove);
    assert_eq!(second.first_seen, first.first_seen, "the first sighting is kept, not refreshed");
}

#[test]
fn scan_renders_every_gate_in_order_and_every_orphan() {
    let c = with_containers(base(), vec![container("shop-young", labels(ME, Some(&gone())), YOUNG)]);
    let scan = run(&c).to_scan(None);
    let names: Vec<&str> = scan.gates.iter().map(|g| g.gate.as_str()).collect();
    assert_eq!(names, ["CachesSynced", "ListingComplete", "StoreNotEmpty", "BelowThreshold", "MinAge", "VolumesKept"]);
    assert_eq!(scan.requested_action, "Remove");
    assert_eq!(scan.effective_action, "Remove");
    assert_eq!(scan.blocked_by, "MinAge");
    let web = scan.orphans.iter().find(|o| o.name == "shop-web-0").unwrap();
    assert_eq!(web.object, "container");
    assert_eq!(web.owner, "Stack/default/shop");
    assert_eq!(web.owner_uid, "uid-shop");
    assert_eq!(web.age_seconds, OLD);
    assert_eq!(web.action, "Remove");
    let young = scan.orphans.iter().find(|o| o.name == "shop-young").unwrap();
    assert_eq!(young.action, "Waiting: younger than minAge 5m; eligible in 4m");
}

#[test]
fn tenant_networks_and_retained_volumes_are_left_to_the_lease_controller() {
    use berth_crds::common::{LABEL_ROLE, ROLE_RETAINED_VOLUME, ROLE_TENANT_NETWORK};
    let lease = owner("Lease", "pr-1", "uid-gone-lease");
    let mut retained = labels(ME, Some(&lease));
    retained.insert(LABEL_ROLE.into(), ROLE_RETAINED_VOLUME.into());
    let mut tenant_net = labels(ME, None);
    tenant_net.insert(LABEL_ROLE.into(), ROLE_TENANT_NETWORK.into());
    let snapshot = HostSnapshot {
        containers: vec![container("blog-web-0", labels(ME, Some(&live())), OLD)],
        networks: vec![
            network("berth-prod-tenant-acme", tenant_net, Some(OLD)),
            network("shop_default", labels(ME, Some(&gone())), Some(OLD)),
        ],
        volumes: vec![
            volume("retained.default.pr-1.app-0.data", retained),
            volume("shop_data", labels(ME, Some(&gone()))),
        ],
        ..Default::default()
    };
    let owners: KnownOwners = [live()].into_iter().collect();
    let config =
        OrphanConfig { action: OrphanAction::Remove, threshold: 5, min_age: ConfigDuration(Duration::from_secs(300)) };
    let plan = plan_orphans(&OrphanInput {
        host: "edge-1",
        instance: ME,
        listing: Ok(&snapshot),
        owners: &owners,
        caches_synced: true,
        config: &config,
        now: now(),
        confirmation: None,
        first_seen: &BTreeMap::new(),
    });
    let names: Vec<&str> = plan.orphans.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["shop_default", "shop_data"], "only the gone Stack's objects are orphans");
}
