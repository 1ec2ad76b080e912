//! `berth get`: list resources, or show some by name, as a table, YAML, JSON or names; `-w`
//! keeps printing changes.

use std::io::Write;
use std::sync::Arc;

use kube::api::ListParams;
use serde_json::Value;

use super::client::{self, ConnectArgs, Session};
use super::follow::{self, Change, Follower};
use super::printer::{self, Columns, OutputFormat, TableOptions};
use super::resources::{self, Target};
use crate::apiserver::registry::ResourceInfo;

/// Arguments of `berth get`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth get stacks                       # Stacks in the current namespace
  berth get stacks,leases -A             # in every namespace
  berth get stack shop -o yaml           # one Stack as YAML
  berth get st -l app=shop -o name       # names of the Stacks labelled app=shop
  berth get hosts -o wide                # with the extra columns
  berth get stacks -w                    # print changes as they happen (Ctrl-C to stop)
  berth get berth                        # every berth kind (Hosts, Stacks, Leases)")]
pub struct GetArgs {
    /// KIND[,KIND…] [NAME…], or KIND/NAME… (kinds: stacks/st, leases/bl, hosts/hst, secrets,
    /// configmaps/cm, events/ev, namespaces/ns; `berth` for all berth kinds).
    #[arg(required = true, value_name = "KIND [NAME]")]
    pub targets: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Only objects whose labels match this selector (`app=shop`, `tier in (web,api)`, `!old`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// List across every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    /// After listing, print every change until interrupted.
    #[arg(short, long)]
    pub watch: bool,
    /// Add a LABELS column.
    #[arg(long)]
    pub show_labels: bool,
    /// Print no header row.
    #[arg(long)]
    pub no_headers: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `berth get`.
pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let session = client::connect(&args.connect).await?;
    let mut out = std::io::stdout().lock();
    exec(&session, &args, &mut out).await.map_err(|e| session.explain(e))
}

/// Options derived from the arguments.
struct View {
    format: OutputFormat,
    table: TableOptions,
    no_headers: bool,
}

fn list_params(selector: Option<&str>, name: Option<&str>) -> ListParams {
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    if let Some(n) = name {
        lp = lp.fields(&format!("metadata.name={n}"));
    }
    lp
}

/// `berth get` against a session, writing to `out`.
pub async fn exec(session: &Session, args: &GetArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let targets = resources::parse_targets(&args.targets)?;
    let namespace = args.namespace.clone().unwrap_or_else(|| session.namespace.clone());
    let scope = if args.all_namespaces { None } else { Some(namespace.as_str()) };
    let kinds = distinct_kinds(&targets);
    let format = args.output.unwrap_or_default();
    let view = View {
        format,
        table: TableOptions {
            wide: format == OutputFormat::Wide,
            namespace_column: args.all_namespaces,
            qualified_names: kinds.len() > 1,
            show_labels: args.show_labels,
        },
        no_headers: args.no_headers,
    };
    if args.watch && kinds.len() > 1 {
        return Err(super::usage("-w watches one resource type at a time; name only one"));
    }

    // Fetch everything first, so that a missing name does not stop the others from printing.
    let mut groups: Vec<(Arc<ResourceInfo>, Vec<Value>, String)> = Vec::new();
    let mut missing = Vec::new();
    for info in &kinds {
        let api = resources::api(&session.client, info, scope);
        let names: Vec<&str> =
            targets.iter().filter(|t| Arc::ptr_eq(&t.info, info)).filter_map(|t| t.name.as_deref()).collect();
        if names.is_empty() {
            let (items, rv) = follow::list(&api, &list_params(args.selector.as_deref(), None)).await?;
            groups.push((info.clone(), items, rv));
        } else {
            let mut items = Vec::new();
            for name in names {
                match api.get(name).await {
                    Ok(o) => items.push(follow::to_value(o)),
                    Err(e) if client::is_not_found(&e) => missing.push(client::render_error(&e.into())),
                    Err(e) => return Err(e.into()),
                }
            }
            groups.push((info.clone(), items, String::new()));
        }
    }

    let single_object = targets.len() == 1 && targets[0].name.is_some();
    print_initial(&groups, &view, single_object, out)?;
    let total: usize = groups.iter().map(|(_, items, _)| items.len()).sum();
    if total == 0 && missing.is_empty() && !args.watch && matches!(format, OutputFormat::Table | OutputFormat::Wide) {
        eprintln!("{}", no_resources(&kinds, scope));
    }
    for m in &missing {
        eprintln!("{m}");
    }
    out.flush()?;
    if args.watch {
        let (info, items, _) = &groups[0];
        let name = targets[0].name.as_deref();
        let lp = list_params(args.selector.as_deref(), name);
        // Named gets have no list version: list again (by name) to get one.
        let api = resources::api(&session.client, info, scope);
        let (_, rv) = follow::list(&api, &lp).await?;
        let mut rows: Vec<Vec<String>> = vec![printer::header(info, view.table)];
        rows.extend(items.iter().map(|o| printer::row(info, o, view.table)));
        let columns = Columns::fit(&rows);
        let mut header_printed = !items.is_empty() && !view.no_headers;
        let mut follower = Follower::new(api, &lp, rv);
        loop {
            let changed = match follower.next().await? {
                Change::Added(v) | Change::Modified(v) | Change::Deleted(v) => vec![v],
                Change::Relisted(all) => all,
            };
            for obj in changed {
                if matches!(format, OutputFormat::Table | OutputFormat::Wide) && !header_printed && !view.no_headers {
                    writeln!(out, "{}", columns.line(&printer::header(info, view.table)))?;
                    header_printed = true;
                }
                print_watched(info, &obj, &view, &columns, out)?;
            }
            out.flush()?;
        }
    }
    if !missing.is_empty() {
        return Err(anyhow::Error::new(super::Exit::Silent(1)));
    }
    Ok(())
}

fn distinct_kinds(targets: &[Target]) -> Vec<Arc<ResourceInfo>> {
    let mut kinds: Vec<Arc<ResourceInfo>> = Vec::new();
    for t in targets {
        if !kinds.iter().any(|k| Arc::ptr_eq(k, &t.info)) {
            kinds.push(t.info.clone());
        }
    }
    kinds
}

/// kubectl's message for an empty result (printed on stderr, exit 0).
fn no_resources(kinds: &[Arc<ResourceInfo>], scope: Option<&str>) -> String {
    match scope {
        Some(ns) if kinds.iter().any(|k| k.namespaced) => format!("No resources found in {ns} namespace."),
        _ => "No resources found".to_string(),
    }
}

fn print_initial(
    groups: &[(Arc<ResourceInfo>, Vec<Value>, String)],
    view: &View,
    single_object: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match view.format {
        OutputFormat::Table | OutputFormat::Wide => {
            let mut first = true;
            for (info, items, _) in groups.iter().filter(|(_, items, _)| !items.is_empty()) {
                if !first {
                    writeln!(out)?;
                }
                first = false;
                let mut rows = Vec::new();
                if !view.no_headers {
                    rows.push(printer::header(info, view.table));
                }
                rows.extend(items.iter().map(|o| printer::row(info, o, view.table)));
                write!(out, "{}", printer::render(&rows))?;
            }
        }
        OutputFormat::Name => {
            for (info, items, _) in groups {
                for o in items {
                    writeln!(out, "{}", resources::display_name(info, name_of(o)))?;
                }
            }
        }
        OutputFormat::Yaml | OutputFormat::Json => {
            let mut all: Vec<Value> =
                groups.iter().flat_map(|(_, items, _)| items.iter().map(printer::presentable)).collect();
            if single_object && all.len() == 1 {
                let only = all.remove(0);
                write_doc(view.format, &only, out)?;
            } else if !(single_object && all.is_empty()) {
                write_doc(view.format, &printer::list(all), out)?;
            }
        }
    }
    Ok(())
}

fn write_doc(format: OutputFormat, v: &Value, out: &mut impl Write) -> anyhow::Result<()> {
    match format {
        OutputFormat::Yaml => write!(out, "{}", printer::yaml(v)?)?,
        _ => write!(out, "{}", printer::json(v)?)?,
    }
    Ok(())
}

fn print_watched(
    info: &ResourceInfo,
    obj: &Value,
    view: &View,
    columns: &Columns,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match view.format {
        OutputFormat::Table | OutputFormat::Wide => {
            writeln!(out, "{}", columns.line(&printer::row(info, obj, view.table)))?
        }
        OutputFormat::Name => writeln!(out, "{}", resources::display_name(info, name_of(obj)))?,
        OutputFormat::Yaml => write!(out, "---\n{}", printer::yaml(&printer::presentable(obj))?)?,
        OutputFormat::Json => write!(out, "{}", printer::json(&printer::presentable(obj))?)?,
    }
    Ok(())
}

/// `metadata.name` of an object.
pub fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}
