//! The executor of orphan collection: carries out the removals an [`OrphanPlan`] allows, in its
//! order (containers, then networks), and records in the plan what became of each one. A
//! container is stopped (with a grace period) and then removed; an object already gone counts as
//! removed (convergent); a network still in use is kept and said so.

use crate::docker::DockerApi;

use super::orphans::{Disposition, ObjectKind, OrphanPlan};

/// Seconds a container gets to stop before Docker kills it.
pub const STOP_GRACE_SECONDS: i64 = 10;

/// Carries out the plan's removals on `docker`; returns the indexes (into `plan.orphans`) it
/// acted on, for events.
pub async fn execute(plan: &mut OrphanPlan, docker: &dyn DockerApi) -> Vec<usize> {
    let removals = plan.removals();
    for &i in &removals {
        let orphan = &plan.orphans[i];
        let outcome = match orphan.kind {
            ObjectKind::Container => remove_container(docker, &orphan.id).await,
            ObjectKind::Network => match docker.remove_network(&orphan.id).await {
                Ok(()) => Disposition::Removed,
                Err(e) if e.is_not_found() => Disposition::AlreadyGone,
                Err(crate::docker::DockerError::Conflict { message, .. }) => Disposition::InUse(message),
                Err(e) => Disposition::RemoveFailed(e.to_string()),
            },
            // The plan never removes volumes; keep them even if a future plan asked.
            ObjectKind::Volume => Disposition::KeptVolume,
        };
        tracing::info!(object = orphan.kind.as_str(), name = %orphan.name, outcome = ?outcome, "orphan removal");
        plan.orphans[i].disposition = outcome;
    }
    removals
}

async fn remove_container(docker: &dyn DockerApi, id: &str) -> Disposition {
    match docker.stop_container(id, Some(STOP_GRACE_SECONDS)).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Disposition::AlreadyGone,
        // A failed stop does not prevent removal: the forced remove below kills it.
        Err(e) => tracing::warn!(container = id, error = %e, "stopping an orphan failed; removing it by force"),
    }
    match docker.remove_container(id, true).await {
        Ok(()) => Disposition::Removed,
        Err(e) if e.is_not_found() => Disposition::AlreadyGone,
        Err(e) => Disposition::RemoveFailed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use berth_crds::common::{
        LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_OWNER_KIND, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE, LABEL_OWNER_UID,
    };

    use super::*;
    use crate::config::{ConfigDuration, OrphanAction, OrphanConfig};
    use crate::controllers::host::orphans::{KnownOwners, OrphanInput, plan_orphans};
    use crate::controllers::pool::HostHandle;
    use crate::docker::fake::FakeDocker;
    use crate::docker::{ContainerSpec, NetworkJoin, NetworkSpec, VolumeSpec};

    fn labels(uid: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), "berth".to_string()),
            (LABEL_INSTANCE.to_string(), "prod".to_string()),
            (LABEL_OWNER_KIND.to_string(), "Stack".to_string()),
            (LABEL_OWNER_NAMESPACE.to_string(), "default".to_string()),
            (LABEL_OWNER_NAME.to_string(), "shop".to_string()),
            (LABEL_OWNER_UID.to_string(), uid.to_string()),
        ])
    }

    async fn plan_for(fake: &FakeDocker) -> OrphanPlan {
        let handle = HostHandle::new("edge-1", std::sync::Arc::new(fake.clone()));
        let snapshot = handle.observe("prod", Duration::ZERO).await.unwrap();
        let owners: KnownOwners = [crate::controllers::host::orphans::OwnerKey {
            kind: "Stack".into(),
            namespace: "default".into(),
            name: "blog".into(),
            uid: "uid-blog".into(),
        }]
        .into_iter()
        .collect();
        let config =
            OrphanConfig { action: OrphanAction::Remove, threshold: 5, min_age: ConfigDuration(Duration::ZERO) };
        plan_orphans(&OrphanInput {
            host: "edge-1",
            instance: "prod",
            listing: Ok(&snapshot),
            owners: &owners,
            caches_synced: true,
            config: &config,
            now: jiff::Timestamp::now(),
            confirmation: None,
            first_seen: &BTreeMap::new(),
        })
    }

    #[tokio::test]
    async fn removes_containers_then_networks_and_keeps_volumes() {
        let fake = FakeDocker::default();
        fake.add_image("busybox");
        fake.create_network(&NetworkSpec { name: "shop-back".into(), internal: false, labels: labels("uid-shop") })
            .await
            .unwrap();
        fake.create_volume(&VolumeSpec { name: "shop-data".into(), labels: labels("uid-shop") }).await.unwrap();
        let id = fake
            .create_container(&ContainerSpec {
                name: "shop-web-0".into(),
                image: "busybox".into(),
                labels: labels("uid-shop"),
                networks: vec![NetworkJoin { network: "shop-back".into(), aliases: vec![] }],
                ..Default::default()
            })
            .await
            .unwrap();
        fake.start_container(&id).await.unwrap();

        let mut plan = plan_for(&fake).await;
        fake.reset_calls();
        let acted = execute(&mut plan, &fake).await;
        assert_eq!(acted.len(), 2);
        assert_eq!(
            fake.call_log(),
            vec![
                format!("stop_container {id}"),
                format!("remove_container {id}"),
                format!("remove_network {}", plan.orphans[1].id)
            ]
        );
        assert!(fake.containers().is_empty());
        assert!(fake.network_names().is_empty());
        assert!(fake.volume_names().contains("shop-data"), "volumes are never removed");
        let scan = plan.to_scan(None);
        assert_eq!(scan.removed, 2);
        assert_eq!(scan.effective_action, "Remove");
    }

    #[tokio::test]
    async fn a_network_still_in_use_is_kept_and_a_vanished_container_counts_as_gone() {
        let fake = FakeDocker::default();
        fake.add_image("busybox");
        fake.create_network(&NetworkSpec { name: "shop-back".into(), internal: false, labels: labels("uid-shop") })
            .await
            .unwrap();
        // A container of a live owner still uses the orphaned network.
        let mut blog = labels("uid-blog");
        blog.insert(LABEL_OWNER_NAME.into(), "blog".into());
        fake.create_container(&ContainerSpec {
            name: "blog-web-0".into(),
            image: "busybox".into(),
            labels: blog,
            networks: vec![NetworkJoin { network: "shop-back".into(), aliases: vec![] }],
            ..Default::default()
        })
        .await
        .unwrap();
        fake.create_container(&ContainerSpec {
            name: "shop-web-0".into(),
            image: "busybox".into(),
            labels: labels("uid-shop"),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut plan = plan_for(&fake).await;
        fake.remove_by_hand("shop-web-0");
        execute(&mut plan, &fake).await;
        let by_name: BTreeMap<&str, &Disposition> =
            plan.orphans.iter().map(|o| (o.name.as_str(), &o.disposition)).collect();
        assert_eq!(by_name["shop-web-0"], &Disposition::AlreadyGone);
        assert!(matches!(by_name["shop-back"], Disposition::InUse(m) if m.contains("active endpoints")), "{by_name:?}");
        assert!(fake.network_names().contains("shop-back"));
        assert_eq!(plan.to_scan(None).removed, 0);
    }
}
