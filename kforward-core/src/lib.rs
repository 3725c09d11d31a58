//! x
pub mod config;
pub mod spec;
