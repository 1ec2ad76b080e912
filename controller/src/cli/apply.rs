//! `berth apply`: create or update the objects of files, directories or stdin, in dependency
//! order, after every document has been validated; optionally prune objects carrying a label
//! selector that the input no longer holds, behind guards against deleting a fleet by mistake.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use serde_json::Value;

use super::client::{self, ConnectArgs, Session};
use super::follow;
use super::manifest::{self, Document, Input, NamespaceRule, ObjectKey};
use super::merge;
use super::progress::Progress;
use super::resources;
use super::wait::{self, WaitFor};
use crate::apiserver::registry::{ResourceClass, ResourceInfo};

/// Arguments of `berth apply`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth apply -f stack.yaml                     # one file (any number of documents)
  berth apply -f manifests/ -R                  # every .yaml/.yml/.json below a directory
  cat stack.yaml | berth apply -f -             # from stdin
  berth apply -f manifests/ --dry-run=server    # let the server check everything, change nothing
  berth apply -f deploy/ --prune -l app=shop    # GitOps: also delete app=shop objects no longer in deploy/
  berth apply -f stack.yaml --wait --timeout 5m # then wait until what was applied is Ready

Every document is checked (schema and berth's rules) before anything is sent; a problem in one
document stops the whole apply, naming the file, the document, the object and the field.")]
pub struct ApplyArgs {
    /// File, directory or `-` (stdin) to apply; repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace for documents that name none; documents naming another one are refused.
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Show what would happen without changing anything: `client` (decided here) or `server`
    /// (every request checked by the server, nothing stored).
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: Option<DryRun>,
    /// Delete objects that match --selector and are not in the input.
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector of the objects the input owns (with --prune), e.g. `app=shop`.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Refuse to prune more than this many objects unless --force is given.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub prune_max: usize,
    /// Prune even when more than --prune-max objects would be deleted.
    #[arg(long)]
    pub force: bool,
    /// After applying, wait until every applied Stack, Lease and Host is Ready.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits in total.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    berth_crds::duration::parse_duration(s)
}

/// `--dry-run` modes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRun {
    /// Decide locally what would happen; send no write.
    Client,
    /// Send every write with `dryRun=All`: the server validates and admits, stores nothing.
    Server,
}

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and nothing changed.
    Unchanged,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
        }
    }
}

fn dry_suffix(dry: Option<DryRun>) -> &'static str {
    match dry {
        None => "",
        Some(DryRun::Client) => " (dry run)",
        Some(DryRun::Server) => " (server dry run)",
    }
}

/// A live object that prune may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneCandidate {
    /// Identity.
    pub key: ObjectKey,
    /// uid, so the delete cannot hit an object re-created meanwhile.
    pub uid: String,
}

/// The live objects carrying the selector that the input does not hold, in deletion order
/// (workloads before the Secrets, ConfigMaps and Hosts they use). Objects already being deleted
/// are left alone.
pub fn prune_candidates(live: &[(ObjectKey, String, bool)], input: &BTreeSet<ObjectKey>) -> Vec<PruneCandidate> {
    let mut out: Vec<PruneCandidate> = live
        .iter()
        .filter(|(key, _, deleting)| !deleting && !input.contains(key))
        .map(|(key, uid, _)| PruneCandidate { key: key.clone(), uid: uid.clone() })
        .collect();
    out.sort_by(|a, b| {
        let rank = |k: &ObjectKey| std::cmp::Reverse(resources::apply_rank(&k.group, &k.kind));
        rank(&a.key).cmp(&rank(&b.key)).then_with(|| a.key.cmp(&b.key))
    });
    out
}

/// The documents that do not carry the prune selector's labels.
pub fn not_selected<'a>(docs: &'a [Document], selector: &str) -> anyhow::Result<Vec<&'a Document>> {
    let parsed = crate::store::LabelSelector::parse(selector)
        .map_err(|e| super::usage(format!("invalid selector {selector:?}: {e}")))?;
    Ok(docs
        .iter()
        .filter(|d| {
            let labels: std::collections::BTreeMap<String, String> = d
                .object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            !parsed.matches(&labels)
        })
        .collect())
}

/// Why prune refuses to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneRefusal {
    /// The input holds no object: an empty or wrong checkout would delete everything selected.
    EmptyInput,
    /// More objects would go than `--prune-max` allows.
    TooMany {
        /// How many would be deleted.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The prune guards. `--force` lifts the count limit, never the empty-input one: deleting every
/// selected object on purpose is `berth delete KIND -l SELECTOR`.
pub fn check_prune(input_objects: usize, candidates: usize, max: usize, force: bool) -> Result<(), PruneRefusal> {
    if input_objects == 0 {
        return Err(PruneRefusal::EmptyInput);
    }
    if candidates > max && !force {
        return Err(PruneRefusal::TooMany { count: candidates, max });
    }
    Ok(())
}

fn refusal_message(refusal: &PruneRefusal, selector: &str, candidates: &[String]) -> String {
    match refusal {
        PruneRefusal::EmptyInput => format!(
            "refusing to prune: the input holds no object, so every object labelled {selector} would be deleted \
             ({} now). Check the path and the checkout; to delete them on purpose, use `berth delete KIND -l {selector}`. \
             Nothing was applied or deleted",
            candidates.len()
        ),
        PruneRefusal::TooMany { count, max } => format!(
            "refusing to prune {count} objects (more than --prune-max {max}):\n  {}\nCheck that the input is complete; \
             pass --force (or a larger --prune-max) to delete them. Nothing was applied or deleted",
            candidates.join("\n  ")
        ),
    }
}

/// The kinds prune looks at: berth's kinds and the Secrets and ConfigMaps they use. Namespaces
/// and Events are never pruned.
fn prunable(info: &ResourceInfo) -> bool {
    matches!(info.class, ResourceClass::Custom | ResourceClass::Secret | ResourceClass::ConfigMap)
}

/// Runs `berth apply`.
pub async fn run(args: ApplyArgs) -> anyhow::Result<()> {
    // Local files first: a wrong path is reported before any connection problem.
    let inputs = manifest::read_inputs(&args.files, args.recursive)?;
    let session = client::connect(&args.connect).await?;
    let mut out = std::io::stdout().lock();
    exec(&session, &args, &inputs, &mut out).await.map_err(|e| session.explain(e))
}

/// `berth apply` of `inputs` against a session.
pub async fn exec(session: &Session, args: &ApplyArgs, inputs: &[Input], out: &mut impl Write) -> anyhow::Result<()> {
    let rule = NamespaceRule {
        default: args.namespace.clone().unwrap_or_else(|| session.namespace.clone()),
        enforce: args.namespace.is_some(),
    };
    let docs = manifest::prepare(inputs, &rule)?;
    if let (true, Some(selector)) = (args.prune, &args.selector) {
        for d in not_selected(&docs, selector)? {
            eprintln!(
                "warning: {} does not match the prune selector {selector}: it is applied, but a later \
                 `--prune -l {selector}` will never delete it",
                d.display()
            );
        }
    }

    // Decide what prune would delete before changing anything, so a refusal leaves the server
    // exactly as it was.
    let prune = match (&args.prune, &args.selector) {
        (true, Some(selector)) => {
            let candidates = find_prune_candidates(session, &docs, selector, args.namespace.as_deref()).await?;
            let names: Vec<String> = candidates.iter().map(candidate_display).collect();
            if let Err(refusal) = check_prune(docs.len(), candidates.len(), args.prune_max, args.force) {
                anyhow::bail!(refusal_message(&refusal, selector, &names));
            }
            candidates
        }
        _ => Vec::new(),
    };
    if docs.is_empty() {
        anyhow::bail!("no objects passed to apply: the input holds no document");
    }

    let mut failures = Vec::new();
    for doc in &docs {
        match apply_one(session, doc, args.dry_run).await {
            Ok(outcome) => writeln!(out, "{} {}{}", doc.display(), outcome.as_str(), dry_suffix(args.dry_run))?,
            Err(e) => failures.push(format!("{}: {}: {}", doc.file, doc.display(), client::render_error(&e))),
        }
        out.flush()?;
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{f}");
        }
        anyhow::bail!(
            "{} of {} objects could not be applied{}",
            failures.len(),
            docs.len(),
            if prune.is_empty() { "" } else { "; nothing was pruned" }
        );
    }
    if let (false, Some(selector)) = (prune.is_empty(), &args.selector) {
        let names: Vec<String> = prune.iter().map(candidate_display).collect();
        write!(out, "{}", prune_announcement(&names, selector, args.dry_run))?;
        out.flush()?;
    }
    for c in &prune {
        prune_one(session, c, args.dry_run).await?;
        writeln!(out, "{} pruned{}", candidate_display(c), dry_suffix(args.dry_run))?;
    }
    if args.wait && args.dry_run.is_none() {
        let deadline = tokio::time::Instant::now() + args.timeout;
        let mut progress = Progress::stdout();
        let ready = WaitFor::Condition { type_: "Ready".into(), status: "True".into() };
        for doc in docs.iter().filter(|d| d.info.class == ResourceClass::Custom) {
            let ns = doc.namespace.clone().unwrap_or_default();
            wait::wait_one(session, &doc.info, &ns, &doc.name, &ready, deadline, args.timeout, &mut progress, out)
                .await?;
        }
    }
    Ok(())
}

/// What prune is about to delete, said before the first deletion.
pub fn prune_announcement(names: &[String], selector: &str, dry: Option<DryRun>) -> String {
    let count = if names.len() == 1 { "1 object".to_string() } else { format!("{} objects", names.len()) };
    let mut text = format!("pruning {count} labelled {selector} that the input no longer holds{}:\n", dry_suffix(dry));
    for n in names {
        text.push_str(&format!("  {n}\n"));
    }
    text
}

fn candidate_display(c: &PruneCandidate) -> String {
    let info = resources::registry().find_kind(&c.key.group, &c.key.kind);
    let name = info.map(|i| resources::display_name(&i, &c.key.name)).unwrap_or_else(|| c.key.name.clone());
    if c.key.namespace.is_empty() { name } else { format!("{name} (namespace {})", c.key.namespace) }
}

async fn find_prune_candidates(
    session: &Session,
    docs: &[Document],
    selector: &str,
    explicit_ns: Option<&str>,
) -> anyhow::Result<Vec<PruneCandidate>> {
    // Like kubectl: namespaced kinds are pruned in the namespaces the input touches (and the one
    // given with -n); cluster-scoped kinds everywhere.
    let mut namespaces: BTreeSet<String> = docs.iter().filter_map(|d| d.namespace.clone()).collect();
    if let Some(ns) = explicit_ns {
        namespaces.insert(ns.to_string());
    }
    let lp = ListParams::default().labels(selector);
    let mut live = Vec::new();
    for info in resources::registry().all().iter().filter(|i| prunable(i)) {
        let scopes: Vec<Option<&str>> =
            if info.namespaced { namespaces.iter().map(|n| Some(n.as_str())).collect() } else { vec![None] };
        for ns in scopes {
            let api = resources::api(&session.client, info, ns);
            let (items, _) = follow::list(&api, &lp).await?;
            for item in items {
                let key = ObjectKey {
                    group: info.group.clone(),
                    kind: info.kind.clone(),
                    namespace: item.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string(),
                    name: item.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string(),
                };
                let uid = item.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string();
                let deleting = item.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
                live.push((key, uid, deleting));
            }
        }
    }
    let input: BTreeSet<ObjectKey> = docs.iter().map(Document::key).collect();
    Ok(prune_candidates(&live, &input))
}

async fn prune_one(session: &Session, c: &PruneCandidate, dry: Option<DryRun>) -> anyhow::Result<()> {
    if dry == Some(DryRun::Client) {
        return Ok(());
    }
    let info = resources::registry()
        .find_kind(&c.key.group, &c.key.kind)
        .ok_or_else(|| anyhow::anyhow!("unknown kind {}", c.key.kind))?;
    let ns = (!c.key.namespace.is_empty()).then_some(c.key.namespace.as_str());
    let api = resources::api(&session.client, &info, ns);
    let dp = DeleteParams {
        dry_run: dry == Some(DryRun::Server),
        preconditions: Some(Preconditions { uid: Some(c.uid.clone()), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&c.key.name, &dp).await {
        Ok(_) => Ok(()),
        // Gone already (or replaced by a new object with another uid, which is not ours to delete).
        Err(e) if client::is_not_found(&e) || client::api_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How many times a write is retried when someone else changed the object in between.
const CONFLICT_RETRIES: usize = 5;

/// Creates or updates one object; retries on conflicts with fresh reads.
pub async fn apply_one(session: &Session, doc: &Document, dry: Option<DryRun>) -> anyhow::Result<Outcome> {
    let api = resources::api(&session.client, &doc.info, doc.namespace.as_deref());
    let secret = doc.info.class == ResourceClass::Secret;
    let applied = merge::normalize(secret, doc.object.clone());
    let pp = PostParams { dry_run: dry == Some(DryRun::Server), field_manager: Some("berth".into()) };
    for _ in 0..CONFLICT_RETRIES {
        let live = api.get_opt(&doc.name).await?;
        match live {
            None => {
                if dry == Some(DryRun::Client) {
                    return Ok(Outcome::Created);
                }
                let obj = serde_json::from_value(merge::with_last_applied(secret, &applied))?;
                match api.create(&pp, &obj).await {
                    Ok(_) => return Ok(Outcome::Created),
                    // Created by someone else meanwhile: read it and update instead.
                    Err(e) if client::api_code(&e) == Some(409) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(live) => {
                let live = follow::to_value(live);
                if live.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                    anyhow::bail!(
                        "it is being deleted (finalizers {}); wait with `berth wait --for=delete {}` and apply again",
                        live.pointer("/metadata/finalizers").map(Value::to_string).unwrap_or_default(),
                        doc.display()
                    );
                }
                let merged = merge::merged(secret, &live, &applied);
                if merged == live {
                    return Ok(Outcome::Unchanged);
                }
                if dry == Some(DryRun::Client) {
                    return Ok(Outcome::Configured);
                }
                // `merged` carries the live resourceVersion: the write fails with 409 if the
                // object changed since it was read, and is then redone on a fresh read.
                let obj = serde_json::from_value(merged)?;
                match api.replace(&doc.name, &pp, &obj).await {
                    Ok(_) => return Ok(Outcome::Configured),
                    Err(e) if client::api_code(&e) == Some(409) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    anyhow::bail!("the object kept changing while being applied ({CONFLICT_RETRIES} conflicts in a row); apply again")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, ns: &str, name: &str) -> ObjectKey {
        let group = if matches!(kind, "Secret" | "ConfigMap") { "" } else { berth_crds::GROUP };
        ObjectKey { group: group.into(), kind: kind.into(), namespace: ns.into(), name: name.into() }
    }

    #[test]
    fn prune_selects_live_objects_missing_from_the_input() {
        let live = vec![
            (key("Stack", "default", "web"), "u1".to_string(), false),
            (key("Stack", "default", "old"), "u2".to_string(), false),
            (key("Secret", "default", "old-db"), "u3".to_string(), false),
            (key("Host", "", "edge-9"), "u4".to_string(), false),
            (key("Stack", "default", "going"), "u5".to_string(), true),
            (key("Stack", "other", "web"), "u6".to_string(), false),
        ];
        let input: BTreeSet<ObjectKey> = [key("Stack", "default", "web"), key("Host", "", "edge-1")].into();
        let c = prune_candidates(&live, &input);
        let names: Vec<(&str, &str)> = c.iter().map(|c| (c.key.kind.as_str(), c.key.name.as_str())).collect();
        // Workloads first, then what they use; the one being deleted is left alone; the same
        // name in another namespace is another object.
        assert_eq!(names, [("Stack", "old"), ("Stack", "web"), ("Secret", "old-db"), ("Host", "edge-9")]);
        assert_eq!(c[1].key.namespace, "other");
        assert_eq!(c[0].uid, "u2");
    }

    #[test]
    fn prune_guards() {
        assert_eq!(check_prune(0, 0, 10, false), Err(PruneRefusal::EmptyInput));
        assert_eq!(check_prune(0, 3, 10, true), Err(PruneRefusal::EmptyInput), "--force never prunes everything");
        assert_eq!(check_prune(5, 11, 10, false), Err(PruneRefusal::TooMany { count: 11, max: 10 }));
        assert_eq!(check_prune(5, 11, 10, true), Ok(()));
        assert_eq!(check_prune(5, 10, 10, false), Ok(()));
        assert_eq!(check_prune(1, 0, 0, false), Ok(()));
    }

    #[test]
    fn prune_says_what_it_deletes_before_deleting() {
        let names = ["stack.berth.dev/x1 (namespace default)".to_string(), "configmap/c (namespace default)".into()];
        assert_eq!(
            prune_announcement(&names, "app=shop", None),
            "pruning 2 objects labelled app=shop that the input no longer holds:\n  stack.berth.dev/x1 (namespace \
             default)\n  configmap/c (namespace default)\n"
        );
        assert!(
            prune_announcement(&names[..1], "app=shop", Some(DryRun::Client))
                .starts_with("pruning 1 object labelled app=shop that the input no longer holds (dry run):")
        );
    }

    #[test]
    fn refusals_say_what_would_go_and_what_to_do() {
        let m = refusal_message(&PruneRefusal::TooMany { count: 2, max: 1 }, "app=shop", &["a".into(), "b".into()]);
        assert!(m.contains("  a\n  b") && m.contains("--force") && m.contains("Nothing was applied"), "{m}");
        let m = refusal_message(&PruneRefusal::EmptyInput, "app=shop", &["a".into()]);
        assert!(m.contains("holds no object") && m.contains("berth delete KIND -l app=shop"), "{m}");
    }
}

#[cfg(test)]
mod component_tests;
