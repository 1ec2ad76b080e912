//! Connecting the client commands to an API server: which kubeconfig to read (`--kubeconfig`,
//! then `KUBECONFIG`, then the one `berth serve` wrote into its data directory), building the
//! `kube::Client`, and turning client errors into messages that say what to do next.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How to reach the server: flattened into every client command.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Connection")]
pub struct ConnectArgs {
    /// Path to the kubeconfig file to use (default: $KUBECONFIG, else <data-dir>/kubeconfig).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Data directory of a local `berth serve`, whose kubeconfig is used when neither
    /// --kubeconfig nor KUBECONFIG is set.
    #[arg(long, value_name = "DIR", env = "BERTH_DATA_DIR", default_value = ".berth")]
    pub data_dir: PathBuf,
}

/// Where the kubeconfig came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigSource {
    /// `--kubeconfig FILE`.
    Flag(PathBuf),
    /// `KUBECONFIG` (possibly a list of files).
    Env(String),
    /// `<data-dir>/kubeconfig` of a local server.
    DataDir(PathBuf),
}

impl std::fmt::Display for KubeconfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag(p) => write!(f, "{} (--kubeconfig)", p.display()),
            Self::Env(v) => write!(f, "{v} (KUBECONFIG)"),
            Self::DataDir(p) => write!(f, "{} (written by `berth serve`)", p.display()),
        }
    }
}

/// Chooses the kubeconfig: the flag, then a non-empty `KUBECONFIG`, then the data dir's.
pub fn kubeconfig_source(flag: Option<&Path>, env: Option<&str>, data_dir: &Path) -> KubeconfigSource {
    if let Some(p) = flag {
        return KubeconfigSource::Flag(p.to_path_buf());
    }
    if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
        return KubeconfigSource::Env(v.to_string());
    }
    KubeconfigSource::DataDir(data_dir.join("kubeconfig"))
}

/// A connected client and what is needed to explain failures.
#[derive(Clone)]
pub struct Session {
    /// The client.
    pub client: kube::Client,
    /// The server URL, for messages.
    pub server: String,
    /// Where the configuration came from.
    pub source: KubeconfigSource,
    /// The namespace of the kubeconfig context (`default` when it names none).
    pub namespace: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("server", &self.server).field("source", &self.source).finish()
    }
}

fn read_kubeconfig(source: &KubeconfigSource) -> anyhow::Result<Kubeconfig> {
    match source {
        KubeconfigSource::Flag(p) => {
            Kubeconfig::read_from(p).with_context(|| format!("reading kubeconfig {}", p.display()))
        }
        KubeconfigSource::Env(v) => {
            let mut merged = Kubeconfig::default();
            for p in std::env::split_paths(v).filter(|p| !p.as_os_str().is_empty()) {
                // Like kubectl, files in KUBECONFIG that do not exist are skipped.
                if !p.exists() {
                    continue;
                }
                let next = Kubeconfig::read_from(&p).with_context(|| format!("reading kubeconfig {}", p.display()))?;
                merged = merged.merge(next).with_context(|| format!("merging kubeconfig {}", p.display()))?;
            }
            if merged.clusters.is_empty() {
                anyhow::bail!("KUBECONFIG={v} names no readable kubeconfig file; fix the variable or unset it");
            }
            Ok(merged)
        }
        KubeconfigSource::DataDir(p) => {
            if !p.exists() {
                anyhow::bail!(
                    "no kubeconfig: {} does not exist. Start a local server with `berth serve` (it writes that \
                     file), point --data-dir/BERTH_DATA_DIR at its data directory, or pass --kubeconfig",
                    p.display()
                );
            }
            Kubeconfig::read_from(p).with_context(|| format!("reading kubeconfig {}", p.display()))
        }
    }
}

/// Reads the kubeconfig and builds a client. No request is made yet.
pub async fn connect(args: &ConnectArgs) -> anyhow::Result<Session> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = std::env::var("KUBECONFIG").ok();
    let source = kubeconfig_source(args.kubeconfig.as_deref(), env.as_deref(), &args.data_dir);
    let kubeconfig = read_kubeconfig(&source)?;
    let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("loading kubeconfig {source}"))?;
    // A server that is down should fail fast, not after the default 30 s.
    config.connect_timeout = Some(Duration::from_secs(5));
    // kube-rs retries 429/503/504 up to 15 times with delays growing towards minutes; a person at
    // a terminal (or a CI job) is better served by the server's message at once, as kubectl does.
    config.default_retry = false;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).with_context(|| format!("building a client for {server}"))?;
    Ok(Session { client, server, source, namespace })
}

impl Session {
    /// Rewrites a failure to reach the server into one message naming the URL and the
    /// kubeconfig; other errors pass through.
    pub fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        let unreachable = err.chain().any(|c| match c.downcast_ref::<kube::Error>() {
            Some(kube::Error::HyperError(_) | kube::Error::Service(_)) => true,
            _ => c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut)
            }),
        });
        if !unreachable {
            return err;
        }
        let cause = root_cause(&err);
        anyhow!(
            "cannot reach the berth API: {cause}. Is `berth serve` running? tried {} (kubeconfig: {})",
            self.server,
            self.source
        )
    }
}

fn root_cause(err: &anyhow::Error) -> String {
    // The innermost cause is the useful one ("Connection refused (os error 111)").
    err.chain().last().map(|c| c.to_string()).unwrap_or_default()
}

/// Runs a client command on a small runtime.
pub fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?.block_on(fut)
}

/// The text printed for a failed command: kubectl's `Error from server (Reason): message` for API
/// errors (with one line per invalid field), `error: …` with the cause chain otherwise.
pub fn render_error(err: &anyhow::Error) -> String {
    if let Some(problems) = err.downcast_ref::<super::manifest::Problems>() {
        return problems.to_string();
    }
    let mut outer = Vec::new();
    for cause in err.chain() {
        if let Some(kube::Error::Api(status)) = cause.downcast_ref::<kube::Error>() {
            let mut text = String::new();
            if !outer.is_empty() {
                text.push_str(&format!("error: {}: ", outer.join(": ")));
            }
            text.push_str(&server_error(status));
            return text;
        }
        outer.push(cause.to_string());
    }
    format!("error: {err:#}")
}

/// `Error from server (NotFound): stacks.berth.dev "web" not found`, with field causes below.
pub fn server_error(status: &kube::core::Status) -> String {
    let reason = if status.reason.is_empty() { format!("{}", status.code) } else { status.reason.clone() };
    let mut text = format!("Error from server ({reason}): {}", status.message);
    if let Some(details) = &status.details {
        for cause in &details.causes {
            if !cause.field.is_empty() && !status.message.contains(&cause.field) {
                text.push_str(&format!("\n  {}: {}", cause.field, cause.message));
            }
        }
    }
    text
}

/// The HTTP code of an API error, if the error is one.
pub fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether an error is a 404 from the server.
pub fn is_not_found(err: &kube::Error) -> bool {
    api_code(err) == Some(404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_flag_beats_env_beats_data_dir() {
        let dd = Path::new("/srv/berth");
        assert_eq!(
            kubeconfig_source(Some(Path::new("/k")), Some("/e"), dd),
            KubeconfigSource::Flag(PathBuf::from("/k"))
        );
        assert_eq!(kubeconfig_source(None, Some("/e:/f"), dd), KubeconfigSource::Env("/e:/f".into()));
        assert_eq!(
            kubeconfig_source(None, Some("  "), dd),
            KubeconfigSource::DataDir(PathBuf::from("/srv/berth/kubeconfig"))
        );
        assert_eq!(
            kubeconfig_source(None, None, dd),
            KubeconfigSource::DataDir(PathBuf::from("/srv/berth/kubeconfig"))
        );
    }

    #[test]
    fn missing_local_kubeconfig_says_how_to_get_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_kubeconfig(&KubeconfigSource::DataDir(dir.path().join("kubeconfig"))).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("berth serve") && text.contains("--kubeconfig"), "{text}");
    }

    #[tokio::test]
    async fn unreachable_server_names_the_url_and_suggests_berth_serve() {
        let dir = tempfile::tempdir().unwrap();
        // A port nobody listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, crate::cli::serve::kubeconfig(&format!("http://127.0.0.1:{port}"), "t", None)).unwrap();
        let args = ConnectArgs { kubeconfig: Some(path), ..Default::default() };
        let session = connect(&args).await.unwrap();
        let err = session.client.apiserver_version().await.map_err(anyhow::Error::new).unwrap_err();
        let text = session.explain(err).to_string();
        assert!(text.contains("Is `berth serve` running?"), "{text}");
        assert!(text.contains(&format!("tried http://127.0.0.1:{port}")), "{text}");
    }

    #[test]
    fn server_errors_read_like_kubectl() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 422, "reason": "Invalid",
            "message": "Stack.berth.dev \"web\" is invalid",
            "details": {"causes": [{"field": "spec.services[0].replicas", "message": "must be at least 0", "reason": "FieldValueInvalid"}]}
        }))
        .unwrap();
        let text = render_error(&anyhow::Error::new(kube::Error::Api(Box::new(status))).context("applying x.yaml"));
        assert_eq!(
            text,
            "error: applying x.yaml: Error from server (Invalid): Stack.berth.dev \"web\" is invalid\n  spec.services[0].replicas: must be at least 0"
        );
    }
}
