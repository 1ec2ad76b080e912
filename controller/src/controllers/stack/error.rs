//! Why a Stack could not be converged, and what kind of failure it is.
//!
//! Every failure is classified: permanent ones ([`StackError::is_permanent`]: the spec cannot be
//! applied as written, or berth must not go on by itself) set `Stalled=True`, an event, and wait
//! for a change; transient ones (a daemon that does not answer, a pull that failed, a port in use,
//! a timeout) are retried with exponential backoff shown in `status.retry`. Messages are what a
//! person reads in status and events: they say what happened and what to do, and they never
//! contain a secret value (callers scrub Docker's text with [`super::render::redact`]).

use super::render::RenderError;
use crate::docker::DockerError;

/// A failure of the Stack controller.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The Stack cannot be rendered (missing Secret or ConfigMap, hostPath refused, …).
    #[error("{0}")]
    Render(#[from] RenderError),
    /// The host selector of the Stack is not a valid label selector.
    #[error("spec.hosts.selector is not a valid label selector: {message}; fix the selector")]
    InvalidSelector {
        /// What is wrong.
        message: String,
    },
    /// The host cannot be reached; nothing is changed there until it answers again.
    #[error("host {host} is unreachable: {message}")]
    HostUnreachable {
        /// Host.
        host: String,
        /// Why.
        message: String,
    },
    /// A Docker call failed.
    #[error("host {host}: {operation} failed: {message}")]
    Docker {
        /// Host.
        host: String,
        /// What berth was doing, e.g. `creating container shop-web-0`.
        operation: String,
        /// Docker's error, scrubbed of secret values.
        message: String,
        /// Whether retrying can help.
        transient: bool,
    },
    /// A container or network berth wants to create has a name that something berth does not
    /// own already uses. berth never removes it.
    #[error(
        "host {host}: the name {name} is taken by a {what} berth does not own ({holder}); berth never removes it: \
         rename or remove it yourself, or rename the Stack"
    )]
    NameConflict {
        /// Host.
        host: String,
        /// The name.
        name: String,
        /// `container` or `network`.
        what: &'static str,
        /// Who holds it, e.g. `no berth labels` or `owned by Stack prod/shop`.
        holder: String,
    },
    /// The image is not on the host and `pullPolicy: Never` forbids pulling it.
    #[error(
        "host {host}: image {image} is not on the host and pullPolicy is Never; load it there (docker load) or \
         change pullPolicy"
    )]
    ImageMissing {
        /// Host.
        host: String,
        /// Reference.
        image: String,
    },
    /// The image could not be pulled.
    #[error(
        "host {host}: pulling image {image} failed: {message}; check the reference, the registry and its credentials"
    )]
    PullFailed {
        /// Host.
        host: String,
        /// Reference.
        image: String,
        /// Docker's message.
        message: String,
    },
    /// A new container did not become ready in time.
    #[error(
        "host {host}: container {container} of service {service} did not become {condition} within {waited_secs}s \
         ({detail}); fix the service or raise rollout.healthTimeoutSeconds"
    )]
    NotReady {
        /// Host.
        host: String,
        /// Service.
        service: String,
        /// Container.
        container: String,
        /// `healthy` or `running`.
        condition: &'static str,
        /// How long berth waited, in seconds.
        waited_secs: u64,
        /// What the container was doing when berth gave up, and its last log lines.
        detail: String,
    },
    /// A dependency did not reach its condition in time, so the dependent service was not started.
    #[error(
        "host {host}: service {service} waits for {dependency} to be {condition}, which it was not within \
         {waited_secs}s ({detail})"
    )]
    DependencyNotReady {
        /// Host.
        host: String,
        /// The waiting service.
        service: String,
        /// The service waited for.
        dependency: String,
        /// `Started` or `Healthy`.
        condition: &'static str,
        /// How long berth waited, in seconds.
        waited_secs: u64,
        /// What the dependency was doing, and its last log lines.
        detail: String,
    },
    /// A replacement did not become ready and the previous configuration was put back.
    #[error(
        "host {host}: the new configuration of service {service} was rolled back: {cause}; the previous \
         configuration runs again. Fix the spec (berth does not retry this configuration)"
    )]
    RolledBack {
        /// Host.
        host: String,
        /// Service.
        service: String,
        /// Why the new container was not accepted.
        cause: String,
    },
    /// Putting the previous configuration back failed too.
    #[error("host {host}: rolling back service {service} failed: {message}")]
    RollbackFailed {
        /// Host.
        host: String,
        /// Service.
        service: String,
        /// What went wrong.
        message: String,
    },
    /// Removing the Stack from a host is not possible now; the finalizer stays.
    #[error("removing the Stack from host {host} is blocked: {message}")]
    DeletionBlocked {
        /// Host.
        host: String,
        /// Why.
        message: String,
    },
    /// The API (the Stack's status, its finalizer, a referenced object) could not be read or written.
    #[error("{operation} failed: {source}")]
    Kube {
        /// What berth was doing.
        operation: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The finalizer helper failed.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<StackError>>),
}

impl StackError {
    /// Whether retrying cannot help until someone changes something (the spec, a referenced
    /// object, or something by hand on the host).
    pub fn is_permanent(&self) -> bool {
        match self {
            StackError::Render(_)
            | StackError::InvalidSelector { .. }
            | StackError::NameConflict { .. }
            | StackError::RolledBack { .. } => true,
            StackError::Docker { transient, .. } => !transient,
            StackError::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.is_permanent()
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether the failure is a host that does not answer.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StackError::HostUnreachable { .. })
    }

    /// The CamelCase reason used in conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            StackError::Render(RenderError::MissingReference { .. }) => "MissingReference",
            StackError::Render(RenderError::HostPathNotAllowed { .. }) => "HostPathNotAllowed",
            StackError::Render(RenderError::NotText { .. }) => "InvalidReference",
            StackError::InvalidSelector { .. } => "InvalidSelector",
            StackError::HostUnreachable { .. } => "HostUnreachable",
            StackError::Docker { .. } => "DockerError",
            StackError::NameConflict { .. } => "NameConflict",
            StackError::ImageMissing { .. } => "ImageMissing",
            StackError::PullFailed { .. } => "PullFailed",
            StackError::NotReady { .. } => "NotReady",
            StackError::DependencyNotReady { .. } => "DependencyNotReady",
            StackError::RolledBack { .. } => "RolledBack",
            StackError::RollbackFailed { .. } => "RollbackFailed",
            StackError::DeletionBlocked { .. } => "DeletionBlocked",
            StackError::Kube { .. } => "ApiError",
            StackError::Finalizer(_) => "FinalizerFailed",
        }
    }

    /// A Docker failure on `host` while doing `operation`, scrubbed of `secrets`.
    pub fn docker(host: &str, operation: impl Into<String>, err: &DockerError, secrets: &[String]) -> Self {
        if err.is_unreachable() {
            return StackError::HostUnreachable {
                host: host.to_string(),
                message: super::render::redact(&err.to_string(), secrets),
            };
        }
        StackError::Docker {
            host: host.to_string(),
            operation: operation.into(),
            message: super::render::redact(&err.to_string(), secrets),
            // An object missing while berth acts means the host changed after the pass looked
            // (removed by hand, or by a concurrent pass): the next pass looks again.
            transient: err.is_transient() || err.is_not_found(),
        }
    }
}
