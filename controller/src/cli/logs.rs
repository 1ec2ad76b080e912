//! `berth logs`: the logs of a Stack's or a Lease's containers, read through the server's `log`
//! subresource (the server holds the Docker connections; the CLI needs none), each line prefixed
//! with its `service/replica` (a Lease's instance index; and the host, when a Stack runs on
//! several), stderr lines marked.

use std::io::Write;
use std::time::Duration;

use berth_crds::logs::{LogRecord, LogRecordType, LogStreamName};
use futures::{AsyncBufReadExt, TryStreamExt};

use super::client::{self, ConnectArgs, Session};
use super::resources;

/// Arguments of `berth logs`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth logs stack/shop                       # every container of the Stack
  berth logs stack/shop -s web --tail 20      # the last 20 lines of each web replica
  berth logs stack/shop -s web --replica 1 -f # follow one replica
  berth logs shop --since 10m --timestamps    # a bare name is a Stack
  berth logs lease/pr-1234 -n previews        # every container of a Lease
  berth logs lease/pr-1234 -s app --replica 0 -f --tail 50

Lines read `[service/replica] text`, `[host/service/replica] text` when the Stack runs on several
hosts; lines the container wrote to stderr read `[service/replica stderr] text`. For a Lease the
replica is the instance index, and the containers are those of its running release (every
release's while none runs yet). Container logs can hold secrets: reading them needs an admin
token.")]
pub struct LogsArgs {
    /// stack/NAME, lease/NAME, or NAME (a Stack).
    #[arg(value_name = "stack/NAME|lease/NAME")]
    pub target: String,
    /// Only this service.
    #[arg(short, long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// Only this replica (0, 1, …; a Lease's instance index).
    #[arg(long, value_name = "N")]
    pub replica: Option<u32>,
    /// Keep printing new lines until interrupted (from the containers that exist when it starts:
    /// a container recreated meanwhile ends its part, as in kubectl).
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each container.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Only lines newer than this (e.g. 30s, 10m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Show Docker's timestamp of each line.
    #[arg(long)]
    pub timestamps: bool,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn parse_since(s: &str) -> Result<Duration, String> {
    let d = berth_crds::duration::parse_duration(s)?;
    if d.as_secs() == 0 {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// The object whose containers are read: its resource plural (`stacks`, `leases`) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    /// `Stack` or `Lease`.
    pub kind: String,
    /// The resource plural in the API path.
    pub plural: String,
    /// Object name.
    pub name: String,
}

/// The object a target names: `stack/NAME`, `lease/NAME` (or any alias of the two kinds), or a
/// bare NAME, which is a Stack.
pub fn log_source(target: &str) -> anyhow::Result<LogSource> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok(LogSource { kind: "Stack".into(), plural: "stacks".into(), name: target.to_string() });
    };
    let info = resources::resolve_one(kind)?;
    if info.group != berth_crds::GROUP || !matches!(info.kind.as_str(), "Stack" | "Lease") {
        return Err(super::usage(format!(
            "berth logs reads the containers of Stacks and Leases: write stack/NAME or lease/NAME, not {target}"
        )));
    }
    if name.is_empty() || name.contains('/') {
        return Err(super::usage(format!("{target:?} is not {}/NAME", info.kind.to_lowercase())));
    }
    Ok(LogSource { kind: info.kind.clone(), plural: info.plural.clone(), name: name.to_string() })
}

/// The path and query of the `log` subresource.
pub fn log_path(namespace: &str, source: &LogSource, args: &LogsArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(s) = &args.service {
        q.append_pair("service", s);
    }
    if let Some(r) = args.replica {
        q.append_pair("replica", &r.to_string());
    }
    if args.follow {
        q.append_pair("follow", "true");
    }
    if let Some(n) = args.tail {
        q.append_pair("tailLines", &n.to_string());
    }
    if let Some(d) = args.since {
        q.append_pair("sinceSeconds", &d.as_secs().max(1).to_string());
    }
    if args.timestamps {
        q.append_pair("timestamps", "true");
    }
    let query = q.finish();
    let path =
        format!("/apis/{}/namespaces/{namespace}/{}/{}/log", berth_crds::API_VERSION, source.plural, source.name);
    if query.is_empty() { path } else { format!("{path}?{query}") }
}

/// Turns records into printed lines; knows whether to name hosts from the `container` records
/// that come first.
#[derive(Debug, Default)]
pub struct Formatter {
    hosts: std::collections::BTreeSet<String>,
}

/// Where a formatted record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Printed {
    /// A line for stdout.
    Out(String),
    /// A problem for stderr (the command then exits 1).
    Problem(String),
    /// Nothing to print.
    Nothing,
}

impl Formatter {
    fn prefix(&self, r: &LogRecord) -> String {
        if self.hosts.len() > 1 {
            format!("{}/{}/{}", r.host, r.service, r.replica)
        } else {
            format!("{}/{}", r.service, r.replica)
        }
    }

    /// The printed form of one record.
    pub fn format(&mut self, r: &LogRecord) -> Printed {
        match r.type_ {
            LogRecordType::Container => {
                self.hosts.insert(r.host.clone());
                Printed::Nothing
            }
            LogRecordType::Line => {
                let marker = if r.stream == Some(LogStreamName::Stderr) { " stderr" } else { "" };
                let time = r.time.as_ref().map(|t| format!("{t} ")).unwrap_or_default();
                Printed::Out(format!("[{}{marker}] {time}{}", self.prefix(r), r.text))
            }
            LogRecordType::Error if r.service.is_empty() => Printed::Problem(format!("error: {}", r.text)),
            LogRecordType::Error => Printed::Problem(format!("error: [{}] {}", self.prefix(r), r.text)),
            LogRecordType::Unknown => Printed::Nothing,
        }
    }
}

/// Runs `berth logs`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let source = log_source(&args.target)?;
    let session = client::connect(&args.connect).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| session.namespace.clone());
    let mut out = std::io::stdout().lock();
    let result = exec(&session, &namespace, &source, &args, &mut out).await;
    result.map_err(|e| session.explain(e))
}

async fn exec(
    session: &Session,
    namespace: &str,
    source: &LogSource,
    args: &LogsArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = http::Request::get(log_path(namespace, source, args)).body(Vec::new())?;
    let reader = match session.client.request_stream(request).await {
        Ok(r) => r,
        Err(kube::Error::Api(s)) if s.code == 404 && s.message.starts_with("the server could not find") => {
            anyhow::bail!(
                "the API server at {} does not serve container logs (the `log` subresource of {} is unknown \
                 there): `berth logs` needs a berth API server (`berth serve`) of this version running its \
                 controllers",
                session.server,
                source.plural
            )
        }
        Err(e) => return Err(e.into()),
    };
    let mut lines = reader.lines();
    let mut formatter = Formatter::default();
    let mut problems = 0usize;
    while let Some(line) = lines.try_next().await? {
        if line.trim().is_empty() {
            continue;
        }
        let record: LogRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("warning: skipping a log record this berth does not understand ({e}): {line}");
                continue;
            }
        };
        match formatter.format(&record) {
            Printed::Out(text) => {
                writeln!(out, "{text}")?;
                out.flush()?;
            }
            Printed::Problem(text) => {
                problems += 1;
                eprintln!("{text}");
            }
            Printed::Nothing => {}
        }
    }
    if problems > 0 {
        return Err(anyhow::Error::new(super::Exit::Silent(1)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(type_: LogRecordType, host: &str, service: &str, replica: i32, text: &str) -> LogRecord {
        LogRecord {
            type_,
            host: host.into(),
            service: service.into(),
            replica,
            container: format!("ns.shop-{service}-{replica}"),
            stream: (type_ == LogRecordType::Line).then_some(LogStreamName::Stdout),
            time: None,
            text: text.into(),
        }
    }

    #[test]
    fn lines_carry_service_replica_and_mark_stderr() {
        let mut f = Formatter::default();
        assert_eq!(f.format(&rec(LogRecordType::Container, "local", "web", 0, "")), Printed::Nothing);
        assert_eq!(f.format(&rec(LogRecordType::Line, "local", "web", 0, "hi")), Printed::Out("[web/0] hi".into()));
        let mut err = rec(LogRecordType::Line, "local", "web", 0, "oops");
        err.stream = Some(LogStreamName::Stderr);
        err.time = Some("2026-01-01T00:00:00.1Z".into());
        assert_eq!(f.format(&err), Printed::Out("[web/0 stderr] 2026-01-01T00:00:00.1Z oops".into()));
        assert_eq!(
            f.format(&rec(LogRecordType::Error, "local", "web", 1, "container gone")),
            Printed::Problem("error: [web/1] container gone".into())
        );
    }

    #[test]
    fn several_hosts_put_the_host_in_the_prefix() {
        let mut f = Formatter::default();
        f.format(&rec(LogRecordType::Container, "edge-1", "web", 0, ""));
        f.format(&rec(LogRecordType::Container, "edge-2", "web", 0, ""));
        assert_eq!(
            f.format(&rec(LogRecordType::Line, "edge-2", "web", 0, "hi")),
            Printed::Out("[edge-2/web/0] hi".into())
        );
    }

    #[test]
    fn targets_and_query() {
        let stack = |n: &str| LogSource { kind: "Stack".into(), plural: "stacks".into(), name: n.into() };
        let lease = |n: &str| LogSource { kind: "Lease".into(), plural: "leases".into(), name: n.into() };
        assert_eq!(log_source("stack/shop").unwrap(), stack("shop"));
        assert_eq!(log_source("st/shop").unwrap(), stack("shop"));
        assert_eq!(log_source("shop").unwrap(), stack("shop"));
        assert_eq!(log_source("lease/pr-1").unwrap(), lease("pr-1"));
        assert_eq!(log_source("leases/pr-1").unwrap(), lease("pr-1"));
        assert_eq!(log_source("bl/pr-1").unwrap(), lease("pr-1"));
        assert!(log_source("host/local").unwrap_err().to_string().contains("stack/NAME or lease/NAME"));
        assert!(log_source("lease/").unwrap_err().to_string().contains("is not lease/NAME"));
        let args = LogsArgs {
            target: "stack/shop".into(),
            service: Some("web".into()),
            replica: Some(1),
            follow: true,
            tail: Some(5),
            since: Some(Duration::from_secs(600)),
            timestamps: false,
            namespace: None,
            connect: Default::default(),
        };
        assert_eq!(
            log_path("ns", &stack("shop"), &args),
            "/apis/berth.dev/v1alpha1/namespaces/ns/stacks/shop/log?service=web&replica=1&follow=true&tailLines=5&sinceSeconds=600"
        );
        let plain = LogsArgs { service: None, replica: None, follow: false, tail: None, since: None, ..args };
        assert_eq!(
            log_path("previews", &lease("pr-1"), &plain),
            "/apis/berth.dev/v1alpha1/namespaces/previews/leases/pr-1/log"
        );
    }
}
