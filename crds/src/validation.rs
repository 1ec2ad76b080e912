//! Semantic validation: the rules a structural schema cannot express (exactly-one-of, references
//! between fields, cycles, ranges that depend on other fields).
//!
//! Each kind has one function returning *every* problem, each as a [`FieldError`] with the field
//! path a person would look at (`spec.services[1].ports[0].containerPort`), a machine-readable
//! reason and a message that says what to write instead. The API server turns them into one
//! `422 Invalid` cause each; the CLI prints them before sending anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::common::{EnvVar, HealthcheckSpec, MountSpec, PortSpec, RESERVED_LABEL_PREFIX, ResourcesSpec, SecuritySpec};
use crate::duration::parse_duration;
use crate::host::Host;
use crate::image::ImageRef;
use crate::lease::Lease;
use crate::stack::{DependencyCondition, RolloutStrategy, Stack};

/// Why a field is invalid; the spelling is Kubernetes' `metav1.CauseType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorReason {
    /// A required value is missing.
    Required,
    /// The value is malformed or out of range.
    Invalid,
    /// The value repeats one that must be unique.
    Duplicate,
    /// The value is not one of the supported ones.
    NotSupported,
    /// The value is not allowed here.
    Forbidden,
    /// The value is too long.
    TooLong,
}

impl FieldErrorReason {
    /// Kubernetes' spelling (`FieldValueInvalid`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
        }
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.services[0].mounts[1]`.
    pub field: String,
    /// Machine-readable reason.
    pub reason: FieldErrorReason,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Accumulates errors under a path prefix.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, reason: FieldErrorReason, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), reason, message: message.into() });
    }
    fn required(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field, FieldErrorReason::Required, message);
    }
    fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field, FieldErrorReason::Invalid, message);
    }
    fn duplicate(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field, FieldErrorReason::Duplicate, message);
    }
}

/// Longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest DNS subdomain.
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// Most replicas a Stack service may ask for.
pub const MAX_REPLICAS: i32 = 100;
/// Most instances a Lease service may ask for.
pub const MAX_QUANTITY: i32 = 20;

/// Why `s` is not an RFC 1123 DNS label (lowercase alphanumerics and '-', at most 63), if it isn't.
pub fn dns_label_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".to_string());
    }
    if s.len() > MAX_LABEL_LEN {
        return Some(format!("must be at most {MAX_LABEL_LEN} characters (is {})", s.len()));
    }
    let ok_chars = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !s.starts_with('-') && !s.ends_with('-');
    if !(ok_chars && ok_ends) {
        return Some(format!(
            "{s:?} is not a DNS label: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    None
}

/// Why `s` is not an RFC 1123 DNS subdomain (dot-separated labels, at most 253), if it isn't.
pub fn dns_subdomain_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".to_string());
    }
    if s.len() > MAX_SUBDOMAIN_LEN {
        return Some(format!("must be at most {MAX_SUBDOMAIN_LEN} characters (is {})", s.len()));
    }
    if s.split('.').any(|l| dns_label_problem(l).is_some()) {
        return Some(format!(
            "{s:?} is not a DNS subdomain: use lowercase letters, digits, '-' and '.', starting and ending with a \
             letter or digit"
        ));
    }
    None
}

fn check_label_name(errs: &mut Errors, field: &str, name: &str) {
    if let Some(p) = dns_label_problem(name) {
        if name.is_empty() {
            errs.required(field, "a name is required");
        } else {
            errs.invalid(field, p);
        }
    }
}

fn check_metadata_name(errs: &mut Errors, name: Option<&str>, subdomain: bool) {
    match name {
        None | Some("") => errs.required("metadata.name", "a name is required"),
        Some(n) => {
            let problem = if subdomain { dns_subdomain_problem(n) } else { dns_label_problem(n) };
            if let Some(p) = problem {
                errs.invalid("metadata.name", p);
            }
        }
    }
}

fn check_image(errs: &mut Errors, field: &str, image: &str) {
    if image.is_empty() {
        errs.required(field, "an image is required, e.g. busybox:1.36");
    } else if let Err(e) = ImageRef::parse(image) {
        errs.invalid(field, e);
    }
}

fn check_absolute_path(errs: &mut Errors, field: &str, path: &str, what: &str) {
    if path.is_empty() {
        errs.required(field, format!("{what} is required"));
    } else if !path.starts_with('/') {
        errs.invalid(field, format!("{what} {path:?} must be an absolute path (start with '/')"));
    } else if path.split('/').any(|c| c == "..") {
        errs.invalid(field, format!("{what} {path:?} must not contain '..'"));
    }
}

fn check_port_number(errs: &mut Errors, field: &str, port: i32, allow_zero: bool) {
    let min = if allow_zero { 0 } else { 1 };
    if !(min..=65535).contains(&port) {
        errs.invalid(field, format!("port {port} is out of range: must be between {min} and 65535"));
    }
}

/// Checks a list of ports; `fixed_host_ports` collects `(hostIP, hostPort, protocol)` across
/// services so that two services asking for the same published port are reported.
fn check_ports(
    errs: &mut Errors,
    base: &str,
    ports: &[PortSpec],
    replicas: i32,
    fixed_host_ports: &mut HashMap<(String, i32, &'static str), String>,
) {
    let mut seen = BTreeSet::new();
    for (j, p) in ports.iter().enumerate() {
        let f = format!("{base}.ports[{j}]");
        check_port_number(errs, &format!("{f}.containerPort"), p.container_port, false);
        if !seen.insert((p.container_port, p.protocol)) {
            errs.duplicate(
                format!("{f}.containerPort"),
                format!("containerPort {}/{} is listed twice", p.container_port, p.protocol.as_str()),
            );
        }
        if let Some(hp) = p.host_port {
            check_port_number(errs, &format!("{f}.hostPort"), hp, true);
            if hp > 0 {
                if replicas > 1 {
                    errs.invalid(
                        format!("{f}.hostPort"),
                        format!(
                            "hostPort {hp} can be bound by only one container, but the service has {replicas} \
                             replicas; omit hostPort to let Docker pick a port per replica"
                        ),
                    );
                }
                let ip = p.host_ip.clone().unwrap_or_default();
                let key = (ip.clone(), hp, p.protocol.as_str());
                if let Some(other) = fixed_host_ports.get(&key) {
                    errs.duplicate(
                        format!("{f}.hostPort"),
                        format!("hostPort {hp}/{} is already published by {other}", p.protocol.as_str()),
                    );
                } else {
                    fixed_host_ports.insert(key, f.clone());
                }
            }
        }
        if let Some(ip) = &p.host_ip
            && ip.parse::<IpAddr>().is_err()
        {
            errs.invalid(format!("{f}.hostIP"), format!("{ip:?} is not an IP address"));
        }
    }
}

fn check_env(errs: &mut Errors, base: &str, env: &[EnvVar]) {
    let mut seen = BTreeSet::new();
    for (j, e) in env.iter().enumerate() {
        let f = format!("{base}.env[{j}]");
        if e.name.is_empty() {
            errs.required(format!("{f}.name"), "an environment variable needs a name");
        } else if e.name.contains('=') || e.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            errs.invalid(
                format!("{f}.name"),
                format!("{:?} is not a valid variable name (no '=' or whitespace)", e.name),
            );
        } else if !seen.insert(e.name.as_str()) {
            errs.duplicate(format!("{f}.name"), format!("variable {} is set twice", e.name));
        }
        match (&e.value, &e.value_from) {
            (Some(_), Some(_)) => errs.invalid(f.clone(), "set either value or valueFrom, not both"),
            (None, None) => errs.required(format!("{f}.value"), "set value or valueFrom"),
            _ => {}
        }
        if let Some(src) = &e.value_from {
            let vf = format!("{f}.valueFrom");
            match (&src.secret_key_ref, &src.config_map_key_ref) {
                (Some(_), Some(_)) => errs.invalid(vf.clone(), "set either secretKeyRef or configMapKeyRef, not both"),
                (None, None) => errs.required(vf.clone(), "set secretKeyRef or configMapKeyRef"),
                _ => {}
            }
            for (sel, name) in [(&src.secret_key_ref, "secretKeyRef"), (&src.config_map_key_ref, "configMapKeyRef")] {
                if let Some(sel) = sel {
                    check_key_selector(errs, &format!("{vf}.{name}"), &sel.name, &sel.key);
                }
            }
        }
    }
}

fn check_key_selector(errs: &mut Errors, f: &str, name: &str, key: &str) {
    if let Some(p) = dns_subdomain_problem(name) {
        errs.invalid(format!("{f}.name"), p);
    }
    if key.is_empty() {
        errs.required(format!("{f}.key"), "a key is required");
    } else if !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        errs.invalid(format!("{f}.key"), format!("{key:?} is not a valid key (letters, digits, '-', '_', '.')"));
    }
}

fn check_mounts(errs: &mut Errors, base: &str, mounts: &[MountSpec], volumes: &BTreeSet<&str>) {
    let mut paths = BTreeSet::new();
    for (j, m) in mounts.iter().enumerate() {
        let f = format!("{base}.mounts[{j}]");
        check_absolute_path(errs, &format!("{f}.mountPath"), &m.mount_path, "mountPath");
        if !m.mount_path.is_empty() && !paths.insert(m.mount_path.trim_end_matches('/')) {
            errs.duplicate(format!("{f}.mountPath"), format!("{} is mounted twice", m.mount_path));
        }
        let kinds = [m.volume.is_some(), m.host_path.is_some(), m.tmpfs.is_some()].iter().filter(|b| **b).count();
        if kinds != 1 {
            errs.invalid(
                f.clone(),
                format!("a mount needs exactly one of volume, hostPath and tmpfs (this one has {kinds})"),
            );
        }
        if let Some(v) = &m.volume
            && !volumes.contains(v.as_str())
        {
            errs.push(
                format!("{f}.volume"),
                FieldErrorReason::NotSupported,
                format!("volume {v:?} is not declared in spec.volumes; add it there or fix the name"),
            );
        }
        if let Some(h) = &m.host_path {
            check_absolute_path(errs, &format!("{f}.hostPath"), h, "hostPath");
        }
        if let Some(t) = &m.tmpfs
            && let Some(size) = t.size_mb
            && size <= 0
        {
            errs.invalid(format!("{f}.tmpfs.sizeMb"), format!("sizeMb must be positive (is {size})"));
        }
    }
}

fn check_healthcheck(errs: &mut Errors, f: &str, h: &HealthcheckSpec) {
    match h.test.first().map(String::as_str) {
        None => errs.required(
            format!("{f}.test"),
            "test is required, e.g. [\"CMD\", \"wget\", \"-q\", \"-O-\", \"http://localhost/\"]",
        ),
        Some("CMD") if h.test.len() < 2 => errs.invalid(format!("{f}.test"), "CMD needs a command after it"),
        Some("CMD-SHELL") if h.test.len() != 2 => {
            errs.invalid(format!("{f}.test"), "CMD-SHELL takes exactly one shell command string")
        }
        Some("CMD" | "CMD-SHELL" | "NONE") => {}
        Some(other) => errs.push(
            format!("{f}.test[0]"),
            FieldErrorReason::NotSupported,
            format!("{other:?} is not supported: start test with CMD, CMD-SHELL or NONE"),
        ),
    }
    for (name, v, min) in [
        ("intervalSeconds", h.interval_seconds, 1),
        ("timeoutSeconds", h.timeout_seconds, 1),
        ("retries", h.retries, 0),
        ("startPeriodSeconds", h.start_period_seconds, 0),
    ] {
        if let Some(v) = v
            && v < min
        {
            errs.invalid(format!("{f}.{name}"), format!("{name} must be at least {min} (is {v})"));
        }
    }
}

fn check_resources(errs: &mut Errors, f: &str, r: &ResourcesSpec) {
    if let Some(c) = r.cpus
        && !(c > 0.0 && c <= 1024.0)
    {
        errs.invalid(format!("{f}.cpus"), format!("cpus must be greater than 0 and at most 1024 (is {c})"));
    }
    if let Some(m) = r.memory_mb
        && m < 6
    {
        errs.invalid(format!("{f}.memoryMb"), format!("memoryMb must be at least 6, Docker's minimum (is {m})"));
    }
    if let Some(p) = r.pids
        && p < 1
    {
        errs.invalid(format!("{f}.pids"), format!("pids must be at least 1 (is {p})"));
    }
}

fn check_security(errs: &mut Errors, f: &str, s: &SecuritySpec) {
    for (list, name) in [(&s.cap_add, "capAdd"), (&s.cap_drop, "capDrop")] {
        for (k, cap) in list.iter().enumerate() {
            let c = cap.strip_prefix("CAP_").unwrap_or(cap);
            if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_') {
                errs.invalid(
                    format!("{f}.{name}[{k}]"),
                    format!("{cap:?} is not a capability name (uppercase, e.g. NET_BIND_SERVICE or ALL)"),
                );
            }
        }
    }
    for (k, cap) in s.cap_add.iter().enumerate() {
        if s.cap_drop.iter().any(|d| d == cap) && cap != "ALL" {
            errs.invalid(format!("{f}.capAdd[{k}]"), format!("{cap} is both added and dropped"));
        }
    }
}

fn check_user_labels(errs: &mut Errors, f: &str, labels: &BTreeMap<String, String>) {
    for key in labels.keys() {
        if key.is_empty() {
            errs.required(f.to_string(), "label keys must not be empty");
        } else if key.starts_with(RESERVED_LABEL_PREFIX) {
            errs.push(
                format!("{f}[{key}]"),
                FieldErrorReason::Forbidden,
                format!("labels under {RESERVED_LABEL_PREFIX} are reserved for berth's bookkeeping"),
            );
        }
    }
}

/// Every semantic problem of a Stack.
pub fn validate_stack(stack: &Stack) -> Vec<FieldError> {
    let mut errs = Errors::default();
    check_metadata_name(&mut errs, stack.metadata.name.as_deref(), false);
    let spec = &stack.spec;

    if let Some(hosts) = &spec.hosts {
        for (i, n) in hosts.names.iter().enumerate() {
            if let Some(p) = dns_subdomain_problem(n) {
                errs.invalid(format!("spec.hosts.names[{i}]"), p);
            }
        }
    }

    let mut network_names = BTreeSet::new();
    for (i, n) in spec.networks.iter().enumerate() {
        check_label_name(&mut errs, &format!("spec.networks[{i}].name"), &n.name);
        if !n.name.is_empty() && !network_names.insert(n.name.as_str()) {
            errs.duplicate(format!("spec.networks[{i}].name"), format!("network {} is declared twice", n.name));
        }
    }
    let mut volume_names = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        check_label_name(&mut errs, &format!("spec.volumes[{i}].name"), &v.name);
        if !v.name.is_empty() && !volume_names.insert(v.name.as_str()) {
            errs.duplicate(format!("spec.volumes[{i}].name"), format!("volume {} is declared twice", v.name));
        }
    }

    if let Some(r) = &spec.rollout {
        if let Some(p) = r.max_parallel
            && p < 1
        {
            errs.invalid("spec.rollout.maxParallel", format!("maxParallel must be at least 1 (is {p})"));
        }
        if let Some(t) = r.health_timeout_seconds
            && t < 1
        {
            errs.invalid(
                "spec.rollout.healthTimeoutSeconds",
                format!("healthTimeoutSeconds must be at least 1 (is {t})"),
            );
        }
    }
    let start_first = spec.rollout.as_ref().is_some_and(|r| r.strategy == RolloutStrategy::StartFirst);

    if spec.services.is_empty() {
        errs.required("spec.services", "a Stack needs at least one service");
    }
    let mut service_index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in spec.services.iter().enumerate() {
        let f = format!("spec.services[{i}]");
        check_label_name(&mut errs, &format!("{f}.name"), &s.name);
        if !s.name.is_empty() && service_index.insert(s.name.as_str(), i).is_some() {
            errs.duplicate(format!("{f}.name"), format!("service {} is declared twice", s.name));
        }
    }

    let mut fixed_host_ports = HashMap::new();
    for (i, s) in spec.services.iter().enumerate() {
        let f = format!("spec.services[{i}]");
        check_image(&mut errs, &format!("{f}.image"), &s.image);
        if s.replicas < 0 {
            errs.invalid(format!("{f}.replicas"), format!("replicas must not be negative (is {})", s.replicas));
        } else if s.replicas > MAX_REPLICAS {
            errs.invalid(
                format!("{f}.replicas"),
                format!("replicas must be at most {MAX_REPLICAS} (is {})", s.replicas),
            );
        }
        if let Some(wd) = &s.working_dir {
            check_absolute_path(&mut errs, &format!("{f}.workingDir"), wd, "workingDir");
        }
        check_env(&mut errs, &f, &s.env);
        check_ports(&mut errs, &f, &s.ports, s.replicas, &mut fixed_host_ports);
        if start_first && s.ports.iter().any(|p| p.host_port.is_some_and(|hp| hp > 0)) {
            errs.invalid(
                format!("{f}.ports"),
                "rollout strategy StartFirst runs old and new containers side by side, which a fixed hostPort \
                 does not allow; use Recreate or omit hostPort",
            );
        }
        check_mounts(&mut errs, &f, &s.mounts, &volume_names);
        let mut attached = BTreeSet::new();
        for (j, n) in s.networks.iter().enumerate() {
            if !network_names.contains(n.name.as_str()) {
                errs.push(
                    format!("{f}.networks[{j}].name"),
                    FieldErrorReason::NotSupported,
                    format!("network {:?} is not declared in spec.networks", n.name),
                );
            }
            if !attached.insert(n.name.as_str()) {
                errs.duplicate(format!("{f}.networks[{j}].name"), format!("network {} is joined twice", n.name));
            }
            for (k, a) in n.aliases.iter().enumerate() {
                if let Some(p) = dns_subdomain_problem(a) {
                    errs.invalid(format!("{f}.networks[{j}].aliases[{k}]"), p);
                }
            }
        }
        if let Some(h) = &s.healthcheck {
            check_healthcheck(&mut errs, &format!("{f}.healthcheck"), h);
        }
        if let Some(r) = &s.resources {
            check_resources(&mut errs, &format!("{f}.resources"), r);
        }
        if let Some(sec) = &s.security {
            check_security(&mut errs, &format!("{f}.security"), sec);
        }
        if let Some(g) = s.stop_grace_period_seconds
            && g < 0
        {
            errs.invalid(format!("{f}.stopGracePeriodSeconds"), format!("must not be negative (is {g})"));
        }
        check_user_labels(&mut errs, &format!("{f}.labels"), &s.labels);
        if let Some(l) = &s.logging {
            for (name, v) in [("maxSizeMb", l.max_size_mb), ("maxFiles", l.max_files)] {
                if let Some(v) = v
                    && v < 1
                {
                    errs.invalid(format!("{f}.logging.{name}"), format!("{name} must be at least 1 (is {v})"));
                }
            }
        }
        let mut deps = BTreeSet::new();
        for (j, d) in s.depends_on.iter().enumerate() {
            let df = format!("{f}.dependsOn[{j}].service");
            match service_index.get(d.service.as_str()) {
                None => errs.push(
                    df,
                    FieldErrorReason::NotSupported,
                    format!("service {:?} does not exist in this Stack", d.service),
                ),
                Some(&k) if k == i => errs.invalid(df, "a service cannot depend on itself"),
                Some(&k) => {
                    if !deps.insert(d.service.as_str()) {
                        errs.duplicate(df, format!("{} is listed twice", d.service));
                    } else if d.condition == DependencyCondition::Healthy && spec.services[k].healthcheck.is_none() {
                        errs.invalid(
                            format!("{f}.dependsOn[{j}].condition"),
                            format!(
                                "condition Healthy needs a healthcheck on service {:?}; add one there or use Started",
                                d.service
                            ),
                        );
                    }
                }
            }
        }
    }
    check_dependency_cycles(&mut errs, stack, &service_index);
    errs.0
}

/// Reports each `dependsOn` cycle once, at the first service of the cycle (in spec order).
fn check_dependency_cycles(errs: &mut Errors, stack: &Stack, index: &BTreeMap<&str, usize>) {
    let services = &stack.spec.services;
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; services.len()];
    let mut reported: BTreeSet<BTreeSet<usize>> = BTreeSet::new();
    fn visit(
        i: usize,
        services: &[crate::stack::ServiceSpec],
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
        cycles: &mut Vec<Vec<usize>>,
    ) {
        state[i] = 1;
        path.push(i);
        for d in &services[i].depends_on {
            let Some(&k) = index.get(d.service.as_str()) else { continue };
            if k == i {
                continue; // reported as self-dependency
            }
            match state[k] {
                0 => visit(k, services, index, state, path, cycles),
                1 => {
                    let start = path.iter().position(|&p| p == k).unwrap_or(0);
                    cycles.push(path[start..].to_vec());
                }
                _ => {}
            }
        }
        path.pop();
        state[i] = 2;
    }
    let mut cycles = Vec::new();
    for i in 0..services.len() {
        if state[i] == 0 {
            visit(i, services, index, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        let members: BTreeSet<usize> = cycle.iter().copied().collect();
        if !reported.insert(members) {
            continue;
        }
        let first = *cycle.iter().min().unwrap_or(&0);
        let mut names: Vec<&str> = cycle.iter().map(|&k| services[k].name.as_str()).collect();
        names.push(services[cycle[0]].name.as_str());
        errs.invalid(
            format!("spec.services[{first}].dependsOn"),
            format!("dependsOn forms a cycle: {}; remove one of these dependencies", names.join(" -> ")),
        );
    }
}

/// Every semantic problem of a Lease (operator policy — SKUs, allowlist, quotas — is checked by
/// the server, which knows the configuration).
pub fn validate_lease(lease: &Lease) -> Vec<FieldError> {
    let mut errs = Errors::default();
    check_metadata_name(&mut errs, lease.metadata.name.as_deref(), false);
    let spec = &lease.spec;
    check_label_name(&mut errs, "spec.tenant", &spec.tenant);
    check_label_name(&mut errs, "spec.sku", &spec.sku);
    match (&spec.duration, &spec.expires_at) {
        (Some(_), Some(_)) => errs.invalid("spec.duration", "set either duration or expiresAt, not both"),
        // Neither: the Lease lives for the operator's `leases.defaultDuration`.
        (None, None) => {}
        (Some(d), None) => match parse_duration(d) {
            Ok(d) if d.is_zero() => errs.invalid("spec.duration", "duration must be positive"),
            Ok(_) => {}
            Err(e) => errs.invalid("spec.duration", e),
        },
        (None, Some(_)) => {}
    }
    if spec.services.is_empty() {
        errs.required("spec.services", "a Lease needs at least one service");
    }
    let mut names = BTreeSet::new();
    for (i, s) in spec.services.iter().enumerate() {
        let f = format!("spec.services[{i}]");
        check_label_name(&mut errs, &format!("{f}.name"), &s.name);
        if !s.name.is_empty() && !names.insert(s.name.as_str()) {
            errs.duplicate(format!("{f}.name"), format!("service {} is declared twice", s.name));
        }
        check_image(&mut errs, &format!("{f}.image"), &s.image);
        if !(1..=MAX_QUANTITY).contains(&s.quantity) {
            errs.invalid(
                format!("{f}.quantity"),
                format!("quantity must be between 1 and {MAX_QUANTITY} (is {})", s.quantity),
            );
        }
        check_env(&mut errs, &f, &s.env);
        let mut ports = BTreeSet::new();
        for (j, p) in s.ports.iter().enumerate() {
            check_port_number(&mut errs, &format!("{f}.ports[{j}].containerPort"), p.container_port, false);
            if !ports.insert((p.container_port, p.protocol)) {
                errs.duplicate(
                    format!("{f}.ports[{j}].containerPort"),
                    format!("port {} is listed twice", p.container_port),
                );
            }
        }
        let mut vols = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for (j, v) in s.volumes.iter().enumerate() {
            check_label_name(&mut errs, &format!("{f}.volumes[{j}].name"), &v.name);
            if !vols.insert(v.name.as_str()) {
                errs.duplicate(format!("{f}.volumes[{j}].name"), format!("volume {} is declared twice", v.name));
            }
            check_absolute_path(&mut errs, &format!("{f}.volumes[{j}].mountPath"), &v.mount_path, "mountPath");
            if !paths.insert(v.mount_path.as_str()) {
                errs.duplicate(format!("{f}.volumes[{j}].mountPath"), format!("{} is mounted twice", v.mount_path));
            }
        }
    }
    if let Some(r) = &spec.restore_from {
        check_label_name(&mut errs, "spec.restoreFrom", r);
        if Some(r.as_str()) == lease.metadata.name.as_deref() {
            errs.invalid("spec.restoreFrom", "a Lease cannot restore from itself");
        }
    }
    if let Some(cb) = &spec.callback {
        let ok = (cb.url.starts_with("http://") || cb.url.starts_with("https://"))
            && cb.url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
            && !cb.url.chars().any(char::is_whitespace);
        if !ok {
            errs.invalid("spec.callback.url", format!("{:?} is not an http:// or https:// URL", cb.url));
        }
        if let Some(sel) = &cb.secret_ref {
            check_key_selector(&mut errs, "spec.callback.secretRef", &sel.name, &sel.key);
        }
    }
    errs.0
}

/// Every semantic problem of a Host.
pub fn validate_host(host: &Host) -> Vec<FieldError> {
    let mut errs = Errors::default();
    check_metadata_name(&mut errs, host.metadata.name.as_deref(), true);
    let spec = &host.spec;
    let ep = spec.endpoint.as_str();
    if ep.is_empty() {
        errs.required(
            "spec.endpoint",
            "an endpoint is required, e.g. unix:///var/run/docker.sock or tcp://10.0.0.5:2376",
        );
    } else if let Some(path) = ep.strip_prefix("unix://") {
        check_absolute_path(&mut errs, "spec.endpoint", path, "the socket path");
    } else if let Some(addr) = ep.strip_prefix("tcp://") {
        let port_ok =
            addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            errs.invalid("spec.endpoint", format!("{ep:?} must be tcp://HOST:PORT"));
        }
    } else if let Some(rest) = ep.strip_prefix("ssh://") {
        if rest.is_empty() || rest.starts_with('@') || rest.ends_with('@') {
            errs.invalid("spec.endpoint", format!("{ep:?} must be ssh://[USER@]HOST[:PORT]"));
        }
    } else {
        errs.push(
            "spec.endpoint",
            FieldErrorReason::NotSupported,
            format!("{ep:?} has an unsupported scheme: use unix://, tcp:// or ssh://"),
        );
    }
    if let Some(tls) = &spec.tls {
        if !ep.starts_with("tcp://") {
            errs.invalid("spec.tls", "TLS material applies only to tcp:// endpoints");
        }
        for (name, v) in [("caFile", &tls.ca_file), ("certFile", &tls.cert_file), ("keyFile", &tls.key_file)] {
            if let Some(p) = v {
                check_absolute_path(&mut errs, &format!("spec.tls.{name}"), p, name);
            }
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            errs.invalid("spec.tls", "certFile and keyFile go together");
        }
    }
    if let Some(c) = &spec.capacity {
        if let Some(v) = c.cpus
            && v <= 0.0
        {
            errs.invalid("spec.capacity.cpus", format!("must be positive (is {v})"));
        }
        for (name, v) in [("memoryMb", c.memory_mb), ("diskMb", c.disk_mb)] {
            if let Some(v) = v
                && v <= 0
            {
                errs.invalid(format!("spec.capacity.{name}"), format!("must be positive (is {v})"));
            }
        }
    }
    errs.0
}

#[cfg(test)]
mod tests;
