//! The `berth` command line: argument parsing and one module per command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod crd;
mod serve;

/// berth: a Kubernetes-style control plane for plain Docker hosts.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print (or write) the CustomResourceDefinitions of berth's kinds.
    Crd(crd::CrdArgs),
    /// Run the API server, the controllers and the Docker drivers in one process.
    Serve(Box<serve::ServeArgs>),
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
        Command::Crd(args) => crd::run(args),
        Command::Serve(args) => serve::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
