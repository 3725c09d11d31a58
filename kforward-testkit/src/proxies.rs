//! Real proxies for tests: tinyproxy and Squid (HTTP `CONNECT`, Squid also over TLS), and
//! microsocks and Dante (SOCKS5), the Debian packages, each run as its own process with a
//! configuration in a temporary directory.
//!
//! Each listens on loopback and makes its outbound connections from an address of its own
//! ([`RealProxy::outbound_ip`], a random `127.253.x.y`), so that a test can make the API
//! server ([`Cluster::api_only_from`](crate::Cluster::api_only_from)) or external hosts
//! ([`Cluster::egress_only_through`](crate::Cluster::egress_only_through)) accept that
//! address only: a client that got through then went through the proxy.
//!
//! The environment's proxy (`HTTPS_PROXY`) is never used for a loopback server (Go and
//! kforward skip it), so tests of it need an API server on another address:
//! [`non_loopback_address`] puts one from `198.18.0.0/15` (kept for benchmarking networks,
//! RFC 2544) on `lo`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rand::Rng;

/// How long a proxy may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Which proxy program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// tinyproxy: HTTP `CONNECT`; Basic auth answers 407 without credentials and 401 with
    /// wrong ones; a refused upstream is `500 Unable to connect`.
    Tinyproxy,
    /// Squid: HTTP `CONNECT` (407 for missing or wrong credentials, 403 for a denied port,
    /// 503 for a refused upstream), on a TLS port too, and with its own hosts file.
    Squid,
    /// microsocks: SOCKS5 with optional user and password (RFC 1929).
    Microsocks,
    /// Dante: SOCKS5 whose rules can refuse destinations (reply 2).
    Dante,
}

impl ProxyKind {
    fn program(self) -> &'static str {
        match self {
            ProxyKind::Tinyproxy => "tinyproxy",
            ProxyKind::Squid => "squid",
            ProxyKind::Microsocks => "microsocks",
            ProxyKind::Dante => "danted",
        }
    }
}

/// How a proxy is set up.
///
/// # Example
///
/// ```
/// let opts = kforward_testkit::proxies::ProxyOptions::default()
///     .with_auth("alice", "s3cret")
///     .deny_port(444);
/// assert_eq!(opts.auth, Some(("alice".into(), "s3cret".into())));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// A user and password the proxy requires (tinyproxy, Squid, microsocks).
    pub auth: Option<(String, String)>,
    /// Destination ports the proxy refuses: Squid and tinyproxy answer 403 (tinyproxy then
    /// allows only the other ports it was told of: none here, so it refuses every port), Dante
    /// replies 2.
    pub denied_ports: Vec<u16>,
    /// Names the proxy resolves itself (Squid's hosts file).
    pub hosts: Vec<(String, IpAddr)>,
    /// Serve TLS (Squid's `https_port`): the proxy's URL is then `https://`.
    pub tls: bool,
}

impl ProxyOptions {
    /// Requires `user` and `password`.
    #[must_use]
    pub fn with_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Refuses `CONNECT`s to `port`.
    #[must_use]
    pub fn deny_port(mut self, port: u16) -> Self {
        self.denied_ports.push(port);
        self
    }

    /// Resolves `name` to `ip` in the proxy.
    #[must_use]
    pub fn with_host(mut self, name: &str, ip: IpAddr) -> Self {
        self.hosts.push((name.to_string(), ip));
        self
    }

    /// Speaks TLS to clients.
    #[must_use]
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

/// Why a proxy could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The program is not installed.
    #[error("{0} is not installed (Debian package: {0})")]
    Missing(&'static str),
    /// It did not start listening.
    #[error("{program} did not start: {message}")]
    Start {
        /// The program.
        program: &'static str,
        /// What happened, with its log.
        message: String,
    },
}

/// A running proxy process, stopped when dropped.
pub struct RealProxy {
    kind: ProxyKind,
    child: std::process::Child,
    addr: SocketAddr,
    outbound: IpAddr,
    opts: ProxyOptions,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for RealProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealProxy")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .field("outbound", &self.outbound)
            .finish()
    }
}

impl Drop for RealProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kind` with `opts`, or, when its program is missing, fails the test on CI (`CI`
/// set) and returns `None` after a note elsewhere.
///
/// # Panics
///
/// On CI when the program is missing, and whenever it is installed but does not start.
pub async fn start_or_skip(kind: ProxyKind, opts: ProxyOptions) -> Option<RealProxy> {
    match RealProxy::start(kind, opts).await {
        Ok(p) => Some(p),
        Err(ProxyError::Missing(tool)) if std::env::var_os("CI").is_none() => {
            eprintln!("note: skipping a proxy test, {tool} is not installed");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

impl RealProxy {
    /// Starts the proxy and waits until it listens.
    ///
    /// # Errors
    ///
    /// [`ProxyError::Missing`] when the program is not installed, [`ProxyError::Start`] when
    /// it does not listen in time.
    pub async fn start(kind: ProxyKind, opts: ProxyOptions) -> Result<RealProxy, ProxyError> {
        if which(kind.program()).is_none() {
            return Err(ProxyError::Missing(kind.program()));
        }
        let mut last = String::new();
        // A port picked free may be taken before the proxy binds it: try a few.
        for _ in 0..3 {
            match Self::start_once(kind, &opts).await {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(ProxyError::Start {
            program: kind.program(),
            message: last,
        })
    }

    async fn start_once(kind: ProxyKind, opts: &ProxyOptions) -> Result<RealProxy, String> {
        let dir = tempfile::Builder::new()
            .prefix("kforward-proxy-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        // Squid and Dante drop to an unprivileged user that writes its logs here.
        set_mode(dir.path(), 0o777)?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let outbound = {
            let mut rng = rand::rng();
            IpAddr::V4(Ipv4Addr::new(
                127,
                253,
                rng.random_range(1..=254),
                rng.random_range(1..=254),
            ))
        };
        let d = dir.path();
        // A proxy other than Squid resolves names with the system's resolver: give it a
        // private /etc/hosts with the names asked for.
        let mut cmd = if opts.hosts.is_empty() || kind == ProxyKind::Squid {
            std::process::Command::new(kind.program())
        } else {
            let hosts = write_hosts(d, &opts.hosts)?;
            with_hosts_file(kind.program(), &hosts)
        };
        match kind {
            ProxyKind::Tinyproxy => {
                let conf = tinyproxy_conf(d, port, outbound, opts);
                write(&d.join("tinyproxy.conf"), &conf)?;
                cmd.arg("-d").arg("-c").arg(d.join("tinyproxy.conf"));
            }
            ProxyKind::Squid => {
                let conf = squid_conf(d, port, outbound, opts)?;
                write(&d.join("squid.conf"), &conf)?;
                cmd.arg("-N").arg("-f").arg(d.join("squid.conf"));
            }
            ProxyKind::Microsocks => {
                cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
                    .args(["-b", &outbound.to_string()]);
                if let Some((u, p)) = &opts.auth {
                    cmd.args(["-u", u, "-P", p]);
                }
            }
            ProxyKind::Dante => {
                let conf = dante_conf(d, port, outbound, opts);
                write(&d.join("danted.conf"), &conf)?;
                cmd.arg("-f")
                    .arg(d.join("danted.conf"))
                    .arg("-p")
                    .arg(d.join("danted.pid"));
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("stdout.log")).map_err(|e| e.to_string())?)
            .stderr(std::fs::File::create(d.join("stderr.log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", kind.program()))?;
        let mut proxy = RealProxy {
            kind,
            child,
            addr,
            outbound,
            opts: opts.clone(),
            dir,
        };
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(format!("exited ({status}): {}", proxy.logs()));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(proxy);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "not listening on {addr} after {START_TIMEOUT:?}: {}",
                    proxy.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The proxy's URL with its credentials, such as `http://alice:s3cret@127.0.0.1:40123`.
    pub fn url(&self) -> String {
        let creds = match &self.opts.auth {
            Some((u, p)) => format!("{u}:{p}@"),
            None => String::new(),
        };
        format!("{}://{creds}{}", self.scheme(), self.addr)
    }

    /// The proxy's URL without credentials.
    pub fn url_without_auth(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }

    /// `http`, `https` or `socks5`.
    pub fn scheme(&self) -> &'static str {
        match (self.kind, self.opts.tls) {
            (ProxyKind::Microsocks | ProxyKind::Dante, _) => "socks5",
            (_, true) => "https",
            (_, false) => "http",
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address its outbound connections come from.
    pub fn outbound_ip(&self) -> IpAddr {
        self.outbound
    }

    /// The PEM file of the CA that signed a TLS proxy's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.opts.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// Everything the proxy logged so far (access log first), for assertions and failure
    /// messages.
    pub fn logs(&self) -> String {
        let d = self.dir.path();
        [
            "access.log",
            "tinyproxy.log",
            "danted.log",
            "cache.log",
            "stderr.log",
            "stdout.log",
        ]
        .iter()
        .filter_map(|f| std::fs::read_to_string(d.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n")
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    set_mode(path, 0o644)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn tinyproxy_conf(d: &Path, port: u16, outbound: IpAddr, opts: &ProxyOptions) -> String {
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nBind {outbound}\nTimeout 60\nMaxClients 500\n\
         LogFile \"{log}\"\nLogLevel Connect\nPidFile \"{pid}\"\nAllow 127.0.0.0/8\n\
         Allow 198.18.0.0/15\nDisableViaHeader Yes\n",
        log = d.join("tinyproxy.log").display(),
        pid = d.join("tinyproxy.pid").display(),
    );
    if let Some((u, p)) = &opts.auth {
        conf.push_str(&format!("BasicAuth {u} {p}\n"));
    }
    if !opts.denied_ports.is_empty() {
        // tinyproxy allows CONNECT to the listed ports only; a port nothing uses stands for
        // "no port", so every CONNECT is refused with 403.
        conf.push_str("ConnectPort 9\n");
    }
    conf
}

fn squid_conf(
    d: &Path,
    port: u16,
    outbound: IpAddr,
    opts: &ProxyOptions,
) -> Result<String, String> {
    let mut conf = format!("http_port 127.0.0.1:{port}\n");
    if opts.tls {
        let (cert, key) = proxy_certificate(d)?;
        // The client-facing port is TLS only: the listening port is this one.
        conf = format!(
            "https_port 127.0.0.1:{port} tls-cert={} tls-key={}\n",
            cert.display(),
            key.display()
        );
    }
    conf.push_str(&format!("tcp_outgoing_address {outbound}\n"));
    if let Some((u, p)) = &opts.auth {
        let hash = apr1(p)?;
        write(&d.join("passwd"), &format!("{u}:{hash}\n"))?;
        // Credentials first (407), then the rules (403).
        conf.push_str(&format!(
            "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\n\
             auth_param basic realm kforward-test\nacl authed proxy_auth REQUIRED\n\
             http_access deny !authed\n",
            d.join("passwd").display()
        ));
    }
    for p in &opts.denied_ports {
        conf.push_str(&format!(
            "acl denied_port_{p} port {p}\nhttp_access deny denied_port_{p}\n"
        ));
    }
    conf.push_str("http_access allow all\n");
    let hosts: String = opts
        .hosts
        .iter()
        .map(|(name, ip)| format!("{ip} {name}\n"))
        .collect();
    write(&d.join("hosts"), &hosts)?;
    conf.push_str(&format!(
        "hosts_file {hosts}\ncache deny all\naccess_log stdio:{access}\ncache_log {cache}\n\
         pid_filename {pid}\ncoredump_dir {dir}\nshutdown_lifetime 0 seconds\n\
         visible_hostname kforward-test-proxy\npinger_enable off\n",
        hosts = d.join("hosts").display(),
        access = d.join("access.log").display(),
        cache = d.join("cache.log").display(),
        pid = d.join("squid.pid").display(),
        dir = d.display(),
    ));
    Ok(conf)
}

fn dante_conf(d: &Path, port: u16, outbound: IpAddr, opts: &ProxyOptions) -> String {
    let mut conf = format!(
        "logoutput: {log}\ninternal: 127.0.0.1 port = {port}\nexternal: {outbound}\n\
         clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
         client pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}\n",
        log = d.join("danted.log").display(),
    );
    for p in &opts.denied_ports {
        conf.push_str(&format!(
            "socks block {{ from: 0.0.0.0/0 to: 0.0.0.0/0 port = {p} }}\n"
        ));
    }
    conf.push_str("socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\n");
    conf
}

/// A CA and a certificate for `127.0.0.1` and `localhost` signed by it, written to
/// `ca.pem`, `cert.pem` and `key.pem` in `d`; returns the certificate and key paths.
fn proxy_certificate(d: &Path) -> Result<(PathBuf, PathBuf), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let e = |e: rcgen::Error| format!("proxy certificate: {e}");
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.distinguished_name
        .push(DnType::CommonName, "kforward test proxy CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(e)?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(e)?;
    let cert = params.signed_by(&key, &issuer).map_err(e)?;
    write(&d.join("ca.pem"), &ca_cert.pem())?;
    write(&d.join("cert.pem"), &cert.pem())?;
    write(&d.join("key.pem"), &key.serialize_pem())?;
    Ok((d.join("cert.pem"), d.join("key.pem")))
}

/// An Apache MD5 (`$apr1$`) hash of `password`, as Squid's `basic_ncsa_auth` reads it, from
/// `openssl passwd -apr1`.
fn apr1(password: &str) -> Result<String, String> {
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-apr1", password])
        .output()
        .map_err(|e| format!("openssl passwd: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes a hosts file with `entries` (and `localhost`) into `dir`.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_hosts(dir: &Path, entries: &[(String, IpAddr)]) -> Result<PathBuf, String> {
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for (name, ip) in entries {
        text.push_str(&format!("{ip} {name}\n"));
    }
    let path = dir.join("etc-hosts");
    write(&path, &text)?;
    Ok(path)
}

/// A command that runs `program` (add its arguments to it) with `hosts` as its `/etc/hosts`,
/// in a mount namespace of its own (`unshare -m`, which needs root): a name only that program
/// resolves, such as an API server name that only a proxy knows.
///
/// # Example
///
/// ```no_run
/// # fn f(hosts: &std::path::Path) {
/// let out = kforward_testkit::proxies::with_hosts_file("getent", hosts)
///     .args(["hosts", "api.proxied.test"])
///     .output();
/// # }
/// ```
pub fn with_hosts_file(
    program: impl AsRef<std::ffi::OsStr>,
    hosts: &Path,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"",
        "sh",
    ])
    .arg(hosts)
    .arg(program);
    cmd
}

/// Puts `198.18.0.<host>` on `lo` (when it is not there yet) and returns it: an address that
/// is neither loopback nor private, for an API server that the environment's proxy serves.
/// Needs root (`CAP_NET_ADMIN`); the address is left in place for other tests.
///
/// # Errors
///
/// What `ip addr add` said.
pub fn non_loopback_address(host: u8) -> Result<IpAddr, String> {
    let ip = Ipv4Addr::new(198, 18, 0, host);
    let has = |out: &[u8]| String::from_utf8_lossy(out).contains(&format!("inet {ip}/"));
    let shown = std::process::Command::new("ip")
        .args(["-4", "addr", "show", "dev", "lo"])
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if has(&shown.stdout) {
        return Ok(IpAddr::V4(ip));
    }
    let added = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    let stderr = String::from_utf8_lossy(&added.stderr);
    // Another test process may have added it meanwhile.
    if added.status.success() || stderr.contains("File exists") {
        Ok(IpAddr::V4(ip))
    } else {
        Err(format!("ip addr add {ip}/32 dev lo: {}", stderr.trim()))
    }
}

/// [`non_loopback_address`], or, when it cannot be set up, a test failure on CI and `None`
/// after a note elsewhere.
///
/// # Panics
///
/// On CI when the address cannot be added.
pub fn non_loopback_address_or_skip(host: u8) -> Option<IpAddr> {
    match non_loopback_address(host) {
        Ok(ip) => Some(ip),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI must be able to add a test address to lo (run as root): {e}")
        }
        Err(e) => {
            eprintln!("note: skipping a test of the environment's proxy: {e}");
            None
        }
    }
}
