//! SPDY/3.1 port-forward, as kubectl speaks it: raw over an HTTP upgrade, or tunnelled in
//! WebSocket binary messages. `frame` and `headers` are the pure codecs; `session` serves a
//! session over any byte stream.

pub mod frame;
pub mod headers;
mod session;
mod wsio;

pub(crate) use session::serve;
pub(crate) use wsio::WsByteStream;
