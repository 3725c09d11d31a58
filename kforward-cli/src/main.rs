//! `kforward`: forward local ports into Kubernetes clusters.

fn main() -> std::process::ExitCode {
    kforward_cli::main("kforward")
}
