//! The client side of `scale conns`: `n` connections opened at once (up to 512 connecting
//! at a time), each timed from the start of its connect to the first byte echoed back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// One connection: connect, one byte out, the same byte back.
async fn one(addr: SocketAddr) -> Result<(TcpStream, Duration), String> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"x").await.map_err(|e| format!("write: {e}"))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok((s, start.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Opens `n` connections to `addr` and holds them; prints one JSON line when all are
/// open (first-byte percentiles, failures), waits for a line on stdin, closes them all and
/// prints a second JSON line (how many were still open, i.e. echoed a second byte).
///
/// # Errors
///
/// When stdin or stdout fail.
pub async fn run(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    let crate_limit = super::raise_fd_limit();
    let gate = Arc::new(Semaphore::new(512));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await;
                tokio::time::timeout(Duration::from_secs(120), one(addr))
                    .await
                    .unwrap_or_else(|_| Err("no first byte in 120 s".into()))
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut times = Vec::new();
    let mut failures: std::collections::BTreeMap<String, u64> = Default::default();
    for t in tasks {
        match t.await {
            Ok(Ok((s, d))) => {
                held.push(s);
                times.push(d);
            }
            Ok(Err(e)) => *failures.entry(e).or_default() += 1,
            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    times.sort();
    let pct = |p: f64| -> Value {
        if times.is_empty() {
            return Value::Null;
        }
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        json!(ms(times[i]))
    };
    println!(
        "{}",
        json!({"open": held.len(), "first_byte_ms": {"p50": pct(0.5), "p99": pct(0.99),
               "max": pct(1.0)}, "failures": failures, "client_fd_limit": crate_limit})
    );
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    // Every held connection still echoes.
    let mut alive = 0u64;
    for s in &mut held {
        let ok = async {
            s.write_all(b"y").await.ok()?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.ok()
        };
        if tokio::time::timeout(Duration::from_secs(10), ok)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            alive += 1;
        }
    }
    drop(held);
    println!("{}", json!({"connections": n, "still_echoing": alive}));
    Ok(())
}
