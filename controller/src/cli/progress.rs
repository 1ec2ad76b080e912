//! Progress of long waits (`wait`, `apply --wait`): a one-line summary of an object's status
//! (phase, services becoming ready, what the controller says it is doing), rewritten in place on
//! a terminal and printed as plain lines, only when it changes, otherwise (CI logs).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use serde_json::Value;

/// Readiness of one service, summed over hosts and replicas.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Count {
    ready: usize,
    total: usize,
}

fn container_ready(c: &Value) -> bool {
    let state = c.get("state").and_then(Value::as_str).unwrap_or("");
    let health = c.get("health").and_then(Value::as_str).unwrap_or("");
    state == "running" && (health.is_empty() || health == "healthy")
}

/// The status of the condition `type_`: (status, reason, message).
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find_map(|c| {
        (c.get("type")?.as_str()? == type_).then(|| {
            (
                c.get("status").and_then(Value::as_str).unwrap_or(""),
                c.get("reason").and_then(Value::as_str).unwrap_or(""),
                c.get("message").and_then(Value::as_str).unwrap_or(""),
            )
        })
    })
}

/// One line saying where an object is on its way to ready, e.g.
/// `Progressing: 3/4 containers ready (api 1/2, db 1/1, web 1/1): pulling busybox`.
pub fn summary(obj: &Value) -> String {
    let mut parts = Vec::new();
    let phase = obj.pointer("/status/phase").and_then(Value::as_str);
    parts.push(phase.unwrap_or("Pending").to_string());
    let mut services: BTreeMap<String, Count> = BTreeMap::new();
    let containers = obj
        .pointer("/status/hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|h| h.get("containers").and_then(Value::as_array).into_iter().flatten())
        .chain(obj.pointer("/status/instances").and_then(Value::as_array).into_iter().flatten());
    for c in containers {
        let name = c.get("service").and_then(Value::as_str).unwrap_or("?").to_string();
        let count = services.entry(name).or_default();
        count.total += 1;
        if container_ready(c) {
            count.ready += 1;
        }
    }
    let mut line = parts.join(" ");
    if !services.is_empty() {
        let ready: usize = services.values().map(|c| c.ready).sum();
        let total: usize = services.values().map(|c| c.total).sum();
        let each: Vec<String> = services.iter().map(|(s, c)| format!("{s} {}/{}", c.ready, c.total)).collect();
        line.push_str(&format!(": {ready}/{total} containers ready ({})", each.join(", ")));
    }
    if let Some(hosts) = obj.pointer("/status/hostsReady").and_then(Value::as_str) {
        line.push_str(&format!(", hosts ready {hosts}"));
    }
    // What the controller says it is doing, or why it is not ready.
    let doing = condition(obj, "Progressing")
        .filter(|(s, _, m)| *s == "True" && !m.is_empty())
        .or_else(|| condition(obj, "Ready").filter(|(s, _, m)| *s != "True" && !m.is_empty()))
        .map(|(_, _, m)| m)
        .or_else(|| obj.pointer("/status/message").and_then(Value::as_str).filter(|m| !m.is_empty()));
    if let Some(m) = doing {
        line.push_str(&format!(": {m}"));
    }
    line
}

/// Where progress lines go.
#[derive(Debug)]
pub struct Progress {
    terminal: bool,
    last: Option<String>,
    in_place: bool,
}

impl Progress {
    /// Progress on stdout, in place when stdout is a terminal.
    pub fn stdout() -> Self {
        Self { terminal: std::io::stdout().is_terminal(), last: None, in_place: false }
    }

    /// Plain lines.
    #[cfg(test)]
    pub fn plain() -> Self {
        Self { terminal: false, last: None, in_place: false }
    }

    /// Shows `line` for `what` unless it is what was shown last.
    pub fn update(&mut self, what: &str, line: &str, out: &mut impl Write) -> std::io::Result<()> {
        let text = format!("{what}: {line}");
        if self.last.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        if self.terminal {
            // Rewrite the current line: carriage return, then clear to its end.
            write!(out, "\r{text}\x1b[K")?;
            self.in_place = true;
        } else {
            writeln!(out, "{text}")?;
        }
        self.last = Some(text);
        out.flush()
    }

    /// Ends an in-place line so that what follows starts on a new one.
    pub fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.in_place {
            writeln!(out)?;
            self.in_place = false;
        }
        self.last = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stack_summary_counts_ready_containers_per_service() {
        let obj = json!({"status": {
            "phase": "Progressing", "hostsReady": "0/1",
            "conditions": [{"type": "Progressing", "status": "True", "message": "starting api"}],
            "hosts": [{"host": "local", "phase": "Progressing", "containers": [
                {"service": "db", "replica": 0, "state": "running", "health": "healthy"},
                {"service": "api", "replica": 0, "state": "running", "health": "starting"},
                {"service": "api", "replica": 1, "state": "running"},
                {"service": "web", "replica": 0, "state": "created"}
            ]}]
        }});
        assert_eq!(
            summary(&obj),
            "Progressing: 2/4 containers ready (api 1/2, db 1/1, web 0/1), hosts ready 0/1: starting api"
        );
    }

    #[test]
    fn not_ready_reason_is_shown_and_empty_status_is_pending() {
        assert_eq!(summary(&json!({"metadata": {"name": "x"}})), "Pending");
        let obj = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "Ready", "status": "False", "reason": "InsufficientCapacity", "message": "no host has room for sku small"}
        ]}});
        assert_eq!(summary(&obj), "Pending: no host has room for sku small");
    }

    #[test]
    fn lease_instances_count_too() {
        let obj = json!({"status": {"phase": "Provisioning", "instances": [{"service": "app", "instance": 0, "state": "running"}]}});
        assert_eq!(summary(&obj), "Provisioning: 1/1 containers ready (app 1/1)");
    }

    #[test]
    fn plain_progress_prints_a_line_only_when_it_changes() {
        let mut p = Progress::plain();
        let mut out = Vec::new();
        p.update("stack/x", "Pending", &mut out).unwrap();
        p.update("stack/x", "Pending", &mut out).unwrap();
        p.update("stack/x", "Ready", &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "stack/x: Pending\nstack/x: Ready\n");
    }

    #[test]
    fn terminal_progress_rewrites_one_line() {
        let mut p = Progress { terminal: true, last: None, in_place: false };
        let mut out = Vec::new();
        p.update("s", "a", &mut out).unwrap();
        p.update("s", "b", &mut out).unwrap();
        p.finish(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\rs: a\x1b[K\rs: b\x1b[K\n");
    }
}
