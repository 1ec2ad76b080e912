//! End-to-end tests of Leases: the real `berth serve` (API, Host and Lease controllers) on the
//! real local Docker daemon, driven with the real `kubectl`, checked with `docker inspect`, HTTP
//! requests to the published ports and a local callback receiver. Each test runs its own server
//! under a unique instance name and namespace, and removes everything it created.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth::controllers::lease::callbacks;
use berth_e2e::cli_support::berth_at;
use berth_e2e::stack_env::{IMAGE, StackEnv, condition, docker, inspect, unique, wait_until};
use serde_json::Value;

/// Generous deadlines: the machine is small and shared.
const READY: Duration = Duration::from_secs(120);
const SECRET: &str = "e2e-callback-secret";

fn config(extra_registry: &str) -> String {
    format!(
        r#"leases:
  skus:
    small: {{cpus: 0.25, memoryMb: 64, pids: 64}}
  allowedRegistries: [local{extra_registry}]
  verifyWindow: 2s
  healthTimeout: 30s
  bindAddress: 127.0.0.1
  retention: {{grace: 1h, reapInterval: 10s}}
  callbacks: {{secret: "{SECRET}"}}
resyncInterval: 600s
"#
    )
}

/// A service running `script` in `sh -c` (no `exec` wrapper: the script says what it runs).
fn service(name: &str, script: &str, extra: &str) -> String {
    format!("  - name: {name}\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", {script:?}]\n{extra}")
}

/// An HTTP service answering `body` on port 8080 from the tmpfs (the root filesystem is read-only).
fn web(body: &str) -> String {
    service(
        "web",
        &format!("mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"),
        "    ports: [{containerPort: 8080}]\n",
    )
}

fn lease_yaml(ns: &str, name: &str, spec_extra: &str, services: &[String]) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Lease\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  tenant: acme\n  \
         sku: small\n{spec_extra}  services:\n{}",
        services.concat()
    )
}

fn setup(env: &StackEnv) -> Result<String> {
    let ns = unique("ns");
    env.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"))?;
    Ok(ns)
}

fn lease(env: &StackEnv, ns: &str, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&env.kubectl(&["get", "lease", name, "-n", ns, "-o", "json"], None)?)?)
}

fn phase(l: &Value) -> &str {
    l["status"]["phase"].as_str().unwrap_or("")
}

fn wait_lease(
    env: &StackEnv,
    ns: &str,
    name: &str,
    what: &str,
    deadline: Duration,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let mut last = Value::Null;
    let r = wait_until(what, deadline, || {
        let l = lease(env, ns, name)?;
        let ok = check(&l);
        last = l.clone();
        Ok(ok.then_some(l))
    });
    r.map_err(|e| anyhow::anyhow!("{e}\nlast status: {:#}\nserver log:\n{}", last["status"], env.log_tail()))
}

fn wait_phase(env: &StackEnv, ns: &str, name: &str, p: &str) -> Result<Value> {
    wait_lease(env, ns, name, p, READY, |l| phase(l) == p)
}

/// Names of the Lease's containers on the daemon (any state).
fn containers_of(env: &StackEnv, ns: &str, name: &str) -> Result<Vec<String>> {
    let out = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=berth.dev/instance={}", env.instance),
        "--filter",
        &format!("label=berth.dev/owner-namespace={ns}"),
        "--filter",
        &format!("label=berth.dev/owner-name={name}"),
    ])?;
    Ok(out.lines().map(String::from).filter(|l| !l.is_empty()).collect())
}

fn http_get(url: &str) -> Result<String> {
    let mut resp = ureq::get(url).call().with_context(|| format!("GET {url}"))?;
    Ok(resp.body_mut().read_to_string()?)
}

#[test]
fn two_services_become_ready_the_endpoint_answers_and_every_container_is_hardened() -> Result<()> {
    let env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    env.apply(&lease_yaml(
        &ns,
        "preview",
        "  duration: 1h\n",
        &[web("hello-from-a-lease"), service("worker", "exec sleep 3600", "    quantity: 2\n")],
    ))?;
    let l = wait_phase(&env, &ns, "preview", "Ready")?;
    assert!(l["status"]["expiresAt"].is_string(), "expiresAt is always shown");
    let endpoints = l["status"]["endpoints"].as_array().cloned().unwrap_or_default();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let shown_url = endpoints[0]["url"].as_str().unwrap().to_string();
    let url = shown_url.replace("localhost", "127.0.0.1");
    assert_eq!(endpoints[0]["hostIP"], "127.0.0.1");
    let body = wait_until("the endpoint answers", Duration::from_secs(30), || Ok(http_get(&url).ok()))?;
    assert_eq!(body.trim(), "hello-from-a-lease");

    let names = containers_of(&env, &ns, "preview")?;
    assert_eq!(names.len(), 3, "{names:?}");
    let tenant_net = format!("berth-{}-tenant-acme", env.instance);
    for n in &names {
        let c = inspect(n)?.context("inspect")?;
        let hc = &c["HostConfig"];
        assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]), "{n}: capabilities");
        assert!(hc["CapAdd"].is_null() || hc["CapAdd"].as_array().is_some_and(|a| a.is_empty()), "{n}");
        assert!(
            hc["SecurityOpt"]
                .as_array()
                .is_some_and(|o| o.iter().any(|s| s.as_str().is_some_and(|s| s.starts_with("no-new-privileges")))),
            "{n}: no-new-privileges: {}",
            hc["SecurityOpt"]
        );
        assert_eq!(hc["ReadonlyRootfs"], true, "{n}: read-only rootfs");
        let tmpfs = hc["Tmpfs"].as_object().context("tmpfs")?;
        assert!(tmpfs.contains_key("/tmp") && tmpfs.contains_key("/run"), "{n}: tmpfs {tmpfs:?}");
        assert_eq!(hc["PidsLimit"], 64, "{n}: PID limit");
        assert_eq!(hc["Memory"], 64 * 1024 * 1024, "{n}: memory");
        assert_eq!(hc["MemorySwap"], hc["Memory"], "{n}: no swap");
        assert_eq!(hc["NanoCpus"], 250_000_000, "{n}: CPU limit");
        assert_eq!(hc["RestartPolicy"]["Name"], "no", "{n}: restart policy");
        assert_eq!(hc["Privileged"], false);
        let nets = c["NetworkSettings"]["Networks"].as_object().context("networks")?;
        assert_eq!(nets.keys().collect::<Vec<_>>(), [&tenant_net], "{n}: only the tenant network");
        assert_eq!(c["State"]["Running"], true, "{n}");
    }
    // A process in the container cannot write its root filesystem.
    let web_container = names.iter().find(|n| n.contains(".web-0.")).context("web container")?;
    let denied =
        std::process::Command::new("docker").args(["exec", web_container, "sh", "-c", "echo x > /etc/x"]).output()?;
    assert!(!denied.status.success(), "the root filesystem is writable");
    // `berth describe` tells an operator what runs where, until when, and how to reach it.
    let described = berth_at(&env.kubeconfig, &["describe", "lease/preview", "-n", &ns]).ok();
    for want in [
        "acme",
        "small",
        "Ready",
        "Expires At:",
        "Allocated:",
        "0.75 CPUs",
        "Endpoints",
        &shown_url,
        "Releases",
        "Active",
    ] {
        assert!(described.stdout.contains(want), "{want:?} missing from:\n{}", described.stdout);
    }
    Ok(())
}

#[test]
fn a_15_second_lease_expires_and_is_cleaned_up_on_time() -> Result<()> {
    let env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    // The app stops when asked (SIGTERM), as a well-behaved service does.
    let app = service("app", "trap 'exit 0' TERM; sleep 3600 & wait", "");
    env.apply(&lease_yaml(&ns, "brief", "  duration: 15s\n", &[app]))?;
    let l = wait_phase(&env, &ns, "brief", "Ready")?;
    let created: jiff::Timestamp = l["metadata"]["creationTimestamp"].as_str().unwrap().parse()?;
    let expires: jiff::Timestamp = l["status"]["expiresAt"].as_str().unwrap().parse()?;
    assert_eq!(expires.as_second() - created.as_second(), 15);
    assert_eq!(containers_of(&env, &ns, "brief")?.len(), 1);
    let l = wait_phase(&env, &ns, "brief", "Closed")?;
    let closed_at = jiff::Timestamp::now();
    // On time: deprovisioned within a few seconds of the expiry (a functional bound: the expiry
    // is scheduled, not found by a periodic sweep).
    let late = closed_at.as_second() - expires.as_second();
    println!("closed {late}s after the expiry");
    assert!(late <= 10, "closed {late}s after the expiry");
    assert_eq!(condition(&l, "Expired").map(|c| c.0), Some("True".into()));
    assert!(containers_of(&env, &ns, "brief")?.is_empty(), "containers left behind");
    let nets = docker(&["network", "ls", "-q", "--filter", &format!("label=berth.dev/instance={}", env.instance)])?;
    assert!(nets.trim().is_empty(), "the tenant network outlived its last Lease: {nets}");
    Ok(())
}

#[test]
fn an_image_outside_the_allowlist_and_an_unknown_sku_are_refused_at_apply() -> Result<()> {
    let env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    let foreign = lease_yaml(&ns, "foreign", "  duration: 1h\n", &[service("app", "exec sleep 1", "")])
        .replace(IMAGE, "ghcr.io/acme/app:1");
    let out = env.kubectl_output(&["apply", "-f", "-"], Some(&foreign))?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "admitted: {text}");
    assert!(text.contains("spec.services[0].image") && text.contains("ghcr.io"), "{text}");
    let unknown = lease_yaml(&ns, "huge", "  duration: 1h\n", &[service("app", "exec sleep 1", "")])
        .replace("sku: small", "sku: enormous");
    let out = env.kubectl_output(&["apply", "-f", "-"], Some(&unknown))?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "admitted: {text}");
    assert!(text.contains("spec.sku") && text.contains("enormous") && text.contains("small"), "{text}");
    // berth's own apply says the same, naming the field.
    let mut child = berth_e2e::cli_support::berth_cmd_for(&env.kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(unknown.as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("spec.sku") && text.contains("leases.skus"), "{text}");
    let too_long = lease_yaml(&ns, "forever", "  duration: 9999h\n", &[service("app", "exec sleep 1", "")]);
    let out = env.kubectl_output(&["apply", "-f", "-"], Some(&too_long))?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("leases.maxDuration"));
    let listed = env.kubectl(&["get", "leases", "-n", &ns, "-o", "name"], None)?;
    assert!(listed.trim().is_empty(), "nothing was stored: {listed}");
    Ok(())
}

#[test]
fn a_lease_over_capacity_stays_pending_and_is_placed_when_capacity_frees() -> Result<()> {
    let env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    wait_until("the local Host", READY, || Ok(env.kubectl(&["get", "host", "local"], None).ok()))?;
    env.kubectl(&["patch", "host", "local", "--type", "merge", "-p", r#"{"spec":{"capacity":{"cpus":0.5}}}"#], None)?;
    env.apply(&lease_yaml(
        &ns,
        "first",
        "  duration: 1h\n",
        &[service("app", "exec sleep 3600", "    quantity: 2\n")],
    ))?;
    wait_phase(&env, &ns, "first", "Ready")?;
    env.apply(&lease_yaml(&ns, "second", "  duration: 1h\n", &[service("app", "exec sleep 3600", "")]))?;
    let l = wait_lease(&env, &ns, "second", "Pending for capacity", READY, |l| {
        condition(l, "Ready").is_some_and(|c| c.1 == "InsufficientCapacity")
    })?;
    assert_eq!(phase(&l), "Pending");
    assert!(containers_of(&env, &ns, "second")?.is_empty());
    let host = env.kubectl(&["get", "host", "local", "-o", "json"], None)?;
    let host: Value = serde_json::from_str(&host)?;
    assert_eq!(host["status"]["allocated"]["cpus"], 0.5, "{:#}", host["status"]);
    env.kubectl(&["patch", "lease", "first", "-n", &ns, "--type", "merge", "-p", r#"{"spec":{"closed":true}}"#], None)?;
    wait_phase(&env, &ns, "first", "Closed")?;
    wait_phase(&env, &ns, "second", "Ready")?;
    Ok(())
}

#[test]
fn a_killed_container_drives_failing_then_failed_with_its_last_log_lines() -> Result<()> {
    let env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    let script = "for i in 1 2 3 4 5; do echo booting step $i; done; echo ready >&2; exec sleep 3600";
    env.apply(&lease_yaml(&ns, "crashy", "  duration: 1h\n", &[service("app", script, "")]))?;
    wait_phase(&env, &ns, "crashy", "Ready")?;
    let name = containers_of(&env, &ns, "crashy")?.pop().context("container")?;
    docker(&["kill", &name])?;
    let l = wait_phase(&env, &ns, "crashy", "Failed")?;
    let d = &l["status"]["diagnostics"];
    assert_eq!(d["container"], "app-0");
    assert_eq!(d["exitCode"], 137, "{d:#}");
    let lines: Vec<&str> =
        d["lastLogLines"].as_array().context("log lines")?.iter().filter_map(Value::as_str).collect();
    assert!(lines.contains(&"booting step 5") && lines.contains(&"ready"), "{lines:?}");
    let ready = condition(&l, "Ready").context("Ready")?;
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", "ContainerFailed"));
    assert!(ready.2.contains("exit code 137"), "{}", ready.2);
    let events = env.kubectl(&["get", "events", "-n", &ns, "-o", "json"], None)?;
    assert!(events.contains("Failing") && events.contains("exit code 137"), "{events}");
    // The dead container stays for inspection.
    assert!(inspect(&name)?.is_some_and(|c| c["State"]["Running"] == false));
    Ok(())
}

#[test]
fn a_bad_update_rolls_back_and_says_so() -> Result<()> {
    let env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    env.apply(&lease_yaml(&ns, "site", "  duration: 1h\n", &[web("release-one")]))?;
    let l = wait_phase(&env, &ns, "site", "Ready")?;
    let url = l["status"]["endpoints"][0]["url"].as_str().unwrap().replace("localhost", "127.0.0.1");
    let before = containers_of(&env, &ns, "site")?;
    // Release 2 exits during its verification window.
    let bad = service("web", "echo missing configuration file >&2; exit 3", "    ports: [{containerPort: 8080}]\n");
    env.apply(&lease_yaml(&ns, "site", "  duration: 1h\n", &[bad]))?;
    let l = wait_lease(&env, &ns, "site", "rolled back", READY, |l| {
        condition(l, "RolledBack").is_some_and(|c| c.0 == "True") && phase(l) == "Ready"
    })?;
    let ready = condition(&l, "Ready").context("Ready")?;
    assert_eq!(ready.1, "RolledBack", "a rollback is never reported as plain success");
    assert!(ready.2.contains("rolled back") && ready.2.contains("exit code 3"), "{}", ready.2);
    let releases: Vec<(i64, String)> = l["status"]["releases"]
        .as_array()
        .context("releases")?
        .iter()
        .map(|r| (r["revision"].as_i64().unwrap_or(0), r["outcome"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(releases, [(1, "Active".to_string()), (2, "RolledBack".to_string())]);
    let diag = &l["status"]["diagnostics"];
    assert!(diag["lastLogLines"].to_string().contains("missing configuration file"), "{diag:#}");
    let new_url = l["status"]["endpoints"][0]["url"].as_str().unwrap().replace("localhost", "127.0.0.1");
    let body = wait_until("release one answers again", Duration::from_secs(30), || Ok(http_get(&new_url).ok()))?;
    assert_eq!(body.trim(), "release-one");
    assert_eq!(containers_of(&env, &ns, "site")?, before, "release 1's container serves again, release 2's is gone");
    let _ = url;
    Ok(())
}

#[test]
fn close_with_retention_then_restore_into_a_new_lease_finds_the_old_data() -> Result<()> {
    let env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    let volume = "    volumes: [{name: data, mountPath: /data}]\n";
    let writer = service("db", "[ -f /data/state ] || echo order-42 > /data/state; exec sleep 3600", volume);
    env.apply(&lease_yaml(&ns, "old", "  duration: 1h\n  retainOnClose: true\n", &[writer]))?;
    wait_phase(&env, &ns, "old", "Ready")?;
    let c = containers_of(&env, &ns, "old")?.pop().context("container")?;
    docker(&["exec", &c, "sh", "-c", "echo appended-by-tenant >> /data/state"])?;
    env.kubectl(&["patch", "lease", "old", "-n", &ns, "--type", "merge", "-p", r#"{"spec":{"closed":true}}"#], None)?;
    let l = wait_phase(&env, &ns, "old", "Retained")?;
    let retained = format!("retained.{ns}.old.db-0.data");
    assert_eq!(l["status"]["retainedVolumes"], serde_json::json!([retained]));
    assert!(containers_of(&env, &ns, "old")?.is_empty());
    let labels: Value =
        serde_json::from_str(&docker(&["volume", "inspect", "--format", "{{json .Labels}}", &retained])?)?;
    assert_eq!(labels["berth.dev/tenant"], "acme");
    assert_eq!(labels["berth.dev/owner-name"], "old");
    assert!(labels["berth.dev/retained-until"].as_str().and_then(|s| s.parse::<i64>().ok()).is_some());

    let reader = service("db", "exec sleep 3600", volume);
    env.apply(&lease_yaml(&ns, "new", "  duration: 1h\n  restoreFrom: old\n", &[reader]))?;
    wait_phase(&env, &ns, "new", "Ready")?;
    let c = containers_of(&env, &ns, "new")?.pop().context("container")?;
    let state = docker(&["exec", &c, "cat", "/data/state"])?;
    assert_eq!(state, "order-42\nappended-by-tenant");
    let gone = docker(&["volume", "ls", "-q", "--filter", &format!("name={retained}")])?;
    assert!(gone.trim().is_empty(), "the adopted volume is no longer retained");
    Ok(())
}

/// A "registry" that accepts connections and never answers: pulls from it hang.
fn blackhole() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    Ok(port)
}

#[test]
fn a_delete_during_a_slow_pull_finishes_within_seconds() -> Result<()> {
    let port = blackhole()?;
    let env = StackEnv::start(&config(&format!(", \"127.0.0.1:{port}\"")))?;
    let ns = setup(&env)?;
    let yaml = lease_yaml(&ns, "slow", "  duration: 1h\n", &[service("app", "exec sleep 3600", "")])
        .replace(IMAGE, &format!("127.0.0.1:{port}/never/arrives:1"));
    env.apply(&yaml)?;
    wait_lease(&env, &ns, "slow", "pulling", READY, |l| {
        phase(l) == "Provisioning" && condition(l, "Ready").is_some_and(|c| c.1 == "Provisioning")
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let l = lease(&env, &ns, "slow")?;
    assert_eq!(
        condition(&l, "Ready").map(|c| c.1),
        Some("Provisioning".into()),
        "the pull still hangs: {:#}",
        l["status"]
    );
    let started = Instant::now();
    env.kubectl(&["delete", "lease", "slow", "-n", &ns, "--wait=true", "--timeout=60s"], None)?;
    let took = started.elapsed();
    println!("deleted {took:?} after the request");
    assert!(took < Duration::from_secs(5), "the delete waited for the pull: {took:?}");
    assert!(containers_of(&env, &ns, "slow")?.is_empty());
    Ok(())
}

/// A callback receiver: answers 200, keeps (headers, body) of every POST.
type Received = Arc<Mutex<Vec<(Vec<(String, String)>, String)>>>;

fn receiver() -> Result<(String, Received)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hooks/berth", listener.local_addr()?);
    let got: Received = Default::default();
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let _ = serve_one(stream, &keep);
            });
        }
    });
    Ok((url, got))
}

fn serve_one(mut stream: TcpStream, keep: &Received) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if !line.starts_with("POST") {
            bail!("unexpected request {line}");
        }
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse()?;
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        keep.lock().unwrap().push((headers, String::from_utf8(body)?));
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter().find(|(k, _)| k == &name.to_ascii_lowercase()).map(|(_, v)| v.as_str()).unwrap_or("")
}

#[test]
fn callbacks_are_signed_and_received_exactly_once_even_across_a_restart() -> Result<()> {
    let (url, got) = receiver()?;
    let mut env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    let spec = format!("  duration: 1h\n  callback: {{url: \"{url}\"}}\n");
    env.apply(&lease_yaml(&ns, "hooked", &spec, &[service("app", "exec sleep 3600", "")]))?;
    wait_phase(&env, &ns, "hooked", "Ready")?;
    wait_until("the Ready callback", READY, || Ok((!got.lock().unwrap().is_empty()).then_some(())))?;
    // berth serve restarts (same data dir: store and outbox kept).
    env.restart("data", &config(""))?;
    env.kubectl(
        &["patch", "lease", "hooked", "-n", &ns, "--type", "merge", "-p", r#"{"spec":{"closed":true}}"#],
        None,
    )?;
    wait_phase(&env, &ns, "hooked", "Closed")?;
    wait_until("the Closed callback", READY, || Ok((got.lock().unwrap().len() >= 2).then_some(())))?;
    env.restart("data", &config(""))?;
    let l = wait_lease(&env, &ns, "hooked", "both callbacks shown delivered", READY, |l| {
        l["status"]["callbacks"].as_array().is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["state"] == "Delivered"))
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let got = got.lock().unwrap().clone();
    let phases: Vec<String> = got
        .iter()
        .map(|(_, b)| serde_json::from_str::<Value>(b).map(|v| v["phase"].as_str().unwrap_or("").to_string()))
        .collect::<Result<_, _>>()?;
    assert_eq!(phases, ["Ready", "Closed"], "exactly one callback per terminal transition");
    for (h, body) in &got {
        let ts: i64 = header(h, callbacks::TIMESTAMP_HEADER).parse()?;
        let signature = header(h, callbacks::SIGNATURE_HEADER);
        assert!(callbacks::verify(SECRET.as_bytes(), ts, body.as_bytes(), signature), "bad signature: {body}");
        let v: Value = serde_json::from_str(body)?;
        assert_eq!(v["lease"]["name"], "hooked");
        assert_eq!(v["lease"]["uid"], l["metadata"]["uid"]);
        assert_eq!(
            header(h, callbacks::DELIVERY_HEADER),
            format!("{}-{}", l["metadata"]["uid"].as_str().unwrap(), v["phase"].as_str().unwrap())
        );
    }
    Ok(())
}

#[test]
fn many_leases_of_one_tenant_provisioned_at_once_share_one_tenant_network() -> Result<()> {
    let env = StackEnv::start(&config(""))?;
    let ns = setup(&env)?;
    // One apply of several Leases: their provisionings run concurrently and each ensures the
    // tenant network (Docker 20.10 would accept two networks of one name).
    let docs: Vec<String> = (0..6)
        .map(|i| lease_yaml(&ns, &format!("burst-{i}"), "  duration: 1h\n", &[service("app", "exec sleep 3600", "")]))
        .collect();
    env.apply(&docs.join("---\n"))?;
    for i in 0..6 {
        wait_phase(&env, &ns, &format!("burst-{i}"), "Ready")?;
    }
    let nets = docker(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label=berth.dev/instance={}", env.instance),
    ])?;
    assert_eq!(nets.lines().collect::<Vec<_>>(), [format!("berth-{}-tenant-acme", env.instance)], "one tenant network");
    Ok(())
}
