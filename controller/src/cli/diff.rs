//! `berth diff`: what `apply` would change, as a unified diff of each live object and the object
//! `apply` would write (same merge rule), without status and server bookkeeping. Exit status as
//! kubectl's: 0 no differences, 1 differences, 2 or more an error.

use std::io::Write;
use std::path::PathBuf;

use similar::TextDiff;

use super::client::{self, ConnectArgs, Session};
use super::follow;
use super::manifest::{self, Document, Input, NamespaceRule};
use super::merge;
use super::printer;
use super::resources;
use crate::apiserver::registry::ResourceClass;

/// Arguments of `berth diff`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth diff -f manifests/            # what `berth apply -f manifests/` would change
  berth diff -f stack.yaml || echo \"drift or pending changes\"

Exit status: 0 no differences, 1 differences found, 2 an error (as with kubectl diff).")]
pub struct DiffArgs {
    /// File, directory or `-` (stdin) to compare; repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace for documents that name none.
    #[arg(short, long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `berth diff`.
pub async fn run(args: DiffArgs) -> anyhow::Result<()> {
    let result = async {
        let inputs = manifest::read_inputs(&args.files, args.recursive)?;
        let session = client::connect(&args.connect).await?;
        let mut out = std::io::stdout().lock();
        exec(&session, &args, &inputs, &mut out).await.map_err(|e| session.explain(e))
    }
    .await;
    match result {
        Ok(false) => Ok(()),
        Ok(true) => Err(anyhow::Error::new(super::Exit::Silent(1))),
        Err(e) => {
            // 1 means "different"; errors must be told apart in scripts.
            eprintln!("{}", client::render_error(&e));
            Err(anyhow::Error::new(super::Exit::Silent(2)))
        }
    }
}

/// Unified diff of two texts with headers, empty when they are equal.
pub fn unified(left: &str, right: &str, left_name: &str, right_name: &str) -> String {
    if left == right {
        return String::new();
    }
    TextDiff::from_lines(left, right).unified_diff().context_radius(3).header(left_name, right_name).to_string()
}

fn yaml_of(v: &serde_json::Value) -> anyhow::Result<String> {
    printer::yaml(&merge::diff_view(v))
}

/// Prints the diffs; returns whether anything differs.
pub async fn exec(session: &Session, args: &DiffArgs, inputs: &[Input], out: &mut impl Write) -> anyhow::Result<bool> {
    let rule = NamespaceRule {
        default: args.namespace.clone().unwrap_or_else(|| session.namespace.clone()),
        enforce: args.namespace.is_some(),
    };
    let docs = manifest::prepare(inputs, &rule)?;
    let mut differs = false;
    for doc in &docs {
        let text = diff_one(session, doc).await?;
        if !text.is_empty() {
            differs = true;
            write!(out, "{text}")?;
        }
    }
    Ok(differs)
}

async fn diff_one(session: &Session, doc: &Document) -> anyhow::Result<String> {
    let api = resources::api(&session.client, &doc.info, doc.namespace.as_deref());
    let secret = doc.info.class == ResourceClass::Secret;
    let applied = merge::normalize(secret, doc.object.clone());
    let live = api.get_opt(&doc.name).await?.map(follow::to_value);
    let (left, right) = match &live {
        Some(l) => (yaml_of(l)?, yaml_of(&merge::merged(secret, l, &applied))?),
        None => (String::new(), yaml_of(&applied)?),
    };
    let path = match &doc.namespace {
        Some(ns) => format!("{}/{ns}/{}", resources::type_name(&doc.info), doc.name),
        None => format!("{}/{}", resources::type_name(&doc.info), doc.name),
    };
    let (left_name, right_name) = (format!("live/{path}"), format!("applied/{path}"));
    if secret {
        // Values of Secrets are never printed: show which keys change, not to what.
        return Ok(secret_key_diff(live.as_ref(), &applied, &left_name, &right_name));
    }
    Ok(unified(&left, &right, &left_name, &right_name))
}

fn secret_key_diff(
    live: Option<&serde_json::Value>,
    applied: &serde_json::Value,
    left_name: &str,
    right_name: &str,
) -> String {
    let mask = |v: &serde_json::Value| {
        let mut v = merge::diff_view(v);
        if let Some(data) = v.get_mut("data").and_then(serde_json::Value::as_object_mut) {
            for (_, value) in data.iter_mut() {
                let digest = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(value.to_string().as_bytes())[..6]);
                *value = serde_json::Value::from(format!("(value hidden, digest {digest})"));
            }
        }
        printer::yaml(&v).unwrap_or_default()
    };
    let left = live.map(mask).unwrap_or_default();
    let right = match live {
        Some(l) => mask(&merge::merged(true, l, applied)),
        None => mask(applied),
    };
    unified(&left, &right, left_name, right_name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\n", "a\n", "l", "r"), "");
    }

    #[test]
    fn unified_diff_has_headers_and_changed_lines() {
        let d = unified("spec:\n  image: a:1\n", "spec:\n  image: a:2\n", "live/x", "applied/x");
        assert!(d.starts_with("--- live/x\n+++ applied/x\n"), "{d}");
        assert!(d.contains("-  image: a:1\n+  image: a:2\n"), "{d}");
    }

    #[test]
    fn secret_diffs_never_show_values() {
        let live = json!({"kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}});
        let applied = json!({"kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "czNjcjN0"}});
        let d = secret_key_diff(Some(&live), &applied, "l", "r");
        assert!(d.contains("password") && d.contains("digest"), "{d}");
        assert!(!d.contains("aHVudGVyMg") && !d.contains("czNjcjN0"), "{d}");
        assert_eq!(secret_key_diff(Some(&live), &live, "l", "r"), "");
    }
}
