//! Errors of the testkit itself (not API errors, which are [`crate::ApiError`]).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Something went wrong starting or driving a testkit cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server could not bind its address.
    #[error("cannot bind the API server to {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// A certificate could not be made.
    #[error("cannot make the cluster's certificates: {0}")]
    Tls(String),
    /// A file could not be written.
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The simulated network failed.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// An API call made through the Rust API failed (boxed: a Status with its details is
    /// large, and every `Result` of the testkit carries this type).
    #[error("API: {0}")]
    Api(Box<crate::ApiError>),
    /// Waiting for a condition took too long.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
}

impl From<crate::ApiError> for Error {
    fn from(e: crate::ApiError) -> Self {
        Error::Api(Box::new(e))
    }
}
