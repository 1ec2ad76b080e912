//! The Lease lifecycle as an explicit state machine: [`transition`] says, for a phase and an
//! event, which phase follows, or refuses the event. The reconcile loop never sets a phase any
//! other way, so the phases a Lease can go through are exactly the rows of the table tested
//! below.
//!
//! ```text
//!            Placed            Verified
//! Pending ─────────► Provisioning ─────────► Ready ◄──────────────┐
//!                        │  ProvisionFailed    │ ContainerDied     │ FalseAlarm
//!                        ▼                     ▼                   │
//!                      Failed ◄─── Diagnosed ─ Failing ────────────┘
//!   Ready/Failed ── UpdateRequested ──► Updating ── Verified | RolledBack ──► Ready
//!   Ready/Failed ── RestartRequested ─► Restarting ── Verified ──► Ready
//!   Updating/Restarting ── Failed ──► Failed
//!   any live phase ── CloseRequested ──► Deprovisioning ── Deprovisioned ──► Closed | Retained
//!   Retained ── Reaped ──► Closed
//! ```

use berth_crds::lease::LeasePhase;

/// What happened to a Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseEvent {
    /// The API admitted it; the controller sees it for the first time.
    Admitted,
    /// A host with room was found.
    Placed,
    /// Every instance passed its startup check.
    Verified,
    /// Provisioning failed for good (a container did not pass its startup check).
    ProvisionFailed,
    /// A container of a Ready Lease stopped running.
    ContainerDied,
    /// Inspection found the container running after all.
    FalseAlarm,
    /// Diagnostics of the failure were gathered.
    Diagnosed,
    /// The spec changed: roll out a new release.
    UpdateRequested,
    /// The restart annotation changed.
    RestartRequested,
    /// An update failed verification and the previous release runs again.
    RolledBack,
    /// An update or restart failed and nothing could be put back.
    Failed,
    /// `closed: true`, expiry, or deletion.
    CloseRequested,
    /// Containers removed; volumes removed.
    Deprovisioned,
    /// Containers removed; volumes kept under retained names.
    DeprovisionedRetained,
    /// The retained volumes' grace period ended and they were removed.
    Reaped,
}

/// An event the current phase does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a Lease in phase {from} cannot take event {event:?}")]
pub struct Refused {
    /// The phase (`(none)` before the first one).
    pub from: String,
    /// The event.
    pub event: LeaseEvent,
}

/// Phases that hold resources on a host or may still do so.
pub fn is_live(phase: Option<LeasePhase>) -> bool {
    !matches!(phase, Some(LeasePhase::Closed | LeasePhase::Retained))
}

/// The phase that follows `from` on `event`, or why not.
pub fn transition(from: Option<LeasePhase>, event: LeaseEvent) -> Result<LeasePhase, Refused> {
    use LeaseEvent as E;
    use LeasePhase as P;
    let next = match (from, event) {
        (None, E::Admitted) => Some(P::Pending),
        (Some(P::Pending), E::Placed) => Some(P::Provisioning),
        (Some(P::Provisioning | P::Updating | P::Restarting), E::Verified) => Some(P::Ready),
        (Some(P::Provisioning), E::ProvisionFailed) => Some(P::Failed),
        (Some(P::Ready), E::ContainerDied) => Some(P::Failing),
        (Some(P::Failing), E::FalseAlarm) => Some(P::Ready),
        (Some(P::Failing), E::Diagnosed) => Some(P::Failed),
        (Some(P::Ready | P::Failed), E::UpdateRequested) => Some(P::Updating),
        (Some(P::Ready | P::Failed), E::RestartRequested) => Some(P::Restarting),
        (Some(P::Updating), E::RolledBack) => Some(P::Ready),
        (Some(P::Updating | P::Restarting), E::Failed) => Some(P::Failed),
        (
            Some(P::Pending | P::Provisioning | P::Ready | P::Failing | P::Failed | P::Updating | P::Restarting),
            E::CloseRequested,
        ) => Some(P::Deprovisioning),
        // A Lease the controller never saw may be closed (or deleted) before its first reconcile.
        (None, E::CloseRequested) => Some(P::Deprovisioning),
        (Some(P::Deprovisioning), E::Deprovisioned) => Some(P::Closed),
        (Some(P::Deprovisioning), E::DeprovisionedRetained) => Some(P::Retained),
        (Some(P::Retained), E::Reaped) => Some(P::Closed),
        _ => None,
    };
    next.ok_or_else(|| Refused { from: from.map(|p| p.as_str().to_string()).unwrap_or("(none)".into()), event })
}

/// Whether a callback is sent when a Lease enters `phase` (at most one per Lease and phase).
pub fn reports(phase: LeasePhase) -> bool {
    matches!(phase, LeasePhase::Ready | LeasePhase::Failed | LeasePhase::Closed | LeasePhase::Retained)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: [Option<LeasePhase>; 11] = [
        None,
        Some(LeasePhase::Pending),
        Some(LeasePhase::Provisioning),
        Some(LeasePhase::Ready),
        Some(LeasePhase::Failing),
        Some(LeasePhase::Failed),
        Some(LeasePhase::Updating),
        Some(LeasePhase::Restarting),
        Some(LeasePhase::Deprovisioning),
        Some(LeasePhase::Closed),
        Some(LeasePhase::Retained),
    ];

    const EVENTS: [LeaseEvent; 15] = [
        LeaseEvent::Admitted,
        LeaseEvent::Placed,
        LeaseEvent::Verified,
        LeaseEvent::ProvisionFailed,
        LeaseEvent::ContainerDied,
        LeaseEvent::FalseAlarm,
        LeaseEvent::Diagnosed,
        LeaseEvent::UpdateRequested,
        LeaseEvent::RestartRequested,
        LeaseEvent::RolledBack,
        LeaseEvent::Failed,
        LeaseEvent::CloseRequested,
        LeaseEvent::Deprovisioned,
        LeaseEvent::DeprovisionedRetained,
        LeaseEvent::Reaped,
    ];

    /// Every allowed transition. Any (phase, event) pair not listed must be refused.
    fn allowed() -> Vec<(Option<LeasePhase>, LeaseEvent, LeasePhase)> {
        use LeaseEvent as E;
        use LeasePhase as P;
        let mut rows = vec![
            (None, E::Admitted, P::Pending),
            (None, E::CloseRequested, P::Deprovisioning),
            (Some(P::Pending), E::Placed, P::Provisioning),
            (Some(P::Provisioning), E::Verified, P::Ready),
            (Some(P::Provisioning), E::ProvisionFailed, P::Failed),
            (Some(P::Ready), E::ContainerDied, P::Failing),
            (Some(P::Failing), E::FalseAlarm, P::Ready),
            (Some(P::Failing), E::Diagnosed, P::Failed),
            (Some(P::Ready), E::UpdateRequested, P::Updating),
            (Some(P::Failed), E::UpdateRequested, P::Updating),
            (Some(P::Ready), E::RestartRequested, P::Restarting),
            (Some(P::Failed), E::RestartRequested, P::Restarting),
            (Some(P::Updating), E::Verified, P::Ready),
            (Some(P::Updating), E::RolledBack, P::Ready),
            (Some(P::Updating), E::Failed, P::Failed),
            (Some(P::Restarting), E::Verified, P::Ready),
            (Some(P::Restarting), E::Failed, P::Failed),
            (Some(P::Deprovisioning), E::Deprovisioned, P::Closed),
            (Some(P::Deprovisioning), E::DeprovisionedRetained, P::Retained),
            (Some(P::Retained), E::Reaped, P::Closed),
        ];
        for p in [P::Pending, P::Provisioning, P::Ready, P::Failing, P::Failed, P::Updating, P::Restarting] {
            rows.push((Some(p), E::CloseRequested, P::Deprovisioning));
        }
        rows
    }

    #[test]
    fn every_allowed_transition_and_no_other() {
        let allowed = allowed();
        for from in PHASES {
            for event in EVENTS {
                let expected = allowed.iter().find(|(f, e, _)| *f == from && *e == event).map(|(_, _, to)| *to);
                match (transition(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} --{event:?}-->"),
                    (Err(_), None) => {}
                    (got, want) => panic!("{from:?} --{event:?}--> gave {got:?}, the table says {want:?}"),
                }
            }
        }
    }

    #[test]
    fn terminal_phases_accept_nothing_but_reaping_of_retained_volumes() {
        for event in EVENTS {
            assert!(transition(Some(LeasePhase::Closed), event).is_err(), "Closed took {event:?}");
            let retained = transition(Some(LeasePhase::Retained), event);
            assert_eq!(retained.is_ok(), event == LeaseEvent::Reaped, "Retained and {event:?}");
        }
    }

    #[test]
    fn a_rolled_back_update_never_counts_as_a_plain_success_event() {
        // RolledBack is its own event: the reconcile records the RolledBack condition with it.
        assert_ne!(LeaseEvent::RolledBack, LeaseEvent::Verified);
        assert_eq!(transition(Some(LeasePhase::Updating), LeaseEvent::RolledBack), Ok(LeasePhase::Ready));
        assert!(transition(Some(LeasePhase::Restarting), LeaseEvent::RolledBack).is_err());
    }

    #[test]
    fn refusals_say_what_was_refused() {
        let e = transition(Some(LeasePhase::Closed), LeaseEvent::Placed).unwrap_err();
        assert_eq!(e.to_string(), "a Lease in phase Closed cannot take event Placed");
        let e = transition(None, LeaseEvent::Verified).unwrap_err();
        assert!(e.to_string().contains("(none)"));
    }

    #[test]
    fn callbacks_report_ends_of_operations_only() {
        let reported: Vec<_> = PHASES.iter().flatten().copied().filter(|p| reports(*p)).collect();
        assert_eq!(reported, [LeasePhase::Ready, LeasePhase::Failed, LeasePhase::Closed, LeasePhase::Retained]);
    }
}
