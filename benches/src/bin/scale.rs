//! `scale`: the limits of one `kforward run`, measured against a testkit cluster; one JSON
//! object per measurement on stdout. See `kforward_benches::scale`.
//!
//! `cargo build --release -p kforward-benches -p kforward-cli && target/release/scale forwards 1000`
//! `target/release/scale conns 10000`

use anyhow::{Context, bail};
use kforward_benches::scale;

const USAGE: &str = "usage: scale forwards [N]     N forwards in one kforward run (default 1000)
       scale conns [N]        N concurrent connections through one forward (default 10000)
kforward is taken from beside this binary, or from $KFORWARD";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kforward = match std::env::var_os("KFORWARD") {
        Some(p) => p.into(),
        None => std::env::current_exe()?.with_file_name("kforward"),
    };
    let n = |default: usize| -> anyhow::Result<usize> {
        match args.get(1) {
            Some(v) => v.parse().with_context(|| format!("N {v}")),
            None => Ok(default),
        }
    };
    let v = match args.first().map(String::as_str) {
        Some("forwards") => scale::forwards(&kforward, n(1000)?).await?,
        Some("conns") => scale::conns(&kforward, n(10_000)?).await?,
        // The client side of `conns`, in a process of its own.
        Some("clients") => {
            let addr = args.get(1).context("clients ADDR N")?.parse()?;
            let count = args.get(2).context("clients ADDR N")?.parse()?;
            return scale::clients::run(addr, count).await;
        }
        // The pods' echo servers of `conns`, in a process of their own.
        Some("pods") => {
            let addrs = args[1..]
                .iter()
                .map(|a| a.parse().with_context(|| format!("pods ADDR...: {a}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            return scale::pods::run(&addrs).await;
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => bail!("{USAGE}"),
    };
    println!("{v}");
    Ok(())
}
