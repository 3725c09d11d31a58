//! [`Cluster`]: one simulated Kubernetes cluster, started on loopback and stopped on drop.

mod policy;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::kubeconfig::{KubeconfigEntry, write_kubeconfig};
use crate::network::{DnsServer, ExternalHost, PodResolver};
use crate::scenario::{DEMO_EXTERNAL_HOST, DEMO_NAMESPACE, demo_objects};
use crate::state::{Shared, StatsSnapshot, lock};
use crate::tls::Tls;
use crate::{ApiError, Error, Kind, controller, faults};

/// How a [`Cluster`] starts.
///
/// # Example
///
/// ```
/// # tokio_test_run(async {
/// use std::time::Duration;
/// let cluster = kforward_testkit::Cluster::builder()
///     .plain_http()
///     .ready_delay(Duration::from_millis(10))
///     .start()
///     .await?;
/// assert!(cluster.server_url().starts_with("http://127.0.0.1:"));
/// # Ok::<_, kforward_testkit::Error>(()) });
/// # fn tokio_test_run<F: std::future::Future<Output = Result<(), kforward_testkit::Error>>>(f: F) {
/// #     tokio::runtime::Runtime::new().unwrap().block_on(f).unwrap()
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    name: Option<String>,
    tls: bool,
    ready_delay: Duration,
    termination_grace: Duration,
    demo: bool,
    kubeconfig: Option<PathBuf>,
    namespace: Option<String>,
    api_addr: SocketAddr,
    tls_names: Vec<String>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            name: None,
            tls: true,
            ready_delay: Duration::from_millis(100),
            termination_grace: Duration::from_millis(100),
            demo: false,
            kubeconfig: None,
            namespace: None,
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_names: Vec::new(),
        }
    }
}

impl ClusterBuilder {
    /// The name of the cluster, its user and its context (default `testkit-<random>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Serves plain HTTP instead of HTTPS.
    pub fn plain_http(mut self) -> Self {
        self.tls = false;
        self
    }

    /// How long a new pod takes from Running to Ready (default 100 ms).
    pub fn ready_delay(mut self, d: Duration) -> Self {
        self.ready_delay = d;
        self
    }

    /// How long a deleted pod keeps serving, NotReady, before it stops (default 100 ms).
    pub fn termination_grace(mut self, d: Duration) -> Self {
        self.termination_grace = d;
        self
    }

    /// Starts the demo scenario (see [`crate::demo_objects`]) and waits until it is Ready.
    pub fn demo(mut self) -> Self {
        self.demo = true;
        self.namespace
            .get_or_insert_with(|| DEMO_NAMESPACE.to_string());
        self
    }

    /// Writes the kubeconfig here instead of into the cluster's temporary directory.
    pub fn kubeconfig_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// The default namespace of the kubeconfig's context.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// The API server's address (default `127.0.0.1:0`, a free port).
    pub fn api_addr(mut self, addr: SocketAddr) -> Self {
        self.api_addr = addr;
        self
    }

    /// Puts `name` in the API server's certificate too (a name a test resolves to the API
    /// server's address, such as one behind a proxy).
    pub fn tls_name(mut self, name: impl Into<String>) -> Self {
        self.tls_names.push(name.into());
        self
    }

    /// Starts the cluster.
    ///
    /// # Errors
    ///
    /// When the API server cannot bind, certificates cannot be made or the kubeconfig cannot
    /// be written.
    pub async fn start(self) -> Result<Cluster, Error> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("testkit-{}", crate::store::random_suffix(6)));
        let dir = tempfile::Builder::new()
            .prefix("kforward-testkit-")
            .tempdir()
            .map_err(|e| Error::Io(std::env::temp_dir(), e))?;
        let kubeconfig_path = self
            .kubeconfig
            .clone()
            .unwrap_or_else(|| dir.path().join("kubeconfig"));
        let tls = if self.tls {
            // An API server on a specific address (not loopback, such as one a test puts on
            // `lo` to be proxied from the environment) has it in its certificate too.
            let ip = self.api_addr.ip();
            let extra: Vec<String> = (!ip.is_unspecified() && !ip.is_loopback())
                .then(|| ip.to_string())
                .into_iter()
                .chain(self.tls_names.iter().cloned())
                .collect();
            let t = Tls::generate(&name, &extra)?;
            Some((t.server_config, t.ca_pem))
        } else {
            None
        };
        let shared = Arc::new(Shared::new(
            name,
            faults::new_token(),
            self.ready_delay,
            tls,
            kubeconfig_path,
        ));
        *lock(&shared.termination_grace) = self.termination_grace;
        *lock(&shared.default_namespace) = self.namespace.clone();
        for ns in ["default", "kube-system", "kube-public"] {
            shared.store.create(
                Kind::Namespace,
                "",
                json!({"metadata": {"name": ns}, "status": {"phase": "Active"}}),
            )?;
        }
        let api_addr = crate::server::start(&shared, self.api_addr).await?;
        *lock(&shared.api_addr) = api_addr;
        faults::write_own_kubeconfig(&shared)?;
        controller::spawn(shared.clone());
        // Cluster DNS on the conventional port when allowed, else on a free one.
        let dns_ip = shared.pool.next_external_ip();
        let dns = match DnsServer::start(dns_ip, 53, shared.dns_records.clone()).await {
            Ok(d) => d,
            Err(_) => DnsServer::start(dns_ip, 0, shared.dns_records.clone()).await?,
        };
        *lock(&shared.dns_addr) = Some(dns.local_addr());
        let cluster = Cluster {
            shared,
            dns: Some(dns),
            externals: Mutex::new(Vec::new()),
            _dir: dir,
        };
        if self.demo {
            cluster.apply_demo().await?;
        }
        Ok(cluster)
    }
}

/// A simulated Kubernetes cluster: a real API server on loopback, pods that are real servers
/// on their own loopback addresses, services, DNS, and faults on demand.
///
/// Everything stops when the value is dropped.
///
/// # Example
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cluster = kforward_testkit::Cluster::demo().await.unwrap();
/// let pods = cluster.pods("demo", Some("app=web"));
/// assert_eq!(pods.len(), 2);
/// let ip = pods[0].status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
/// let mut conn = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await.unwrap();
/// # });
/// ```
pub struct Cluster {
    pub(crate) shared: Arc<Shared>,
    dns: Option<DnsServer>,
    externals: Mutex<Vec<ExternalHost>>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

fn to_value<T: Serialize>(obj: &T) -> Result<Value, Error> {
    serde_json::to_value(obj).map_err(|e| Error::from(ApiError::bad_request(e.to_string())))
}

fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::from(ApiError::internal(e.to_string())))
}

impl Cluster {
    /// A builder with the defaults (HTTPS, 100 ms ready delay).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Starts an empty cluster with the defaults.
    ///
    /// # Errors
    ///
    /// See [`ClusterBuilder::start`].
    pub async fn start() -> Result<Cluster, Error> {
        Self::builder().start().await
    }

    /// Starts the demo scenario and waits until every demo deployment is Ready.
    ///
    /// # Errors
    ///
    /// See [`ClusterBuilder::start`]; also when the demo does not turn Ready in 30 s.
    pub async fn demo() -> Result<Cluster, Error> {
        Self::builder().demo().start().await
    }

    /// The cluster's name (also its context's name in the kubeconfig).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The API server's URL, such as `https://127.0.0.1:40123`.
    pub fn server_url(&self) -> String {
        faults::entry(&self.shared).server
    }

    /// The API server's address.
    pub fn api_addr(&self) -> SocketAddr {
        *lock(&self.shared.api_addr)
    }

    /// The kubeconfig file that points at this cluster (kept up to date when the token
    /// changes).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.shared.kubeconfig_path
    }

    /// The bearer token valid now.
    pub fn token(&self) -> String {
        lock(&self.shared.auth).token.clone()
    }

    /// This cluster's kubeconfig entry.
    pub fn kubeconfig_entry(&self) -> KubeconfigEntry {
        faults::entry(&self.shared)
    }

    /// Writes a kubeconfig holding this cluster and `others`, each as its own context;
    /// this cluster's is the current one.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig_with(&self, path: &Path, others: &[&Cluster]) -> Result<(), Error> {
        let mut entries = vec![self.kubeconfig_entry()];
        entries.extend(others.iter().map(|c| c.kubeconfig_entry()));
        write_kubeconfig(path, &entries)
    }

    /// The cluster DNS server's address.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(DnsServer::local_addr)
    }

    /// A resolver that behaves like the resolver of a pod in namespace `ns`.
    pub fn resolver(&self, ns: &str) -> Option<PodResolver> {
        self.dns_addr().map(|a| PodResolver::for_namespace(a, ns))
    }

    /// Registers a DNS name in the cluster DNS.
    pub fn add_dns_name(&self, name: &str, ips: Vec<Ipv4Addr>) {
        self.shared.dns_records.set(name, ips);
    }

    /// Whether `ip` is the address of one of this cluster's pods.
    pub fn is_pod_ip(&self, ip: IpAddr) -> bool {
        self.shared.pool.is_pod_ip(ip)
    }

    /// Starts an "external" host named `name` (registered in the cluster DNS) that answers
    /// HTTP on `http_port` and UDP echo on `udp_port`, but only to pod addresses: anything
    /// else has its connection reset. Port 80 falls back to a free port when binding it is
    /// not allowed; the address really used is returned.
    ///
    /// # Errors
    ///
    /// When the host cannot bind.
    pub async fn add_external_host(
        &self,
        name: &str,
        http_port: u16,
        udp_port: Option<u16>,
    ) -> Result<SocketAddr, Error> {
        let ip = self.shared.pool.next_external_ip();
        let shared = self.shared.clone();
        // Pods may connect, unless the cluster's egress goes through a proxy only
        // (`egress_only_from`): then only the proxy's address may.
        let allow = move |peer: IpAddr| match lock(&shared.faults.egress_only_from).as_ref() {
            Some(proxies) => proxies.contains(&peer),
            None => shared.pool.is_pod_ip(peer),
        };
        let host = match ExternalHost::start(name, ip, http_port, udp_port, allow.clone()).await {
            Ok(h) => h,
            Err(_) => ExternalHost::start(name, ip, 0, udp_port.map(|_| 0), allow).await?,
        };
        let addr = host.http_addr();
        self.shared.dns_records.set(name, vec![ip]);
        lock(&self.externals).push(host);
        Ok(addr)
    }

    /// Creates a namespace (no error when it exists).
    ///
    /// # Errors
    ///
    /// 422 for an invalid name.
    pub fn create_namespace(&self, name: &str) -> Result<(), Error> {
        match self.shared.store.create(
            Kind::Namespace,
            "",
            json!({"metadata": {"name": name}, "status": {"phase": "Active"}}),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates an object the way the API server does: defaults filled in, checked, stored.
    pub(crate) fn create(&self, kind: Kind, ns: &str, obj: Value) -> Result<Value, Error> {
        let obj = crate::registry::prepare_create(&self.shared, kind, obj)?;
        Ok(self.shared.store.create(kind, ns, obj)?)
    }

    /// Creates a service in `ns`; a ClusterIP is given to it.
    ///
    /// # Errors
    ///
    /// 409 when it exists, 404 when the namespace does not.
    pub fn create_service(&self, ns: &str, s: &Service) -> Result<Service, Error> {
        from_value(self.create(Kind::Service, ns, to_value(s)?)?)
    }

    /// Creates a bare pod in `ns`.
    ///
    /// # Errors
    ///
    /// 409 when it exists, 404 when the namespace does not.
    pub fn create_pod(&self, ns: &str, p: &Pod) -> Result<Pod, Error> {
        from_value(self.create(Kind::Pod, ns, to_value(p)?)?)
    }

    /// The pods of `ns`, optionally filtered by a label selector such as `app=web`, sorted
    /// by creation.
    pub fn pods(&self, ns: &str, selector: Option<&str>) -> Vec<Pod> {
        let sel = selector
            .and_then(|s| crate::selector::Selector::parse(s).ok())
            .unwrap_or_default();
        let (items, _) = self.shared.store.list(Kind::Pod, Some(ns));
        let mut pods: Vec<Value> = items
            .into_iter()
            .filter(|p| sel.is_empty() || sel.matches(&p["metadata"]["labels"]))
            .collect();
        pods.sort_by_key(|p| {
            p["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
        });
        pods.into_iter()
            .filter_map(|p| from_value(p).ok())
            .collect()
    }

    /// The ready pods of `ns` matching `selector` (and not being deleted).
    pub fn ready_pods(&self, ns: &str, selector: &str) -> Vec<Pod> {
        self.pods(ns, Some(selector))
            .into_iter()
            .filter(|p| serde_json::to_value(p).is_ok_and(|v| controller::pod_is_ready(&v)))
            .collect()
    }

    /// One pod.
    ///
    /// # Errors
    ///
    /// 404 when it does not exist.
    pub fn pod(&self, ns: &str, name: &str) -> Result<Pod, Error> {
        from_value(self.shared.store.get(Kind::Pod, ns, name)?)
    }

    /// One service.
    ///
    /// # Errors
    ///
    /// 404 when it does not exist.
    pub fn service(&self, ns: &str, name: &str) -> Result<Service, Error> {
        from_value(self.shared.store.get(Kind::Service, ns, name)?)
    }

    /// Deletes a pod (gracefully: it turns NotReady, then stops, then is removed).
    ///
    /// # Errors
    ///
    /// 404 when it does not exist.
    pub fn delete_pod(&self, ns: &str, name: &str) -> Result<(), Error> {
        crate::registry::delete(&self.shared, Kind::Pod, ns, name)?;
        Ok(())
    }

    /// Deletes a service.
    ///
    /// # Errors
    ///
    /// 404 when it does not exist.
    pub fn delete_service(&self, ns: &str, name: &str) -> Result<(), Error> {
        crate::registry::delete(&self.shared, Kind::Service, ns, name)?;
        Ok(())
    }

    /// Waits until `f` holds, re-checking after every change in the cluster.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming `what` when it does not hold within `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Cluster) -> bool,
    ) -> Result<(), Error> {
        let mut events = self.shared.store.subscribe();
        let work = async {
            loop {
                if f(self) {
                    return;
                }
                tokio::select! {
                    _ = events.recv() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| Error::Timeout(timeout, what.to_string()))
    }

    /// Creates the demo scenario and waits until it is Ready.
    ///
    /// # Errors
    ///
    /// When an object cannot be created or the demo does not turn Ready in 30 s.
    pub async fn apply_demo(&self) -> Result<(), Error> {
        self.create_namespace(DEMO_NAMESPACE)?;
        let demo = demo_objects();
        for d in &demo.deployments {
            self.create_deployment(DEMO_NAMESPACE, d)?;
        }
        for s in &demo.statefulsets {
            self.create_statefulset(DEMO_NAMESPACE, s)?;
        }
        for s in &demo.services {
            self.create_service(DEMO_NAMESPACE, s)?;
        }
        self.add_external_host(DEMO_EXTERNAL_HOST, 80, Some(5353))
            .await?;
        let limit = Duration::from_secs(30);
        for d in &demo.deployments {
            let name = d.metadata.name.as_deref().unwrap_or_default();
            self.wait_deployment_ready(DEMO_NAMESPACE, name, limit)
                .await?;
        }
        for s in &demo.statefulsets {
            let name = s.metadata.name.as_deref().unwrap_or_default();
            self.wait_statefulset_ready(DEMO_NAMESPACE, name, limit)
                .await?;
        }
        // A deployment turns Ready in the same pass that kube-proxy learns of its pods,
        // but before kube-proxy's step of that pass has run: wait for the pass to end, so
        // a ClusterIP connection made right after `demo()` has a backend.
        self.settle(Duration::from_secs(30)).await
    }

    /// Waits until the control plane has caught up with every write made so far: pods
    /// started or stopped, EndpointSlices updated and ClusterIP forwarders following them.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the control plane does not catch up within `timeout`.
    ///
    /// # Example
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let cluster = kforward_testkit::Cluster::demo().await.unwrap();
    /// cluster.set_pod_ready("demo", &cluster.ready_pods("demo", "app=echo")[0]
    ///     .metadata.name.clone().unwrap(), false).unwrap();
    /// cluster.settle(Duration::from_secs(10)).await.unwrap();
    /// # });
    /// ```
    pub async fn settle(&self, timeout: Duration) -> Result<(), Error> {
        let want = self.shared.store.resource_version();
        let mut seen = self.shared.reconciled.subscribe();
        tokio::time::timeout(timeout, seen.wait_for(|v| *v >= want))
            .await
            .map_err(|_| Error::Timeout(timeout, "the control plane to catch up".into()))?
            .map(|_| ())
            .map_err(|_| Error::Timeout(timeout, "the control plane (it stopped)".into()))
    }

    /// The address an external host really listens on.
    pub fn external_host_addr(&self, name: &str) -> Option<SocketAddr> {
        lock(&self.externals)
            .iter()
            .find(|h| h.name() == name)
            .map(ExternalHost::http_addr)
    }

    /// The UDP address of an external host, when it has one.
    pub fn external_host_udp_addr(&self, name: &str) -> Option<SocketAddr> {
        lock(&self.externals)
            .iter()
            .find(|h| h.name() == name)
            .and_then(ExternalHost::udp_addr)
    }

    // Faults.

    /// Cuts every live port-forward stream at once, as a kubelet or network failure would.
    pub fn drop_port_forwards(&self) {
        self.shared.drop_port_forwards();
    }

    /// Pauses the API server: it stops answering, and open connections (watches and
    /// port-forward streams) stop moving, until [`Cluster::resume`].
    pub fn pause(&self) {
        faults::pause(&self.shared, true);
    }

    /// Ends a [`Cluster::pause`].
    pub fn resume(&self) {
        faults::pause(&self.shared, false);
    }

    /// Restarts the API server on the same address: every connection is cut; stored
    /// objects survive.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound again.
    pub async fn restart_api(&self) -> Result<(), Error> {
        crate::server::restart(&self.shared).await
    }

    /// Makes the API server accept TCP connections only from `peers`, such as a proxy's
    /// outbound address: any other connection is reset at once, as a firewall that lets only
    /// the proxy through would. A client that reaches the API server then went through the
    /// proxy. [`Cluster::api_from_anywhere`] lifts it.
    ///
    /// # Example
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cluster = kforward_testkit::Cluster::start().await.unwrap();
    /// cluster.api_only_from(["127.253.0.1".parse().unwrap()]);
    /// // The reset may come before the connect is seen as done, or on the first read.
    /// if let Ok(mut c) = tokio::net::TcpStream::connect(cluster.api_addr()).await {
    ///     let mut buf = [0u8; 1];
    ///     let read = tokio::io::AsyncReadExt::read(&mut c, &mut buf).await;
    ///     assert!(read.is_err() || read.unwrap() == 0, "reset");
    /// }
    /// # });
    /// ```
    pub fn api_only_from(&self, peers: impl IntoIterator<Item = IpAddr>) {
        *lock(&self.shared.faults.api_only_from) = Some(peers.into_iter().collect());
    }

    /// Lifts [`Cluster::api_only_from`].
    pub fn api_from_anywhere(&self) {
        *lock(&self.shared.faults.api_only_from) = None;
    }

    /// Makes external hosts ([`Cluster::add_external_host`]) answer only `proxies` (an
    /// egress proxy's outbound addresses) instead of pods: a cluster whose pods reach the
    /// outside only through a proxy. Pods, services and cluster DNS are not affected.
    /// [`Cluster::egress_direct`] lifts it.
    pub fn egress_only_through(&self, proxies: impl IntoIterator<Item = IpAddr>) {
        *lock(&self.shared.faults.egress_only_from) = Some(proxies.into_iter().collect());
    }

    /// Lifts [`Cluster::egress_only_through`]: pods reach external hosts directly again.
    pub fn egress_direct(&self) {
        *lock(&self.shared.faults.egress_only_from) = None;
    }

    /// Writes a kubeconfig for this cluster whose cluster entry has `proxy-url: proxy_url`
    /// (kubectl's and kforward's proxy toward the API server).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig_with_proxy(&self, path: &Path, proxy_url: &str) -> Result<(), Error> {
        self.write_kubeconfig_behind(path, &BehindProxy::new().proxy_url(proxy_url))
    }

    /// Writes a kubeconfig for this cluster as a user behind a proxy writes it (see
    /// [`BehindProxy`]).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    ///
    /// # Example
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use kforward_testkit::BehindProxy;
    /// let cluster = kforward_testkit::Cluster::start().await.unwrap();
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("kubeconfig");
    /// let how = BehindProxy::new().proxy_url("socks5h://127.0.0.1:1080").server("https://api.proxied.test:6443");
    /// cluster.write_kubeconfig_behind(&path, &how).unwrap();
    /// assert!(std::fs::read_to_string(&path).unwrap().contains("socks5h://"));
    /// # });
    /// ```
    pub fn write_kubeconfig_behind(&self, path: &Path, how: &BehindProxy) -> Result<(), Error> {
        let mut entry = self.kubeconfig_entry();
        if let Some(server) = &how.server {
            entry.server = server.clone();
        }
        if let (Some(ca), Some(extra)) = (entry.ca_pem.as_mut(), &how.extra_ca) {
            ca.push_str(extra);
        }
        let mut config = crate::kubeconfig_json(&[entry]);
        if let Some(proxy_url) = &how.proxy_url {
            config["clusters"][0]["cluster"]["proxy-url"] = json!(proxy_url);
        }
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| Error::Io(path.to_path_buf(), std::io::Error::other(e)))?;
        std::fs::write(path, text).map_err(|e| Error::Io(path.to_path_buf(), e))
    }

    /// Adds latency before every API answer.
    pub fn set_latency(&self, latency: Duration) {
        faults::set_latency(&self.shared, latency);
    }

    /// Answers `verb` on `resource` (such as `create`, `pods/portforward`) with 403.
    /// `*` matches any verb or resource.
    pub fn deny(&self, verb: &str, resource: &str) {
        faults::deny(&self.shared, verb, resource);
    }

    /// Lifts every [`Cluster::deny`].
    pub fn allow_all(&self) {
        faults::allow_all(&self.shared);
    }

    /// Expires the current token (it now gets 401) and writes a new one into the
    /// kubeconfig, as a credential plugin would hand out a fresh one.
    ///
    /// # Errors
    ///
    /// When the kubeconfig cannot be written.
    pub fn expire_token(&self) -> Result<String, Error> {
        faults::expire_token(&self.shared)
    }

    /// Forces a pod NotReady (`false`) or lets it be Ready again (`true`).
    ///
    /// # Errors
    ///
    /// 404 when the pod does not exist.
    pub fn set_pod_ready(&self, ns: &str, name: &str, ready: bool) -> Result<(), Error> {
        Ok(faults::set_pod_ready(&self.shared, ns, name, ready)?)
    }

    /// Forgets the watch history: every watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// Changes how long new pods take to turn Ready.
    pub fn set_ready_delay(&self, d: Duration) {
        *lock(&self.shared.ready_delay) = d;
    }

    /// The counters: requests served, live and total port-forward streams.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats()
    }
}

/// How a kubeconfig written by [`Cluster::write_kubeconfig_behind`] differs from the
/// cluster's own: a `proxy-url`, another server URL (a name only a proxy resolves), and more
/// CAs in the bundle (an `https://` proxy's, where kubectl looks for it).
///
/// # Example
///
/// ```
/// let how = kforward_testkit::BehindProxy::new().proxy_url("http://127.0.0.1:3128");
/// assert_eq!(how, kforward_testkit::BehindProxy::new().proxy_url("http://127.0.0.1:3128"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BehindProxy {
    proxy_url: Option<String>,
    server: Option<String>,
    extra_ca: Option<String>,
}

impl BehindProxy {
    /// The cluster's own kubeconfig entry, unchanged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the cluster's `proxy-url`.
    #[must_use]
    pub fn proxy_url(mut self, url: impl Into<String>) -> Self {
        self.proxy_url = Some(url.into());
        self
    }

    /// Points the cluster at `url` instead of its own URL.
    #[must_use]
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.server = Some(url.into());
        self
    }

    /// Adds `pem` to the cluster's CA bundle.
    #[must_use]
    pub fn extra_ca(mut self, pem: impl Into<String>) -> Self {
        self.extra_ca = Some(pem.into());
        self
    }
}
