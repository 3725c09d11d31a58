//! Kubernetes watches shared by every user of one cluster connection: one list and one watch
//! per resource kind and namespace, however many forwards follow it and whatever they select
//! (a `kforward run` with 1,000 forwards to 10 services of one namespace holds one watch of
//! its EndpointSlices, not 10 or 1,000). Each user's label selector and object name are
//! matched here, on the shared copy, as kube's reflector store is read by many controllers.
//!
//! kube's [`watcher`] does the listing, watching, resuming from the last resourceVersion and
//! relisting when the server has forgotten it (410 Gone), with bookmarks. What is added here
//! is what it leaves to its user: sharing (a registry of running watches, and one start for
//! callers that ask together), the objects kept by name in a tokio `watch` channel that wakes
//! whoever follows them, and the pause between retries. That pause is kforward's own rather
//! than kube's `StreamBackoff`: it is cut short when the API server can be reached again after
//! an outage ([`Reachability`]), which kube's backoff cannot know, so a forward's endpoints
//! are current again as soon as the server answers, not after up to 30 s of backoff.
//!
//! kube's `reflector` store is not used either: it has no change notification, and the
//! `watch` channel here is both the store and the wake-up.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::connector::Reachability;
use crate::error::{Error, Result};
use crate::single_flight::SingleFlight;

/// How long the first list of a watch may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// The server-side timeout of each watch request. kube's watcher takes a watch that has sent
/// nothing (not even a bookmark) for this long plus 5 s as dead and starts it again, so this
/// bounds how long a silently dropped connection goes unnoticed: 2 minutes.
const WATCH_SECONDS: u32 = 115;
/// The pauses between retries of a failed list or watch.
const PAUSES: Pauses = Pauses {
    first: Duration::from_millis(200),
    longest: Duration::from_secs(5),
};

/// The pauses of one watch between retries: `first` after a failure, doubled after each
/// further one up to `longest`, and back to `first` once an event arrives.
#[derive(Clone, Copy, Debug)]
struct Pauses {
    first: Duration,
    longest: Duration,
}

/// A resource the registry can watch: anything kube's watcher can.
pub(crate) trait Watchable:
    kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Watchable for K where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// What one user follows: the objects of a resource kind in a namespace (the shared watch),
/// and which of them it wants.
pub(crate) struct Watched<K> {
    /// The resource's API, namespaced.
    pub(crate) api: Api<K>,
    /// Its plural name (`pods`), for errors and the registry's key.
    pub(crate) resource: &'static str,
    /// The namespace `api` is for, for errors and the registry's key.
    pub(crate) namespace: String,
    /// Which of the namespace's objects this user wants.
    pub(crate) filter: Filter,
}

impl<K> Watched<K> {
    fn key(&self) -> WatchKey {
        (self.resource, self.namespace.clone())
    }

    /// The whole namespace: the selectors are the users', matched in [`Filter`].
    fn config() -> watcher::Config {
        watcher::Config::default().timeout(WATCH_SECONDS)
    }
}

/// Resource and namespace.
type WatchKey = (&'static str, String);

/// Which objects of a shared watch one user wants: those matching a label selector (with
/// the API server's meaning: `!=`, `notin` and `!key` match objects without the label), of
/// one name, or both; everything when empty.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// A label selector.
    pub(crate) labels: Option<Selector>,
    /// One object's name (what `fieldSelector=metadata.name=` would ask for).
    pub(crate) name: Option<String>,
}

impl Filter {
    fn matches<K: kube::Resource>(&self, object: &K) -> bool {
        static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
        let labels = object.meta().labels.as_ref().unwrap_or(&NO_LABELS);
        self.labels.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// The objects of `all` this filter wants; `None` when it wants them all.
    fn select<K: kube::Resource + Clone>(
        &self,
        all: &BTreeMap<String, K>,
    ) -> Option<BTreeMap<String, K>> {
        if self.labels.is_none() && self.name.is_none() {
            return None;
        }
        let wanted = |(name, object): (&String, &K)| {
            self.matches(object).then(|| (name.clone(), object.clone()))
        };
        Some(match &self.name {
            Some(name) => all
                .get_key_value(name)
                .and_then(wanted)
                .into_iter()
                .collect(),
            None => all.iter().filter_map(wanted).collect(),
        })
    }
}

/// The running watches of one cluster connection, by what they watch.
pub(crate) struct WatchRegistry {
    watches: Mutex<HashMap<WatchKey, Weak<dyn Any + Send + Sync>>>,
    /// Starts in progress, one per key.
    starting: SingleFlight,
    /// The API server URL, for errors.
    server: String,
    /// Says when the API server can be reached again after connections to it failed
    /// (kforward's client stack only; with kube's stock one nobody reports to it, and the
    /// pauses run their course).
    reach: Arc<Reachability>,
}

/// The objects one watch keeps current, by name; the watch stops when the last user drops
/// this.
pub(crate) struct SharedWatch<K> {
    objects: watch::Receiver<BTreeMap<String, K>>,
    task: tokio::task::JoinHandle<()>,
}

/// One user's view of a shared watch: the objects its [`Filter`] wants.
pub(crate) struct View<K> {
    shared: Arc<SharedWatch<K>>,
    filter: Filter,
}

impl<K> Drop for SharedWatch<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WatchRegistry {
    /// The registry of the connection to `server`, whose connections report to `reach`.
    pub(crate) fn new(server: &str, reach: Arc<Reachability>) -> Self {
        WatchRegistry {
            watches: Mutex::default(),
            starting: SingleFlight::default(),
            server: server.to_owned(),
            reach,
        }
    }

    /// A view through `w`'s filter of the running watch of its resource and namespace, or
    /// of a new one (listed first, so it starts with the current objects).
    ///
    /// # Errors
    ///
    /// The first list's: [`Error::Forbidden`], [`Error::Unauthorized`],
    /// [`Error::Unreachable`] (also when it takes over 30 s), [`Error::Api`].
    pub(crate) async fn get_or_start<K: Watchable>(&self, w: Watched<K>) -> Result<View<K>> {
        let filter = w.filter.clone();
        let shared = self.shared(w).await?;
        Ok(View { shared, filter })
    }

    /// The running watch of `w`'s resource and namespace, or a new one.
    async fn shared<K: Watchable>(&self, w: Watched<K>) -> Result<Arc<SharedWatch<K>>> {
        let key = w.key();
        if let Some(shared) = self.running::<K>(&key) {
            return Ok(shared);
        }
        // Forwards started together all miss at first: one of them lists and starts the
        // watch while the others wait for it (`SingleFlight`), instead of each starting
        // its own (seen: 69 watches and 138 lists for 200 forwards of one service).
        let mut mine = None;
        {
            let mine = &mut mine;
            let w = Watched {
                api: w.api.clone(),
                resource: w.resource,
                namespace: w.namespace.clone(),
                filter: Filter::default(),
            };
            self.starting
                .run(format!("{key:?}"), move || async move {
                    *mine = Some(self.start(w).await?);
                    Ok::<(), Error>(())
                })
                .await?;
        }
        match mine.or_else(|| self.running::<K>(&key)) {
            Some(shared) => Ok(shared),
            // Whoever started it has already let it go.
            None => self.start(w).await,
        }
    }

    /// The running watch of `key`, if any.
    fn running<K: Send + Sync + 'static>(&self, key: &WatchKey) -> Option<Arc<SharedWatch<K>>> {
        self.watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .and_then(Weak::upgrade)
            .and_then(|a| a.downcast::<SharedWatch<K>>().ok())
    }

    /// Lists, starts the watch and registers it.
    async fn start<K: Watchable>(&self, w: Watched<K>) -> Result<Arc<SharedWatch<K>>> {
        let key = w.key();
        let mut events = watcher::watcher(w.api.clone(), Watched::<K>::config()).boxed();
        let (tx, rx) = watch::channel(BTreeMap::new());
        let mut mirror = Mirror { relisted: None };
        let listed = async {
            while let Some(event) = events.next().await {
                if mirror.apply(event?, &tx) {
                    break;
                }
            }
            Ok::<(), watcher::Error>(())
        };
        match tokio::time::timeout(LIST_TIMEOUT, listed).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.error(e, &w)),
            Err(_) => {
                return Err(Error::Unreachable {
                    server: self.server.clone(),
                    message: format!(
                        "no answer to list {} within {}s",
                        w.resource,
                        LIST_TIMEOUT.as_secs()
                    ),
                });
            }
        }
        let what = format!("{} in {:?}", w.resource, w.namespace);
        let reach = self.reach.clone();
        let task = tokio::spawn(keep_current(events, mirror, tx, reach, what, PAUSES));
        let shared = Arc::new(SharedWatch { objects: rx, task });
        let erased: Arc<dyn Any + Send + Sync> = shared.clone();
        let mut map = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, v| v.strong_count() > 0);
        map.insert(key, Arc::downgrade(&erased));
        Ok(shared)
    }

    /// A watcher error as kforward's, naming the server, verb, resource and namespace.
    fn error<K>(&self, e: watcher::Error, w: &Watched<K>) -> Error {
        let (e, verb) = match e {
            watcher::Error::InitialListFailed(e) => (e, "list"),
            watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => (e, "watch"),
            watcher::Error::WatchError(status) => (kube::Error::Api(status), "watch"),
            other @ watcher::Error::NoResourceVersion => {
                return Error::Api {
                    action: format!("list {} in namespace {:?}", w.resource, w.namespace),
                    code: 200,
                    message: other.to_string(),
                };
            }
        };
        Error::from_kube(e, &self.server, verb, w.resource, &w.namespace, None)
    }
}

impl<K: kube::Resource + Clone + Send + Sync + 'static> View<K> {
    /// The object called `name` as the watch has it now, if it wants it.
    pub(crate) fn get(&self, name: &str) -> Option<K> {
        if self.filter.name.as_deref().is_some_and(|n| n != name) {
            return None;
        }
        let all = self.shared.objects.borrow();
        all.get(name).filter(|o| self.filter.matches(*o)).cloned()
    }

    /// Keeps `tx` at `compute` of the objects this view wants until the receivers of `tx`
    /// are gone, holding the watch as long. A change elsewhere in the namespace recomputes
    /// and wakes no one when the result is the same.
    pub(crate) fn follow<T, F>(
        self,
        compute: F,
        tx: watch::Sender<T>,
    ) -> tokio::task::JoinHandle<()>
    where
        T: PartialEq + Send + Sync + 'static,
        F: Fn(&BTreeMap<String, K>) -> T + Send + Sync + 'static,
    {
        let View { shared, filter } = self;
        let mut objects = shared.objects.clone();
        let publish = move |objects: &mut watch::Receiver<BTreeMap<String, K>>| {
            let all = objects.borrow_and_update();
            let next = match filter.select(&all) {
                Some(wanted) => compute(&wanted),
                None => compute(&all),
            };
            drop(all);
            tx.send_if_modified(|cur| {
                if *cur == next {
                    false
                } else {
                    *cur = next;
                    true
                }
            });
        };
        publish(&mut objects);
        tokio::spawn(async move {
            let _watch = shared;
            while objects.changed().await.is_ok() {
                publish(&mut objects);
            }
        })
    }
}

/// Keeps the objects of a `watch` channel as the watcher's events say they are.
struct Mirror<K> {
    /// The objects of a list in progress, published whole when it is done, so followers
    /// never see half a list.
    relisted: Option<BTreeMap<String, K>>,
}

impl<K: kube::Resource> Mirror<K> {
    /// Applies one event; true when it ends a list.
    fn apply(&mut self, event: Event<K>, tx: &watch::Sender<BTreeMap<String, K>>) -> bool {
        match event {
            Event::Init => self.relisted = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                if let (Some(objects), Some(name)) = (&mut self.relisted, o.meta().name.clone()) {
                    objects.insert(name, o);
                }
            }
            Event::InitDone => {
                tx.send_replace(self.relisted.take().unwrap_or_default());
                return true;
            }
            Event::Apply(o) => {
                if let Some(name) = o.meta().name.clone() {
                    tx.send_modify(|objects| {
                        objects.insert(name, o);
                    });
                }
            }
            Event::Delete(o) => {
                if let Some(name) = &o.meta().name {
                    tx.send_if_modified(|objects| objects.remove(name).is_some());
                }
            }
        }
        false
    }
}

/// Follows the watcher's events for as long as the watch is shared. After an error the
/// watcher resumes on the next poll (watching again from the last version seen, or listing
/// again); this waits before that poll, less when the API server is reachable again.
async fn keep_current<K: Watchable>(
    mut events: BoxStream<'static, watcher::Result<Event<K>>>,
    mut mirror: Mirror<K>,
    tx: watch::Sender<BTreeMap<String, K>>,
    reach: Arc<Reachability>,
    what: String,
    pauses: Pauses,
) {
    let mut pause = pauses.first;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                pause = pauses.first;
                mirror.apply(event, &tx);
            }
            Err(e) => {
                match &e {
                    watcher::Error::InitialListFailed(_) => {
                        warn!(error = %e, "listing {what} again failed; retrying");
                    }
                    _ => debug!(error = %e, "watch of {what} interrupted; resuming"),
                }
                // Created before the pause, so a recovery during it is not missed.
                let back = reach.back().notified();
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = back => debug!("API server reachable again; resuming the watch of {what} now"),
                }
                pause = (pause * 2).min(pauses.longest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    fn pod(name: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_owned());
        pod
    }

    fn names(objects: &BTreeMap<String, Pod>) -> Vec<&str> {
        objects.keys().map(String::as_str).collect()
    }

    #[test]
    fn a_relist_is_published_whole_and_changes_one_by_one() {
        let (tx, rx) = watch::channel(BTreeMap::from([("old".to_owned(), pod("old"))]));
        let mut mirror = Mirror { relisted: None };
        assert!(!mirror.apply(Event::Init, &tx));
        assert!(!mirror.apply(Event::InitApply(pod("a")), &tx));
        assert!(!mirror.apply(Event::InitApply(pod("b")), &tx));
        assert_eq!(names(&rx.borrow()), ["old"], "half a list is not published");
        assert!(mirror.apply(Event::InitDone, &tx));
        assert_eq!(
            names(&rx.borrow()),
            ["a", "b"],
            "the list replaces what was there"
        );
        mirror.apply(Event::Apply(pod("c")), &tx);
        mirror.apply(Event::Delete(pod("a")), &tx);
        assert_eq!(names(&rx.borrow()), ["b", "c"]);
        let mut seen = rx.clone();
        seen.mark_unchanged();
        mirror.apply(Event::Delete(pod("gone")), &tx);
        assert!(
            !seen.has_changed().unwrap_or(true),
            "deleting nothing wakes nobody"
        );
    }

    #[tokio::test]
    async fn a_reachable_api_server_ends_the_pause_after_a_failure() {
        // Pauses of an hour: only the API server coming back can end this one in time.
        let hour = Duration::from_secs(3600);
        let pauses = Pauses {
            first: hour,
            longest: hour,
        };
        let reach = Arc::new(Reachability::default());
        let (tx, mut objects) = watch::channel(BTreeMap::new());
        let cut = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let events = futures::stream::iter([
            Err(watcher::Error::WatchFailed(kube::Error::ReadEvents(cut))),
            Ok(Event::Apply(pod("web-0"))),
        ]);
        let mirror = Mirror { relisted: None };
        let task = tokio::spawn(keep_current(
            events.boxed(),
            mirror,
            tx,
            reach.clone(),
            "pods".to_owned(),
            pauses,
        ));
        // As the connector does on the first connection that succeeds after failures. It
        // notifies whoever waits at that moment, so it is repeated until the task waits.
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let resumed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                tokio::select! {
                    changed = objects.changed() => return changed,
                    _ = tick.tick() => reach.back().notify_waiters(),
                }
            }
        })
        .await;
        assert!(
            matches!(resumed, Ok(Ok(()))),
            "the watch resumed when the server was back"
        );
        assert_eq!(names(&objects.borrow()), ["web-0"]);
        task.abort();
    }
}
