//! Helpers of the Stack end-to-end tests: a `berth serve` with its controllers on the real local
//! daemon under a unique instance name, the real `kubectl` (own cache dir) on its kubeconfig, the
//! `docker` CLI, polls with deadlines, and a guard that removes everything the test's instance
//! (or the test itself) created on the daemon, whatever the outcome.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::{START_TIMEOUT, berth_binary};

/// The local test image (built by `hack/e2e-images.sh`).
pub const IMAGE: &str = "berth-e2e/busybox:latest";

/// A unique lowercase suffix for names.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u32 = rand::rng().random();
    format!("{prefix}-{n:08x}")
}

/// Runs a command, returning its output (stdout, stderr, status).
fn run(mut cmd: Command, stdin: Option<&str>) -> Result<Output> {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    if let Some(text) = stdin {
        child.stdin.take().expect("piped").write_all(text.as_bytes())?;
    }
    child.wait_with_output().with_context(|| format!("running {shown}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `docker ARGS…`; fails when docker does.
pub fn docker(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    let out = run(cmd, None)?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), text(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `docker inspect` of one container as JSON, `None` when it does not exist.
pub fn inspect(name: &str) -> Result<Option<Value>> {
    let mut cmd = Command::new("docker");
    cmd.args(["inspect", "--type", "container", name]);
    let out = run(cmd, None)?;
    if !out.status.success() {
        let t = text(&out);
        if t.contains("No such") {
            return Ok(None);
        }
        bail!("docker inspect {name} failed: {t}");
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array().and_then(|a| a.first()).cloned())
}

/// Polls `check` every 200 ms until it returns `Some`, or fails naming `what` after `deadline`.
pub fn wait_until<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let started = Instant::now();
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if started.elapsed() > deadline {
            return Err(anyhow!("{what}: not within {deadline:?}; last error: {last_err:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `berth serve` with controllers, its kubeconfig and a kubectl cache dir. Dropping it stops
/// the server and removes every container, network and volume of its instance from the daemon.
#[derive(Debug)]
pub struct StackEnv {
    /// The processes, the controllers last (stopped first).
    children: Vec<Child>,
    /// Temp dir holding data dirs, config, kubectl cache and logs.
    pub dir: tempfile::TempDir,
    /// The instance name (label `berth.dev/instance`).
    pub instance: String,
    /// The kubeconfig of the API the test talks to.
    pub kubeconfig: PathBuf,
    cache_dir: PathBuf,
    logs: Vec<PathBuf>,
    /// Names of containers the test created by hand (removed at drop).
    pub foreign: std::cell::RefCell<Vec<String>>,
    /// Names of volumes the test created by hand (removed at drop).
    pub foreign_volumes: std::cell::RefCell<Vec<String>>,
    /// How many times [`StackEnv::restart`] started the server again (names its logs).
    restarts: u32,
}

/// Starts `berth ARGS…` with its log in `log` and waits for a stdout line starting with `ready`.
fn spawn_berth(args: &[&std::ffi::OsStr], log: &Path, ready: &'static str) -> Result<Child> {
    let bin = berth_binary()?;
    let log_file = std::fs::File::create(log)?;
    let mut child = Command::new(&bin)
        .args(args)
        .env("BERTH_LOG", "info,berth=debug,kube=warn,sled=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining stdout for the process's whole life so it never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(ready) {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(START_TIMEOUT).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("berth {args:?} did not start within {START_TIMEOUT:?}; log:\n{}", tail(log));
    }
    Ok(child)
}

impl StackEnv {
    fn new(
        dir: tempfile::TempDir,
        children: Vec<Child>,
        instance: String,
        kubeconfig: PathBuf,
        logs: Vec<PathBuf>,
    ) -> Self {
        let cache_dir = dir.path().join("kube-cache");
        Self {
            children,
            dir,
            instance,
            kubeconfig,
            cache_dir,
            logs,
            foreign: Default::default(),
            foreign_volumes: Default::default(),
            restarts: 0,
        }
    }

    /// The arguments of a `berth serve` with API and controllers on `data_dir`.
    fn serve_args(&self, data_dir: &Path, config_path: &Path) -> Vec<std::ffi::OsString> {
        serve_args(data_dir, config_path, &self.instance)
    }

    /// Starts `berth serve` (API and controllers in one process) with the operator config
    /// `config` (YAML), under a unique instance name.
    pub fn start(config: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        let config_path = dir.path().join("berth.yaml");
        std::fs::write(&config_path, config)?;
        let instance = unique("e2e");
        let log = dir.path().join("serve.log");
        let args = serve_args(&data_dir, &config_path, &instance);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let child = spawn_berth(&args, &log, "berth API listening on ")?;
        Ok(Self::new(dir, vec![child], instance, data_dir.join("kubeconfig"), vec![log]))
    }

    /// Stops the `berth serve` of [`StackEnv::start`] with SIGTERM (as an operator or a service
    /// manager would) and starts it again under the same instance name with the operator config
    /// `config`, on the data dir `data_dir` (a name under the test's temp dir: `data` is the
    /// first server's, so it keeps the store; a new name starts on an empty store, as after a
    /// wiped or wrongly mounted disk). kubectl then talks to the new server.
    pub fn restart(&mut self, data_dir: &str, config: &str) -> Result<()> {
        if self.children.len() != 1 {
            bail!("restart serves only the single-process environment of StackEnv::start");
        }
        stop_child(&mut self.children[0]);
        self.children.clear();
        self.restarts += 1;
        let data_dir = self.dir.path().join(data_dir);
        let config_path = self.dir.path().join(format!("berth-{}.yaml", self.restarts));
        std::fs::write(&config_path, config)?;
        let log = self.dir.path().join(format!("serve-{}.log", self.restarts));
        let args = self.serve_args(&data_dir, &config_path);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let child = spawn_berth(&args, &log, "berth API listening on ")?;
        self.children.push(child);
        self.kubeconfig = data_dir.join("kubeconfig");
        self.logs.push(log);
        Ok(())
    }

    /// Starts an API-only `berth serve --no-controllers`, standing for an external Kubernetes API,
    /// and the controllers in a second process, `berth serve --no-embedded-api --kubeconfig`
    /// pointed at it: the path of PRODUCT §2 "Growing past one machine".
    pub fn start_external_api(config: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let api_dir = dir.path().join("api");
        let ctl_dir = dir.path().join("controllers");
        let config_path = dir.path().join("berth.yaml");
        std::fs::write(&config_path, config)?;
        let instance = unique("e2e");
        let (api_log, ctl_log) = (dir.path().join("api.log"), dir.path().join("controllers.log"));
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        let api = spawn_berth(
            &[
                os("serve"),
                os("--data-dir"),
                api_dir.as_os_str(),
                os("--listen"),
                os("127.0.0.1:0"),
                os("--no-controllers"),
            ],
            &api_log,
            "berth API listening on ",
        )?;
        let kubeconfig = api_dir.join("kubeconfig");
        let controllers = spawn_berth(
            &[
                os("serve"),
                os("--data-dir"),
                ctl_dir.as_os_str(),
                os("--no-embedded-api"),
                os("--kubeconfig"),
                kubeconfig.as_os_str(),
                os("--instance"),
                std::ffi::OsStr::new(&instance),
                os("--config"),
                config_path.as_os_str(),
            ],
            &ctl_log,
            "berth controllers running against ",
        )?;
        Ok(Self::new(dir, vec![api, controllers], instance, kubeconfig, vec![api_log, ctl_log]))
    }

    /// `kubectl ARGS…` with the server's kubeconfig (and `stdin`), returning its output.
    pub fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(&self.cache_dir).args(args);
        run(cmd, stdin)
    }

    /// `kubectl ARGS…`; fails when kubectl does.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl_output(args, stdin)?;
        if !out.status.success() {
            bail!("kubectl {} failed: {}\nserver log:\n{}", args.join(" "), text(&out), self.log_tail());
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.kubectl(&["apply", "-f", "-"], Some(yaml))
    }

    /// The Stack as JSON.
    pub fn stack(&self, namespace: &str, name: &str) -> Result<Value> {
        Ok(serde_json::from_str(&self.kubectl(&["get", "stack", name, "-n", namespace, "-o", "json"], None)?)?)
    }

    /// Polls the Stack until `check` holds; the error shows its last status.
    pub fn wait_stack(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut last = Value::Null;
        let r = wait_until(what, deadline, || {
            let s = self.stack(namespace, name)?;
            let ok = check(&s);
            last = s.clone();
            Ok(ok.then_some(s))
        });
        r.map_err(|e| anyhow!("{e}\nlast status: {:#}\nserver log:\n{}", last["status"], self.log_tail()))
    }

    /// The Host `name` as JSON.
    pub fn host(&self, name: &str) -> Result<Value> {
        Ok(serde_json::from_str(&self.kubectl(&["get", "host", name, "-o", "json"], None)?)?)
    }

    /// Polls the Host until `check` holds; the error shows its last status.
    pub fn wait_host(
        &self,
        name: &str,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut last = Value::Null;
        let r = wait_until(what, deadline, || {
            let h = self.host(name)?;
            let ok = check(&h);
            last = h.clone();
            Ok(ok.then_some(h))
        });
        r.map_err(|e| anyhow!("{e}\nlast status: {:#}\nserver log:\n{}", last["status"], self.log_tail()))
    }

    /// Every Event of every namespace as JSON (`kubectl get events -A`).
    pub fn events(&self) -> Result<Vec<Value>> {
        let list: Value = serde_json::from_str(&self.kubectl(&["get", "events", "-A", "-o", "json"], None)?)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// The value of the metric sample `series` (e.g. `berth_reconciles_total{kind="Host"}`) at
    /// the server's `/metrics`; 0 when the series has no sample yet.
    pub fn metric(&self, series: &str) -> Result<f64> {
        let text = self.kubectl(&["get", "--raw", "/metrics"], None)?;
        Ok(metric_value(&text, series).unwrap_or(0.0))
    }

    /// A container created by the test itself, removed at drop.
    pub fn run_foreign(&self, name: &str, args: &[&str]) -> Result<String> {
        self.foreign.borrow_mut().push(name.to_string());
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// The end of the servers' logs.
    pub fn log_tail(&self) -> String {
        self.logs.iter().map(|l| format!("== {}\n{}", l.display(), tail(l))).collect::<Vec<_>>().join("\n")
    }
}

/// `berth serve --data-dir D --listen 127.0.0.1:0 --instance I --config C`: API and controllers in
/// one process, TLS (the default, self-signed: kubectl sends its bearer token only over TLS).
fn serve_args(data_dir: &Path, config_path: &Path, instance: &str) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["serve".into(), "--data-dir".into(), data_dir.into()];
    args.extend(["--listen", "127.0.0.1:0", "--instance", instance, "--config"].map(Into::into));
    args.push(config_path.into());
    args
}

/// Stops a berth process with SIGTERM, killing it when it has not exited after 20 s.
fn stop_child(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let started = Instant::now();
    while matches!(child.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The value of the sample `series` in a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The condition `type_` of an object as (status, reason, message).
pub fn condition(obj: &Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).map(|c| {
        (
            c["status"].as_str().unwrap_or("").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
            c["message"].as_str().unwrap_or("").to_string(),
        )
    })
}

/// Whether the Stack is Ready for its current generation.
pub fn is_ready(obj: &Value) -> bool {
    obj["status"]["phase"] == "Ready"
        && condition(obj, "Ready").is_some_and(|c| c.0 == "True")
        && obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn remove_labelled(kind: &str, label: &str) {
    let list = match kind {
        "container" => docker(&["ps", "-aq", "--filter", label]),
        "network" => docker(&["network", "ls", "-q", "--filter", label]),
        _ => docker(&["volume", "ls", "-q", "--filter", label]),
    };
    for id in list.unwrap_or_default().split_whitespace() {
        let _ = match kind {
            "container" => docker(&["rm", "-f", "-v", id]),
            "network" => docker(&["network", "rm", id]),
            _ => docker(&["volume", "rm", "-f", id]),
        };
    }
}

impl Drop for StackEnv {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            stop_child(child);
        }
        let label = format!("label=berth.dev/instance={}", self.instance);
        remove_labelled("container", &label);
        for name in self.foreign.borrow().iter() {
            let _ = docker(&["rm", "-f", name]);
        }
        remove_labelled("network", &label);
        remove_labelled("volume", &label);
        for name in self.foreign_volumes.borrow().iter() {
            let _ = docker(&["volume", "rm", "-f", name]);
        }
    }
}
