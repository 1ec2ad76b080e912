//! berth: a Kubernetes-style control plane for plain Docker hosts.
//!
//! One binary holds the API server ([`apiserver`]) over an embedded object store ([`store`]), the
//! reconcile loops ([`controllers`]) that converge Docker hosts through [`docker`], and the
//! kubectl-style command line ([`cli`]). See ARCHITECTURE.md for the code map and invariants.

pub mod apiserver;
pub mod cli;
pub mod config;
pub mod controllers;
pub mod docker;
pub mod metrics;
pub mod policy;
pub mod store;
