//! An in-memory Docker daemon behind [`DockerApi`], for unit and component tests of the
//! controllers. It keeps containers, networks, volumes and images in memory, emits events like
//! Docker does, counts every call (so tests can assert "one listing per host per pass"), and lets
//! a test play the operator or the failure: kill a container, mark it unhealthy, remove it by
//! hand, make the daemon unreachable, make a pull fail or hang.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::{
    Connector, ContainerDetails, ContainerSpec, ContainerState, ContainerSummary, DaemonFacts, DockerApi, DockerError,
    DockerEvent, DockerResult, HealthState, ImageInfo, LabelFilter, LogLine, LogOptions, LogStream, NetworkJoin,
    NetworkSpec, NetworkSummary, ProgressFn, PublishedPort, PullProgress, TlsFiles, VolumeSpec, VolumeSummary,
};

/// A container of the fake daemon.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// Id.
    pub id: String,
    /// The spec it was created from.
    pub spec: ContainerSpec,
    /// State.
    pub state: ContainerState,
    /// Health (containers with a health check start `Starting` and turn `Healthy` on start
    /// unless [`FakeDocker::set_auto_healthy`] is off).
    pub health: Option<HealthState>,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// OOM-killed.
    pub oom_killed: bool,
    /// Image id.
    pub image_id: String,
    /// Creation time (Unix seconds).
    pub created: i64,
    /// Networks joined.
    pub networks: Vec<NetworkJoin>,
    /// Published ports (random host ports assigned on start).
    pub ports: Vec<PublishedPort>,
    /// Restarts.
    pub restart_count: i64,
    /// Log lines.
    pub logs: Vec<LogLine>,
    /// Files uploaded with `upload_archive`, by path.
    pub archives: BTreeMap<String, bytes::Bytes>,
}

#[derive(Debug, Default)]
struct State {
    containers: BTreeMap<String, FakeContainer>,
    networks: BTreeMap<String, NetworkSummary>,
    volumes: BTreeMap<String, VolumeSummary>,
    /// Files in volumes (volume → path relative to the volume → content), written and read
    /// through the archive calls of containers that mount the volume.
    volume_files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    images: BTreeMap<String, ImageInfo>,
    pullable: BTreeMap<String, ImageInfo>,
    unreachable: bool,
    pull_hangs: bool,
    auto_healthy: bool,
    failures: BTreeMap<String, Vec<DockerError>>,
    calls: BTreeMap<String, u64>,
    call_log: Vec<String>,
    next_port: u16,
}

/// The fake daemon. Cheap to clone (shared state).
#[derive(Clone)]
pub struct FakeDocker {
    endpoint: String,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<DockerEvent>,
    ids: Arc<AtomicU64>,
}

impl std::fmt::Debug for FakeDocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDocker").field("endpoint", &self.endpoint).finish()
    }
}

impl Default for FakeDocker {
    fn default() -> Self {
        Self::new("fake:///local")
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The volume a container mounts exactly at `path`.
fn volume_at(c: &FakeContainer, path: &str) -> Option<String> {
    c.spec.mounts.iter().find_map(|m| match m {
        super::Mount::Volume { name, target, .. } if target.trim_end_matches('/') == path.trim_end_matches('/') => {
            Some(name.clone())
        }
        _ => None,
    })
}

fn tar_of_files(base: &str, files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    let _ = b.append_data(&mut dir, format!("{base}/"), &[][..]);
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        let _ = b.append_data(&mut h, format!("{base}/{path}"), content.as_slice());
    }
    b.into_inner().unwrap_or_default()
}

fn files_of_tar(tar: &[u8]) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    use std::io::Read;
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(tar);
    for e in a.entries()? {
        let mut e = e?;
        if e.header().entry_type().is_file() {
            let path = e.path()?.display().to_string();
            let mut content = Vec::new();
            e.read_to_end(&mut content)?;
            out.insert(path, content);
        }
    }
    Ok(out)
}

fn matches(labels: &BTreeMap<String, String>, filter: &LabelFilter) -> bool {
    filter.iter().all(|(k, v)| match labels.get(k) {
        Some(actual) => v.is_empty() || actual == v,
        None => false,
    })
}

impl FakeDocker {
    /// An empty daemon answering at `endpoint`.
    pub fn new(endpoint: &str) -> Self {
        let (events, _) = broadcast::channel(4096);
        let state = State { auto_healthy: true, next_port: 32768, ..Default::default() };
        Self {
            endpoint: endpoint.to_string(),
            state: Arc::new(Mutex::new(state)),
            events,
            ids: Arc::new(AtomicU64::new(1)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> String {
        format!("{:064x}", self.ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Puts an image on the daemon (as `docker load` would).
    pub fn add_image(&self, reference: &str) -> String {
        let id = format!("sha256:{}", self.new_id());
        self.lock()
            .images
            .insert(reference.to_string(), ImageInfo { id: id.clone(), repo_digests: vec![], has_healthcheck: false });
        id
    }

    /// Makes `reference` pullable (pulls of other references fail like an unreachable registry).
    pub fn add_pullable(&self, reference: &str) {
        let id = format!("sha256:{}", self.new_id());
        self.lock()
            .pullable
            .insert(reference.to_string(), ImageInfo { id, repo_digests: vec![], has_healthcheck: false });
    }

    /// Makes every call fail with [`DockerError::Unreachable`] (and ends event streams).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
        if unreachable {
            // Receivers see the channel lag; streams check `unreachable` and end.
            let _ = self.events.send(DockerEvent {
                kind: "daemon".into(),
                action: "disconnect".into(),
                id: String::new(),
                attributes: BTreeMap::new(),
                time_nanos: 0,
            });
        }
    }

    /// Makes pulls hang until the daemon is dropped or the caller gives up (a cancelled future).
    pub fn set_pull_hangs(&self, hangs: bool) {
        self.lock().pull_hangs = hangs;
    }

    /// Whether containers with a health check turn healthy as soon as they start (default true).
    pub fn set_auto_healthy(&self, auto: bool) {
        self.lock().auto_healthy = auto;
    }

    /// Makes the next call of `operation` (the trait method's name, e.g. `create_container`) fail.
    pub fn fail_next(&self, operation: &str, error: DockerError) {
        self.lock().failures.entry(operation.to_string()).or_default().push(error);
    }

    /// How many times `operation` was called.
    pub fn calls(&self, operation: &str) -> u64 {
        self.lock().calls.get(operation).copied().unwrap_or(0)
    }

    /// Every call so far, as `operation target` strings, in order.
    pub fn call_log(&self) -> Vec<String> {
        self.lock().call_log.clone()
    }

    /// Forgets the call counters and log.
    pub fn reset_calls(&self) {
        let mut s = self.lock();
        s.calls.clear();
        s.call_log.clear();
    }

    /// A snapshot of every container, by name.
    pub fn containers(&self) -> BTreeMap<String, FakeContainer> {
        self.lock().containers.values().map(|c| (c.spec.name.clone(), c.clone())).collect()
    }

    /// A container by name.
    pub fn container(&self, name: &str) -> Option<FakeContainer> {
        self.lock().containers.values().find(|c| c.spec.name == name).cloned()
    }

    /// Names of every network.
    pub fn network_names(&self) -> BTreeSet<String> {
        self.lock().networks.values().map(|n| n.name.clone()).collect()
    }

    /// Names of every volume.
    pub fn volume_names(&self) -> BTreeSet<String> {
        self.lock().volumes.keys().cloned().collect()
    }

    /// Stops a container as `docker kill` would (exit code 137), emitting `kill` and `die`.
    pub fn kill_by_hand(&self, name: &str) {
        self.stop_by_hand(name, 137, false);
    }

    /// Stops a container with an exit code (and OOM flag), emitting `die` (and `oom`).
    pub fn stop_by_hand(&self, name: &str, exit_code: i64, oom: bool) {
        let ev = {
            let mut s = self.lock();
            let Some(c) = s.containers.values_mut().find(|c| c.spec.name == name) else { return };
            c.state = ContainerState::Exited;
            c.exit_code = Some(exit_code);
            c.oom_killed = oom;
            c.health = c.spec.healthcheck.as_ref().map(|_| HealthState::Unhealthy);
            c.ports.clear();
            container_event(c, "die")
        };
        if oom {
            let mut o = ev.clone();
            o.action = "oom".into();
            let _ = self.events.send(o);
        }
        let _ = self.events.send(ev);
    }

    /// Removes a container as `docker rm -f` would, emitting `destroy`.
    pub fn remove_by_hand(&self, name: &str) {
        let ev = {
            let mut s = self.lock();
            let Some(id) = s.containers.values().find(|c| c.spec.name == name).map(|c| c.id.clone()) else { return };
            let c = s.containers.remove(&id).expect("found above");
            container_event(&c, "destroy")
        };
        let _ = self.events.send(ev);
    }

    /// Removes a network by hand.
    pub fn remove_network_by_hand(&self, name: &str) {
        let mut s = self.lock();
        let ids: Vec<String> = s.networks.values().filter(|n| n.name == name).map(|n| n.id.clone()).collect();
        for id in ids {
            s.networks.remove(&id);
        }
        for c in s.containers.values_mut() {
            c.networks.retain(|n| n.network != name);
        }
    }

    /// Sets a running container's health, emitting `health_status: …`.
    pub fn set_health(&self, name: &str, health: HealthState) {
        let ev = {
            let mut s = self.lock();
            let Some(c) = s.containers.values_mut().find(|c| c.spec.name == name) else { return };
            c.health = Some(health);
            container_event(c, &format!("health_status: {}", health.as_str()))
        };
        let _ = self.events.send(ev);
    }

    /// Adds a container created outside berth (any labels), running.
    pub fn add_foreign_container(&self, name: &str, image: &str, labels: BTreeMap<String, String>) -> String {
        let id = self.new_id();
        let c = FakeContainer {
            id: id.clone(),
            spec: ContainerSpec { name: name.into(), image: image.into(), labels, ..Default::default() },
            state: ContainerState::Running,
            health: None,
            exit_code: None,
            oom_killed: false,
            image_id: String::new(),
            created: now_secs(),
            networks: vec![],
            ports: vec![],
            restart_count: 0,
            logs: vec![],
            archives: BTreeMap::new(),
        };
        self.lock().containers.insert(id.clone(), c);
        id
    }

    /// Writes a file into a volume (as a container using it would).
    pub fn write_volume_file(&self, volume: &str, path: &str, content: &str) {
        self.lock()
            .volume_files
            .entry(volume.to_string())
            .or_default()
            .insert(path.to_string(), content.as_bytes().to_vec());
    }

    /// A file of a volume.
    pub fn volume_file(&self, volume: &str, path: &str) -> Option<String> {
        let s = self.lock();
        s.volume_files.get(volume)?.get(path).map(|c| String::from_utf8_lossy(c).into_owned())
    }

    /// Labels of a volume.
    pub fn volume_labels(&self, volume: &str) -> Option<BTreeMap<String, String>> {
        self.lock().volumes.get(volume).map(|v| v.labels.clone())
    }

    /// Sets a container's creation time (to play with age gates).
    pub fn set_created(&self, name: &str, unix_seconds: i64) {
        if let Some(c) = self.lock().containers.values_mut().find(|c| c.spec.name == name) {
            c.created = unix_seconds;
        }
    }

    /// Appends a log line to a container (and to followers).
    pub fn push_log(&self, name: &str, stream: LogStream, text: &str) {
        if let Some(c) = self.lock().containers.values_mut().find(|c| c.spec.name == name) {
            c.logs.push(LogLine { stream, timestamp: None, text: text.to_string() });
        }
    }

    /// Records a call and returns an injected failure or the unreachable error, if any.
    fn enter(&self, operation: &str, target: &str) -> DockerResult<()> {
        let mut s = self.lock();
        *s.calls.entry(operation.to_string()).or_default() += 1;
        s.call_log.push(if target.is_empty() { operation.to_string() } else { format!("{operation} {target}") });
        if s.unreachable {
            return Err(DockerError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: "connection refused (fake)".into(),
            });
        }
        if let Some(list) = s.failures.get_mut(operation)
            && !list.is_empty()
        {
            return Err(list.remove(0));
        }
        Ok(())
    }

    fn find_id(s: &State, id_or_name: &str) -> Option<String> {
        if s.containers.contains_key(id_or_name) {
            return Some(id_or_name.to_string());
        }
        s.containers.values().find(|c| c.spec.name == id_or_name || c.id.starts_with(id_or_name)).map(|c| c.id.clone())
    }

    fn emit(&self, ev: DockerEvent) {
        let _ = self.events.send(ev);
    }
}

fn container_event(c: &FakeContainer, action: &str) -> DockerEvent {
    let mut attributes = c.spec.labels.clone();
    attributes.insert("name".into(), c.spec.name.clone());
    attributes.insert("image".into(), c.spec.image.clone());
    DockerEvent {
        kind: "container".into(),
        action: action.into(),
        id: c.id.clone(),
        attributes,
        time_nanos: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
    }
}

fn summary(c: &FakeContainer) -> ContainerSummary {
    ContainerSummary {
        id: c.id.clone(),
        name: c.spec.name.clone(),
        image: c.spec.image.clone(),
        image_id: c.image_id.clone(),
        labels: c.spec.labels.clone(),
        state: c.state,
        health: if c.state == ContainerState::Running { c.health } else { None },
        created: c.created,
        ports: c.ports.clone(),
    }
}

fn not_found(what: String) -> DockerError {
    DockerError::NotFound { what }
}

#[async_trait::async_trait]
impl DockerApi for FakeDocker {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn ping(&self) -> DockerResult<()> {
        self.enter("ping", "")
    }

    async fn info(&self) -> DockerResult<DaemonFacts> {
        self.enter("info", "")?;
        Ok(DaemonFacts {
            version: "20.10.24-fake".into(),
            api_version: "1.41".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            cpus: 4,
            memory_bytes: 8 * 1024 * 1024 * 1024,
            name: "fake".into(),
        })
    }

    async fn list_containers(&self, labels: &LabelFilter) -> DockerResult<Vec<ContainerSummary>> {
        self.enter("list_containers", "")?;
        let s = self.lock();
        Ok(s.containers.values().filter(|c| matches(&c.spec.labels, labels)).map(summary).collect())
    }

    async fn inspect_container(&self, id: &str) -> DockerResult<ContainerDetails> {
        self.enter("inspect_container", id)?;
        let s = self.lock();
        let c = Self::find_id(&s, id)
            .and_then(|i| s.containers.get(&i))
            .ok_or_else(|| not_found(format!("container {id}")))?;
        Ok(ContainerDetails {
            summary: summary(c),
            exit_code: c.exit_code,
            oom_killed: c.oom_killed,
            error: String::new(),
            restart_count: c.restart_count,
            started_at: None,
            finished_at: None,
            networks: c.networks.clone(),
        })
    }

    async fn create_container(&self, spec: &ContainerSpec) -> DockerResult<String> {
        self.enter("create_container", &spec.name)?;
        let ev = {
            let mut s = self.lock();
            if s.containers.values().any(|c| c.spec.name == spec.name) {
                return Err(DockerError::Conflict {
                    what: format!("container {}", spec.name),
                    message: format!("the container name \"/{}\" is already in use", spec.name),
                });
            }
            let Some(image) = s.images.get(&spec.image).cloned() else {
                return Err(not_found(format!("image {}", spec.image)));
            };
            for n in &spec.networks {
                if !s.networks.values().any(|x| x.name == n.network) {
                    return Err(not_found(format!("network {}", n.network)));
                }
            }
            for m in &spec.mounts {
                if let super::Mount::Volume { name, .. } = m
                    && !s.volumes.contains_key(name)
                {
                    // Docker creates missing named volumes implicitly, without labels.
                    s.volumes.insert(
                        name.clone(),
                        VolumeSummary { name: name.clone(), labels: BTreeMap::new(), created: None },
                    );
                }
            }
            let id = self.new_id();
            let c = FakeContainer {
                id: id.clone(),
                spec: spec.clone(),
                state: ContainerState::Created,
                health: None,
                exit_code: None,
                oom_killed: false,
                image_id: image.id.clone(),
                created: now_secs(),
                networks: spec.networks.clone(),
                ports: vec![],
                restart_count: 0,
                logs: vec![],
                archives: BTreeMap::new(),
            };
            let ev = container_event(&c, "create");
            s.containers.insert(id, c);
            ev
        };
        let id = ev.id.clone();
        self.emit(ev);
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> DockerResult<()> {
        self.enter("start_container", id)?;
        let ev = {
            let mut s = self.lock();
            let key = Self::find_id(&s, id).ok_or_else(|| not_found(format!("container {id}")))?;
            let auto_healthy = s.auto_healthy;
            // Host ports in use by other running containers conflict, as on a real daemon.
            let taken: BTreeSet<u16> = s
                .containers
                .values()
                .filter(|c| c.id != key && c.state == ContainerState::Running)
                .flat_map(|c| c.ports.iter().map(|p| p.host_port))
                .collect();
            let mut next_port = s.next_port;
            let c = s.containers.get_mut(&key).expect("found above");
            if c.state == ContainerState::Running {
                return Ok(());
            }
            let mut ports = Vec::new();
            for p in &c.spec.ports {
                let Some(hp) = p.host_port else { continue };
                let host_port = if hp == 0 {
                    next_port += 1;
                    next_port
                } else {
                    hp
                };
                if taken.contains(&host_port) {
                    return Err(DockerError::Api {
                        operation: format!("start container {}", c.spec.name),
                        status: 500,
                        message: format!("Bind for 0.0.0.0:{host_port} failed: port is already allocated"),
                    });
                }
                ports.push(PublishedPort {
                    container_port: p.container_port,
                    protocol: p.protocol.clone(),
                    host_ip: if p.host_ip.is_empty() { "0.0.0.0".into() } else { p.host_ip.clone() },
                    host_port,
                });
            }
            c.ports = ports;
            c.state = ContainerState::Running;
            c.exit_code = None;
            c.oom_killed = false;
            c.health = c
                .spec
                .healthcheck
                .as_ref()
                .filter(|h| h.test.first().is_some_and(|t| t != "NONE"))
                .map(|_| if auto_healthy { HealthState::Healthy } else { HealthState::Starting });
            let ev = container_event(c, "start");
            s.next_port = next_port;
            ev
        };
        self.emit(ev);
        Ok(())
    }

    async fn stop_container(&self, id: &str, _timeout_seconds: Option<i64>) -> DockerResult<()> {
        self.enter("stop_container", id)?;
        let ev = {
            let mut s = self.lock();
            let key = Self::find_id(&s, id).ok_or_else(|| not_found(format!("container {id}")))?;
            let c = s.containers.get_mut(&key).expect("found above");
            if c.state != ContainerState::Running {
                return Ok(());
            }
            c.state = ContainerState::Exited;
            c.exit_code = Some(0);
            c.ports.clear();
            container_event(c, "die")
        };
        self.emit(ev);
        Ok(())
    }

    async fn restart_container(&self, id: &str, _timeout_seconds: Option<i64>) -> DockerResult<()> {
        self.enter("restart_container", id)?;
        self.start_inner(id)
    }

    async fn kill_container(&self, id: &str, _signal: Option<&str>) -> DockerResult<()> {
        self.enter("kill_container", id)?;
        let name = {
            let s = self.lock();
            let key = Self::find_id(&s, id).ok_or_else(|| not_found(format!("container {id}")))?;
            s.containers[&key].spec.name.clone()
        };
        self.kill_by_hand(&name);
        Ok(())
    }

    async fn remove_container(&self, id: &str, force: bool) -> DockerResult<()> {
        self.enter("remove_container", id)?;
        let ev = {
            let mut s = self.lock();
            let key = Self::find_id(&s, id).ok_or_else(|| not_found(format!("container {id}")))?;
            if s.containers[&key].state == ContainerState::Running && !force {
                return Err(DockerError::Conflict {
                    what: format!("container {id}"),
                    message: "You cannot remove a running container. Stop the container before attempting removal or force remove".into(),
                });
            }
            let c = s.containers.remove(&key).expect("found above");
            container_event(&c, "destroy")
        };
        self.emit(ev);
        Ok(())
    }

    async fn rename_container(&self, id: &str, new_name: &str) -> DockerResult<()> {
        self.enter("rename_container", id)?;
        let mut s = self.lock();
        if s.containers.values().any(|c| c.spec.name == new_name) {
            return Err(DockerError::Conflict {
                what: format!("container {new_name}"),
                message: "name already in use".into(),
            });
        }
        let key = Self::find_id(&s, id).ok_or_else(|| not_found(format!("container {id}")))?;
        s.containers.get_mut(&key).expect("found above").spec.name = new_name.to_string();
        Ok(())
    }

    async fn list_networks(&self, labels: &LabelFilter) -> DockerResult<Vec<NetworkSummary>> {
        self.enter("list_networks", "")?;
        Ok(self.lock().networks.values().filter(|n| matches(&n.labels, labels)).cloned().collect())
    }

    async fn create_network(&self, spec: &NetworkSpec) -> DockerResult<String> {
        self.enter("create_network", &spec.name)?;
        let mut s = self.lock();
        if s.networks.values().any(|n| n.name == spec.name) {
            return Err(DockerError::Conflict {
                what: format!("network {}", spec.name),
                message: format!("network with name {} already exists", spec.name),
            });
        }
        let id = self.new_id();
        s.networks.insert(
            id.clone(),
            NetworkSummary {
                id: id.clone(),
                name: spec.name.clone(),
                labels: spec.labels.clone(),
                internal: spec.internal,
                created: None,
            },
        );
        Ok(id)
    }

    async fn remove_network(&self, id: &str) -> DockerResult<()> {
        self.enter("remove_network", id)?;
        let mut s = self.lock();
        let Some(key) = s.networks.values().find(|n| n.id == id || n.name == id).map(|n| n.id.clone()) else {
            return Err(not_found(format!("network {id}")));
        };
        let name = s.networks[&key].name.clone();
        if s.containers.values().any(|c| c.networks.iter().any(|n| n.network == name)) {
            return Err(DockerError::Conflict {
                what: format!("network {name}"),
                message: format!("error while removing network: network {name} id {key} has active endpoints"),
            });
        }
        s.networks.remove(&key);
        Ok(())
    }

    async fn connect_network(&self, network: &str, container: &str, aliases: &[String]) -> DockerResult<()> {
        self.enter("connect_network", &format!("{network} {container}"))?;
        let mut s = self.lock();
        let Some(net) = s.networks.values().find(|n| n.id == network || n.name == network).map(|n| n.name.clone())
        else {
            return Err(not_found(format!("network {network}")));
        };
        let key = Self::find_id(&s, container).ok_or_else(|| not_found(format!("container {container}")))?;
        let c = s.containers.get_mut(&key).expect("found above");
        if c.networks.iter().any(|n| n.network == net) {
            return Err(DockerError::Conflict {
                what: format!("container {container}"),
                message: format!("endpoint with name {} already exists in network {net}", c.spec.name),
            });
        }
        c.networks.push(NetworkJoin { network: net, aliases: aliases.to_vec() });
        Ok(())
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> DockerResult<()> {
        self.enter("disconnect_network", &format!("{network} {container}"))?;
        let mut s = self.lock();
        let key = Self::find_id(&s, container).ok_or_else(|| not_found(format!("container {container}")))?;
        s.containers.get_mut(&key).expect("found above").networks.retain(|n| n.network != network);
        Ok(())
    }

    async fn list_volumes(&self, labels: &LabelFilter) -> DockerResult<Vec<VolumeSummary>> {
        self.enter("list_volumes", "")?;
        Ok(self.lock().volumes.values().filter(|v| matches(&v.labels, labels)).cloned().collect())
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> DockerResult<()> {
        self.enter("create_volume", &spec.name)?;
        let mut s = self.lock();
        s.volumes.entry(spec.name.clone()).or_insert_with(|| VolumeSummary {
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            created: None,
        });
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> DockerResult<()> {
        self.enter("remove_volume", name)?;
        let mut s = self.lock();
        if !s.volumes.contains_key(name) {
            return Err(not_found(format!("volume {name}")));
        }
        let in_use = s
            .containers
            .values()
            .any(|c| c.spec.mounts.iter().any(|m| matches!(m, super::Mount::Volume { name: n, .. } if n == name)));
        if in_use {
            return Err(DockerError::Conflict { what: format!("volume {name}"), message: "volume is in use".into() });
        }
        s.volumes.remove(name);
        s.volume_files.remove(name);
        Ok(())
    }

    async fn inspect_image(&self, reference: &str) -> DockerResult<Option<ImageInfo>> {
        self.enter("inspect_image", reference)?;
        Ok(self.lock().images.get(reference).cloned())
    }

    async fn pull_image(&self, reference: &str, progress: ProgressFn<'_>) -> DockerResult<()> {
        self.enter("pull_image", reference)?;
        if self.lock().pull_hangs {
            futures::future::pending::<()>().await;
        }
        let found = self.lock().pullable.get(reference).cloned();
        match found {
            Some(info) => {
                progress(&PullProgress {
                    status: "Downloading".into(),
                    layer: Some("layer0".into()),
                    current: Some(512),
                    total: Some(1024),
                });
                progress(&PullProgress { status: "Pull complete".into(), layer: Some("layer0".into()), current: None, total: None });
                self.lock().images.insert(reference.to_string(), info);
                Ok(())
            }
            None => Err(DockerError::PullFailed {
                image: reference.to_string(),
                message: "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host (fake)"
                    .into(),
            }),
        }
    }

    async fn download_archive(&self, container: &str, path: &str) -> DockerResult<bytes::Bytes> {
        self.enter("download_archive", &format!("{container}:{path}"))?;
        let s = self.lock();
        let key = Self::find_id(&s, container).ok_or_else(|| not_found(format!("container {container}")))?;
        if let Some(volume) = volume_at(&s.containers[&key], path) {
            // Like Docker: the archive of a directory holds it under its base name.
            let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
            let files = s.volume_files.get(&volume).cloned().unwrap_or_default();
            return Ok(bytes::Bytes::from(tar_of_files(&base, &files)));
        }
        s.containers[&key]
            .archives
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(format!("path {path} in container {container}")))
    }

    async fn upload_archive(&self, container: &str, path: &str, tar: bytes::Bytes) -> DockerResult<()> {
        self.enter("upload_archive", &format!("{container}:{path}"))?;
        let mut s = self.lock();
        let key = Self::find_id(&s, container).ok_or_else(|| not_found(format!("container {container}")))?;
        if let Some(volume) = volume_at(&s.containers[&key], path) {
            let files = files_of_tar(&tar).map_err(|e| DockerError::Api {
                operation: format!("upload archive to {container}:{path}"),
                status: 400,
                message: e.to_string(),
            })?;
            s.volume_files.entry(volume).or_default().extend(files);
            return Ok(());
        }
        s.containers.get_mut(&key).expect("found above").archives.insert(path.to_string(), tar);
        Ok(())
    }

    fn events(&self, labels: &LabelFilter) -> BoxStream<'static, DockerResult<DockerEvent>> {
        if let Err(e) = self.enter("events", "") {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let rx = self.events.subscribe();
        let filter = labels.clone();
        let state = self.state.clone();
        let endpoint = self.endpoint.clone();
        futures::stream::unfold((rx, false), move |(mut rx, done)| {
            let filter = filter.clone();
            let state = state.clone();
            let endpoint = endpoint.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let unreachable = state.lock().map(|s| s.unreachable).unwrap_or(true);
                    if unreachable {
                        let err = DockerError::Unreachable { endpoint, message: "event stream closed (fake)".into() };
                        return Some((Err(err), (rx, true)));
                    }
                    match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                        Err(_) => continue,
                        Ok(Ok(ev)) if ev.kind == "daemon" => continue,
                        Ok(Ok(ev)) if matches(&ev.attributes, &filter) => return Some((Ok(ev), (rx, false))),
                        Ok(Ok(_)) => continue,
                        Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                        Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                    }
                }
            }
        })
        .boxed()
    }

    fn logs(&self, id: &str, options: &LogOptions) -> BoxStream<'static, DockerResult<LogLine>> {
        if let Err(e) = self.enter("logs", id) {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let lines = {
            let s = self.lock();
            match Self::find_id(&s, id).and_then(|k| s.containers.get(&k)) {
                Some(c) => c.logs.clone(),
                None => {
                    let e = not_found(format!("container {id}"));
                    return futures::stream::once(async move { Err(e) }).boxed();
                }
            }
        };
        let start = match options.tail {
            Some(n) => lines.len().saturating_sub(n as usize),
            None => 0,
        };
        let initial: Vec<DockerResult<LogLine>> = lines[start..].iter().cloned().map(Ok).collect();
        if !options.follow {
            return futures::stream::iter(initial).boxed();
        }
        // Follow: poll for lines appended after the initial ones.
        let state = self.state.clone();
        let id = id.to_string();
        let seen = lines.len();
        let follow = futures::stream::unfold(seen, move |seen| {
            let state = state.clone();
            let id = id.clone();
            async move {
                loop {
                    let next = {
                        let s = state.lock().unwrap_or_else(|e| e.into_inner());
                        let c = FakeDocker::find_id(&s, &id).and_then(|k| s.containers.get(&k).cloned())?;
                        c.logs.get(seen).cloned()
                    };
                    if let Some(line) = next {
                        return Some((Ok(line), seen + 1));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        futures::stream::iter(initial).chain(follow).boxed()
    }
}

impl FakeDocker {
    fn start_inner(&self, id: &str) -> DockerResult<()> {
        let ev = {
            let mut s = self.lock();
            let key = Self::find_id(&s, id).ok_or_else(|| not_found(format!("container {id}")))?;
            let auto_healthy = s.auto_healthy;
            let c = s.containers.get_mut(&key).expect("found above");
            c.state = ContainerState::Running;
            c.exit_code = None;
            c.restart_count += 1;
            c.health = c
                .spec
                .healthcheck
                .as_ref()
                .map(|_| if auto_healthy { HealthState::Healthy } else { HealthState::Starting });
            container_event(c, "restart")
        };
        self.emit(ev);
        Ok(())
    }
}

/// A [`Connector`] that serves fake daemons by endpoint; endpoints not registered are unreachable.
#[derive(Clone, Default)]
pub struct FakeConnector {
    daemons: Arc<Mutex<BTreeMap<String, FakeDocker>>>,
}

impl std::fmt::Debug for FakeConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeConnector").finish()
    }
}

impl FakeConnector {
    /// A connector with no daemon.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or returns the existing) fake daemon at `endpoint`.
    pub fn daemon(&self, endpoint: &str) -> FakeDocker {
        self.daemons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(endpoint.to_string())
            .or_insert_with(|| FakeDocker::new(endpoint))
            .clone()
    }
}

#[async_trait::async_trait]
impl Connector for FakeConnector {
    async fn connect(&self, endpoint: &str, _tls: Option<&TlsFiles>) -> DockerResult<Arc<dyn DockerApi>> {
        let daemon = self.daemons.lock().unwrap_or_else(|e| e.into_inner()).get(endpoint).cloned();
        match daemon {
            Some(d) => {
                d.ping().await?;
                Ok(Arc::new(d))
            }
            None => Err(DockerError::Unreachable {
                endpoint: endpoint.to_string(),
                message: "no fake daemon registered".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[tokio::test]
    async fn create_start_list_kill_and_events() {
        let d = FakeDocker::default();
        d.add_image("img:1");
        d.create_network(&NetworkSpec { name: "n".into(), ..Default::default() }).await.unwrap();
        let mut events = d.events(&vec![("app".into(), "x".into())]);
        let spec = ContainerSpec {
            name: "c0".into(),
            image: "img:1".into(),
            labels: labels(&[("app", "x")]),
            networks: vec![NetworkJoin { network: "n".into(), aliases: vec![] }],
            ..Default::default()
        };
        let id = d.create_container(&spec).await.unwrap();
        d.start_container(&id).await.unwrap();
        assert!(matches!(d.create_container(&spec).await, Err(DockerError::Conflict { .. })));
        let listed = d.list_containers(&vec![("app".into(), "x".into())]).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, ContainerState::Running);
        assert!(d.list_containers(&vec![("app".into(), "y".into())]).await.unwrap().is_empty());
        d.kill_by_hand("c0");
        let mut actions = vec![];
        while actions.len() < 3 {
            let ev = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
            actions.push(ev.action);
        }
        assert_eq!(actions, ["create", "start", "die"]);
        let inspected = d.inspect_container("c0").await.unwrap();
        assert_eq!(inspected.exit_code, Some(137));
        assert_eq!(d.calls("list_containers"), 2);
    }

    #[tokio::test]
    async fn unreachable_daemon_fails_every_call_and_ends_events() {
        let d = FakeDocker::default();
        let mut events = d.events(&vec![]);
        d.set_unreachable(true);
        assert!(d.ping().await.unwrap_err().is_unreachable());
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap();
        assert!(ev.unwrap_err().is_unreachable());
        d.set_unreachable(false);
        d.ping().await.unwrap();
    }

    #[tokio::test]
    async fn pull_fails_unless_pullable_and_missing_image_blocks_create() {
        let d = FakeDocker::default();
        let err = d.pull_image("nope:1", &|_| {}).await.unwrap_err();
        assert!(matches!(err, DockerError::PullFailed { .. }) && err.is_transient());
        let spec = ContainerSpec { name: "c".into(), image: "nope:1".into(), ..Default::default() };
        assert!(d.create_container(&spec).await.unwrap_err().is_not_found());
        d.add_pullable("ok:1");
        let seen = Mutex::new(0);
        d.pull_image("ok:1", &|_| *seen.lock().unwrap() += 1).await.unwrap();
        assert!(*seen.lock().unwrap() > 0);
        assert!(d.inspect_image("ok:1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn fixed_host_port_conflicts_on_start() {
        let d = FakeDocker::default();
        d.add_image("img");
        let port = super::super::PortMapping {
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
            host_port: Some(8080),
        };
        for name in ["a", "b"] {
            d.create_container(&ContainerSpec {
                name: name.into(),
                image: "img".into(),
                ports: vec![port.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        }
        d.start_container("a").await.unwrap();
        assert!(d.start_container("b").await.is_err());
    }
}
