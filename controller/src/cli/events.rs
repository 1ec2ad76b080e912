//! `berth events`: the `events.k8s.io/v1` Events the controllers record, oldest first like
//! `kubectl events`, optionally only those about one object (`--for`), and `-w` to follow.

use std::io::Write;

use kube::api::ListParams;
use serde_json::Value;

use super::client::{self, ConnectArgs, Session};
use super::follow::{self, Change, Follower};
use super::printer::{self, Columns};
use super::resources;
use crate::apiserver::registry::ResourceInfo;
use crate::apiserver::table::{self, IncludeObject};

/// Arguments of `berth events`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth events                           # events in the current namespace
  berth events -A --types Warning        # warnings everywhere
  berth events --for stack/shop -w       # about one Stack, then follow")]
pub struct EventsArgs {
    /// Only events about this object (KIND/NAME).
    #[arg(long = "for", value_name = "KIND/NAME")]
    pub for_: Option<String>,
    /// Only events of these types (comma-separated: Normal, Warning).
    #[arg(long, value_name = "TYPES", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Events of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    /// After listing, print new events until interrupted.
    #[arg(short, long)]
    pub watch: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn event_info() -> std::sync::Arc<ResourceInfo> {
    resources::registry().find_kind("events.k8s.io", "Event").expect("the registry serves events.k8s.io Events")
}

/// When an event was last seen (for ordering).
pub fn last_seen(ev: &Value) -> String {
    ["/series/lastObservedTime", "/eventTime", "/deprecatedLastTimestamp", "/metadata/creationTimestamp"]
        .iter()
        .find_map(|p| ev.pointer(p).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or("")
        .to_string()
}

/// Whether an event is about the object (kind and name; uid too when both have one).
pub fn is_about(ev: &Value, kind: &str, name: &str, uid: Option<&str>) -> bool {
    let r = |k: &str| ev.pointer(&format!("/regarding/{k}")).and_then(Value::as_str).unwrap_or("");
    let uid_ok = match (uid, r("uid")) {
        (Some(u), ru) if !ru.is_empty() => u == ru,
        _ => true,
    };
    r("kind").eq_ignore_ascii_case(kind) && r("name") == name && uid_ok
}

/// The events about one object, oldest first.
pub async fn events_for(
    session: &Session,
    namespace: Option<&str>,
    kind: &str,
    name: &str,
    uid: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let info = event_info();
    let api = resources::api(&session.client, &info, namespace);
    let (mut items, _) = follow::list(&api, &ListParams::default()).await?;
    items.retain(|e| is_about(e, kind, name, uid));
    items.sort_by_key(last_seen);
    Ok(items)
}

fn header(all_namespaces: bool) -> Vec<String> {
    let mut h = Vec::new();
    if all_namespaces {
        h.push("NAMESPACE".to_string());
    }
    h.extend(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"].map(String::from));
    h
}

/// One row: the Event columns of the served table, without the event's own name.
pub fn row(ev: &Value, all_namespaces: bool) -> Vec<String> {
    let info = event_info();
    let cells = table::row(&info, ev, IncludeObject::None)["cells"].as_array().cloned().unwrap_or_default();
    let mut r = Vec::new();
    if all_namespaces {
        r.push(ev.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string());
    }
    r.extend(cells.iter().skip(1).map(printer::cell_text));
    r
}

/// Runs `berth events`.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let session = client::connect(&args.connect).await?;
    let mut out = std::io::stdout().lock();
    exec(&session, &args, &mut out).await.map_err(|e| session.explain(e))
}

/// `berth events` against a session.
pub async fn exec(session: &Session, args: &EventsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let namespace = args.namespace.clone().unwrap_or_else(|| session.namespace.clone());
    let scope = if args.all_namespaces { None } else { Some(namespace.as_str()) };
    let about = match &args.for_ {
        Some(f) => {
            let t = resources::parse_targets(std::slice::from_ref(f))?;
            match t.as_slice() {
                [one] if one.name.is_some() => Some((one.info.kind.clone(), one.name.clone().unwrap_or_default())),
                _ => return Err(super::usage("--for takes one KIND/NAME")),
            }
        }
        None => None,
    };
    let keep = |ev: &Value| {
        let type_ok = args.types.is_empty()
            || args
                .types
                .iter()
                .any(|t| ev.get("type").and_then(Value::as_str).is_some_and(|x| x.eq_ignore_ascii_case(t)));
        let about_ok = about.as_ref().is_none_or(|(k, n)| is_about(ev, k, n, None));
        type_ok && about_ok
    };
    let info = event_info();
    let api = resources::api(&session.client, &info, scope);
    let lp = ListParams::default();
    let (mut items, rv) = follow::list(&api, &lp).await?;
    items.retain(|e| keep(e));
    items.sort_by_key(last_seen);
    let mut rows = vec![header(args.all_namespaces)];
    rows.extend(items.iter().map(|e| row(e, args.all_namespaces)));
    if items.is_empty() {
        if !args.watch {
            eprintln!("No events found{}.", scope.map(|n| format!(" in {n} namespace")).unwrap_or_default());
        }
    } else {
        write!(out, "{}", printer::render(&rows))?;
    }
    out.flush()?;
    if args.watch {
        let columns = Columns::fit(&rows);
        let mut header_printed = !items.is_empty();
        let mut follower = Follower::new(api, &lp, rv);
        loop {
            let evs = match follower.next().await? {
                Change::Added(v) | Change::Modified(v) => vec![v],
                Change::Deleted(_) => vec![],
                Change::Relisted(all) => all,
            };
            for ev in evs.iter().filter(|e| keep(e)) {
                if !header_printed {
                    writeln!(out, "{}", columns.line(&header(args.all_namespaces)))?;
                    header_printed = true;
                }
                writeln!(out, "{}", columns.line(&row(ev, args.all_namespaces)))?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ev(kind: &str, name: &str, uid: &str, when: &str) -> Value {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": format!("{name}.1"), "namespace": "default", "creationTimestamp": when},
            "eventTime": when, "type": "Warning", "reason": "PullFailed", "note": "image not found",
            "regarding": {"kind": kind, "name": name, "uid": uid, "namespace": "default"}})
    }

    #[test]
    fn events_match_their_object_by_kind_name_and_uid() {
        let e = ev("Stack", "web", "u1", "2024-01-01T00:00:00Z");
        assert!(is_about(&e, "Stack", "web", Some("u1")));
        assert!(is_about(&e, "stack", "web", None));
        assert!(!is_about(&e, "Stack", "web", Some("u2")), "an earlier object of the same name");
        assert!(!is_about(&e, "Lease", "web", None));
    }

    #[test]
    fn rows_have_kubectl_events_columns() {
        let e = ev("Stack", "web", "u1", "2024-01-01T00:00:00Z");
        let r = row(&e, false);
        assert_eq!(&r[1..], ["Warning", "PullFailed", "stack/web", "image not found"]);
        assert!(r[0].ends_with('d') || r[0].contains('y'), "age: {}", r[0]);
        assert_eq!(header(true)[0], "NAMESPACE");
        assert_eq!(row(&e, true)[0], "default");
    }

    #[test]
    fn last_seen_prefers_the_series() {
        let mut e = ev("Stack", "web", "u1", "2024-01-01T00:00:00Z");
        e["series"] = json!({"count": 3, "lastObservedTime": "2024-01-02T00:00:00Z"});
        assert_eq!(last_seen(&e), "2024-01-02T00:00:00Z");
    }
}
