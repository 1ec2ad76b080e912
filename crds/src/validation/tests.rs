//! One case per rule, each starting from a valid object and breaking exactly one thing.

use super::*;
use crate::common::{EnvVarSource, SecretKeySelector, TmpfsSpec};
use crate::host::{HostCapacity, HostSpec, HostTls};
use crate::lease::{CallbackSpec, LeasePort, LeaseService, LeaseSpec};
use crate::stack::{
    Dependency, HostSelection, NetworkSpec, RolloutSpec, ServiceNetwork, ServiceSpec, StackSpec, VolumeSpec,
};
use crate::{Protocol, common::HealthcheckSpec};

fn valid_stack() -> Stack {
    let mut s = Stack::new(
        "shop",
        StackSpec {
            hosts: Some(HostSelection { names: vec!["local".into()], selector: None }),
            networks: vec![NetworkSpec { name: "back".into(), internal: false }],
            volumes: vec![VolumeSpec { name: "data".into(), retain: true }],
            services: vec![
                ServiceSpec {
                    name: "db".into(),
                    image: "berth-e2e/busybox:latest".into(),
                    replicas: 1,
                    env: vec![EnvVar {
                        name: "PASSWORD".into(),
                        value: None,
                        value_from: Some(EnvVarSource {
                            secret_key_ref: Some(SecretKeySelector {
                                name: "db".into(),
                                key: "password".into(),
                                optional: false,
                            }),
                            config_map_key_ref: None,
                        }),
                    }],
                    mounts: vec![
                        MountSpec {
                            mount_path: "/data".into(),
                            volume: Some("data".into()),
                            host_path: None,
                            tmpfs: None,
                            read_only: false,
                        },
                        MountSpec {
                            mount_path: "/tmp".into(),
                            volume: None,
                            host_path: None,
                            tmpfs: Some(TmpfsSpec { size_mb: Some(16) }),
                            read_only: false,
                        },
                    ],
                    networks: vec![ServiceNetwork { name: "back".into(), aliases: vec!["database".into()] }],
                    healthcheck: Some(HealthcheckSpec {
                        test: vec!["CMD".into(), "true".into()],
                        interval_seconds: Some(1),
                        timeout_seconds: Some(1),
                        retries: Some(3),
                        start_period_seconds: None,
                    }),
                    ..Default::default()
                },
                ServiceSpec {
                    name: "web".into(),
                    image: "berth-e2e/busybox:latest".into(),
                    replicas: 1,
                    ports: vec![PortSpec {
                        container_port: 80,
                        host_port: Some(18080),
                        protocol: Protocol::Tcp,
                        host_ip: Some("127.0.0.1".into()),
                    }],
                    depends_on: vec![Dependency { service: "db".into(), condition: DependencyCondition::Healthy }],
                    networks: vec![ServiceNetwork { name: "back".into(), aliases: vec![] }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    );
    s.metadata.namespace = Some("default".into());
    s
}

/// Applies `mutate` to a valid Stack and expects exactly the `(field, reason)` listed.
fn check_stack(mutate: impl FnOnce(&mut Stack), expected: &[(&str, FieldErrorReason)]) {
    let mut s = valid_stack();
    mutate(&mut s);
    let got: Vec<(String, FieldErrorReason)> = validate_stack(&s).into_iter().map(|e| (e.field, e.reason)).collect();
    let want: Vec<(String, FieldErrorReason)> = expected.iter().map(|(f, r)| (f.to_string(), *r)).collect();
    assert_eq!(got, want);
}

use FieldErrorReason::*;

#[test]
fn valid_stack_has_no_errors() {
    check_stack(|_| {}, &[]);
}

#[test]
fn stack_name_must_be_a_dns_label() {
    check_stack(|s| s.metadata.name = Some("Shop_1".into()), &[("metadata.name", Invalid)]);
    check_stack(|s| s.metadata.name = None, &[("metadata.name", Required)]);
    check_stack(|s| s.metadata.name = Some("a".repeat(64)), &[("metadata.name", Invalid)]);
}

#[test]
fn service_names_are_unique_dns_labels() {
    check_stack(
        |s| s.spec.services[1].name = "db".into(),
        &[
            ("spec.services[1].name", Duplicate),
            // web's own dependency on db now points at itself.
            ("spec.services[1].dependsOn[0].service", Invalid),
        ],
    );
    check_stack(
        |s| s.spec.services[0].name = "DB".into(),
        &[("spec.services[0].name", Invalid), ("spec.services[1].dependsOn[0].service", NotSupported)],
    );
}

#[test]
fn stack_needs_a_service() {
    check_stack(|s| s.spec.services.clear(), &[("spec.services", Required)]);
}

#[test]
fn image_must_be_a_reference() {
    check_stack(|s| s.spec.services[0].image = String::new(), &[("spec.services[0].image", Required)]);
    check_stack(|s| s.spec.services[0].image = "Not An Image".into(), &[("spec.services[0].image", Invalid)]);
}

#[test]
fn replicas_must_be_in_range() {
    check_stack(|s| s.spec.services[0].replicas = -1, &[("spec.services[0].replicas", Invalid)]);
    check_stack(|s| s.spec.services[0].replicas = 101, &[("spec.services[0].replicas", Invalid)]);
    check_stack(|s| s.spec.services[0].replicas = 0, &[]);
}

#[test]
fn ports_must_be_in_range_and_unique() {
    check_stack(
        |s| s.spec.services[1].ports[0].container_port = 70000,
        &[("spec.services[1].ports[0].containerPort", Invalid)],
    );
    check_stack(
        |s| s.spec.services[1].ports[0].container_port = 0,
        &[("spec.services[1].ports[0].containerPort", Invalid)],
    );
    check_stack(
        |s| s.spec.services[1].ports[0].host_port = Some(-5),
        &[("spec.services[1].ports[0].hostPort", Invalid)],
    );
    check_stack(
        |s| s.spec.services[1].ports[0].host_ip = Some("localhost".into()),
        &[("spec.services[1].ports[0].hostIP", Invalid)],
    );
    check_stack(
        |s| {
            let p = s.spec.services[1].ports[0].clone();
            s.spec.services[1].ports.push(p);
        },
        &[("spec.services[1].ports[1].containerPort", Duplicate), ("spec.services[1].ports[1].hostPort", Duplicate)],
    );
    check_stack(
        |s| s.spec.services[0].ports = s.spec.services[1].ports.clone(),
        &[("spec.services[1].ports[0].hostPort", Duplicate)],
    );
    // The same port over UDP does not collide.
    check_stack(
        |s| {
            let mut p = s.spec.services[1].ports[0].clone();
            p.protocol = Protocol::Udp;
            s.spec.services[1].ports.push(p);
        },
        &[],
    );
}

#[test]
fn fixed_host_port_allows_one_replica() {
    check_stack(|s| s.spec.services[1].replicas = 2, &[("spec.services[1].ports[0].hostPort", Invalid)]);
    check_stack(
        |s| {
            s.spec.services[1].replicas = 2;
            s.spec.services[1].ports[0].host_port = None;
        },
        &[],
    );
}

#[test]
fn start_first_refuses_fixed_host_ports() {
    check_stack(
        |s| s.spec.rollout = Some(RolloutSpec { strategy: RolloutStrategy::StartFirst, ..Default::default() }),
        &[("spec.services[1].ports", Invalid)],
    );
}

#[test]
fn rollout_numbers_must_be_positive() {
    check_stack(
        |s| {
            s.spec.rollout =
                Some(RolloutSpec { max_parallel: Some(0), health_timeout_seconds: Some(0), ..Default::default() })
        },
        &[("spec.rollout.maxParallel", Invalid), ("spec.rollout.healthTimeoutSeconds", Invalid)],
    );
}

#[test]
fn mount_needs_exactly_one_source() {
    check_stack(
        |s| s.spec.services[0].mounts[0].host_path = Some("/srv/x".into()),
        &[("spec.services[0].mounts[0]", Invalid)],
    );
    check_stack(|s| s.spec.services[0].mounts[0].volume = None, &[("spec.services[0].mounts[0]", Invalid)]);
}

#[test]
fn mount_paths_are_absolute_and_unique() {
    check_stack(
        |s| s.spec.services[0].mounts[0].mount_path = "data".into(),
        &[("spec.services[0].mounts[0].mountPath", Invalid)],
    );
    check_stack(
        |s| s.spec.services[0].mounts[1].mount_path = "/data/".into(),
        &[("spec.services[0].mounts[1].mountPath", Duplicate)],
    );
    check_stack(
        |s| {
            s.spec.services[0].mounts[0].volume = None;
            s.spec.services[0].mounts[0].host_path = Some("/srv/../etc".into());
        },
        &[("spec.services[0].mounts[0].hostPath", Invalid)],
    );
}

#[test]
fn mounted_volume_must_be_declared() {
    check_stack(|s| s.spec.volumes.clear(), &[("spec.services[0].mounts[0].volume", NotSupported)]);
}

#[test]
fn tmpfs_size_must_be_positive() {
    check_stack(
        |s| s.spec.services[0].mounts[1].tmpfs = Some(TmpfsSpec { size_mb: Some(0) }),
        &[("spec.services[0].mounts[1].tmpfs.sizeMb", Invalid)],
    );
}

#[test]
fn networks_and_volumes_are_unique_and_referenced() {
    check_stack(
        |s| s.spec.networks.push(NetworkSpec { name: "back".into(), internal: true }),
        &[("spec.networks[1].name", Duplicate)],
    );
    check_stack(
        |s| s.spec.volumes.push(VolumeSpec { name: "data".into(), retain: false }),
        &[("spec.volumes[1].name", Duplicate)],
    );
    check_stack(
        |s| s.spec.services[1].networks[0].name = "front".into(),
        &[("spec.services[1].networks[0].name", NotSupported)],
    );
    check_stack(
        |s| s.spec.services[0].networks[0].aliases = vec!["Bad_Alias".into()],
        &[("spec.services[0].networks[0].aliases[0]", Invalid)],
    );
}

#[test]
fn env_needs_exactly_one_source() {
    check_stack(|s| s.spec.services[0].env[0].value = Some("x".into()), &[("spec.services[0].env[0]", Invalid)]);
    check_stack(|s| s.spec.services[0].env[0].value_from = None, &[("spec.services[0].env[0].value", Required)]);
    check_stack(
        |s| {
            let e = s.spec.services[0].env[0].clone();
            s.spec.services[0].env.push(e);
        },
        &[("spec.services[0].env[1].name", Duplicate)],
    );
    check_stack(
        |s| s.spec.services[0].env[0].value_from.as_mut().unwrap().secret_key_ref.as_mut().unwrap().key = String::new(),
        &[("spec.services[0].env[0].valueFrom.secretKeyRef.key", Required)],
    );
    check_stack(|s| s.spec.services[0].env[0].name = "A=B".into(), &[("spec.services[0].env[0].name", Invalid)]);
}

#[test]
fn healthcheck_test_must_be_well_formed() {
    check_stack(
        |s| s.spec.services[0].healthcheck.as_mut().unwrap().test = vec![],
        &[("spec.services[0].healthcheck.test", Required)],
    );
    check_stack(
        |s| s.spec.services[0].healthcheck.as_mut().unwrap().test = vec!["RUN".into(), "x".into()],
        &[("spec.services[0].healthcheck.test[0]", NotSupported)],
    );
    check_stack(
        |s| s.spec.services[0].healthcheck.as_mut().unwrap().interval_seconds = Some(0),
        &[("spec.services[0].healthcheck.intervalSeconds", Invalid)],
    );
}

#[test]
fn resources_must_be_positive() {
    check_stack(
        |s| s.spec.services[0].resources = Some(ResourcesSpec { cpus: Some(0.0), memory_mb: Some(2), pids: Some(0) }),
        &[
            ("spec.services[0].resources.cpus", Invalid),
            ("spec.services[0].resources.memoryMb", Invalid),
            ("spec.services[0].resources.pids", Invalid),
        ],
    );
}

#[test]
fn capabilities_are_names() {
    check_stack(
        |s| {
            s.spec.services[0].security = Some(SecuritySpec { cap_add: vec!["net_admin".into()], ..Default::default() })
        },
        &[("spec.services[0].security.capAdd[0]", Invalid)],
    );
    check_stack(
        |s| {
            s.spec.services[0].security = Some(SecuritySpec {
                cap_add: vec!["CHOWN".into()],
                cap_drop: vec!["CHOWN".into()],
                ..Default::default()
            })
        },
        &[("spec.services[0].security.capAdd[0]", Invalid)],
    );
}

#[test]
fn reserved_labels_are_forbidden() {
    check_stack(
        |s| {
            s.spec.services[0].labels.insert("berth.dev/owner-name".into(), "x".into());
        },
        &[("spec.services[0].labels[berth.dev/owner-name]", Forbidden)],
    );
}

#[test]
fn depends_on_must_name_a_service() {
    check_stack(
        |s| s.spec.services[1].depends_on[0].service = "cache".into(),
        &[("spec.services[1].dependsOn[0].service", NotSupported)],
    );
    check_stack(
        |s| {
            s.spec.services[0].depends_on =
                vec![Dependency { service: "db".into(), condition: DependencyCondition::Started }]
        },
        &[("spec.services[0].dependsOn[0].service", Invalid)],
    );
}

#[test]
fn healthy_dependency_needs_a_healthcheck() {
    check_stack(|s| s.spec.services[0].healthcheck = None, &[("spec.services[1].dependsOn[0].condition", Invalid)]);
}

#[test]
fn depends_on_cycles_are_reported_once() {
    check_stack(
        |s| {
            s.spec.services[0].depends_on =
                vec![Dependency { service: "web".into(), condition: DependencyCondition::Started }]
        },
        &[("spec.services[0].dependsOn", Invalid)],
    );
    let mut s = valid_stack();
    s.spec.services[0].depends_on = vec![Dependency { service: "web".into(), condition: DependencyCondition::Started }];
    let msg = validate_stack(&s).remove(0).message;
    assert!(msg.contains("db -> web -> db") || msg.contains("web -> db -> web"), "{msg}");
}

#[test]
fn three_service_cycle_is_found() {
    check_stack(
        |s| {
            let mut third = s.spec.services[1].clone();
            third.name = "cache".into();
            third.ports.clear();
            third.depends_on = vec![Dependency { service: "web".into(), condition: DependencyCondition::Started }];
            s.spec.services.push(third);
            s.spec.services[0].depends_on =
                vec![Dependency { service: "cache".into(), condition: DependencyCondition::Started }];
        },
        &[("spec.services[0].dependsOn", Invalid)],
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let mut s = valid_stack();
    s.spec.services[0].replicas = -3;
    s.spec.services[1].ports[0].container_port = 0;
    s.spec.services[0].mounts[0].volume = None;
    assert_eq!(validate_stack(&s).len(), 3);
}

fn valid_lease() -> Lease {
    let mut l = Lease::new(
        "pr-1234",
        LeaseSpec {
            tenant: "acme".into(),
            sku: "small".into(),
            duration: Some("2h".into()),
            services: vec![LeaseService {
                name: "app".into(),
                image: "ghcr.io/acme/app:pr-1234".into(),
                ports: vec![LeasePort { container_port: 8080, protocol: Protocol::Tcp }],
                quantity: 1,
                ..Default::default()
            }],
            callback: Some(CallbackSpec {
                url: "https://hooks.acme.example/berth".into(),
                secret_ref: Some(SecretKeySelector {
                    name: "acme-callback".into(),
                    key: "hmac".into(),
                    optional: false,
                }),
            }),
            ..Default::default()
        },
    );
    l.metadata.namespace = Some("previews".into());
    l
}

fn check_lease(mutate: impl FnOnce(&mut Lease), expected: &[(&str, FieldErrorReason)]) {
    let mut l = valid_lease();
    mutate(&mut l);
    let got: Vec<(String, FieldErrorReason)> = validate_lease(&l).into_iter().map(|e| (e.field, e.reason)).collect();
    let want: Vec<(String, FieldErrorReason)> = expected.iter().map(|(f, r)| (f.to_string(), *r)).collect();
    assert_eq!(got, want);
}

#[test]
fn valid_lease_has_no_errors() {
    check_lease(|_| {}, &[]);
}

#[test]
fn lease_needs_tenant_sku_and_at_most_one_expiry() {
    check_lease(|l| l.spec.tenant = String::new(), &[("spec.tenant", Required)]);
    check_lease(|l| l.spec.sku = "Small!".into(), &[("spec.sku", Invalid)]);
    // Neither duration nor expiresAt: the operator's leases.defaultDuration applies.
    check_lease(|l| l.spec.duration = None, &[]);
    check_lease(
        |l| {
            l.spec.duration = None;
            l.spec.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        },
        &[],
    );
    check_lease(|l| l.spec.duration = Some("two hours".into()), &[("spec.duration", Invalid)]);
    check_lease(|l| l.spec.duration = Some("0s".into()), &[("spec.duration", Invalid)]);
    check_lease(
        |l| l.spec.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH)),
        &[("spec.duration", Invalid)],
    );
}

#[test]
fn lease_services_are_checked() {
    check_lease(|l| l.spec.services.clear(), &[("spec.services", Required)]);
    check_lease(|l| l.spec.services[0].quantity = 0, &[("spec.services[0].quantity", Invalid)]);
    check_lease(|l| l.spec.services[0].quantity = 21, &[("spec.services[0].quantity", Invalid)]);
    check_lease(
        |l| l.spec.services[0].ports[0].container_port = 65536,
        &[("spec.services[0].ports[0].containerPort", Invalid)],
    );
    check_lease(
        |l| {
            let s = l.spec.services[0].clone();
            l.spec.services.push(s);
        },
        &[("spec.services[1].name", Duplicate)],
    );
    check_lease(|l| l.spec.services[0].image = "ghcr.io/Acme/app".into(), &[("spec.services[0].image", Invalid)]);
}

#[test]
fn lease_callback_and_restore_are_checked() {
    check_lease(|l| l.spec.callback.as_mut().unwrap().url = "ftp://x".into(), &[("spec.callback.url", Invalid)]);
    check_lease(|l| l.spec.restore_from = Some("pr-1234".into()), &[("spec.restoreFrom", Invalid)]);
    check_lease(|l| l.spec.restore_from = Some("pr-1200".into()), &[]);
}

fn check_host(spec: HostSpec, expected: &[(&str, FieldErrorReason)]) {
    let h = Host::new("edge-1.example", spec);
    let got: Vec<(String, FieldErrorReason)> = validate_host(&h).into_iter().map(|e| (e.field, e.reason)).collect();
    let want: Vec<(String, FieldErrorReason)> = expected.iter().map(|(f, r)| (f.to_string(), *r)).collect();
    assert_eq!(got, want);
}

#[test]
fn host_endpoints_are_checked() {
    let ep = |e: &str| HostSpec { endpoint: e.into(), ..Default::default() };
    check_host(ep("unix:///var/run/docker.sock"), &[]);
    check_host(ep("tcp://10.0.0.5:2376"), &[]);
    check_host(ep("ssh://ops@edge-1"), &[]);
    check_host(ep(""), &[("spec.endpoint", Required)]);
    check_host(ep("http://x"), &[("spec.endpoint", NotSupported)]);
    check_host(ep("tcp://10.0.0.5"), &[("spec.endpoint", Invalid)]);
    check_host(ep("unix://docker.sock"), &[("spec.endpoint", Invalid)]);
    check_host(
        HostSpec {
            tls: Some(HostTls { ca_file: Some("/ca.pem".into()), ..Default::default() }),
            ..ep("unix:///d.sock")
        },
        &[("spec.tls", Invalid)],
    );
    check_host(
        HostSpec {
            capacity: Some(HostCapacity { cpus: Some(0.0), memory_mb: Some(-1), disk_mb: None }),
            ..ep("tcp://h:1")
        },
        &[("spec.capacity.cpus", Invalid), ("spec.capacity.memoryMb", Invalid)],
    );
}
