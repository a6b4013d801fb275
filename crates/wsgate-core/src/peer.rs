//! Who the client is. Only a peer inside `trusted_proxies` may name the client with
//! `X-Forwarded-For`; from anyone else the header is ignored for limits and replaced for the
//! backend, so a client cannot pick the address its rate limits are keyed on. A trusted peer's
//! chain is believed only as far as trusted hops wrote it (see [`Client::of`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hyper::header::HeaderMap;

use crate::config::Cidr;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a dual-stack socket shows an IPv4 peer)
/// as the IPv4 address it is; any other address unchanged.
pub fn normal(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key per-IP limits count a client under: an IPv4 address whole, an IPv6 address by its
/// first `ipv6_prefix` bits (a host usually holds a whole /64 and could rotate through it).
pub fn key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match normal(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(ipv6_prefix))),
        v4 => v4,
    }
}

/// The network mask of an IPv6 prefix of `prefix` bits (0 to 128).
fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

pub(crate) fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|cidr| cidr.contains(ip))
}

/// The configuration holds the networks; matching an address against them is the peer's.
impl Cidr {
    /// True when `ip`, taken as [`normal`] gives it, lies in this network.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = normal(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One `X-Forwarded-For` entry: an address, `ip:port` (Azure Application Gateway) or
/// `[ipv6]:port`; `None` for anything else (Squid's `unknown`, an obfuscated name, garbage).
fn entry(item: &str) -> Option<IpAddr> {
    let item = item.trim();
    if let Ok(ip) = item.parse() {
        return Some(ip);
    }
    let port = |port: &str| !port.is_empty() && port.len() <= 5 && port.parse::<u16>().is_ok();
    if let Some(rest) = item.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let after_ok = after.is_empty() || after.strip_prefix(':').is_some_and(port);
        return after_ok
            .then(|| v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (v4, after) = item.rsplit_once(':')?;
    port(after)
        .then(|| v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
        .flatten()
}

/// The client of one request, as far as the proxy believes it: read once per handshake, for
/// the limits and for the backend's `X-Forwarded-For`.
pub struct Client {
    /// The address limits and logs count the request under.
    pub ip: IpAddr,
    /// The peer, normalised.
    peer: IpAddr,
    /// The believed part of a trusted peer's chain, oldest first (empty for an untrusted peer).
    believed: Vec<IpAddr>,
}

impl Client {
    /// Walks the chain from the right, believing an entry only when a trusted hop wrote it: the
    /// peer wrote the last one, a trusted address the one before it, and so on. The walk stops
    /// at the first address that is not a trusted proxy (the client), or at an entry it cannot
    /// read, in which case the hop that wrote it is the client as far as anyone can tell:
    /// nothing left of an unreadable entry is believed, so a client cannot pick its address
    /// with one.
    pub fn of(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> Client {
        let peer = normal(peer);
        let mut believed = Vec::new();
        let mut ip = peer;
        if trusted(peer, proxies) {
            // From the right, and only as far as the walk goes: what a client wrote to the
            // left of its own address is never parsed.
            'walk: for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
                let Ok(text) = value.to_str() else { break };
                for item in text.rsplit(',') {
                    let Some(entry) = entry(item).map(normal) else {
                        break 'walk;
                    };
                    ip = entry;
                    believed.push(entry);
                    if !trusted(entry, proxies) {
                        break 'walk;
                    }
                }
            }
            believed.reverse();
        }
        Client { ip, peer, believed }
    }

    /// The `X-Forwarded-For` value for the backend: the believed part of the chain (the client
    /// and the trusted hops after it, without ports), then the peer.
    pub fn forwarded_for(&self) -> String {
        let mut parts: Vec<String> = self.believed.iter().map(ToString::to_string).collect();
        parts.push(self.peer.to_string());
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> IpAddr {
        Client::of(peer, headers, proxies).ip
    }

    fn forwarded_for(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> String {
        Client::of(peer, headers, proxies).forwarded_for()
    }
    use hyper::header::HeaderValue;

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_str(value).expect("ascii"),
        );
        headers
    }

    fn cidr(network: &str, prefix: u8) -> Cidr {
        Cidr {
            network: network.parse().expect("ip"),
            prefix,
        }
    }

    #[test]
    fn only_trusted_peers_name_the_client() {
        let proxies = [cidr("10.0.0.0", 8)];
        let lb: IpAddr = "10.1.2.3".parse().expect("ip");
        let stranger: IpAddr = "198.51.100.9".parse().expect("ip");
        let headers = xff("203.0.113.5, 10.9.9.9");
        assert_eq!(
            client_ip(lb, &headers, &proxies),
            "203.0.113.5".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(stranger, &headers, &proxies), stranger);
        assert_eq!(client_ip(lb, &xff("not an ip"), &proxies), lb);
        assert_eq!(client_ip(lb, &HeaderMap::new(), &proxies), lb);
        assert_eq!(
            forwarded_for(lb, &headers, &proxies),
            "203.0.113.5, 10.9.9.9, 10.1.2.3"
        );
        assert_eq!(forwarded_for(stranger, &headers, &proxies), "198.51.100.9");
    }

    #[test]
    fn the_chain_is_walked_from_the_right_past_entries_it_cannot_read() {
        let proxies = [cidr("10.0.0.0", 8)];
        let lb: IpAddr = "10.1.2.3".parse().expect("ip");
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        // Azure Application Gateway writes `ip:port`; IPv6 hops write `[v6]:port`.
        let cases = [
            ("203.0.113.5:52211", "203.0.113.5"),
            ("203.0.113.5:52211, 10.9.9.9:443", "203.0.113.5"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            // Something the client wrote left of its own address is never read.
            ("garbage, 203.0.113.5", "203.0.113.5"),
            ("unknown, 198.51.100.1, 203.0.113.5", "203.0.113.5"),
            // An unreadable entry written by a trusted hop: that hop is the client as far as
            // anyone can tell, and nothing left of it is believed.
            ("198.51.100.1, unknown, 10.9.9.9", "10.9.9.9"),
            ("198.51.100.1, unknown", "10.1.2.3"),
            ("198.51.100.1, 10.0.0.9:99999", "10.1.2.3"),
            ("198.51.100.1, 1.2.3.4:", "10.1.2.3"),
        ];
        for (header, client) in cases {
            assert_eq!(
                client_ip(lb, &xff(header), &proxies),
                ip(client),
                "{header}"
            );
        }
        // The backend is told the part of the chain the proxy vouches for.
        assert_eq!(
            forwarded_for(lb, &xff("garbage, 203.0.113.5:52211, 10.9.9.9"), &proxies),
            "203.0.113.5, 10.9.9.9, 10.1.2.3"
        );
        assert_eq!(
            forwarded_for(lb, &xff("198.51.100.1, unknown"), &proxies),
            "10.1.2.3"
        );
        // Several headers are one chain, oldest first.
        let mut headers = xff("198.51.100.1");
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("10.9.9.9"));
        assert_eq!(client_ip(lb, &headers, &proxies), ip("198.51.100.1"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.5"), &HeaderMap::new(), &[]),
            ip("203.0.113.5")
        );
        let proxies = [cidr("10.0.0.0", 8)];
        let headers = xff("::ffff:203.0.113.5");
        assert_eq!(
            client_ip(ip("::ffff:10.1.2.3"), &headers, &proxies),
            ip("203.0.113.5")
        );
        assert_eq!(
            forwarded_for(ip("::ffff:10.1.2.3"), &headers, &proxies),
            "203.0.113.5, 10.1.2.3"
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        assert_eq!(key(ip("2001:db8:1:2:aaaa::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(key(ip("2001:db8:1:2:ffff::9"), 64), ip("2001:db8:1:2::"));
        assert_ne!(key(ip("2001:db8:1:3::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(key(ip("2001:db8:1:2:aaaa::1"), 48), ip("2001:db8:1::"));
        assert_eq!(key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(key(ip("2001:db8::1"), 1), ip("::"));
        // IPv4 keys whole, in either form.
        assert_eq!(key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn cidrs_match_by_prefix_and_mapped_addresses() {
        assert!(cidr("10.0.0.0", 8).contains("10.255.0.1".parse().expect("ip")));
        assert!(!cidr("10.0.0.0", 8).contains("11.0.0.1".parse().expect("ip")));
        assert!(cidr("10.0.0.0", 8).contains("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(cidr("fd00::", 8).contains("fd12::1".parse().expect("ip")));
        assert!(cidr("0.0.0.0", 0).contains("1.2.3.4".parse().expect("ip")));
        assert!(!cidr("127.0.0.1", 32).contains("127.0.0.2".parse().expect("ip")));
    }
}
