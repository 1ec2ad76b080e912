//! `berth completion SHELL`: a completion script generated from the command definitions
//! (clap_complete), so it never falls behind the commands.

/// Arguments of `berth completion`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  source <(berth completion bash)                              # bash, this shell
  berth completion bash > /etc/bash_completion.d/berth         # bash, every shell
  berth completion zsh > \"${fpath[1]}/_berth\"                  # zsh
  berth completion fish > ~/.config/fish/completions/berth.fish")]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the script for `args.shell` to stdout.
pub fn run(args: CompletionArgs, mut command: clap::Command) -> anyhow::Result<()> {
    use std::io::Write;
    // Generated into memory first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "berth", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn bash_script_completes_the_commands() {
        let mut buf = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut crate::cli::Cli::command(), "berth", &mut buf);
        let script = String::from_utf8(buf).unwrap();
        assert!(script.contains("complete -F _berth"), "{script}");
        for cmd in ["apply", "get", "describe", "wait", "diff", "plan", "logs", "orphans"] {
            assert!(script.contains(cmd), "{cmd}");
        }
    }

    fn script(shell: clap_complete::Shell) -> String {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut crate::cli::Cli::command(), "berth", &mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn zsh_and_fish_scripts_complete_every_command_and_subcommand() {
        let zsh = script(clap_complete::Shell::Zsh);
        assert!(zsh.starts_with("#compdef berth"), "{zsh}");
        let fish = script(clap_complete::Shell::Fish);
        assert!(fish.contains("complete -c berth"), "{fish}");
        for sub in crate::cli::Cli::command().get_subcommands() {
            let name = sub.get_name();
            assert!(zsh.contains(&format!("'{name}:")), "zsh misses {name}");
            assert!(fish.contains(&format!("-a \"{name}\"")), "fish misses {name}");
        }
        // Nested: `berth orphans prune`.
        assert!(zsh.contains("'prune:") && fish.contains("-a \"prune\""), "prune");
    }
}
