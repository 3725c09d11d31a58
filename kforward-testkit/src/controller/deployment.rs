//! The deployment controller: one ReplicaSet per pod template, named `<deployment>-<hash>`
//! and labelled with that `pod-template-hash`, rolled out as Kubernetes does (RollingUpdate
//! within maxSurge/maxUnavailable, or Recreate), with the revision annotations `kubectl
//! rollout history`/`undo` read, a bounded history, and the status `rollout status` reads.
//!
//! Facts from `pkg/controller/deployment` of kubernetes/kubernetes: `rolling.go`
//! (`reconcileNewReplicaSet`, `reconcileOldReplicaSets`, `cleanupUnhealthyReplicas`,
//! `scaleDownOldReplicaSetsForRollingUpdate`), `recreate.go`, `sync.go`
//! (`getNewReplicaSet`, `calculateStatus`, `cleanupDeployment`) and
//! `util/deployment_util.go` (`NewRSNewReplicas`, `ResolveFenceposts`,
//! `SetNewReplicaSetAnnotations`, `annotationsToSkip`, the condition reasons).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::owner::{
    by_age, controller_uid, count, hash, name, namespace, owned, reference, without_zeros,
};
use crate::state::Shared;
use crate::store::now_rfc3339;
use crate::{ApiError, Kind};

/// The revision of a ReplicaSet (and, copied, of its deployment).
pub(crate) const REVISION: &str = "deployment.kubernetes.io/revision";
/// The revisions a ReplicaSet had before a rollback made it current again.
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells a deployment's ReplicaSets (and their pods) apart.
pub(crate) const TEMPLATE_HASH: &str = "pod-template-hash";
/// Deployment annotations not copied to its ReplicaSets (`annotationsToSkip`).
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
/// Longest `revision-history` annotation kept (`maxRevHistoryLengthInChars`).
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// The `pod-template-hash` of a template.
pub(crate) fn template_hash(template: &Value) -> String {
    hash(template.to_string().as_bytes())
}

/// A template without the `pod-template-hash` label and without the fields that only
/// spell a zero value (`null`, `""`, `{}`, `[]`), for `EqualIgnoreHash`: Kubernetes
/// compares typed templates, where `"creationTimestamp": null` or `"resources": {}` (which
/// Go clients such as `kubectl rollout undo` write) equal an absent field.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t["metadata"]["labels"].as_object_mut() {
        labels.remove(TEMPLATE_HASH);
    }
    semantic(&t).unwrap_or(Value::Null)
}

/// `v` without zero-valued fields, or `None` when nothing is left.
fn semantic(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Object(m) => {
            let kept: Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), semantic(v)?)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(Value::Array(
            a.iter()
                .map(|v| semantic(v).unwrap_or(Value::Null))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The revision annotation as a number (0 when absent).
pub(crate) fn revision(obj: &Value) -> i64 {
    obj["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `GetScaledValueFromIntOrPercent`: an int, or a percentage of `total` rounded up or down.
fn scaled(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if round_up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// `(maxSurge, maxUnavailable)` of a RollingUpdate deployment (`ResolveFenceposts`).
fn fenceposts(d: &Value, replicas: i64) -> (i64, i64) {
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let default = json!("25%");
    let surge = scaled(ru.get("maxSurge").unwrap_or(&default), replicas, true);
    let unavailable = scaled(
        ru.get("maxUnavailable").unwrap_or(&default),
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn is_recreate(d: &Value) -> bool {
    d["spec"]["strategy"]["type"] == "Recreate"
}

/// What this pass knows of one ReplicaSet.
struct Set {
    name: String,
    /// `spec.replicas`, as this pass leaves it.
    replicas: i64,
    /// `status.availableReplicas`.
    available: i64,
    obj: Value,
}

impl Set {
    fn new(obj: &Value) -> Set {
        Set {
            name: name(obj).to_string(),
            replicas: count(&obj["spec"]["replicas"], 1),
            available: count(&obj["status"]["availableReplicas"], 0),
            obj: obj.clone(),
        }
    }
}

pub(crate) fn reconcile(shared: &Arc<Shared>) -> Result<(), ApiError> {
    let (deployments, _) = shared.store.list(Kind::Deployment, None);
    let (sets, _) = shared.store.list(Kind::ReplicaSet, None);
    let (pods, _) = shared.store.list(Kind::Pod, None);
    for d in &deployments {
        reconcile_one(shared, d, &sets, &pods)?;
    }
    Ok(())
}

struct Rollout<'a> {
    shared: &'a Shared,
    d: &'a Value,
    ns: String,
    replicas: i64,
    max_surge: i64,
}

impl Rollout<'_> {
    /// Sets a ReplicaSet's replicas and the annotations that record the deployment's size.
    fn scale(&self, set: &mut Set, replicas: i64) -> Result<(), ApiError> {
        set.replicas = replicas;
        let (desired, max) = (
            self.replicas.to_string(),
            (self.replicas + self.max_surge).to_string(),
        );
        let updated = self
            .shared
            .store
            .update(Kind::ReplicaSet, &self.ns, &set.name, |rs| {
                rs["spec"]["replicas"] = json!(replicas);
                rs["metadata"]["annotations"][DESIRED_REPLICAS] = json!(desired);
                rs["metadata"]["annotations"][MAX_REPLICAS] = json!(max);
                Ok(())
            })?;
        set.obj = updated;
        Ok(())
    }

    /// Finds the ReplicaSet of the current template, creating it when `create` is set, and
    /// keeps its revision above every old one (a rollback makes an old set current again).
    fn new_set(
        &self,
        new: Option<&Value>,
        old: &[Set],
        create: bool,
    ) -> Result<Option<Set>, ApiError> {
        let next_revision = old.iter().map(|s| revision(&s.obj)).max().unwrap_or(0) + 1;
        let copied: Vec<(String, Value)> = self.d["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(rs) = new {
            let current = revision(rs);
            let min_ready = self.d["spec"]["minReadySeconds"].clone();
            let updated = self
                .shared
                .store
                .update(Kind::ReplicaSet, &self.ns, name(rs), |rs| {
                    for (k, v) in &copied {
                        rs["metadata"]["annotations"][k] = v.clone();
                    }
                    if current < next_revision {
                        rs["metadata"]["annotations"][REVISION] = json!(next_revision.to_string());
                        if current > 0 {
                            let history = rs["metadata"]["annotations"][REVISION_HISTORY]
                                .as_str()
                                .unwrap_or("")
                                .to_string();
                            let mut list: Vec<&str> =
                                history.split(',').filter(|s| !s.is_empty()).collect();
                            let old = current.to_string();
                            list.push(&old);
                            while list.join(",").len() > MAX_REVISION_HISTORY_CHARS
                                && list.len() > 1
                            {
                                list.remove(0);
                            }
                            rs["metadata"]["annotations"][REVISION_HISTORY] = json!(list.join(","));
                        }
                    }
                    if rs["spec"]["minReadySeconds"] != min_ready {
                        rs["spec"]["minReadySeconds"] = min_ready.clone();
                    }
                    Ok(())
                })?;
            return Ok(Some(Set::new(&updated)));
        }
        if !create {
            return Ok(None);
        }
        let template = &self.d["spec"]["template"];
        let hash = template_hash(template);
        let set_name = format!("{}-{hash}", name(self.d));
        let mut template = template.clone();
        template["metadata"]["labels"][TEMPLATE_HASH] = json!(hash);
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        let mut selector = self.d["spec"]["selector"].clone();
        selector["matchLabels"][TEMPLATE_HASH] = json!(hash);
        let mut annotations = Map::new();
        for (k, v) in copied {
            annotations.insert(k, v);
        }
        annotations.insert(DESIRED_REPLICAS.into(), json!(self.replicas.to_string()));
        annotations.insert(
            MAX_REPLICAS.into(),
            json!((self.replicas + self.max_surge).to_string()),
        );
        annotations.insert(REVISION.into(), json!(next_revision.to_string()));
        let mut spec = json!({
            "replicas": 0,
            "selector": selector,
            "template": template,
        });
        if !self.d["spec"]["minReadySeconds"].is_null() {
            spec["minReadySeconds"] = self.d["spec"]["minReadySeconds"].clone();
        }
        let rs = json!({
            "metadata": {
                "name": set_name,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [reference(self.d, Kind::Deployment)],
            },
            "spec": spec,
            "status": {"replicas": 0},
        });
        match self.shared.store.create(Kind::ReplicaSet, &self.ns, rs) {
            Ok(created) => Ok(Some(Set::new(&created))),
            // Another object holds the name (a hash collision): wait for the next pass.
            Err(e) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn reconcile_one(
    shared: &Shared,
    d: &Value,
    sets: &[Value],
    pods: &[Value],
) -> Result<(), ApiError> {
    let ns = namespace(d).to_string();
    let replicas = count(&d["spec"]["replicas"], 1);
    let (max_surge, max_unavailable) = if is_recreate(d) {
        (0, 0)
    } else {
        fenceposts(d, replicas)
    };
    let run = Rollout {
        shared,
        d,
        ns: ns.clone(),
        replicas,
        max_surge,
    };
    let template = without_hash(&d["spec"]["template"]);
    let mut mine = owned(d, sets);
    by_age(&mut mine);
    let new_obj = mine
        .iter()
        .rev()
        .find(|rs| without_hash(&rs["spec"]["template"]) == template)
        .copied();
    let mut old: Vec<Set> = mine
        .iter()
        .filter(|rs| new_obj.is_none_or(|n| name(n) != name(rs)))
        .map(|rs| Set::new(rs))
        .collect();
    let paused = d["spec"]["paused"] == true;
    let mut new = if paused {
        new_obj.map(Set::new)
    } else if is_recreate(d) {
        recreate(&run, new_obj, &mut old, pods)?
    } else {
        rolling(&run, new_obj, &mut old, max_unavailable)?
    };
    if !paused {
        cleanup(&run, new.as_ref(), &old)?;
    }
    if let Some(n) = &mut new {
        // Read back what the ReplicaSet controller reported for the new set.
        if let Ok(rs) = shared.store.get(Kind::ReplicaSet, &ns, &n.name) {
            n.obj = rs;
        }
    }
    status(shared, d, new.as_ref(), &old, max_unavailable)
}

/// One step of a RollingUpdate: scale the new set up within maxSurge, else the old sets
/// down while at least `replicas - maxUnavailable` pods stay available.
fn rolling(
    run: &Rollout<'_>,
    new_obj: Option<&Value>,
    old: &mut [Set],
    max_unavailable: i64,
) -> Result<Option<Set>, ApiError> {
    let Some(mut new) = run.new_set(new_obj, old, true)? else {
        return Ok(None);
    };
    let replicas = run.replicas;
    let total: i64 = old.iter().map(|s| s.replicas).sum::<i64>() + new.replicas;
    // `NewRSNewReplicas`.
    if new.replicas < replicas {
        let max_total = replicas + run.max_surge;
        if total < max_total {
            let up = (max_total - total).min(replicas - new.replicas);
            let target = new.replicas + up;
            run.scale(&mut new, target)?;
            return Ok(Some(new));
        }
    } else if new.replicas > replicas {
        run.scale(&mut new, replicas)?;
        return Ok(Some(new));
    }
    // `reconcileOldReplicaSets`.
    let old_pods: i64 = old.iter().map(|s| s.replicas).sum();
    if old_pods == 0 {
        return Ok(Some(new));
    }
    let all_pods = old_pods + new.replicas;
    let min_available = replicas - max_unavailable;
    let new_unavailable = new.replicas - new.available;
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(Some(new));
    }
    // Unhealthy old pods go first, oldest set first.
    let mut cleaned = 0;
    for set in old.iter_mut() {
        if cleaned >= max_scaled_down || set.replicas == 0 || set.replicas == set.available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(set.replicas - set.available);
        cleaned += down;
        run.scale(set, set.replicas - down)?;
    }
    // Then healthy ones, while enough stay available.
    let available: i64 =
        old.iter().map(|s| s.available.min(s.replicas)).sum::<i64>() + new.available;
    if available > min_available {
        let mut budget = available - min_available;
        for set in old.iter_mut() {
            if budget == 0 {
                break;
            }
            if set.replicas == 0 {
                continue;
            }
            let down = set.replicas.min(budget);
            budget -= down;
            run.scale(set, set.replicas - down)?;
        }
    }
    Ok(Some(new))
}

/// One step of a Recreate rollout: old sets to zero, wait until their pods are gone, then
/// the new set up to the full count.
fn recreate(
    run: &Rollout<'_>,
    new_obj: Option<&Value>,
    old: &mut [Set],
    pods: &[Value],
) -> Result<Option<Set>, ApiError> {
    let mut scaled = false;
    for set in old.iter_mut().filter(|s| s.replicas > 0) {
        run.scale(set, 0)?;
        scaled = true;
    }
    let old_uids: Vec<&str> = old
        .iter()
        .filter_map(|s| s.obj["metadata"]["uid"].as_str())
        .collect();
    let old_running = pods.iter().any(|p| {
        namespace(p) == run.ns
            && controller_uid(p).is_some_and(|u| old_uids.contains(&u))
            && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    if scaled || old_running {
        return run.new_set(new_obj, old, false);
    }
    let Some(mut new) = run.new_set(new_obj, old, true)? else {
        return Ok(None);
    };
    if new.replicas != run.replicas {
        run.scale(&mut new, run.replicas)?;
    }
    Ok(Some(new))
}

/// Deletes the oldest unused sets beyond `revisionHistoryLimit` (`cleanupDeployment`).
fn cleanup(run: &Rollout<'_>, new: Option<&Set>, old: &[Set]) -> Result<(), ApiError> {
    let limit = count(&run.d["spec"]["revisionHistoryLimit"], 10) as usize;
    let idle: Vec<&Set> = old
        .iter()
        .filter(|s| {
            s.replicas == 0
                && count(&s.obj["status"]["replicas"], 0) == 0
                && new.is_none_or(|n| n.name != s.name)
        })
        .collect();
    if idle.len() <= limit {
        return Ok(());
    }
    for set in idle.iter().take(idle.len() - limit) {
        let _ = run
            .shared
            .store
            .delete(Kind::ReplicaSet, &run.ns, &set.name);
    }
    Ok(())
}

/// A condition, keeping the times of `previous` when nothing about it changed.
fn condition(previous: &Value, ty: &str, status: bool, reason: &str, message: String) -> Value {
    let status = if status { "True" } else { "False" };
    let old = previous["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    if let Some(c) = old
        && c["status"] == status
        && c["reason"] == reason
        && c["message"] == message.as_str()
    {
        return c.clone();
    }
    let now = now_rfc3339();
    let transition = match old {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    json!({
        "type": ty,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    })
}

/// Writes `status` (`calculateStatus`, `syncRolloutStatus`) and the deployment's own revision
/// annotation.
fn status(
    shared: &Shared,
    d: &Value,
    new: Option<&Set>,
    old: &[Set],
    max_unavailable: i64,
) -> Result<(), ApiError> {
    let ns = namespace(d);
    let replicas = count(&d["spec"]["replicas"], 1);
    let all: Vec<&Value> = old.iter().chain(new).map(|s| &s.obj).collect();
    let sum = |field: &str| -> i64 { all.iter().map(|rs| count(&rs["status"][field], 0)).sum() };
    let spec_total: i64 = old.iter().chain(new).map(|s| s.replicas).sum();
    let available = sum("availableReplicas");
    let actual = sum("replicas");
    let updated = new.map_or(0, |n| count(&n.obj["status"]["replicas"], 0));
    let new_available = new.map_or(0, |n| count(&n.obj["status"]["availableReplicas"], 0));
    let previous = &d["status"];
    let max_unavailable = if is_recreate(d) || replicas == 0 {
        0
    } else {
        max_unavailable.min(replicas)
    };
    let minimum = available >= replicas - max_unavailable;
    let mut conditions = vec![condition(
        previous,
        "Available",
        minimum,
        if minimum {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if minimum {
            "Deployment has minimum availability.".into()
        } else {
            "Deployment does not have minimum availability.".into()
        },
    )];
    if let Some(n) = new {
        let complete = updated == replicas
            && actual == replicas
            && new_available == replicas
            && old
                .iter()
                .all(|s| count(&s.obj["status"]["replicas"], 0) == 0);
        let (reason, message) = if complete {
            (
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{}\" has successfully progressed.", n.name),
            )
        } else {
            (
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{}\" is progressing.", n.name),
            )
        };
        conditions.push(condition(previous, "Progressing", true, reason, message));
    }
    let status = without_zeros(
        json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": actual,
            "updatedReplicas": updated,
            "readyReplicas": sum("readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": (spec_total - available).max(0),
            "conditions": conditions,
        }),
        &[],
    );
    let new_revision = new.map(|n| revision(&n.obj).to_string());
    shared.store.update(Kind::Deployment, ns, name(d), |o| {
        o["status"] = status;
        if let Some(r) = new_revision
            && r != "0"
        {
            o["metadata"]["annotations"][REVISION] = json!(r);
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let d = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}});
        assert_eq!(fenceposts(&d, 2), (1, 0));
        assert_eq!(fenceposts(&d, 4), (1, 1));
        assert_eq!(fenceposts(&d, 10), (3, 2));
        let zero =
            json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}});
        assert_eq!(fenceposts(&zero, 3), (0, 1));
        assert_eq!(fenceposts(&json!({"spec": {}}), 1), (1, 0));
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let mut b = a.clone();
        b["metadata"]["labels"][TEMPLATE_HASH] = json!("abc");
        assert_eq!(without_hash(&a), without_hash(&b));
        let only_hash = json!({"metadata": {"labels": {TEMPLATE_HASH: "x"}}, "spec": {"a": 1}});
        assert_eq!(without_hash(&only_hash), json!({"spec": {"a": 1}}));
        // What Go writes for zero values equals what is absent.
        let go = json!({"metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {"containers": [], "resources": {}}});
        assert_eq!(
            without_hash(&go),
            without_hash(&json!({"metadata": {"labels": {"app": "web"}}}))
        );
    }
}
