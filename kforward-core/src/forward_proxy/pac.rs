//! The proxy auto-config file served at `/proxy.pac`: cluster names and the cluster's
//! address ranges through the proxy, everything else `DIRECT`.
//!
//! The PAC functions used (`dnsDomainIs`, `isInNet`) are the Netscape PAC ones that every
//! browser provides; `isInNet` is only called on IP literals, so it never makes the
//! browser resolve a name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

/// What the PAC file routes through the proxy.
#[derive(Debug, Clone, Default)]
pub struct PacInputs {
    /// The proxy as browsers should name it (`host:port`).
    pub proxy: String,
    /// Whether the proxy wants credentials (then the HTTP proxy, for which browsers can
    /// ask the user, instead of SOCKS5, for which they cannot).
    pub auth: bool,
    /// The cluster DNS domain.
    pub cluster_domain: String,
    /// The namespace of bare service names.
    pub namespace: String,
    /// Services by namespace.
    pub services: BTreeMap<String, Vec<String>>,
    /// Every ClusterIP and pod IP known.
    pub addresses: Vec<IpAddr>,
}

/// The IPv4 ranges that cover `ips`: one per /16 they fall in, narrowed to the longest
/// prefix the addresses of that /16 share.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::pac::ranges;
/// let r = ranges(&["10.96.0.10".parse().unwrap(), "10.96.3.1".parse().unwrap()]);
/// assert_eq!(r, vec![("10.96.0.0".parse().unwrap(), 22)]);
/// ```
pub fn ranges(ips: &[IpAddr]) -> Vec<(Ipv4Addr, u8)> {
    let mut by16: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    for ip in ips {
        if let IpAddr::V4(v4) = ip {
            let n = u32::from(*v4);
            let e = by16.entry(n >> 16).or_insert((n, n));
            e.0 = e.0.min(n);
            e.1 = e.1.max(n);
        }
    }
    by16.values()
        .map(|&(lo, hi)| {
            let prefix = (lo ^ hi).leading_zeros().min(32) as u8;
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            (Ipv4Addr::from(lo & mask), prefix)
        })
        .collect()
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    })
}

/// The PAC file's text.
///
/// # Example
///
/// ```
/// use kforward_core::forward_proxy::pac::{pac_file, PacInputs};
/// let pac = pac_file(&PacInputs {
///     proxy: "127.0.0.1:1080".into(),
///     cluster_domain: "cluster.local".into(),
///     namespace: "demo".into(),
///     ..Default::default()
/// });
/// assert!(pac.contains("SOCKS5 127.0.0.1:1080"));
/// ```
pub fn pac_file(i: &PacInputs) -> String {
    let domain = i.cluster_domain.trim_matches('.').to_ascii_lowercase();
    let mut names = BTreeSet::new();
    for (ns, svcs) in &i.services {
        for s in svcs {
            names.insert(format!("{s}.{ns}"));
            names.insert(format!("{s}.{ns}.svc"));
            if *ns == i.namespace {
                names.insert(s.clone());
            }
        }
    }
    let names = names
        .iter()
        .map(|n| format!("{n:?}: 1"))
        .collect::<Vec<_>>()
        .join(", ");
    let nets = ranges(&i.addresses)
        .iter()
        .map(|(net, p)| format!("isInNet(h, \"{net}\", \"{}\")", mask(*p)))
        .collect::<Vec<_>>();
    let nets = if nets.is_empty() {
        "false".to_string()
    } else {
        nets.join(" || ")
    };
    let proxy = if i.auth {
        format!("PROXY {}", i.proxy)
    } else {
        format!("SOCKS5 {p}; SOCKS {p}", p = i.proxy)
    };
    format!(
        r#"// kforward forward proxy: cluster names and addresses through the proxy, the rest DIRECT.
function FindProxyForURL(url, host) {{
  var p = "{proxy}";
  var h = host.toLowerCase().replace(/\.$/, "");
  if (dnsDomainIs(h, ".{domain}")) return p;
  var names = {{{names}}};
  if (names.hasOwnProperty(h)) return p;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(h) && ({nets})) return p;
  return "DIRECT";
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_by_16_and_narrow() {
        let ips: Vec<IpAddr> = ["10.244.1.5", "10.244.2.9", "10.96.0.1"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(
            ranges(&ips),
            vec![
                ("10.96.0.1".parse().expect("ip"), 32),
                ("10.244.0.0".parse().expect("ip"), 22)
            ]
        );
        assert_eq!(mask(22).to_string(), "255.255.252.0");
    }

    #[test]
    fn pac_names_services_and_ranges() {
        let pac = pac_file(&PacInputs {
            proxy: "127.0.0.1:1080".into(),
            auth: true,
            cluster_domain: "cluster.local".into(),
            namespace: "demo".into(),
            services: BTreeMap::from([("demo".into(), vec!["web".into()])]),
            addresses: vec!["10.96.0.10".parse().expect("ip")],
        });
        assert!(pac.contains(r#""web": 1"#) && pac.contains(r#""web.demo.svc": 1"#));
        assert!(pac.contains(r#"isInNet(h, "10.96.0.10", "255.255.255.255")"#));
        assert!(pac.contains("PROXY 127.0.0.1:1080"));
    }
}
