//! Relay pods shared by the supervised forwards of one cluster: one set (one pod per
//! namespace) per kubeconfig and context, made when the first relayed forward starts and
//! deleted when the last one stops.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::client::KubeContext;
use crate::relay::{RelayOptions, RelayPods};
use crate::spec::ForwardSpec;

/// The kubeconfig file and context a set of relay pods belongs to.
type Key = (Option<PathBuf>, Option<String>);

/// Relay pods by cluster, each with the number of forwards using it.
#[derive(Default)]
pub(crate) struct RelayPool {
    sets: Mutex<HashMap<Key, (Arc<RelayPods>, usize)>>,
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
    /// The relay pods of `spec`'s cluster, made with `ctx` and `opts` when it has none yet.
    pub(crate) fn acquire(
        &self,
        spec: &ForwardSpec,
        ctx: &KubeContext,
        opts: &RelayOptions,
    ) -> Lease {
        let key = key_of(spec);
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = sets
            .entry(key.clone())
            .or_insert_with(|| (RelayPods::new(ctx.clone(), opts.clone()), 0));
        entry.1 += 1;
        Lease {
            key,
            pods: entry.0.clone(),
        }
    }

    /// Gives `lease` back; the last user of a set deletes its pods.
    pub(crate) async fn release(&self, lease: Lease) {
        let last = {
            let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
            match sets.get_mut(&lease.key) {
                Some((pods, users)) if Arc::ptr_eq(pods, &lease.pods) => {
                    *users -= 1;
                    if *users == 0 {
                        sets.remove(&lease.key);
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            }
        };
        if last {
            lease.pods.delete_all().await;
        }
    }
}
