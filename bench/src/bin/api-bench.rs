//! API server benchmark: durable creates per second with 1, 16 and 64 concurrent clients (berth
//! against etcd with its default fsync, same machine, same run, same payload: through etcd's
//! native gRPC put and through its HTTP/JSON gateway), watch delivery latency, and, on a fresh
//! server holding exactly 10,000 Stacks, list latency and RSS.
//!
//! Run: `cargo run --release -p berth-bench --bin api-bench` (writes its section of
//! docs/benchmarks.md). Needs Debian's `etcd-server` (`apt-get install etcd-server`) and curl.
//! `-- --writes N [ROUNDS]` measures only the durable writes at N clients (ROUNDS times, berth and
//! etcd in turn) and writes nothing.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use berth_bench::{Server, cpu_seconds, machine, ms, now_utc, percentile, rss_mib, write_section};
use futures::StreamExt;
use serde_json::{Value, json};

/// How long each throughput measurement runs.
const RUN: Duration = Duration::from_secs(5);
/// Concurrent clients of the throughput measurements.
const CLIENTS: [usize; 3] = [1, 16, 64];
/// Rounds of each throughput measurement (the three systems in turn); the figures are medians.
const ROUNDS: usize = 5;
/// Objects of the list and RSS measurements.
const LIST_OBJECTS: usize = 10_000;
/// Lists timed.
const LISTS: usize = 20;
/// Writes of the watch latency measurement.
const WATCH_WRITES: usize = 1_000;

/// The Stack every create sends (and etcd stores as its value): two services, ~700 bytes.
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

/// Runs `clients` tasks that each call `op(i)` (with a fresh `i` each time) until `RUN` has
/// passed; returns completed operations per second.
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
        let body = serde_json::to_vec(&stack(&format!("s{i}"), &ns));
        async move {
            let resp = client.post(&url).header("content-type", "application/json").body(body?).send().await?;
            let status = resp.status();
            // Read to the end: the answer is complete, and the connection goes back to the pool.
            let answer = resp.bytes().await?;
            if status != 201 {
                bail!("create answered {status}: {}", String::from_utf8_lossy(&answer));
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

/// `etcd 3.4.23`, from `etcd --version` (`etcd Version: 3.4.23`).
fn etcd_version() -> String {
    let out = Command::new("etcd").arg("--version").output().ok();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    match text.lines().find_map(|l| l.strip_prefix("etcd Version:")) {
        Some(v) => format!("etcd {}", v.trim()),
        None => "etcd (version unknown)".into(),
    }
}

/// `10,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Starts a one-member etcd with its defaults (fsync on every commit) on a fresh data dir.
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
        .context("starting etcd; install it with `apt-get install etcd-server`")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("curl").args(["-sf", "-o", "/dev/null", &format!("{url}/health")]).status()?.success();
        if ok {
            return Ok(Etcd { child, url, _dir: dir });
        }
        if Instant::now() > deadline {
            bail!("etcd did not answer on {url}/health within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a throughput measurement; returns its rate and the CPU time per operation of process
/// `pid` (the server) and of this one (the clients), user + system, as text.
async fn with_cpu(
    pid: &str,
    run: impl std::future::Future<Output = anyhow::Result<f64>>,
) -> anyhow::Result<(f64, String)> {
    let (server0, client0) = (cpu_seconds(pid)?, cpu_seconds("self")?);
    let start = Instant::now();
    let rate = run.await?;
    let ops = rate * start.elapsed().as_secs_f64();
    let (server1, client1) = (cpu_seconds(pid)?, cpu_seconds("self")?);
    let us = |a: f64, b: f64| (b - a) * 1e6 / ops;
    Ok((
        rate,
        format!(
            "server {:.0}+{:.0} µs, clients {:.0}+{:.0} µs per op",
            us(server0.0, server1.0),
            us(server0.1, server1.1),
            us(client0.0, client1.0),
            us(client0.1, client1.1)
        ),
    ))
}

/// etcd's HTTP/JSON gateway (`POST /v3/kv/put`), over HTTP/1.1 as the berth clients.
async fn etcd_gateway_puts(etcd: &Etcd, clients: usize, prefix: &str) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let url = format!("{}/v3/kv/put", etcd.url);
    let prefix = prefix.to_string();
    throughput(clients, move |i| {
        let client = client.clone();
        let url = url.clone();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let key = b64(format!("/registry/stacks/{prefix}/s{i}").as_bytes());
        let value = serde_json::to_vec(&stack(&format!("s{i}"), &prefix)).map(|v| b64(&v));
        async move {
            let resp = client.post(&url).json(&json!({"key": key, "value": value?})).send().await?;
            let status = resp.status();
            let answer = resp.bytes().await?;
            if !status.is_success() {
                bail!("etcd put answered {status}: {}", String::from_utf8_lossy(&answer));
            }
            Ok(())
        }
    })
    .await
}

/// Appends a length-delimited protobuf field.
fn proto_bytes(out: &mut Vec<u8>, field: u8, data: &[u8]) {
    out.push((field << 3) | 2);
    let mut len = data.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(data);
}

/// A gRPC message carrying `etcdserverpb.PutRequest { key = 1, value = 2 }`.
fn grpc_put(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(key.len() + value.len() + 8);
    proto_bytes(&mut msg, 1, key);
    proto_bytes(&mut msg, 2, value);
    let mut frame = Vec::with_capacity(msg.len() + 5);
    frame.push(0); // not compressed
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

/// etcd's own put path: gRPC `etcdserverpb.KV/Put` over one HTTP/2 connection with one stream
/// per client, as etcd's `benchmark put --conns 1 --clients N` does.
async fn etcd_grpc_puts(etcd: &Etcd, clients: usize, prefix: &str) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let url = format!("{}/etcdserverpb.KV/Put", etcd.url);
    let prefix = prefix.to_string();
    throughput(clients, move |i| {
        let client = client.clone();
        let url = url.clone();
        let key = format!("/registry/stacks/{prefix}/s{i}");
        let value = serde_json::to_vec(&stack(&format!("s{i}"), &prefix));
        async move {
            let resp = client
                .post(&url)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(grpc_put(key.as_bytes(), &value?))
                .send()
                .await?;
            // A failure is a trailers-only response: grpc-status in the headers, no message.
            let status = resp.status();
            let grpc_status = resp.headers().get("grpc-status").map(|v| v.to_str().unwrap_or("?").to_string());
            let body = resp.bytes().await?;
            if !status.is_success() || grpc_status.as_deref().is_some_and(|s| s != "0") || body.len() < 5 {
                bail!("etcd gRPC put answered HTTP {status}, grpc-status {grpc_status:?}, {} bytes", body.len());
            }
            Ok(())
        }
    })
    .await
}

/// Watch delivery: one writer creates `n` ConfigMaps one after another while one watcher
/// streams. Returns, per write, the time from its acknowledgement to its event at the watcher
/// (zero when the event came first) and from the start of its request, and how many events
/// came before the acknowledgement.
async fn watch_latency(server: &Server, n: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, usize)> {
    let client = server.client();
    let ns = "bench-watch";
    let base = format!("{}/api/v1/namespaces/{ns}/configmaps", server.url);
    let list: Value = client.get(&base).send().await?.json().await?;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let resp = client.get(format!("{base}?watch=1&resourceVersion={rv}&allowWatchBookmarks=false")).send().await?;
    if resp.status() != 200 {
        bail!("watch answered {}", resp.status());
    }
    let received: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let rec = received.clone();
    let watcher = tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
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
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
        let t0 = Instant::now();
        let r = client.post(&base).json(&body).send().await?;
        let status = r.status();
        r.bytes().await?;
        let t_ack = Instant::now();
        if status != 201 {
            bail!("create answered {status}");
        }
        sent.push((name, t0, t_ack));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watcher.abort();
    let got = received.lock().unwrap();
    if got.len() < n {
        bail!("the watcher saw {} of {n} events within 30 s", got.len());
    }
    let (mut from_ack, mut from_request, mut early) = (Vec::new(), Vec::new(), 0);
    for (name, t0, t_ack) in sent {
        let t_ev = got[&name];
        early += usize::from(t_ev < t_ack);
        from_ack.push(t_ev.saturating_duration_since(t_ack));
        from_request.push(t_ev.saturating_duration_since(t0));
    }
    from_ack.sort();
    from_request.sort();
    Ok((from_ack, from_request, early))
}

/// Creates `LIST_OBJECTS` Stacks in one namespace with 32 concurrent clients.
async fn fill(server: &Server, ns: &str) -> anyhow::Result<()> {
    let client = server.client();
    let url = format!("{}/apis/berth.dev/v1alpha1/namespaces/{ns}/stacks", server.url);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, url, next, ns) = (client.clone(), url.clone(), next.clone(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i as usize >= LIST_OBJECTS {
                    return anyhow::Ok(());
                }
                let r = client.post(&url).json(&stack(&format!("l{i}"), &ns)).send().await?;
                let status = r.status();
                r.bytes().await?;
                if status != 201 {
                    bail!("create answered {status}");
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Times `LISTS` lists of the namespace, one after another; returns the sorted latencies (to
/// the last byte of the body) and the body size.
async fn list_latency(server: &Server, ns: &str) -> anyhow::Result<(Vec<Duration>, usize)> {
    let client = server.client();
    let url = format!("{}/apis/berth.dev/v1alpha1/namespaces/{ns}/stacks", server.url);
    let mut samples = Vec::new();
    let mut bytes = 0;
    for _ in 0..LISTS {
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
    Ok((samples, bytes))
}

/// Throughput of one system at one concurrency.
/// The medians of a concurrency's rounds, and the range of berth / etcd gRPC over its rounds.
struct Row {
    clients: usize,
    berth: f64,
    etcd_grpc: f64,
    etcd_gateway: f64,
    grpc_ratio_range: (f64, f64),
    rounds_below_grpc: usize,
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = Server::start(&["--no-controllers", "--no-tls"])?;
    let etcd = start_etcd()?;

    // `api-bench --writes N [ROUNDS]`: only the durable writes at N clients, berth and etcd gRPC
    // in turn ROUNDS times (3 by default), printed and not written to the docs (for trying a change to the write path).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n, rest @ ..] = args.as_slice()
        && flag == "--writes"
    {
        let clients: usize = n.parse().context("--writes takes a number of clients")?;
        let rounds: usize = match rest {
            [] => 3,
            [r] => r.parse().context("--writes N [ROUNDS]: ROUNDS is a number")?,
            _ => bail!("usage: api-bench [--writes CLIENTS [ROUNDS]]"),
        };
        let (server_pid, etcd_pid) = (server.child.id().to_string(), etcd.child.id().to_string());
        for round in 0..rounds {
            let (berth, berth_cpu) =
                with_cpu(&server_pid, berth_creates(&server, clients, &format!("try-b{round}"))).await?;
            let (grpc, etcd_cpu) =
                with_cpu(&etcd_pid, etcd_grpc_puts(&etcd, clients, &format!("try-g{round}"))).await?;
            println!(
                "{clients} clients: berth {berth:.0}/s ({berth_cpu}), etcd gRPC {grpc:.0}/s ({etcd_cpu}), ratio {:.2}",
                berth / grpc
            );
        }
        return Ok(());
    }

    // Durable writes: at each concurrency, ROUNDS rounds of the three systems in turn.
    let mut rows = Vec::new();
    for (c, clients) in CLIENTS.into_iter().enumerate() {
        let (mut berth, mut grpc, mut gateway) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let b = berth_creates(&server, clients, &format!("bench-c{c}-r{round}")).await?;
            let g = etcd_grpc_puts(&etcd, clients, &format!("grpc-c{c}-r{round}")).await?;
            let w = etcd_gateway_puts(&etcd, clients, &format!("gw-c{c}-r{round}")).await?;
            eprintln!("{clients:>3} clients: berth {b:.0}/s, etcd gRPC {g:.0}/s, etcd gateway {w:.0}/s");
            berth.push(b);
            grpc.push(g);
            gateway.push(w);
        }
        let ratios: Vec<f64> = berth.iter().zip(&grpc).map(|(b, g)| b / g).collect();
        let range = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        rows.push(Row {
            clients,
            berth: median_of(berth),
            etcd_grpc: median_of(grpc),
            etcd_gateway: median_of(gateway),
            grpc_ratio_range: range,
            rounds_below_grpc: ratios.iter().filter(|r| **r < 1.0).count(),
        });
    }
    let etcd_rss = rss_mib(etcd.child.id())?;
    drop(etcd);

    let (from_ack, from_request, early) = watch_latency(&server, WATCH_WRITES).await?;
    eprintln!(
        "watch: p50 {} ms, p99 {} ms after the acknowledgement ({early} of {WATCH_WRITES} events came first)",
        ms(percentile(&from_ack, 50.0)),
        ms(percentile(&from_ack, 99.0))
    );
    drop(server);

    // A fresh server holding exactly LIST_OBJECTS Stacks.
    let server = Server::start(&["--no-controllers", "--no-tls"])?;
    let rss_empty = server.rss_mib()?;
    fill(&server, "bench-list").await?;
    let rss_full = server.rss_mib()?;
    let (list, bytes) = list_latency(&server, "bench-list").await?;
    let rss_after_lists = server.rss_mib()?;
    eprintln!(
        "list {LIST_OBJECTS}: p50 {} ms, p99 {} ms; RSS {rss_empty:.1} MiB empty, {rss_full:.1} MiB with {LIST_OBJECTS} Stacks",
        ms(percentile(&list, 50.0)),
        ms(percentile(&list, 99.0))
    );

    let n = thousands(LIST_OBJECTS);
    let slowest_list = list.last().copied().unwrap_or_default();
    let mut out = String::new();
    out.push_str("## API server and store\n\n");
    out.push_str(&format!(
        "Measured {} on {}; the load generator runs on the same cores.\nReproduce: `cargo run --release -p \
         berth-bench --bin api-bench` (needs Debian's `etcd-server`).\n\n",
        now_utc(),
        machine()
    ));
    out.push_str(&format!(
        "**Durable creates.** Each client creates Stacks (~700 bytes of JSON, two services) one after another \
         for {} s; an operation counts when its whole answer arrived. berth: `POST` over HTTP/1.1 (a kept-alive \
         connection per client) with a bearer token to `berth serve --no-controllers --no-tls`, with full \
         admission (schema with defaults and pruning, semantic validation, uid, timestamps); the 201 is sent only \
         after the write is in sled's log and the log is fdatasynced; writes in flight share a flush. Baseline: \
         {} (Debian's `etcd-server`), one member with its defaults, which fdatasyncs its WAL before it answers a \
         put, storing the same bytes under one key per object, through (a) its native gRPC `KV/Put` over one \
         HTTP/2 connection with a stream per client (like etcd's own `benchmark put --conns 1`), and (b) its \
         HTTP/JSON gateway `/v3/kv/put` over HTTP/1.1 with a connection per client. (b) is like for like with \
         berth's HTTP+JSON path; (a) is the fastest way into etcd. Either way etcd does less per write than \
         berth: no schema, no admission, no object metadata. At each concurrency the three run one after another, \
         {ROUNDS} rounds; the table shows each system's median rate, and the range of berth / etcd gRPC over the \
         rounds (on a shared 2-core machine a single round moves by ±15 %).\n\n",
        RUN.as_secs(),
        etcd_version()
    ));
    out.push_str(
        "| clients | berth creates/s | etcd gRPC puts/s | berth / etcd gRPC | per round | etcd gateway puts/s | berth / \
         etcd gateway |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2}–{:.2} | {:.0} | {:.2} |\n",
            r.clients,
            r.berth,
            r.etcd_grpc,
            r.berth / r.etcd_grpc,
            r.grpc_ratio_range.0,
            r.grpc_ratio_range.1,
            r.etcd_gateway,
            r.berth / r.etcd_gateway
        ));
    }
    out.push_str(&format!(
        "\netcd's RSS after these puts: {etcd_rss:.1} MiB.\n\n**Watch delivery.** One client creates {} \
         ConfigMaps one after another while another watches the namespace (HTTP/1.1, newline-delimited JSON). From \
         the write's acknowledgement (its whole 201 answer arrived) to its event at the watcher: p50 {} ms, p99 {} \
         ms; {early} of the {} events arrived before the acknowledgement and count as 0 (berth publishes a durable \
         write to watchers just before it answers the writer). From the start of the create request to the event: \
         p50 {} ms, p99 {} ms.\n\n",
        thousands(WATCH_WRITES),
        ms(percentile(&from_ack, 50.0)),
        ms(percentile(&from_ack, 99.0)),
        thousands(WATCH_WRITES),
        ms(percentile(&from_request, 50.0)),
        ms(percentile(&from_request, 99.0)),
    ));
    out.push_str(&format!(
        "**List and memory**, on a fresh server holding exactly {n} Stacks in one namespace (created by 32 \
         concurrent clients) and nothing else. {LISTS} lists of the namespace, one after another, each timed to the \
         last byte of its {:.1} MiB JSON body: median {} ms, slowest {} ms. Server RSS: {rss_empty:.1} MiB empty, \
         {rss_full:.1} MiB holding the {n} Stacks, {rss_after_lists:.1} MiB after the lists.\n",
        bytes as f64 / 1024.0 / 1024.0,
        ms(percentile(&list, 50.0)),
        ms(slowest_list),
    ));
    let below: Vec<String> = rows
        .iter()
        .filter(|r| r.rounds_below_grpc > 0)
        .map(|r| {
            let clients = if r.clients == 1 { "1 client".to_string() } else { format!("{} clients", r.clients) };
            format!("{} of {ROUNDS} at {clients}", r.rounds_below_grpc)
        })
        .collect();
    let single_rounds = if below.is_empty() {
        "every single round was above etcd gRPC too".to_string()
    } else {
        format!("single rounds below etcd gRPC: {}", below.join(", "))
    };
    let against_etcd = if rows.iter().all(|r| r.berth >= r.etcd_grpc && r.berth >= r.etcd_gateway) {
        format!("met against both etcd paths at every concurrency, by the medians ({single_rounds})")
    } else {
        let short: Vec<String> =
            rows.iter().filter(|r| r.berth < r.etcd_grpc).map(|r| format!("{} clients", r.clients)).collect();
        let gateway = if rows.iter().all(|r| r.berth >= r.etcd_gateway) {
            "met against the gateway at every concurrency"
        } else {
            "not met against the gateway at every concurrency either"
        };
        format!("{gateway}; against gRPC missed at {}", short.join(", "))
    };
    out.push_str(&format!(
        "\nTargets of issue 3, in this run: ≥ 5,000 durable creates/s at 16 clients: {}; watch p99 < 10 ms: {}; \
         {n}-object list < 100 ms: {} for the median, {} for the slowest; at least etcd's write throughput: \
         {against_etcd}.\n",
        met(rows.iter().find(|r| r.clients == 16).is_some_and(|r| r.berth >= 5000.0)),
        met(percentile(&from_ack, 99.0) < Duration::from_millis(10)),
        met(percentile(&list, 50.0) < Duration::from_millis(100)),
        met(slowest_list < Duration::from_millis(100)),
    ));
    let path = write_section("api", &out)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}
