//! `kforward doctor`: what works with this kubeconfig context and what does not, before a
//! forward finds out. Each [`Check`] says what it found and, when something is missing,
//! what that disables; [`Report::ok`] is true when everything the asked-for features need
//! is there.
//!
//! The checks, in order: the kubeconfig loads; the API server answers, and by which route
//! (directly, or through the proxy of the kubeconfig's `proxy-url` or of `HTTPS_PROXY`
//! with `NO_PROXY` honoured, as kubectl picks it: [`ApiRoute`]); the credentials are accepted; the server's version; a SelfSubjectAccessReview
//! for every permission kforward may use ([`access::PERMISSIONS`]); which port-forward
//! transports the server offers, probed against a ready pod ([`transports`]); and, when
//! asked, a relay pod started and timed.
//!
//! # Example
//!
//! This runs for real, against the testkit's simulated cluster:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use kforward_core::KubeconfigSource;
//! use kforward_core::doctor::{DoctorOptions, diagnose};
//!
//! let cluster = kforward_testkit::Cluster::demo().await.unwrap();
//! let src = KubeconfigSource::default().with_path(cluster.kubeconfig_path());
//! let report = diagnose(&src, &DoctorOptions::default()).await;
//! assert!(report.ok(), "{:#?}", report.checks);
//! println!("{}", report.to_json());
//! # });
//! ```

pub mod access;
pub mod transports;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use serde_json::{Map, Value, json};

use crate::client::{ApiRoute, KubeContext, KubeconfigSource};
use crate::error::Error;
use crate::relay::{RelayOptions, RelayPods};
use access::{Need, PERMISSIONS};
use transports::Transport;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// All there.
    Pass,
    /// Something is missing that only some features need, and they were not asked for.
    Warn,
    /// Something the asked-for features need is missing.
    Fail,
    /// Not checked (an earlier check failed, or there was nothing to check against).
    Skip,
}

impl Status {
    /// `pass`, `warn`, `fail` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What was checked: `api-server`, `credentials`, `access: create pods/portforward`.
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// What was found, with the values involved, and what to do when it is missing.
    pub detail: String,
    /// What does not work because of it (empty when it passed).
    pub disables: Vec<String>,
    /// How long it took, for checks where that is the point (the relay pod's start).
    pub took: Option<Duration>,
    /// Structured details, also in the JSON (the transports offered, the relay pod).
    pub extra: Map<String, Value>,
}

impl Check {
    fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            disables: Vec::new(),
            took: None,
            extra: Map::new(),
        }
    }

    /// Whether the check did not fail.
    pub fn ok(&self) -> bool {
        self.status != Status::Fail
    }

    /// The check as JSON: `{"name", "ok", "status", "detail", "disables", "took_ms"?, ...extra}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("ok".into(), json!(self.ok()));
        m.insert("status".into(), json!(self.status.as_str()));
        m.insert("detail".into(), json!(self.detail));
        m.insert("disables".into(), json!(self.disables));
        if let Some(t) = self.took {
            m.insert("took_ms".into(), json!(t.as_millis() as u64));
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// Everything `kforward doctor` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The kubeconfig context checked (empty when the kubeconfig did not load).
    pub context: String,
    /// The API server's URL.
    pub server: String,
    /// The namespace checked.
    pub namespace: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether everything the asked-for features need is there (no check failed).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }

    /// The report as one JSON object: `{"ok", "context", "server", "namespace", "checks": [...]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "context": self.context,
            "server": self.server,
            "namespace": self.namespace,
            "checks": self.checks.iter().map(Check::to_json).collect::<Vec<_>>(),
        })
    }
}

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorOptions {
    /// The namespace (default: the context's).
    pub namespace: Option<String>,
    /// Start a relay pod with these settings and time it; also makes the relay's
    /// permissions needed rather than optional.
    pub relay: Option<RelayOptions>,
    /// How long one request to the API server may take.
    pub request_timeout: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            namespace: None,
            relay: None,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Runs every check against the context `src` names. Never fails: what goes wrong is in
/// the report.
pub async fn diagnose(src: &KubeconfigSource, opts: &DoctorOptions) -> Report {
    let mut report = Report {
        context: String::new(),
        server: String::new(),
        namespace: String::new(),
        checks: Vec::new(),
    };
    let ctx = match KubeContext::load(src).await {
        Ok(c) => c,
        Err(e) => {
            report
                .checks
                .push(Check::new("kubeconfig", Status::Fail, e.to_string()));
            return report;
        }
    };
    report.context = ctx.context().to_string();
    report.server = ctx.server().to_string();
    report.namespace = opts
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.default_namespace().to_string());
    report.checks.push(Check::new(
        "kubeconfig",
        Status::Pass,
        format!(
            "context {:?}, server {}, namespace {:?}",
            report.context, report.server, report.namespace
        ),
    ));
    let mut d = Doctor {
        ctx,
        opts,
        namespace: report.namespace.clone(),
        checks: Vec::new(),
    };
    d.run().await;
    report.checks.extend(d.checks);
    report
}

struct Doctor<'a> {
    ctx: KubeContext,
    opts: &'a DoctorOptions,
    namespace: String,
    checks: Vec<Check>,
}

impl Doctor<'_> {
    fn push(&mut self, c: Check) {
        self.checks.push(c);
    }

    fn skip_rest(&mut self, why: &str, relay: bool) {
        let mut names: Vec<String> = vec!["credentials".into(), "server-version".into()];
        names.extend(PERMISSIONS.iter().map(|p| format!("access: {}", p.name())));
        names.push("port-forward transports".into());
        if relay {
            names.push("relay".into());
        }
        for n in names {
            if !self.checks.iter().any(|c| c.name == n) {
                self.push(Check::new(n, Status::Skip, why));
            }
        }
    }

    async fn run(&mut self) {
        let timeout = self.opts.request_timeout;
        let server = self.ctx.server().to_string();
        let route = self.ctx.api_route().cloned();
        let reached = route.as_ref().map_or_else(
            || "as the given client connects".to_string(),
            ToString::to_string,
        );
        let version = tokio::time::timeout(timeout, self.ctx.client().apiserver_version()).await;
        let version = match version {
            Err(_) => {
                let check = match route.as_ref().and_then(ApiRoute::proxy) {
                    Some(proxy) => format!(
                        "check that the proxy {proxy} runs and lets this machine reach {server}, \
                         or whether the cluster is up"
                    ),
                    None => "check the network and VPN, or whether the cluster is up".into(),
                };
                let mut c = Check::new(
                    "api-server",
                    Status::Fail,
                    format!(
                        "cannot reach the API server at {server} {reached}: no answer within {timeout:?}; {check}"
                    ),
                );
                c.extra = route_json(route.as_ref());
                self.push(c);
                self.skip_rest("the API server did not answer", self.opts.relay.is_some());
                return;
            }
            Ok(Err(e)) => Err(Error::from_kube(e, &server, "get", "version", "", None)),
            Ok(Ok(v)) => Ok(v),
        };
        let mut c = match &version {
            // A proxy's failure names the proxy and where it was set already.
            Err(e @ Error::Proxy { .. }) => Check::new("api-server", Status::Fail, e.to_string()),
            Err(e @ Error::Unreachable { .. }) => Check::new(
                "api-server",
                Status::Fail,
                format!("{e} (reached {reached})"),
            ),
            _ => Check::new(
                "api-server",
                Status::Pass,
                format!("{server} answers, reached {reached}"),
            ),
        };
        c.extra = route_json(route.as_ref());
        let failed = !c.ok();
        self.push(c);
        if failed {
            self.skip_rest("the API server is unreachable", self.opts.relay.is_some());
            return;
        }
        // The credentials: the first review needs an authenticated user.
        let first = self.review(&PERMISSIONS[0]).await;
        match &first {
            Err(e) if e.is_unauthorized() => {
                self.push(Check::new("credentials", Status::Fail, e.to_string()));
                self.skip_rest("the credentials were rejected", self.opts.relay.is_some());
                return;
            }
            Err(e) => {
                self.push(Check::new("credentials", Status::Fail, e.to_string()));
                self.skip_rest(
                    "the API server did not answer a review",
                    self.opts.relay.is_some(),
                );
                return;
            }
            Ok(_) => self.push(Check::new("credentials", Status::Pass, "accepted")),
        }
        match version {
            Ok(v) => self.push(Check::new(
                "server-version",
                Status::Pass,
                format!("Kubernetes {} ({})", v.git_version, v.platform),
            )),
            Err(e) => self.push(Check::new("server-version", Status::Warn, e.to_string())),
        }
        let mut portforward_allowed = false;
        for (i, perm) in PERMISSIONS.iter().enumerate() {
            let answer = if i == 0 {
                first.as_ref().map(Clone::clone).map_err(|e| e.to_string())
            } else {
                self.review(perm).await.map_err(|e| e.to_string())
            };
            let name = format!("access: {}", perm.name());
            let check = match answer {
                Ok((true, _)) => {
                    if i == 0 {
                        portforward_allowed = true;
                    }
                    Check::new(name, Status::Pass, "allowed")
                }
                Ok((false, reason)) => {
                    let status = match perm.need {
                        Need::Forwarding => Status::Fail,
                        Need::Relay if self.opts.relay.is_some() => Status::Fail,
                        Need::Target | Need::Relay => Status::Warn,
                    };
                    let mut c = Check::new(
                        name,
                        status,
                        format!(
                            "denied in namespace {:?}{}; this disables {}; ask your cluster admin for a Role granting `{}`",
                            self.namespace,
                            if reason.is_empty() {
                                String::new()
                            } else {
                                format!(" ({reason})")
                            },
                            perm.disables,
                            perm.name(),
                        ),
                    );
                    c.disables.push(perm.disables.to_string());
                    c
                }
                Err(e) => Check::new(name, Status::Warn, format!("could not ask: {e}")),
            };
            self.push(check);
        }
        self.transports(portforward_allowed).await;
        if let Some(relay) = self.opts.relay.clone() {
            self.relay(relay).await;
        }
    }

    async fn review(&self, perm: &access::Permission) -> crate::Result<(bool, String)> {
        let t = self.opts.request_timeout;
        match tokio::time::timeout(t, access::can_i(&self.ctx, perm, &self.namespace)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unreachable {
                server: self.ctx.server().to_string(),
                message: format!("no answer to a SelfSubjectAccessReview within {t:?}"),
            }),
        }
    }

    async fn transports(&mut self, allowed: bool) {
        const NAME: &str = "port-forward transports";
        if !allowed {
            self.push(Check::new(
                NAME,
                Status::Skip,
                "not probed: create pods/portforward is denied",
            ));
            return;
        }
        let t = self.opts.request_timeout;
        let pod = tokio::time::timeout(t, transports::ready_pod(&self.ctx, &self.namespace)).await;
        let (pod, port) = match pod {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => {
                self.push(Check::new(
                    NAME,
                    Status::Skip,
                    format!(
                        "not probed: no ready pod in namespace {:?} to ask about (pass -n with a namespace that has one)",
                        self.namespace
                    ),
                ));
                return;
            }
            Ok(Err(e)) => {
                self.push(Check::new(NAME, Status::Skip, format!("not probed: {e}")));
                return;
            }
            Err(_) => {
                self.push(Check::new(
                    NAME,
                    Status::Skip,
                    format!("not probed: listing pods took over {t:?}"),
                ));
                return;
            }
        };
        let mut offered = Map::new();
        let mut parts = Vec::new();
        for tr in Transport::ALL {
            let (yes, detail) =
                match transports::offers(&self.ctx, &self.namespace, &pod, port, tr, t).await {
                    Ok(r) => r,
                    Err(e) => (false, e.to_string()),
                };
            offered.insert(tr.name().to_string(), json!(yes));
            parts.push(format!(
                "{}: {}",
                tr.name(),
                if yes {
                    "offered".to_string()
                } else {
                    format!("not offered ({detail})")
                }
            ));
        }
        // kforward speaks the WebSocket protocol and SPDY; one of them is enough.
        let usable = [Transport::WebSocketV4, Transport::Spdy]
            .iter()
            .any(|t| offered.get(t.name()) == Some(&json!(true)));
        let mut c = Check::new(
            NAME,
            if usable { Status::Pass } else { Status::Fail },
            format!(
                "{} (asked against pod {pod:?} port {port})",
                parts.join("; ")
            ),
        );
        if !usable {
            c.disables
                .push("every forward (no transport kforward speaks is offered)".into());
        }
        c.extra.insert("transports".into(), Value::Object(offered));
        self.push(c);
    }

    async fn relay(&mut self, opts: RelayOptions) {
        let image = opts.image.clone();
        let started = Instant::now();
        let pods = RelayPods::new(self.ctx.clone(), opts);
        let result = pods.pod_for(&self.namespace).await;
        let took = started.elapsed();
        pods.delete_all().await;
        let mut c = match result {
            Ok(pod) => {
                let mut c = Check::new(
                    "relay",
                    Status::Pass,
                    format!(
                        "relay pod {pod:?} (image {image:?}) was ready after {:.1}s, and is deleted again",
                        took.as_secs_f64()
                    ),
                );
                c.extra.insert("pod".into(), json!(pod));
                c
            }
            Err(e) => {
                let level = self.pod_security_level().await;
                let mut c = Check::new(
                    "relay",
                    Status::Fail,
                    format!(
                        "{e}{}",
                        level
                            .map(|l| format!(" [namespace Pod Security enforce level: {l}]"))
                            .unwrap_or_default()
                    ),
                );
                c.disables.push("UDP forwards and proxy forwards".into());
                c
            }
        };
        c.took = Some(took);
        c.extra.insert("image".into(), json!(image));
        self.push(c);
    }

    /// The namespace's `pod-security.kubernetes.io/enforce` label, when it can be read.
    async fn pod_security_level(&self) -> Option<String> {
        let api: Api<Namespace> = Api::all(self.ctx.client().clone());
        let ns = tokio::time::timeout(self.opts.request_timeout, api.get(&self.namespace))
            .await
            .ok()?
            .ok()?;
        ns.metadata
            .labels?
            .get("pod-security.kubernetes.io/enforce")
            .cloned()
    }
}

/// The route to the API server as the api-server check's JSON has it: `"route"` (`direct`
/// or `proxy`), with the proxy (without its password) and where it was set
/// (`"proxy_origin"`: `HTTPS_PROXY`, the kubeconfig's `proxy-url` of a cluster), or why it
/// is direct (`"direct_because"`). Nothing for a client made elsewhere.
fn route_json(route: Option<&ApiRoute>) -> Map<String, Value> {
    let mut m = Map::new();
    match route {
        Some(ApiRoute::Proxy { url, origin }) => {
            m.insert("route".into(), json!("proxy"));
            m.insert("proxy".into(), json!(url.to_string()));
            m.insert("proxy_origin".into(), json!(origin.to_string()));
        }
        Some(ApiRoute::Direct(why)) => {
            m.insert("route".into(), json!("direct"));
            m.insert("direct_because".into(), json!(why.to_string()));
        }
        None => {}
    }
    m
}
