//! The `berth` command line: argument parsing, the exit-code contract and one module per command.
//!
//! The client commands (`apply`, `get`, `describe`, …) talk to a berth API server (or any
//! Kubernetes API server with berth's CRDs) through a kubeconfig, like kubectl. Their logic is
//! split into pure parts (manifest reading, validation, ordering, merging, prune selection, table
//! rendering), tested without a server, and thin async drivers over `kube::Client`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod apply;
mod client;
mod completion;
mod crd;
mod delete;
mod describe;
mod diff;
mod events;
mod follow;
mod get;
mod logs;
mod manifest;
mod merge;
mod orphans;
mod plan;
mod printer;
mod progress;
mod resources;
mod serve;
mod version;
mod wait;

/// berth: a Kubernetes-style control plane for plain Docker hosts.
///
/// berth keeps Stacks (long-lived services), Leases (ephemeral tenant workloads) and Hosts
/// (Docker daemons) in an API server that kubectl also understands, and converges Docker hosts to
/// them. The client commands find the server through a kubeconfig: --kubeconfig, then
/// $KUBECONFIG, then the one `berth serve` writes into its data directory (.berth/kubeconfig).
#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "berth: a Kubernetes-style control plane for plain Docker hosts.",
    long_about,
    after_help = "Examples:\n  berth serve                              # run the server, controllers and Docker drivers here\n  berth apply -f manifests/                # create or update what the files describe\n  berth get stacks                         # list Stacks in the current namespace\n  berth describe stack/shop                # details, conditions, containers and events\n  berth wait --for=condition=Ready stack/shop --timeout 2m\n  berth plan                               # what the controllers would change, and why\n  berth logs stack/shop -s web -f          # follow the web containers' logs\n\nExit status: 0 success, 1 failure, 2 usage error.\nUse \"berth <command> --help\" for more information about a command."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands, in the order `berth --help` lists them.
#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update resources from files, directories or stdin.
    Apply(apply::ApplyArgs),
    /// List resources, or show one, as a table, YAML, JSON or names.
    Get(get::GetArgs),
    /// Show the details of a resource: spec summary, status, conditions, containers, events.
    Describe(describe::DescribeArgs),
    /// Delete resources by kind and name, by label, or as described in files.
    Delete(delete::DeleteArgs),
    /// Wait until resources meet a condition or are deleted.
    Wait(wait::WaitArgs),
    /// Show what `apply` would change, as a unified diff of live and applied state.
    Diff(diff::DiffArgs),
    /// Show what the controllers would do now (actions, drift tiers, orphans), without doing it.
    Plan(plan::PlanArgs),
    /// Print the logs of a Stack's containers.
    Logs(logs::LogsArgs),
    /// List events, newest last; follow them with -w.
    Events(events::EventsArgs),
    /// List the orphans Hosts found, or confirm their removal (`orphans prune`).
    Orphans(orphans::OrphansArgs),
    /// Run the API server, the controllers and the Docker drivers in one process.
    Serve(Box<serve::ServeArgs>),
    /// Print (or write) the CustomResourceDefinitions of berth's kinds.
    Crd(crd::CrdArgs),
    /// Print the client and server versions.
    Version(version::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(completion::CompletionArgs),
}

/// An error that decides the exit code itself instead of the default 1.
#[derive(Debug)]
pub(crate) enum Exit {
    /// A usage error (exit 2): bad arguments clap could not catch.
    Usage(String),
    /// Exit with this code after the command has printed what it had to say.
    Silent(u8),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(m) => f.write_str(m),
            Self::Silent(code) => write!(f, "exit status {code}"),
        }
    }
}

impl std::error::Error for Exit {}

/// Shorthand for a usage error.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit::Usage(message.into()))
}

/// Runs the CLI and maps the outcome onto berth's exit codes: 0 success, 1 failure, 2 usage.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Apply(args) => client::block_on(apply::run(args)),
        Command::Get(args) => client::block_on(get::run(args)),
        Command::Describe(args) => client::block_on(describe::run(args)),
        Command::Delete(args) => client::block_on(delete::run(args)),
        Command::Wait(args) => client::block_on(wait::run(args)),
        Command::Diff(args) => client::block_on(diff::run(args)),
        Command::Plan(args) => client::block_on(plan::run(args)),
        Command::Logs(args) => client::block_on(logs::run(args)),
        Command::Events(args) => client::block_on(events::run(args)),
        Command::Orphans(args) => client::block_on(orphans::run(args)),
        Command::Version(args) => client::block_on(version::run(args)),
        Command::Completion(args) => completion::run(args, <Cli as clap::CommandFactory>::command()),
        Command::Crd(args) => crd::run(args),
        Command::Serve(args) => serve::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `berth get stacks | head -1`: the reader is gone, which is not the command's failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit::Silent(code)) => ExitCode::from(*code),
            Some(Exit::Usage(message)) => {
                eprintln!("error: {message}");
                eprintln!("See 'berth --help' and 'berth <command> --help' for usage.");
                ExitCode::from(2)
            }
            None => {
                eprintln!("{}", client::render_error(&e));
                ExitCode::from(1)
            }
        },
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example_in_its_help() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let help = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains("Examples:"), "`berth {} --help` has no example", sub.get_name());
            assert!(help.contains(&format!("berth {}", sub.get_name())), "{}: {help}", sub.get_name());
        }
    }

    #[test]
    fn usage_errors_are_reported_by_clap_with_exit_2() {
        let err = Cli::try_parse_from(["berth", "apply"]).unwrap_err();
        assert!(err.use_stderr());
        assert!(err.to_string().contains("--filename"), "{err}");
        let err = Cli::try_parse_from(["berth", "apply", "-f", "x", "--prune"]).unwrap_err();
        assert!(err.to_string().contains("--selector"), "{err}");
    }
}
