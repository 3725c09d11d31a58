//! The command-line arguments, parsed by clap into the CLI's own structs and converted to
//! `kforward-core` types afterwards; the core never sees clap.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The environment variables kforward reads, shown under every `--help`.
const ENVIRONMENT: &str = "\
Environment:
  KUBECONFIG            kubeconfig files, ':'-separated, as kubectl reads them
  KFORWARD_RELAY_IMAGE  the relay pods' image when --relay-image is not given
  RUST_LOG              what to log on stderr (default: warn), e.g. kforward_core=debug
  KFORWARD_KUBE_CLIENT  `stock`: kube's own client stack instead of kforward's (which reads
                        through a larger buffer, sets TCP_NODELAY and keeps a spare
                        connection to the API server ready for the next tunnel)";

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

/// How relay pods (UDP and `proxy` forwards) are made.
#[derive(Debug, Clone, Default, Args)]
pub struct RelayArgs {
    /// The relay's container image, e.g. from a mirror registry (default:
    /// ghcr.io/kforward/kforward-relay:<version>).
    #[arg(long, env = "KFORWARD_RELAY_IMAGE", value_name = "IMAGE")]
    pub relay_image: Option<String>,
    /// An image pull secret in the namespace for the relay image's registry (repeatable).
    #[arg(long = "relay-pull-secret", value_name = "SECRET")]
    pub relay_pull_secrets: Vec<String>,
    /// When the kubelet pulls the relay image: Always, IfNotPresent or Never.
    #[arg(long, value_name = "POLICY", default_value = "IfNotPresent")]
    pub relay_pull_policy: String,
    /// A JSON merge patch file applied to the relay pod: node selector, tolerations,
    /// annotations, resources (containers merge by name; the relay's is `relay`).
    #[arg(long, value_name = "FILE")]
    pub relay_pod_patch: Option<PathBuf>,
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

/// `kforward gc`.
#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// Where to find the cluster; `-n` limits the clean-up to one namespace.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Clean up every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

/// `kforward run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The config file: a JSON array of forwards with kftray's fields.
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
    /// The relay pods (UDP and proxy entries), for the entries whose `relay_*` fields do
    /// not say.
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
