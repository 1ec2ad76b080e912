//! `berth serve` as an operator runs it: with a certificate pair of their own (kubectl, the berth
//! CLI and a client trusting only that CA connect; a client trusting another CA does not), the
//! refusal to serve plain HTTP on a non-loopback address unless `--insecure`, and a graceful
//! shutdown on SIGTERM that finishes the writes in flight (one held open across the signal on
//! purpose, concurrent ones around it), over plain HTTP and over TLS.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_e2e::kubectl::Kubectl;
use berth_e2e::{Client, Endpoint, Server, berth_binary, process};
use rand::Rng;
use serde_json::{Value, json};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
/// Deadline of every wait in these tests (generous: the machine is small and shared).
const DEADLINE: Duration = Duration::from_secs(120);

/// A CA and a server certificate it issued for `localhost` and 127.0.0.1, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn issue_certificates(dir: &Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let pki = Pki { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server-key.pem") };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, server.signed_by(&key, &ca).unwrap().pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": {"test": "serve-lifecycle"}},
           "data": {"owner": name}})
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion in {obj}"))
}

#[test]
fn serves_the_given_certificate_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = issue_certificates(&tmp.path().join("pki"), "operator");
    let (cert, key, ca) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap(), pki.ca.to_str().unwrap());
    let server = Server::start(&tmp.path().join("data"), &["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca])
        .expect("start berth serve with a certificate pair");
    assert!(server.endpoint.server.starts_with("https://127.0.0.1:"), "{}", server.endpoint.server);
    assert_eq!(server.endpoint.ca.as_deref(), Some(pki.ca.as_path()), "the kubeconfig names the given CA");
    assert!(!server.data_dir.join("tls").exists(), "no self-signed certificate was generated");

    // A client that trusts only the operator's CA.
    let client = server.client();
    let created = client.post(CONFIGMAPS, &configmap("over-tls")).unwrap();
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(client.get(&format!("{CONFIGMAPS}/over-tls")).unwrap().body["data"]["owner"], "over-tls");

    // kubectl with the kubeconfig berth wrote (it sends its token only over TLS).
    let k = Kubectl::new(&server.kubeconfig()).unwrap();
    assert_eq!(k.ok(&["get", "--raw", "/readyz"]).unwrap().trim(), "ok");
    let names = k.ok(&["get", "configmaps", "-o", "name"]).unwrap();
    assert_eq!(names.trim(), "configmap/over-tls");

    // The berth CLI (rustls) with the same kubeconfig.
    let out = process::run(
        {
            let mut cmd = std::process::Command::new(berth_binary().unwrap());
            cmd.args(["get", "configmaps", "--kubeconfig"]).arg(server.kubeconfig());
            cmd
        },
        None,
        DEADLINE,
    )
    .unwrap();
    assert!(out.success() && out.stdout.contains("over-tls"), "{out}");

    // A client that trusts another CA refuses the server: what it was trusting above was the
    // operator's certificate, not any certificate.
    let other = issue_certificates(&tmp.path().join("other"), "stranger");
    let stranger = Client::new(&Endpoint { ca: Some(other.ca.clone()), ..server.endpoint.clone() }).unwrap();
    let err = stranger.get("/readyz").expect_err("a client trusting another CA connected");
    assert!(format!("{err:#}").to_lowercase().contains("certificate"), "{err:#}");
    server.stop().unwrap();
}

/// Runs `berth serve ARGS` in `cwd` (so the default data directory is `cwd/.berth`) until it
/// announces its address, then checks kubectl with the kubeconfig it wrote.
fn serve_in(cwd: &Path, args: &[&str]) {
    let mut cmd = std::process::Command::new(berth_binary().unwrap());
    cmd.current_dir(cwd).args(["serve", "--listen", "127.0.0.1:0", "--no-controllers"]).args(args);
    let mut serve = process::Background::spawn(cmd).unwrap();
    serve.expect_line(process::Stream::Stdout, DEADLINE, |l| l.starts_with("berth API listening on https://")).unwrap();
    let k = Kubectl::new(&cwd.join(".berth").join("kubeconfig")).unwrap();
    let out = k.run(&["get", "--raw", "/readyz"]).unwrap();
    assert!(out.success() && out.stdout.trim() == "ok", "{out}\nserver:\n{}", serve.transcript());
}

#[test]
fn relative_paths_on_the_command_line_work_in_the_kubeconfig() {
    // The default data directory `.berth` is relative; kubectl reads a relative
    // certificate-authority relative to the kubeconfig's directory, so berth writes absolute ones.
    let tmp = tempfile::tempdir().unwrap();
    serve_in(tmp.path(), &[]);

    // A self-signed pair of the operator's, given by relative paths: the kubeconfig trusts the
    // certificate itself.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("pki")).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(tmp.path().join("pki/cert.pem"), generated.cert.pem()).unwrap();
    std::fs::write(tmp.path().join("pki/key.pem"), generated.signing_key.serialize_pem()).unwrap();
    serve_in(tmp.path(), &["--tls-cert", "pki/cert.pem", "--tls-key", "pki/key.pem"]);
    assert!(!tmp.path().join(".berth/tls").exists(), "no certificate was generated");
}

#[test]
fn plain_http_on_a_non_loopback_address_needs_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cmd = std::process::Command::new(berth_binary().unwrap());
    cmd.arg("serve").arg("--data-dir").arg(&data).args(["--listen", "0.0.0.0:0", "--no-tls", "--no-controllers"]);
    let out = process::run(cmd, None, DEADLINE).unwrap();
    assert!(!out.success(), "berth serve started on 0.0.0.0 without TLS: {out}");
    assert!(out.stderr.contains("refusing to listen on 0.0.0.0:0 without TLS"), "{out}");
    assert!(out.stderr.contains("--insecure"), "the message names the way out: {out}");
    assert!(!data.exists(), "nothing was created before the refusal");

    // TLS (the default) on the same address is fine.
    let server = Server::start_args(&data, &["--listen", "0.0.0.0:0", "--no-controllers"]).unwrap();
    assert!(server.endpoint.server.starts_with("https://"), "{}", server.endpoint.server);
    assert_eq!(server.client().get("/readyz").unwrap().status, 200);
    server.stop().unwrap();

    // So is plain HTTP with --insecure, and the tokens are still required.
    let server =
        Server::start_args(&data, &["--listen", "0.0.0.0:0", "--no-tls", "--insecure", "--no-controllers"]).unwrap();
    assert!(server.endpoint.server.starts_with("http://"), "{}", server.endpoint.server);
    assert_eq!(server.client().get(CONFIGMAPS).unwrap().status, 200);
    let anonymous = Client::new(&Endpoint { token: String::new(), ..server.endpoint.clone() }).unwrap();
    assert_eq!(anonymous.get(CONFIGMAPS).unwrap().status, 401);
    server.stop().unwrap();
}

/// A byte stream to the server: TCP, or TLS trusting the kubeconfig's CA.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(endpoint: &Endpoint) -> Result<Box<dyn Stream>> {
    let url = endpoint.server.as_str();
    let (tls, hostport) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(h), _) => (true, h),
        (None, Some(h)) => (false, h),
        _ => bail!("unexpected server URL {url}"),
    };
    let tcp = TcpStream::connect(hostport).with_context(|| format!("connecting to {hostport}"))?;
    tcp.set_read_timeout(Some(DEADLINE))?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    use rustls::pki_types::pem::PemObject;
    let ca = endpoint.ca.as_ref().context("an https server without a CA in its kubeconfig")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca)?)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h).to_string();
    let conn = rustls::ClientConnection::new(Arc::new(config), host.try_into()?)?;
    Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

/// Reads one HTTP response head (up to the blank line); returns its status code.
fn read_head(stream: &mut dyn Stream) -> Result<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!("the connection closed after {:?}", String::from_utf8_lossy(&head));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    code.with_context(|| format!("not an HTTP response: {text}"))
}

/// Waits until the server no longer accepts connections (it has begun shutting down).
fn wait_until_refused(endpoint: &Endpoint) {
    let hostport = endpoint.server.split("://").nth(1).unwrap().to_string();
    let started = Instant::now();
    while TcpStream::connect(&hostport).is_ok() {
        assert!(started.elapsed() < DEADLINE, "the server still accepts connections {DEADLINE:?} after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writers create ConfigMaps while the server gets SIGTERM; one request is held open across the
/// signal (its body is sent only once the server refuses new connections). Every write the
/// server took on is answered, every answered write is there after a restart, and the process
/// exits 0.
fn sigterm_finishes_in_flight_writes(server_args: &[&str]) {
    const WRITERS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, server_args).expect("start berth serve");
    let client = server.client();
    let endpoint = server.endpoint.clone();

    // The request held open: headers first, with `Expect: 100-continue`; the server answers
    // `100 Continue` once its handler reads the body, so the write is then in flight.
    let body = configmap("held-across-the-signal").to_string();
    let mut held = connect(&endpoint).unwrap();
    let head = format!(
        "POST {CONFIGMAPS} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        endpoint.server.split("://").nth(1).unwrap(),
        endpoint.token,
        body.len()
    );
    held.write_all(head.as_bytes()).unwrap();
    held.flush().unwrap();
    assert_eq!(read_head(&mut *held).unwrap(), 100, "the server did not start reading the body");

    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop_after = rand::rng().random_range(20..=150);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, acked, count) = (client.clone(), acked.clone(), count.clone());
                scope.spawn(move || {
                    for j in 0.. {
                        let name = format!("w{w}-{j}");
                        match client.post(CONFIGMAPS, &configmap(&name)) {
                            Ok(reply) if reply.status == 201 => {
                                acked.lock().unwrap().insert(name, rv_of(&reply.body));
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            // Refused while shutting down, before anything was stored.
                            Ok(reply) if reply.status == 503 => return,
                            Ok(reply) => panic!("create {name}: unexpected {} {:?}", reply.status, reply.body),
                            // The server no longer takes connections.
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        while count.load(Ordering::SeqCst) < stop_after {
            assert!(started.elapsed() < DEADLINE, "only {} writes in {DEADLINE:?}", count.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(1));
        }
        server.terminate().unwrap();
        wait_until_refused(&endpoint);
        // Now the server is shutting down, with this request still in flight.
        held.write_all(body.as_bytes()).unwrap();
        held.flush().unwrap();
        assert_eq!(read_head(&mut *held).unwrap(), 201, "the write in flight at SIGTERM was not finished");
        for w in writers {
            w.join().expect("writer thread");
        }
    });
    server.wait_for_clean_exit().expect("berth serve exits 0 after SIGTERM");

    let acked = Arc::try_unwrap(acked).unwrap().into_inner().unwrap();
    eprintln!("{} writes acknowledged around SIGTERM (stopped after {stop_after})", acked.len());
    let server = Server::start(&data, server_args).expect("restart berth serve");
    let list = server.client().get(&format!("{CONFIGMAPS}?labelSelector=test%3Dserve-lifecycle")).unwrap();
    assert_eq!(list.status, 200, "{:?}", list.body);
    let mut present: BTreeMap<String, u64> = BTreeMap::new();
    for item in list.body["items"].as_array().unwrap() {
        present.insert(item["metadata"]["name"].as_str().unwrap().to_string(), rv_of(item));
    }
    assert!(present.remove("held-across-the-signal").is_some(), "the write held across SIGTERM is lost");
    // Equal, not just included: a write the server stored was also answered.
    assert_eq!(present, acked, "stored writes and acknowledged writes differ");
    server.stop().unwrap();
}

#[test]
fn sigterm_finishes_in_flight_writes_over_http() {
    sigterm_finishes_in_flight_writes(&[]);
}

#[test]
fn sigterm_finishes_in_flight_writes_over_tls() {
    sigterm_finishes_in_flight_writes(&["--tls-self-signed"]);
}
