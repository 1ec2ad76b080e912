//! The executor (through one pass on a fake host): exact Docker calls for creation, changes,
//! drift, rollouts and rollbacks, failures and removal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_crds::common::{EnvVar, LABEL_CONFIG_HASH};
use berth_crds::stack::{DriftPolicy, RolloutStrategy};

use super::*;
use crate::controllers::stack::events::{Collect, reason as ev};
use crate::controllers::stack::pass::{HostResult, Mode, PassContext, reconcile_host, remove_from_host};
use crate::controllers::stack::plan::tier;
use crate::controllers::stack::testutil::{FakeHost, IMAGE, desired_of, fast, known, sample_stack};
use crate::docker::fake::FakeDocker;
use crate::docker::{DockerApi, HealthState, LogStream};

fn created(h: &FakeHost) -> Vec<String> {
    h.fake.call_log().into_iter().filter_map(|c| c.strip_prefix("create_container ").map(str::to_string)).collect()
}

fn assert_clean(r: &HostResult) {
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.unreachable.is_none(), "{:?}", r.unreachable);
}

#[tokio::test]
async fn a_new_stack_is_created_in_dependency_order_and_ready() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, notes) = h.pass(&s, false).await;
    assert_clean(&r);
    assert_eq!(created(&h), ["shop-db-0", "shop-api-0", "shop-web-0"], "dependencies first, whatever the spec order");
    assert!(h.fake.network_names().contains("shop_back"));
    assert!(h.fake.volume_names().contains("shop_data"));
    assert!(r.applied(), "{:?}", r.remaining);
    for name in ["shop-db-0", "shop-api-0", "shop-web-0"] {
        assert_eq!(h.fake.container(name).unwrap().state, crate::docker::ContainerState::Running, "{name}");
    }
    let reasons = notes.reasons();
    assert_eq!(reasons.iter().filter(|r| **r == ev::CREATED).count(), 3, "{reasons:?}");
    assert!(reasons.contains(&ev::NETWORK_CREATED) && reasons.contains(&ev::VOLUME_CREATED));
}

#[tokio::test]
async fn converged_host_costs_one_listing_for_many_stacks_and_changes_nothing() {
    let h = FakeHost::new();
    let stacks: Vec<_> = (0..10).map(|i| sample_stack(&format!("s{i}"), &format!("uid-{i}"))).collect();
    let mut knowns = Vec::new();
    for s in &stacks {
        let (r, _) = h.pass(s, false).await;
        assert_clean(&r);
        knowns.push(known(&r));
    }
    // The resync finds the snapshot stale (as after max_age): it must list once, for everyone.
    h.cx.pool.handle("local").unwrap().invalidate();
    h.fake.reset_calls();
    let passes = stacks.iter().zip(&knowns).map(|(s, k)| h.pass_with(s, DriftPolicy::Reconcile, fast(), true, k));
    let results = futures::future::join_all(passes).await;
    for (r, _) in &results {
        assert_clean(r);
        assert!(r.findings.is_empty() && !r.mutated, "{:?}", r.findings);
    }
    assert_eq!(h.mutations(), Vec::<String>::new());
    assert_eq!(h.fake.calls("list_containers"), 1, "one shared listing for 10 stacks");
    assert_eq!(h.fake.calls("inspect_image"), 1, "one image resolution for 10 stacks");
    assert_eq!(h.fake.calls("inspect_container"), 0);
}

#[tokio::test]
async fn an_env_change_recreates_only_that_service() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    assert_clean(&r);
    let before: HashMap<String, String> = h.fake.containers().into_iter().map(|(n, c)| (n, c.id)).collect();
    let mut changed = s.clone();
    changed.spec.services[1].env.push(EnvVar { name: "NEW".into(), value: Some("1".into()), value_from: None });
    h.fake.reset_calls();
    let (r, notes) = h.pass(&changed, false).await;
    assert_clean(&r);
    assert_eq!(created(&h), ["shop-api-0"]);
    let after: HashMap<String, String> = h.fake.containers().into_iter().map(|(n, c)| (n, c.id)).collect();
    assert_ne!(before["shop-api-0"], after["shop-api-0"]);
    assert_eq!(before["shop-db-0"], after["shop-db-0"]);
    assert_eq!(before["shop-web-0"], after["shop-web-0"]);
    assert!(h.fake.container("shop-api-0").unwrap().spec.env.contains(&"NEW=1".to_string()));
    assert_eq!(notes.reasons(), [ev::RECREATED]);
    assert_eq!(h.fake.calls("remove_container"), 1);
}

#[tokio::test]
async fn a_killed_container_is_started_and_reported_as_tier_3() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    h.fake.kill_by_hand("shop-web-0");
    h.cx.pool.handle("local").unwrap().invalidate();
    h.fake.reset_calls();
    let (r, notes) = h.pass_with(&s, DriftPolicy::Reconcile, fast(), true, &known(&r)).await;
    assert_clean(&r);
    assert_eq!(r.findings.len(), 1);
    assert_eq!((r.findings[0].tier, r.findings[0].reason.as_str()), (tier::RUNTIME_STATE, "NotRunning"));
    assert!(r.findings[0].message.contains("137"), "the exit code comes from inspecting: {}", r.findings[0].message);
    assert_eq!(h.mutations().len(), 1, "{:?}", h.mutations());
    assert!(h.mutations()[0].starts_with("start_container"));
    assert_eq!(notes.reasons(), [ev::STARTED]);
    assert_eq!(h.fake.container("shop-web-0").unwrap().state, crate::docker::ContainerState::Running);
}

#[tokio::test]
async fn report_policy_leaves_a_killed_container_dead_but_applies_spec_changes() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    h.fake.kill_by_hand("shop-web-0");
    h.cx.pool.handle("local").unwrap().invalidate();
    h.fake.reset_calls();
    let (r, _) = h.pass_with(&s, DriftPolicy::Report, fast(), true, &known(&r)).await;
    assert_clean(&r);
    assert_eq!(r.findings.iter().map(|f| f.reason.as_str()).collect::<Vec<_>>(), ["NotRunning"]);
    assert_eq!(h.mutations(), Vec::<String>::new());
    assert_eq!(h.fake.container("shop-web-0").unwrap().state, crate::docker::ContainerState::Exited);

    // A spec change is still rolled out, and the dead container stays dead.
    let mut changed = s.clone();
    changed.spec.services[1].env.push(EnvVar { name: "NEW".into(), value: Some("1".into()), value_from: None });
    let (r, _) = h.pass_with(&changed, DriftPolicy::Report, fast(), false, &known(&r)).await;
    assert_clean(&r);
    assert_eq!(created(&h), ["shop-api-0"]);
    assert_eq!(h.fake.container("shop-web-0").unwrap().state, crate::docker::ContainerState::Exited);
}

#[tokio::test]
async fn a_removed_container_is_recreated_as_tier_2() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    h.fake.remove_by_hand("shop-db-0");
    h.cx.pool.handle("local").unwrap().invalidate();
    h.fake.reset_calls();
    let (r, _) = h.pass_with(&s, DriftPolicy::Reconcile, fast(), true, &known(&r)).await;
    assert_clean(&r);
    assert_eq!(r.findings[0].reason, "ContainerMissing");
    assert_eq!(created(&h), ["shop-db-0"]);
}

#[tokio::test]
async fn an_oom_kill_is_told_apart_by_inspection() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    h.fake.stop_by_hand("shop-db-0", 137, true);
    h.cx.pool.handle("local").unwrap().invalidate();
    let (r, _) = h.pass_with(&s, DriftPolicy::Report, fast(), true, &known(&r)).await;
    assert_eq!(r.findings[0].reason, "OOMKilled");
    let facts = r.facts.iter().find(|f| f.summary.name == "shop-db-0").unwrap();
    assert!(facts.oom_killed);
}

#[tokio::test]
async fn a_retagged_image_recreates_its_containers() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    let old_id = h.fake.container("shop-web-0").unwrap().image_id;
    let new_id = h.fake.add_image(IMAGE); // `docker pull`/`docker tag` moved the tag
    h.cx.pool.handle("local").unwrap().invalidate();
    let (r, _) = h.pass_with(&s, DriftPolicy::Reconcile, fast(), true, &known(&r)).await;
    assert_clean(&r);
    assert!(r.findings.iter().all(|f| f.reason == "ImageChanged" && f.tier == tier::RUNTIME_CONFIG));
    assert_eq!(r.findings.len(), 3);
    let now = h.fake.container("shop-web-0").unwrap().image_id;
    assert_ne!(now, old_id);
    assert_eq!(now, new_id);
}

#[tokio::test]
async fn start_first_starts_the_new_container_before_removing_the_old() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    assert_clean(&r);
    let old_id = h.fake.container("shop-web-0").unwrap().id;
    let mut changed = s.clone();
    changed.spec.services[0].env.push(EnvVar { name: "NEW".into(), value: Some("1".into()), value_from: None });
    h.fake.reset_calls();
    let opts = ExecOptions { strategy: RolloutStrategy::StartFirst, ..fast() };
    let (r, _) = h.pass_with(&changed, DriftPolicy::Reconcile, opts, false, &known(&r)).await;
    assert_clean(&r);
    let log = h.mutations();
    let new_id = h.fake.container("shop-web-0").unwrap().id;
    assert_eq!(
        log,
        [
            "create_container shop-web-0-next".to_string(),
            format!("start_container {new_id}"),
            format!("stop_container {old_id}"),
            format!("remove_container {old_id}"),
            format!("rename_container {new_id}"),
        ]
    );
    assert!(h.fake.container("shop-web-0-next").is_none());
}

#[tokio::test]
async fn a_replacement_that_never_gets_healthy_is_rolled_back() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    assert_clean(&r);
    let old = h.fake.container("shop-db-0").unwrap();
    let mut changed = s.clone();
    changed.spec.services[2].env.push(EnvVar { name: "BROKEN".into(), value: Some("1".into()), value_from: None });
    h.fake.set_auto_healthy(false);
    let opts = ExecOptions { auto_rollback: true, health_timeout: Duration::from_millis(300), ..fast() };
    let (r, notes) = h.pass_with(&changed, DriftPolicy::Reconcile, opts, false, &known(&r)).await;
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(matches!(r.errors[0], StackError::RolledBack { .. }), "{}", r.errors[0]);
    assert!(r.errors[0].to_string().contains("rolled back"));
    assert!(r.rolled_back.contains("db"));
    let now = h.fake.container("shop-db-0").unwrap();
    assert_eq!(now.id, old.id, "the previous container is back under its name");
    assert_eq!(now.spec.labels[LABEL_CONFIG_HASH], old.spec.labels[LABEL_CONFIG_HASH]);
    assert_eq!(now.state, crate::docker::ContainerState::Running);
    assert!(h.fake.container("shop-db-0-prev").is_none());
    assert_eq!(h.fake.containers().len(), 3, "the failed replacement is gone");
    assert!(notes.reasons().contains(&ev::ROLLED_BACK));
    assert!(!r.applied());
}

#[tokio::test]
async fn start_first_rollback_leaves_the_old_container_untouched() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    let old = h.fake.container("shop-db-0").unwrap();
    let mut changed = s.clone();
    changed.spec.services[2].env.push(EnvVar { name: "BROKEN".into(), value: Some("1".into()), value_from: None });
    h.fake.set_auto_healthy(false);
    h.fake.reset_calls();
    let opts = ExecOptions {
        strategy: RolloutStrategy::StartFirst,
        auto_rollback: true,
        health_timeout: Duration::from_millis(300),
        ..fast()
    };
    let (r, _) = h.pass_with(&changed, DriftPolicy::Reconcile, opts, false, &known(&r)).await;
    assert!(matches!(r.errors[..], [StackError::RolledBack { .. }]), "{:?}", r.errors);
    assert!(!h.mutations().iter().any(|c| c.contains(&old.id)), "{:?}", h.mutations());
    assert_eq!(h.fake.container("shop-db-0").unwrap().id, old.id);
    assert!(h.fake.container("shop-db-0-next").is_none());
}

#[tokio::test]
async fn a_dependency_that_never_gets_healthy_blocks_its_dependents_with_its_logs() {
    let h = FakeHost::new();
    h.fake.set_auto_healthy(false);
    let s = sample_stack("shop", "uid-1");
    let desired = desired_of(&s);
    // Let the db exist first so that its logs can be read while berth waits.
    let notes = Collect::default();
    let mode = Mode::Apply {
        policy: DriftPolicy::Reconcile,
        exec: ExecOptions { health_timeout: Duration::from_millis(300), ..fast() },
    };
    let none = HashMap::new();
    let waiter = reconcile_host(&h.cx, "uid-1", &desired, "local", &mode, false, &none, &notes);
    let fake = h.fake.clone();
    let logger = async move {
        for _ in 0..100 {
            if fake.container("shop-db-0").is_some() {
                fake.push_log("shop-db-0", LogStream::Stderr, "FATAL: could not open /data/pg");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (r, ()) = tokio::join!(waiter, logger);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let msg = r.errors[0].to_string();
    assert!(matches!(r.errors[0], StackError::DependencyNotReady { .. }), "{msg}");
    assert!(msg.contains("api waits for db to be Healthy") && msg.contains("FATAL: could not open"), "{msg}");
    assert_eq!(created(&h), ["shop-db-0"], "api and web are not created");
}

#[tokio::test]
async fn a_foreign_container_with_the_wanted_name_is_never_touched() {
    let h = FakeHost::new();
    let foreign = h.fake.add_foreign_container("shop-web-0", "nginx", Default::default());
    let s = sample_stack("shop", "uid-1");
    let (r, notes) = h.pass(&s, false).await;
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].is_permanent());
    let msg = r.errors[0].to_string();
    assert!(matches!(r.errors[0], StackError::NameConflict { .. }) && msg.contains("never removes"), "{msg}");
    assert!(
        !h.mutations().iter().any(|c| c.contains(&foreign) || c.ends_with(" shop-web-0") && !c.starts_with("create"))
    );
    assert_eq!(h.fake.container("shop-web-0").unwrap().id, foreign);
    assert_eq!(h.fake.container("shop-web-0").unwrap().spec.image, "nginx");
    // The other services run.
    assert!(h.fake.container("shop-db-0").is_some() && h.fake.container("shop-api-0").is_some());
    assert!(!notes.reasons().contains(&ev::REMOVED));
}

#[tokio::test]
async fn another_stacks_container_with_the_wanted_name_is_a_conflict_naming_its_owner() {
    let h = FakeHost::new();
    let first = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&first, false).await;
    assert_clean(&r);
    // The same name, recreated: a new uid while the old containers still exist.
    let second = sample_stack("shop", "uid-2");
    let (r, _) = h.pass(&second, false).await;
    let msg = r.errors.first().map(ToString::to_string).unwrap_or_default();
    assert!(msg.contains("owned by Stack default/shop, uid uid-1"), "{msg}");
    assert_eq!(h.fake.container("shop-db-0").unwrap().spec.labels["berth.dev/owner-uid"], "uid-1");
}

#[tokio::test]
async fn a_failed_pull_says_so_and_a_pullable_image_reports_progress() {
    let h = FakeHost::new();
    let mut s = sample_stack("shop", "uid-1");
    s.spec.services[0].image = "registry.example/web:2".into();
    let (r, notes) = h.pass(&s, false).await;
    assert!(matches!(r.errors[..], [StackError::PullFailed { .. }]), "{:?}", r.errors);
    assert!(!r.errors[0].is_permanent());
    assert!(notes.reasons().contains(&ev::PULL_FAILED));
    assert!(h.fake.container("shop-web-0").is_none());
    assert!(h.fake.container("shop-db-0").is_some(), "services that do not depend on it go on");

    h.fake.add_pullable("registry.example/web:2");
    let (r, notes) = h.pass(&s, false).await;
    assert_clean(&r);
    let reasons = notes.reasons();
    assert!(reasons.contains(&ev::PULLING) && reasons.contains(&ev::PULLED), "{reasons:?}");
    assert!(notes.progress_messages().iter().any(|m| m.contains("registry.example/web:2")));
    assert!(h.fake.container("shop-web-0").is_some());
}

#[tokio::test]
async fn pull_policy_never_refuses_a_missing_image() {
    let h = FakeHost::new();
    let mut s = sample_stack("shop", "uid-1");
    s.spec.services[0].image = "not-here:1".into();
    s.spec.services[0].pull_policy = berth_crds::stack::PullPolicy::Never;
    let (r, _) = h.pass(&s, false).await;
    assert!(matches!(r.errors[..], [StackError::ImageMissing { .. }]), "{:?}", r.errors);
    assert_eq!(h.fake.calls("pull_image"), 0);
}

#[tokio::test]
async fn an_unreachable_host_gets_no_call_at_all() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    h.pool.set_unreachable("local", "connection refused");
    let (r, _) = h.pass(&s, false).await;
    assert_eq!(r.unreachable.as_deref(), Some("connection refused"));
    assert!(h.fake.call_log().is_empty(), "{:?}", h.fake.call_log());

    // A daemon that stops answering mid-way is reported the same way.
    h.pool.set_reachable("local");
    h.fake.set_unreachable(true);
    let (r, _) = h.pass(&s, false).await;
    assert!(r.unreachable.is_some() && r.errors.is_empty(), "{:?}", r);
    assert_eq!(h.mutations(), Vec::<String>::new());
}

#[tokio::test]
async fn scaling_down_removes_surplus_replicas() {
    let h = FakeHost::new();
    let mut s = sample_stack("shop", "uid-1");
    s.spec.services[0].replicas = 3;
    let (r, _) = h.pass(&s, false).await;
    assert_clean(&r);
    assert!(h.fake.container("shop-web-2").is_some());
    s.spec.services[0].replicas = 1;
    let (r, notes) = h.pass(&s, false).await;
    assert_clean(&r);
    assert!(h.fake.container("shop-web-1").is_none() && h.fake.container("shop-web-2").is_none());
    assert_eq!(notes.reasons(), [ev::REMOVED, ev::REMOVED]);
}

#[tokio::test]
async fn removal_keeps_retained_volumes_and_converges_on_missing_objects() {
    let h = FakeHost::new();
    let mut s = sample_stack("shop", "uid-1");
    s.spec.volumes.push(berth_crds::stack::VolumeSpec { name: "scratch".into(), retain: false });
    let (r, _) = h.pass(&s, false).await;
    assert_clean(&r);
    assert!(h.fake.volume_names().contains("shop_scratch"));
    h.fake.remove_by_hand("shop-web-0"); // already gone: still a success
    let notes = Collect::default();
    remove_from_host(&h.cx, "uid-1", "local", &["shop_scratch".into()], &["shop_data".into()], &notes).await.unwrap();
    assert!(h.fake.containers().is_empty());
    assert!(!h.fake.network_names().contains("shop_back"));
    assert!(h.fake.volume_names().contains("shop_data"), "retained");
    assert!(!h.fake.volume_names().contains("shop_scratch"), "retain: false");
    assert!(notes.reasons().contains(&ev::VOLUME_RETAINED) && notes.reasons().contains(&ev::VOLUME_REMOVED));
    // Twice is fine.
    remove_from_host(&h.cx, "uid-1", "local", &["shop_scratch".into()], &[], &notes).await.unwrap();
}

#[tokio::test]
async fn removal_from_an_unreachable_host_is_blocked() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let _ = h.pass(&s, false).await;
    h.pool.set_unreachable("local", "no route to host");
    h.fake.reset_calls();
    let err = remove_from_host(&h.cx, "uid-1", "local", &[], &[], &Collect::default()).await.unwrap_err();
    assert!(matches!(err, StackError::DeletionBlocked { .. }) && err.to_string().contains("no route to host"), "{err}");
    assert!(h.fake.call_log().is_empty());
    assert_eq!(h.fake.containers().len(), 3);
}

#[tokio::test]
async fn an_unhealthy_container_is_restarted() {
    let h = FakeHost::new();
    let s = sample_stack("shop", "uid-1");
    let (r, _) = h.pass(&s, false).await;
    h.fake.set_health("shop-db-0", HealthState::Unhealthy);
    h.cx.pool.handle("local").unwrap().invalidate();
    let (r, notes) = h.pass_with(&s, DriftPolicy::Reconcile, fast(), true, &known(&r)).await;
    assert_clean(&r);
    assert_eq!(r.findings[0].reason, "Unhealthy");
    assert_eq!(notes.reasons(), [ev::RESTARTED]);
}

#[tokio::test]
async fn secrets_never_reach_errors_or_events() {
    struct Pw;
    impl crate::controllers::stack::render::References for Pw {
        fn secret(&self, _: &str, _: &str, _: &str) -> Option<Vec<u8>> {
            Some(b"hunter2-secret".to_vec())
        }
        fn config_map(&self, _: &str, _: &str, _: &str) -> Option<String> {
            None
        }
    }
    let h = FakeHost::new();
    let mut s = sample_stack("shop", "uid-1");
    s.spec.services[2].env.push(EnvVar {
        name: "PASSWORD".into(),
        value: None,
        value_from: Some(berth_crds::common::EnvVarSource {
            secret_key_ref: Some(berth_crds::common::SecretKeySelector {
                name: "db".into(),
                key: "pw".into(),
                optional: false,
            }),
            config_map_key_ref: None,
        }),
    });
    let desired = crate::controllers::stack::render::render(
        &s,
        &crate::controllers::stack::render::RenderContext {
            instance: "test",
            hash_key: b"k",
            allowed_host_paths: &[],
            references: &Pw,
        },
    )
    .unwrap();
    h.fake.set_auto_healthy(false);
    // Docker echoing the environment in an error, and the app printing it in its log.
    h.fake.fail_next(
        "create_container",
        DockerError::Api { operation: "create".into(), status: 500, message: "bad env PASSWORD=hunter2-secret".into() },
    );
    let notes = Collect::default();
    let mode = Mode::Apply { policy: DriftPolicy::Reconcile, exec: fast() };
    let r = reconcile_host(&h.cx, "uid-1", &desired, "local", &mode, false, &HashMap::new(), &notes).await;
    let all: Vec<String> =
        r.errors.iter().map(ToString::to_string).chain(notes.notes().into_iter().map(|n| n.message)).collect();
    assert!(!all.is_empty());
    for text in &all {
        assert!(!text.contains("hunter2-secret"), "{text}");
    }
    assert!(all.iter().any(|t| t.contains("PASSWORD=****")), "{all:?}");
    assert!(!format!("{desired:?}").contains("hunter2-secret"));
}

#[tokio::test]
async fn container_spec_carries_the_desired_configuration() {
    let s = sample_stack("shop", "uid-1");
    let d = desired_of(&s);
    let db = &d.service("db").unwrap().containers[0];
    let spec = container_spec(db, "x");
    assert_eq!(spec.name, "x");
    assert_eq!(spec.image, IMAGE);
    assert_eq!(spec.env, ["MODE=db"]);
    assert_eq!(spec.labels[LABEL_CONFIG_HASH], db.config_hash);
    assert_eq!(spec.networks[0].network, "shop_back");
    assert_eq!(spec.networks[0].aliases, ["db"]);
    assert!(matches!(&spec.mounts[0], crate::docker::Mount::Volume { name, .. } if name == "shop_data"));
    assert_eq!(spec.restart_policy, "unless-stopped");
    assert!(spec.healthcheck.is_some());
}

#[tokio::test]
async fn a_new_host_in_the_pool_is_used_without_restart() {
    let pool = Arc::new(crate::controllers::pool::HostPool::new());
    let cx = PassContext::new(pool.clone(), "test");
    let s = sample_stack("shop", "uid-1");
    let desired = desired_of(&s);
    let mode = Mode::Apply { policy: DriftPolicy::Reconcile, exec: fast() };
    let r = reconcile_host(&cx, "uid-1", &desired, "local", &mode, false, &HashMap::new(), &Collect::default()).await;
    assert!(r.unreachable.as_deref().unwrap_or("").contains("not connected"), "{:?}", r.unreachable);
    let fake = FakeDocker::default();
    fake.add_image(IMAGE);
    pool.set_connected("local", Arc::new(fake.clone()));
    let r = reconcile_host(&cx, "uid-1", &desired, "local", &mode, false, &HashMap::new(), &Collect::default()).await;
    assert_clean(&r);
    assert_eq!(fake.containers().len(), 3);
    let _ = fake.ping().await;
}

/// A daemon whose container creations take a while, counting how many are in flight at once.
struct SlowCreates {
    inner: FakeDocker,
    /// Only creations of containers whose name starts with this are counted.
    counted: &'static str,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl DockerApi for SlowCreates {
    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }
    async fn ping(&self) -> crate::docker::DockerResult<()> {
        self.inner.ping().await
    }
    async fn info(&self) -> crate::docker::DockerResult<crate::docker::DaemonFacts> {
        self.inner.info().await
    }
    async fn list_containers(
        &self,
        l: &crate::docker::LabelFilter,
    ) -> crate::docker::DockerResult<Vec<crate::docker::ContainerSummary>> {
        self.inner.list_containers(l).await
    }
    async fn inspect_container(&self, id: &str) -> crate::docker::DockerResult<crate::docker::ContainerDetails> {
        self.inner.inspect_container(id).await
    }
    async fn create_container(&self, spec: &crate::docker::ContainerSpec) -> crate::docker::DockerResult<String> {
        use std::sync::atomic::Ordering::SeqCst;
        let counted = spec.name.starts_with(self.counted);
        if counted {
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = self.inner.create_container(spec).await;
        if counted {
            self.in_flight.fetch_sub(1, SeqCst);
        }
        r
    }
    async fn start_container(&self, id: &str) -> crate::docker::DockerResult<()> {
        self.inner.start_container(id).await
    }
    async fn stop_container(&self, id: &str, t: Option<i64>) -> crate::docker::DockerResult<()> {
        self.inner.stop_container(id, t).await
    }
    async fn restart_container(&self, id: &str, t: Option<i64>) -> crate::docker::DockerResult<()> {
        self.inner.restart_container(id, t).await
    }
    async fn kill_container(&self, id: &str, s: Option<&str>) -> crate::docker::DockerResult<()> {
        self.inner.kill_container(id, s).await
    }
    async fn remove_container(&self, id: &str, force: bool) -> crate::docker::DockerResult<()> {
        self.inner.remove_container(id, force).await
    }
    async fn rename_container(&self, id: &str, name: &str) -> crate::docker::DockerResult<()> {
        self.inner.rename_container(id, name).await
    }
    async fn list_networks(
        &self,
        l: &crate::docker::LabelFilter,
    ) -> crate::docker::DockerResult<Vec<crate::docker::NetworkSummary>> {
        self.inner.list_networks(l).await
    }
    async fn create_network(&self, spec: &crate::docker::NetworkSpec) -> crate::docker::DockerResult<String> {
        self.inner.create_network(spec).await
    }
    async fn remove_network(&self, id: &str) -> crate::docker::DockerResult<()> {
        self.inner.remove_network(id).await
    }
    async fn connect_network(&self, n: &str, c: &str, a: &[String]) -> crate::docker::DockerResult<()> {
        self.inner.connect_network(n, c, a).await
    }
    async fn disconnect_network(&self, n: &str, c: &str) -> crate::docker::DockerResult<()> {
        self.inner.disconnect_network(n, c).await
    }
    async fn list_volumes(
        &self,
        l: &crate::docker::LabelFilter,
    ) -> crate::docker::DockerResult<Vec<crate::docker::VolumeSummary>> {
        self.inner.list_volumes(l).await
    }
    async fn create_volume(&self, spec: &crate::docker::VolumeSpec) -> crate::docker::DockerResult<()> {
        self.inner.create_volume(spec).await
    }
    async fn remove_volume(&self, name: &str) -> crate::docker::DockerResult<()> {
        self.inner.remove_volume(name).await
    }
    async fn inspect_image(&self, r: &str) -> crate::docker::DockerResult<Option<crate::docker::ImageInfo>> {
        self.inner.inspect_image(r).await
    }
    async fn pull_image(&self, r: &str, p: crate::docker::ProgressFn<'_>) -> crate::docker::DockerResult<()> {
        self.inner.pull_image(r, p).await
    }
    async fn download_archive(&self, c: &str, p: &str) -> crate::docker::DockerResult<bytes::Bytes> {
        self.inner.download_archive(c, p).await
    }
    async fn upload_archive(&self, c: &str, p: &str, t: bytes::Bytes) -> crate::docker::DockerResult<()> {
        self.inner.upload_archive(c, p, t).await
    }
    fn events(
        &self,
        l: &crate::docker::LabelFilter,
    ) -> futures::stream::BoxStream<'static, crate::docker::DockerResult<crate::docker::DockerEvent>> {
        self.inner.events(l)
    }
    fn logs(
        &self,
        id: &str,
        o: &crate::docker::LogOptions,
    ) -> futures::stream::BoxStream<'static, crate::docker::DockerResult<crate::docker::LogLine>> {
        self.inner.logs(id, o)
    }
}

fn slow_pool(counted: &'static str) -> (FakeDocker, Arc<SlowCreates>, PassContext) {
    let inner = FakeDocker::default();
    inner.add_image(IMAGE);
    let slow = Arc::new(SlowCreates {
        inner: inner.clone(),
        counted,
        in_flight: Default::default(),
        most: Default::default(),
    });
    let pool = Arc::new(crate::controllers::pool::HostPool::new());
    pool.set_connected("local", slow.clone());
    (inner, slow, PassContext::new(pool, "test"))
}

#[tokio::test]
async fn independent_services_change_at_once_and_dependents_wait_for_their_dependencies() {
    // web and db depend on nothing; api waits for db (Healthy).
    let (inner, slow, cx) = slow_pool("shop-");
    let mut s = sample_stack("shop", "uid-1");
    s.spec.services[0].depends_on.clear();
    let desired = desired_of(&s);
    let mode = Mode::Apply { policy: DriftPolicy::Reconcile, exec: fast() };
    let notes = Collect::default();
    let r = reconcile_host(&cx, "uid-1", &desired, "local", &mode, false, &HashMap::new(), &notes).await;
    assert_clean(&r);
    assert_eq!(slow.most.load(std::sync::atomic::Ordering::SeqCst), 2, "web and db are created at once");
    let log: Vec<String> =
        inner.call_log().into_iter().filter(|c| c.starts_with("create_container") || c.starts_with("start")).collect();
    let at = |call: &str| log.iter().position(|c| c == call).unwrap_or_else(|| panic!("{call}: {log:?}"));
    let db = inner.container("shop-db-0").expect("db exists").id;
    assert!(at("create_container shop-api-0") > at(&format!("start_container {db}")), "api after db: {log:?}");
    assert_eq!(inner.containers().len(), 3);
}

#[tokio::test]
async fn max_parallel_bounds_the_replicas_changed_at_once() {
    for (max_parallel, expected) in [(1, 1), (2, 2), (8, 5)] {
        let (inner, slow, cx) = slow_pool("shop-web-");
        let mut s = sample_stack("shop", "uid-1");
        s.spec.services[0].replicas = 5;
        s.spec.services[0].depends_on.clear();
        let desired = desired_of(&s);
        let mode = Mode::Apply { policy: DriftPolicy::Reconcile, exec: ExecOptions { max_parallel, ..fast() } };
        let r =
            reconcile_host(&cx, "uid-1", &desired, "local", &mode, false, &HashMap::new(), &Collect::default()).await;
        assert_clean(&r);
        assert_eq!(inner.containers().len(), 7);
        let most = slow.most.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(most, expected, "maxParallel {max_parallel}: {most} creations at once");
    }
}

#[tokio::test]
async fn a_volume_created_by_hand_is_used_but_never_removed() {
    let h = FakeHost::new();
    h.fake.create_volume(&VolumeSpec { name: "shop_data".into(), labels: Default::default() }).await.unwrap();
    let mut s = sample_stack("shop", "uid-1");
    s.spec.volumes[0].retain = false;
    let (r, _) = h.pass(&s, false).await;
    assert_clean(&r);
    assert!(r.applied(), "the hand-made volume counts as present: {:?}", r.remaining);
    h.cx.pool.handle("local").unwrap().invalidate();
    h.fake.reset_calls();
    let (r, _) = h.pass_with(&s, DriftPolicy::Reconcile, fast(), true, &known(&r)).await;
    assert!(r.findings.is_empty() && !r.mutated, "{:?}", r.findings);
    assert_eq!(h.fake.calls("create_volume"), 0);
    remove_from_host(&h.cx, "uid-1", "local", &["shop_data".into()], &[], &Collect::default()).await.unwrap();
    assert!(h.fake.containers().is_empty());
    assert!(h.fake.volume_names().contains("shop_data"), "not berth's: kept even with retain: false");
}
