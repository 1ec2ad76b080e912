//! Helpers for the CLI end-to-end tests: find the `berth` binary, run `berth serve` in a temp data
//! directory (stopped when dropped), and run `berth` or `kubectl` against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `berth` binary: `$BERTH_BIN`, else the workspace's `target/debug/berth` (built by
/// `cargo test --workspace` and `cargo build -p berth`).
pub fn berth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/berth");
    assert!(bin.exists(), "{} does not exist: run `cargo build -p berth` first (or set BERTH_BIN)", bin.display());
    bin
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

/// A `berth serve --no-controllers` in a temp data dir.
pub struct Server {
    /// The data directory (holds the kubeconfig).
    pub dir: tempfile::TempDir,
    /// The server URL.
    pub url: String,
    child: Child,
}

impl Server {
    /// Starts a server on a free loopback port and waits until it has written its kubeconfig.
    /// It serves TLS with a self-signed certificate: kubectl (client-go) sends no bearer token
    /// over plain HTTP, so the kubectl tests need TLS, and the berth CLI is tested with it too.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(berth_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--no-controllers", "--tls-self-signed", "--data-dir"])
            .arg(dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning berth serve");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("berth API listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        // Keep the server's log out of the way but drained, so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in BufReader::new(stderr).lines().map_while(Result::ok) {});
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().ok();
                panic!("berth serve did not start within 60s: {out:?}");
            }
        };
        let server = Self { dir, url, child };
        assert!(server.kubeconfig().exists(), "berth serve wrote no kubeconfig");
        server
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<data-dir>/kubeconfig`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A `berth` command aimed at this server through `KUBECONFIG`.
    pub fn berth_cmd(&self) -> Command {
        let mut c = Command::new(berth_bin());
        c.env("KUBECONFIG", self.kubeconfig()).env_remove("BERTH_DATA_DIR").stdin(Stdio::null());
        c
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
