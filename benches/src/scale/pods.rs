//! The pods' side of `scale conns`: echo servers bound to the pods' own addresses, in a
//! process of their own.
//!
//! The testkit runs its images' servers in its own process, so every forwarded connection
//! costs that process two descriptors (the kubelet's connection to the pod and the pod's
//! accepted socket). At 10,000 connections that is the whole hard limit of a machine
//! without `CAP_SYS_RESOURCE`. Here the pods run the testkit's `sleep` image (nothing
//! listens) and this process, standing for their containers, binds each pod's IP and port
//! and echoes: the kubelet still connects to the pod's address as it does on a node, and
//! each side holds one descriptor per connection.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Echoes one connection until the peer ends it, then closes.
async fn echo(mut s: TcpStream) {
    let (mut r, mut w) = s.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

/// Binds every address, prints `listening` once all are bound, echoes every connection
/// until stdin closes (the parent exited or is done).
///
/// # Errors
///
/// When an address cannot be bound.
pub async fn run(addrs: &[SocketAddr]) -> anyhow::Result<()> {
    super::raise_fd_limit();
    let mut listeners = Vec::new();
    for a in addrs {
        let bind = || -> std::io::Result<TcpListener> {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.set_reuseaddr(true)?;
            s.bind(*a)?;
            // A burst of connects must not overflow the accept queue (Go's, and so a
            // real server's, backlog is the kernel's maximum).
            s.listen(4096)
        };
        listeners.push(bind().map_err(|e| anyhow::anyhow!("bind {a}: {e}"))?);
    }
    for l in listeners {
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(echo(s));
                    }
                    // Out of descriptors: the parent's report shows the failed
                    // connections; keep serving the ones open.
                    Err(e) => {
                        eprintln!("accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    println!("listening");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = stdin.next_line().await {}
    Ok(())
}
