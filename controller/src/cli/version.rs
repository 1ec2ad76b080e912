//! `berth version`: the client's version and the server's (`/version`), like `kubectl version`.

use std::io::Write;

use serde_json::{Value, json};

use super::client::{self, ConnectArgs, Session};
use super::printer;

/// Arguments of `berth version`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  berth version             # client and server
  berth version --client    # this binary only (no server needed)
  berth version -o json")]
pub struct VersionArgs {
    /// Print only the client version.
    #[arg(long)]
    pub client: bool,
    /// Output format: yaml or json.
    #[arg(short, long, value_name = "FORMAT", value_parser = ["yaml", "json"])]
    pub output: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// This binary's version.
pub fn client_version() -> Value {
    json!({"berthVersion": env!("CARGO_PKG_VERSION"), "gitVersion": format!("v{}", env!("CARGO_PKG_VERSION"))})
}

/// `Server Version: …` text for a `/version` document.
pub fn server_line(v: &Value) -> String {
    let git = v.get("gitVersion").and_then(Value::as_str).unwrap_or("unknown");
    match v.get("berthVersion").and_then(Value::as_str) {
        Some(b) => format!("Server Version: v{b} (berth; Kubernetes API {git})"),
        None => format!("Server Version: {git} (Kubernetes)"),
    }
}

async fn server_version(session: &Session) -> anyhow::Result<Value> {
    let req = http::Request::get("/version").body(Vec::new())?;
    let text = session.client.request_text(req).await?;
    Ok(serde_json::from_str(&text)?)
}

/// Runs `berth version`.
pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let client = client_version();
    if args.client {
        return print(&args, &client, None, &mut out);
    }
    let session = client::connect(&args.connect).await?;
    match server_version(&session).await {
        Ok(server) => print(&args, &client, Some(&server), &mut out),
        Err(e) => {
            // The client version is still worth printing, as kubectl does.
            if args.output.is_none() {
                writeln!(out, "Client Version: v{}", env!("CARGO_PKG_VERSION"))?;
            }
            Err(session.explain(e))
        }
    }
}

fn print(args: &VersionArgs, client: &Value, server: Option<&Value>, out: &mut impl Write) -> anyhow::Result<()> {
    let mut doc = json!({"clientVersion": client});
    if let Some(s) = server {
        doc["serverVersion"] = s.clone();
    }
    match args.output.as_deref() {
        Some("json") => write!(out, "{}", printer::json(&doc)?)?,
        Some(_) => write!(out, "{}", printer::yaml(&doc)?)?,
        None => {
            writeln!(out, "Client Version: v{}", env!("CARGO_PKG_VERSION"))?;
            if let Some(s) = server {
                writeln!(out, "{}", server_line(s))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_line_names_berth_or_kubernetes() {
        let berth = crate::apiserver::discovery::version();
        let line = server_line(&berth);
        assert!(line.starts_with(&format!("Server Version: v{} (berth", env!("CARGO_PKG_VERSION"))), "{line}");
        assert_eq!(server_line(&json!({"gitVersion": "v1.32.4"})), "Server Version: v1.32.4 (Kubernetes)");
    }
}
