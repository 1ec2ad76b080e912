//! The `berth` binary: a thin shell over [`berth::cli`].

fn main() -> std::process::ExitCode {
    berth::cli::main()
}
