//! The object store: what etcd and the watch cache are to a real API server.
//!
//! Objects are kept as JSON, exactly as they are served. Every write takes the next
//! resourceVersion from one cluster-wide counter and is appended to a bounded history that
//! watches replay from; a watch from a version older than the history answers 410 Expired,
//! as the real watch cache does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{ApiError, Kind};

/// How many events the history keeps for watches to resume from.
const HISTORY: usize = 10_000;
/// Depth of the live event channel; a watcher that falls this far behind is ended and must
/// list again, like a real watcher whose cache window overflowed.
const LIVE_EVENTS: usize = 16_384;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created (or is sent as part of the initial state).
    Added,
    /// The object changed.
    Modified,
    /// The object was removed; the event carries its last state.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug, Clone)]
pub struct StoreEvent {
    /// The kind of the object.
    pub kind: Kind,
    /// What happened.
    pub ty: EventType,
    /// The object after the change (before it, for a deletion), with its resourceVersion.
    pub object: Value,
    /// The resourceVersion of this change.
    pub rv: u64,
}

impl StoreEvent {
    /// The object's namespace ("" for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or("")
    }
}

type Key = (Kind, String, String);

/// The start of a watch: the events to replay, and the receiver of the later ones.
pub type WatchStart = (Vec<Arc<StoreEvent>>, broadcast::Receiver<Arc<StoreEvent>>);

#[derive(Default)]
struct Inner {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<StoreEvent>>,
    /// Watches from a version below this one get 410.
    oldest: u64,
}

/// The in-memory object store.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<StoreEvent>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// The current time as Kubernetes writes it (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    now_timestamp().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The current time as a jiff timestamp.
pub(crate) fn now_timestamp() -> k8s_openapi::jiff::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// A random lowercase alphanumeric suffix as `generateName` and ReplicaSets use.
pub fn random_suffix(len: usize) -> String {
    // Kubernetes leaves out vowels and look-alike characters so names spell nothing.
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn new_uid() -> String {
    let mut rng = rand::rng();
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(LIVE_EVENTS);
        Store {
            inner: Mutex::new(Inner::default()),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, inner: &mut Inner, kind: Kind, ty: EventType, object: Value, rv: u64) {
        let ev = Arc::new(StoreEvent {
            kind,
            ty,
            object,
            rv,
        });
        inner.history.push_back(ev.clone());
        while inner.history.len() > HISTORY {
            if let Some(old) = inner.history.pop_front() {
                inner.oldest = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Creates an object. `metadata.generateName` is honoured; uid, creationTimestamp,
    /// resourceVersion and (for namespaced kinds) namespace are set.
    ///
    /// # Errors
    ///
    /// 409 when the name is taken, 422 when there is no name.
    pub fn create(&self, kind: Kind, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.name());
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta = &mut obj["metadata"];
        let name = match meta["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta["generateName"].as_str() {
                Some(prefix) => loop {
                    let candidate = format!("{prefix}{}", random_suffix(5));
                    if !inner
                        .objects
                        .contains_key(&(kind, ns.to_string(), candidate.clone()))
                    {
                        break candidate;
                    }
                },
                None => {
                    return Err(ApiError::invalid(
                        kind,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        if let Err(why) = validate_name(kind, &name) {
            return Err(ApiError::invalid(kind, &name, &why));
        }
        let key = (kind, ns.to_string(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(kind, &name));
        }
        if kind.namespaced()
            && !inner
                .objects
                .contains_key(&(Kind::Namespace, String::new(), ns.to_string()))
        {
            return Err(ApiError::not_found(Kind::Namespace, ns));
        }
        inner.rv += 1;
        let rv = inner.rv;
        meta["name"] = json!(name);
        if kind.namespaced() {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(new_uid());
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["resourceVersion"] = json!(rv.to_string());
        if kind.scalable() {
            meta["generation"] = json!(1);
        }
        inner.objects.insert(key, obj.clone());
        self.record(&mut inner, kind, EventType::Added, obj.clone(), rv);
        Ok(obj)
    }

    /// Reads one object.
    ///
    /// # Errors
    ///
    /// 404 when it does not exist.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.lock()
            .objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// Lists the objects of a kind, in one namespace or (with `None`) in all of them,
    /// together with the store's resourceVersion at that moment.
    pub fn list(&self, kind: Kind, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Changes an object in place with `f`. A change that leaves the object as it was
    /// writes nothing (no new resourceVersion, no event), as the real API server does.
    ///
    /// # Errors
    ///
    /// 404 when the object does not exist, or whatever `f` returns.
    pub fn update(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let key = (kind, ns.to_string(), name.to_string());
        let Some(current) = inner.objects.get(&key) else {
            return Err(ApiError::not_found(kind, name));
        };
        let mut next = current.clone();
        f(&mut next)?;
        // Identity fields are not the caller's to change.
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            next["metadata"][field] = current["metadata"][field].clone();
        }
        next["apiVersion"] = json!(kind.api_version());
        next["kind"] = json!(kind.name());
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if kind.namespaced() {
            next["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = next["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        if next == *current {
            return Ok(next);
        }
        if kind.scalable() && next["spec"] != current["spec"] {
            let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(g + 1);
        }
        inner.rv += 1;
        let rv = inner.rv;
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.objects.insert(key, next.clone());
        self.record(&mut inner, kind, EventType::Modified, next.clone(), rv);
        Ok(next)
    }

    /// Replaces an object (PUT). When the new object carries a resourceVersion it must be
    /// the current one.
    ///
    /// # Errors
    ///
    /// 404, or 409 on a stale resourceVersion.
    pub fn replace(&self, kind: Kind, ns: &str, name: &str, obj: Value) -> Result<Value, ApiError> {
        self.update(kind, ns, name, |cur| {
            if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
                && Some(rv) != cur["metadata"]["resourceVersion"].as_str()
            {
                return Err(ApiError::conflict(kind, name));
            }
            *cur = obj;
            Ok(())
        })
    }

    /// Removes an object and returns its last state.
    ///
    /// # Errors
    ///
    /// 404 when it does not exist.
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let key = (kind, ns.to_string(), name.to_string());
        let Some(mut obj) = inner.objects.remove(&key) else {
            return Err(ApiError::not_found(kind, name));
        };
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(&mut inner, kind, EventType::Deleted, obj.clone(), rv);
        Ok(obj)
    }

    /// Starts a watch: the events after `since` (or, with `None`, an `ADDED` event for every
    /// current object) and a receiver of every later change, taken atomically.
    ///
    /// # Errors
    ///
    /// 410 Expired when `since` is older than the history kept.
    pub fn watch(
        &self,
        kind: Kind,
        ns: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let matches = |e: &StoreEvent| e.kind == kind && ns.is_none_or(|ns| e.namespace() == ns);
        let initial = match since {
            None => inner
                .objects
                .iter()
                .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
                .map(|(_, v)| {
                    Arc::new(StoreEvent {
                        kind,
                        ty: EventType::Added,
                        object: v.clone(),
                        rv: v["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                    })
                })
                .collect(),
            Some(rv) => {
                if rv < inner.oldest {
                    return Err(ApiError::expired(rv, inner.oldest));
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && matches(e))
                    .cloned()
                    .collect()
            }
        };
        Ok((initial, rx))
    }

    /// Every change, for controllers inside the testkit.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.tx.subscribe()
    }

    /// Forgets the history, so that every watch from an older version answers 410.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest = inner.rv;
    }
}

/// Checks a name as the API server would for this kind.
fn validate_name(kind: Kind, name: &str) -> Result<(), String> {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let ok = match kind {
        Kind::Namespace | Kind::Service => label(name),
        _ => name.len() <= 253 && name.split('.').all(label),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_ns() -> Store {
        let s = Store::new();
        s.create(Kind::Namespace, "", json!({"metadata": {"name": "demo"}}))
            .expect("namespace");
        s
    }

    #[test]
    fn create_get_conflict_and_generate_name() {
        let s = store_with_ns();
        let p = s
            .create(Kind::Pod, "demo", json!({"metadata": {"name": "a"}}))
            .expect("create");
        assert_eq!(p["metadata"]["namespace"], "demo");
        assert_eq!(p["kind"], "Pod");
        let e = s
            .create(Kind::Pod, "demo", json!({"metadata": {"name": "a"}}))
            .expect_err("dup");
        assert_eq!(e.code, 409);
        let g = s
            .create(
                Kind::Pod,
                "demo",
                json!({"metadata": {"generateName": "web-"}}),
            )
            .expect("generate");
        let name = g["metadata"]["name"].as_str().expect("name");
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(
            s.create(Kind::Pod, "nope", json!({"metadata": {"name": "a"}}))
                .expect_err("no ns")
                .code,
            404
        );
    }

    #[test]
    fn noop_update_writes_nothing() {
        let s = store_with_ns();
        s.create(Kind::Pod, "demo", json!({"metadata": {"name": "a"}}))
            .expect("create");
        let rv = s.resource_version();
        s.update(Kind::Pod, "demo", "a", |_| Ok(())).expect("noop");
        assert_eq!(s.resource_version(), rv);
        s.update(Kind::Pod, "demo", "a", |o| {
            o["spec"] = json!({"x": 1});
            Ok(())
        })
        .expect("change");
        assert_eq!(s.resource_version(), rv + 1);
    }

    #[test]
    fn watch_replays_after_version_and_expires_when_compacted() {
        let s = store_with_ns();
        s.create(Kind::Pod, "demo", json!({"metadata": {"name": "a"}}))
            .expect("a");
        let rv = s.resource_version();
        s.create(Kind::Pod, "demo", json!({"metadata": {"name": "b"}}))
            .expect("b");
        s.delete(Kind::Pod, "demo", "a").expect("delete");
        let (evs, _rx) = s.watch(Kind::Pod, Some("demo"), Some(rv)).expect("watch");
        let seen: Vec<_> = evs
            .iter()
            .map(|e| {
                (
                    e.ty,
                    e.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (EventType::Added, "b".to_string()),
                (EventType::Deleted, "a".to_string())
            ]
        );
        s.compact();
        let e = s
            .watch(Kind::Pod, Some("demo"), Some(rv))
            .expect_err("expired");
        assert_eq!(e.code, 410);
        assert!(
            s.watch(Kind::Pod, Some("demo"), Some(s.resource_version()))
                .is_ok()
        );
    }

    #[test]
    fn stale_replace_conflicts() {
        let s = store_with_ns();
        let p = s
            .create(Kind::Pod, "demo", json!({"metadata": {"name": "a"}}))
            .expect("a");
        s.update(Kind::Pod, "demo", "a", |o| {
            o["spec"] = json!({"v": 2});
            Ok(())
        })
        .expect("update");
        assert_eq!(
            s.replace(Kind::Pod, "demo", "a", p)
                .expect_err("stale")
                .code,
            409
        );
    }
}
