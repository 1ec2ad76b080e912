//! `berth describe`: one object in words: metadata, a summary of its spec, its status with
//! conditions (reason, age, message), the containers per host, and the recent Events about it
//! (`events.k8s.io/v1` whose `regarding` is the object). Secret values are never shown.

use std::io::Write;

use serde_json::Value;

use super::client::{self, ConnectArgs};
use super::events;
use super::follow;
use super::printer;
use super::resources;
use crate::apiserver::registry::{ResourceClass, ResourceInfo};

/// Arguments of `berth describe`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth describe stack/shop
  berth describe stack shop api            # several objects of one kind
  berth describe host local
  berth describe lease/pr-1234 -n previews")]
pub struct DescribeArgs {
    /// KIND/NAME…, or KIND NAME….
    #[arg(required = true, value_name = "KIND/NAME")]
    pub targets: Vec<String>,
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `berth describe`.
pub async fn run(args: DescribeArgs) -> anyhow::Result<()> {
    let session = client::connect(&args.connect).await?;
    let targets = resources::parse_targets(&args.targets)?;
    if targets.iter().any(|t| t.name.is_none()) {
        return Err(super::usage("name the objects to describe: KIND/NAME or KIND NAME…"));
    }
    let namespace = args.namespace.clone().unwrap_or_else(|| session.namespace.clone());
    let mut out = std::io::stdout().lock();
    let result = async {
        for (i, t) in targets.iter().enumerate() {
            let name = t.name.as_deref().unwrap_or_default();
            let api = resources::api(&session.client, &t.info, Some(&namespace));
            let obj = follow::to_value(api.get(name).await?);
            let uid = obj.pointer("/metadata/uid").and_then(Value::as_str);
            let scope = t.info.namespaced.then_some(namespace.as_str());
            let evs = events::events_for(&session, scope, &t.info.kind, name, uid).await?;
            if i > 0 {
                writeln!(out)?;
                writeln!(out)?;
            }
            write!(out, "{}", render(&t.info, &obj, &evs))?;
        }
        Ok(())
    }
    .await;
    result.map_err(|e| session.explain(e))
}

/// Lines of `key: value` pairs aligned like kubectl's describe.
#[derive(Default)]
struct Block {
    rows: Vec<(usize, String, String)>,
}

impl Block {
    fn kv(&mut self, indent: usize, key: &str, value: impl Into<String>) {
        self.rows.push((indent, format!("{key}:"), value.into()));
    }
    fn heading(&mut self, indent: usize, key: &str) {
        self.rows.push((indent, format!("{key}:"), String::new()));
    }
    fn raw(&mut self, text: String) {
        for line in text.lines() {
            self.rows.push((0, line.to_string(), String::new()));
        }
    }
    fn render(&self) -> String {
        // Align values among consecutive rows of the same indent.
        let mut out = String::new();
        let mut i = 0;
        while i < self.rows.len() {
            let indent = self.rows[i].0;
            let mut j = i;
            while j < self.rows.len() && self.rows[j].0 == indent && !self.rows[j].2.is_empty() {
                j += 1;
            }
            if j == i {
                let (ind, k, _) = &self.rows[i];
                out.push_str(&format!("{}{}\n", " ".repeat(*ind), k));
                i += 1;
                continue;
            }
            let width = self.rows[i..j].iter().map(|r| r.1.chars().count()).max().unwrap_or(0) + 2;
            for (ind, k, v) in &self.rows[i..j] {
                out.push_str(&format!("{}{k:<width$}{v}\n", " ".repeat(*ind)));
            }
            i = j;
        }
        out
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or_none(text: String) -> String {
    if text.is_empty() { "<none>".into() } else { text }
}

fn map_text(v: Option<&Value>, skip: &[&str]) -> String {
    let text = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    or_none(text)
}

fn scalar(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<none>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn table_lines(indent: usize, rows: Vec<Vec<String>>) -> String {
    printer::render(&rows).lines().map(|l| format!("{}{l}\n", " ".repeat(indent))).collect()
}

fn ports_text(ports: Option<&Value>) -> String {
    let list: Vec<String> = ports
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let cp = scalar(p.get("containerPort"));
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("tcp");
            match (p.get("hostPort").and_then(Value::as_i64), p.get("hostIP").and_then(Value::as_str)) {
                (Some(hp), Some(ip)) if !ip.is_empty() => format!("{ip}:{hp}->{cp}/{proto}"),
                (Some(hp), _) => format!("{hp}->{cp}/{proto}"),
                _ => format!("{cp}/{proto}"),
            }
        })
        .collect();
    or_none(list.join(","))
}

fn selector_text(sel: &Value) -> String {
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let values: Vec<&str> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(format!("{} {} ({})", s(e, "/key"), s(e, "/operator"), values.join(",")));
    }
    parts.join(",")
}

fn stack_spec(obj: &Value, b: &mut Block) {
    let spec = &obj["spec"];
    let hosts = match spec.get("hosts") {
        None | Some(Value::Null) => "local (default)".to_string(),
        Some(h) => {
            let names: Vec<&str> =
                h.get("names").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let mut parts = Vec::new();
            if !names.is_empty() {
                parts.push(names.join(","));
            }
            if let Some(sel) = h.get("selector").filter(|v| !v.is_null()) {
                parts.push(format!("selector {}", selector_text(sel)));
            }
            or_none(parts.join("; "))
        }
    };
    b.kv(2, "Hosts", hosts);
    b.kv(2, "Drift Policy", spec.get("driftPolicy").and_then(Value::as_str).unwrap_or("Reconcile"));
    b.kv(2, "Suspend", spec.get("suspend").and_then(Value::as_bool).unwrap_or(false).to_string());
    if let Some(r) = spec.get("rollout").filter(|v| !v.is_null()) {
        b.kv(
            2,
            "Rollout",
            format!(
                "{}, max parallel {}, health timeout {}s",
                r.get("strategy").and_then(Value::as_str).unwrap_or("Recreate"),
                r.get("maxParallel").map(|v| v.to_string()).unwrap_or_else(|| "1".into()),
                r.get("healthTimeoutSeconds").map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            ),
        );
    }
    let names = |key: &str, f: &dyn Fn(&Value) -> String| {
        or_none(spec.get(key).and_then(Value::as_array).into_iter().flatten().map(f).collect::<Vec<_>>().join(", "))
    };
    b.kv(2, "Networks", names("networks", &|n| s(n, "/name").to_string()));
    b.kv(
        2,
        "Volumes",
        names("volumes", &|v| {
            let retain = v.get("retain").and_then(Value::as_bool).unwrap_or(true);
            format!("{}{}", s(v, "/name"), if retain { " (kept on delete)" } else { "" })
        }),
    );
    let mut rows = vec![["NAME", "IMAGE", "REPLICAS", "PORTS", "DEPENDS ON"].map(String::from).to_vec()];
    for svc in spec.get("services").and_then(Value::as_array).into_iter().flatten() {
        let deps: Vec<String> = svc
            .get("dependsOn")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|d| {
                format!("{} ({})", s(d, "/service"), d.get("condition").and_then(Value::as_str).unwrap_or("Started"))
            })
            .collect();
        rows.push(vec![
            s(svc, "/name").to_string(),
            s(svc, "/image").to_string(),
            svc.get("replicas").map(|v| v.to_string()).unwrap_or_else(|| "1".into()),
            ports_text(svc.get("ports")),
            or_none(deps.join(", ")),
        ]);
    }
    b.heading(2, "Services");
    b.raw(table_lines(4, rows));
}

fn lease_spec(obj: &Value, b: &mut Block) {
    let spec = &obj["spec"];
    b.kv(2, "Tenant", s(spec, "/tenant"));
    b.kv(2, "SKU", s(spec, "/sku"));
    if let Some(d) = spec.get("duration").filter(|v| !v.is_null()) {
        b.kv(2, "Duration", scalar(Some(d)));
    }
    if let Some(e) = spec.get("expiresAt").filter(|v| !v.is_null()) {
        b.kv(2, "Expires At", scalar(Some(e)));
    }
    if let Some(sel) = spec.get("hostSelector").filter(|v| !v.is_null()) {
        b.kv(2, "Host Selector", or_none(selector_text(sel)));
    }
    b.kv(2, "Retain On Close", spec.get("retainOnClose").and_then(Value::as_bool).unwrap_or(false).to_string());
    if let Some(r) = spec.get("restoreFrom").and_then(Value::as_str) {
        b.kv(2, "Restore From", r);
    }
    if let Some(cb) = spec.get("callback").filter(|v| !v.is_null()) {
        b.kv(2, "Callback", s(cb, "/url"));
    }
    b.kv(2, "Closed", spec.get("closed").and_then(Value::as_bool).unwrap_or(false).to_string());
    let mut rows = vec![["NAME", "IMAGE", "QUANTITY", "PORTS"].map(String::from).to_vec()];
    for svc in spec.get("services").and_then(Value::as_array).into_iter().flatten() {
        rows.push(vec![
            s(svc, "/name").to_string(),
            s(svc, "/image").to_string(),
            svc.get("quantity").map(|v| v.to_string()).unwrap_or_else(|| "1".into()),
            ports_text(svc.get("ports")),
        ]);
    }
    b.heading(2, "Services");
    b.raw(table_lines(4, rows));
}

fn host_spec(obj: &Value, b: &mut Block) {
    let spec = &obj["spec"];
    b.kv(2, "Endpoint", s(spec, "/endpoint"));
    b.kv(2, "TLS", if spec.get("tls").is_some_and(|v| !v.is_null()) { "yes" } else { "no" });
    b.kv(2, "Cordoned", spec.get("cordoned").and_then(Value::as_bool).unwrap_or(false).to_string());
    if let Some(c) = spec.get("capacity").filter(|v| !v.is_null()) {
        b.kv(2, "Capacity", map_text(Some(c), &[]));
    }
}

fn conditions(obj: &Value) -> Option<String> {
    let conds = obj.pointer("/status/conditions").and_then(Value::as_array).filter(|c| !c.is_empty())?;
    let mut rows = vec![["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"].map(String::from).to_vec()];
    for c in conds {
        let age = printer::age(c.get("lastTransitionTime").and_then(Value::as_str));
        rows.push(vec![
            s(c, "/type").to_string(),
            s(c, "/status").to_string(),
            or_none(s(c, "/reason").to_string()),
            age,
            s(c, "/message").to_string(),
        ]);
    }
    Some(table_lines(2, rows))
}

fn stack_hosts(obj: &Value, b: &mut Block) {
    let hosts = obj.pointer("/status/hosts").and_then(Value::as_array).filter(|h| !h.is_empty());
    let Some(hosts) = hosts else { return };
    b.heading(0, "Hosts");
    for h in hosts {
        let message = s(h, "/message");
        b.raw(format!(
            "  {}: {}{}",
            s(h, "/host"),
            s(h, "/phase"),
            if message.is_empty() { String::new() } else { format!(" ({message})") }
        ));
        let mut rows = vec![
            ["SERVICE", "REPLICA", "STATE", "HEALTH", "CONTAINER", "IMAGE", "RESTARTS", "PORTS"]
                .map(String::from)
                .to_vec(),
        ];
        for c in h.get("containers").and_then(Value::as_array).into_iter().flatten() {
            let id = s(c, "/containerId");
            rows.push(vec![
                s(c, "/service").to_string(),
                scalar(c.get("replica")),
                s(c, "/state").to_string(),
                or_none(s(c, "/health").to_string()),
                or_none(id.chars().take(12).collect()),
                s(c, "/image").to_string(),
                c.get("restarts").map(|v| v.to_string()).unwrap_or_else(|| "0".into()),
                ports_text(c.get("ports")),
            ]);
        }
        if rows.len() > 1 {
            b.raw(table_lines(4, rows));
        }
    }
}

fn lease_status(obj: &Value, b: &mut Block) {
    let st = &obj["status"];
    for (key, ptr) in [
        ("Since", "/phaseSince"),
        ("Message", "/message"),
        ("Host", "/host"),
        ("Expires At", "/expiresAt"),
        ("Restarted For", "/restartedFor"),
        ("Retained Until", "/retainedUntil"),
    ] {
        if let Some(v) = st.pointer(ptr).and_then(Value::as_str).filter(|v| !v.is_empty()) {
            b.kv(2, key, v);
        }
    }
    if let Some(a) = st.get("allocated").filter(|v| !v.is_null()) {
        b.kv(2, "Allocated", format!("{} CPUs, {} MiB", scalar(a.get("cpus")), scalar(a.get("memoryMb"))));
    }
    if let Some(v) = st.get("retainedVolumes").and_then(Value::as_array).filter(|v| !v.is_empty()) {
        b.kv(2, "Retained Volumes", v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
    }
    if let Some(d) = st.get("diagnostics").filter(|v| !v.is_null()) {
        b.heading(2, "Diagnostics");
        b.kv(4, "Container", s(d, "/container"));
        if let Some(code) = d.get("exitCode").filter(|v| !v.is_null()) {
            b.kv(4, "Exit Code", scalar(Some(code)));
        }
        if d.get("oomKilled").and_then(Value::as_bool).unwrap_or(false) {
            b.kv(4, "OOM Killed", "true (raise the SKU's memory)");
        }
        if let Some(e) = d.get("error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            b.kv(4, "Error", e);
        }
        if let Some(at) = d.get("at").and_then(Value::as_str) {
            b.kv(4, "At", at);
        }
        let lines: Vec<&str> =
            d.get("lastLogLines").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        if !lines.is_empty() {
            b.heading(4, &format!("Last {} Log Lines", lines.len()));
            b.raw(lines.iter().map(|l| format!("      {l}\n")).collect());
        }
    }
    if let Some(rels) = st.get("releases").and_then(Value::as_array).filter(|r| !r.is_empty()) {
        let mut rows = vec![["REVISION", "GENERATION", "OUTCOME", "STARTED", "MESSAGE"].map(String::from).to_vec()];
        for r in rels {
            rows.push(vec![
                scalar(r.get("revision")),
                scalar(r.get("generation")),
                s(r, "/outcome").to_string(),
                or_none(s(r, "/startedAt").to_string()),
                or_none(s(r, "/message").to_string()),
            ]);
        }
        b.heading(2, "Releases");
        b.raw(table_lines(4, rows));
    }
    if let Some(cbs) = st.get("callbacks").and_then(Value::as_array).filter(|c| !c.is_empty()) {
        let mut rows = vec![["PHASE", "STATE", "ATTEMPTS", "LAST ERROR"].map(String::from).to_vec()];
        for c in cbs {
            rows.push(vec![
                s(c, "/phase").to_string(),
                s(c, "/state").to_string(),
                scalar(c.get("attempts").or(Some(&Value::from(0)))),
                or_none(s(c, "/lastError").to_string()),
            ]);
        }
        b.heading(2, "Callbacks");
        b.raw(table_lines(4, rows));
    }
    let endpoints = st.get("endpoints").and_then(Value::as_array).filter(|e| !e.is_empty());
    if let Some(eps) = endpoints {
        let mut rows = vec![["SERVICE", "INSTANCE", "PORT", "HOST ADDRESS", "URL"].map(String::from).to_vec()];
        for e in eps {
            rows.push(vec![
                s(e, "/service").to_string(),
                scalar(e.get("instance")),
                scalar(e.get("containerPort")),
                format!("{}:{}", s(e, "/hostIP"), scalar(e.get("hostPort"))),
                or_none(s(e, "/url").to_string()),
            ]);
        }
        b.heading(2, "Endpoints");
        b.raw(table_lines(4, rows));
    }
    let instances = st.get("instances").and_then(Value::as_array).filter(|e| !e.is_empty());
    if let Some(inst) = instances {
        let mut rows = vec![["SERVICE", "INSTANCE", "STATE", "HEALTH", "CONTAINER"].map(String::from).to_vec()];
        for i in inst {
            rows.push(vec![
                s(i, "/service").to_string(),
                scalar(i.get("instance")),
                or_none(s(i, "/state").to_string()),
                or_none(s(i, "/health").to_string()),
                or_none(s(i, "/containerId").chars().take(12).collect()),
            ]);
        }
        b.heading(2, "Containers");
        b.raw(table_lines(4, rows));
    }
}

fn host_status(obj: &Value, b: &mut Block) {
    let st = &obj["status"];
    if let Some(d) = st.get("daemon").filter(|v| !v.is_null()) {
        b.kv(2, "Daemon", map_text(Some(d), &[]));
    }
    for (key, field) in [("Capacity", "capacity"), ("Allocated", "allocated")] {
        if let Some(c) = st.get(field).filter(|v| !v.is_null()) {
            b.kv(2, key, map_text(Some(c), &[]));
        }
    }
    b.kv(2, "Stacks", scalar(st.get("stacks").or(Some(&Value::from(0)))));
    b.kv(2, "Leases", scalar(st.get("leases").or(Some(&Value::from(0)))));
    if let Some(scan) = st.get("orphanScan").filter(|v| !v.is_null()) {
        b.heading(2, "Orphan Scan");
        b.raw(printer::yaml(scan).unwrap_or_default().lines().map(|l| format!("    {l}\n")).collect());
    }
}

fn events_text(evs: &[Value]) -> String {
    if evs.is_empty() {
        return "Events:  <none>\n".into();
    }
    let mut rows = vec![["TYPE", "REASON", "AGE", "FROM", "MESSAGE"].map(String::from).to_vec()];
    for e in evs {
        let last = events::last_seen(e);
        let mut age = printer::age(Some(&last));
        if let Some(count) = e.pointer("/series/count").and_then(Value::as_i64).filter(|c| *c > 1) {
            let first = e.get("eventTime").and_then(Value::as_str).unwrap_or(&last);
            age = format!("{age} (x{count} over {})", printer::age(Some(first)));
        }
        rows.push(vec![
            s(e, "/type").to_string(),
            s(e, "/reason").to_string(),
            age,
            or_none(s(e, "/reportingController").to_string()),
            s(e, "/note").to_string(),
        ]);
    }
    format!("Events:\n{}", table_lines(2, rows))
}

/// The whole description of `obj`.
pub fn render(info: &ResourceInfo, obj: &Value, evs: &[Value]) -> String {
    let mut b = Block::default();
    let meta = &obj["metadata"];
    b.kv(0, "Name", s(meta, "/name"));
    if info.namespaced {
        b.kv(0, "Namespace", s(meta, "/namespace"));
    }
    b.kv(0, "Labels", map_text(meta.get("labels"), &[]));
    b.kv(0, "Annotations", map_text(meta.get("annotations"), &[super::merge::LAST_APPLIED]));
    b.kv(0, "API Version", info.api_version());
    b.kv(0, "Kind", info.kind.clone());
    let created = s(meta, "/creationTimestamp");
    b.kv(0, "Created", format!("{created} ({} ago)", printer::age(Some(created))));
    if let Some(g) = meta.get("generation").and_then(Value::as_i64) {
        let observed = obj.pointer("/status/observedGeneration").and_then(Value::as_i64);
        b.kv(
            0,
            "Generation",
            match observed {
                Some(o) if o == g => format!("{g} (status is current)"),
                Some(o) => format!("{g} (status describes generation {o}: the controller has not caught up)"),
                None => format!("{g} (no status yet)"),
            },
        );
    }
    if let Some(ts) = meta.get("deletionTimestamp").and_then(Value::as_str) {
        b.kv(0, "Deleting", format!("since {ts}, waiting for finalizers {}", scalar(meta.get("finalizers"))));
    }
    let mut out = b.render();

    let mut b = Block::default();
    match (info.class, info.kind.as_str()) {
        (ResourceClass::Custom, "Stack") => {
            b.heading(0, "Spec");
            stack_spec(obj, &mut b);
        }
        (ResourceClass::Custom, "Lease") => {
            b.heading(0, "Spec");
            lease_spec(obj, &mut b);
        }
        (ResourceClass::Custom, "Host") => {
            b.heading(0, "Spec");
            host_spec(obj, &mut b);
        }
        (ResourceClass::Secret, _) => {
            b.kv(0, "Type", obj.get("type").and_then(Value::as_str).unwrap_or("Opaque"));
            b.heading(0, "Data");
            for (k, v) in obj.get("data").and_then(Value::as_object).into_iter().flatten() {
                use base64::Engine;
                let len = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or(""))
                    .map(|d| d.len())
                    .unwrap_or(0);
                b.kv(2, k, format!("{len} bytes"));
            }
        }
        (ResourceClass::ConfigMap, _) => {
            b.heading(0, "Data");
            for (k, v) in obj.get("data").and_then(Value::as_object).into_iter().flatten() {
                b.raw(format!(
                    "  {k}:\n  ----\n{}",
                    v.as_str().unwrap_or("").lines().map(|l| format!("  {l}\n")).collect::<String>()
                ));
            }
        }
        _ => {
            let mut rest = obj.clone();
            if let Some(m) = rest.as_object_mut() {
                for k in ["apiVersion", "kind", "metadata", "status"] {
                    m.remove(k);
                }
            }
            if rest.as_object().is_some_and(|m| !m.is_empty()) {
                b.raw(printer::yaml(&rest).unwrap_or_default());
            }
        }
    }
    out.push_str(&b.render());

    if info.class == ResourceClass::Custom {
        let mut b = Block::default();
        b.heading(0, "Status");
        let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("<none>");
        b.kv(2, "Phase", phase);
        if let Some(h) = obj.pointer("/status/hostsReady").and_then(Value::as_str) {
            b.kv(2, "Hosts Ready", h);
        }
        if let Some(d) = obj.pointer("/status/lastDrift").filter(|v| !v.is_null()) {
            b.kv(2, "Last Drift", format!("tier {} {}: {}", scalar(d.get("tier")), s(d, "/reason"), s(d, "/message")));
        }
        if let Some(r) = obj.pointer("/status/retry").filter(|v| !v.is_null()) {
            b.kv(2, "Retry", map_text(Some(r), &[]));
        }
        match info.kind.as_str() {
            "Lease" => lease_status(obj, &mut b),
            "Host" => host_status(obj, &mut b),
            _ => {}
        }
        out.push_str(&b.render());
        match conditions(obj) {
            Some(c) => out.push_str(&format!("Conditions:\n{c}")),
            None => out.push_str("Conditions:  <none>\n"),
        }
        let mut b = Block::default();
        stack_hosts(obj, &mut b);
        out.push_str(&b.render());
    }
    out.push_str(&events_text(evs));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::resources::resolve_one;

    fn shop() -> Value {
        json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Stack",
            "metadata": {"name": "shop", "namespace": "default", "generation": 2, "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {"app": "shop"}, "annotations": {crate::cli::merge::LAST_APPLIED: "{}"}},
            "spec": {"services": [
                {"name": "db", "image": "busybox", "ports": [{"containerPort": 5432, "hostPort": 15432, "hostIP": "127.0.0.1"}]},
                {"name": "api", "image": "busybox", "replicas": 2, "dependsOn": [{"service": "db", "condition": "Healthy"}]}
            ], "volumes": [{"name": "data"}]},
            "status": {"observedGeneration": 1, "phase": "Progressing", "hostsReady": "0/1",
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersStarting", "message": "api 1/2 running",
                    "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                "hosts": [{"host": "local", "phase": "Progressing", "containers": [
                    {"service": "db", "replica": 0, "state": "running", "health": "healthy", "containerId": "0123456789abcdef", "image": "busybox"}
                ]}]}
        })
    }

    #[test]
    fn stack_description_has_spec_status_conditions_containers_and_events() {
        let info = resolve_one("stack").unwrap();
        let ev = json!({"type": "Warning", "reason": "PullFailed", "note": "no such image", "reportingController": "berth-stack",
            "eventTime": "2024-01-01T00:00:00Z", "series": {"count": 3, "lastObservedTime": "2024-01-01T00:05:00Z"},
            "regarding": {"kind": "Stack", "name": "shop"}});
        let text = render(&info, &shop(), &[ev]);
        for want in [
            "Name:         shop\n",
            "Labels:       app=shop\n",
            "Annotations:  <none>\n",
            "Generation:   2 (status describes generation 1",
            "Hosts",
            "local (default)",
            "data (kept on delete)",
            "127.0.0.1:15432->5432/tcp",
            "db (Healthy)",
            "Phase",
            "Progressing",
            "ContainersStarting",
            "api 1/2 running",
            "  local: Progressing",
            "0123456789ab ",
            "PullFailed",
            "(x3 over",
            "berth-stack",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("0123456789abcdef"), "container ids are shortened");
    }

    #[test]
    fn secrets_show_sizes_never_values() {
        let info = resolve_one("secret").unwrap();
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
            "data": {"password": "aHVudGVyMg=="}});
        let text = render(&info, &obj, &[]);
        assert!(text.contains("password:  7 bytes"), "{text}");
        assert!(!text.contains("aHVudGVyMg") && !text.contains("hunter2"));
        assert!(text.contains("Events:  <none>"));
    }

    #[test]
    fn without_status_the_description_says_so() {
        let info = resolve_one("host").unwrap();
        let obj = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Host", "metadata": {"name": "edge-1", "generation": 1},
            "spec": {"endpoint": "tcp://10.0.0.5:2376"}});
        let text = render(&info, &obj, &[]);
        assert!(text.contains("Endpoint:  tcp://10.0.0.5:2376"), "{text}");
        assert!(text.contains("Conditions:  <none>"), "{text}");
        assert!(text.contains("(no status yet)"), "{text}");
        assert!(!text.contains("Namespace:"), "cluster-scoped: {text}");
    }

    #[test]
    fn a_failed_lease_shows_why_with_diagnostics_releases_and_callbacks() {
        let info = resolve_one("lease").unwrap();
        let obj = json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Lease",
            "metadata": {"name": "pr-1", "namespace": "previews", "generation": 2, "creationTimestamp": "2026-12-01T10:00:00Z"},
            "spec": {"tenant": "acme", "sku": "small", "duration": "2h", "retainOnClose": true,
                "callback": {"url": "https://hooks.example/berth"},
                "services": [{"name": "app", "image": "ghcr.io/acme/app:1", "quantity": 1, "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Failed", "phaseSince": "2026-12-01T10:05:00Z", "host": "edge-1",
                "expiresAt": "2026-12-01T12:00:00Z", "message": "host edge-1: container app-0 failed; exit code 3",
                "allocated": {"cpus": 0.5, "memoryMb": 256},
                "diagnostics": {"container": "app-0", "exitCode": 3, "oomKilled": true, "lastLogLines": ["starting", "panic: boom"],
                    "at": "2026-12-01T10:05:00Z"},
                "releases": [{"revision": 1, "generation": 1, "configHash": "aa", "outcome": "Active", "startedAt": "2026-12-01T10:00:01Z"},
                    {"revision": 2, "generation": 2, "configHash": "bb", "outcome": "RolledBack", "message": "exit code 1"}],
                "callbacks": [{"phase": "Ready", "state": "Delivered", "attempts": 1},
                    {"phase": "Failed", "state": "Pending", "attempts": 3, "lastError": "HTTP 503"}],
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainerFailed", "message": "exit code 3"}]}
        });
        let text = render(&info, &obj, &[]);
        for want in [
            "Tenant:",
            "acme",
            "Failed",
            "Since:",
            "2026-12-01T10:05:00Z",
            "Expires At:",
            "2026-12-01T12:00:00Z",
            "Allocated:",
            "0.5 CPUs, 256 MiB",
            "Diagnostics",
            "Exit Code:",
            "3",
            "OOM Killed:",
            "Last 2 Log Lines",
            "panic: boom",
            "Releases",
            "RolledBack",
            "exit code 1",
            "Callbacks",
            "Delivered",
            "HTTP 503",
            "ContainerFailed",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
}
