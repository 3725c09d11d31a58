//! The `kforward` command line: argument parsing and output over `kforward-core`.

mod args;
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod forward;
mod output;
mod proxy;
mod relay;
mod run;
mod signal;
mod socks;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

pub use args::{Cli, Command};

/// Runs the program as `bin_name` (`kforward`, or `kubectl kforward` as a plugin) and
/// returns its exit code: 0 on success, 1 on an error (printed as `error: ...` with its
/// causes on stderr), 2 on a usage error.
pub fn main(bin_name: &str) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, bin_name)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("Caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .try_init();
}

async fn run(cli: Cli, bin_name: &str) -> anyhow::Result<()> {
    match cli.command {
        Command::Forward(a) => forward::run(a).await,
        Command::Run(a) => run::run(a).await,
        #[cfg(feature = "demo")]
        Command::Demo(a) => demo::run(a).await,
        Command::Proxy(a) => proxy::run(a).await,
        Command::Socks(a) => socks::run(a).await,
        Command::Gc(a) => proxy::gc(a).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let name = bin_name.replace(' ', "-");
            clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
            Ok(())
        }
    }
}
