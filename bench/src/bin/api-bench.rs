//! API server benchmark: durable creates per second with 1, 16 and 64 concurrent clients (berth
//! against etcd's own put path with its default fsync, same machine, same run, same payload),
//! watch delivery latency, list latency for 10,000 objects and the server's RSS with them.
//!
//! Run: `cargo run --release -p berth-bench --bin api-bench` (writes docs/benchmarks.md).

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use berth_bench::{Server, machine, ms, now_utc, percentile, write_section};
use futures::StreamExt;
use serde_json::{Value, json};

const RUN: Duration = Duration::from_secs(5);
const LIST_OBJECTS: usize = 10_000;

fn stack(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Stack",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"services": [
            {"name": "web", "image": "berth-e2e/busybox:latest",
             "command": ["sh", "-c", "exec httpd -f -p 8080"],
             "env": [{"name": "MODE", "value": "bench"}, {"name": "LEVEL", "value": "info"}],
             "ports": [{"containerPort": 8080}],
             "healthcheck": {"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"], "intervalSeconds": 5}},
            {"name": "worker", "image": "berth-e2e/busybox:latest", "command": ["sleep", "infinity"], "replicas": 2}
        ]}
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Runs `clients` tasks that each call `op(i)` until `RUN` has passed; returns ops/s.
async fn throughput<F, Fut>(clients: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let op = op.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while start.elapsed() < RUN {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                op(i).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn berth_creates(server: &Server, clients: usize, ns: &str) -> anyhow::Result<f64> {
    let client = server.client();
    let url = format!("{}/apis/berth.dev/v1alpha1/namespaces/{ns}/stacks", server.url);
    let ns = ns.to_string();
    throughput(clients, move |i| {
        let client = client.clone();
        let url = url.clone();
        let ns = ns.clone();
        async move {
            let resp = client.post(&url).json(&stack(&format!("s{i}"), &ns)).send().await?;
            if resp.status() != 201 {
                bail!("create answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
            }
            Ok(())
        }
    })
    .await
}

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd() -> anyhow::Result<Etcd> {
    let dir = tempfile::Builder::new().prefix("etcd-bench-").tempdir()?;
    let (client_port, peer_port) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client_port}");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer_port}")])
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting etcd (apt-get install etcd-server)")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("curl").args(["-sf", "-o", "/dev/null", &format!("{url}/health")]).status()?.success();
        if ok {
            return Ok(Etcd { child, url, _dir: dir });
        }
        if Instant::now() > deadline {
            bail!("etcd did not answer in 30s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn etcd_puts(etcd: &Etcd, clients: usize, prefix: &str) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let url = format!("{}/v3/kv/put", etcd.url);
    let value = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&stack("s", "etcd"))?);
    let prefix = prefix.to_string();
    throughput(clients, move |i| {
        let client = client.clone();
        let url = url.clone();
        let key = base64::engine::general_purpose::STANDARD.encode(format!("/registry/stacks/{prefix}/s{i}"));
        let value = value.clone();
        async move {
            let resp = client.post(&url).json(&json!({"key": key, "value": value})).send().await?;
            if !resp.status().is_success() {
                bail!("etcd put answered {}", resp.status());
            }
            Ok(())
        }
    })
    .await
}

/// Watch latency: one writer creates `n` objects one after another while a watcher streams.
async fn watch_latency(server: &Server, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let client = server.client();
    let ns = "bench-watch";
    let base = format!("{}/api/v1/namespaces/{ns}/configmaps", server.url);
    let list: Value = client.get(&base).send().await?.json().await?;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let resp = client.get(format!("{base}?watch=1&resourceVersion={rv}&allowWatchBookmarks=false")).send().await?;
    let received: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let rec = received.clone();
    let watcher = tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let now = Instant::now();
                if let Ok(ev) = serde_json::from_slice::<Value>(&line)
                    && let Some(name) = ev.pointer("/object/metadata/name").and_then(Value::as_str)
                {
                    rec.lock().unwrap().insert(name.to_string(), now);
                }
            }
        }
    });
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("w{i}");
        let t0 = Instant::now();
        let r = client
            .post(&base)
            .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}))
            .send()
            .await?;
        let t_ack = Instant::now();
        if r.status() != 201 {
            bail!("create answered {}", r.status());
        }
        sent.push((name, t0, t_ack));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watcher.abort();
    let got = received.lock().unwrap();
    if got.len() < n {
        bail!("the watcher saw {} of {n} events", got.len());
    }
    let mut from_ack = Vec::new();
    let mut from_request = Vec::new();
    for (name, t0, t_ack) in sent {
        let t_ev = got[&name];
        from_ack.push(t_ev.saturating_duration_since(t_ack));
        from_request.push(t_ev.saturating_duration_since(t0));
    }
    from_ack.sort();
    from_request.sort();
    Ok((from_ack, from_request))
}

async fn list_latency(server: &Server) -> anyhow::Result<(Vec<Duration>, usize, f64)> {
    let ns = "bench-list";
    let client = server.client();
    let url = format!("{}/apis/berth.dev/v1alpha1/namespaces/{ns}/stacks", server.url);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = client.clone();
        let url = url.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i as usize >= LIST_OBJECTS {
                    return anyhow::Ok(());
                }
                let r = client.post(&url).json(&stack(&format!("l{i}"), ns)).send().await?;
                if r.status() != 201 {
                    bail!("create answered {}", r.status());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rss = server.rss_mib()?;
    let mut samples = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let t0 = Instant::now();
        let body = client.get(&url).send().await?.bytes().await?;
        samples.push(t0.elapsed());
        bytes = body.len();
        let v: Value = serde_json::from_slice(&body)?;
        let n = v["items"].as_array().map(Vec::len).unwrap_or(0);
        if n != LIST_OBJECTS {
            bail!("list returned {n} items, expected {LIST_OBJECTS}");
        }
    }
    samples.sort();
    Ok((samples, bytes, rss))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = Server::start(&["--no-controllers", "--no-tls"])?;
    let etcd = start_etcd()?;
    let rss_empty = server.rss_mib()?;
    let mut rows = Vec::new();
    for (round, clients) in [1usize, 16, 64].into_iter().enumerate() {
        let b = berth_creates(&server, clients, &format!("bench-c{round}")).await?;
        let e = etcd_puts(&etcd, clients, &format!("c{round}")).await?;
        eprintln!("{clients:>3} clients: berth {b:.0}/s, etcd {e:.0}/s");
        rows.push((clients, b, e));
    }
    let (from_ack, from_request) = watch_latency(&server, 1000).await?;
    eprintln!("watch: p50 {} ms p99 {} ms after ack", ms(percentile(&from_ack, 50.0)), ms(percentile(&from_ack, 99.0)));
    let (list, bytes, rss) = list_latency(&server).await?;
    eprintln!("list 10k: p50 {} ms p99 {} ms", ms(percentile(&list, 50.0)), ms(percentile(&list, 99.0)));
    let total_objects: usize = berth_total(&server).await?;

    let mut out = String::new();
    out.push_str("## API server and store (issue 3)\n\n");
    out.push_str(&format!(
        "Measured {} on {}.\nReproduce: `cargo run --release -p berth-bench --bin api-bench`.\n\n",
        now_utc(),
        machine()
    ));
    out.push_str(
        "Durable creates: each client POSTs Stacks (~700 bytes, full admission) over HTTP/1.1 to `berth serve \
         --no-controllers` for 5 s; a create is counted when its 201 arrived, which berth sends only after the \
         write is flushed to disk (group commit). Baseline: etcd (Debian's `etcd-server`, default fsync) \
         through its JSON gateway `/v3/kv/put` with the same payload and concurrency.\n\n",
    );
    out.push_str("| clients | berth creates/s | etcd puts/s | berth / etcd |\n|---:|---:|---:|---:|\n");
    for (c, b, e) in &rows {
        out.push_str(&format!("| {c} | {b:.0} | {e:.0} | {:.2} |\n", b / e));
    }
    out.push_str(&format!(
        "\nWatch delivery (1,000 ConfigMaps created one by one, one watcher): from the write's acknowledgement to \
         the event at the watcher p50 {} ms, p99 {} ms (0 when the event arrived first); from the start of the \
         request p50 {} ms, p99 {} ms.\n\n",
        ms(percentile(&from_ack, 50.0)),
        ms(percentile(&from_ack, 99.0)),
        ms(percentile(&from_request, 50.0)),
        ms(percentile(&from_request, 99.0)),
    ));
    out.push_str(&format!(
        "List of {LIST_OBJECTS} Stacks in one namespace ({:.1} MiB of JSON), 20 requests: p50 {} ms, p99 {} ms.\n\n",
        bytes as f64 / 1024.0 / 1024.0,
        ms(percentile(&list, 50.0)),
        ms(percentile(&list, 99.0)),
    ));
    out.push_str(&format!(
        "Server RSS: {rss_empty:.1} MiB empty; {rss:.1} MiB holding {total_objects} objects (the {LIST_OBJECTS} listed \
         plus those of the runs above).\n"
    ));
    let path = write_section("api", &out)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

async fn berth_total(server: &Server) -> anyhow::Result<usize> {
    let v: Value =
        server.client().get(format!("{}/apis/berth.dev/v1alpha1/stacks", server.url)).send().await?.json().await?;
    Ok(v["items"].as_array().map(Vec::len).unwrap_or(0))
}
