//! A [`DockerApi`] wrapper that counts every call to a host in the `berth_docker_api_calls`
//! metric (label `host`), and the container listings among them in `berth_docker_listings`
//! (each one a shared snapshot of the host: their rate shows that a pass costs one listing per
//! host, not one per Stack). The Host controller wraps each connection it puts in the pool, so the
//! Stack and Lease controllers' calls are counted too without knowing about it.

use std::sync::Arc;

use futures::stream::BoxStream;
use prometheus_client::metrics::counter::Counter;

use crate::docker::{
    ContainerDetails, ContainerSpec, ContainerSummary, DaemonFacts, DockerApi, DockerEvent, DockerResult, ImageInfo,
    LabelFilter, LogLine, LogOptions, NetworkSpec, NetworkSummary, ProgressFn, VolumeSpec, VolumeSummary,
};
use crate::metrics::{HostLabels, Metrics};

/// A connection whose calls are counted.
pub struct Metered {
    inner: Arc<dyn DockerApi>,
    calls: Counter,
    listings: Counter,
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered").field("endpoint", &self.inner.endpoint()).finish()
    }
}

impl Metered {
    /// Wraps `inner`, counting its calls under `host`.
    pub fn new(inner: Arc<dyn DockerApi>, metrics: &Metrics, host: &str) -> Self {
        let labels = HostLabels { host: host.to_string() };
        let calls = metrics.docker_calls.get_or_create(&labels).clone();
        let listings = metrics.docker_listings.get_or_create(&labels).clone();
        Self { inner, calls, listings }
    }

    fn count(&self) -> &dyn DockerApi {
        self.calls.inc();
        &*self.inner
    }
}

#[async_trait::async_trait]
impl DockerApi for Metered {
    fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }
    async fn ping(&self) -> DockerResult<()> {
        self.count().ping().await
    }
    async fn info(&self) -> DockerResult<DaemonFacts> {
        self.count().info().await
    }
    async fn list_containers(&self, labels: &LabelFilter) -> DockerResult<Vec<ContainerSummary>> {
        self.listings.inc();
        self.count().list_containers(labels).await
    }
    async fn inspect_container(&self, id: &str) -> DockerResult<ContainerDetails> {
        self.count().inspect_container(id).await
    }
    async fn create_container(&self, spec: &ContainerSpec) -> DockerResult<String> {
        self.count().create_container(spec).await
    }
    async fn start_container(&self, id: &str) -> DockerResult<()> {
        self.count().start_container(id).await
    }
    async fn stop_container(&self, id: &str, timeout_seconds: Option<i64>) -> DockerResult<()> {
        self.count().stop_container(id, timeout_seconds).await
    }
    async fn restart_container(&self, id: &str, timeout_seconds: Option<i64>) -> DockerResult<()> {
        self.count().restart_container(id, timeout_seconds).await
    }
    async fn kill_container(&self, id: &str, signal: Option<&str>) -> DockerResult<()> {
        self.count().kill_container(id, signal).await
    }
    async fn remove_container(&self, id: &str, force: bool) -> DockerResult<()> {
        self.count().remove_container(id, force).await
    }
    async fn rename_container(&self, id: &str, new_name: &str) -> DockerResult<()> {
        self.count().rename_container(id, new_name).await
    }
    async fn list_networks(&self, labels: &LabelFilter) -> DockerResult<Vec<NetworkSummary>> {
        self.count().list_networks(labels).await
    }
    async fn create_network(&self, spec: &NetworkSpec) -> DockerResult<String> {
        self.count().create_network(spec).await
    }
    async fn remove_network(&self, id: &str) -> DockerResult<()> {
        self.count().remove_network(id).await
    }
    async fn connect_network(&self, network: &str, container: &str, aliases: &[String]) -> DockerResult<()> {
        self.count().connect_network(network, container, aliases).await
    }
    async fn disconnect_network(&self, network: &str, container: &str) -> DockerResult<()> {
        self.count().disconnect_network(network, container).await
    }
    async fn list_volumes(&self, labels: &LabelFilter) -> DockerResult<Vec<VolumeSummary>> {
        self.count().list_volumes(labels).await
    }
    async fn create_volume(&self, spec: &VolumeSpec) -> DockerResult<()> {
        self.count().create_volume(spec).await
    }
    async fn remove_volume(&self, name: &str) -> DockerResult<()> {
        self.count().remove_volume(name).await
    }
    async fn inspect_image(&self, reference: &str) -> DockerResult<Option<ImageInfo>> {
        self.count().inspect_image(reference).await
    }
    async fn pull_image(&self, reference: &str, progress: ProgressFn<'_>) -> DockerResult<()> {
        self.count().pull_image(reference, progress).await
    }
    async fn download_archive(&self, container: &str, path: &str) -> DockerResult<bytes::Bytes> {
        self.count().download_archive(container, path).await
    }
    async fn upload_archive(&self, container: &str, path: &str, tar: bytes::Bytes) -> DockerResult<()> {
        self.count().upload_archive(container, path, tar).await
    }
    fn events(&self, labels: &LabelFilter) -> BoxStream<'static, DockerResult<DockerEvent>> {
        self.count().events(labels)
    }
    fn logs(&self, id: &str, options: &LogOptions) -> BoxStream<'static, DockerResult<LogLine>> {
        self.count().logs(id, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::fake::FakeDocker;

    #[tokio::test]
    async fn every_call_is_counted_under_its_host() {
        let metrics = Metrics::new();
        let fake = FakeDocker::default();
        let d = Metered::new(Arc::new(fake.clone()), &metrics, "edge-1");
        d.ping().await.unwrap();
        d.list_containers(&vec![]).await.unwrap();
        let _ = d.inspect_container("missing").await;
        assert_eq!(fake.calls("ping") + fake.calls("list_containers") + fake.calls("inspect_container"), 3);
        let text = metrics.render();
        assert!(text.contains("berth_docker_api_calls_total{host=\"edge-1\"} 3"), "{text}");
        assert!(text.contains("berth_docker_listings_total{host=\"edge-1\"} 1"), "{text}");
    }
}
