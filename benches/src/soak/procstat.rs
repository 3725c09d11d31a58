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
