//! The garbage collector: objects whose controlling owner is gone are deleted (pods
//! gracefully), as the background cascading deletion `kubectl delete` asks for by default.

use std::collections::HashSet;
use std::sync::Arc;

use super::owner::{controller_uid, name, namespace};
use crate::state::Shared;
use crate::{ApiError, Kind};

/// The kinds whose objects a testkit controller owns.
const DEPENDENTS: [Kind; 4] = [
    Kind::ReplicaSet,
    Kind::Pod,
    Kind::ControllerRevision,
    Kind::EndpointSlice,
];

pub(crate) fn reconcile(shared: &Arc<Shared>) -> Result<(), ApiError> {
    // Owners first (a ReplicaSet is both), then what they own.
    let mut uids: HashSet<String> = HashSet::new();
    for kind in Kind::ALL {
        for o in shared.store.list(kind, None).0 {
            if let Some(uid) = o["metadata"]["uid"].as_str() {
                uids.insert(uid.to_string());
            }
        }
    }
    for kind in DEPENDENTS {
        for o in shared.store.list(kind, None).0 {
            let Some(owner) = controller_uid(&o) else {
                continue;
            };
            if !uids.contains(owner) {
                let _ = crate::registry::delete(shared, kind, namespace(&o), name(&o));
            }
        }
    }
    Ok(())
}
