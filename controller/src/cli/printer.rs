//! Output of `get`, `events` and friends: kubectl-style tables (the printer columns of the CRDs,
//! computed with the API server's own table code so `berth get` and `kubectl get` print the same
//! cells), YAML, JSON and `kind.group/name` lines.

use serde_json::Value;

use super::resources;
use crate::apiserver::registry::ResourceInfo;
use crate::apiserver::table::{self, IncludeObject};

/// `-o` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A table of the printer columns (the default).
    #[default]
    #[value(skip)]
    Table,
    /// The table with the extra columns.
    Wide,
    /// The objects as YAML.
    Yaml,
    /// The objects as JSON.
    Json,
    /// `kind.group/name` per object.
    Name,
}

/// How a table is laid out.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableOptions {
    /// Include priority > 0 columns.
    pub wide: bool,
    /// Add a NAMESPACE column first (`-A`).
    pub namespace_column: bool,
    /// Print names as `kind.group/name` (several kinds in one command).
    pub qualified_names: bool,
    /// Add a LABELS column.
    pub show_labels: bool,
}

/// kubectl's rendering of one cell: a missing value is an empty cell.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn labels_text(obj: &Value) -> String {
    match obj.pointer("/metadata/labels").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
        }
        _ => "<none>".into(),
    }
}

/// The header row of a resource's table.
pub fn header(info: &ResourceInfo, opts: TableOptions) -> Vec<String> {
    let mut h = Vec::new();
    if opts.namespace_column && info.namespaced {
        h.push("NAMESPACE".to_string());
    }
    for c in table::column_definitions(info) {
        if opts.wide || c["priority"].as_i64().unwrap_or(0) == 0 {
            h.push(c["name"].as_str().unwrap_or_default().to_uppercase());
        }
    }
    if opts.show_labels {
        h.push("LABELS".into());
    }
    h
}

/// One row for an object, matching [`header`].
pub fn row(info: &ResourceInfo, obj: &Value, opts: TableOptions) -> Vec<String> {
    let defs = table::column_definitions(info);
    let cells = table::row(info, obj, IncludeObject::None)["cells"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    if opts.namespace_column && info.namespaced {
        out.push(obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string());
    }
    for (i, (def, cell)) in defs.iter().zip(cells.iter()).enumerate() {
        if !(opts.wide || def["priority"].as_i64().unwrap_or(0) == 0) {
            continue;
        }
        if i == 0 && opts.qualified_names {
            out.push(resources::display_name(info, cell.as_str().unwrap_or_default()));
        } else {
            out.push(cell_text(cell));
        }
    }
    if opts.show_labels {
        out.push(labels_text(obj));
    }
    out
}

/// Lays rows out like kubectl's tabwriter: each column as wide as its widest cell plus three
/// spaces (at least six), the last column unpadded.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let width = (widths[i] + 3).max(6);
                line.push_str(&" ".repeat(width - c.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Widths fixed by a first batch of rows, so rows printed later (`-w`) line up with them.
#[derive(Debug, Clone, Default)]
pub struct Columns(Vec<usize>);

impl Columns {
    /// Widths fitting `rows`.
    pub fn fit(rows: &[Vec<String>]) -> Self {
        let mut widths: Vec<usize> = Vec::new();
        for r in rows {
            for (i, c) in r.iter().enumerate() {
                if widths.len() <= i {
                    widths.push(0);
                }
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        Self(widths)
    }

    /// One line, padded to the widths (cells longer than their column push the rest right).
    pub fn line(&self, row: &[String]) -> String {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            line.push_str(c);
            if i + 1 < row.len() {
                let width = (self.0.get(i).copied().unwrap_or(0) + 3).max(6);
                line.push_str(&" ".repeat(width.saturating_sub(c.chars().count()).max(1)));
            }
        }
        line.trim_end().to_string()
    }
}

/// An object as shown by `-o yaml/json`: without `managedFields`, as kubectl shows it by default.
pub fn presentable(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    v
}

/// A `v1 List` of objects, as kubectl prints several objects.
pub fn list(items: Vec<Value>) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}

/// YAML text of a value.
pub fn yaml(v: &Value) -> anyhow::Result<String> {
    Ok(serde_yaml_ng::to_string(v)?)
}

/// Indented JSON text of a value, with a final newline.
pub fn json(v: &Value) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// An age like `5m` from an RFC 3339 timestamp, `<unknown>` when there is none.
pub fn age(ts: Option<&str>) -> String {
    match ts {
        Some(t) => table::age_cell(&Value::from(t)).as_str().map(str::to_string).unwrap_or_else(|| "<unknown>".into()),
        None => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::resources::resolve_one;

    fn stack(name: &str, ns: &str, ready: Option<&str>) -> Value {
        let mut v = json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Stack",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": jiff::Timestamp::now().to_string(), "labels": {"app": "shop"}},
            "spec": {"services": []}
        });
        if let Some(r) = ready {
            v["status"] = json!({"phase": "Ready", "hostsReady": "1/1", "conditions": [{"type": "Ready", "status": r}],
                "lastDrift": {"tier": 2, "reason": "ContainerMissing"}});
        }
        v
    }

    #[test]
    fn stack_table_has_the_crd_printer_columns() {
        let info = resolve_one("stacks").unwrap();
        let objs = [stack("web", "default", Some("True")), stack("api-long-name", "default", None)];
        let mut rows = vec![header(&info, TableOptions::default())];
        rows.extend(objs.iter().map(|o| row(&info, o, TableOptions::default())));
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME            READY   PHASE   HOSTS   AGE");
        assert!(lines[1].starts_with("web             True    Ready   1/1     "), "{text}");
        // Missing values are empty cells, as kubectl prints them.
        assert!(lines[2].starts_with("api-long-name                           "), "{text}");
        assert!(lines[1].ends_with('s'), "age column: {text}");
    }

    #[test]
    fn wide_adds_priority_columns_and_all_namespaces_adds_namespace() {
        let info = resolve_one("stacks").unwrap();
        let opts = TableOptions { wide: true, namespace_column: true, ..Default::default() };
        assert_eq!(header(&info, opts), ["NAMESPACE", "NAME", "READY", "PHASE", "HOSTS", "DRIFT", "AGE"]);
        let r = row(&info, &stack("web", "prod", Some("False")), opts);
        assert_eq!(&r[..6], ["prod", "web", "False", "Ready", "1/1", "ContainerMissing"]);
    }

    #[test]
    fn cluster_scoped_kinds_get_no_namespace_column() {
        let info = resolve_one("hosts").unwrap();
        let opts = TableOptions { namespace_column: true, ..Default::default() };
        assert_eq!(header(&info, opts), ["NAME", "ENDPOINT", "REACHABLE", "VERSION", "AGE"]);
    }

    #[test]
    fn qualified_names_and_labels() {
        let info = resolve_one("stacks").unwrap();
        let opts = TableOptions { qualified_names: true, show_labels: true, ..Default::default() };
        let r = row(&info, &stack("web", "default", None), opts);
        assert_eq!(r[0], "stack.berth.dev/web");
        assert_eq!(r.last().unwrap(), "app=shop");
        assert_eq!(header(&info, opts).last().unwrap(), "LABELS");
    }

    #[test]
    fn columns_keep_their_width_for_later_rows() {
        let rows = vec![vec!["NAME".to_string(), "PHASE".into()], vec!["web".into(), "Ready".into()]];
        let cols = Columns::fit(&rows);
        assert_eq!(cols.line(&["x".into(), "Failed".into()]), "x      Failed");
        assert_eq!(render(&rows), "NAME   PHASE\nweb    Ready\n");
    }

    #[test]
    fn output_hides_managed_fields() {
        let v = presentable(&json!({"metadata": {"name": "a", "managedFields": [{}]}}));
        assert_eq!(v, json!({"metadata": {"name": "a"}}));
    }
}
