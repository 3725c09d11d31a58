//! The errors of config entries and files: each names the entry (index, alias), the field
//! and the value, and says what is accepted.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// The known fields, in the order errors are reported and fields are written.
const FIELDS: [&str; 22] = [
    "service",
    "namespace",
    "local_port",
    "remote_port",
    "context",
    "workload_type",
    "protocol",
    "remote_address",
    "local_address",
    "alias",
    "kubeconfig",
    "target",
    "proxy_protocol",
    "accept_proxy_protocol",
    "relay_image",
    "relay_pull_policy",
    "relay_pull_secrets",
    "relay_pod_patch",
    "auth",
    "direct",
    "no_relay",
    "cluster_domain",
];

/// One problem with one field of a config entry.
///
/// Its message names the field and the value: `field "remote_port": value "0" is not a port
/// (1-65535)`. An empty value (a missing field) is left out: `field "service": is missing; ...`.
///
/// # Example
///
/// ```
/// use kforward_core::config::FieldError;
///
/// let err = FieldError::new("local_address", "nowhere", "is not an IP address or \"localhost\"");
/// assert_eq!(
///     err.to_string(),
///     r#"field "local_address": value "nowhere" is not an IP address or "localhost""#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    /// The field's name, as in the file.
    pub field: &'static str,
    /// The value as written (strings without quotes, other values as JSON); empty if missing.
    pub value: String,
    /// What is wrong, phrased to follow the value ("is not a port (1-65535)").
    pub problem: String,
}

impl FieldError {
    /// A problem with `value` in `field`.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::config::FieldError;
    ///
    /// let err = FieldError::new("remote_port", "0", "is not a port (1-65535)");
    /// assert_eq!(err.field, "remote_port");
    /// ```
    pub fn new(field: &'static str, value: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field,
            value: value.into(),
            problem: problem.into(),
        }
    }

    pub(super) fn missing(field: &'static str, why: impl fmt::Display) -> Self {
        FieldError::new(field, "", format!("is missing; {why}"))
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "field {:?}: {}", self.field, self.problem)
        } else {
            write!(
                f,
                "field {:?}: value {:?} {}",
                self.field, self.value, self.problem
            )
        }
    }
}

/// Every problem with one config entry; the message joins them with `; `.
///
/// # Example
///
/// ```
/// use kforward_core::config::ForwardConfig;
/// use kforward_core::spec::WorkloadType;
///
/// let config = ForwardConfig { workload_type: WorkloadType::Proxy, ..Default::default() };
/// let err = config.validate().unwrap_err();
/// let fields: Vec<_> = err.errors.iter().map(|e| e.field).collect();
/// assert_eq!(fields, ["remote_port", "remote_address"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in field order; never empty when returned by this crate.
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    /// Collects problems, ordering them by field as written in a kftray file.
    ///
    /// # Example
    ///
    /// ```
    /// use kforward_core::config::{ConfigError, FieldError};
    ///
    /// let err = ConfigError::new(vec![
    ///     FieldError::new("remote_port", "0", "is not a port (1-65535)"),
    ///     FieldError::new("service", "Web", "is not a valid service name"),
    /// ]);
    /// assert_eq!(err.errors[0].field, "service");
    /// ```
    pub fn new(mut errors: Vec<FieldError>) -> Self {
        let rank = |field: &str| {
            FIELDS
                .iter()
                .position(|f| *f == field)
                .unwrap_or(FIELDS.len())
        };
        errors.sort_by_key(|e| rank(e.field));
        ConfigError { errors }
    }
}

impl From<FieldError> for ConfigError {
    fn from(error: FieldError) -> Self {
        ConfigError {
            errors: vec![error],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// What is wrong with one entry of a config file.
///
/// # Example
///
/// ```
/// use kforward_core::config::EntryProblem;
///
/// let problem = EntryProblem::NotAnObject { found: "a number" };
/// assert!(matches!(problem, EntryProblem::NotAnObject { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    /// The entry is not a JSON object.
    NotAnObject {
        /// What it is instead ("a number", "an array", ...).
        found: &'static str,
    },
    /// One or more fields are wrong.
    Fields(ConfigError),
}

/// A bad entry of a config file: where it is, its alias, and what is wrong.
///
/// Its message has one line per problem, each starting with the entry:
/// `entry 2 (alias "db"): field "remote_port": value "0" is not a port (1-65535)`.
///
/// # Example
///
/// ```
/// use kforward_core::config::{ConfigError, EntryError, EntryProblem, FieldError};
///
/// let err = EntryError {
///     index: 2,
///     alias: Some("db".into()),
///     problem: EntryProblem::Fields(FieldError::new("remote_port", "0", "is not a port (1-65535)").into()),
/// };
/// assert_eq!(
///     err.to_string(),
///     r#"entry 2 (alias "db"): field "remote_port": value "0" is not a port (1-65535)"#
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct EntryError {
    /// The entry's position in the file's array, from 0.
    pub index: usize,
    /// The entry's `alias`, if it has a non-empty string one.
    pub alias: Option<String>,
    /// What is wrong.
    pub problem: EntryProblem,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entry = format!("entry {}", self.index);
        if let Some(alias) = &self.alias {
            write!(entry, " (alias {alias:?})")?;
        }
        match &self.problem {
            EntryProblem::NotAnObject { found } => {
                write!(f, "{entry}: is {found}, not a JSON object")
            }
            EntryProblem::Fields(config) => {
                for (i, error) in config.errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{entry}: {error}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a config file could not be loaded.
///
/// # Example
///
/// ```
/// use kforward_core::config::{ConfigFileError, load_configs};
///
/// let err = load_configs("[{\"service\": \"web\",]").unwrap_err();
/// assert!(matches!(err, ConfigFileError::Syntax { line: 1, column: 20, .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {:?}", path.display().to_string())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not JSON.
    #[error("{}invalid JSON at line {line}, column {column}: {message}", prefix(path.as_deref()))]
    Syntax {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// The line of the error, from 1.
        line: usize,
        /// The column of the error, from 1 (0 at the end of the text).
        column: usize,
        /// What the JSON parser expected.
        message: String,
    },
    /// The JSON is neither an array of entries nor a single entry object.
    #[error("{}expected a JSON array of forwards (or one forward object), found {found}", prefix(path.as_deref()))]
    NotAList {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// What the JSON is instead.
        found: &'static str,
    },
    /// Some entries are invalid; all of them are listed.
    #[error("{}{}", prefix(path.as_deref()), entries_message(*total, entries))]
    InvalidEntries {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// How many entries the file has.
        total: usize,
        /// Every bad entry, in file order.
        entries: Vec<EntryError>,
    },
    /// The `relay` section is invalid; every problem is listed.
    #[error("{}{}", prefix(path.as_deref()), relay_message(errors))]
    InvalidRelay {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// Every problem, each naming its field and value.
        errors: Vec<FieldError>,
    },
    /// The file is an object with fields other than `forwards` and `relay`.
    #[error("{}unknown top-level field(s) {} (a config file has \"forwards\" and \"relay\")", prefix(path.as_deref()), quoted(fields))]
    UnknownFields {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// The fields, as written.
        fields: Vec<String>,
    },
}

fn relay_message(errors: &[FieldError]) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("the relay section is invalid: {}", all.join("; "))
}

fn quoted(fields: &[String]) -> String {
    let all: Vec<String> = fields.iter().map(|f| format!("{f:?}")).collect();
    all.join(", ")
}

fn prefix(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("config file {:?}: ", path.display().to_string()),
        None => "config: ".to_owned(),
    }
}

fn entries_message(total: usize, entries: &[EntryError]) -> String {
    let verb = if entries.len() == 1 { "is" } else { "are" };
    let noun = if total == 1 { "entry" } else { "entries" };
    let mut message = format!("{} of {total} {noun} {verb} invalid:", entries.len());
    for entry in entries {
        for line in entry.to_string().lines() {
            message.push_str("\n  ");
            message.push_str(line);
        }
    }
    message
}
