//! The cluster's policies a test switches: an air-gapped node with a fixed set of images,
//! validating webhooks that refuse pods, and namespace labels (Pod Security levels).

use std::collections::BTreeSet;

use serde_json::json;

use super::Cluster;
use crate::scenario::{ECHO_IMAGE, HTTP_IMAGE, PASSTHROUGH_IMAGE, SLEEP_IMAGE, UDP_ECHO_IMAGE};
use crate::state::lock;
use crate::{Error, Kind};

impl Cluster {
    /// Cuts the node off every registry: from now on a container runs only when its image
    /// is on the node, which has the testkit's own images ([`HTTP_IMAGE`] and the others)
    /// and those added with [`preload_image`](Self::preload_image). Any other image fails
    /// as a kubelet reports it with no registry in reach: the container waits with
    /// `ErrImagePull`, then `ImagePullBackOff` (and `imagePullPolicy: Always` fails even
    /// for an image on the node, as the kubelet still asks the registry).
    ///
    /// # Example
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cluster = kforward_testkit::Cluster::start().await.unwrap();
    /// cluster.air_gap();
    /// cluster.preload_image("registry.corp.example/kforward-relay:0.1.0");
    /// assert!(cluster.node_images().unwrap().contains("registry.corp.example/kforward-relay:0.1.0"));
    /// # });
    /// ```
    pub fn air_gap(&self) {
        let mut images = lock(&self.shared.node_images);
        let set = images.get_or_insert_with(BTreeSet::new);
        for i in [
            HTTP_IMAGE,
            ECHO_IMAGE,
            UDP_ECHO_IMAGE,
            PASSTHROUGH_IMAGE,
            SLEEP_IMAGE,
        ] {
            set.insert(i.to_string());
        }
    }

    /// Puts `image` on the node (as `ctr images import` would), so that an air-gapped
    /// cluster runs it.
    pub fn preload_image(&self, image: &str) {
        lock(&self.shared.node_images)
            .get_or_insert_with(BTreeSet::new)
            .insert(image.to_string());
    }

    /// Reconnects the node to the registries: every image pulls again.
    pub fn reconnect_registries(&self) {
        *lock(&self.shared.node_images) = None;
    }

    /// The images on the node when air-gapped; `None` when every image pulls.
    pub fn node_images(&self) -> Option<BTreeSet<String>> {
        lock(&self.shared.node_images).clone()
    }

    /// Installs a validating webhook named `webhook` that refuses every pod created in
    /// `namespace` with `message`: the API server answers 403 with
    /// `admission webhook "<webhook>" denied the request: <message>`.
    pub fn deny_pods(&self, namespace: &str, webhook: &str, message: &str) {
        self.shared.admission.deny_pods(namespace, webhook, message);
    }

    /// Removes the webhook [`deny_pods`](Self::deny_pods) installed for `namespace`.
    pub fn allow_pods(&self, namespace: &str) {
        self.shared.admission.allow_pods(namespace);
    }

    /// Sets a label on a namespace, such as [`crate::POD_SECURITY_ENFORCE`] to
    /// `restricted`, which makes Pod Security admission refuse pods that do not meet the
    /// restricted profile.
    ///
    /// # Errors
    ///
    /// 404 when the namespace does not exist.
    pub fn label_namespace(&self, namespace: &str, key: &str, value: &str) -> Result<(), Error> {
        self.shared
            .store
            .update(Kind::Namespace, "", namespace, |ns| {
                ns["metadata"]["labels"][key] = json!(value);
                Ok(())
            })?;
        Ok(())
    }
}
