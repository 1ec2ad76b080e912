//! The reconcile loops: Hosts (connections, daemon facts, events, orphan scans), Stacks and
//! Leases. They reach the API only through `kube::Client` and Docker only through
//! [`crate::docker`].

pub mod stack;
