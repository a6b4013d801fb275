//! Who the client is. Only a peer inside `trusted_proxies` may name the client with
//! `X-Forwarded-For`; from anyone else the header is ignored for limits and replaced for the
//! backend, so a client cannot pick the address its rate limits are keyed on.

use std::net::IpAddr;

use hyper::header::HeaderMap;

use crate::config::Cidr;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

fn trusted(ip: IpAddr, proxies: &[Cidr]) -> bool {
    proxies.iter().any(|cidr| cidr.contains(ip))
}

/// The chain a trusted peer sent, oldest first; `None` when absent or not all addresses.
fn chain(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut chain = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        for item in value.to_str().ok()?.split(',') {
            chain.push(item.trim().parse().ok()?);
        }
    }
    (!chain.is_empty()).then_some(chain)
}

/// The client address for limits and logs: from a trusted peer, the nearest address in
/// `X-Forwarded-For` that is not itself a trusted proxy; otherwise the peer.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    match chain(headers) {
        Some(chain) => chain
            .iter()
            .rev()
            .find(|ip| !trusted(**ip, proxies))
            .or(chain.first())
            .copied()
            .unwrap_or(peer),
        None => peer,
    }
}

/// The `X-Forwarded-For` value for the backend: a trusted peer's chain with the peer
/// appended, or just the peer.
pub fn forwarded_for(peer: IpAddr, headers: &HeaderMap, proxies: &[Cidr]) -> String {
    match chain(headers).filter(|_| trusted(peer, proxies)) {
        Some(chain) => {
            let mut parts: Vec<String> = chain.iter().map(ToString::to_string).collect();
            parts.push(peer.to_string());
            parts.join(", ")
        }
        None => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn cidrs_match_by_prefix_and_mapped_addresses() {
        assert!(cidr("10.0.0.0", 8).contains("10.255.0.1".parse().expect("ip")));
        assert!(!cidr("10.0.0.0", 8).contains("11.0.0.1".parse().expect("ip")));
        assert!(cidr("10.0.0.0", 8).contains("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(cidr("fd00::", 8).contains("fd12::1".parse().expect("ip")));
        assert!(cidr("0.0.0.0", 0).contains("1.2.3.4".parse().expect("ip")));
        assert!(!cidr("127.0.0.1", 32).contains("127.0.0.2".parse().expect("ip")));
    }
}
