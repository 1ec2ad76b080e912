//! `berth delete`: delete objects named on the command line, selected by label, or described in
//! manifest files; `--wait` blocks until they are gone (finalizers released).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{DeleteParams, ListParams};
use serde_json::Value;

use super::client::{self, ConnectArgs, Session};
use super::follow;
use super::manifest::{self, NamespaceRule};
use super::progress::Progress;
use super::resources;
use super::wait::{self, WaitFor};
use crate::apiserver::registry::ResourceInfo;

/// Arguments of `berth delete`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth delete stack/shop                     # one Stack
  berth delete stack web api --wait           # two Stacks, then wait until they are gone
  berth delete stacks -l app=shop             # every Stack labelled app=shop
  berth delete -f manifests/stack-shop.yaml   # what a file describes
  berth delete lease/pr-1234 -n previews --ignore-not-found")]
pub struct DeleteArgs {
    /// KIND/NAME…, KIND NAME…, or KIND with -l/--all.
    #[arg(value_name = "KIND/NAME", required_unless_present = "files", conflicts_with = "files")]
    pub targets: Vec<String>,
    /// Delete the objects described in these files or directories.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Delete every object of KIND matching this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Delete every object of KIND in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Wait until the objects are gone (their finalizers are done).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits in total.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    berth_crds::duration::parse_duration(s)
}

/// Runs `berth delete`.
pub async fn run(args: DeleteArgs) -> anyhow::Result<()> {
    let session = client::connect(&args.connect).await?;
    let mut out = std::io::stdout().lock();
    exec(&session, &args, &mut out).await.map_err(|e| session.explain(e))
}

/// One object to delete.
struct Victim {
    info: Arc<ResourceInfo>,
    namespace: Option<String>,
    name: String,
}

/// `berth delete` against a session.
pub async fn exec(session: &Session, args: &DeleteArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let namespace = args.namespace.clone().unwrap_or_else(|| session.namespace.clone());
    let mut victims = Vec::new();
    if !args.files.is_empty() {
        let inputs = manifest::read_inputs(&args.files, args.recursive)?;
        let rule = NamespaceRule { default: namespace.clone(), enforce: args.namespace.is_some() };
        let mut docs = manifest::prepare_identities(&inputs, &rule)?;
        // Workloads first, then what they depend on.
        docs.reverse();
        victims.extend(docs.into_iter().map(|d| Victim { info: d.info, namespace: d.namespace, name: d.name }));
    } else {
        for t in resources::parse_targets(&args.targets)? {
            let ns = t.info.namespaced.then(|| namespace.clone());
            match t.name {
                Some(name) => victims.push(Victim { info: t.info, namespace: ns, name }),
                None if args.selector.is_some() || args.all => {
                    let mut lp = ListParams::default();
                    if let Some(s) = &args.selector {
                        lp = lp.labels(s);
                    }
                    let api = resources::api(&session.client, &t.info, ns.as_deref());
                    let (items, _) = follow::list(&api, &lp).await?;
                    for item in items {
                        let name = item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
                        victims.push(Victim { info: t.info.clone(), namespace: ns.clone(), name });
                    }
                }
                None => {
                    return Err(super::usage(format!(
                        "name the {} to delete (KIND/NAME), or select them with -l SELECTOR or --all",
                        t.info.plural
                    )));
                }
            }
        }
        if victims.is_empty() {
            eprintln!("No resources found");
        }
    }

    let mut failed = false;
    let mut deleted = Vec::new();
    for v in victims {
        let api = resources::api(&session.client, &v.info, v.namespace.as_deref());
        match api.delete(&v.name, &DeleteParams::default()).await {
            Ok(_) => {
                writeln!(out, "{} \"{}\" deleted", resources::type_name(&v.info), v.name)?;
                deleted.push(v);
            }
            Err(e) if client::is_not_found(&e) && args.ignore_not_found => {}
            Err(e) if client::api_code(&e).is_some() => {
                eprintln!("{}", client::render_error(&e.into()));
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
        out.flush()?;
    }
    if args.wait {
        let deadline = tokio::time::Instant::now() + args.timeout;
        let mut progress = Progress::stdout();
        for v in &deleted {
            let ns = v.namespace.clone().unwrap_or_default();
            let mut sink = Vec::new();
            wait::wait_one(
                session,
                &v.info,
                &ns,
                &v.name,
                &WaitFor::Delete,
                deadline,
                args.timeout,
                &mut progress,
                &mut sink,
            )
            .await?;
        }
    }
    if failed {
        return Err(anyhow::Error::new(super::Exit::Silent(1)));
    }
    Ok(())
}
