//! The `v4.channel.k8s.io` framing of one forwarded port, sans I/O: what one received
//! WebSocket binary message means for the stream ([`Channels::receive`]).
//!
//! Framing (`kubernetes/kubernetes`
//! `staging/src/k8s.io/apimachinery/pkg/util/httpstream/wsstream/conn.go` and the kubelet's
//! `.../cri/streaming/portforward/websocket.go`): each binary message is one channel byte and
//! data; port *i* uses channel `2i` for data and `2i+1` for errors; the server first writes the
//! port number (2 bytes, little endian) on both channels, possibly split over messages; error
//! text closes the port. [`websocket`](super::websocket) reads messages and hands them here.

use bytes::Bytes;

/// The channel of port 0's data (the only port a tunnel opens).
pub const DATA_CHANNEL: u8 = 0;
/// The channel of port 0's errors.
pub const ERROR_CHANNEL: u8 = 1;
/// The port number the server writes first on each channel.
const PORT_PREFIX: usize = 2;

/// What one received message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Bytes for the reader (never empty).
    Data(Bytes),
    /// The pod's port answered with an error: the stream ends with this message.
    Error(String),
    /// Nothing for the reader (a port prefix, an empty message, another channel).
    Nothing,
}

/// The state of one port's two channels: how much of each port prefix is still to skip.
#[derive(Debug, Clone)]
pub struct Channels {
    data_prefix: usize,
    error_prefix: usize,
}

impl Default for Channels {
    fn default() -> Self {
        Channels {
            data_prefix: PORT_PREFIX,
            error_prefix: PORT_PREFIX,
        }
    }
}

impl Channels {
    /// A port whose prefixes have not arrived yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the data channel's port prefix is still (partly) to come: until it has
    /// come, the stream is not known to be up.
    pub fn awaiting_prefix(&self) -> bool {
        self.data_prefix > 0
    }

    /// Takes one received binary message (channel byte, then data). The `ws_channel` fuzz
    /// target drives it.
    pub fn receive(&mut self, message: Bytes) -> Received {
        let Some(&channel) = message.first() else {
            return Received::Nothing;
        };
        let data = message.slice(1..);
        match channel {
            DATA_CHANNEL => {
                let skip = self.data_prefix.min(data.len());
                self.data_prefix -= skip;
                let data = data.slice(skip..);
                if data.is_empty() {
                    Received::Nothing
                } else {
                    Received::Data(data)
                }
            }
            ERROR_CHANNEL => {
                let skip = self.error_prefix.min(data.len());
                self.error_prefix -= skip;
                let text = &data[skip..];
                if text.is_empty() {
                    Received::Nothing
                } else {
                    Received::Error(error_channel_message(text))
                }
            }
            _ => Received::Nothing,
        }
    }
}

/// Extracts the message from an error-channel payload: JSON
/// `{"closeConnection":..,"message":".."}` from current kubelets, plain text from older ones.
fn error_channel_message(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => v["message"]
            .as_str()
            .map_or_else(|| text.to_string(), str::to_string),
        Err(_) => text.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_channel_payloads() {
        assert_eq!(
            error_channel_message(br#"{"closeConnection":true,"message":"connection refused"}"#),
            "connection refused"
        );
        assert_eq!(
            error_channel_message(b"error forwarding port 80 to pod x, uid : refused\n"),
            "error forwarding port 80 to pod x, uid : refused"
        );
    }

    #[test]
    fn prefixes_split_over_messages_are_skipped() {
        let mut c = Channels::new();
        assert!(c.awaiting_prefix());
        assert_eq!(c.receive(Bytes::from_static(&[0, 0x50])), Received::Nothing);
        assert!(c.awaiting_prefix());
        assert_eq!(
            c.receive(Bytes::from_static(&[0, 0x00, b'o', b'k'])),
            Received::Data(Bytes::from_static(b"ok"))
        );
        assert!(!c.awaiting_prefix());
        assert_eq!(
            c.receive(Bytes::from_static(&[1, 0x50, 0x00])),
            Received::Nothing
        );
        assert_eq!(
            c.receive(Bytes::from_static(b"\x01refused\n")),
            Received::Error("refused".into())
        );
        assert_eq!(c.receive(Bytes::new()), Received::Nothing);
        assert_eq!(c.receive(Bytes::from_static(b"\x07x")), Received::Nothing);
    }
}
