//! Helpers shared by the end-to-end tests: find (or build) the real `berth` binary, run
//! `berth serve` on a data directory and stop it gently or with `kill -9`, read the kubeconfig it
//! writes, and talk to its API over HTTP with the admin token; run the real kubectl against it
//! (`kubectl`) and client programs under deadlines (`process`).

pub mod kubectl;
pub mod process;
pub mod stack_env;
pub mod testdaemon;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// How long a server may take to start listening (generous: the machine is small and shared).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory cargo puts this test's binaries in (`target/debug`), found from the running
/// test executable (`target/debug/deps/NAME-HASH`), so `CARGO_TARGET_DIR` and profiles work.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let deps = exe.parent().ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let dir = if deps.file_name().is_some_and(|n| n == "deps") { deps.parent() } else { Some(deps) };
    dir.map(Path::to_path_buf).ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))
}

/// The newest modification time of the files `berth` is built from.
fn newest_source(workspace: &Path) -> Option<SystemTime> {
    fn walk(path: &Path, newest: &mut Option<SystemTime>) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(Some(m));
        }
    }
    let mut newest = None;
    for p in ["Cargo.lock", "Cargo.toml", "controller/Cargo.toml", "controller/src", "crds/Cargo.toml", "crds/src"] {
        walk(&workspace.join(p), &mut newest);
    }
    newest
}

/// The `berth` binary: `$BERTH_BIN` if set, else `berth` in this test's target directory. It is
/// built with `cargo build -p berth` (once per test process) when missing or older than its
/// sources. Under `cargo test --workspace` cargo has just built it (the `berth` package has
/// integration tests), and building it again would only resolve features differently and flip
/// shared artifacts back and forth.
pub fn berth_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(bin) = std::env::var_os("BERTH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    BUILT
        .get_or_init(|| {
            let dir = profile_dir().map_err(|e| format!("{e:#}"))?;
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let bin = dir.join("berth");
            let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
            if built.is_some() && built >= newest_source(&workspace) {
                return Ok(bin);
            }
            let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cargo.args(["build", "-p", "berth", "--bin", "berth"]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            if let Some(target) = dir.parent() {
                cargo.arg("--target-dir").arg(target);
            }
            let status = cargo
                .current_dir(&workspace)
                .status()
                .map_err(|e| format!("running cargo build -p berth: {e}; set BERTH_BIN to a built berth"))?;
            if !status.success() {
                return Err(format!("cargo build -p berth failed ({status}); set BERTH_BIN to a built berth"));
            }
            if bin.exists() { Ok(bin) } else { Err(format!("cargo build -p berth did not produce {}", bin.display())) }
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Server URL, bearer token and CA of a kubeconfig's current context.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT` (or `https://` when the server serves TLS).
    pub server: String,
    /// The bearer token.
    pub token: String,
    /// The cluster's `certificate-authority` file (PEM), when the server serves TLS.
    pub ca: Option<PathBuf>,
}

/// Reads the server and token of the current context of a kubeconfig.
pub fn read_kubeconfig(path: &Path) -> Result<Endpoint> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: Value = serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let current = cfg["current-context"].as_str().ok_or_else(|| anyhow!("{}: no current-context", path.display()))?;
    let named = |list: &str, name: &str| -> Option<Value> {
        cfg[list].as_array()?.iter().find(|e| e["name"].as_str() == Some(name)).cloned()
    };
    let context = named("contexts", current).ok_or_else(|| anyhow!("context {current} missing"))?;
    let cluster_name = context["context"]["cluster"].as_str().unwrap_or_default();
    let user_name = context["context"]["user"].as_str().unwrap_or_default();
    let cluster = named("clusters", cluster_name).ok_or_else(|| anyhow!("cluster {cluster_name} missing"))?;
    let user = named("users", user_name).ok_or_else(|| anyhow!("user {user_name} missing"))?;
    Ok(Endpoint {
        server: cluster["cluster"]["server"].as_str().ok_or_else(|| anyhow!("cluster has no server"))?.to_string(),
        token: user["user"]["token"].as_str().ok_or_else(|| anyhow!("user has no token"))?.to_string(),
        ca: cluster["cluster"]["certificate-authority"].as_str().map(PathBuf::from),
    })
}

/// A running `berth serve`. Dropping it kills the process.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where the API listens and the admin token, from the kubeconfig.
    pub endpoint: Endpoint,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// The server's stderr (its log).
    pub log: PathBuf,
}

impl Server {
    /// Runs `berth serve --data-dir DATA_DIR --listen 127.0.0.1:0 --no-controllers --no-tls EXTRA…`
    /// and waits until it prints its address; the kubeconfig it wrote then names the port it chose.
    /// Plain HTTP, for [`Server::client`].
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_with(data_dir, extra_args, false)
    }

    /// Like [`Server::start`] but serving HTTPS with the self-signed certificate `berth serve`
    /// generates (its kubeconfig trusts it): for kubectl and the Python client, which send no
    /// bearer token over plain HTTP. [`Server::client`] trusts that certificate too.
    pub fn start_tls(data_dir: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_with(data_dir, extra_args, true)
    }

    fn start_with(data_dir: &Path, extra_args: &[&str], tls: bool) -> Result<Self> {
        let mut args = vec!["--listen", "127.0.0.1:0", "--no-controllers"];
        // Plain HTTP for the ureq client, unless the caller asks for TLS.
        if !tls && !extra_args.iter().any(|a| a.starts_with("--tls")) {
            args.push("--no-tls");
        }
        args.extend_from_slice(extra_args);
        Self::start_args(data_dir, &args)
    }

    /// Runs `berth serve --data-dir DATA_DIR ARGS…` with nothing else on its command line (so
    /// `ARGS` must choose `--listen` and the TLS mode) and waits until it prints its address.
    pub fn start_args(data_dir: &Path, args: &[&str]) -> Result<Self> {
        let bin = berth_binary()?;
        std::fs::create_dir_all(data_dir)?;
        let kubeconfig = data_dir.join("kubeconfig");
        // A kubeconfig left by an earlier run names an old port.
        let _ = std::fs::remove_file(&kubeconfig);
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout for the server's whole life so it never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("berth API listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let announced = match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("berth serve did not announce its address within {START_TIMEOUT:?}; log:\n{}", tail(&log));
            }
        };
        let endpoint = read_kubeconfig(&kubeconfig)?;
        if endpoint.server != announced {
            bail!("berth serve printed {announced} but wrote {} to its kubeconfig", endpoint.server);
        }
        Ok(Self { child, endpoint, data_dir: data_dir.to_path_buf(), log })
    }

    /// The kubeconfig `berth serve` wrote (server URL, CA, admin token).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The whole log (stderr) so far.
    pub fn log_text(&self) -> Result<String> {
        std::fs::read_to_string(&self.log).with_context(|| format!("reading {}", self.log.display()))
    }

    /// A client with the admin token (trusting the kubeconfig's CA when the server serves TLS).
    pub fn client(&self) -> Client {
        Client::new(&self.endpoint).expect("a client for the server's kubeconfig")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: the process gets no chance to flush or clean up.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill().context("sending SIGKILL")?;
        self.child.wait().context("waiting for the killed server")?;
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(self) -> Result<()> {
        self.terminate()?;
        self.wait_for_clean_exit()
    }

    /// Sends SIGTERM and returns at once (see [`Server::wait_for_clean_exit`]).
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        Ok(())
    }

    /// Waits for the process to exit and fails unless it exited with status 0.
    pub fn wait_for_clean_exit(mut self) -> Result<()> {
        let exit = self.child.wait()?;
        if !exit.success() {
            bail!("berth serve exited with {exit}; log:\n{}", tail(&self.log));
        }
        Ok(())
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A blocking HTTP client of the berth API with a bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// An HTTP response: status and JSON body (`Value::Null` when empty, a string when not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Client {
    /// A client of `endpoint`, trusting only its CA (when it has one).
    pub fn new(endpoint: &Endpoint) -> Result<Self> {
        let mut config =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60)));
        if let Some(ca) = &endpoint.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading the CA {}", ca.display()))?;
            let cert = ureq::tls::Certificate::from_pem(&pem)
                .with_context(|| format!("{} holds no PEM certificate", ca.display()))?;
            let tls = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                .build();
            config = config.tls_config(tls);
        }
        Ok(Self {
            agent: config.build().into(),
            base: endpoint.server.trim_end_matches('/').to_string(),
            token: endpoint.token.clone(),
        })
    }

    fn finish(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply> {
        let mut resp = resp?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().with_config().limit(64 * 1024 * 1024).read_to_string()?;
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok(Reply { status, body })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Result<Reply> {
        Self::finish(self.agent.get(self.url(path)).header("Authorization", self.auth()).call())
    }

    /// POST `body` as JSON to `path`.
    pub fn post(&self, path: &str, body: &Value) -> Result<Reply> {
        Self::finish(self.agent.post(self.url(path)).header("Authorization", self.auth()).send_json(body))
    }

    /// PUT `body` as JSON to `path`.
    pub fn put(&self, path: &str, body: &Value) -> Result<Reply> {
        Self::finish(self.agent.put(self.url(path)).header("Authorization", self.auth()).send_json(body))
    }

    /// PATCH `path` with a JSON merge patch.
    pub fn merge_patch(&self, path: &str, patch: &Value) -> Result<Reply> {
        Self::finish(
            self.agent
                .patch(self.url(path))
                .header("Authorization", self.auth())
                .content_type("application/merge-patch+json")
                .send(patch.to_string()),
        )
    }

    /// DELETE `path`.
    pub fn delete(&self, path: &str) -> Result<Reply> {
        Self::finish(self.agent.delete(self.url(path)).header("Authorization", self.auth()).call())
    }
}

pub mod cli_support;
