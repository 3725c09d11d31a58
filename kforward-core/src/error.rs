//! The errors of forwarding, each saying what happened, with the values involved, and what
//! to do about it.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything that can go wrong while setting up or running a forward.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config or spec is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A target or port spec is invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The local address could not be bound.
    #[error("{}", bind_message(addr, source, suggestion))]
    BindLocal {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
        /// The port spec to suggest instead, such as `0:80`.
        suggestion: String,
    },
    /// The kubeconfig could not be read or used.
    #[error("cannot load the kubeconfig: {message}")]
    Kubeconfig {
        /// What went wrong, with the path when there is one.
        message: String,
    },
    /// The context asked for does not exist.
    #[error("context {context:?} does not exist in the kubeconfig (contexts there: {})", list_or_none(.available))]
    UnknownContext {
        /// The context asked for.
        context: String,
        /// The contexts the kubeconfig has.
        available: Vec<String>,
    },
    /// An object does not exist.
    #[error("{kind} {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// `pod`, `service`, `deployment`, `statefulset`, `replicaset` or `namespace`.
        kind: &'static str,
        /// The namespace looked in.
        namespace: String,
        /// The name looked for.
        name: String,
    },
    /// A named port is not declared by the target.
    #[error("{target} has no port named {port:?} (ports there: {})", list_or_none(.available))]
    PortNotFound {
        /// The target, like `svc/web`.
        target: String,
        /// The port name or number asked for.
        port: String,
        /// The ports the target declares.
        available: Vec<String>,
    },
    /// No pod of the target became ready in time.
    #[error("no ready pod for {target} in namespace {namespace:?} after waiting {}s (see --pod-running-timeout)", waited.as_secs())]
    NoReadyPod {
        /// The target, like `svc/web`.
        target: String,
        /// Its namespace.
        namespace: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The API server refused the request for lack of permission.
    #[error(
        "permission denied: your user cannot {verb} {resource} in namespace {namespace:?} (the API server said: {message})"
    )]
    Forbidden {
        /// The verb, like `create`.
        verb: String,
        /// The resource, like `pods/portforward`.
        resource: String,
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// The credentials were missing, wrong or expired.
    #[error(
        "the API server at {server} rejected the credentials (401 Unauthorized): log in again or refresh the token in your kubeconfig"
    )]
    Unauthorized {
        /// The API server URL.
        server: String,
    },
    /// The API server could not be reached.
    #[error("cannot reach the API server at {server}: {message}")]
    Unreachable {
        /// The API server URL.
        server: String,
        /// What failed.
        message: String,
    },
    /// The API server could not be reached through the proxy toward it, or the proxy's
    /// setting cannot be used.
    #[error("cannot reach the API server at {server} through {proxy}: {message}")]
    Proxy {
        /// The API server URL.
        server: String,
        /// The proxy without its password, and where it was set:
        /// `the proxy http://alice@proxy:3128 (HTTPS_PROXY)`.
        proxy: String,
        /// What failed and what to check.
        message: String,
        /// Whether trying again may help (the proxy down), as opposed to a setting to fix.
        retryable: bool,
    },
    /// The API server answered with an error not covered above.
    #[error("the API server refused to {action}: {message} ({code})")]
    Api {
        /// What we asked for.
        action: String,
        /// The HTTP code.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// The port-forward stream reported an error (the pod's port refused, or broke).
    #[error("port-forward to pod {pod:?} port {port} failed: {message}")]
    Tunnel {
        /// The pod.
        pod: String,
        /// The pod's port.
        port: u16,
        /// The message from the error channel or the transport.
        message: String,
    },
    /// The forward was already started.
    #[error("the forward is already running")]
    AlreadyStarted,
    /// The forward has not been started (or has been stopped).
    #[error("the forward is not running")]
    NotStarted,
    /// The relay could not resolve the destination's host name.
    #[error(
        "could not resolve {host:?} from inside the cluster ({message}): check the name, and that the cluster's DNS knows it"
    )]
    RelayNameNotResolved {
        /// The host name asked for.
        host: String,
        /// What the relay's resolver said.
        message: String,
    },
    /// The relay could not connect to the destination (refused or timed out).
    #[error("cannot reach {target} from inside the cluster: {message}")]
    RelayConnect {
        /// `host:port`.
        target: String,
        /// What the relay said.
        message: String,
        /// Whether it timed out (else it was refused).
        timed_out: bool,
    },
    /// The relay refused the request itself (a wrong token or a request it cannot serve).
    #[error("the relay in pod {pod:?} refused the request: {message}")]
    RelayRejected {
        /// The relay pod.
        pod: String,
        /// What the relay said.
        message: String,
    },
    /// Talking to the relay failed (the stream broke or the answer was not understood).
    #[error("the handshake with the relay in pod {pod:?} failed: {message}")]
    RelayHandshake {
        /// The relay pod.
        pod: String,
        /// What failed.
        message: String,
    },
    /// The relay pod could not be created or did not become ready.
    #[error("relay pod in namespace {namespace:?}: {message}")]
    RelayPod {
        /// The namespace.
        namespace: String,
        /// What went wrong and what to do.
        message: String,
        /// Whether trying again later may help.
        retryable: bool,
    },
    /// The relay pod patch (`--relay-pod-patch`) cannot be used.
    #[error("relay pod patch {origin}: {message}")]
    RelayPodPatch {
        /// The file or config field it came from.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn bind_message(addr: &SocketAddr, source: &std::io::Error, suggestion: &str) -> String {
    match source.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("local port {addr} is already in use (try {suggestion} to pick a free one)")
        }
        std::io::ErrorKind::PermissionDenied => format!(
            "not allowed to listen on {addr}: ports below 1024 need privileges (try {suggestion} to pick a free one)"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("cannot listen on {addr}: the address is not on this machine")
        }
        _ => format!("cannot listen on {addr}: {source}"),
    }
}

impl Error {
    /// Whether trying again later may succeed (the network, the API server, a pod
    /// restarting), as opposed to a mistake that needs the user.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::NoReadyPod { .. } | Error::Tunnel { .. } => true,
            Error::RelayConnect { .. } | Error::RelayHandshake { .. } => true,
            Error::RelayPod { retryable, .. } | Error::Proxy { retryable, .. } => *retryable,
            Error::Api { code, .. } => *code >= 500 || *code == 429 || *code == 410,
            Error::NotFound { kind, .. } => *kind == "pod",
            _ => false,
        }
    }

    /// Whether the user lacks a permission (a 403).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::Forbidden { .. })
    }

    /// Whether the credentials were rejected (a 401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }

    /// Maps a kube error from asking the API server to `verb` a `resource`.
    pub(crate) fn from_kube(
        e: kube::Error,
        server: &str,
        verb: &str,
        resource: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Error {
        match e {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    401 => Error::Unauthorized {
                        server: server.to_string(),
                    },
                    403 => Error::Forbidden {
                        verb: verb.to_string(),
                        resource: resource.to_string(),
                        namespace: namespace.to_string(),
                        message,
                    },
                    404 if name.is_some() => Error::NotFound {
                        kind: match resource.split('/').next().unwrap_or(resource) {
                            "pods" => "pod",
                            "services" => "service",
                            "deployments" => "deployment",
                            "statefulsets" => "statefulset",
                            "replicasets" => "replicaset",
                            "namespaces" => "namespace",
                            _ => "object",
                        },
                        namespace: namespace.to_string(),
                        name: name.unwrap_or_default().to_string(),
                    },
                    code => Error::Api {
                        action: match name {
                            Some(n) => {
                                format!("{verb} {resource} {n:?} in namespace {namespace:?}")
                            }
                            None => format!("{verb} {resource} in namespace {namespace:?}"),
                        },
                        code,
                        message,
                    },
                }
            }
            kube::Error::Auth(a) => Error::Unauthorized {
                server: format!("{server} ({a})"),
            },
            other => match crate::connector::ProxyFailure::find(&other) {
                Some(f) => Error::Proxy {
                    server: server.to_string(),
                    proxy: f.proxy.clone(),
                    message: f.message.clone(),
                    retryable: f.retryable,
                },
                None => Error::Unreachable {
                    server: server.to_string(),
                    message: error_chain(&other),
                },
            },
        }
    }
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
