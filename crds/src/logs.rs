//! The log stream of a Stack's or a Lease's containers (`berth.dev/log/v1`): the API's `log`
//! subresource (`GET /apis/berth.dev/v1alpha1/namespaces/{ns}/{stacks|leases}/{name}/log`) answers with
//! newline-delimited JSON, one [`LogRecord`] per line: first one `container` record per selected
//! container, then `line` records as the containers write, and an `error` record when one
//! container's log cannot be read. `berth logs` formats them; `docs/plan-json.md` documents them.
//!
//! Stability: fields are only added, never renamed; readers ignore fields and record types they
//! do not know.

use serde::{Deserialize, Serialize};

/// What a record says.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LogRecordType {
    /// A container whose log follows (sent first, once per container).
    Container,
    /// One line a container wrote.
    Line,
    /// Reading this container's log failed (`text` says why); its lines end here.
    Error,
    /// A record type this reader does not know; skip it.
    #[serde(other)]
    Unknown,
}

/// Which stream a line came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LogStreamName {
    /// Standard output (also the combined stream of a container with a TTY).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One record of the log stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// `container`, `line` or `error`.
    #[serde(rename = "type")]
    pub type_: LogRecordType,
    /// Host the container runs on.
    pub host: String,
    /// Service.
    pub service: String,
    /// Replica index (a Lease's instance index).
    pub replica: i32,
    /// Docker name of the container.
    pub container: String,
    /// Stream of a `line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<LogStreamName>,
    /// When Docker received the line (RFC 3339, nanoseconds), when timestamps were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The line (without its newline), or the error message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_unknown_types_are_skippable() {
        let line = LogRecord {
            type_: LogRecordType::Line,
            host: "local".into(),
            service: "web".into(),
            replica: 1,
            container: "ns.shop-web-1".into(),
            stream: Some(LogStreamName::Stderr),
            time: None,
            text: "oops".into(),
        };
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(
            json,
            r#"{"type":"line","host":"local","service":"web","replica":1,"container":"ns.shop-web-1","stream":"stderr","text":"oops"}"#
        );
        assert_eq!(serde_json::from_str::<LogRecord>(&json).unwrap(), line);
        let newer: LogRecord = serde_json::from_str(
            r#"{"type":"heartbeat","host":"","service":"","replica":0,"container":"","extra":true}"#,
        )
        .unwrap();
        assert_eq!(newer.type_, LogRecordType::Unknown);
    }
}
