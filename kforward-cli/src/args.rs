//! The command-line arguments, parsed by clap into the CLI's own structs and converted to
//! `kforward-core` types afterwards; the core never sees clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kforward_core::transport::Transport;

/// The environment variables kforward reads, shown under every `--help`.
const ENVIRONMENT: &str = "\
Environment:
  KUBECONFIG            kubeconfig files, ':'-separated, as kubectl reads them
  KFORWARD_RELAY_IMAGE  the relay pods' image when --relay-image is not given
  RUST_LOG              what to log on stderr (default: warn), e.g. kforward_core=debug
  KFORWARD_PROXY_AUTH   USER:PASS for `kforward socks` (instead of --auth)
  KFORWARD_KUBE_CLIENT  `stock`: kube's own client stack instead of kforward's (which reads
                        through a larger buffer, sets TCP_NODELAY and keeps a spare
                        connection to the API server ready for the next tunnel)
  HTTPS_PROXY, ALL_PROXY, NO_PROXY
                        the proxy toward the API server when the kubeconfig's cluster has no
                        proxy-url, as kubectl takes them: http, https, socks5 and socks5h
                        proxies; NO_PROXY takes hosts, .suffixes, CIDRs and host:port; a
                        loopback server is never proxied (RUST_LOG=kforward_core=debug shows
                        each connection's route)
  KFORWARD_PROXY_CA     a PEM file of the CA that signed an https:// proxy's certificate
                        (also trusted: the system's CAs and the kubeconfig's)";

/// Forward local ports to pods, services and deployments; forwards that stay up.
#[derive(Debug, Parser)]
#[command(
    name = "kforward",
    version,
    about,
    propagate_version = true,
    after_help = ENVIRONMENT
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Forward local ports to a pod, service or deployment, like `kubectl port-forward`.
    #[command(visible_alias = "port-forward", visible_alias = "pf")]
    Forward(ForwardArgs),
    /// Run many forwards from a JSON config file (kftray exports load as they are), kept up
    /// through pod restarts, dropped connections, sleep and context switches.
    Run(RunArgs),
    /// Start a simulated cluster in this process and forward its demo services (no
    /// cluster or setup needed).
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Forward a local port to any host the cluster can reach (a service DNS name, a
    /// database outside the cluster, an IP), through a relay pod in the namespace.
    Proxy(ProxyArgs),
    /// A forward proxy into the cluster on one local port: SOCKS5, SOCKS4a and HTTP
    /// (CONNECT and plain requests) to services, pods and any host the cluster can reach,
    /// with a PAC file for browsers at /proxy.pac.
    Socks(SocksArgs),
    /// Delete relay pods left behind by sessions that are gone.
    Gc(GcArgs),
    /// Check what works with this context: the API server, credentials, permissions,
    /// port-forward transports, and (with --relay) a relay pod.
    Doctor(DoctorArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// kubectl's lines (`Forwarding from 127.0.0.1:8080 -> 80`).
    Text,
    /// One JSON object per line per event.
    Json,
}

/// The PROXY protocol (HAProxy's) around a TCP forward's connections.
#[derive(Debug, Clone, Default, Args)]
pub struct ProxyProtocolArgs {
    /// Send a PROXY protocol header toward the target before the client's bytes, naming
    /// the local client's address and port (v1: text, v2: binary; TCP only), so that a
    /// server with PROXY protocol on (nginx `proxy_protocol`, HAProxy `accept-proxy`) sees
    /// who connected.
    #[arg(long, value_enum, value_name = "VERSION")]
    pub proxy_protocol: Option<ProxyVersion>,
    /// Read a PROXY protocol header from each local client (as a load balancer in front of
    /// kforward sends it): `strict` closes a connection without a valid one, `optional`
    /// takes one when it is there. With --proxy-protocol, the target sees the client that
    /// header names.
    #[arg(long, value_enum, value_name = "MODE")]
    pub accept_proxy_protocol: Option<AcceptMode>,
}

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyVersion {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// What to do with a client's PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcceptMode {
    /// Required: a connection without a valid header is closed.
    Strict,
    /// Taken when present.
    Optional,
}

/// Where the cluster is: kubectl's flags.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// The namespace (default: the context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// `kforward forward`.
#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    /// `pod/NAME`, `NAME` (a pod), `svc/NAME`, `service/NAME`, `deploy/NAME`,
    /// `deployment/NAME`, `sts/NAME`, `statefulset/NAME`, `rs/NAME` or `replicaset/NAME`.
    pub target: String,
    /// `LOCAL:REMOTE`, `REMOTE` (the same local port), or `:REMOTE` / `0:REMOTE` (a free
    /// local port); REMOTE may be a port name.
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// Where to find the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Local addresses to listen on, comma separated; `localhost` means 127.0.0.1 and ::1.
    #[arg(long, default_value = "localhost")]
    pub address: String,
    /// How events are printed.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// How long to wait for a ready pod (e.g. `60s`, `2m`, `500ms`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub pod_running_timeout: Duration,
    /// Forward UDP (through a relay pod in the namespace).
    #[arg(long)]
    pub udp: bool,
    /// The port-forward transport: `auto` (SPDY in a WebSocket, then plain SPDY, then
    /// v4.channel.k8s.io, the first the cluster offers), `websocket-spdy`, `spdy` or
    /// `websocket` (no half-close).
    #[arg(long, default_value = "auto", value_parser = parse_transport)]
    pub transport: Transport,
    /// The relay pod (UDP forwards).
    #[command(flatten)]
    pub relay: RelayArgs,
    /// The PROXY protocol.
    #[command(flatten)]
    pub proxy: ProxyProtocolArgs,
}

/// `kforward proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// `HOST:PORT` as the cluster sees it, e.g. `db.internal:5432` or `10.0.0.5:53`.
    pub destination: String,
    /// The local port (default: the destination's port; 0 picks a free one).
    pub local_port: Option<u16>,
    /// Where to find the cluster (the relay pod runs in the namespace).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Forward UDP instead of TCP.
    #[arg(long)]
    pub udp: bool,
    /// The relay pod.
    #[command(flatten)]
    pub relay: RelayArgs,
    /// Local addresses to listen on, comma separated; `localhost` means 127.0.0.1 and ::1.
    #[arg(long, default_value = "localhost")]
    pub address: String,
    /// How events are printed.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// How long to wait for the relay pod and the destination (e.g. `60s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub pod_running_timeout: Duration,
    /// The PROXY protocol.
    #[command(flatten)]
    pub proxy: ProxyProtocolArgs,
}

/// How relay pods (UDP and `proxy` forwards, the SOCKS proxy's outside names) are made.
#[derive(Debug, Clone, Default, Args)]
pub struct RelayArgs {
    /// The relay's container image, e.g. from a mirror registry (default:
    /// ghcr.io/kforward/kforward-relay:<version>).
    #[arg(long, env = "KFORWARD_RELAY_IMAGE", value_name = "IMAGE")]
    pub relay_image: Option<String>,
    /// An image pull secret in the namespace for the relay image's registry (repeatable).
    #[arg(long = "relay-pull-secret", value_name = "SECRET")]
    pub relay_pull_secrets: Vec<String>,
    /// When the kubelet pulls the relay image: Always, IfNotPresent or Never (default:
    /// IfNotPresent).
    #[arg(long, value_name = "POLICY")]
    pub relay_pull_policy: Option<String>,
    /// A JSON merge patch file applied to the relay pod: node selector, tolerations,
    /// annotations, resources (containers merge by name; the relay's is `relay`).
    #[arg(long, value_name = "FILE")]
    pub relay_pod_patch: Option<PathBuf>,
    /// An environment variable for relay pods, `KEY=VALUE` (repeatable): `HTTPS_PROXY` and
    /// `NO_PROXY` for a cluster whose pods reach the outside only through a proxy (the relay
    /// then reaches TCP destinations through it; without `NO_PROXY`, cluster names and
    /// ranges stay direct).
    #[arg(long = "relay-env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub relay_env: Vec<(String, String)>,
    /// How long a relay pod waits without any client before it exits by itself, the
    /// safety net for a session that died without deleting it (default: 10m).
    #[arg(long, env = "KFORWARD_RELAY_IDLE_EXIT", value_name = "DURATION", value_parser = parse_duration)]
    pub relay_idle_exit: Option<Duration>,
}

/// `kforward doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Where to find the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Also start a relay pod, time it, and delete it (and count the relay's permissions
    /// as needed).
    #[arg(long)]
    pub relay: bool,
    /// The relay pod, with --relay.
    #[command(flatten)]
    pub relay_pod: RelayArgs,
    /// How the report is printed (text: a table).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// How long one request to the API server may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// `kforward socks`.
#[derive(Debug, Clone, Args)]
pub struct SocksArgs {
    /// The local address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:1080")]
    pub listen: String,
    /// Where to find the cluster; `-n` is the namespace of bare service names (`web`) and
    /// of the relay pod.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Destinations to connect to from this machine instead of the cluster, in NO_PROXY
    /// syntax: `host`, `.suffix`, `*`, `10.0.0.0/8`, `host:port`, comma separated.
    #[arg(long, default_value = "")]
    pub direct: String,
    /// Refuse destinations that would need the relay pod (anything that is not a service,
    /// ClusterIP or pod), for clusters where creating pods is not allowed.
    #[arg(long)]
    pub no_relay: bool,
    /// Credentials clients must give (SOCKS5 username/password, HTTP Proxy-Authorization);
    /// required to listen on a non-loopback address.
    #[arg(
        long,
        env = "KFORWARD_PROXY_AUTH",
        hide_env_values = true,
        value_name = "USER:PASS"
    )]
    pub auth: Option<String>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// How long a connection to a service waits for a ready pod.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub pod_running_timeout: Duration,
    /// The relay pod: it reaches names outside the cluster, so its egress proxy
    /// (`--relay-env HTTPS_PROXY=...`) matters here most.
    #[command(flatten)]
    pub relay: RelayArgs,
    /// How events are printed (json: a `ready` line first, then one line per connection).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

/// `kforward gc`.
#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// Where to find the cluster; `-n` limits the clean-up to one namespace.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Clean up every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// A relay pod whose heartbeat is older than this belongs to a dead session. Sessions
    /// refresh it every 30 s: below that, the pods of running sessions are deleted too
    /// (right after a crash, when nothing else runs, or in tests).
    #[arg(long, env = "KFORWARD_GC_STALE_AFTER", default_value = "2m", value_parser = parse_duration)]
    pub stale_after: Duration,
}

/// `kforward run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The config file: a JSON array of forwards with kftray's fields, or
    /// `{"relay": {"env": {...}}, "forwards": [...]}` with a relay section.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Start only the entries with these aliases (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// How events are printed (text: a live table on a terminal, a line per event
    /// otherwise).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// How long to wait for a ready pod.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub pod_running_timeout: Duration,
    /// The port-forward transport of entries that do not say: `auto` (SPDY in a WebSocket, then plain SPDY, then
    /// v4.channel.k8s.io, the first the cluster offers), `websocket-spdy`, `spdy` or
    /// `websocket` (no half-close).
    #[arg(long, default_value = "auto", value_parser = parse_transport)]
    pub transport: Transport,
    /// The relay pods (UDP and proxy entries), for the entries whose `relay_*` fields and
    /// the file's `relay` section do not say; `--relay-env` replaces the same variable of
    /// the file's `relay.env`.
    #[command(flatten, next_help_heading = "Relay pods, for entries that do not say")]
    pub relay: RelayArgs,
    /// Where to find the cluster, for the entries that do not say.
    #[command(flatten, next_help_heading = "Defaults for entries that lack them")]
    pub cluster: ClusterArgs,
    /// The PROXY protocol, for the TCP entries that do not say.
    #[command(flatten, next_help_heading = "Defaults for TCP entries that lack them")]
    pub proxy: ProxyProtocolArgs,
}

/// `kforward demo`.
#[cfg(feature = "demo")]
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How events are printed.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Also write the demo cluster's kubeconfig here, for kubectl or a second kforward.
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
}

/// Parses `KEY=VALUE` (the value may hold `=` and be empty).
///
/// # Errors
///
/// A message naming the argument when it has no `=` or no key.
pub fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE, e.g. HTTPS_PROXY=http://proxy.corp:3128"
        )),
    }
}

/// The relay pods' environment from `--relay-env` pairs, checked as kforward will use it.
///
/// # Errors
///
/// A variable kforward sets itself, a bad name, or an egress proxy the relay cannot use.
pub fn relay_env(
    pairs: &[(String, String)],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let env: std::collections::BTreeMap<String, String> = pairs.iter().cloned().collect();
    kforward_core::relay::check_relay_env(&env).map_err(|e| anyhow::anyhow!("--relay-env: {e}"))?;
    Ok(env)
}

impl ProxyVersion {
    /// The core's version.
    pub fn core(self) -> kforward_core::proxy_protocol::Version {
        match self {
            ProxyVersion::V1 => kforward_core::proxy_protocol::Version::V1,
            ProxyVersion::V2 => kforward_core::proxy_protocol::Version::V2,
        }
    }
}

impl AcceptMode {
    /// The core's mode.
    pub fn core(self) -> kforward_core::proxy_protocol::Accept {
        match self {
            AcceptMode::Strict => kforward_core::proxy_protocol::Accept::Strict,
            AcceptMode::Optional => kforward_core::proxy_protocol::Accept::Optional,
        }
    }
}

impl ProxyProtocolArgs {
    /// `spec` with these settings where it has none.
    pub fn apply(
        &self,
        mut spec: kforward_core::spec::ForwardSpec,
    ) -> kforward_core::spec::ForwardSpec {
        if spec.proxy_protocol.is_none() {
            spec.proxy_protocol = self.proxy_protocol.map(ProxyVersion::core);
        }
        if spec.accept_proxy_protocol.is_none() {
            spec.accept_proxy_protocol = self.accept_proxy_protocol.map(AcceptMode::core);
        }
        spec
    }
}

impl ClusterArgs {
    /// `spec` with this namespace, context and kubeconfig where it has none.
    pub fn apply(
        &self,
        mut spec: kforward_core::spec::ForwardSpec,
    ) -> kforward_core::spec::ForwardSpec {
        if spec.namespace.is_none() {
            spec.namespace = self.namespace.clone();
        }
        if spec.context.is_none() {
            spec.context = self.context.clone();
        }
        if spec.kubeconfig.is_none() {
            spec.kubeconfig = self.kubeconfig.clone();
        }
        spec
    }
}

/// Parses a transport name (`auto`, `websocket-spdy`, `spdy`, `websocket`).
///
/// # Errors
///
/// A message naming the value and the transports there are.
pub fn parse_transport(s: &str) -> Result<Transport, String> {
    s.parse()
        .map_err(|e: kforward_core::transport::UnknownTransport| e.to_string())
}

/// Parses `90s`, `2m`, `1h`, `500ms` or a bare number of seconds.
///
/// # Errors
///
/// A message naming the value and the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("invalid duration {s:?}: use a number with ms, s, m or h, like 60s or 2m");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn relay_env_pairs_are_checked() {
        let c = Cli::try_parse_from([
            "kforward",
            "proxy",
            "db.internal:5432",
            "--relay-env",
            "HTTPS_PROXY=http://proxy.corp:3128",
            "--relay-env",
            "NO_PROXY=.svc,10.0.0.0/8",
        ])
        .expect("parses");
        let Command::Proxy(p) = c.command else {
            panic!("proxy")
        };
        let env = relay_env(&p.relay.relay_env).expect("usable");
        assert_eq!(env["NO_PROXY"], ".svc,10.0.0.0/8");
        assert!(parse_env_pair("HTTPS_PROXY").is_err());
        assert!(parse_env_pair("=x").is_err());
        let socks = [("HTTPS_PROXY".to_string(), "socks5://p:1080".to_string())];
        let e = relay_env(&socks).expect_err("socks is no HTTP proxy");
        assert!(e.to_string().starts_with("--relay-env: "), "{e}");
    }

    #[test]
    fn cli_parses_kubectl_style() {
        let c = Cli::try_parse_from([
            "kforward",
            "forward",
            "svc/web",
            "8080:80",
            ":http",
            "-n",
            "demo",
            "--address",
            "0.0.0.0",
        ])
        .expect("parses");
        let Command::Forward(f) = c.command else {
            panic!("forward")
        };
        assert_eq!(f.ports, vec!["8080:80", ":http"]);
        assert_eq!(f.cluster.namespace.as_deref(), Some("demo"));
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
