//! Container logs of an owner (a Stack or a Lease): which containers a request selects (by
//! berth's labels, from the host listing, so a container recreated a moment ago is the one
//! read; for a Lease, those of its active release), and the [`LogRecord`] stream of their logs.
//! Selection and record making are pure; the stream only reads what
//! [`crate::docker::DockerApi::logs`] yields.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_crds::common::{LABEL_OWNER_UID, LABEL_RELEASE, LABEL_REPLICA, LABEL_SERVICE};
use berth_crds::logs::{LogRecord, LogRecordType, LogStreamName};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::apiserver::views::LogRequest;
use crate::docker::{ContainerSummary, DockerApi, LogLine, LogOptions, LogStream};

/// One container whose log is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// Host.
    pub host: String,
    /// Service.
    pub service: String,
    /// Replica.
    pub replica: i32,
    /// Docker name.
    pub container: String,
    /// Docker id.
    pub id: String,
}

impl LogTarget {
    fn record(&self, type_: LogRecordType) -> LogRecord {
        LogRecord {
            type_,
            host: self.host.clone(),
            service: self.service.clone(),
            replica: self.replica,
            container: self.container.clone(),
            stream: None,
            time: None,
            text: String::new(),
        }
    }

    /// The `container` record announcing this container.
    pub fn announce(&self) -> LogRecord {
        self.record(LogRecordType::Container)
    }

    /// The record of one line.
    pub fn line(&self, line: LogLine) -> LogRecord {
        let stream = match line.stream {
            LogStream::Stdout => LogStreamName::Stdout,
            LogStream::Stderr => LogStreamName::Stderr,
        };
        LogRecord { stream: Some(stream), time: line.timestamp, text: line.text, ..self.record(LogRecordType::Line) }
    }

    /// The record of a failure to read this container's log.
    pub fn error(&self, message: String) -> LogRecord {
        LogRecord { text: message, ..self.record(LogRecordType::Error) }
    }
}

/// The containers of the owner `uid` on `host` that the request selects, by service and replica.
pub fn select(host: &str, containers: &[ContainerSummary], uid: &str, request: &LogRequest) -> Vec<LogTarget> {
    let mut out: Vec<LogTarget> = containers
        .iter()
        .filter(|c| c.labels.get(LABEL_OWNER_UID).map(String::as_str) == Some(uid))
        .filter_map(|c| {
            let service = c.labels.get(LABEL_SERVICE)?.clone();
            let replica = c.labels.get(LABEL_REPLICA)?.parse().ok()?;
            Some(LogTarget { host: host.to_string(), service, replica, container: c.name.clone(), id: c.id.clone() })
        })
        .filter(|t| request.service.as_deref().is_none_or(|s| s == t.service))
        .filter(|t| request.replica.is_none_or(|r| r == t.replica))
        .collect();
    out.sort_by(|a, b| (&a.service, a.replica, &a.container).cmp(&(&b.service, b.replica, &b.container)));
    out
}

/// The containers of Lease release `release` (label `berth.dev/release`); all of them when the
/// Lease has no active release (its first release is still being provisioned, or failed).
pub fn of_release(containers: &[ContainerSummary], release: Option<i64>) -> Vec<ContainerSummary> {
    let wanted = release.map(|r| r.to_string());
    containers
        .iter()
        .filter(|c| wanted.as_ref().is_none_or(|r| c.labels.get(LABEL_RELEASE) == Some(r)))
        .cloned()
        .collect()
}

/// Why nothing was selected, in words that say what to ask for instead.
pub fn nothing_selected(owner: &str, request: &LogRequest, services: &BTreeSet<String>, seen: &[LogTarget]) -> String {
    if let Some(s) = &request.service
        && !services.contains(s)
    {
        let known: Vec<&str> = services.iter().map(String::as_str).collect();
        return format!("{owner} has no service {s:?}; its services are: {}", known.join(", "));
    }
    let what = match (&request.service, request.replica) {
        (Some(s), Some(r)) => format!("replica {r} of service {s}"),
        (Some(s), None) => format!("service {s}"),
        (None, Some(r)) => format!("replica {r}"),
        (None, None) => String::from("any service"),
    };
    if seen.is_empty() {
        return format!(
            "{owner} has no container on its hosts yet (for {what}); wait until it is Ready (`berth wait \
             --for=condition=Ready`) or see `berth describe`"
        );
    }
    let have: Vec<String> = seen.iter().map(|t| format!("{}/{}", t.service, t.replica)).collect();
    format!("{owner} has no container for {what}; it has {}", have.join(", "))
}

/// Docker's log options for the request at Unix time `now`.
pub fn options(request: &LogRequest, now: i64) -> LogOptions {
    LogOptions {
        follow: request.follow,
        tail: request.tail_lines,
        since: request.since_seconds.map(|s| now.saturating_sub(s)),
        timestamps: request.timestamps,
    }
}

/// The records of the targets' logs: one `container` record each, then their lines (container
/// by container, or interleaved as they come when following), an `error` record for a log that
/// breaks off.
pub fn stream(
    targets: Vec<(LogTarget, Arc<dyn DockerApi>)>,
    options: &LogOptions,
    extra: Vec<LogRecord>,
) -> BoxStream<'static, LogRecord> {
    let announce: Vec<LogRecord> = targets.iter().map(|(t, _)| t.announce()).chain(extra).collect();
    let logs: Vec<BoxStream<'static, LogRecord>> = targets
        .into_iter()
        .map(|(t, docker)| {
            docker
                .logs(&t.id, options)
                .map(move |r| match r {
                    Ok(line) => t.line(line),
                    Err(e) => t.error(format!("reading the log of {} on host {}: {e}", t.container, t.host)),
                })
                .boxed()
        })
        .collect();
    let lines = if options.follow {
        futures::stream::select_all(logs).boxed()
    } else {
        futures::stream::iter(logs).flatten().boxed()
    };
    futures::stream::iter(announce).chain(lines).boxed()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::docker::ContainerState;
    use crate::docker::fake::FakeDocker;

    fn container(name: &str, uid: &str, service: &str, replica: &str) -> ContainerSummary {
        ContainerSummary {
            id: format!("id-{name}"),
            name: name.into(),
            image: "busybox".into(),
            image_id: String::new(),
            labels: BTreeMap::from([
                (LABEL_OWNER_UID.to_string(), uid.to_string()),
                (LABEL_SERVICE.to_string(), service.to_string()),
                (LABEL_REPLICA.to_string(), replica.to_string()),
            ]),
            state: ContainerState::Running,
            health: None,
            created: 0,
            ports: vec![],
        }
    }

    fn names(t: &[LogTarget]) -> Vec<&str> {
        t.iter().map(|t| t.container.as_str()).collect()
    }

    #[test]
    fn selection_is_by_owner_uid_service_and_replica_in_order() {
        let all = [
            container("web-1", "u1", "web", "1"),
            container("web-0", "u1", "web", "0"),
            container("db-0", "u1", "db", "0"),
            container("other-web-0", "u2", "web", "0"),
            container("broken", "u1", "web", "x"),
        ];
        let req = |service: Option<&str>, replica: Option<i32>| LogRequest {
            service: service.map(str::to_string),
            replica,
            ..Default::default()
        };
        assert_eq!(names(&select("local", &all, "u1", &req(None, None))), ["db-0", "web-0", "web-1"]);
        assert_eq!(names(&select("local", &all, "u1", &req(Some("web"), None))), ["web-0", "web-1"]);
        assert_eq!(names(&select("local", &all, "u1", &req(Some("web"), Some(1)))), ["web-1"]);
        assert_eq!(names(&select("local", &all, "u1", &req(None, Some(0)))), ["db-0", "web-0"]);
        assert!(select("local", &all, "u3", &req(None, None)).is_empty());
        assert_eq!(select("h2", &all, "u1", &req(Some("db"), None))[0].host, "h2");
    }

    #[test]
    fn a_lease_shows_its_active_release_or_every_release_when_none_is_active() {
        let release = |c: ContainerSummary, r: &str| {
            let mut c = c;
            c.labels.insert(LABEL_RELEASE.to_string(), r.to_string());
            c
        };
        let all = [
            release(container("lease.ns.x.web-0.r1", "u1", "web", "0"), "1"),
            release(container("lease.ns.x.web-0.r2", "u1", "web", "0"), "2"),
            release(container("lease.ns.x.worker-0.r2", "u1", "worker", "0"), "2"),
            release(container("lease.ns.y.web-0.r2", "u2", "web", "0"), "2"),
        ];
        let pick = |active: Option<i64>, request: &LogRequest| -> Vec<String> {
            names(&select("local", &of_release(&all, active), "u1", request)).into_iter().map(String::from).collect()
        };
        let every = LogRequest::default();
        assert_eq!(pick(Some(2), &every), ["lease.ns.x.web-0.r2", "lease.ns.x.worker-0.r2"]);
        assert_eq!(pick(Some(1), &every), ["lease.ns.x.web-0.r1"]);
        // No active release: both releases' containers, each announced with its own name.
        assert_eq!(pick(None, &every), ["lease.ns.x.web-0.r1", "lease.ns.x.web-0.r2", "lease.ns.x.worker-0.r2"]);
        let web0 = LogRequest { service: Some("web".into()), replica: Some(0), ..Default::default() };
        assert_eq!(pick(Some(2), &web0), ["lease.ns.x.web-0.r2"]);
    }

    #[test]
    fn an_empty_selection_says_what_exists() {
        let services: BTreeSet<String> = ["db".to_string(), "web".to_string()].into();
        let seen = select("local", &[container("web-0", "u", "web", "0")], "u", &LogRequest::default());
        let req = LogRequest { service: Some("api".into()), ..Default::default() };
        assert_eq!(
            nothing_selected("stack ns/shop", &req, &services, &seen),
            "stack ns/shop has no service \"api\"; its services are: db, web"
        );
        let req = LogRequest { service: Some("web".into()), replica: Some(3), ..Default::default() };
        assert_eq!(
            nothing_selected("stack ns/shop", &req, &services, &seen),
            "stack ns/shop has no container for replica 3 of service web; it has web/0"
        );
        assert!(
            nothing_selected("stack ns/shop", &LogRequest::default(), &services, &[])
                .contains("no container on its hosts yet")
        );
    }

    #[test]
    fn since_counts_back_from_now() {
        let req = LogRequest { since_seconds: Some(600), tail_lines: Some(5), follow: true, ..Default::default() };
        assert_eq!(
            options(&req, 10_000),
            LogOptions { follow: true, tail: Some(5), since: Some(9_400), timestamps: false }
        );
    }

    #[tokio::test]
    async fn records_announce_containers_then_carry_lines_with_their_stream() {
        let fake = FakeDocker::new("fake:///h");
        fake.add_image("busybox");
        let id = fake.add_foreign_container("web-0", "busybox", BTreeMap::new());
        fake.push_log("web-0", LogStream::Stdout, "hello");
        fake.push_log("web-0", LogStream::Stderr, "oops");
        let target = LogTarget { host: "h".into(), service: "web".into(), replica: 0, container: "web-0".into(), id };
        let missing = LogTarget { container: "gone-0".into(), id: "gone".into(), ..target.clone() };
        let docker: Arc<dyn DockerApi> = Arc::new(fake);
        let records: Vec<LogRecord> =
            stream(vec![(target, docker.clone()), (missing, docker)], &LogOptions::default(), vec![]).collect().await;
        let kinds: Vec<(LogRecordType, &str, &str)> =
            records.iter().map(|r| (r.type_, r.container.as_str(), r.text.as_str())).collect();
        assert_eq!(
            kinds[..4],
            [
                (LogRecordType::Container, "web-0", ""),
                (LogRecordType::Container, "gone-0", ""),
                (LogRecordType::Line, "web-0", "hello"),
                (LogRecordType::Line, "web-0", "oops"),
            ]
        );
        assert_eq!(records[2].stream, Some(LogStreamName::Stdout));
        assert_eq!(records[3].stream, Some(LogStreamName::Stderr));
        assert_eq!(records[4].type_, LogRecordType::Error);
        assert!(records[4].text.contains("gone-0"), "{}", records[4].text);
    }
}
