//! A process's resident memory and open file descriptors, read from `/proc` (Linux).

/// One sample of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Resident set size in MiB (`VmRSS` of `/proc/PID/status`).
    pub rss_mib: f64,
    /// Entries of `/proc/PID/fd`.
    pub fds: usize,
}

/// Samples process `pid`; `None` when it is gone or `/proc` is not there.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(ProcSample {
        rss_mib: kib / 1024.0,
        fds,
    })
}

/// How many established TCP connections process `pid` has to `port` on any address (to
/// the API server: its SPDY sessions, watches and spare connection), from the socket
/// inodes of `/proc/PID/fd` and the tables of `/proc/PID/net/tcp` and `tcp6`; `None`
/// when `/proc` cannot be read.
pub fn connections_to(pid: u32, port: u16) -> Option<usize> {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        // Columns (proc(5)): sl local_address rem_address st ... inode; addresses are
        // HEXIP:HEXPORT, state 01 is ESTABLISHED, the inode is the tenth column.
        n += text
            .lines()
            .skip(1)
            .filter(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let remote_port = cols
                    .get(2)
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                let inode = cols.get(9).and_then(|i| i.parse::<u64>().ok());
                remote_port == Some(port)
                    && cols.get(3) == Some(&"01")
                    && inode.is_some_and(|i| inodes.contains(&i))
            })
            .count();
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process_connections_to_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let pid = std::process::id();
        assert_eq!(connections_to(pid, port), Some(0));
        let _a = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _b = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        // The accepted ends are ours too, but their remote port is the clients'.
        let _c = listener.accept().expect("accept");
        assert_eq!(connections_to(pid, port), Some(2));
    }
}
