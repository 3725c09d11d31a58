//! Whole config files: a JSON array of entries (or one entry), each read and checked on its
//! own so that every bad entry is reported at once.

use std::path::Path;

use serde_json::{Map, Value};

use super::entry::ForwardConfig;
use super::error::{ConfigError, ConfigFileError, EntryError, EntryProblem};
use super::read::json_kind;
use super::relay_section::{RelaySection, split_document};

/// A whole config file: its entries and its `relay` section (empty when it has none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigDocument {
    /// The entries, in file order.
    pub forwards: Vec<ForwardConfig>,
    /// Settings of the relay pods the entries share.
    pub relay: RelaySection,
}

/// Parses a config file's text: a JSON array of forward objects, or one object.
///
/// Each entry is read and validated on its own, so every bad entry is reported at once,
/// with its index, alias and fields. A leading byte order mark is ignored.
///
/// # Errors
///
/// [`ConfigFileError::Syntax`] with the line and column of a JSON syntax error,
/// [`ConfigFileError::NotAList`] for other top-level JSON, and
/// [`ConfigFileError::InvalidEntries`] listing every bad entry.
///
/// # Example
///
/// ```
/// use kforward_core::config::load_configs;
///
/// let configs = load_configs(r#"[
///     {"alias": "web", "service": "web", "namespace": "shop", "remote_port": 80, "local_port": 8080},
///     {"workload_type": "proxy", "remote_address": "db.internal", "remote_port": 5432}
/// ]"#)?;
/// assert_eq!(configs.len(), 2);
///
/// let err = load_configs(r#"[{"alias": "db", "service": "pg", "remote_port": 0}, {"service": "web"}]"#)
///     .unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "config: 2 of 2 entries are invalid:\n  \
///      entry 0 (alias \"db\"): field \"remote_port\": value \"0\" is not a port (1-65535)\n  \
///      entry 1: field \"remote_port\": is missing; workload_type \"service\" needs the port on the target"
/// );
/// # Ok::<(), kforward_core::config::ConfigFileError>(())
/// ```
pub fn load_configs(json: &str) -> Result<Vec<ForwardConfig>, ConfigFileError> {
    load(json, None, &EntryDefaults::default()).map(|d| d.forwards)
}

/// Parses a config file's text as [`load_configs`] does, with its `relay` section: the
/// file may be `{"relay": {...}, "forwards": [...]}` as well as a plain array of entries.
///
/// # Errors
///
/// Those of [`load_configs`], [`ConfigFileError::InvalidRelay`] naming each bad field and
/// value of the `relay` section, and [`ConfigFileError::UnknownFields`] for other fields
/// beside `forwards` and `relay`.
///
/// # Example
///
/// ```
/// use kforward_core::config::load_config_document;
///
/// let doc = load_config_document(r#"{"relay": {"env": {"NO_PROXY": ".corp"}}, "forwards": []}"#)?;
/// assert_eq!(doc.relay.env["NO_PROXY"], ".corp");
///
/// let err = load_config_document(r#"{"relay": {"env": {"HTTPS_PROXY": "socks5://p:1080"}}}"#)
///     .unwrap_err();
/// assert!(err.to_string().contains(r#"field "relay.env": value "HTTPS_PROXY=socks5://p:1080""#));
/// # Ok::<(), kforward_core::config::ConfigFileError>(())
/// ```
pub fn load_config_document(json: &str) -> Result<ConfigDocument, ConfigFileError> {
    load(json, None, &EntryDefaults::default())
}

/// Reads and parses a config file as [`load_config_document`] does, filling what entries
/// leave unset from `defaults` first; errors name the file.
///
/// # Errors
///
/// [`ConfigFileError::Read`] naming the path if it cannot be read, and every error of
/// [`load_config_document`], with the path.
pub fn load_config_document_file(
    path: impl AsRef<Path>,
    defaults: &EntryDefaults,
) -> Result<ConfigDocument, ConfigFileError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    load(&text, Some(path), defaults)
}

/// Reads and parses a config file, as [`load_configs`] does; errors name the file.
///
/// The file is read synchronously; config files are small.
///
/// # Errors
///
/// [`ConfigFileError::Read`] naming the path if it cannot be read (the I/O error is its
/// `source`), and every error of [`load_configs`], with the path.
///
/// # Example
///
/// ```
/// use kforward_core::config::{ConfigFileError, load_config_file};
///
/// let path = std::env::temp_dir().join(format!("kforward-doc-{}.json", std::process::id()));
/// std::fs::write(&path, r#"[{"service": "web", "remote_port": 80}]"#)?;
/// assert_eq!(load_config_file(&path)?.len(), 1);
/// std::fs::remove_file(&path)?;
///
/// let err = load_config_file(&path).unwrap_err();
/// assert!(matches!(err, ConfigFileError::Read { .. }));
/// assert!(err.to_string().contains(&path.display().to_string()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_config_file(path: impl AsRef<Path>) -> Result<Vec<ForwardConfig>, ConfigFileError> {
    load_config_file_with(path, &EntryDefaults::default())
}

/// Values for the entries of a config file that leave them unset (`kforward run`'s
/// `-n`, `--context` and `--kubeconfig`). A missing or `null` field is unset; so are an
/// empty `context` and an empty or `"default"` `kubeconfig`, as kftray writes them.
///
/// # Example
///
/// ```
/// use kforward_core::config::{EntryDefaults, load_config_file_with};
///
/// let path = std::env::temp_dir().join(format!("kforward-defaults-{}.json", std::process::id()));
/// std::fs::write(&path, r#"[{"service": "web", "remote_port": 80},
///                           {"service": "db", "namespace": "data", "remote_port": 5432}]"#)?;
/// let defaults = EntryDefaults { namespace: Some("shop".into()), ..Default::default() };
/// let configs = load_config_file_with(&path, &defaults)?;
/// assert_eq!(configs[0].namespace, "shop");
/// assert_eq!(configs[1].namespace, "data");
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryDefaults {
    /// For entries without `namespace`.
    pub namespace: Option<String>,
    /// For entries without `context`.
    pub context: Option<String>,
    /// For entries without `kubeconfig`.
    pub kubeconfig: Option<String>,
}

impl EntryDefaults {
    /// Sets the unset fields of one entry.
    fn apply(&self, map: &mut Map<String, Value>) {
        let fields = [
            ("namespace", &self.namespace),
            ("context", &self.context),
            ("kubeconfig", &self.kubeconfig),
        ];
        for (field, value) in fields {
            let Some(value) = value else { continue };
            let unset = match map.get(field) {
                None | Some(Value::Null) => true,
                Some(Value::String(text)) => match field {
                    "context" => text.trim().is_empty(),
                    "kubeconfig" => text.trim().is_empty() || text == "default",
                    _ => false,
                },
                Some(_) => false,
            };
            if unset {
                map.insert(field.to_owned(), Value::String(value.clone()));
            }
        }
    }
}

/// Reads and parses a config file as [`load_config_file`] does, filling what entries
/// leave unset from `defaults` first.
///
/// # Errors
///
/// As [`load_config_file`].
pub fn load_config_file_with(
    path: impl AsRef<Path>,
    defaults: &EntryDefaults,
) -> Result<Vec<ForwardConfig>, ConfigFileError> {
    load_config_document_file(path, defaults).map(|d| d.forwards)
}

fn load(
    json: &str,
    path: Option<&Path>,
    defaults: &EntryDefaults,
) -> Result<ConfigDocument, ConfigFileError> {
    let path_buf = || path.map(Path::to_path_buf);
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    let document: Value = serde_json::from_str(json).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let full = e.to_string();
        let message = full
            .strip_suffix(&format!(" at line {line} column {column}"))
            .unwrap_or(&full)
            .to_owned();
        ConfigFileError::Syntax {
            path: path_buf(),
            line,
            column,
            message,
        }
    })?;
    let parts = split_document(document);
    if !parts.unknown.is_empty() {
        return Err(ConfigFileError::UnknownFields {
            path: path_buf(),
            fields: parts.unknown,
        });
    }
    let relay = match parts.relay.map(RelaySection::read).transpose() {
        Ok(relay) => relay.unwrap_or_default(),
        Err(errors) => {
            return Err(ConfigFileError::InvalidRelay {
                path: path_buf(),
                errors,
            });
        }
    };
    let items = match parts.forwards {
        Value::Array(items) => items,
        Value::Object(map) if !parts.sectioned => vec![Value::Object(map)],
        other => {
            return Err(ConfigFileError::NotAList {
                path: path_buf(),
                found: json_kind(&other),
            });
        }
    };
    let total = items.len();
    let mut configs = Vec::with_capacity(total);
    let mut entries = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(mut map) = item else {
            entries.push(EntryError {
                index,
                alias: None,
                problem: EntryProblem::NotAnObject {
                    found: json_kind(&item),
                },
            });
            continue;
        };
        let alias = map
            .get("alias")
            .and_then(Value::as_str)
            .filter(|alias| !alias.trim().is_empty())
            .map(str::to_owned);
        defaults.apply(&mut map);
        match ForwardConfig::from_entry(map) {
            Ok(config) => configs.push(config),
            Err(errors) => entries.push(EntryError {
                index,
                alias,
                problem: EntryProblem::Fields(errors),
            }),
        }
    }
    if entries.is_empty() {
        Ok(ConfigDocument {
            forwards: configs,
            relay,
        })
    } else {
        Err(ConfigFileError::InvalidEntries {
            path: path_buf(),
            total,
            entries,
        })
    }
}

impl ForwardConfig {
    /// Reads and validates one entry of a config file, reporting every problem: type errors
    /// first found while reading, then the rules of [`validate`](Self::validate) for the
    /// other fields. A bad `workload_type` stops there, since the rules depend on it.
    fn from_entry(map: Map<String, Value>) -> Result<Self, ConfigError> {
        let (config, mut errors) = ForwardConfig::read_fields(map);
        if errors.is_empty() {
            return config.validate().map(|()| config);
        }
        if !errors.iter().any(|e| e.field == "workload_type")
            && let Err(more) = config.validate()
        {
            let unread: Vec<&str> = errors.iter().map(|e| e.field).collect();
            errors.extend(
                more.errors
                    .into_iter()
                    .filter(|e| !unread.contains(&e.field)),
            );
        }
        Err(ConfigError::new(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::{KFTRAY_EXPORT, fields};
    use crate::spec::{Protocol, WorkloadType};

    fn entry_errors(err: ConfigFileError) -> Vec<EntryError> {
        match err {
            ConfigFileError::InvalidEntries { entries, .. } => entries,
            other => panic!("expected InvalidEntries, got {other}"),
        }
    }

    #[test]
    fn unknown_fields_come_back_exactly_when_written_back() {
        // Found by the kftray_config fuzz target: a number in an unknown field was read
        // imprecisely, so a config written back (as `kforward` saves it) loaded differently.
        let text = r#"[{"service":"db","namespace":"prod","remote_port":5432,"local_port":5432,"workload_type":"service","cluster_note":5.436000000938248e22}]"#;
        let configs = load_configs(text).expect("loads");
        let written = serde_json::to_string(&configs).expect("serializes");
        assert!(written.contains("5.436000000938248e+22"), "{written}");
        assert_eq!(load_configs(&written).expect("loads again"), configs);
    }

    #[test]
    fn kftray_export_loads_unchanged() {
        let configs = load_configs(KFTRAY_EXPORT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(configs.len(), 5);

        let argocd = &configs[0];
        assert_eq!(argocd.service.as_deref(), Some("argocd-server"));
        assert_eq!(argocd.namespace, "argocd");
        assert_eq!(
            (argocd.local_port, argocd.remote_port),
            (Some(8443), Some(443))
        );
        assert_eq!(argocd.workload_type, WorkloadType::Service);
        assert_eq!(argocd.remote_address.as_deref(), Some(""));
        assert_eq!(argocd.extra["id"], 1);
        assert_eq!(argocd.extra["http_logs_max_file_size"], 10_485_760);
        assert_eq!(argocd.extra["domain_enabled"], false);
        assert_eq!(argocd.extra.len(), 6);

        let pg = &configs[1];
        assert_eq!(pg.workload_type, WorkloadType::Proxy);
        assert_eq!(pg.protocol, Protocol::Tcp);
        assert_eq!(pg.service, None);
        assert_eq!(pg.extra["http_logs_enabled"], Value::Null);
        assert_eq!(pg.extra["auto_loopback_address"], true);

        let nginx = &configs[2];
        assert_eq!(
            (nginx.local_port, nginx.remote_port),
            (Some(8080), Some(80))
        );

        let dns = &configs[3];
        assert_eq!(dns.workload_type, WorkloadType::Service);
        assert_eq!(dns.protocol, Protocol::Udp);
        assert!(dns.extra.is_empty());

        assert_eq!(configs[4].workload_type, WorkloadType::Pod);

        let labels: Vec<String> = configs.iter().map(ForwardConfig::label).collect();
        assert_eq!(
            labels,
            [
                "argocd",
                "pg",
                "pod?app.kubernetes.io/name=nginx,tier in (frontend):80",
                "dns",
                "pod/redis-0:6379"
            ]
        );
    }

    #[test]
    fn export_round_trips_with_extra_fields() {
        let configs = load_configs(KFTRAY_EXPORT).unwrap_or_else(|e| panic!("{e}"));
        let written = serde_json::to_string_pretty(&configs).expect("serialize");
        assert_eq!(
            load_configs(&written).unwrap_or_else(|e| panic!("{e}")),
            configs
        );

        let value: Value = serde_json::from_str(&written).expect("json");
        let first = &value[0];
        assert_eq!(first["id"], 1);
        assert_eq!(first["http_logs_retention_days"], 7);
        assert_eq!(first["protocol"], "tcp");
        assert_eq!(first["workload_type"], "service");
        assert_eq!(value[1]["protocol"], "tcp", "written in lowercase");
        assert_eq!(
            value[2]["local_port"], 8080,
            "numeric strings are written as numbers"
        );
        assert!(
            value[1].get("service").is_none(),
            "unset fields are left out"
        );
        assert_eq!(
            value[1]["http_logs_enabled"],
            Value::Null,
            "unknown nulls are kept"
        );
    }

    #[test]
    fn three_bad_entries_are_all_reported() {
        let json = r#"[
            {"alias": "ok", "service": "web", "remote_port": 80},
            {"alias": "api", "service": "API", "remote_port": 8080},
            {"service": "web", "namespace": "shop", "local_port": 70000, "remote_port": 80},
            {"alias": "db", "workload_type": "proxy", "remote_address": "postgres://db", "remote_port": 0},
            {"alias": "fine", "workload_type": "proxy", "remote_address": "10.0.0.5", "remote_port": 22}
        ]"#;
        let err = load_configs(json).expect_err("three bad entries");
        assert_eq!(
            err.to_string(),
            "config: 3 of 5 entries are invalid:\n  \
             entry 1 (alias \"api\"): field \"service\": value \"API\" is not a valid service name: it contains 'A' (names are lowercase); use lowercase letters, digits and '-'\n  \
             entry 2: field \"local_port\": value \"70000\" is not a port (0-65535, where 0 picks a free port)\n  \
             entry 3 (alias \"db\"): field \"remote_port\": value \"0\" is not a port (1-65535)\n  \
             entry 3 (alias \"db\"): field \"remote_address\": value \"postgres://db\" is not a valid host: it has a URL scheme; give only the host name or IP address (e.g. \"db.example.com\")"
        );
        let entries = entry_errors(err);
        let summary: Vec<(usize, Option<&str>, Vec<&str>)> = entries
            .iter()
            .map(|e| match &e.problem {
                EntryProblem::Fields(c) => (e.index, e.alias.as_deref(), fields(&c.errors)),
                EntryProblem::NotAnObject { .. } => panic!("not an object"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, Some("api"), vec!["service"]),
                (2, None, vec!["local_port"]),
                (3, Some("db"), vec!["remote_port", "remote_address"]),
            ]
        );
    }

    #[test]
    fn type_errors_and_rule_errors_of_one_entry_are_combined() {
        let err = load_configs(
            r#"[{"alias": "x", "service": 5, "namespace": "Shop", "remote_port": "http", "protocol": "sctp", "local_address": "lan"}]"#,
        )
        .expect_err("bad");
        let entries = entry_errors(err);
        let EntryProblem::Fields(config) = &entries[0].problem else {
            panic!("expected field errors");
        };
        assert_eq!(
            fields(&config.errors),
            [
                "service",
                "namespace",
                "remote_port",
                "protocol",
                "local_address"
            ]
        );
        assert_eq!(
            config.errors[0].to_string(),
            "field \"service\": value \"5\" is a number, not a string"
        );
        assert_eq!(
            config.errors[2].to_string(),
            "field \"remote_port\": value \"http\" is not a port (1-65535)"
        );
        assert_eq!(
            config.errors[3].to_string(),
            "field \"protocol\": value \"sctp\" is not a protocol (expected \"tcp\" or \"udp\")"
        );
    }

    #[test]
    fn bad_workload_type_skips_the_rules_that_depend_on_it() {
        let entries = entry_errors(
            load_configs(r#"{"workload_type": "job", "remote_port": 0}"#).expect_err("bad"),
        );
        let EntryProblem::Fields(config) = &entries[0].problem else {
            panic!("expected field errors");
        };
        assert_eq!(fields(&config.errors), ["workload_type"]);
        assert!(
            config.errors[0]
                .problem
                .contains("\"replicaset\" or \"socks\"")
        );
    }

    #[test]
    fn non_object_entries_are_reported() {
        let entries = entry_errors(
            load_configs(r#"[42, {"service": "web", "remote_port": 80}, []]"#).expect_err("bad"),
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].to_string(),
            "entry 0: is a number, not a JSON object"
        );
        assert_eq!(entries[1].index, 2);
        assert_eq!(
            entries[1].problem,
            EntryProblem::NotAnObject { found: "an array" }
        );
    }

    #[test]
    fn syntax_errors_report_line_and_column() {
        let err = load_configs("[\n  {\"service\": \"web\"\n  \"remote_port\": 80}\n]")
            .expect_err("syntax");
        let ConfigFileError::Syntax {
            line,
            column,
            message,
            path,
        } = &err
        else {
            panic!("expected Syntax, got {err}");
        };
        assert_eq!((*line, *column), (3, 3));
        assert_eq!(message, "expected `,` or `}`");
        assert_eq!(path, &None);
        assert_eq!(
            err.to_string(),
            "config: invalid JSON at line 3, column 3: expected `,` or `}`"
        );
        assert!(matches!(
            load_configs(""),
            Err(ConfigFileError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn top_level_must_be_array_or_object() {
        let err = load_configs("\"svc/web\"").expect_err("string");
        assert!(matches!(
            err,
            ConfigFileError::NotAList {
                found: "a string",
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "config: expected a JSON array of forwards (or one forward object), found a string"
        );
        assert_eq!(load_configs("[]").map(|c| c.len()).ok(), Some(0));
    }

    #[test]
    fn single_object_and_byte_order_mark_are_accepted() {
        let configs = load_configs("\u{feff}{\"service\": \"web\", \"remote_port\": 80}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(configs.len(), 1);
        assert_eq!(configs[0].namespace, "default");
        let err = load_configs(r#"{"alias": "solo", "service": "web"}"#).expect_err("no port");
        assert!(err.to_string().starts_with("config: 1 of 1 entry is invalid:\n  entry 0 (alias \"solo\"): field \"remote_port\": is missing"), "{err}");
    }

    #[test]
    fn config_files_are_read_and_errors_name_the_path() {
        let dir = std::env::temp_dir().join(format!("kforward-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("good.json");
        std::fs::write(&good, KFTRAY_EXPORT).expect("write");
        assert_eq!(load_config_file(&good).map(|c| c.len()).ok(), Some(5));

        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"[{"alias": "db", "service": "db"}]"#).expect("write");
        let text = load_config_file(&bad).expect_err("bad").to_string();
        assert!(
            text.starts_with(&format!(
                "config file {:?}: 1 of 1 entry is invalid:",
                bad.display().to_string()
            )),
            "{text}"
        );

        let broken = dir.join("broken.json");
        std::fs::write(&broken, "[{]").expect("write");
        let err = load_config_file(&broken).expect_err("syntax");
        assert!(
            matches!(&err, ConfigFileError::Syntax { path: Some(p), line: 1, column: 3, .. } if p == &broken),
            "{err}"
        );

        let missing = dir.join("missing.json");
        let err = load_config_file(&missing).expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read config file {:?}",
                missing.display().to_string()
            )
        );
        let source = std::error::Error::source(&err).expect("io source");
        assert!(
            source
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
