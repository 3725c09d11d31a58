//! The in-cluster relay, client side: relay pods, the handshake, and a connector that opens
//! a checked stream to any destination the cluster can reach.
//!
//! The wire format and the server live in the small `kforward-relay` crate (so that the
//! testkit's relay pods run the very same code) and are re-exported here as [`protocol`]
//! and [`server`].
//!
//! # Example
//!
//! ```no_run
//! # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
//! use kforward_core::relay::{RelayConnector, RelayOptions, RelayPods, protocol::Transport};
//! let pods = RelayPods::new(ctx, RelayOptions::default());
//! let conn = RelayConnector::new(pods.clone(), "demo");
//! let stream = conn.connect(Transport::Tcp, "db.internal", 5432, "127.0.0.1:50000").await?;
//! pods.delete_all().await;
//! # Ok(()) }
//! ```

mod client;
mod env;
mod manifest;
mod pod;
mod startup;

pub use client::RelayConnector;
pub use env::{check_relay_env, default_relay_no_proxy};
pub use kforward_relay::{datagrams, egress, mmsg, protocol, server};
pub use manifest::{
    DEFAULT_RELAY_PORT, LABEL_MANAGED_BY, LABEL_NAME, LABEL_SESSION, PodPatch, PullPolicy,
    RELAY_CONTAINER, RELAY_IMAGE_ENV, RelayOptions, default_image,
};
pub use pod::{
    DEFAULT_HEARTBEAT_STALE, HEARTBEAT_EVERY, RelayPods, SharedRelayPods, gc, gc_stale_after,
};
