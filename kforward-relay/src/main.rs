//! `kforward-relay`: the in-cluster relay. Listens on the pod's loopback only
//! (`127.0.0.1:PORT`), checks each client's token (`KFORWARD_RELAY_TOKEN`), reaches TCP
//! destinations through `HTTPS_PROXY` (or `ALL_PROXY`) unless `NO_PROXY` keeps them direct,
//! and exits on SIGTERM or when no client has been connected for 10 minutes.

use kforward_relay::egress::Egress;
use kforward_relay::server::{
    CancellationToken, DEFAULT_IDLE_EXIT, DEFAULT_PORT, IDLE_EXIT_ENV, RelayServer, RelaySettings,
    SystemResolver, parse_idle_exit,
};

fn usage() -> ! {
    eprintln!(
        "usage: kforward-relay [--port PORT] [--idle-exit SECONDS (decimals allowed)]   (env: KFORWARD_RELAY_PORT, KFORWARD_RELAY_TOKEN, KFORWARD_RELAY_IDLE_EXIT, HTTPS_PROXY, ALL_PROXY, NO_PROXY)"
    );
    std::process::exit(2)
}

fn main() {
    let mut port = std::env::var("KFORWARD_RELAY_PORT").ok();
    let mut idle = std::env::var(IDLE_EXIT_ENV).ok();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next(),
            "--idle-exit" => idle = args.next(),
            _ => usage(),
        }
    }
    let port: u16 = match port.as_deref().map(str::parse) {
        Some(Ok(p)) => p,
        None => DEFAULT_PORT,
        Some(Err(_)) => usage(),
    };
    let idle_exit = match idle.as_deref().map(parse_idle_exit) {
        Some(Some(d)) => d,
        None => DEFAULT_IDLE_EXIT,
        Some(None) => usage(),
    };
    let Ok(token) = std::env::var("KFORWARD_RELAY_TOKEN") else {
        eprintln!("error: KFORWARD_RELAY_TOKEN is not set");
        std::process::exit(2);
    };
    let egress = match Egress::from_env(|k| std::env::var(k).ok()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
                return 1;
            }
        };
        eprintln!("kforward-relay listening on 127.0.0.1:{port}");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
        let settings = RelaySettings::new(token, SystemResolver)
            .with_idle_exit(idle_exit)
            .with_egress(egress);
        RelayServer::serve(listener, settings, shutdown).await;
        0
    });
    std::process::exit(code);
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
