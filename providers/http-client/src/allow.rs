//! Who may be called: the link's `allowed_hosts`, and which addresses are off limits unless a
//! host is named.
//!
//! `allowed_hosts` is a comma-separated list of entries `[scheme://]host[:port]`, where host
//! is an exact name (`api.example.com`), an IP literal (`10.0.0.7`, `[fd00::1]`), a suffix
//! pattern (`*.example.com`: any name below `example.com`, not `example.com` itself) or `*`
//! (everything, said explicitly). An entry with a scheme matches only that scheme, one with a
//! port only that port (the URI's, or 80/443 by its scheme). No entry matching: denied.
//!
//! Restricted addresses ([`is_restricted`]: loopback, link-local incl. the cloud metadata
//! address, private and shared ranges, unspecified, multicast, and the IPv6 forms that embed
//! one of those IPv4 addresses) are refused for a request that only a pattern (`*`,
//! `*.example.com`) allows; an exact entry naming the host (by name or IP) allows them. The
//! check is made on the resolved addresses, by the connector, just before it connects to them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The link config key of the allow-list.
pub const ALLOWED_HOSTS: &str = "allowed_hosts";
/// Most entries in one `allowed_hosts`.
pub const MAX_ENTRIES: usize = 1024;

/// How an entry names hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `*`.
    Any,
    /// `*.suffix` (stored as `.suffix`).
    Below(String),
    /// One host, lowercase, without a trailing dot; IPv6 without brackets.
    Exact(String),
}

/// One entry of `allowed_hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

/// A parsed `allowed_hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

/// What the allow-list says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No entry matches.
    Denied,
    /// Only a pattern matches: restricted addresses are refused.
    Public,
    /// An exact entry names the host: any address it resolves to may be reached.
    Named,
}

/// `host` lowercase, without a trailing dot or IPv6 brackets.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('.');
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    h.to_ascii_lowercase()
}

impl AllowList {
    /// Parses `allowed_hosts`; the error names the entry that is wrong and the key.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for raw in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entries.len() == MAX_ENTRIES {
                return Err(format!("`{ALLOWED_HOSTS}` has more than {MAX_ENTRIES} entries"));
            }
            entries.push(Self::entry(raw).map_err(|why| format!("`{ALLOWED_HOSTS}` entry `{}` {why}", raw.escape_debug()))?);
        }
        Ok(Self { entries })
    }

    fn entry(raw: &str) -> Result<Entry, String> {
        let (scheme, rest) = match raw.split_once("://") {
            Some((s, r)) => {
                let s = s.to_ascii_lowercase();
                if s != "http" && s != "https" {
                    return Err("has a scheme other than `http` or `https`".into());
                }
                (Some(s), r)
            }
            None => (None, raw),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err("is not `[scheme://]host[:port]`".into());
        }
        // `[v6]:port`, `[v6]`, `host:port`, `host`; a bare v6 literal has several colons.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed `[`")?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err("has something after `]` that is not `:port`".into()),
            };
            (h.to_string(), port)
        } else if rest.matches(':').count() == 1 {
            let (h, p) = rest.split_once(':').unwrap_or((rest, ""));
            (h.to_string(), Some(p))
        } else {
            (rest.to_string(), None)
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or("has a port that is not a number from 1 to 65535")?),
            None => None,
        };
        let host = normalize_host(&host);
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err("has a `*` that is not the whole first label".into());
            }
            HostPattern::Below(format!(".{suffix}"))
        } else if host.is_empty() || host.contains('*') {
            return Err("has no host, or a `*` that is not the whole first label".into());
        } else {
            HostPattern::Exact(host)
        };
        Ok(Entry { scheme, host, port })
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What it says about `scheme://host:port` (host as in the URI; port the effective one).
    pub fn verdict(&self, scheme: &str, host: &str, port: u16) -> Verdict {
        let host = normalize_host(host);
        let mut verdict = Verdict::Denied;
        for e in &self.entries {
            if e.scheme.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case(scheme)) || e.port.is_some_and(|p| p != port) {
                continue;
            }
            match &e.host {
                HostPattern::Exact(h) if *h == host => return Verdict::Named,
                HostPattern::Any => verdict = Verdict::Public,
                HostPattern::Below(suffix) if host.ends_with(suffix.as_str()) && host.len() > suffix.len() => verdict = Verdict::Public,
                _ => {}
            }
        }
        verdict
    }
}

/// Whether `ip` is an address a request allowed only by a pattern must not reach: loopback,
/// unspecified, link-local (169.254.0.0/16 incl. the cloud metadata address 169.254.169.254,
/// fe80::/10), private (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64/10), the IETF
/// (192.0.0.0/24) and benchmarking (198.18/15) ranges, multicast and broadcast, the deprecated
/// site-local fec0::/10, and every IPv6 form that carries an IPv4 address (mapped
/// `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), judged
/// by that address.
pub fn is_restricted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn restricted_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return restricted_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // IPv4-compatible `::a.b.c.d` (`::` and `::1` are caught here too).
    if s[..6].iter().all(|x| *x == 0) {
        return ip.is_unspecified() || ip.is_loopback() || restricted_v4(embedded(s[6], s[7]));
    }
    // NAT64 well-known prefix.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
        return restricted_v4(embedded(s[6], s[7]));
    }
    // 6to4.
    if s[0] == 0x2002 {
        return restricted_v4(embedded(s[1], s[2]));
    }
    (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 || (s[0] & 0xff00) == 0xff00
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn entries_match_by_host_scheme_and_port() {
        let list = AllowList::parse("api.example.com, *.cdn.example.net, https://secure.example.org, plain.example:8080, [fd00::1], 10.0.0.7").unwrap();
        let table = [
            ("https", "api.example.com", 443, Verdict::Named),
            ("http", "API.Example.com.", 80, Verdict::Named),
            ("https", "img.cdn.example.net", 443, Verdict::Public),
            ("https", "a.b.cdn.example.net", 443, Verdict::Public),
            ("https", "cdn.example.net", 443, Verdict::Denied),
            ("https", "evilcdn.example.net", 443, Verdict::Denied),
            ("https", "secure.example.org", 443, Verdict::Named),
            ("http", "secure.example.org", 80, Verdict::Denied),
            ("http", "plain.example", 8080, Verdict::Named),
            ("http", "plain.example", 80, Verdict::Denied),
            ("http", "[fd00::1]", 80, Verdict::Named),
            ("http", "10.0.0.7", 80, Verdict::Named),
            ("http", "other.example", 80, Verdict::Denied),
        ];
        for (scheme, host, port, want) in table {
            assert_eq!(list.verdict(scheme, host, port), want, "{scheme}://{host}:{port}");
        }
        let all = AllowList::parse("*").unwrap();
        assert_eq!(all.verdict("http", "localhost", 80), Verdict::Public);
        assert_eq!(AllowList::parse("").unwrap().verdict("http", "x", 80), Verdict::Denied);
        // An exact entry beats a pattern that also matches.
        assert_eq!(AllowList::parse("*, localhost").unwrap().verdict("http", "localhost", 80), Verdict::Named);
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["ftp://x", "x:0", "x:99999", "*x.example", "a.*.example", "x/path", "[::1", "u@x"] {
            let err = AllowList::parse(bad).unwrap_err();
            assert!(err.contains(ALLOWED_HOSTS) && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn restricted_addresses() {
        let restricted = [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ];
        for ip in restricted {
            assert!(is_restricted(ip.parse().unwrap()), "{ip} should be restricted");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(!is_restricted(ip.parse().unwrap()), "{ip} should be public");
        }
    }
}
