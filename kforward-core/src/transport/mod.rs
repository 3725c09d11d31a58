//! Transports: the code that speaks the port-forward protocols to the API server.

mod choice;
pub mod spdy;

pub use choice::{Transport, TransportMemo, UnknownTransport};
