//! Kubernetes naming rules (DNS-1123 names, label keys and values, port names, hosts), checked before any request.
//!
//! Each check returns `Err(problem)` with a phrase that reads after a value, e.g.
//! `value "Web" ` + `contains 'W'; use lowercase letters, digits and '-'`.

use std::net::IpAddr;

/// Longest DNS-1123 label (namespace, service name, label value, name part of a label key).
pub(crate) const LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain (pod and deployment names, label key prefixes).
pub(crate) const SUBDOMAIN_MAX: usize = 253;
/// Longest IANA service name, the rule for named container ports.
pub(crate) const PORT_NAME_MAX: usize = 15;

/// Checks a DNS-1123 label: 1 to 63 lowercase letters, digits and '-', starting and ending
/// with a letter or digit (namespaces, service names).
pub(crate) fn check_dns1123_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > LABEL_MAX {
        return Err(format!(
            "is {} characters long (at most {LABEL_MAX})",
            name.len()
        ));
    }
    check_label_chars(name)
}

/// Checks a DNS-1123 subdomain: at most 253 characters of dot-separated DNS-1123 labels
/// (pod and deployment names).
pub(crate) fn check_dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > SUBDOMAIN_MAX {
        return Err(format!(
            "is {} characters long (at most {SUBDOMAIN_MAX})",
            name.len()
        ));
    }
    for part in name.split('.') {
        if part.is_empty() {
            return Err("has an empty part between dots".to_owned());
        }
        check_label_chars(part)?;
    }
    Ok(())
}

/// The character rules shared by labels and each part of a subdomain.
fn check_label_chars(part: &str) -> Result<(), String> {
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let hint = if c.is_ascii_uppercase() {
            " (names are lowercase)"
        } else {
            ""
        };
        return Err(format!(
            "contains {c:?}{hint}; use lowercase letters, digits and '-'"
        ));
    }
    if part.starts_with('-') || part.ends_with('-') {
        return Err("must start and end with a lowercase letter or digit".to_owned());
    }
    Ok(())
}

/// Checks a label key: an optional DNS-1123 subdomain prefix and '/', then a name of 1 to 63
/// letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
pub(crate) fn check_label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            check_dns1123_subdomain(prefix).map_err(|p| format!("has a prefix that {p}"))?;
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("has an empty name".to_owned());
    }
    check_label_value(name)
}

/// Checks a label value: empty, or 1 to 63 letters, digits, '-', '_' and '.', starting and
/// ending with a letter or digit.
pub(crate) fn check_label_value(value: &str) -> Result<(), String> {
    if value.len() > LABEL_MAX {
        return Err(format!(
            "is {} characters long (at most {LABEL_MAX})",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    let alnum = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    if !alnum(value.chars().next()) || !alnum(value.chars().last()) {
        return Err("must start and end with a letter or digit".to_owned());
    }
    Ok(())
}

/// Checks an IANA service name, the rule for named container ports: 1 to 15 lowercase
/// letters, digits and '-', with at least one letter, no leading, trailing or double '-'.
pub(crate) fn check_port_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > PORT_NAME_MAX {
        return Err(format!(
            "is {} characters long (a port name has at most {PORT_NAME_MAX})",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "contains {c:?}; a port name uses lowercase letters, digits and '-'"
        ));
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("has no letter; a port name needs at least one".to_owned());
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err("has a leading, trailing or doubled '-'".to_owned());
    }
    Ok(())
}

/// Checks a host for a proxy forward: an IP address or a DNS name, without scheme, port or path.
pub(crate) fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("is empty".to_owned());
    }
    if host.contains("://") {
        return Err(
            "has a URL scheme; give only the host name or IP address (e.g. \"db.example.com\")"
                .to_owned(),
        );
    }
    if host.chars().any(char::is_whitespace) {
        return Err("contains whitespace".to_owned());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') {
        return Err(
            "looks like HOST:PORT or a bracketed address; give the host alone and the port separately"
                .to_owned(),
        );
    }
    if host.contains('/') {
        return Err("contains '/'; give only the host, not a path".to_owned());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > SUBDOMAIN_MAX {
        return Err(format!(
            "is {} characters long (a host name has at most {SUBDOMAIN_MAX})",
            name.len()
        ));
    }
    for part in name.split('.') {
        if part.is_empty() {
            return Err("has an empty part between dots".to_owned());
        }
        if part.len() > LABEL_MAX {
            return Err(format!(
                "has a part of {} characters (at most {LABEL_MAX})",
                part.len()
            ));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Err(format!(
                "contains {c:?}; a host name uses letters, digits, '-', '_' and '.'"
            ));
        }
        if part.starts_with('-') || part.ends_with('-') {
            return Err("has a part that starts or ends with '-'".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "web", "web-1", "0", "a0-b", &"a".repeat(63)] {
            assert_eq!(check_dns1123_label(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a.b", "a_b", "a b", &"a".repeat(64)] {
            assert!(check_dns1123_label(bad).is_err(), "{bad}");
        }
        let upper = check_dns1123_label("Web").expect_err("uppercase");
        assert!(
            upper.contains("'W'") && upper.contains("lowercase"),
            "{upper}"
        );
        let long = check_dns1123_label(&"a".repeat(64)).expect_err("too long");
        assert!(long.contains("64") && long.contains("63"), "{long}");
    }

    #[test]
    fn subdomains() {
        for ok in ["web", "web-0.web.ns", "a.b.c", &"a".repeat(253)] {
            assert_eq!(check_dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "A.b", "a.-b", &"a".repeat(254)] {
            assert!(check_dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "a_b.c-D",
            "example.com/Tier",
        ] {
            assert_eq!(check_label_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/app", "Ex.com/app", "app/", "-app", "a b", "a/b/c"] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "web", "v1.2_3-x", &"v".repeat(63)] {
            assert_eq!(check_label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-v", "v-", "v/1", "a b", &"v".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_names() {
        for ok in ["http", "grpc-web", "h2c", "a", "x1-2"] {
            assert_eq!(check_port_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "123",
            "HTTP",
            "-http",
            "http-",
            "a--b",
            "abcdefghijklmnop",
            "a_b",
        ] {
            assert!(check_port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "db",
            "db.example.com",
            "db.example.com.",
            "my_srv.local",
            "DB.Example.COM",
            "10.0.0.1",
            "::1",
            "fd00::5",
            "web.ns.svc.cluster.local",
        ] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for (bad, needle) in [
            ("", "empty"),
            ("http://db", "scheme"),
            ("db host", "whitespace"),
            ("db:5432", "PORT"),
            ("[::1]", "bracketed"),
            ("db/x", "path"),
            ("a..b", "empty part"),
            ("-a.b", "'-'"),
            ("a!b", "'!'"),
        ] {
            let problem = check_host(bad).expect_err(bad);
            assert!(problem.contains(needle), "{bad}: {problem}");
        }
    }
}
