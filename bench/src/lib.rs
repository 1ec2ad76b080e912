//! Shared pieces of berth's benchmarks: starting the real `berth serve` binary, talking to it
//! over HTTP with its kubeconfig's token, statistics, and writing one section of
//! `docs/benchmarks.md` per benchmark (the section is replaced, the rest of the file kept).
//!
//! Benchmarks are programs, not tests: they never run inside `hack/test.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ has a parent").to_path_buf()
}

/// The `berth` binary of the release profile, built when missing or older than the sources;
/// `$BERTH_BIN` when set (to measure a given build, e.g. the previous commit's, against the
/// same baselines).
pub fn berth_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BERTH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let root = repo_root();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "berth"])
        .current_dir(&root)
        .status()
        .context("running cargo build --release -p berth")?;
    if !status.success() {
        bail!("cargo build --release -p berth failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("berth"))
}

/// A running `berth serve`, killed on drop.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Admin bearer token.
    pub token: String,
    /// Data dir (kept alive with the server).
    pub data_dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `berth serve` on a fresh data dir with the given extra arguments and waits until
    /// it answers.
    pub fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let berth = berth_binary()?;
        let data_dir = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
        let log = std::fs::File::create(data_dir.path().join("serve.log"))?;
        let child = Command::new(&berth)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("BERTH_LOG", std::env::var("BERTH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", berth.display()))?;
        let kubeconfig = data_dir.path().join("kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&kubeconfig)
                && let Some((url, token)) = parse_kubeconfig(&text)
            {
                let ok = Command::new("curl")
                    .args(["-sf", "-o", "/dev/null", &format!("{url}/readyz")])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return Ok(Self { child, url, token, data_dir });
                }
            }
            if Instant::now() > deadline {
                bail!("berth serve did not become ready in 30s; see {}", data_dir.path().join("serve.log").display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident set size of the server process, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        rss_mib(self.child.id())
    }

    /// An HTTP client with the admin token.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse().expect("token is a valid header"),
        );
        reqwest::Client::builder().default_headers(headers).pool_max_idle_per_host(256).build().expect("client")
    }

    /// Creates namespace `ns` through `client` (one of [`Server::client`]).
    pub async fn create_namespace(&self, client: &reqwest::Client, ns: &str) -> anyhow::Result<()> {
        let r = client
            .post(format!("{}/api/v1/namespaces", self.url))
            .json(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("creating namespace {ns}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }
}

/// CPU time a process has used so far, user and system, in seconds (`"self"` for this one).
pub fn cpu_seconds(pid: &str) -> anyhow::Result<(f64, f64)> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("no command name in /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("/proc/PID/stat is too short")?.parse::<f64>()? / ticks)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Ok((field(11)?, field(12)?))
}

/// `VmRSS` of a process, in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

/// Server URL and token from a kubeconfig berth wrote.
pub fn parse_kubeconfig(text: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_yaml_ng::from_str(text).ok()?;
    let url = v.pointer("/clusters/0/cluster/server")?.as_str()?.to_string();
    let token = v.pointer("/users/0/user/token")?.as_str()?.to_string();
    Some((url, token))
}

/// Percentile (0–100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A short description of the machine, for the report.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0))
        })
        .unwrap_or(0.0);
    let disk = Command::new("df")
        .args(["-h", "--output=source,fstype", &std::env::temp_dir().display().to_string()])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("{cpus} cores ({model}), {:.0} GiB RAM, temp dir on {disk}", mem / 1024.0 / 1024.0)
}

/// The start of `docs/benchmarks.md` when a benchmark creates it.
pub const INTRO: &str = "# berth benchmarks

Each section below is written by one benchmark program in `bench/` (`cargo run --release -p \
berth-bench --bin NAME`), which replaces only its own section. A section says what it measures and \
how, the command that reproduces it, and berth's baseline (etcd, Docker Compose, direct Docker \
calls, …), measured in the same run on the same machine. Every figure is from one run on the machine \
named in its section (the development machine has 2 cores, shared with other work, so figures move \
from run to run). Benchmarks never run inside `hack/test.sh`, and no test asserts a timing.
";

/// Replaces the section `id` of `docs/benchmarks.md` (between `<!-- bench:id -->` markers),
/// appending it when absent.
pub fn write_section(id: &str, body: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join("docs").join("benchmarks.md");
    std::fs::create_dir_all(path.parent().expect("docs/"))?;
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| INTRO.to_string());
    let start = format!("<!-- bench:{id} -->");
    let end = format!("<!-- /bench:{id} -->");
    let section = format!("{start}\n{}\n{end}", body.trim_end());
    match (text.find(&start), text.find(&end)) {
        (Some(s), Some(e)) if e > s => text.replace_range(s..e + end.len(), &section),
        _ => {
            text.push('\n');
            text.push_str(&section);
            text.push('\n');
        }
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Today's date and time (UTC), for the report.
pub fn now_utc() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// A short id naming one run (its objects carry it in a label).
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:x}", nanos & 0xffff_ffff)
}

/// Removes, on drop, every container, network and volume labelled with `filters` (all of this
/// run's objects, berth's and the baselines').
pub struct Cleanup {
    /// Label filters (`key=value`) of the objects to remove.
    pub filters: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filters = self.filters.clone();
        // Drop runs inside the runtime: clean up on a thread (and a connection) of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let docker = Docker::connect_with_local_defaults().map_err(std::io::Error::other)?;
            rt.block_on(async {
                for f in &filters {
                    if let Err(e) = remove_labelled(&docker, f).await {
                        eprintln!("cleanup of {f}: {e:#}");
                    }
                }
            });
            std::io::Result::Ok(())
        })
        .join();
    }
}

/// Removes every container, network and volume labelled `label` (`key=value`).
pub async fn remove_labelled(docker: &Docker, label: &str) -> anyhow::Result<()> {
    let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
    let list =
        docker.list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build())).await?;
    let removals = list.iter().filter_map(|c| c.id.clone()).map(|id| {
        let docker = docker.clone();
        async move {
            let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            let _ = docker.remove_container(&id, Some(opts)).await;
        }
    });
    futures::stream::iter(removals).buffer_unordered(8).collect::<Vec<_>>().await;
    // A network whose containers were just removed may still count endpoints for a moment.
    for attempt in 0..5 {
        let networks = docker.list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build())).await?;
        let mut left = Vec::new();
        for n in networks {
            if let Some(id) = n.id
                && let Err(e) = docker.remove_network(&id).await
            {
                left.push(format!("{}: {e}", n.name.unwrap_or(id)));
            }
        }
        if left.is_empty() {
            break;
        }
        if attempt == 4 {
            eprintln!("warning: networks left behind (remove them by hand): {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let volumes = docker.list_volumes(Some(ListVolumesOptionsBuilder::new().filters(&filters).build())).await?;
    for v in volumes.volumes.unwrap_or_default() {
        let _ = docker.remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    }
    Ok(())
}

/// The median of `samples`.
pub fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    percentile(&s, 50.0)
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// CPU time (user + system) process `pid` has used.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let (user, system) = cpu_seconds(&pid.to_string())?;
    Ok(Duration::from_secs_f64(user + system))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows_while_it_computes() {
        let before = process_cpu(std::process::id()).unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let (user, system) = cpu_seconds("self").unwrap();
        let after = process_cpu(std::process::id()).unwrap();
        assert!(after >= before + Duration::from_millis(200), "{before:?} → {after:?}");
        assert!(user + system >= after.as_secs_f64() - 0.02, "self and pid read the same counters");
    }
}
