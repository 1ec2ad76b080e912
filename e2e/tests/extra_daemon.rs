//! The test-daemon helper proven through the bollard Docker layer: a second dockerd in its own
//! network namespace serves containers, can be cut off and restored, stopped and restarted with
//! its containers kept, and leaves nothing behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use berth::docker::bollard_impl::{BollardDocker, Timeouts};
use berth::docker::{ContainerSpec, ContainerState, DockerApi, DockerError, LabelFilter, TlsFiles};
use berth_e2e::testdaemon::{DEFAULT_IMAGE, TestDaemon};
use futures::StreamExt;

/// Polls `probe` until it yields a value; generous deadline for a loaded machine.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn on_machine_daemon(name: &str) -> bool {
    std::process::Command::new("docker").args(["inspect", name]).output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_daemon_serves_is_cut_restored_stopped_and_restarted() {
    let mut td = tokio::task::block_in_place(TestDaemon::start).expect("starting a test daemon (needs root)");
    let call = Duration::from_secs(5);
    let timeouts = Timeouts { call, event_liveness: Duration::from_secs(2), ..Default::default() };
    let d = BollardDocker::connect_with(&td.endpoint(), None, timeouts).await.unwrap();
    let facts = d.info().await.unwrap();
    assert_eq!(facts.api_version, "1.41", "{facts:?}");

    let name = format!("berth-e2e-td-{:08x}", rand::random::<u32>());
    let filter: LabelFilter = vec![("berth.e2e/td".into(), name.clone())];
    let spec = ContainerSpec {
        name: name.clone(),
        image: DEFAULT_IMAGE.into(),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        labels: BTreeMap::from([("berth.e2e/td".to_string(), name.clone())]),
        restart_policy: "unless-stopped".into(),
        stop_timeout_seconds: Some(1),
        ..Default::default()
    };
    d.create_container(&spec).await.unwrap();
    d.start_container(&name).await.unwrap();
    let ps = td.cli().args(["ps", "--format", "{{.Names}}"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), name, "the container runs on the test daemon");
    assert!(!on_machine_daemon(&name), "and not on the machine's daemon");
    let mut events = d.events(&filter);

    // Cut: every call fails as unreachable (or timed out) within its limit, and the event
    // stream ends with an error.
    td.cut().unwrap();
    let bound = call + Duration::from_secs(10);
    let err = tokio::time::timeout(bound, d.ping()).await.expect("ping gives up in time").unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let err = tokio::time::timeout(bound, d.list_containers(&filter)).await.expect("list gives up").unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let ended = tokio::time::timeout(Duration::from_secs(60), events.next()).await.expect("events notice the cut");
    let err = ended.expect("an error, not a silent end").unwrap_err();
    assert!(err.is_unreachable(), "{err}");

    td.restore().unwrap();
    let listed = eventually("the daemon to answer again", async || d.list_containers(&filter).await.ok()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, ContainerState::Running);

    // Stop and restart: the container survives and, being unless-stopped, runs again.
    tokio::task::block_in_place(|| td.stop()).unwrap();
    assert!(!td.is_running());
    let err = tokio::time::timeout(bound, d.ping()).await.expect("ping gives up in time").unwrap_err();
    assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
    tokio::task::block_in_place(|| td.restart()).unwrap();
    let c = eventually("the container to run again", async || {
        let c = d.inspect_container(&name).await.ok()?;
        (c.summary.state == ContainerState::Running).then_some(c)
    })
    .await;
    assert_eq!(c.summary.name, name);

    // Dropping tears everything down.
    let (pid, dir, netns) = (td.pid().unwrap(), td.dir().to_path_buf(), td.netns());
    tokio::task::block_in_place(|| drop(td));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the daemon is gone");
    assert!(!dir.exists(), "{} removed", dir.display());
    assert!(!Path::new(&format!("/var/run/netns/{netns}")).exists(), "namespace {netns} removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_daemon_takes_the_client_certificate_and_refuses_plain_http() {
    let td = tokio::task::block_in_place(TestDaemon::start_tls).expect("starting a TLS test daemon (needs root)");
    let files = td.client_tls().unwrap();
    let tls = TlsFiles {
        ca_file: Some(files.ca.to_string_lossy().into_owned()),
        cert_file: Some(files.cert.to_string_lossy().into_owned()),
        key_file: Some(files.key.to_string_lossy().into_owned()),
    };
    let d = BollardDocker::connect(&td.endpoint(), Some(&tls)).await.expect("TLS with the client certificate");
    d.ping().await.unwrap();
    assert_eq!(d.info().await.unwrap().api_version, "1.41");
    let image = d.inspect_image(DEFAULT_IMAGE).await.unwrap().expect("the image was loaded");
    assert!(image.id.starts_with("sha256:"));

    // Plain HTTP to a TLS daemon says what is missing.
    let err = BollardDocker::connect(&td.endpoint(), None).await.unwrap_err();
    assert!(matches!(err, DockerError::InvalidEndpoint { .. }), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    // Another CA's view of the daemon: the handshake fails, says why, and is not taken for an
    // outage.
    let stranger = tempfile::tempdir().unwrap();
    let ca = stranger.path().join("ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
    std::fs::write(&ca, other.cert.pem()).unwrap();
    let wrong_ca = TlsFiles { ca_file: Some(ca.to_string_lossy().into_owned()), ..tls.clone() };
    let err = BollardDocker::connect(&td.endpoint(), Some(&wrong_ca)).await.unwrap_err();
    assert!(matches!(err, DockerError::InvalidEndpoint { .. }), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}
