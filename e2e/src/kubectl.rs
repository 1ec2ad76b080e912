//! The real `kubectl` against a `berth serve`: every call names the server's kubeconfig and a
//! discovery cache of its own (so tests never share or pollute `~/.kube/cache`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::{self, Background, Output};

/// How long one kubectl call may take before the test gives up on it (generous: the machine is
/// small and shared).
pub const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// A kubectl bound to one server.
#[derive(Debug)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl (`$KUBECTL`, else `kubectl` on the `PATH`) for the server of `kubeconfig`.
    pub fn new(kubeconfig: &Path) -> Result<Self> {
        let bin = match std::env::var_os("KUBECTL") {
            Some(b) => PathBuf::from(b),
            None => find_on_path("kubectl").context(
                "kubectl is not installed: the e2e tests run the real kubectl (install kubectl 1.32, or set KUBECTL)",
            )?,
        };
        let cache = tempfile::Builder::new().prefix("kubectl-cache").tempdir()?;
        Ok(Self { bin, kubeconfig: kubeconfig.to_path_buf(), cache })
    }

    /// `kubectl --kubeconfig … --cache-dir … ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).arg("--cache-dir").arg(self.cache.path()).args(args);
        cmd
    }

    /// Runs kubectl to completion, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        process::run(self.command(args), None, CALL_DEADLINE)
    }

    /// Runs kubectl with `stdin` (for `-f -`), whatever its exit status.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Result<Output> {
        process::run(self.command(args), Some(stdin), CALL_DEADLINE)
    }

    /// Runs kubectl and returns its stdout; fails with everything it printed when it fails.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.success() {
            bail!("{out}");
        }
        Ok(out.stdout)
    }

    /// `ok` with `stdin`.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        let out = self.run_stdin(args, stdin)?;
        if !out.success() {
            bail!("{out}");
        }
        Ok(out.stdout)
    }

    /// Runs kubectl expecting it to fail; returns what it printed. Fails when it succeeds.
    pub fn fails(&self, args: &[&str]) -> Result<Output> {
        let out = self.run(args)?;
        if out.success() {
            bail!("expected a failure, but {out}");
        }
        Ok(out)
    }

    /// `fails` with `stdin`.
    pub fn fails_stdin(&self, args: &[&str], stdin: &str) -> Result<Output> {
        let out = self.run_stdin(args, stdin)?;
        if out.success() {
            bail!("expected a failure, but {out}");
        }
        Ok(out)
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all)?;
        serde_json::from_str(&text)
            .with_context(|| format!("kubectl {} -o json printed no JSON:\n{text}", args.join(" ")))
    }

    /// Starts kubectl in the background (`get -w`, `wait`, a blocking `delete`).
    pub fn spawn(&self, args: &[&str]) -> Result<Background> {
        Background::spawn(self.command(args))
    }
}

fn find_on_path(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{name} not found on PATH"))
}
