//! [`Cluster`]'s API for workloads: Deployments (and the ReplicaSets they own) and
//! StatefulSets: create, read, scale, restart, and wait until rolled out.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::selector::Selector;
use crate::store::now_rfc3339;
use crate::{ApiError, Error, Kind};

fn to_value<T: Serialize>(obj: &T) -> Result<Value, Error> {
    serde_json::to_value(obj).map_err(|e| Error::from(ApiError::bad_request(e.to_string())))
}

fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::from(ApiError::internal(e.to_string())))
}

/// Whether a workload's status says every replica runs the current template and is Ready
/// (what `kubectl rollout status` waits for).
fn rolled_out(kind: Kind, obj: &Value) -> bool {
    let want = obj["spec"]["replicas"].as_u64().unwrap_or(1);
    let s = &obj["status"];
    let n = |field: &str| s[field].as_u64().unwrap_or(0);
    let observed = s["observedGeneration"] == obj["metadata"]["generation"];
    match kind {
        Kind::StatefulSet => {
            observed
                && n("readyReplicas") == want
                && n("replicas") == want
                && n("updatedReplicas") == want
                && s["currentRevision"] == s["updateRevision"]
        }
        _ => {
            observed
                && n("updatedReplicas") == want
                && n("readyReplicas") == want
                && n("replicas") == want
                && n("availableReplicas") == want
        }
    }
}

impl Cluster {
    /// Creates a deployment in `ns`; the deployment controller makes its ReplicaSet and
    /// pods.
    ///
    /// # Errors
    ///
    /// 409 when it exists, 404 when the namespace does not, 422 when it is invalid (no
    /// selector, or one that does not match the template's labels).
    pub fn create_deployment(&self, ns: &str, d: &Deployment) -> Result<Deployment, Error> {
        from_value(self.create(Kind::Deployment, ns, to_value(d)?)?)
    }

    /// Creates a StatefulSet in `ns`; its pods come up one at a time as `NAME-0`,
    /// `NAME-1`, ...
    ///
    /// # Errors
    ///
    /// As [`Cluster::create_deployment`].
    ///
    /// # Example
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use kforward_testkit::{Cluster, ECHO_IMAGE, headless_service, statefulset};
    /// let cluster = Cluster::start().await.unwrap();
    /// cluster.create_namespace("data").unwrap();
    /// let sts = statefulset("pg", ECHO_IMAGE, 2, "pg", &[("pg", 5432, "TCP")]);
    /// cluster.create_statefulset("data", &sts).unwrap();
    /// cluster.create_service("data", &headless_service("pg", "pg", &[("pg", 5432)])).unwrap();
    /// cluster.wait_statefulset_ready("data", "pg", Duration::from_secs(30)).await.unwrap();
    /// let names: Vec<_> = cluster.pods("data", Some("app=pg")).into_iter()
    ///     .filter_map(|p| p.metadata.name).collect();
    /// assert_eq!(names, ["pg-0", "pg-1"]);
    /// # });
    /// ```
    pub fn create_statefulset(&self, ns: &str, s: &StatefulSet) -> Result<StatefulSet, Error> {
        from_value(self.create(Kind::StatefulSet, ns, to_value(s)?)?)
    }

    /// One deployment.
    ///
    /// # Errors
    ///
    /// 404 when it does not exist.
    pub fn deployment(&self, ns: &str, name: &str) -> Result<Deployment, Error> {
        from_value(self.shared.store.get(Kind::Deployment, ns, name)?)
    }

    /// One StatefulSet.
    ///
    /// # Errors
    ///
    /// 404 when it does not exist.
    pub fn statefulset(&self, ns: &str, name: &str) -> Result<StatefulSet, Error> {
        from_value(self.shared.store.get(Kind::StatefulSet, ns, name)?)
    }

    /// The ReplicaSets of `ns`, optionally filtered by a label selector, oldest first.
    pub fn replicasets(&self, ns: &str, selector: Option<&str>) -> Vec<ReplicaSet> {
        let sel = selector
            .and_then(|s| Selector::parse(s).ok())
            .unwrap_or_default();
        let (mut items, _) = self.shared.store.list(Kind::ReplicaSet, Some(ns));
        items.retain(|o| sel.is_empty() || sel.matches(&o["metadata"]["labels"]));
        items.sort_by(|a, b| {
            let key = |o: &Value| {
                (
                    o["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|r| r.parse::<u64>().ok()),
                )
            };
            key(a).cmp(&key(b))
        });
        items
            .into_iter()
            .filter_map(|o| from_value(o).ok())
            .collect()
    }

    /// What `kubectl rollout restart` does: stamps the pod template with the time, which
    /// makes the deployment controller replace every pod, one at a time.
    ///
    /// # Errors
    ///
    /// 404 when the deployment does not exist.
    pub fn rollout_restart(&self, ns: &str, name: &str) -> Result<(), Error> {
        self.restart(Kind::Deployment, ns, name)
    }

    /// [`Cluster::rollout_restart`] for a StatefulSet: its pods are replaced from the
    /// highest ordinal down, each under its own name.
    ///
    /// # Errors
    ///
    /// 404 when the StatefulSet does not exist.
    pub fn rollout_restart_statefulset(&self, ns: &str, name: &str) -> Result<(), Error> {
        self.restart(Kind::StatefulSet, ns, name)
    }

    fn restart(&self, kind: Kind, ns: &str, name: &str) -> Result<(), Error> {
        self.shared.store.update(kind, ns, name, |d| {
            crate::server::merge_patch(
                d,
                &json!({"spec": {"template": {"metadata": {"annotations": {
                    "kubectl.kubernetes.io/restartedAt": format!("{}-{}", now_rfc3339(), crate::store::random_suffix(4)),
                }}}}}),
            );
            Ok(())
        })?;
        Ok(())
    }

    /// Scales a deployment.
    ///
    /// # Errors
    ///
    /// 404 when the deployment does not exist.
    pub fn scale(&self, ns: &str, name: &str, replicas: u32) -> Result<(), Error> {
        self.scale_kind(Kind::Deployment, ns, name, replicas)
    }

    /// Scales a StatefulSet (pods are added from the next ordinal up, removed from the
    /// highest down).
    ///
    /// # Errors
    ///
    /// 404 when the StatefulSet does not exist.
    pub fn scale_statefulset(&self, ns: &str, name: &str, replicas: u32) -> Result<(), Error> {
        self.scale_kind(Kind::StatefulSet, ns, name, replicas)
    }

    fn scale_kind(&self, kind: Kind, ns: &str, name: &str, replicas: u32) -> Result<(), Error> {
        self.shared.store.update(kind, ns, name, |d| {
            d["spec"]["replicas"] = json!(replicas);
            Ok(())
        })?;
        Ok(())
    }

    /// Waits until a deployment has all its replicas Ready and of the current template.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`].
    pub async fn wait_deployment_ready(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.wait_rolled_out(Kind::Deployment, ns, name, timeout)
            .await
    }

    /// Waits until a StatefulSet has all its pods Ready and at the current revision.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`].
    pub async fn wait_statefulset_ready(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.wait_rolled_out(Kind::StatefulSet, ns, name, timeout)
            .await
    }

    async fn wait_rolled_out(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        let what = format!(
            "{} {ns}/{name} to be ready",
            kind.name().to_ascii_lowercase()
        );
        self.wait_for(&what, timeout, |c| {
            c.shared
                .store
                .get(kind, ns, name)
                .is_ok_and(|o| rolled_out(kind, &o))
        })
        .await
    }
}
