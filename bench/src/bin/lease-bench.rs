//! Lease benchmark (issue 6): what provisioning Leases through berth costs, against the direct
//! floor measured in the same run on the same machine with the same image.
//!
//! 1. Apply → Ready of one Lease (one service, one published port), repeated: the time from the
//!    create request until the Lease's phase is Ready, through the real `berth serve`. The floor
//!    does what berth does for it directly through bollard: create the same hardened container
//!    on the tenant network (all capabilities dropped, read-only root with tmpfs, limits, a
//!    random published port), start it, wait the same verification window, inspect it.
//! 2. Throughput: N Leases created at once, until all are Ready, as Leases per minute; the floor
//!    creates and starts the same N containers with the best parallelism found, waits one
//!    verification window and inspects them.
//!
//! Both sides include the startup verification window (`leases.verifyWindow`, 1 s here): berth
//! declares a Lease Ready only after it, so a floor without it would compare different things.
//!
//! Run: `cargo run --release -p berth-bench --bin lease-bench` (writes its section of
//! docs/benchmarks.md). Needs the local test image (`hack/e2e-images.sh`). Everything it creates
//! carries its run's labels and is removed at the end, also when it fails.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use berth_bench::{Cleanup, Server, machine, median, now_utc, remove_labelled, run_id, secs, write_section};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use futures::StreamExt;
use serde_json::{Value, json};

const IMAGE: &str = "berth-e2e/busybox:latest";
const SINGLE_REPS: usize = 7;
const BATCH: usize = 20;
const BATCH_REPS: usize = 3;
const FLOOR_PARALLELISM: [usize; 3] = [4, 10, 20];
const VERIFY_WINDOW: Duration = Duration::from_secs(1);
const RUN_LABEL: &str = "berth-bench/run";
const MIB: i64 = 1024 * 1024;

const CONFIG: &str = r#"leases:
  skus:
    bench: {cpus: 0.05, memoryMb: 32, pids: 64}
  allowedRegistries: [local]
  verifyWindow: 1s
  bindAddress: 127.0.0.1
resyncInterval: 600s
"#;

struct Berth {
    server: Server,
    client: reqwest::Client,
}

impl Berth {
    fn leases_url(&self, ns: &str) -> String {
        format!("{}/apis/berth.dev/v1alpha1/namespaces/{ns}/leases", self.server.url)
    }

    async fn create(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        let lease = json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Lease",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"tenant": "bench", "sku": "bench", "duration": "1h", "services": [{
                "name": "app", "image": IMAGE, "command": ["sleep", "3600"], "ports": [{"containerPort": 8080}]
            }]}
        });
        let r = self.client.post(self.leases_url(ns)).json(&lease).send().await?;
        if r.status() != 201 {
            bail!("creating Lease {name} answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    async fn phase(&self, ns: &str, name: &str) -> anyhow::Result<(String, Value)> {
        let l: Value =
            self.client.get(format!("{}/{name}", self.leases_url(ns))).send().await?.error_for_status()?.json().await?;
        Ok((l["status"]["phase"].as_str().unwrap_or("").to_string(), l))
    }

    /// Polls every 10 ms until the Lease is Ready.
    async fn wait_ready(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let (phase, l) = self.phase(ns, name).await?;
            if phase == "Ready" {
                return Ok(());
            }
            if phase == "Failed" || started.elapsed() > Duration::from_secs(180) {
                // The server's data dir goes with it: keep its log.
                let kept = std::env::temp_dir().join("lease-bench-failure.log");
                let _ = std::fs::copy(self.server.data_dir.path().join("serve.log"), &kept);
                bail!(
                    "Lease {ns}/{name} not Ready after {:?}: {:#}; its server's log is in {}",
                    started.elapsed(),
                    l["status"],
                    kept.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn delete_all(&self, ns: &str) -> anyhow::Result<()> {
        self.client.delete(self.leases_url(ns)).send().await?.error_for_status()?;
        let started = Instant::now();
        loop {
            let list: Value = self.client.get(self.leases_url(ns)).send().await?.error_for_status()?.json().await?;
            if list["items"].as_array().is_none_or(|i| i.is_empty()) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!("Leases of {ns} not deleted within 180 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The hardened container berth creates for a Lease instance, created and started directly;
/// returns its id.
async fn direct_container(docker: &Docker, name: &str, network: &str, run: &str) -> anyhow::Result<String> {
    let labels = HashMap::from([(RUN_LABEL.to_string(), run.to_string())]);
    let tmpfs = HashMap::from([
        ("/tmp".to_string(), "size=64m,nosuid,nodev".to_string()),
        ("/run".to_string(), "size=64m,nosuid,nodev".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        entrypoint: Some(vec!["sleep".into(), "3600".into()]),
        labels: Some(labels),
        exposed_ports: Some(vec!["8080/tcp".to_string()]),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_string()),
            restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            pids_limit: Some(64),
            memory: Some(32 * MIB),
            memory_swap: Some(32 * MIB),
            nano_cpus: Some(50_000_000),
            port_bindings: Some(HashMap::from([(
                "8080/tcp".to_string(),
                Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker.create_container(Some(CreateContainerOptionsBuilder::new().name(name).build()), body).await?;
    docker.start_container(&created.id, None).await?;
    Ok(created.id)
}

/// After the verification window: every container still runs (what berth's startup check asks).
async fn verify(docker: &Docker, ids: &[String]) -> anyhow::Result<()> {
    tokio::time::sleep(VERIFY_WINDOW).await;
    for id in ids {
        let c = docker.inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>).await?;
        if c.state.and_then(|s| s.running) != Some(true) {
            bail!("floor container {id} stopped");
        }
    }
    Ok(())
}

/// The floor of `n` Leases: `n` hardened containers created and started `parallelism` at a
/// time on an existing tenant network, one verification window, inspections.
async fn direct(
    docker: &Docker,
    prefix: &str,
    network: &str,
    run: &str,
    n: usize,
    parallelism: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let jobs = (0..n).map(|i| {
        let name = format!("{prefix}-{i:02}");
        async move { direct_container(docker, &name, network, run).await }
    });
    let results: Vec<anyhow::Result<String>> =
        futures::stream::iter(jobs).buffer_unordered(parallelism).collect().await;
    let ids = results.into_iter().collect::<anyhow::Result<Vec<String>>>()?;
    verify(docker, &ids).await?;
    Ok(started.elapsed())
}

async fn remove_run_containers(docker: &Docker, run: &str) -> anyhow::Result<()> {
    // Containers only: the floor's tenant network stays for the next repetition, as berth's does.
    let filters = HashMap::from([("label".to_string(), vec![format!("{RUN_LABEL}={run}")])]);
    let list = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
        ))
        .await?;
    for id in list.into_iter().filter_map(|c| c.id) {
        let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new().force(true).build();
        docker.remove_container(&id, Some(opts)).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run = run_id();
    let instance = format!("lbench-{run}");
    let _cleanup = Cleanup { filters: vec![format!("berth.dev/instance={instance}"), format!("{RUN_LABEL}={run}")] };
    let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
    if docker.inspect_image(IMAGE).await.is_err() {
        bail!("the test image {IMAGE} is missing: run hack/e2e-images.sh");
    }
    let config = std::env::temp_dir().join(format!("berth-lease-bench-{run}.yaml"));
    std::fs::write(&config, CONFIG)?;
    let server = Server::start(&["--no-tls", "--instance", &instance, "--config", &config.display().to_string()])?;
    let client = server.client();
    let b = Berth { server, client };

    // The floor's tenant network, created once like berth's.
    let floor_net = format!("bench-floor-{run}");
    docker
        .create_network(NetworkCreateRequest {
            name: floor_net.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(RUN_LABEL.to_string(), run.clone())])),
            ..Default::default()
        })
        .await?;

    // Warm-up: one Lease on each side (the tenant network of berth, the image in the cache).
    let ns = format!("single-{run}");
    b.server.create_namespace(&b.client, &ns).await?;
    b.create(&ns, "warm").await?;
    b.wait_ready(&ns, "warm").await?;
    direct(&docker, &format!("floorwarm-{run}"), &floor_net, &run, 1, 1).await?;

    // 1. One Lease, interleaved with the floor.
    let mut berth_single = Vec::new();
    let mut floor_single = Vec::new();
    for i in 0..SINGLE_REPS {
        let name = format!("one-{i}");
        let started = Instant::now();
        b.create(&ns, &name).await?;
        b.wait_ready(&ns, &name).await?;
        berth_single.push(started.elapsed());
        floor_single.push(direct(&docker, &format!("floor1-{run}-{i}"), &floor_net, &run, 1, 1).await?);
    }
    b.delete_all(&ns).await?;
    remove_run_containers(&docker, &run).await?;
    println!("single: berth {:?}, floor {:?}", median(&berth_single), median(&floor_single));

    // 2. BATCH Leases at once.
    let mut berth_batch = Vec::new();
    let mut floor_batch: HashMap<usize, Vec<Duration>> = HashMap::new();
    for rep in 0..BATCH_REPS {
        let ns = format!("batch{rep}-{run}");
        b.server.create_namespace(&b.client, &ns).await?;
        let started = Instant::now();
        let creates = (0..BATCH).map(|i| {
            let (b, ns) = (&b, &ns);
            async move { b.create(ns, &format!("l{i:02}")).await }
        });
        for r in futures::future::join_all(creates).await {
            r?;
        }
        for i in 0..BATCH {
            b.wait_ready(&ns, &format!("l{i:02}")).await?;
        }
        berth_batch.push(started.elapsed());
        b.delete_all(&ns).await?;
        for p in FLOOR_PARALLELISM {
            let t = direct(&docker, &format!("floorb-{run}-{rep}-{p}"), &floor_net, &run, BATCH, p).await?;
            floor_batch.entry(p).or_default().push(t);
            remove_run_containers(&docker, &run).await?;
        }
        println!("batch {rep}: berth {:?}", berth_batch.last());
    }
    let (best_p, floor_best) =
        floor_batch.iter().map(|(p, v)| (*p, median(v))).min_by_key(|(_, d)| *d).expect("floor measured");
    let berth_b = median(&berth_batch);
    let per_min = |d: Duration| BATCH as f64 / d.as_secs_f64() * 60.0;

    drop(b);
    remove_labelled(&docker, &format!("berth.dev/instance={instance}")).await?;
    let single_b = median(&berth_single);
    let single_f = median(&floor_single);
    let body = format!(
        "## Leases on Docker (issue 6)\n\n\
         Measured {} on {}; Docker Engine {}, image `{IMAGE}` (`sleep 3600`), SKU 0.05 CPU / 32 MiB / 64 PIDs, \
         `leases.verifyWindow: 1s`.\n\
         Reproduce: `cargo run --release -p berth-bench --bin lease-bench`.\n\n\
         What is compared: berth provisions a Lease (admission, placement, tenant network, hardened container with a \
         random published port, start, startup verification over the window, status with endpoints); the floor \
         creates and starts the same hardened container directly through bollard on an existing network, waits the \
         same verification window and inspects it. Both include the 1 s window: a Lease is Ready only after it.\n\n\
         | measure | berth | direct floor | berth / floor |\n|---|---:|---:|---:|\n\
         | one Lease, create → Ready (median of {SINGLE_REPS}) | {} s | {} s | {:.2} |\n\
         | {BATCH} Leases at once, all Ready (median of {BATCH_REPS}) | {} s | {} s ({best_p} at a time) | {:.2} |\n\
         | Leases provisioned per minute ({BATCH} at once) | {:.0} | {:.0} | {:.2} |\n\n\
         Without the verification window, berth's own work for one Lease is about {} s against the floor's {} s.\n",
        now_utc(),
        machine(),
        docker.version().await.ok().and_then(|v| v.version).unwrap_or_default(),
        secs(single_b),
        secs(single_f),
        single_b.as_secs_f64() / single_f.as_secs_f64(),
        secs(berth_b),
        secs(floor_best),
        berth_b.as_secs_f64() / floor_best.as_secs_f64(),
        per_min(berth_b),
        per_min(floor_best),
        per_min(berth_b) / per_min(floor_best),
        secs(single_b.saturating_sub(VERIFY_WINDOW)),
        secs(single_f.saturating_sub(VERIFY_WINDOW)),
    );
    let path = write_section("lease-bench", &body)?;
    println!("{body}\nwritten to {}", path.display());
    Ok(())
}
