//! Which Docker events concern an owner, and the [`OwnerEvent`] the Stack and Lease controllers
//! receive for them. Pure: the connection task ([`super::link`]) feeds every event of this
//! instance through [`owner_event`] and publishes what comes out.

use berth_crds::common::{LABEL_OWNER_KIND, LABEL_OWNER_NAME, LABEL_OWNER_NAMESPACE};

use crate::controllers::pool::OwnerEvent;
use crate::docker::DockerEvent;

/// Actions after which the owner must look at its objects at once (a container died, was
/// removed, turned unhealthy, …). `health_status` arrives as `health_status: unhealthy`.
pub const TRIGGER_ACTIONS: [&str; 8] = ["create", "start", "die", "stop", "kill", "oom", "destroy", "health_status"];

/// Whether an event's action is one the owner must react to.
pub fn is_trigger(action: &str) -> bool {
    // Docker appends details to some actions (`health_status: healthy`, `exec_start: sh`).
    let base = action.split(':').next().unwrap_or(action).trim();
    TRIGGER_ACTIONS.contains(&base)
}

/// The owner event for a Docker event on `host`, when the event is a trigger and the object's
/// labels name its owner.
pub fn owner_event(host: &str, event: &DockerEvent) -> Option<OwnerEvent> {
    if !is_trigger(&event.action) {
        return None;
    }
    let get = |k: &str| event.attributes.get(k).filter(|v| !v.is_empty()).cloned();
    Some(OwnerEvent {
        host: host.to_string(),
        owner_kind: get(LABEL_OWNER_KIND)?,
        namespace: get(LABEL_OWNER_NAMESPACE)?,
        name: get(LABEL_OWNER_NAME)?,
        event: event.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn event(action: &str, owner: bool) -> DockerEvent {
        let mut attributes = BTreeMap::from([("name".to_string(), "shop-web-0".to_string())]);
        if owner {
            attributes.insert(LABEL_OWNER_KIND.into(), "Stack".into());
            attributes.insert(LABEL_OWNER_NAMESPACE.into(), "default".into());
            attributes.insert(LABEL_OWNER_NAME.into(), "shop".into());
        }
        DockerEvent { kind: "container".into(), action: action.into(), id: "c1".into(), attributes, time_nanos: 1 }
    }

    #[test]
    fn trigger_actions_of_owned_objects_become_owner_events() {
        let cases = [
            ("die", true),
            ("destroy", true),
            ("stop", true),
            ("kill", true),
            ("oom", true),
            ("start", true),
            ("create", true),
            ("health_status: unhealthy", true),
            ("health_status: healthy", true),
            ("exec_start: sh -c true", false),
            ("exec_die", false),
            ("attach", false),
            ("rename", false),
            ("pause", false),
        ];
        for (action, published) in cases {
            let got = owner_event("edge-1", &event(action, true));
            assert_eq!(got.is_some(), published, "{action}");
            if let Some(e) = got {
                assert_eq!(
                    (e.host.as_str(), e.owner_kind.as_str(), e.namespace.as_str(), e.name.as_str()),
                    ("edge-1", "Stack", "default", "shop")
                );
                assert_eq!(e.event.action, action);
            }
        }
    }

    #[test]
    fn events_of_objects_without_owner_labels_are_not_published() {
        assert_eq!(owner_event("edge-1", &event("die", false)), None);
    }
}
