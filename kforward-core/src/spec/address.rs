//! Local listen addresses as kubectl's `--address` takes them: IPs and `localhost`, comma separated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::SpecError;

/// The address a forward listens on when none is given (kftray's default).
pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Parses a comma-separated list of local addresses, like kubectl's `--address`.
///
/// Each item is an IPv4 or IPv6 address, or `localhost` (any case), which means both
/// `127.0.0.1` and `::1`. Whitespace around items is ignored; duplicates are dropped and the
/// first occurrence keeps its place.
///
/// # Errors
///
/// [`SpecError::InvalidAddress`] for an empty list, an empty item or an item that is not an
/// IP address or `localhost`; it names the item and the whole list.
///
/// # Example
///
/// ```
/// use std::net::IpAddr;
/// use kforward_core::spec::parse_addresses;
///
/// let addresses = parse_addresses("localhost, 127.0.0.1, 10.0.0.5")?;
/// let want: Vec<IpAddr> = vec!["127.0.0.1".parse()?, "::1".parse()?, "10.0.0.5".parse()?];
/// assert_eq!(addresses, want);
/// assert!(parse_addresses("0.0.0.0,example.com").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_addresses(list: &str) -> Result<Vec<IpAddr>, SpecError> {
    let invalid = |item: &str, problem: &str| SpecError::InvalidAddress {
        list: list.to_owned(),
        item: item.to_owned(),
        problem: problem.to_owned(),
    };
    if list.trim().is_empty() {
        return Err(invalid("", "is empty"));
    }
    let mut addresses = Vec::new();
    for item in list.split(',').map(str::trim) {
        let parsed: &[IpAddr] = if item.is_empty() {
            return Err(invalid(item, "has an empty item between commas"));
        } else if item.eq_ignore_ascii_case("localhost") {
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        } else if let Ok(ip) = item.parse::<IpAddr>() {
            &[ip]
        } else {
            return Err(invalid(item, "is not an IP address or \"localhost\""));
        };
        for ip in parsed {
            if !addresses.contains(ip) {
                addresses.push(*ip);
            }
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect()
    }

    #[test]
    fn parses_ips_and_localhost_in_order() {
        for (text, want) in [
            ("127.0.0.1", ips(&["127.0.0.1"])),
            ("::1", ips(&["::1"])),
            ("localhost", ips(&["127.0.0.1", "::1"])),
            ("LocalHost", ips(&["127.0.0.1", "::1"])),
            ("0.0.0.0,::", ips(&["0.0.0.0", "::"])),
            (" 10.0.0.2 , 127.0.0.3 ", ips(&["10.0.0.2", "127.0.0.3"])),
        ] {
            assert_eq!(parse_addresses(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn drops_duplicates_keeping_first_place() {
        assert_eq!(
            parse_addresses("::1,localhost,127.0.0.1,::1,10.1.1.1"),
            Ok(ips(&["::1", "127.0.0.1", "10.1.1.1"]))
        );
    }

    #[test]
    fn rejects_bad_items_naming_them() {
        for (text, item, needle) in [
            ("", "", "is empty"),
            ("  ", "", "is empty"),
            ("127.0.0.1,", "", "empty item"),
            ("127.0.0.1,,::1", "", "empty item"),
            ("example.com", "example.com", "not an IP address"),
            ("127.0.0.1,256.0.0.1", "256.0.0.1", "not an IP address"),
            ("[::1]", "[::1]", "not an IP address"),
            ("127.0.0.1:8080", "127.0.0.1:8080", "not an IP address"),
        ] {
            match parse_addresses(text) {
                Err(SpecError::InvalidAddress {
                    list,
                    item: got,
                    problem,
                }) => {
                    assert_eq!(list, text);
                    assert_eq!(got, item, "{text}");
                    assert!(problem.contains(needle), "{text}: {problem}");
                }
                other => panic!("{text}: expected InvalidAddress, got {other:?}"),
            }
        }
    }

    #[test]
    fn error_display_names_item_and_list() {
        let err = parse_addresses("127.0.0.1,db").expect_err("bad");
        assert_eq!(
            err.to_string(),
            "invalid address \"db\" in \"127.0.0.1,db\": is not an IP address or \"localhost\""
        );
        let err = parse_addresses("").expect_err("empty");
        assert_eq!(err.to_string(), "invalid address list \"\": is empty");
    }
}
