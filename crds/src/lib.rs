//! berth's API: the wire types of group `berth.dev`, version `v1alpha1`.
//!
//! This crate owns the shapes that users write in YAML and that the controllers write back as
//! status: [`Stack`], [`Lease`] and [`Host`], the types they share ([`common`]), and the semantic
//! validation that goes beyond what a structural schema can say ([`validation`]), and the JSON
//! documents the API serves beside the objects: plans ([`plan`]) and container logs ([`logs`]).
//!
//! Architecture invariant: this crate does no I/O. It is shared by the API server (admission,
//! OpenAPI), the controllers, the CLI and the CRD generator, and none of them should have to pull
//! in a runtime to read a Stack.

// kube's `CustomResource` derive repeats `type_ = …` once per `printcolumn(…)`; clippy's
// duplicated_attributes lint mistakes those for duplicates of one attribute.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod duration;
pub mod host;
pub mod image;
pub mod lease;
pub mod logs;
pub mod plan;
pub mod stack;
pub mod validation;

pub use common::*;
pub use host::{Host, HostSpec, HostStatus};
pub use lease::{Lease, LeasePhase, LeaseSpec, LeaseStatus};
pub use stack::{Stack, StackPhase, StackSpec, StackStatus};

/// The API group of every berth kind.
pub const GROUP: &str = "berth.dev";
/// The only served (and storage) version.
pub const VERSION: &str = "v1alpha1";
/// `group/version`, as it appears in `apiVersion`.
pub const API_VERSION: &str = "berth.dev/v1alpha1";

/// Every CustomResourceDefinition berth serves, in the order their YAML files are written.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![Host::crd(), Stack::crd(), Lease::crd()]
}
