//! What every controller shares: the API client, the operator configuration, this
//! installation's identity, the host pool and the Docker connector.

use std::sync::Arc;

use crate::config::OperatorConfig;
use crate::controllers::pool::HostPool;
use crate::docker::Connector;
use crate::metrics::Metrics;

/// Name of this berth installation when none is configured (label `berth.dev/instance`).
pub const DEFAULT_INSTANCE: &str = "default";

/// Shared state of the controllers.
pub struct Context {
    /// The API, in-process (`Client::new(router, "default")`) or a real cluster's.
    pub client: kube::Client,
    /// Operator configuration.
    pub config: Arc<OperatorConfig>,
    /// This installation's instance name: objects labelled with another instance are never
    /// touched. It does not live in the store, so a wiped store keeps it (and the orphan gates
    /// see the old objects as this instance's and block).
    pub instance: String,
    /// Key of the secret-value HMAC in config hashes (kept in the data dir).
    pub hash_key: Vec<u8>,
    /// Connections and shared observations.
    pub pool: Arc<HostPool>,
    /// Makes connections to Host endpoints.
    pub connector: Arc<dyn Connector>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("instance", &self.instance).finish()
    }
}
