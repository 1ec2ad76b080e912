//! `meta.k8s.io/v1 Table` output, what `kubectl get` asks for (`Accept: …;as=Table`): a Name
//! column, then the CRD printer columns (or built-in columns for core kinds), with `date` columns
//! rendered as ages the way kube-apiserver renders them.

use serde_json::{Value, json};

use super::registry::{ColumnSource, ResourceInfo};

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// From the `includeObject` query parameter.
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let params: Vec<&str> = part.split(';').map(str::trim).collect();
            params.contains(&"as=Table") && !params.iter().any(|p| p.starts_with("g=") && *p != "g=meta.k8s.io")
        })
    })
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", secs % 60) }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 { format!("{y}y") } else { format!("{y}y{}d", d % 365) }
    } else {
        format!("{}y", d / 365)
    }
}

/// A timestamp cell rendered as an age (`5m`), or null.
pub fn age_cell(ts: &Value) -> Value {
    match ts.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        Some(t) => {
            let secs = jiff::Timestamp::now().as_second() - t.as_second();
            Value::from(human_duration(secs))
        }
        None => Value::Null,
    }
}

fn cell(column: &super::registry::Column, object: &Value) -> Value {
    let raw = match &column.source {
        ColumnSource::Computed(f) => return f(object),
        ColumnSource::JsonPath(path) => {
            let nodes = path.query(object).all();
            match nodes.len() {
                0 => Value::Null,
                1 => nodes[0].clone(),
                _ => Value::from(
                    nodes
                        .iter()
                        .map(|n| n.as_str().map(str::to_string).unwrap_or_else(|| n.to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            }
        }
    };
    if column.type_ == "date" {
        return age_cell(&raw);
    }
    match raw {
        // kubectl prints non-scalars as JSON; keep them as they are.
        Value::Object(_) | Value::Array(_) => Value::from(raw.to_string()),
        other => other,
    }
}

/// The column definitions of a resource's table.
pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    let mut cols = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace."
    })];
    cols.extend(info.columns.iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    cols
}

/// One table row for an object.
pub fn row(info: &ResourceInfo, object: &Value, include: IncludeObject) -> Value {
    let mut cells = vec![object.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
    cells.extend(info.columns.iter().map(|c| cell(c, object)));
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
    }
    row
}

/// A whole Table.
pub fn table<'a>(
    info: &ResourceInfo,
    objects: impl Iterator<Item = &'a Value>,
    include: IncludeObject,
    resource_version: u64,
    continue_token: Option<&str>,
    with_columns: bool,
) -> Value {
    let rows: Vec<Value> = objects.map(|o| row(info, o, include)).collect();
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = Value::from(column_definitions(info));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::Registry;

    #[test]
    fn human_durations_match_kubernetes() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 120, "3h2m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn detects_table_requests() {
        assert!(wants_table(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        )));
        assert!(!wants_table(Some("application/json")));
        assert!(!wants_table(None));
    }

    #[test]
    fn stack_rows_follow_printer_columns() {
        let reg = Registry::builtin();
        let info = reg.find("berth.dev", "v1alpha1", "stacks").unwrap();
        let obj = json!({
            "metadata": {"name": "shop", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "status": {"phase": "Ready", "hostsReady": "1/1",
                "conditions": [{"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}]}
        });
        let t = table(&info, [&obj].into_iter(), IncludeObject::Metadata, 7, None, true);
        let names: Vec<&str> =
            t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Ready", "Phase", "Hosts", "Drift", "Age"]);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "shop");
        assert_eq!(cells[1], "True");
        assert_eq!(cells[2], "Ready");
        assert_eq!(cells[3], "1/1");
        assert_eq!(cells[4], Value::Null);
        assert!(cells[5].as_str().unwrap().ends_with('y') || cells[5].as_str().unwrap().contains('y'));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }
}
