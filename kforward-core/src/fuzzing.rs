//! Private parsers exposed for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off by
//! default): the smallest sans-I/O entry points of what reads a peer's bytes and is not
//! public already. Not a stable API.

pub use crate::forward_proxy::http::{Ask, Target, ask, strip_hop_by_hop};
pub use crate::transport::channel::{Channels, DATA_CHANNEL, ERROR_CHANNEL, Received};
