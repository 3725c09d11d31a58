//! Port-forward over SPDY/3.1 (`portforward.k8s.io`), the client side: what kubectl speaks,
//! with half-close, and many connections multiplexed on sessions kept ready.
//!
//! - [`frame`] and [`headers`]: the sans-I/O codecs (frames; header blocks compressed with
//!   zlib and the SPDY/3 dictionary).
//! - [`Session`]: one session over any byte stream, opened through the API server by
//!   [`Session::open`] (the WebSocket tunnel or the plain upgrade, [`SpdyTransport`]).
//! - [`SpdyStream`]: one connection, `AsyncRead + AsyncWrite`.
//! - [`SessionPool`]: the sessions of a cluster connection to one namespace, shared by its
//!   forwards and kept ready per pod while a forward holds it, choosing the transport
//!   (`auto` tries the tunnel, the plain upgrade, then `v4.channel.k8s.io`).
//!
//! The testkit's server side (`kforward_testkit::portforward::spdy`) has its own frame
//! codec, header codec and WebSocket adapter, written apart on purpose: it stands for the
//! kubelet, so it must not share this client's mistakes (its header codec is flate2 at zlib's
//! defaults, as Go's zlib in the kubelet; this one is zlib-rs with a small `memLevel`), and the
//! testkit does not depend on kforward-core. Tests in [`headers`] check that the two agree
//! on the dictionary and inflate each other's blocks; `tests/it/spdy.rs` runs this client
//! against that server.
//!
//! # Example
//!
//! This runs for real, against the testkit's simulated cluster:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use kforward_core::transport::{Transport, spdy::SessionPool};
//! use kforward_core::{KubeContext, KubeconfigSource};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let cluster = kforward_testkit::Cluster::demo().await.unwrap();
//! let src = KubeconfigSource::default().with_path(cluster.kubeconfig_path());
//! let ctx = KubeContext::load(&src).await?;
//! let pod = cluster.pods("demo", Some("app=echo"))[0].metadata.name.clone().unwrap();
//!
//! let pool = SessionPool::new(ctx, "demo", Transport::Auto);
//! let mut conn = pool.connect(&pod, 7000).await?;
//! assert_eq!(conn.transport(), Transport::WebsocketSpdy);
//! conn.write_all(b"hello").await?;
//! conn.shutdown().await?; // DATA+FIN
//! let mut back = vec![0; 5];
//! conn.read_exact(&mut back).await?;
//! assert_eq!(back, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod error;
pub mod frame;
pub mod headers;
mod open;
mod pod_stream;
mod pool;
mod read_buffer;
mod session;
mod stream;
mod writer;
mod wsio;

pub use error::{SessionEnd, SpdyError};
pub use open::{OPEN_TIMEOUT, STREAM_PROTOCOL, SpdyTransport, TUNNEL_PROTOCOL};
pub(crate) use pod_stream::Carried;
pub use pod_stream::PodStream;
pub(crate) use pool::PoolRegistry;
pub use pool::{HolderId, PodSessions, PoolConfig, SessionPool};
pub use session::{Session, SessionConfig, SessionLoad};
pub use stream::SpdyStream;
