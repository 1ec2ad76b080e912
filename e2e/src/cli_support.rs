//! Helpers for the CLI end-to-end tests, over the shared ones in the crate root: a TLS `berth serve`
//! in a temp directory, and running `berth` or `kubectl` against it (or following their output).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `berth` binary, built when needed (the shared [`crate::berth_binary`]).
pub fn berth_bin() -> PathBuf {
    crate::berth_binary().unwrap_or_else(|e| panic!("{e:#}"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A finished command's output as text.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect(0)
    }
}

/// A `berth serve --no-controllers --tls-self-signed` in a temp data dir (the shared
/// [`crate::Server`]), with ways to run `berth` and `kubectl` against it.
pub struct Server {
    /// Temp directory holding the data directory and the kubectl cache.
    pub dir: tempfile::TempDir,
    /// The server URL.
    pub url: String,
    inner: crate::Server,
}

impl Server {
    /// Starts a server on a free loopback port with the sample operator config
    /// (`manifests/berth.yaml`). It serves TLS with a self-signed certificate:
    /// kubectl (client-go) sends no bearer token over plain HTTP, so the kubectl tests need TLS,
    /// and the berth CLI is tested with it too.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // The sample operator config: the samples (a Lease among them) are written against it.
        let config = repo_root().join("manifests").join("berth.yaml");
        let config = config.to_string_lossy();
        let inner = crate::Server::start(&dir.path().join("data"), &["--tls-self-signed", "--config", &config])
            .unwrap_or_else(|e| panic!("starting berth serve: {e:#}"));
        let url = inner.endpoint.server.clone();
        Self { dir, url, inner }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// `<data-dir>/kubeconfig`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("kubeconfig")
    }

    /// A `berth` command aimed at this server through `KUBECONFIG`.
    pub fn berth_cmd(&self) -> Command {
        berth_cmd_for(&self.kubeconfig())
    }

    /// Runs `berth ARGS` against this server.
    pub fn berth(&self, args: &[&str]) -> Run {
        Run::from(self.berth_cmd().args(args).output().expect("running berth"))
    }

    /// Runs `berth ARGS` with `input` on stdin.
    pub fn berth_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .berth_cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running berth");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writing stdin");
        Run::from(child.wait_with_output().expect("waiting for berth"))
    }

    /// Runs the real `kubectl ARGS` against this server, with a private cache directory.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        let cache = self.dir.path().join("kubectl-cache");
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl (is it installed?)");
        Run::from(out)
    }
}

/// A `berth` command aimed at the server of `kubeconfig` (through `KUBECONFIG`).
pub fn berth_cmd_for(kubeconfig: &Path) -> Command {
    let mut c = Command::new(berth_bin());
    c.env("KUBECONFIG", kubeconfig).env_remove("BERTH_DATA_DIR").stdin(Stdio::null());
    c
}

/// Runs `berth ARGS` against the server of `kubeconfig`.
pub fn berth_at(kubeconfig: &Path, args: &[&str]) -> Run {
    Run::from(berth_cmd_for(kubeconfig).args(args).output().expect("running berth"))
}

/// A running command whose stdout lines can be awaited (`get -w`, `wait`).
pub struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line seen so far.
    pub seen: Vec<String>,
}

impl Streaming {
    /// Spawns `cmd` with stdout captured line by line.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawning");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines: rx, seen: Vec::new() }
    }

    /// Waits (up to `timeout`) for a line satisfying `pred`; returns it.
    #[track_caller]
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no matching line within {timeout:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Waits for the process to end (up to `timeout`) and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(50)) {
                    self.seen.push(l);
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to `dir/name`, creating directories.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("creating dirs");
    }
    std::fs::write(&p, text).expect("writing file");
    p
}
