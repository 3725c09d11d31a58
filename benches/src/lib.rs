//! Harnesses that measure kforward under load and faults, shared by the bench binaries
//! and the tests that run them briefly: [`soak`], a long run of many forwards and
//! connections while a chaos loop breaks the cluster, [`scale`], the limits of one
//! `kforward run`, and [`floor`], the least CPU any port-forward client spends per GiB
//! (`compare`'s `floor` row and the `tls-floor` binary).

pub mod floor;
pub mod scale;
pub mod soak;
