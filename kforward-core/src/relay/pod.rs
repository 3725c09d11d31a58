//! Relay pods: one per (session, namespace), created on first use, kept alive by a
//! heartbeat annotation, replaced when deleted, deleted on stop, and garbage-collected when
//! their session is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::manifest::{
    ANNOTATION_HEARTBEAT, LABEL_MANAGED_BY, LABEL_NAME, RelayOptions, now_secs, relay_pod,
};
use super::startup::{Startup, assess};
use crate::client::KubeContext;
use crate::error::{Error, Result};

/// How often the owner refreshes its pods' heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);
/// A relay pod whose heartbeat is older than this belongs to a dead session (what [`gc`]
/// uses; [`gc_stale_after`] takes another). Four heartbeats: a live session's pods are never
/// that old.
pub const DEFAULT_HEARTBEAT_STALE: Duration = Duration::from_secs(120);
/// How often a relay pod's status is read while waiting: a pull error or an unschedulable
/// pod shows within this of the kubelet or the scheduler reporting it.
const READY_POLL: Duration = Duration::from_millis(100);

/// The relay pods of one session, at most one per namespace.
pub struct RelayPods {
    /// The connection to the cluster; replaced when the forwards reconnect.
    ctx: std::sync::RwLock<KubeContext>,
    opts: RelayOptions,
    session: String,
    token: String,
    /// Namespace to pod name.
    pods: tokio::sync::Mutex<HashMap<String, String>>,
    /// A copy of `pods` the heartbeat and `Drop` read without awaiting.
    known: std::sync::Mutex<HashMap<String, String>>,
    /// A relay refused framed TCP (an image from before it): plain TCP from then on.
    plain_tcp_only: AtomicBool,
    stop: CancellationToken,
}

impl std::fmt::Debug for RelayPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayPods")
            .field("session", &self.session)
            .field("image", &self.opts.image)
            .finish()
    }
}

/// Relay pods shared by several forwards; equal when they are the same pods.
#[derive(Debug, Clone)]
pub struct SharedRelayPods(pub Arc<RelayPods>);

impl PartialEq for SharedRelayPods {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedRelayPods {}

fn random_hex(len: usize) -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RelayPods {
    /// Whether a relay refused framed TCP, so that TCP streams go plain (a local client's
    /// half-close then never reaches the destination).
    pub(crate) fn plain_tcp_only(&self) -> bool {
        self.plain_tcp_only.load(Ordering::Relaxed)
    }

    /// Remembers that a relay refused framed TCP.
    pub(crate) fn set_plain_tcp_only(&self) {
        self.plain_tcp_only.store(true, Ordering::Relaxed);
    }

    /// Relay pods for a new session (a random id); nothing is created until first use.
    /// A heartbeat task keeps the session's pods marked alive until [`delete_all`](Self::delete_all)
    /// or drop.
    pub fn new(ctx: KubeContext, opts: RelayOptions) -> Arc<Self> {
        let pods = Arc::new(RelayPods {
            ctx: std::sync::RwLock::new(ctx),
            opts,
            session: random_hex(8),
            token: random_hex(32),
            pods: tokio::sync::Mutex::new(HashMap::new()),
            known: std::sync::Mutex::new(HashMap::new()),
            plain_tcp_only: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&pods);
        let stop = pods.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
                }
                let Some(p) = weak.upgrade() else { return };
                p.heartbeat().await;
            }
        });
        pods
    }

    /// The session id (the `kforward.dev/session` label).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The secret the relay checks.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The relay's port in its pod.
    pub fn port(&self) -> u16 {
        self.opts.port
    }

    /// The connection to the cluster.
    pub fn context(&self) -> KubeContext {
        self.ctx
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Uses `ctx` from now on (new credentials after a reconnect).
    pub fn set_context(&self, ctx: KubeContext) {
        *self
            .ctx
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ctx;
    }

    fn client(&self) -> kube::Client {
        self.context().client().clone()
    }

    /// The relay pods of this session, as `(namespace, pod)`: those in use and those still
    /// starting.
    pub fn current(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = lock(&self.known).clone().into_iter().collect();
        v.sort();
        v
    }

    async fn heartbeat(&self) {
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_HEARTBEAT: now_secs().to_string()}}});
        for (ns, pod) in self.current() {
            let api: Api<Pod> = Api::namespaced(self.client(), &ns);
            if let Err(e) = api
                .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                debug!(%pod, error = %e, "relay heartbeat failed");
            }
        }
    }

    /// The ready relay pod of `namespace`, created (and waited for) when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::RelayPod`] when the pod is refused by admission (a webhook, Pod Security, a
    /// quota), cannot pull its image, fits no node, or is not Ready in time: reported as
    /// soon as the API server, the scheduler or the kubelet says so, naming the image or
    /// the reason and the flag that changes it. [`Error::RelayPodPatch`] for a patch that
    /// does not give a pod. [`Error::Forbidden`] without RBAC's `create pods`, and the
    /// other API errors of creating a pod.
    pub async fn pod_for(&self, namespace: &str) -> Result<String> {
        let mut pods = self.pods.lock().await;
        if let Some(p) = pods.get(namespace) {
            return Ok(p.clone());
        }
        super::env::check_relay_env(&self.opts.env).map_err(|message| Error::RelayPod {
            namespace: namespace.to_string(),
            message,
            retryable: false,
        })?;
        let ctx = self.context();
        let env = super::env::relay_pod_env(&ctx, &self.opts.env).await;
        let api: Api<Pod> = Api::namespaced(ctx.client().clone(), namespace);
        let name = format!("kforward-relay-{}-{}", self.session, random_hex(5));
        let pod = relay_pod(&self.opts, &name, &self.session, &self.token, env)?;
        // Known before it exists: a forward stopped while its pod is being created or is
        // starting drops this future, and `delete_all` (or `Drop`) must still find the pod.
        lock(&self.known).insert(namespace.to_string(), name.clone());
        if let Err(e) = api.create(&PostParams::default(), &pod).await {
            lock(&self.known).remove(namespace);
            return Err(self.create_error(e, namespace));
        }
        info!(pod = %name, %namespace, "created relay pod");
        if let Err(e) = self.wait_ready(&api, namespace, &name).await {
            lock(&self.known).remove(namespace);
            let _ = api.delete(&name, &DeleteParams::default()).await;
            return Err(e);
        }
        pods.insert(namespace.to_string(), name.clone());
        Ok(name)
    }

    /// Maps the API server's refusal of a new relay pod. A 403 is either RBAC (the user may
    /// not create pods) or admission (a webhook, Pod Security, a ResourceQuota refused
    /// this pod). Both come as `Forbidden` with nothing but the message to tell them apart
    /// (apiserver `rbac` authorizer: `User "..." cannot create resource "pods"`; admission
    /// `webhook/errors/statuserror.go`, `pod-security-admission`, `resourcequota`), so the
    /// message's RBAC wording decides.
    fn create_error(&self, e: kube::Error, namespace: &str) -> Error {
        let ctx = self.context();
        let server = ctx.server();
        let refused = |message: String| Error::RelayPod {
            namespace: namespace.to_string(),
            message,
            retryable: false,
        };
        match e {
            kube::Error::Api(s)
                if s.code == 403 && !s.message.contains(" cannot create resource ") =>
            {
                let hint = if s.message.contains("violates PodSecurity") {
                    "the namespace's Pod Security level refuses it: the relay meets \"restricted\" \
                     unless --relay-pod-patch changes its security context"
                } else if s.message.contains("exceeded quota") {
                    "a ResourceQuota is used up: free some, or lower the relay's requests with --relay-pod-patch"
                } else {
                    "an admission policy refused it: add what it asks for (labels, annotations, \
                     resources, an image from an allowed registry) with --relay-pod-patch or --relay-image"
                };
                refused(format!(
                    "the cluster refused to create the relay pod ({}): {hint}",
                    s.message
                ))
            }
            kube::Error::Api(s) if s.code == 422 => refused(format!(
                "the API server found the relay pod invalid ({}): check --relay-pod-patch",
                s.message
            )),
            e => Error::from_kube(e, server, "create", "pods", namespace, None),
        }
    }

    async fn wait_ready(&self, api: &Api<Pod>, namespace: &str, name: &str) -> Result<()> {
        let fail = |message: String, retryable: bool| Error::RelayPod {
            namespace: namespace.to_string(),
            message,
            retryable,
        };
        let deadline = tokio::time::Instant::now() + self.opts.ready_timeout;
        let mut last = None;
        loop {
            match api.get_opt(name).await {
                Ok(Some(pod)) => match assess(&pod, &self.opts.image) {
                    Startup::Ready => return Ok(()),
                    Startup::Stuck { message, retryable } => return Err(fail(message, retryable)),
                    Startup::Starting(what) => last = what,
                },
                Ok(None) => {
                    return Err(fail(
                        format!("relay pod {name:?} was deleted while starting"),
                        true,
                    ));
                }
                Err(e) => debug!(error = %e, "reading the relay pod failed"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(
                    format!(
                        "relay pod {name:?} (image {:?}) was not ready after {}s (last seen: {})",
                        self.opts.image,
                        self.opts.ready_timeout.as_secs(),
                        last.as_deref().unwrap_or("no status"),
                    ),
                    true,
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// After a failure through `pod`: forgets it when it is gone or going, so the next
    /// [`pod_for`](Self::pod_for) makes a new one. Returns whether it was gone.
    pub async fn check(&self, namespace: &str, pod: &str) -> bool {
        let api: Api<Pod> = Api::namespaced(self.client(), namespace);
        let gone = match api.get_opt(pod).await {
            Ok(None) => true,
            Ok(Some(p)) => {
                p.metadata.deletion_timestamp.is_some()
                    || matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed" | "Succeeded")
                    )
            }
            Err(_) => false,
        };
        if gone {
            warn!(%pod, %namespace, "relay pod is gone; a new one will be made");
            // A relay that exited (idle) leaves a completed pod behind: ours to remove.
            let _ = api.delete(pod, &DeleteParams::default()).await;
            let mut pods = self.pods.lock().await;
            if pods.get(namespace).map(String::as_str) == Some(pod) {
                pods.remove(namespace);
                lock(&self.known).remove(namespace);
            }
        }
        gone
    }

    /// Deletes every relay pod of this session, the ready ones and those still starting
    /// for a forward that stopped meanwhile, and stops the heartbeat.
    pub async fn delete_all(&self) {
        self.stop.cancel();
        let mut pods: HashMap<String, String> = self.pods.lock().await.drain().collect();
        pods.extend(lock(&self.known).drain());
        for (ns, pod) in pods {
            let api: Api<Pod> = Api::namespaced(self.client(), &ns);
            match api.delete(&pod, &DeleteParams::default()).await {
                Ok(_) => info!(%pod, namespace = %ns, "deleted relay pod"),
                // A creation that the stop cut short before the API server had it.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    debug!(%pod, namespace = %ns, "relay pod was never created");
                }
                Err(e) => warn!(%pod, namespace = %ns, error = %e, "cannot delete relay pod"),
            }
        }
    }
}

impl Drop for RelayPods {
    fn drop(&mut self) {
        self.stop.cancel();
        let pods: Vec<(String, String)> = lock(&self.known).drain().collect();
        if pods.is_empty() {
            return;
        }
        // Best effort: the relay also exits by itself when idle, and `gc` cleans up.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = self.client();
            rt.spawn(async move {
                for (ns, pod) in pods {
                    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                    let _ = api.delete(&pod, &DeleteParams::default()).await;
                }
            });
        }
    }
}

/// Deletes relay pods whose session is gone (heartbeat older than
/// [`DEFAULT_HEARTBEAT_STALE`], 2 minutes) or whose relay has exited (phase `Succeeded` or
/// `Failed`), in `namespace` or in every namespace; returns `namespace/name` of each pod
/// deleted, sorted.
///
/// # Errors
///
/// The API errors of listing and deleting pods.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// let deleted = kforward_core::relay::gc(&ctx, Some("demo")).await?;
/// println!("deleted {} relay pods", deleted.len());
/// # Ok(()) }
/// ```
pub async fn gc(ctx: &KubeContext, namespace: Option<&str>) -> Result<Vec<String>> {
    gc_stale_after(ctx, namespace, DEFAULT_HEARTBEAT_STALE).await
}

/// [`gc`] with another staleness: a pod whose heartbeat is older than `stale` counts as
/// its session's leftover. Below the heartbeat period (30 s) the pods of live sessions
/// count too: for tests and for a user who knows no session is running.
///
/// # Errors
///
/// As [`gc`].
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use std::time::Duration;
/// // Right after a crash, when no other kforward of this cluster runs.
/// let deleted =
///     kforward_core::relay::gc_stale_after(&ctx, Some("demo"), Duration::from_secs(1)).await?;
/// # Ok(()) }
/// ```
pub async fn gc_stale_after(
    ctx: &KubeContext,
    namespace: Option<&str>,
    stale: Duration,
) -> Result<Vec<String>> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(ctx.client().clone(), ns),
        None => Api::all(ctx.client().clone()),
    };
    let ns_label = namespace.unwrap_or("");
    let lp = ListParams::default().labels(&format!(
        "{LABEL_NAME}=kforward-relay,{LABEL_MANAGED_BY}=kforward"
    ));
    let list = api
        .list(&lp)
        .await
        .map_err(|e| Error::from_kube(e, ctx.server(), "list", "pods", ns_label, None))?;
    let now = now_secs();
    let mut deleted = Vec::new();
    for pod in list.items {
        let (Some(name), Some(ns)) = (pod.metadata.name.clone(), pod.metadata.namespace.clone())
        else {
            continue;
        };
        let beat = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_HEARTBEAT))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let exited = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if !exited && now.saturating_sub(beat) <= stale.as_secs() {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(ctx.client().clone(), &ns);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Deleted meanwhile (by its session, or another gc): nothing left to do.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => {
                return Err(Error::from_kube(
                    e,
                    ctx.server(),
                    "delete",
                    "pods",
                    &ns,
                    Some(&name),
                ));
            }
        }
        deleted.push(format!("{ns}/{name}"));
    }
    deleted.sort();
    Ok(deleted)
}
