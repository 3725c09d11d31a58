//! `NO_PROXY`-style rules: which destinations bypass a proxy.
//!
//! One syntax serves the proxy toward the API server (`NO_PROXY`/`no_proxy`), the relay's
//! egress proxy and the forward proxy's `--direct` rules; it lives here so that the relay
//! matches it too (`kforward-core` re-exports it as `kforward_core::no_proxy`). The matching
//! follows Go's `golang.org/x/net/http/httpproxy` (`Config.ProxyFunc`, `useProxy`), which
//! client-go and so kubectl use:
//!
//! - `*` matches everything;
//! - `example.com` matches `example.com` and every name under it; `.example.com` (or
//!   `*.example.com`) only the names under it;
//! - `10.0.0.1` matches that address, `10.0.0.0/8` and `fd00::/8` every address in the range
//!   (a name is never resolved to be matched against a range);
//! - any host or address rule may carry a port, `example.com:8443`, `[::1]:6443`, and then
//!   matches that port only.
//!
//! Matching is case-insensitive and ignores a trailing dot. Go also never proxies
//! `localhost` and loopback addresses; that is the caller's decision (see
//! [`is_loopback_host`]), because a forward proxy's `--direct` rules should not imply it.

use std::fmt;
use std::net::IpAddr;

/// One rule of a `NO_PROXY` list.
///
/// # Example
///
/// ```
/// use kforward_relay::no_proxy::NoProxy;
/// let rules = NoProxy::parse("internal.example, .svc, 10.0.0.0/8, api.example:6443");
/// let rule = rules.matching("db.internal.example", 5432).unwrap();
/// assert_eq!(rule.to_string(), "internal.example");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `*`: every destination.
    Everything,
    /// A domain: the name itself (unless the rule began with a dot) and every name under it.
    Domain {
        /// The name, lower case, without a leading dot or trailing dot.
        name: String,
        /// Whether the name itself matches (`example.com`), not only names under it
        /// (`.example.com`).
        include_self: bool,
        /// The one port matched, or every port.
        port: Option<u16>,
    },
    /// One IP address.
    Address {
        /// The address.
        ip: IpAddr,
        /// The one port matched, or every port.
        port: Option<u16>,
    },
    /// A range of addresses, `10.0.0.0/8`.
    Range {
        /// The first address of the range, as written.
        network: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
}

impl Rule {
    /// Parses one entry; `None` for an empty or malformed one (Go skips those too).
    fn parse(entry: &str) -> Option<Rule> {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            return None;
        }
        if entry == "*" {
            return Some(Rule::Everything);
        }
        if let Some((net, prefix)) = entry.split_once('/') {
            let network: IpAddr = net.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            return (prefix <= max).then_some(Rule::Range { network, prefix });
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Some(Rule::Address { ip, port: None });
        }
        let (host, port) = split_port(&entry)?;
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            return Some(Rule::Address { ip, port });
        }
        // `* .example.com` is `.example.com`: what follows the `*` is trimmed as the entry
        // was, so that a rule written back parses to itself.
        let host = host.strip_prefix('*').map_or(host, str::trim);
        let include_self = !host.starts_with('.');
        let name = host.trim_start_matches('.').trim_end_matches('.');
        // A `*` anywhere but first (`**`, `*\n*`, `a*b`) is no host name and no wildcard
        // Go knows: such an entry matches no host, so it is dropped (kept, `*` alone would
        // be written back and read as "everything"). So is a name with blanks or control
        // characters in it (`a\n.` would be written back as `a\n`, which reads as `a`),
        // or with `[`, `]` or `:` (`*[a:5` would be written back as `[a:5`, which is no
        // bracketed address): no DNS name holds one, and an address was read above.
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "*[]:".contains(c))
        {
            return None;
        }
        // An address dressed as a name (`7.0.0.1.`, `*7.0.0.1`) is that address, as its
        // written-back form reads; no host lies under an address (`.7.0.0.1`).
        if let Some(ip) = parse_ip(name) {
            return include_self.then_some(Rule::Address { ip, port });
        }
        Some(Rule::Domain {
            name: name.to_string(),
            include_self,
            port,
        })
    }

    /// Whether `host` (a name or an IP address, IPv6 with or without brackets) and `port`
    /// match this rule.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        match self {
            Rule::Everything => true,
            Rule::Address { ip, port: p } => parse_ip(host) == Some(*ip) && port_ok(p),
            Rule::Range { network, prefix } => {
                parse_ip(host).is_some_and(|ip| in_range(ip, *network, *prefix))
            }
            Rule::Domain {
                name,
                include_self,
                port: p,
            } => {
                if parse_ip(host).is_some() {
                    return false;
                }
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                let under = host.len() > name.len()
                    && host.ends_with(name.as_str())
                    && host.as_bytes()[host.len() - name.len() - 1] == b'.';
                (under || (*include_self && host == *name)) && port_ok(p)
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Everything => f.write_str("*"),
            Rule::Domain {
                name,
                include_self,
                port,
            } => {
                let dot = if *include_self { "" } else { "." };
                write!(f, "{dot}{name}")?;
                port.map_or(Ok(()), |p| write!(f, ":{p}"))
            }
            Rule::Address { ip, port: None } => write!(f, "{ip}"),
            Rule::Address {
                ip: IpAddr::V6(ip),
                port: Some(p),
            } => write!(f, "[{ip}]:{p}"),
            Rule::Address {
                ip: IpAddr::V4(ip),
                port: Some(p),
            } => write!(f, "{ip}:{p}"),
            Rule::Range { network, prefix } => write!(f, "{network}/{prefix}"),
        }
    }
}

/// A `NO_PROXY` list: comma-separated rules (white space around them is ignored).
///
/// # Example
///
/// ```
/// use kforward_relay::no_proxy::NoProxy;
/// let rules = NoProxy::parse("localhost,.cluster.local,10.96.0.0/12");
/// assert!(rules.matching("web.demo.svc.cluster.local", 80).is_some());
/// assert!(rules.matching("10.96.0.10", 53).is_some());
/// assert!(rules.matching("example.com", 443).is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    rules: Vec<Rule>,
}

impl NoProxy {
    /// Parses a comma-separated list; malformed entries are skipped, as Go does.
    pub fn parse(list: &str) -> NoProxy {
        NoProxy {
            rules: list.split(',').filter_map(Rule::parse).collect(),
        }
    }

    /// The rules of `NO_PROXY`, else `no_proxy`, from the environment (none when neither is
    /// set).
    pub fn from_env() -> NoProxy {
        ["NO_PROXY", "no_proxy"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .map(|v| NoProxy::parse(&v))
            .unwrap_or_default()
    }

    /// The first rule that `host` and `port` match, if any.
    pub fn matching(&self, host: &str, port: u16) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(host, port))
    }

    /// The rules, in the order written.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Whether `host` is `localhost` (or a name under it) or a loopback address: Go's
/// `httpproxy` never sends those through a proxy from the environment.
///
/// # Example
///
/// ```
/// assert!(kforward_relay::no_proxy::is_loopback_host("127.0.0.2"));
/// assert!(kforward_relay::no_proxy::is_loopback_host("[::1]"));
/// assert!(!kforward_relay::no_proxy::is_loopback_host("10.0.0.1"));
/// ```
pub fn is_loopback_host(host: &str) -> bool {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || parse_ip(host).is_some_and(|ip| ip.is_loopback())
}

/// An IP address from a host as it appears in a URL or a SOCKS request (IPv6 may be
/// bracketed).
fn parse_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Splits `host:port`; a host without a port (including a bare IPv6 address, handled
/// before this) has `None`. `None` overall for a port that is not a number.
fn split_port(entry: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((&entry[..ip.len() + 2], port));
    }
    match entry.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((entry, None)),
    }
}

fn in_range(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        // An IPv4-mapped IPv6 address against an IPv4 range.
        (IpAddr::V6(ip), IpAddr::V4(_)) => ip
            .to_ipv4_mapped()
            .is_some_and(|v4| in_range(IpAddr::V4(v4), network, prefix)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(list: &str, host: &str, port: u16) -> bool {
        NoProxy::parse(list).matching(host, port).is_some()
    }

    #[test]
    fn a_rule_written_back_parses_to_itself_with_blanks_after_the_star() {
        // Found by the relay_no_proxy fuzz target: `*` then blanks kept the blanks in the
        // name, and the rule written back parsed to another rule.
        for entry in ["* .example.com", "*\n\nexample.com", "*\t.example.com:8443"] {
            let rules = NoProxy::parse(entry);
            let rule = &rules.rules()[0];
            assert_eq!(
                NoProxy::parse(&rule.to_string()).rules(),
                rules.rules(),
                "{entry:?}"
            );
        }
        assert!(m("* .example.com", "api.example.com", 443));
        assert!(!m("* .example.com", "example.com", 443));
    }

    #[test]
    fn a_star_not_first_makes_no_rule_rather_than_everything() {
        // Found by the relay_no_proxy fuzz target: `*\n*` became a domain named `*`,
        // written back as `*`, which reads as "everything".
        for entry in ["*\n\n*", "**", "* *", "a*b", "*.*.example.com"] {
            assert!(NoProxy::parse(entry).is_empty(), "{entry:?}");
            assert!(!m(entry, "example.com", 443), "{entry:?}");
        }
        assert_eq!(NoProxy::parse("**,*").rules(), [Rule::Everything]);
    }

    #[test]
    fn a_name_with_blanks_or_control_characters_makes_no_rule() {
        // Found by the relay_no_proxy fuzz target: `\0\0\n\0\0\n\nlo12710\n\n.` became a
        // domain ending in `\n\n`, written back without its dot, which reads trimmed.
        for entry in [
            "\0\0\n\0\0\n\nlo12710\n\n.",
            "a\n.",
            "a b.example.com",
            "a\tb",
            "*[a:5",
            "[a",
            "a:b:80",
        ] {
            assert!(NoProxy::parse(entry).is_empty(), "{entry:?}");
        }
        assert_eq!(NoProxy::parse(" a.example.com. ,a\n.").rules().len(), 1);
    }

    #[test]
    fn an_address_written_as_a_name_is_that_address() {
        // Found by the relay_no_proxy fuzz target: `7.0.0.1.` became a domain named
        // `7.0.0.1`, written back as `7.0.0.1`, which reads as the address.
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        for (entry, want) in [
            ("7.0.0.1.", ip("7.0.0.1")),
            ("*7.0.0.1", ip("7.0.0.1")),
            ("7.0.0.1.:8080", ip("7.0.0.1")),
        ] {
            let rules = NoProxy::parse(entry);
            assert!(
                matches!(rules.rules(), [Rule::Address { ip, .. }] if *ip == want),
                "{entry:?}: {:?}",
                rules.rules()
            );
            let again = NoProxy::parse(&rules.rules()[0].to_string());
            assert_eq!(again.rules(), rules.rules(), "{entry:?}");
        }
        assert!(m("7.0.0.1.", "7.0.0.1", 80));
        assert!(NoProxy::parse(".7.0.0.1").is_empty());
    }

    #[test]
    fn a_bare_domain_matches_itself_and_names_under_it() {
        assert!(m("example.com", "example.com", 443));
        assert!(m("example.com", "api.example.com", 443));
        assert!(m("example.com", "API.Example.COM.", 443));
        assert!(!m("example.com", "notexample.com", 443));
        assert!(!m("example.com", "example.com.evil", 443));
    }

    #[test]
    fn a_leading_dot_or_star_matches_only_names_under_it() {
        for rule in [".example.com", "*.example.com"] {
            assert!(m(rule, "a.b.example.com", 80), "{rule}");
            assert!(!m(rule, "example.com", 80), "{rule}");
        }
    }

    #[test]
    fn a_star_matches_everything() {
        assert!(m("foo, *", "anything", 1));
        assert!(m("*", "10.0.0.1", 1));
    }

    #[test]
    fn ports_narrow_a_rule() {
        assert!(m("api.example:6443", "api.example", 6443));
        assert!(!m("api.example:6443", "api.example", 443));
        assert!(m("10.0.0.1:6443", "10.0.0.1", 6443));
        assert!(!m("10.0.0.1:6443", "10.0.0.1", 443));
        assert!(m("[fd00::1]:6443", "[fd00::1]", 6443));
        assert!(m("[fd00::1]:6443", "fd00::1", 6443));
        assert!(!m("[fd00::1]:6443", "fd00::1", 1));
        assert!(
            m("fd00::1", "fd00::1", 1),
            "a bare IPv6 address is not host:port"
        );
    }

    #[test]
    fn ranges_match_addresses_and_never_names() {
        assert!(m("10.0.0.0/8", "10.200.3.4", 80));
        assert!(!m("10.0.0.0/8", "11.0.0.1", 80));
        assert!(m("10.96.0.0/12", "10.111.255.255", 80));
        assert!(!m("10.96.0.0/12", "10.112.0.0", 80));
        assert!(m("fd00::/8", "[fd12::1]", 80));
        assert!(!m("fd00::/8", "fe80::1", 80));
        assert!(m("0.0.0.0/0", "1.2.3.4", 80));
        assert!(!m("10.0.0.0/8", "ten.example", 80));
        assert!(m("10.0.0.0/8", "::ffff:10.1.2.3", 80));
    }

    #[test]
    fn an_address_rule_is_not_a_domain_rule() {
        assert!(m("10.0.0.1", "10.0.0.1", 80));
        assert!(!m("10.0.0.1", "110.0.0.1", 80));
        assert!(!m("0.1", "10.0.0.1", 80));
    }

    #[test]
    fn malformed_entries_are_skipped_and_the_rest_kept() {
        let rules = NoProxy::parse(" , 10.0.0.0/99, host:notaport, [::1, ok.example ,");
        assert_eq!(rules.rules().len(), 1);
        assert!(rules.matching("x.ok.example", 1).is_some());
    }

    #[test]
    fn rules_print_as_written() {
        let rules =
            NoProxy::parse("a.example,.b.example,*.c.example,d:1,1.2.3.4,[::1]:5,10.0.0.0/8,*");
        let shown: Vec<String> = rules.rules().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            shown,
            [
                "a.example",
                ".b.example",
                ".c.example",
                "d:1",
                "1.2.3.4",
                "[::1]:5",
                "10.0.0.0/8",
                "*"
            ]
        );
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "localhost",
            "LOCALHOST.",
            "a.localhost",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1", "localhost.example", "example.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
