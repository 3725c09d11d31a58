//! `kforward`: forward local ports into Kubernetes clusters.

/// jemalloc, not the system allocator: a long-running forward frees and allocates buffers
/// on many threads, and glibc's arenas kept the freed memory (see `Cargo.toml`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    kforward_cli::main("kforward")
}
