//! An independent Docker daemon for tests that cut, stop or restart a daemon, which must never
//! happen to the machine's own. [`TestDaemon::start`] gives each instance a slot: its own
//! network namespace joined to the host by a veth pair on its own /30 subnet, and its own data
//! root, exec root and pidfile under the temp directory. The daemon runs as
//! `nsenter --net=/var/run/netns/NS dockerd -H tcp://ADDR:2375 …` (never `ip netns exec`, which
//! would also remount /sys and /etc), answers only on its namespace address, and gets the test
//! image through `docker save | docker load`.
//!
//! Slots are claimed with a lock file per slot, so tests in parallel processes never share one;
//! a slot left behind by a process that died is cleaned when claimed again, unless the daemon
//! it started still runs (that slot is skipped: we stop only daemons we started). Everything is
//! torn down on drop. Needs root (network namespaces, veth, dockerd).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The image loaded into every test daemon unless told otherwise.
pub const DEFAULT_IMAGE: &str = "berth-e2e/busybox:latest";

/// Slots available (one /30 each in 10.211.0.0/16).
const SLOTS: u32 = 1024;
/// The daemon's port inside its namespace (plain HTTP).
const PORT: u16 = 2375;
/// The daemon's port with TLS (client certificates required).
const TLS_PORT: u16 = 2376;
/// Metric of the per-slot `unreachable` route: while the veth is down (a cut), connections to
/// the daemon fail at once with "no route to host" instead of leaving through the default route.
const FALLBACK_METRIC: &str = "4242";

/// An extra dockerd in its own network namespace. Dropping it stops the daemon and removes the
/// namespace, the veth pair, the route and the directories. While it lives, its address never
/// routes off the machine (cut or stopped, connections fail with "no route to host"); after the
/// drop, do not call that address any more.
pub struct TestDaemon {
    slot: u32,
    dir: PathBuf,
    tls: bool,
    child: Option<Child>,
    _lock: File,
}

/// The client side of a TLS test daemon: PEM files under its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the daemon's certificate.
    pub ca: PathBuf,
    /// A client certificate the daemon accepts.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl std::fmt::Debug for TestDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDaemon").field("endpoint", &self.endpoint()).field("dir", &self.dir).finish()
    }
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{program} {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn process_cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap_or_default()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

impl TestDaemon {
    /// Starts a daemon with [`DEFAULT_IMAGE`] loaded.
    pub fn start() -> Result<Self> {
        Self::start_with_image(Some(DEFAULT_IMAGE))
    }

    /// Starts a daemon, loading `image` from the machine's daemon when given.
    pub fn start_with_image(image: Option<&str>) -> Result<Self> {
        Self::start_with(image, false)
    }

    /// Starts a daemon with `daemon_json` as its configuration file (e.g. larger
    /// `default-address-pools`, for many networks), loading `image` when given.
    pub fn start_with_config(image: Option<&str>, daemon_json: &str) -> Result<Self> {
        Self::start_full(image, false, daemon_json)
    }

    /// Starts a daemon that speaks only TLS and requires a client certificate signed by its own
    /// throw-away CA (see [`TestDaemon::client_tls`]), with [`DEFAULT_IMAGE`] loaded.
    pub fn start_tls() -> Result<Self> {
        Self::start_with(Some(DEFAULT_IMAGE), true)
    }

    fn start_with(image: Option<&str>, tls: bool) -> Result<Self> {
        Self::start_full(image, tls, "{}\n")
    }

    fn start_full(image: Option<&str>, tls: bool, daemon_json: &str) -> Result<Self> {
        let (slot, lock) = claim_slot()?;
        let dir = slot_dir(slot);
        fs::create_dir_all(dir.join("data"))?;
        fs::write(dir.join("daemon.json"), daemon_json)?;
        let mut daemon = TestDaemon { slot, dir, tls, child: None, _lock: lock };
        if tls {
            daemon.write_certificates()?;
        }
        daemon.setup_network()?;
        daemon.spawn_and_wait()?;
        if let Some(image) = image {
            daemon.load_image(image)?;
        }
        Ok(daemon)
    }

    /// `tcp://ADDR:2375` (or `:2376` with TLS).
    pub fn endpoint(&self) -> String {
        format!("tcp://{}:{}", self.addr(), self.port())
    }

    fn port(&self) -> u16 {
        if self.tls { TLS_PORT } else { PORT }
    }

    /// The client's TLS files, for a daemon started with [`TestDaemon::start_tls`].
    pub fn client_tls(&self) -> Option<ClientTls> {
        let t = self.dir.join("tls");
        self.tls.then(|| ClientTls { ca: t.join("ca.pem"), cert: t.join("cert.pem"), key: t.join("key.pem") })
    }

    /// A CA, a server certificate for the daemon's address and a client certificate.
    fn write_certificates(&self) -> Result<()> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let t = self.dir.join("tls");
        fs::create_dir_all(&t)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "berth test daemon CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        fs::write(t.join("ca.pem"), ca.pem())?;

        let mut server = CertificateParams::new(vec![self.addr().to_string()])?;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        fs::write(t.join("server-cert.pem"), server.signed_by(&server_key, &ca)?.pem())?;
        fs::write(t.join("server-key.pem"), server_key.serialize_pem())?;

        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client.distinguished_name.push(DnType::CommonName, "berth e2e client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        fs::write(t.join("cert.pem"), client.signed_by(&client_key, &ca)?.pem())?;
        fs::write(t.join("key.pem"), client_key.serialize_pem())?;
        Ok(())
    }

    /// The daemon's address (inside its namespace).
    pub fn addr(&self) -> Ipv4Addr {
        slot_addrs(self.slot).1
    }

    /// The network namespace's name.
    pub fn netns(&self) -> String {
        format!("berth-td{}", self.slot)
    }

    fn host_if(&self) -> String {
        format!("btd{}h", self.slot)
    }

    fn ns_if(&self) -> String {
        format!("btd{}n", self.slot)
    }

    fn subnet(&self) -> String {
        format!("{}/30", slot_addrs(self.slot).0)
    }

    /// The directory holding the daemon's data root, exec root, pidfile and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon process runs (it may not answer yet, or be cut off).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// A `docker` command talking to this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        if let Some(tls) = self.client_tls() {
            c.arg("--tlsverify")
                .arg("--tlscacert")
                .arg(tls.ca)
                .arg("--tlscert")
                .arg(tls.cert)
                .arg("--tlskey")
                .arg(tls.key);
        }
        c.arg("-H").arg(self.endpoint()).stdin(Stdio::null());
        c
    }

    /// Whether the daemon answers.
    fn answers(&self) -> bool {
        if self.tls {
            self.cli()
                .args(["version", "--format", "{{.Server.APIVersion}}"])
                .output()
                .is_ok_and(|o| o.status.success())
        } else {
            ping(self.addr())
        }
    }

    /// The daemon's log so far (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Cuts the daemon off the network (the host side of the veth goes down); it keeps running.
    pub fn cut(&self) -> Result<()> {
        run("ip", &["link", "set", &self.host_if(), "down"]).map(|_| ())
    }

    /// Undoes [`TestDaemon::cut`].
    pub fn restore(&self) -> Result<()> {
        run("ip", &["link", "set", &self.host_if(), "up"]).map(|_| ())
    }

    /// Stops the daemon (SIGTERM to its pid, SIGKILL if it has not exited after a minute) and
    /// removes its namespace, veth pair, route and runtime directory. The data root stays, so
    /// [`TestDaemon::restart`] brings back its containers, volumes and images.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_daemon()?;
        self.teardown_network();
        let exec = self.dir.join("exec");
        for m in mounts_below(&exec) {
            let _ = run("umount", &["-l", &m]);
        }
        let _ = fs::remove_dir_all(exec);
        Ok(())
    }

    /// Starts the daemon again on the same data (stopping it first when it runs) and waits until
    /// it answers.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.setup_network()?;
        self.spawn_and_wait()
    }

    fn setup_network(&self) -> Result<()> {
        let (host, ns) = (self.host_if(), self.ns_if());
        let netns = self.netns();
        let (_, addr, host_addr) = slot_addrs(self.slot);
        run("ip", &["route", "replace", "unreachable", &self.subnet(), "metric", FALLBACK_METRIC])?;
        run("ip", &["netns", "add", &netns])?;
        run("ip", &["link", "add", &host, "type", "veth", "peer", "name", &ns, "netns", &netns])?;
        run("ip", &["addr", "add", &format!("{host_addr}/30"), "dev", &host])?;
        run("ip", &["link", "set", &host, "up"])?;
        run("ip", &["-n", &netns, "addr", "add", &format!("{addr}/30"), "dev", &ns])?;
        run("ip", &["-n", &netns, "link", "set", &ns, "up"])?;
        run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Removes the namespace and the veth pair. The `unreachable` route stays while the slot is
    /// ours: without it, a call to a stopped daemon's address would leave the machine through
    /// the default route.
    fn teardown_network(&self) {
        // Deleting the namespace destroys the veth pair with it.
        let _ = run("ip", &["netns", "del", &self.netns()]);
        if Path::new(&format!("/sys/class/net/{}", self.host_if())).exists() {
            let _ = run("ip", &["link", "del", &self.host_if()]);
        }
    }

    fn remove_fallback_route(&self) {
        let _ = run("ip", &["route", "del", "unreachable", &self.subnet(), "metric", FALLBACK_METRIC]);
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let d = &self.dir;
        let log = File::create(d.join("dockerd.log")).context("creating the dockerd log")?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/var/run/netns/{}", self.netns()))
            .arg("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("-H")
            .arg(self.endpoint());
        if self.tls {
            let t = d.join("tls");
            command
                .arg("--tlsverify")
                .arg("--tlscacert")
                .arg(t.join("ca.pem"))
                .arg("--tlscert")
                .arg(t.join("server-cert.pem"))
                .arg("--tlskey")
                .arg(t.join("server-key.pem"));
        } else {
            // Explicit: without it dockerd delays start-up to warn about plain TCP.
            command.arg("--tls=false");
        }
        let child = command
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("--bridge=none")
            .arg("--iptables=false")
            .arg("--ip-forward=false")
            .arg("--cgroup-parent")
            .arg(format!("berth-td{}", self.slot))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd with nsenter")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.answers() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                bail!("dockerd exited during start-up ({status}); its log:\n{}", self.log_tail(30));
            }
            if Instant::now() > deadline {
                bail!("dockerd at {} did not answer within 120s; its log:\n{}", self.endpoint(), self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_daemon(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = child.id().to_string();
        run("kill", &["-TERM", &pid])?;
        // dockerd stops its containers first (10 s each by default), so give it time.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = run("kill", &["-KILL", &pid]);
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn load_image(&self, image: &str) -> Result<()> {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running docker save")?;
        let stdout = save.stdout.take().ok_or_else(|| anyhow!("docker save has no stdout"))?;
        let load = self
            .cli()
            .arg("load")
            .stdin(Stdio::from(stdout))
            .output()
            .context("running docker load on the test daemon")?;
        let saved = save.wait_with_output()?;
        if !saved.status.success() {
            bail!(
                "docker save {image} failed: {} (run hack/e2e-images.sh to build the test image)",
                String::from_utf8_lossy(&saved.stderr).trim()
            );
        }
        if !load.status.success() {
            bail!("docker load into {} failed: {}", self.endpoint(), String::from_utf8_lossy(&load.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop_daemon() {
            eprintln!("test daemon {}: stopping failed: {e:#}", self.endpoint());
        }
        self.teardown_network();
        self.remove_fallback_route();
        for m in mounts_below(&self.dir) {
            let _ = run("umount", &["-l", &m]);
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("test daemon {}: removing {} failed: {e}", self.endpoint(), self.dir.display());
        }
    }
}

fn slot_root() -> PathBuf {
    std::env::temp_dir().join("berth-td")
}

fn slot_dir(slot: u32) -> PathBuf {
    slot_root().join(format!("slot-{slot}"))
}

/// (subnet address, daemon address, host address) of a slot: 10.211.x.y/30.
fn slot_addrs(slot: u32) -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(10, 211, 0, 0)) + slot * 4;
    (Ipv4Addr::from(base), Ipv4Addr::from(base + 2), Ipv4Addr::from(base + 1))
}

/// Claims a free slot: its lock file is held for the daemon's lifetime. A slot whose owner died
/// is cleaned before reuse, unless the daemon it started still runs.
fn claim_slot() -> Result<(u32, File)> {
    let root = slot_root();
    fs::create_dir_all(&root)?;
    for slot in 0..SLOTS {
        let lock =
            File::options().create(true).truncate(false).write(true).open(root.join(format!("slot-{slot}.lock")))?;
        if lock.try_lock().is_err() {
            continue;
        }
        let dir = slot_dir(slot);
        let stale_pid = fs::read_to_string(dir.join("docker.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = stale_pid
            && process_alive(pid)
            && process_cmdline(pid).contains(&*dir.to_string_lossy())
        {
            // A daemon a dead test started still runs: not ours to stop; leave the slot alone.
            continue;
        }
        let stale = TestDaemonLeftovers { slot, dir };
        stale.clean();
        return Ok((slot, lock));
    }
    bail!("no free test-daemon slot among {SLOTS}; remove stale ones under {}", root.display())
}

/// What a dead process may have left of a slot.
struct TestDaemonLeftovers {
    slot: u32,
    dir: PathBuf,
}

impl TestDaemonLeftovers {
    fn clean(&self) {
        let netns = format!("berth-td{}", self.slot);
        if Path::new(&format!("/var/run/netns/{netns}")).exists() {
            let _ = run("ip", &["netns", "del", &netns]);
        }
        let host_if = format!("btd{}h", self.slot);
        if Path::new(&format!("/sys/class/net/{host_if}")).exists() {
            let _ = run("ip", &["link", "del", &host_if]);
        }
        let subnet = format!("{}/30", slot_addrs(self.slot).0);
        let routes = run("ip", &["route", "show", "type", "unreachable", &subnet]).unwrap_or_default();
        if !routes.trim().is_empty() {
            let _ = run("ip", &["route", "del", "unreachable", &subnet, "metric", FALLBACK_METRIC]);
        }
        for m in mounts_below(&self.dir) {
            let _ = run("umount", &["-l", &m]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether the Engine API answers `GET /_ping` at `addr`.
fn ping(addr: Ipv4Addr) -> bool {
    let sock = SocketAddr::from((addr, PORT));
    let Ok(mut stream) = TcpStream::connect_timeout(&sock, Duration::from_secs(1)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("OK")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_disjoint_subnets() {
        assert_eq!(
            slot_addrs(0),
            (Ipv4Addr::new(10, 211, 0, 0), Ipv4Addr::new(10, 211, 0, 2), Ipv4Addr::new(10, 211, 0, 1))
        );
        assert_eq!(slot_addrs(65).0, Ipv4Addr::new(10, 211, 1, 4));
        assert_eq!(slot_addrs(SLOTS - 1).1, Ipv4Addr::new(10, 211, 15, 254));
    }
}
