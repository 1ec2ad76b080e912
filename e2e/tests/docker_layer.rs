//! The bollard Docker layer against the machine's real daemon (default socket) and the local
//! image `berth-e2e/busybox:latest`. What berth asked for is checked through `docker inspect`
//! (the CLI, not berth's own reading) wherever that is possible. Every test uses its own names
//! and labels and removes what it made, even when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::docker::bollard_impl::{BollardConnector, BollardDocker};
use berth::docker::{
    Connector, ContainerSpec, ContainerState, DockerApi, DockerError, HealthState, Healthcheck, LogLine, LogOptions,
    LogStream, Mount, NetworkJoin, NetworkSpec, PortMapping, VolumeSpec, local_endpoint,
};
use futures::StreamExt;
use serde_json::{Value, json};

const IMAGE: &str = "berth-e2e/busybox:latest";

fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Builds the test image once per process when it is missing.
fn ensure_image() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let present =
            Command::new("docker").args(["image", "inspect", IMAGE]).output().is_ok_and(|o| o.status.success());
        if !present {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/e2e-images.sh");
            let status = Command::new("bash").arg(script).status().expect("running hack/e2e-images.sh");
            assert!(status.success(), "hack/e2e-images.sh failed: cannot build {IMAGE}");
        }
    });
}

async fn local() -> BollardDocker {
    ensure_image();
    BollardDocker::connect(&local_endpoint(), None)
        .await
        .expect("the local Docker daemon answers (hack/ensure-docker.sh)")
}

/// `docker ARGS` through the CLI; panics with its stderr when it fails.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("running docker");
    assert!(out.status.success(), "docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker inspect NAME` as JSON (the first object).
fn inspect(name: &str) -> Value {
    let v: Value = serde_json::from_str(&docker(&["inspect", name])).expect("docker inspect prints JSON");
    v[0].clone()
}

/// Removes what a test created when it ends, passed or failed (containers first: they hold
/// networks and volumes).
#[derive(Default)]
struct Cleanup {
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
}

impl Cleanup {
    fn container(&self, name: &str) -> String {
        self.containers.lock().unwrap().push(name.to_string());
        name.to_string()
    }
    fn network(&self, name: &str) -> String {
        self.networks.lock().unwrap().push(name.to_string());
        name.to_string()
    }
    fn volume(&self, name: &str) -> String {
        self.volumes.lock().unwrap().push(name.to_string());
        name.to_string()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |args: Vec<String>| {
            let _ = Command::new("docker").args(args).output();
        };
        for c in self.containers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            quiet(vec!["rm".into(), "-f".into(), "-v".into(), c.clone()]);
        }
        for n in self.networks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            quiet(vec!["network".into(), "rm".into(), n.clone()]);
        }
        for v in self.volumes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            quiet(vec!["volume".into(), "rm".into(), "-f".into(), v.clone()]);
        }
    }
}

/// Removes an image tag when dropped.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// Polls `probe` until it yields a value; generous deadline for a loaded machine.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn sleeper(name: &str, labels: BTreeMap<String, String>) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: IMAGE.into(),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        labels,
        ..Default::default()
    }
}

async fn wait_exited(d: &BollardDocker, name: &str) {
    eventually(&format!("{name} to exit"), async || {
        let c = d.inspect_container(name).await.unwrap();
        (c.summary.state == ContainerState::Exited).then_some(())
    })
    .await;
}

async fn read_logs(d: &BollardDocker, name: &str, options: LogOptions) -> Vec<LogLine> {
    let lines: Vec<_> = d.logs(name, &options).collect().await;
    lines.into_iter().map(|l| l.expect("log line")).collect()
}

fn texts(lines: &[LogLine], stream: LogStream) -> Vec<String> {
    lines.iter().filter(|l| l.stream == stream).map(|l| l.text.clone()).collect()
}

#[tokio::test]
async fn ping_and_info_report_the_negotiated_api_version() {
    ensure_image();
    let d = BollardConnector::default().connect(&local_endpoint(), None).await.unwrap();
    assert_eq!(d.endpoint(), local_endpoint());
    d.ping().await.unwrap();
    let facts = d.info().await.unwrap();
    // The daemon here (20.10) is older than bollard's default, so the negotiated version is the
    // daemon's own.
    assert_eq!(facts.api_version, docker(&["version", "--format", "{{.Server.APIVersion}}"]));
    assert_eq!(facts.version, docker(&["version", "--format", "{{.Server.Version}}"]));
    assert_eq!(facts.os, "linux");
    assert!(facts.cpus > 0 && facts.memory_bytes > 0, "{facts:?}");
    assert!(!facts.name.is_empty());
}

#[tokio::test]
async fn create_applies_every_option() {
    let d = local().await;
    let s = suffix();
    let c = Cleanup::default();
    let n1 = c.network(&format!("berth-e2e-a-{s}"));
    let n2 = c.network(&format!("berth-e2e-b-{s}"));
    let vol = c.volume(&format!("berth-e2e-v-{s}"));
    let name = c.container(&format!("berth-e2e-all-{s}"));
    for n in [&n1, &n2] {
        d.create_network(&NetworkSpec { name: n.clone(), ..Default::default() }).await.unwrap();
    }
    let bind = tempfile::tempdir().unwrap();
    let bind_path = bind.path().to_string_lossy().into_owned();
    let spec = ContainerSpec {
        name: name.clone(),
        image: IMAGE.into(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["sleep 3600".into()]),
        env: vec!["GREETING=hello".into()],
        working_dir: Some("/www".into()),
        user: Some("65534:65534".into()),
        labels: labels(&[("berth.e2e/test", &s)]),
        ports: vec![
            PortMapping { container_port: 80, protocol: "tcp".into(), host_ip: "127.0.0.1".into(), host_port: Some(0) },
            PortMapping { container_port: 53, protocol: "udp".into(), host_ip: String::new(), host_port: None },
        ],
        mounts: vec![
            Mount::Volume { name: vol.clone(), target: "/data".into(), read_only: false },
            Mount::Bind { source: bind_path.clone(), target: "/bind".into(), read_only: true },
            Mount::Tmpfs {
                target: "/scratch".into(),
                size_bytes: Some(1 << 20),
                options: Some("noexec,nosuid".into()),
            },
        ],
        networks: vec![
            NetworkJoin { network: n1.clone(), aliases: vec!["web".into(), "web-a".into()] },
            NetworkJoin { network: n2.clone(), aliases: vec!["web-b".into()] },
        ],
        healthcheck: Some(Healthcheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval_seconds: Some(2),
            timeout_seconds: Some(5),
            retries: Some(3),
            start_period_seconds: Some(1),
        }),
        nano_cpus: Some(500_000_000),
        memory_bytes: Some(64 << 20),
        memory_swap_bytes: Some(64 << 20),
        pids_limit: Some(64),
        read_only_root_filesystem: true,
        cap_add: vec!["NET_BIND_SERVICE".into()],
        cap_drop: vec!["ALL".into()],
        no_new_privileges: true,
        privileged: false,
        restart_policy: "unless-stopped".into(),
        stop_timeout_seconds: Some(3),
        log_max_size_mb: Some(5),
        log_max_files: Some(2),
        storage_size_bytes: Some(1 << 30),
    };
    let id = d.create_container(&spec).await.unwrap();

    let i = inspect(&name);
    assert_eq!(i["Id"], id.as_str());
    let cfg = &i["Config"];
    assert_eq!(cfg["Image"], IMAGE);
    assert_eq!(cfg["Entrypoint"], json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["Cmd"], json!(["sleep 3600"]));
    assert!(cfg["Env"].as_array().unwrap().contains(&json!("GREETING=hello")), "{}", cfg["Env"]);
    assert_eq!(cfg["WorkingDir"], "/www");
    assert_eq!(cfg["User"], "65534:65534");
    assert_eq!(cfg["Labels"]["berth.e2e/test"], s.as_str());
    assert_eq!(cfg["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
    assert_eq!(
        cfg["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000i64, "Timeout": 5_000_000_000i64,
               "Retries": 3, "StartPeriod": 1_000_000_000i64})
    );
    assert_eq!(cfg["StopTimeout"], 3);
    let hc = &i["HostConfig"];
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["MemorySwap"], hc["Memory"], "no swap");
    assert_eq!(hc["PidsLimit"], 64);
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["CapAdd"], json!(["NET_BIND_SERVICE"]));
    assert_eq!(hc["CapDrop"], json!(["ALL"]));
    assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(hc["Tmpfs"], json!({"/scratch": "size=1048576,noexec,nosuid"}));
    assert_eq!(hc["LogConfig"], json!({"Type": "json-file", "Config": {"max-size": "5m", "max-file": "2"}}));
    assert_eq!(hc["PortBindings"], json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}));
    assert_eq!(
        hc["Mounts"],
        json!([
            {"Type": "volume", "Source": vol, "Target": "/data"},
            {"Type": "bind", "Source": bind_path, "Target": "/bind", "ReadOnly": true},
        ])
    );
    // The quota needs a storage driver that can apply it; overlay2 on anything but xfs with
    // pquota cannot, and then berth leaves it out rather than failing the create.
    let driver = docker(&["info", "--format", "{{.Driver}}"]);
    let backing = docker(&["info", "--format", "{{json .DriverStatus}}"]);
    if driver == "overlay2" && !backing.contains("xfs") {
        assert!(hc["StorageOpt"].is_null() || hc["StorageOpt"] == json!({}), "{}", hc["StorageOpt"]);
    } else {
        assert_eq!(hc["StorageOpt"]["size"], (1u64 << 30).to_string());
    }
    let nets = &i["NetworkSettings"]["Networks"];
    let aliases = |n: &str| -> BTreeSet<String> {
        nets[n]["Aliases"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
    };
    assert!(aliases(&n1).is_superset(&BTreeSet::from(["web".to_string(), "web-a".to_string()])), "{nets}");
    assert!(aliases(&n2).contains("web-b"), "{nets}");

    // It runs as specified (read-only root, nobody, no capabilities) and berth reads it back.
    d.start_container(&name).await.unwrap();
    let details = d.inspect_container(&name).await.unwrap();
    assert_eq!(details.summary.state, ContainerState::Running);
    assert_eq!(details.summary.labels["berth.e2e/test"], s);
    assert_eq!(
        details.networks,
        vec![
            NetworkJoin { network: n1.clone(), aliases: vec!["web".into(), "web-a".into()] },
            NetworkJoin { network: n2.clone(), aliases: vec!["web-b".into()] },
        ]
    );
    assert_eq!(details.summary.ports.len(), 1, "{:?}", details.summary.ports);
    assert_eq!(details.summary.ports[0].host_ip, "127.0.0.1");

    // The same name again conflicts, and nothing second is left behind.
    let err = d.create_container(&spec).await.unwrap_err();
    assert!(matches!(&err, DockerError::Conflict { what, .. } if what.contains(&name)), "{err}");
    let listed = d.list_containers(&vec![("berth.e2e/test".into(), s.clone())]).await.unwrap();
    assert_eq!(listed.len(), 1);

    // A missing image names the image.
    let missing = ContainerSpec {
        name: c.container(&format!("berth-e2e-noimg-{s}")),
        image: "berth-e2e/missing:1".into(),
        ..Default::default()
    };
    let err = d.create_container(&missing).await.unwrap_err();
    assert!(matches!(&err, DockerError::NotFound { what } if what.contains("berth-e2e/missing")), "{err}");
}

#[tokio::test]
async fn lifecycle_start_stop_restart_kill_rename_remove() {
    let d = local().await;
    let s = suffix();
    let c = Cleanup::default();
    let name = c.container(&format!("berth-e2e-life-{s}"));
    let renamed = c.container(&format!("berth-e2e-life2-{s}"));
    d.create_container(&sleeper(&name, BTreeMap::new())).await.unwrap();
    assert_eq!(d.inspect_container(&name).await.unwrap().summary.state, ContainerState::Created);

    d.start_container(&name).await.unwrap();
    let started = d.inspect_container(&name).await.unwrap();
    assert_eq!(started.summary.state, ContainerState::Running);
    assert_eq!(inspect(&name)["State"]["Running"], true);
    // Starting a running container is fine (Docker answers 304).
    d.start_container(&name).await.unwrap();

    d.stop_container(&name, Some(1)).await.unwrap();
    assert_eq!(inspect(&name)["State"]["Status"], "exited");

    d.restart_container(&name, Some(1)).await.unwrap();
    let restarted = d.inspect_container(&name).await.unwrap();
    assert_eq!(restarted.summary.state, ContainerState::Running);
    assert_ne!(restarted.started_at, started.started_at);

    d.kill_container(&name, None).await.unwrap();
    wait_exited(&d, &name).await;
    let killed = d.inspect_container(&name).await.unwrap();
    assert_eq!(killed.exit_code, Some(137));
    assert!(killed.finished_at.is_some());
    // Killing a stopped container is a conflict with its state.
    assert!(matches!(d.kill_container(&name, None).await.unwrap_err(), DockerError::Conflict { .. }));

    d.rename_container(&name, &renamed).await.unwrap();
    assert_eq!(inspect(&renamed)["Name"], format!("/{renamed}"));
    assert!(d.inspect_container(&name).await.unwrap_err().is_not_found());

    d.start_container(&renamed).await.unwrap();
    let err = d.remove_container(&renamed, false).await.unwrap_err();
    assert!(matches!(err, DockerError::Conflict { .. }), "removing a running container without force: {err}");
    d.remove_container(&renamed, true).await.unwrap();
    assert!(d.inspect_container(&renamed).await.unwrap_err().is_not_found());
    assert!(d.remove_container(&renamed, true).await.unwrap_err().is_not_found());
    let err = d.stop_container(&renamed, Some(1)).await.unwrap_err();
    assert!(matches!(&err, DockerError::NotFound { what } if what.contains(&renamed)), "{err}");
}

#[tokio::test]
async fn list_filters_by_labels_and_reads_everything_from_one_listing() {
    let d = local().await;
    let s = suffix();
    let c = Cleanup::default();
    let key = format!("berth.e2e/run-{s}");
    let a = c.container(&format!("berth-e2e-la-{s}"));
    let b = c.container(&format!("berth-e2e-lb-{s}"));
    let other = c.container(&format!("berth-e2e-lc-{s}"));
    d.create_container(&sleeper(&a, labels(&[(&key, "x"), ("berth.e2e/role", "a")]))).await.unwrap();
    d.create_container(&sleeper(&b, labels(&[(&key, "x"), ("berth.e2e/role", "b")]))).await.unwrap();
    d.create_container(&sleeper(&other, BTreeMap::new())).await.unwrap();
    d.start_container(&a).await.unwrap();

    let names = async |filter: Vec<(&str, &str)>| -> BTreeSet<String> {
        let filter = filter.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        d.list_containers(&filter).await.unwrap().into_iter().map(|c| c.name).collect()
    };
    assert_eq!(names(vec![(&key, "x")]).await, BTreeSet::from([a.clone(), b.clone()]));
    assert_eq!(names(vec![(&key, "x"), ("berth.e2e/role", "a")]).await, BTreeSet::from([a.clone()]));
    assert_eq!(names(vec![(&key, "")]).await, BTreeSet::from([a.clone(), b.clone()]));
    assert!(names(vec![(&key, "y")]).await.is_empty());

    let listed = d.list_containers(&vec![(key.clone(), "x".into())]).await.unwrap();
    let la = listed.iter().find(|c| c.name == a).unwrap();
    let lb = listed.iter().find(|c| c.name == b).unwrap();
    assert_eq!(la.state, ContainerState::Running);
    assert_eq!(lb.state, ContainerState::Created);
    assert_eq!(la.image, IMAGE);
    assert_eq!(la.image_id, inspect(&a)["Image"].as_str().unwrap());
    assert_eq!(la.id, inspect(&a)["Id"].as_str().unwrap());
    assert_eq!(la.labels["berth.e2e/role"], "a");
    assert_eq!(la.health, None, "no health check, no health");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - 3600..=now + 60).contains(&la.created), "created {} vs now {now}", la.created);
}

#[tokio::test]
async fn health_is_read_from_real_health_checks() {
    let d = local().await;
    let s = suffix();
    let c = Cleanup::default();
    let key = format!("berth.e2e/health-{s}");
    let check = |cmd: &str, interval: i64| Healthcheck {
        test: vec!["CMD-SHELL".into(), cmd.into()],
        interval_seconds: Some(interval),
        timeout_seconds: Some(5),
        retries: Some(1),
        start_period_seconds: None,
    };
    let cases = [
        ("good", check("true", 1)),
        ("bad", check("false", 1)),
        // Its first check runs only after an hour: it stays starting.
        ("slow", check("true", 3600)),
    ];
    for (role, hc) in &cases {
        let name = c.container(&format!("berth-e2e-h{role}-{s}"));
        let spec = ContainerSpec { healthcheck: Some(hc.clone()), ..sleeper(&name, labels(&[(&key, role)])) };
        d.create_container(&spec).await.unwrap();
        d.start_container(&name).await.unwrap();
    }
    let filter = vec![(key.clone(), String::new())];
    let by_role = eventually("good healthy and bad unhealthy", async || {
        let listed = d.list_containers(&filter).await.unwrap();
        let health: BTreeMap<String, Option<HealthState>> =
            listed.into_iter().map(|c| (c.labels[&key].clone(), c.health)).collect();
        (health.get("good") == Some(&Some(HealthState::Healthy))
            && health.get("bad") == Some(&Some(HealthState::Unhealthy)))
        .then_some(health)
    })
    .await;
    assert_eq!(by_role["slow"], Some(HealthState::Starting));
    let docker_says = |role: &str| inspect(&format!("berth-e2e-h{role}-{s}"))["State"]["Health"]["Status"].clone();
    assert_eq!(docker_says("good"), "healthy");
    assert_eq!(docker_says("bad"), "unhealthy");
    assert_eq!(docker_says("slow"), "starting");
    let details = d.inspect_container(&format!("berth-e2e-hbad-{s}")).await.unwrap();
    assert_eq!(details.summary.health, Some(HealthState::Unhealthy));
}

fn http_get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[tokio::test]
async fn published_port_serves_http() {
    let d = local().await;
    let s = suffix();
    let c = Cleanup::default();
    let name = c.container(&format!("berth-e2e-http-{s}"));
    let spec = ContainerSpec {
        cmd: Some(vec!["httpd".into(), "-f".into(), "-p".into(), "80".into(), "-h".into(), "/www".into()]),
        ports: vec![PortMapping {
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
            host_port: Some(0),
        }],
        ..sleeper(&name, labels(&[("berth.e2e/test", &s)]))
    };
    d.create_container(&spec).await.unwrap();
    d.start_container(&name).await.unwrap();
    let listed = d.list_containers(&vec![("berth.e2e/test".into(), s.clone())]).await.unwrap();
    let port = listed[0].ports.iter().find(|p| p.container_port == 80).expect("port 80 published");
    assert_eq!(port.protocol, "tcp");
    assert_eq!(port.host_ip, "127.0.0.1");
    assert_ne!(port.host_port, 0);
    assert_eq!(
        inspect(&name)["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.host_port.to_string(),
        "the listing shows the port Docker bound"
    );
    let host_port = port.host_port;
    let answer = eventually("httpd to answer", async || http_get(host_port).filter(|a| a.contains("200"))).await;
    assert!(answer.contains("berth e2e"), "{answer}");
}

#[tokio::test]
async fn networks_and_volumes_create_list_remove() {
    let d = local().await;
    let s = suffix();
    let c = Cleanup::default();
    let key = format!("berth.e2e/nv-{s}");
    let filter = vec![(key.clone(), "1".to_string())];

    let net = c.network(&format!("berth-e2e-net-{s}"));
    let spec = NetworkSpec { name: net.clone(), internal: true, labels: labels(&[(&key, "1")]) };
    let id = d.create_network(&spec).await.unwrap();
    let listed = d.list_networks(&filter).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].name.as_str(), listed[0].internal), (id.as_str(), net.as_str(), true));
    assert_eq!(listed[0].labels[&key], "1");
    assert_eq!(inspect(&net)["Driver"], "bridge");
    let err = d.create_network(&spec).await.unwrap_err();
    assert!(matches!(err, DockerError::Conflict { .. }), "a second network with the same name: {err}");
    assert_eq!(d.list_networks(&filter).await.unwrap().len(), 1);
    d.remove_network(&net).await.unwrap();
    assert!(d.list_networks(&filter).await.unwrap().is_empty());
    assert!(d.remove_network(&net).await.unwrap_err().is_not_found());

    let vol = c.volume(&format!("berth-e2e-vol-{s}"));
    let vspec = VolumeSpec { name: vol.clone(), labels: labels(&[(&key, "1")]) };
    d.create_volume(&vspec).await.unwrap();
    d.create_volume(&vspec).await.unwrap();
    let listed = d.list_volumes(&filter).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, vol);
    assert_eq!(listed[0].labels[&key], "1");
    assert_eq!(inspect(&vol)["Driver"], "local");

    let user = c.container(&format!("berth-e2e-voluser-{s}"));
    let spec = ContainerSpec {
        mounts: vec![Mount::Volume { name: vol.clone(), target: "/data".into(), read_only: false }],
        ..sleeper(&user, BTreeMap::new())
    };
    d.create_container(&spec).await.unwrap();
    let err = d.remove_volume(&vol).await.unwrap_err();
    assert!(matches!(&err, DockerError::Conflict { what, .. } if what.contains(&vol)), "volume in use: {err}");
    d.remove_container(&user, true).await.unwrap();
    d.remove_volume(&vol).await.unwrap();
    assert!(d.list_volumes(&filter).await.unwrap().is_empty());
    assert!(d.remove_volume(&vol).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn images_inspect_and_failed_pull() {
    let d = local().await;
    let image = d.inspect_image(IMAGE).await.unwrap().expect("the test image is there");
    assert_eq!(image.id, docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]));
    assert!(!image.has_healthcheck);
    assert_eq!(d.inspect_image("berth-e2e/missing:1").await.unwrap(), None);

    // An image declaring a health check, built from the local one (no registry needed).
    let tag = format!("berth-e2e/health-{}:1", suffix());
    let _remove = RemoveImage(tag.clone());
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {IMAGE}\nHEALTHCHECK --interval=5s CMD true\n"))
        .unwrap();
    docker(&["build", "-q", "-t", &tag, &ctx.path().to_string_lossy()]);
    assert!(d.inspect_image(&tag).await.unwrap().expect("just built").has_healthcheck);

    // No registry is reachable here: the pull must fail with Docker's reason, not hang.
    let reference = format!("berth-e2e/does-not-exist-{}:1", suffix());
    let seen = Mutex::new(Vec::new());
    let result = tokio::time::timeout(
        Duration::from_secs(300),
        d.pull_image(&reference, &|p| seen.lock().unwrap().push(p.status.clone())),
    )
    .await
    .expect("a failing pull ends by itself");
    match result {
        Err(DockerError::PullFailed { image, message }) => {
            assert_eq!(image, reference);
            assert!(!message.is_empty());
        }
        other => panic!("expected PullFailed, got {other:?} (progress {:?})", seen.lock().unwrap()),
    }
}

#[tokio::test]
async fn dropping_a_pull_cancels_it_on_the_daemon() {
    let d = local().await;
    // A "registry" on loopback that accepts connections and never answers: the daemon's pull
    // hangs in its TLS handshake. Left alone, Docker gives that up after its own handshake
    // timeout and goes straight on to the plain-HTTP endpoint (a second connection). Once the
    // caller has gone, it lets the attempt in flight run out (Docker does not abort the dial)
    // and stops there: the pull was cancelled.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let sink = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            sink.lock().unwrap().push(stream);
        }
    });
    let reference = format!("127.0.0.1:{port}/berth-e2e/hang:1");
    {
        let pull = d.pull_image(&reference, &|_| {});
        let connected = eventually("the daemon to reach the fake registry", async || {
            (!accepted.lock().unwrap().is_empty()).then_some(())
        });
        tokio::select! {
            result = pull => panic!("the pull ended by itself: {result:?}"),
            () = connected => {}
        }
        // Leaving the block drops the pull future.
    }
    let at_drop = accepted.lock().unwrap().len();

    eventually("the daemon to close its registry connections", async || {
        let mut conns = accepted.lock().unwrap();
        let all_closed = conns.iter_mut().all(|c| {
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match c.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        return false;
                    }
                    Err(_) => return true,
                }
            }
        });
        all_closed.then_some(())
    })
    .await;
    // Had the daemon gone on pulling, it would have opened the plain-HTTP connection the moment
    // the TLS one closed (that one would still be open, so the wait above would not have ended
    // before it timed out too).
    assert_eq!(accepted.lock().unwrap().len(), at_drop, "the daemon kept pulling after the caller gave up");
}

#[tokio::test]
async fn events_arrive_for_a_kill_done_with_the_cli() {
    let d = Arc::new(local().await);
    let s = suffix();
    let c = Cleanup::default();
    let key = format!("berth.e2e/ev-{s}");
    let watched = c.container(&format!("berth-e2e-evw-{s}"));
    let unwatched = c.container(&format!("berth-e2e-evu-{s}"));
    d.create_container(&sleeper(&watched, labels(&[(&key, "1")]))).await.unwrap();
    d.create_container(&sleeper(&unwatched, BTreeMap::new())).await.unwrap();
    d.start_container(&watched).await.unwrap();
    d.start_container(&unwatched).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut events = d.events(&vec![(key.clone(), "1".into())]);
    let reader = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    // The stream is live once it shows an event of ours: create labelled markers until one shows.
    let mut live = false;
    for i in 0..30 {
        let marker = c.container(&format!("berth-e2e-evm{i}-{s}"));
        docker(&["create", "--label", &format!("{key}=1"), "--name", &marker, IMAGE, "true"]);
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
            let ev = ev.expect("event");
            assert_eq!(ev.attributes["name"], marker);
            live = true;
            break;
        }
    }
    assert!(live, "the event stream never showed a marker container");
    while let Ok(ev) = rx.try_recv() {
        assert!(ev.unwrap().attributes["name"].starts_with("berth-e2e-evm"));
    }

    docker(&["kill", &unwatched]);
    docker(&["kill", &watched]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.iter().any(|(a, _): &(String, _)| a == "die") {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, rx.recv()).await.expect("events in time").expect("stream open").unwrap();
        assert_eq!(ev.attributes["name"], watched, "only the labelled container's events: {ev:?}");
        assert_eq!(ev.kind, "container");
        assert_eq!(ev.attributes[&key], "1");
        assert!(ev.time_nanos > 0);
        seen.push((ev.action.clone(), ev));
    }
    let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["kill", "die"]);
    assert_eq!(seen[0].1.attributes["signal"], "9");
    assert_eq!(seen[1].1.attributes["exitCode"], "137");
    reader.abort();
}

#[tokio::test]
async fn logs_split_streams_tail_since_follow() {
    let d = local().await;
    let s = suffix();
    let c = Cleanup::default();
    let name = c.container(&format!("berth-e2e-logs-{s}"));
    let script = "echo out1; echo err1 >&2; echo out2; echo err2 >&2; echo out3; \
                  while [ ! -e /tmp/go ]; do sleep 1; done; echo later; sleep 3600";
    let spec =
        ContainerSpec { cmd: Some(vec!["sh".into(), "-c".into(), script.into()]), ..sleeper(&name, BTreeMap::new()) };
    d.create_container(&spec).await.unwrap();
    d.start_container(&name).await.unwrap();

    let all = eventually("five log lines", async || {
        let lines = read_logs(&d, &name, LogOptions::default()).await;
        (lines.len() == 5).then_some(lines)
    })
    .await;
    assert_eq!(texts(&all, LogStream::Stdout), ["out1", "out2", "out3"]);
    assert_eq!(texts(&all, LogStream::Stderr), ["err1", "err2"]);
    assert!(all.iter().all(|l| l.timestamp.is_none()));

    let tail = read_logs(&d, &name, LogOptions { tail: Some(2), ..Default::default() }).await;
    assert_eq!(tail, all[3..].to_vec());

    let stamped = read_logs(&d, &name, LogOptions { timestamps: true, ..Default::default() }).await;
    assert_eq!(
        stamped.iter().map(|l| l.text.clone()).collect::<Vec<_>>(),
        all.iter().map(|l| l.text.clone()).collect::<Vec<_>>()
    );
    for l in &stamped {
        let ts = l.timestamp.as_deref().expect("timestamp asked for");
        assert!(ts.contains('T') && ts.ends_with('Z'), "{ts}");
    }
    let future = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + 3600;
    assert!(read_logs(&d, &name, LogOptions { since: Some(future), ..Default::default() }).await.is_empty());

    let mut follow = d.logs(&name, &LogOptions { follow: true, ..Default::default() });
    for expected in &all {
        let line = tokio::time::timeout(Duration::from_secs(60), follow.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(&line, expected);
    }
    docker(&["exec", &name, "touch", "/tmp/go"]);
    let later = tokio::time::timeout(Duration::from_secs(120), follow.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((later.stream, later.text.as_str()), (LogStream::Stdout, "later"));
}

fn tar_of(files: &[(&str, &str)]) -> bytes::Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, content.as_bytes()).unwrap();
    }
    bytes::Bytes::from(builder.into_inner().unwrap())
}

fn files_in(tar_bytes: &[u8]) -> BTreeMap<String, String> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            out.insert(path, content);
        }
    }
    out
}

#[tokio::test]
async fn archives_round_trip_on_a_stopped_container_with_a_volume() {
    let d = local().await;
    let s = suffix();
    let c = Cleanup::default();
    let vol = c.volume(&format!("berth-e2e-arv-{s}"));
    let writer = c.container(&format!("berth-e2e-arw-{s}"));
    let reader = c.container(&format!("berth-e2e-arr-{s}"));
    let with_volume = |name: &str, script: &str| ContainerSpec {
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        mounts: vec![Mount::Volume { name: vol.clone(), target: "/data".into(), read_only: false }],
        ..sleeper(name, BTreeMap::new())
    };
    d.create_container(&with_volume(&writer, "echo hello > /data/greeting; echo root > /marker")).await.unwrap();
    d.start_container(&writer).await.unwrap();
    wait_exited(&d, &writer).await;

    let downloaded = d.download_archive(&writer, "/data").await.unwrap();
    assert_eq!(files_in(&downloaded).get("data/greeting").map(String::as_str), Some("hello\n"));
    let rootfs = d.download_archive(&writer, "/marker").await.unwrap();
    assert_eq!(files_in(&rootfs).get("marker").map(String::as_str), Some("root\n"));

    d.upload_archive(&writer, "/data", tar_of(&[("uploaded.txt", "from berth\n")])).await.unwrap();
    let again = files_in(&d.download_archive(&writer, "/data").await.unwrap());
    assert_eq!(again.get("data/uploaded.txt").map(String::as_str), Some("from berth\n"));
    assert_eq!(again.get("data/greeting").map(String::as_str), Some("hello\n"));

    // The upload went into the volume: another container sees it.
    d.create_container(&with_volume(&reader, "cat /data/uploaded.txt /data/greeting")).await.unwrap();
    d.start_container(&reader).await.unwrap();
    wait_exited(&d, &reader).await;
    let lines = read_logs(&d, &reader, LogOptions::default()).await;
    assert_eq!(texts(&lines, LogStream::Stdout), ["from berth", "hello"]);

    let err = d.download_archive(&writer, "/no/such/path").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = d.upload_archive(&writer, "/no/such/dir", tar_of(&[("x", "y")])).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn unreachable_endpoints_are_unreachable() {
    let err = BollardDocker::connect("tcp://127.0.0.1:1", None).await.unwrap_err();
    assert!(matches!(&err, DockerError::Unreachable { endpoint, .. } if endpoint == "tcp://127.0.0.1:1"), "{err}");
    assert!(err.is_transient() && err.is_unreachable());
    let err = BollardDocker::connect("unix:///nonexistent/docker.sock", None).await.unwrap_err();
    assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
    // Nothing listens on the ssh port here (the ssh client runs and fails to connect).
    let err = BollardDocker::connect("ssh://nobody@127.0.0.1", None).await.unwrap_err();
    assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
    let err = BollardDocker::connect("ssh://nobody@127.0.0.1:2222", None).await.unwrap_err();
    assert!(matches!(err, DockerError::InvalidEndpoint { .. }), "{err}");
    let err = BollardDocker::connect("ftp://127.0.0.1", None).await.unwrap_err();
    assert!(matches!(err, DockerError::InvalidEndpoint { .. }), "{err}");
}
