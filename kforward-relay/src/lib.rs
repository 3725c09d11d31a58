//! kforward-relay: the in-cluster half of kforward.
//!
//! A relay pod runs [`server::RelayServer`] on its loopback address; kforward reaches it
//! through a Kubernetes port-forward and, per connection, names the destination in a small
//! versioned handshake ([`protocol`]). TCP connections are then relayed byte for byte
//! (through an HTTP proxy when the pod's egress needs one: [`egress`]); UDP datagrams cross
//! the stream with a 2-byte length prefix ([`datagrams`]), many per system call on the UDP
//! side ([`mmsg`]).
//!
//! The proxy pieces ([`proxy_url`], [`http_connect`], [`no_proxy`]) live here so that the
//! relay and `kforward-core`'s client stack toward the API server share them.
//!
//! This crate is small on purpose: both `kforward-core` (the client, which re-exports it as
//! `kforward_core::relay::{protocol, server}`) and `kforward-testkit` (whose relay pods run
//! this very server) depend on it.
//!
//! # Example
//!
//! ```
//! use kforward_relay::protocol::{Request, Transport, decode_request, encode_request};
//!
//! let req = Request::new("secret", Transport::Tcp, "db.internal", 5432);
//! let wire = encode_request(&req)?;
//! let (back, used) = decode_request(&wire)?.expect("complete");
//! assert_eq!((back, used), (req, wire.len()));
//! # Ok::<(), kforward_relay::protocol::ProtocolError>(())
//! ```

mod copy;
pub mod datagrams;
pub mod egress;
pub mod http_connect;
pub mod mmsg;
pub mod no_proxy;
pub mod protocol;
pub mod proxy_url;
pub mod server;
mod udp;
