//! Forward definitions as stored in config files, compatible with kftray's JSON export.
//!
//! A config file is a JSON array of [`ForwardConfig`] objects (a single object is accepted
//! too), or an object with that array as `forwards` beside a `relay` section
//! ([`RelaySection`], read by [`load_config_document`]). Field names follow kftray, so its
//! exports load unchanged; fields this crate does not know are kept in
//! [`ForwardConfig::extra`] and written back. [`load_configs`] reports every bad entry at
//! once, each with its index, alias and field.
//!
//! The parts, in the order an entry passes them: the entry itself (`entry`), reading it out of
//! JSON (`read`), the rules it must follow (`rules`), whole files (`load`) and what an entry
//! means as a [`ForwardSpec`](crate::spec::ForwardSpec) (`to_spec`); the relay settings of an
//! entry (`relay_entry`, [`RelayConfig`]) and of the whole file (`relay_section`,
//! [`RelaySection`]); `error` holds the errors of all of them. This module depends on
//! [`spec`](crate::spec) and [`relay`](crate::relay), never the other way round.

mod entry;
mod error;
#[cfg(test)]
mod fixture;
mod load;
mod read;
mod relay_entry;
mod relay_section;
mod rules;
mod to_spec;

pub use entry::{DEFAULT_NAMESPACE, ForwardConfig};
pub use error::{ConfigError, ConfigFileError, EntryError, EntryProblem, FieldError};
pub use load::{
    ConfigDocument, EntryDefaults, load_config_document, load_config_document_file,
    load_config_file, load_config_file_with, load_configs,
};
pub use relay_entry::RelayConfig;
pub use relay_section::RelaySection;
