//! Tests of the C ABI: from Rust, from a real C program (also under AddressSanitizer) and
//! from Python's ctypes, against the testkit's simulated cluster.

mod api;
mod c_example;
mod common;
mod header;
mod proxy;
mod python_example;
mod relay;
