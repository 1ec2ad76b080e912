//! The `berth` binary: a thin shell over [`berth::cli`].

/// mimalloc: the API server allocates many small, short-lived JSON values per request; with
/// glibc's allocator a durable create cost about a fifth more CPU (api-bench, 64 clients).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    berth::cli::main()
}
