use std::collections::HashMap;

use berth_crds::common::{EnvVar, EnvVarSource, MountSpec, PortSpec, SecretKeySelector};
use berth_crds::stack::{NetworkSpec, ServiceNetwork, StackSpec, VolumeSpec};

use berth_crds::stack::ServiceSpec;

use super::*;

#[derive(Default)]
struct Refs {
    secrets: HashMap<(String, String, String), Vec<u8>>,
}

impl References for Refs {
    fn secret(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        self.secrets.get(&(namespace.into(), name.into(), key.into())).cloned()
    }
    fn config_map(&self, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
}

fn refs(password: &str) -> Refs {
    let mut r = Refs::default();
    r.secrets.insert(("default".into(), "db".into(), "password".into()), password.as_bytes().to_vec());
    r
}

fn stack() -> Stack {
    let mut s = Stack::new(
        "shop",
        StackSpec {
            networks: vec![NetworkSpec { name: "back".into(), internal: false }],
            volumes: vec![VolumeSpec { name: "data".into(), retain: true }],
            services: vec![
                ServiceSpec {
                    name: "db".into(),
                    image: "berth-e2e/busybox:latest".into(),
                    command: Some(vec!["sleep".into(), "1000".into()]),
                    env: vec![
                        EnvVar { name: "B".into(), value: Some("2".into()), value_from: None },
                        EnvVar {
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
                        },
                        EnvVar { name: "A".into(), value: Some("1".into()), value_from: None },
                    ],
                    mounts: vec![MountSpec {
                        mount_path: "/data".into(),
                        volume: Some("data".into()),
                        host_path: None,
                        tmpfs: None,
                        read_only: false,
                    }],
                    networks: vec![ServiceNetwork { name: "back".into(), aliases: vec!["database".into()] }],
                    replicas: 1,
                    ..Default::default()
                },
                ServiceSpec {
                    name: "web".into(),
                    image: "berth-e2e/busybox:latest".into(),
                    ports: vec![PortSpec {
                        container_port: 8080,
                        host_port: Some(18080),
                        protocol: Default::default(),
                        host_ip: None,
                    }],
                    replicas: 2,
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    );
    s.metadata.namespace = Some("default".into());
    s.metadata.uid = Some("uid-1".into());
    s
}

fn ctx<'a>(refs: &'a Refs, instance: &'a str, allowed: &'a [String]) -> RenderContext<'a> {
    RenderContext { instance, hash_key: b"test-key", allowed_host_paths: allowed, references: refs }
}

#[test]
fn golden_hash_is_stable() {
    // If this fails, the canonical encoding changed: every container berth manages would be
    // recreated on upgrade. Change HASH_ENCODING_VERSION deliberately, or undo the change.
    let r = refs("hunter2");
    let d = render(&stack(), &ctx(&r, "default", &[])).unwrap();
    assert_eq!(
        d.services[0].containers[0].config_hash,
        "58e4a34081c8de796921749360d4dcff9bca0dcafb845b3df666b1570655b5fa"
    );
    assert_eq!(
        d.services[1].containers[0].config_hash,
        "3fe04981bb4972316ec82440f55daf259aa953b4160da67d513fe1fd4f28edba"
    );
}

#[test]
fn names_follow_the_stack_prefix() {
    let r = refs("x");
    let d = render(&stack(), &ctx(&r, "default", &[])).unwrap();
    let names: Vec<&str> = d.containers().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["shop-db-0", "shop-web-0", "shop-web-1"]);
    assert_eq!(d.networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["shop_back", "shop_default"]);
    assert_eq!(d.volumes[0].name, "shop_data");
    let mut other = stack();
    other.metadata.namespace = Some("prod".into());
    let mut r = refs("x");
    r.secrets.insert(("prod".into(), "db".into(), "password".into()), b"y".to_vec());
    let d = render(&other, &ctx(&r, "default", &[])).unwrap();
    assert_eq!(d.services[0].containers[0].name, "prod.shop-db-0");
}

#[test]
fn services_without_networks_join_the_default_network_by_name() {
    let r = refs("x");
    let d = render(&stack(), &ctx(&r, "default", &[])).unwrap();
    let web = &d.services[1].containers[0].config;
    assert_eq!(web.networks, [NetworkAttachment { network: "shop_default".into(), aliases: vec!["web".into()] }]);
    let db = &d.services[0].containers[0].config;
    assert_eq!(db.networks[0].aliases, ["database", "db"]);
}

#[test]
fn labels_record_ownership() {
    let r = refs("x");
    let d = render(&stack(), &ctx(&r, "inst-a", &[])).unwrap();
    let c = &d.services[1].containers[1];
    assert_eq!(c.labels[LABEL_MANAGED_BY], "berth");
    assert_eq!(c.labels[LABEL_INSTANCE], "inst-a");
    assert_eq!(c.labels[LABEL_OWNER_KIND], "Stack");
    assert_eq!(c.labels[LABEL_OWNER_UID], "uid-1");
    assert_eq!(c.labels[LABEL_SERVICE], "web");
    assert_eq!(c.labels[LABEL_REPLICA], "1");
    assert_eq!(c.labels[LABEL_CONFIG_HASH], c.config_hash);
}

#[test]
fn secret_values_never_appear_in_the_encoding_or_labels() {
    let r = refs("hunter2");
    let d = render(&stack(), &ctx(&r, "default", &[])).unwrap();
    let c = &d.services[0].containers[0];
    let encoded = serde_json::to_string(&c.config).unwrap();
    assert!(!encoded.contains("hunter2"), "{encoded}");
    assert!(!format!("{:?}", c.labels).contains("hunter2"));
    assert!(c.config.env_values.contains(&"PASSWORD=hunter2".to_string()), "the container still gets the value");
}

#[test]
fn rotating_a_secret_changes_the_hash_of_its_users_only() {
    let (a, b) = (refs("one"), refs("two"));
    let da = render(&stack(), &ctx(&a, "default", &[])).unwrap();
    let db = render(&stack(), &ctx(&b, "default", &[])).unwrap();
    assert_ne!(da.services[0].containers[0].config_hash, db.services[0].containers[0].config_hash);
    assert_eq!(da.services[1].containers[0].config_hash, db.services[1].containers[0].config_hash);
    assert_ne!(da.hash(), db.hash());
}

#[test]
fn bookkeeping_does_not_enter_the_hash() {
    let r = refs("x");
    let a = render(&stack(), &ctx(&r, "inst-a", &[])).unwrap();
    let mut moved = stack();
    moved.metadata.uid = Some("uid-2".into());
    moved.spec.services[1].replicas = 5;
    let b = render(&moved, &ctx(&r, "inst-b", &[])).unwrap();
    assert_eq!(a.services[0].containers[0].config_hash, b.services[0].containers[0].config_hash);
    assert_eq!(a.services[1].containers[0].config_hash, b.services[1].containers[0].config_hash);
}

#[test]
fn env_order_does_not_matter_but_values_do() {
    let r = refs("x");
    let a = render(&stack(), &ctx(&r, "default", &[])).unwrap();
    let mut reordered = stack();
    reordered.spec.services[0].env.reverse();
    let b = render(&reordered, &ctx(&r, "default", &[])).unwrap();
    assert_eq!(a.services[0].containers[0].config_hash, b.services[0].containers[0].config_hash);
    let mut changed = stack();
    changed.spec.services[0].env[0].value = Some("3".into());
    let c = render(&changed, &ctx(&r, "default", &[])).unwrap();
    assert_ne!(a.services[0].containers[0].config_hash, c.services[0].containers[0].config_hash);
}

#[test]
fn missing_secrets_are_reported_unless_optional() {
    let empty = Refs::default();
    let err = render(&stack(), &ctx(&empty, "default", &[])).unwrap_err();
    assert!(matches!(err, RenderError::MissingReference { kind: "Secret", .. }), "{err}");
    let mut optional = stack();
    optional.spec.services[0].env[1].value_from.as_mut().unwrap().secret_key_ref.as_mut().unwrap().optional = true;
    let d = render(&optional, &ctx(&empty, "default", &[])).unwrap();
    assert!(!d.services[0].containers[0].config.env.contains_key("PASSWORD"));
}

#[test]
fn host_paths_must_be_allowed_by_the_operator() {
    let r = refs("x");
    let mut s = stack();
    s.spec.services[1].mounts = vec![MountSpec {
        mount_path: "/x".into(),
        volume: None,
        host_path: Some("/etc/shadow".into()),
        tmpfs: None,
        read_only: true,
    }];
    let err = render(&s, &ctx(&r, "default", &["/srv".to_string()])).unwrap_err();
    assert!(err.to_string().contains("stacks.allowedHostPaths"), "{err}");
    s.spec.services[1].mounts[0].host_path = Some("/srv/shop".into());
    assert!(render(&s, &ctx(&r, "default", &["/srv".to_string()])).is_ok());
    s.spec.services[1].mounts[0].host_path = Some("/srvx".into());
    assert!(render(&s, &ctx(&r, "default", &["/srv".to_string()])).is_err(), "prefixes match whole path components");
    s.spec.services[1].mounts[0].host_path = Some("/srv/../etc".into());
    assert!(render(&s, &ctx(&r, "default", &["/srv".to_string()])).is_err(), "no way out of an allowed prefix");
}

/// A service that sets every field that enters the hash.
fn full_service_stack() -> Stack {
    use berth_crds::common::{HealthcheckSpec, ResourcesSpec, SecuritySpec, TmpfsSpec};
    use berth_crds::stack::{LoggingSpec, RestartPolicy};
    let mut s = stack();
    let svc = &mut s.spec.services[0];
    svc.args = Some(vec!["-x".into()]);
    svc.working_dir = Some("/srv".into());
    svc.user = Some("999:999".into());
    svc.ports = vec![PortSpec {
        container_port: 5432,
        host_port: Some(15432),
        protocol: berth_crds::common::Protocol::Udp,
        host_ip: Some("127.0.0.1".into()),
    }];
    svc.mounts.push(MountSpec {
        mount_path: "/etc/extra".into(),
        volume: None,
        host_path: Some("/srv/shop/extra".into()),
        tmpfs: None,
        read_only: true,
    });
    svc.mounts.push(MountSpec {
        mount_path: "/tmp".into(),
        volume: None,
        host_path: None,
        tmpfs: Some(TmpfsSpec { size_mb: Some(64) }),
        read_only: false,
    });
    svc.healthcheck = Some(HealthcheckSpec {
        test: vec!["CMD".into(), "pg_isready".into()],
        interval_seconds: Some(5),
        timeout_seconds: Some(3),
        retries: Some(5),
        start_period_seconds: Some(10),
    });
    svc.resources = Some(ResourcesSpec { cpus: Some(1.5), memory_mb: Some(512), pids: Some(512) });
    svc.security = Some(SecuritySpec {
        read_only_root_filesystem: true,
        cap_drop: vec!["ALL".into()],
        cap_add: vec!["SETUID".into(), "CHOWN".into()],
        no_new_privileges: true,
        privileged: false,
    });
    svc.restart_policy = RestartPolicy::Always;
    svc.stop_grace_period_seconds = Some(30);
    svc.labels = [("team".to_string(), "data".to_string())].into();
    svc.logging = Some(LoggingSpec { max_size_mb: Some(10), max_files: Some(3) });
    s
}

#[test]
fn golden_hash_of_a_service_using_every_field() {
    // Pins the encoding of every field that enters the hash: an upgrade of berth that changes
    // this value would recreate every such container. Change HASH_ENCODING_VERSION deliberately.
    let r = refs("hunter2");
    let allowed = ["/srv".to_string()];
    let d = render(&full_service_stack(), &ctx(&r, "default", &allowed)).unwrap();
    assert_eq!(
        d.services[0].containers[0].config_hash,
        "9bdbafe95d18f45fc5028e6ce92100c8a35ef8caacb301caf21892eaa751c738"
    );
}

#[test]
fn debug_output_never_shows_environment_values() {
    let r = refs("hunter2");
    let d = render(&stack(), &ctx(&r, "default", &[])).unwrap();
    let shown = format!("{d:?}");
    assert!(!shown.contains("hunter2") && shown.contains("values hidden"), "{shown}");
    assert_eq!(d.secret_values(), ["hunter2"]);
    assert_eq!(redact("login failed for hunter2 at db", &d.secret_values()), "login failed for **** at db");
}
