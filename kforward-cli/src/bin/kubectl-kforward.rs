//! `kubectl-kforward`: the same program, installed as a kubectl plugin (`kubectl kforward`).

fn main() -> std::process::ExitCode {
    kforward_cli::main("kubectl kforward")
}
