//! The README's first command, `hack/up.sh`, end to end: it starts `berth serve` (embedded store,
//! the Docker daemon of `DOCKER_HOST`), applies the quickstart Stack unchanged, waits until it is
//! Ready and shows it; `hack/down.sh` deletes the Stack and stops the server. The daemon is a
//! throw-away dockerd in its own network namespace ([`TestDaemon`]), so the quickstart's fixed
//! container name and host port never meet a quickstart someone runs on the machine, and the
//! server listens on a free port in a temp data dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_e2e::berth_binary;
use berth_e2e::process::run;
use berth_e2e::testdaemon::TestDaemon;

const SCRIPT: Duration = Duration::from_secs(600);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Stops the `berth serve` that hack/up.sh started (by its recorded pid) if the test ends early.
struct StopServer(PathBuf);

impl Drop for StopServer {
    fn drop(&mut self) {
        let Ok(pid) = std::fs::read_to_string(self.0.join("serve.pid")) else { return };
        let pid = pid.trim().to_string();
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        if !alive() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..150 {
            if !alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
}

fn script(name: &str, td: &TestDaemon, data_dir: &Path) -> Result<Command> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("hack").join(name))
        .env("DOCKER_HOST", td.endpoint())
        .env("BERTH_DATA_DIR", data_dir)
        .env("BERTH_LISTEN", "127.0.0.1:0")
        .env("BERTH_BIN", berth_binary()?)
        .env_remove("BERTH_INSTANCE")
        .env_remove("KUBECONFIG");
    Ok(cmd)
}

#[test]
fn hack_up_brings_the_quickstart_stack_to_ready_and_hack_down_undoes_it() -> Result<()> {
    // Declared first, so that it is dropped last: the server stops before its daemon goes.
    let td = TestDaemon::start().context("starting a test daemon (needs root)")?;
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("berth");
    let _stop = StopServer(data_dir.clone());

    let up = run(script("up.sh", &td, &data_dir)?, None, SCRIPT)?;
    let log = std::fs::read_to_string(data_dir.join("serve.log")).unwrap_or_default();
    assert!(up.success(), "{up}\nserver log:\n{log}");
    assert!(up.stdout.contains("stack.berth.dev/hello condition met"), "{up}");
    let table: Vec<&str> = up.stdout.lines().skip_while(|l| !l.starts_with("NAME")).take(2).collect();
    assert_eq!(table.len(), 2, "no table of Stacks: {up}");
    let row: Vec<&str> = table[1].split_whitespace().collect();
    assert_eq!(row[..4], ["hello", "True", "Ready", "1/1"], "{up}");

    // The quickstart container runs on the daemon of DOCKER_HOST and serves its page.
    let ps = td.cli().args(["ps", "--format", "{{.Names}} {{.Status}}"]).output()?;
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    assert!(ps.lines().any(|l| l.starts_with("hello-web-0 Up") && l.contains("healthy")), "{ps}");
    let page = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", td.netns()))
        .args(["curl", "-sf", "http://127.0.0.1:18080/"])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&page.stdout).trim(), "hello from berth");

    // Running it again reuses the server.
    let pid = std::fs::read_to_string(data_dir.join("serve.pid"))?.trim().to_string();
    let again = run(script("up.sh", &td, &data_dir)?, None, SCRIPT)?;
    assert!(again.success(), "{again}");
    assert!(again.stderr.contains(&format!("berth serve is already running (pid {pid})")), "{again}");

    // hack/down.sh removes the Stack's container and network and stops the server.
    let down = run(script("down.sh", &td, &data_dir)?, None, SCRIPT)?;
    assert!(down.success(), "{down}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "berth serve (pid {pid}) still runs: {down}");
    let left = td.cli().args(["ps", "-aq", "--filter", "label=berth.dev/managed-by=berth"]).output()?;
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "containers left: {down}");
    let nets = td.cli().args(["network", "ls", "-q", "--filter", "label=berth.dev/managed-by=berth"]).output()?;
    assert_eq!(String::from_utf8_lossy(&nets.stdout).trim(), "", "networks left: {down}");
    Ok(())
}
