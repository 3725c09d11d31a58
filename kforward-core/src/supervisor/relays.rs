//! Relay pods shared by the supervised forwards of one cluster: one set (one pod per
//! namespace) per kubeconfig, context and relay settings (image, pull policy, secrets, pod
//! patch, environment: forwards that ask for other pods get their own), made when the first
//! relayed forward starts and deleted when the last one stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::client::KubeContext;
use crate::relay::{RelayOptions, RelayPods};
use crate::spec::ForwardSpec;

/// The kubeconfig file and context a set of relay pods belongs to; within a cluster, sets
/// are told apart by their whole [`RelayOptions`].
type Key = (Option<PathBuf>, Option<String>);

/// One set of relay pods: the settings it was made with and the number of forwards using it.
struct Set {
    opts: RelayOptions,
    pods: Arc<RelayPods>,
    users: usize,
}

/// Relay pods by cluster, and within a cluster by settings (few: a `Vec` compared with
/// `==` on the whole [`RelayOptions`], image, pull policy, secrets, pod patch and
/// environment alike, since a pod patch is JSON and has no hash).
#[derive(Default)]
pub(crate) struct RelayPool {
    sets: Mutex<HashMap<Key, Vec<Set>>>,
}

/// One forward's use of a set of relay pods; give it back with [`RelayPool::release`].
pub(crate) struct Lease {
    key: Key,
    pub(crate) pods: Arc<RelayPods>,
}

fn key_of(spec: &ForwardSpec) -> Key {
    (spec.kubeconfig.clone(), spec.context.clone())
}

impl RelayPool {
    /// The relay pods of `spec`'s cluster with the settings `opts`, made with `ctx` when it
    /// has none such yet.
    pub(crate) fn acquire(
        &self,
        spec: &ForwardSpec,
        ctx: &KubeContext,
        opts: &RelayOptions,
    ) -> Lease {
        let key = key_of(spec);
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        let of_cluster = sets.entry(key.clone()).or_default();
        let set = match of_cluster.iter().position(|s| &s.opts == opts) {
            Some(i) => &mut of_cluster[i],
            None => {
                of_cluster.push(Set {
                    opts: opts.clone(),
                    pods: RelayPods::new(ctx.clone(), opts.clone()),
                    users: 0,
                });
                let last = of_cluster.len() - 1;
                &mut of_cluster[last]
            }
        };
        set.users += 1;
        Lease {
            key,
            pods: set.pods.clone(),
        }
    }

    /// Gives `lease` back; the last user of a set deletes its pods.
    pub(crate) async fn release(&self, lease: Lease) {
        let last = {
            let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(of_cluster) = sets.get_mut(&lease.key) else {
                return;
            };
            match of_cluster
                .iter()
                .position(|s| Arc::ptr_eq(&s.pods, &lease.pods))
            {
                Some(i) => {
                    of_cluster[i].users -= 1;
                    let last = of_cluster[i].users == 0;
                    if last {
                        of_cluster.swap_remove(i);
                        if of_cluster.is_empty() {
                            sets.remove(&lease.key);
                        }
                    }
                    last
                }
                None => false,
            }
        };
        if last {
            lease.pods.delete_all().await;
        }
    }
}
