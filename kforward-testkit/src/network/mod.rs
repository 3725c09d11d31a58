//! Real loopback networking for the fake cluster: addresses, pod workloads, services, DNS and external hosts.

mod addr;
mod checksum;
mod dns;
mod echo;
mod error;
mod external;
mod http;
mod kubeproxy;
mod protocol;
mod relay;
mod tasks;
mod workload;

pub use addr::AddressPool;
pub use checksum::checksum_line;
pub use dns::{
    ANSWER_TTL, CLASS_IN, DnsRecords, DnsResponse, DnsServer, MAX_UDP_MESSAGE, PodResolver, Query,
    Rcode, TYPE_A, TYPE_AAAA, encode_error, encode_query, encode_response, normalize_name,
    parse_query, parse_response,
};
pub use echo::{MAX_REPEAT, repeat_count};
pub use error::{DnsError, NetworkError, Result};
pub use external::ExternalHost;
pub use http::pattern_byte;
pub use kubeproxy::ServiceProxy;
pub use protocol::Protocol;
pub use workload::{
    ContainerPort, MAX_PATTERN_BYTES, PASSTHROUGH_TARGET, POD_DNS_ENV, RELAY_IDLE_EXIT_ENV,
    WorkloadHandle, WorkloadKind, WorkloadSpec, before_framed_tcp, start_workload,
};
