//! `berth serve`: one process with the API server over the embedded store, the controllers and
//! the Docker drivers. Writes `<data-dir>/kubeconfig` so kubectl and the berth CLI work at once.
//! The controllers use the API in-process (`kube::Client` over the router); with
//! `--no-embedded-api --kubeconfig FILE` the same controllers run against a real Kubernetes API.
//! On SIGTERM the controllers stop first (running reconciles finish), then the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::apiserver::{self, ApiState, auth};
use crate::config::OperatorConfig;
use crate::controllers::context::Context as ControllerContext;
use crate::controllers::pool::HostPool;
use crate::docker::bollard_impl::BollardConnector;
use crate::policy::OperatorPolicy;
use crate::store::{self as object_store, StoreOptions};

/// Arguments of `berth serve`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  berth serve\n  berth serve --data-dir /var/lib/berth --listen 0.0.0.0:7443 --tls-cert server.crt --tls-key server.key --tls-ca ca.crt\n  berth serve --listen 127.0.0.1:0 --no-controllers\n  berth serve --instance edge --config berth.yaml\n  berth serve --no-embedded-api --kubeconfig ~/.kube/config   # controllers against a real cluster"
)]
pub struct ServeArgs {
    /// Directory of the store, the tokens file and the kubeconfig.
    #[arg(long, value_name = "DIR", default_value = ".berth", env = "BERTH_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed and written to the kubeconfig).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Operator configuration (SKUs, registry allowlist, quotas, orphan policy, …).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Tokens file (`token,user,role` lines). Default: `<data-dir>/tokens.csv`, created with an
    /// admin token on first start.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// TLS certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) that issued --tls-cert, named in the kubeconfig so clients trust
    /// the server. Default: --tls-cert itself, which is right for a self-signed certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate generated once in `<data-dir>/tls/` (the default
    /// when no --tls-cert is given; the kubeconfig trusts it).
    #[arg(long, conflicts_with_all = ["tls_cert", "no_tls"])]
    pub tls_self_signed: bool,
    /// Serve plain HTTP. kubectl sends no bearer token over plain HTTP, so only clients that do
    /// (the berth CLI, kube-rs) can authenticate; use behind a TLS-terminating proxy or in tests.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_self_signed"])]
    pub no_tls: bool,
    /// Allow a non-loopback listen address without TLS.
    #[arg(long)]
    pub insecure: bool,
    /// Largest accepted request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = apiserver::DEFAULT_BODY_LIMIT)]
    pub max_body_bytes: usize,
    /// Watch history kept in memory, in events (older resourceVersions get 410 Expired).
    #[arg(long, value_name = "EVENTS", default_value_t = 10_000)]
    pub watch_history: usize,
    /// How long Events are kept after they were last observed.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration_arg)]
    pub events_ttl: Duration,
    /// Serve the API only; run no controllers.
    #[arg(long)]
    pub no_controllers: bool,
    /// Name of this berth installation, recorded in the label `berth.dev/instance` of everything
    /// it creates: installations with different names share a Docker daemon without touching
    /// each other's objects.
    #[arg(long, value_name = "NAME", env = "BERTH_INSTANCE", default_value = crate::controllers::context::DEFAULT_INSTANCE)]
    pub instance: String,
    /// With --no-embedded-api: the kubeconfig of the Kubernetes API the controllers use (the CRDs
    /// of crds/yaml must be installed there).
    #[arg(long, value_name = "FILE", requires = "no_embedded_api")]
    pub kubeconfig: Option<PathBuf>,
    /// Serve no API: run only the controllers, against the Kubernetes API of --kubeconfig.
    #[arg(long, requires = "kubeconfig", conflicts_with = "no_controllers")]
    pub no_embedded_api: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    berth_crds::duration::parse_duration(s)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sled=warn,kube=warn,hyper=warn,tower=warn"))
        // bollard logs request and response bodies at debug level, and container create bodies
        // carry environment values (secrets among them): never let them into the log.
        .add_directive("bollard=info".parse().expect("a valid directive"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Reads the tokens file, creating it with one admin token when it does not exist.
fn load_or_create_tokens(path: &Path) -> anyhow::Result<(auth::Tokens, Option<String>)> {
    if path.exists() {
        let tokens = auth::Tokens::load(path)?;
        if tokens.is_empty() {
            bail!(
                "tokens file {} holds no token; add a line `TOKEN,admin,admin` or delete the file to have one generated",
                path.display()
            );
        }
        return Ok((tokens, None));
    }
    let token = auth::generate_token();
    let text = format!("# berth tokens: token,user,role (admin or read-only)\n{token},admin,admin\n");
    write_private(path, &text)?;
    Ok((auth::Tokens::parse(&text, &path.display().to_string())?, Some(token)))
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The admin token to put in the kubeconfig: the first admin line of the tokens file.
fn admin_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().map(str::trim).filter(|l| !l.starts_with('#')).find_map(|l| {
        let parts: Vec<&str> = l.split(',').map(str::trim).collect();
        (parts.len() == 3 && parts[2] == "admin").then(|| parts[0].to_string())
    })
}

/// The kubeconfig text for a server URL and token.
pub fn kubeconfig(server: &str, token: &str, ca_file: Option<&Path>) -> String {
    let ca = ca_file.map(|p| format!("\n    certificate-authority: {}", p.display())).unwrap_or_default();
    format!(
        "# Written by `berth serve`; rewritten at every start.\napiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server}{ca}\nusers:\n- name: berth-admin\n  user:\n    token: {token}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: berth-admin\n    namespace: default\ncurrent-context: berth\n"
    )
}

fn self_signed(dir: &Path, listen: std::net::IpAddr) -> anyhow::Result<(PathBuf, PathBuf)> {
    let tls = dir.join("tls");
    let (cert, key) = (tls.join("server.crt"), tls.join("server.key"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&tls)?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !listen.is_unspecified() && !listen.is_loopback() {
        names.push(listen.to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        names.push(h.trim().to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names).context("generating a self-signed certificate")?;
    std::fs::write(&cert, generated.cert.pem())?;
    write_private(&key, &generated.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// The key of the secret-value HMAC in config hashes: generated once into
/// `<data-dir>/hash-key` (0600) and kept, since a new key would change every hash that covers a
/// secret and so recreate those containers.
fn load_or_create_hash_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let key = hex::decode(text.trim()).ok().filter(|k| k.len() >= 16).with_context(|| {
            format!(
                "{} is not a hex key of at least 16 bytes; restore it from a backup (a new key recreates every \
                 container that uses a secret)",
                path.display()
            )
        })?;
        return Ok(key);
    }
    use rand::Rng;
    let key: [u8; 32] = rand::rng().random();
    write_private(path, &format!("{}\n", hex::encode(key)))?;
    tracing::info!(path = %path.display(), "generated the config-hash key");
    Ok(key.to_vec())
}

/// Checks that `name` can be a label value.
fn check_instance(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok {
        bail!(
            "--instance {name:?} is not a valid label value (1-63 letters, digits, '-', '_' or '.', starting and \
             ending with a letter or digit)"
        );
    }
    Ok(())
}

/// Starts the controllers over `client`; they stop when `stop` is cancelled. The Lease
/// controller keeps its callback outbox in `<data-dir>/callbacks`.
fn spawn_controllers(
    ctx: Arc<ControllerContext>,
    data_dir: &Path,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(instance = %ctx.instance, "starting the controllers");
    let leases = crate::controllers::lease::LeaseControllerOptions {
        outbox_dir: Some(data_dir.join("callbacks")),
        ..Default::default()
    };
    tokio::spawn(async move {
        tokio::join!(
            crate::controllers::host::run(ctx.clone(), stop.clone()),
            crate::controllers::stack::run(ctx.clone(), stop.clone()),
            crate::controllers::lease::run(ctx, leases, stop),
        );
    })
}

/// The shared state of the controllers.
fn controller_context(
    client: kube::Client,
    config: Arc<OperatorConfig>,
    instance: &str,
    hash_key: Vec<u8>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Arc<ControllerContext> {
    Arc::new(ControllerContext {
        client,
        config,
        instance: instance.to_string(),
        hash_key,
        pool: Arc::new(HostPool::new()),
        connector: Arc::new(BollardConnector::new(Default::default())),
        metrics,
    })
}

/// Waits (a bounded time) for the controllers to finish their running reconciles.
async fn join_controllers(handle: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_secs(30), handle).await.is_err() {
        tracing::warn!("the controllers did not stop within 30s; stopping anyway");
    }
}

/// `--no-embedded-api`: the controllers against a real Kubernetes API, until SIGINT or SIGTERM.
async fn serve_controllers_only(args: &ServeArgs, config: Arc<OperatorConfig>) -> anyhow::Result<()> {
    let path = args.kubeconfig.as_ref().context("--no-embedded-api needs --kubeconfig")?;
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let options = kube::config::KubeConfigOptions::default();
    let client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("using the kubeconfig {}", path.display()))?;
    let client = kube::Client::try_from(client_config).context("building the Kubernetes client")?;
    client.apiserver_version().await.with_context(|| {
        format!("the Kubernetes API of {} does not answer; check the kubeconfig and the network", path.display())
    })?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let hash_key = load_or_create_hash_key(&args.data_dir.join("hash-key"))?;
    let ctx = controller_context(client, config, &args.instance, hash_key, Arc::new(crate::metrics::Metrics::new()));
    let stop = CancellationToken::new();
    let controllers = spawn_controllers(ctx, &args.data_dir, stop.clone());
    println!("berth controllers running against {}", path.display());
    shutdown_signal().await;
    tracing::info!("shutting down: letting running reconciles finish");
    stop.cancel();
    join_controllers(controllers).await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    check_instance(&args.instance)?;
    let config = Arc::new(match &args.config {
        Some(path) => OperatorConfig::load(path)?,
        None => OperatorConfig::default(),
    });
    if args.no_embedded_api {
        return serve_controllers_only(&args, config).await;
    }
    // Checked before anything is created: --no-tls is the only way to serve plain HTTP.
    if !args.listen.ip().is_loopback() && args.no_tls && !args.insecure {
        bail!(
            "refusing to listen on {} without TLS: bearer tokens would cross the network in clear text. \
             Give --tls-cert/--tls-key or drop --no-tls, listen on 127.0.0.1, or pass --insecure if you accept the risk",
            args.listen
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    // Absolute paths: kubectl reads a relative certificate-authority relative to the kubeconfig.
    let absolute = |flag: &str, p: &Path| {
        p.canonicalize().with_context(|| format!("reading {flag} {}; check the path", p.display()))
    };
    // (certificate, key, the CA clients should trust)
    let tls = match (&args.tls_cert, &args.tls_key, args.no_tls) {
        (Some(c), Some(k), _) => {
            let cert = absolute("--tls-cert", c)?;
            let ca = match &args.tls_ca {
                Some(ca) => absolute("--tls-ca", ca)?,
                None => cert.clone(),
            };
            Some((cert, absolute("--tls-key", k)?, ca))
        }
        (_, _, true) => None,
        _ => {
            let (cert, key) = self_signed(&data_dir, args.listen.ip())?;
            Some((cert.clone(), key, cert))
        }
    };
    let tokens_path = args.tokens.clone().unwrap_or_else(|| data_dir.join("tokens.csv"));
    let (tokens, generated) = load_or_create_tokens(&tokens_path)?;
    if generated.is_some() {
        tracing::info!(path = %tokens_path.display(), "generated an admin token");
    }

    let store = object_store::open(
        data_dir.join("store"),
        StoreOptions { history_capacity: args.watch_history, ..Default::default() },
    )
    .with_context(|| format!("opening the store in {}", data_dir.join("store").display()))?;
    let mut state = ApiState::new(store.clone());
    state.body_limit = args.max_body_bytes;
    state.policy = Arc::new(OperatorPolicy::new(config.clone()));
    let hash_key = load_or_create_hash_key(&data_dir.join("hash-key"))?;
    let shutdown = state.shutdown.clone();

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("listening on {}; is another berth serve running there? pick another --listen", args.listen)
    })?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let server_url = format!("{scheme}://{host}:{}", addr.port());
    let token = admin_token(&tokens_path).context("the tokens file has no admin token for the kubeconfig")?;
    let kubeconfig_path = data_dir.join("kubeconfig");
    write_private(&kubeconfig_path, &kubeconfig(&server_url, &token, tls.as_ref().map(|(_, _, ca)| ca.as_path())))?;

    let background = CancellationToken::new();
    tokio::spawn(apiserver::events_gc::run(
        store.clone(),
        args.events_ttl,
        Duration::from_secs(60),
        background.clone(),
    ));

    let app = apiserver::with_auth(apiserver::router(state.clone()), auth::AuthMode::Tokens(Arc::new(tokens)));
    println!("berth API listening on {server_url}");
    println!("kubeconfig: {}", kubeconfig_path.display());

    // The controllers reach the API in-process, over the same router (no socket, no token).
    let stop_controllers = CancellationToken::new();
    let controllers = (!args.no_controllers).then(|| {
        let client = kube::Client::new(apiserver::router(state.clone()), "default");
        let ctx = controller_context(client, config.clone(), &args.instance, hash_key, state.metrics.clone());
        // The API's `plan` and `log` subresources answer from now on (503 until then).
        let _ = state.views.set(Arc::new(crate::controllers::views::ControllerViews::new(ctx.clone())));
        spawn_controllers(ctx, &data_dir, stop_controllers.clone())
    });
    // On a signal /readyz turns 503 at once; the controllers stop first (their running
    // reconciles still need the API), then the API finishes its in-flight requests.
    let ready = state.ready.clone();
    let signal = async move {
        shutdown_signal().await;
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("shutting down: letting running reconciles finish");
        stop_controllers.cancel();
        if let Some(c) = controllers {
            join_controllers(c).await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    };
    match tls {
        None => {
            let shutdown2 = shutdown.clone();
            // TCP_NODELAY: a watch event is one small write, and Nagle's algorithm would hold
            // it back until the client's delayed ACK of the previous one (up to 40 ms).
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::warn!(error = %e, "could not set TCP_NODELAY");
                }
            });
            let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                signal.await;
                shutdown2.cancel();
            });
            server.await.context("serving the API")?;
        }
        Some((cert, key, _)) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .with_context(|| format!("loading TLS certificate {} and key {}", cert.display(), key.display()))?;
            let handle = axum_server::Handle::new();
            let h2 = handle.clone();
            let shutdown2 = shutdown.clone();
            tokio::spawn(async move {
                signal.await;
                shutdown2.cancel();
                h2.graceful_shutdown(Some(Duration::from_secs(30)));
            });
            let std_listener = listener.into_std()?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            axum_server::from_tcp(std_listener)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(app.into_make_service())
                .await
                .context("serving the API over TLS")?;
        }
    }
    background.cancel();
    store.flush().await.context("flushing the store at shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
