//! Harnesses that measure kforward under load and faults, shared by the bench binaries
//! and the tests that run them briefly: [`soak`], a long run of many forwards and
//! connections while a chaos loop breaks the cluster, and [`scale`], the limits of one
//! `kforward run`.

pub mod scale;
pub mod soak;
