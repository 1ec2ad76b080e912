//! The reconcile loops: Hosts (connections, daemon facts, events, orphan scans), Stacks and
//! Leases. They reach the API only through `kube::Client` and Docker only through
//! [`crate::docker`]; the [`pool`] holds one connection per host and the shared per-host
//! observation; [`views`] answers the API's `plan` and `log` subresources.

pub mod context;
pub mod host;
pub mod lease;
pub mod pool;
pub mod recorder;
pub mod stack;
pub mod views;
