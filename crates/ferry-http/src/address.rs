//! Address rules: which IP addresses Ferry may contact on a user's behalf.
//!
//! Anything that is not a globally routable unicast address is denied: loopback, private
//! (RFC 1918, fc00::/7), link-local (169.254.0.0/16 with the cloud metadata service,
//! fe80::/10), unspecified, multicast, broadcast, shared/CGNAT (100.64.0.0/10), documentation,
//! benchmarking and reserved ranges, and IPv6 forms that embed one of those IPv4 addresses
//! (IPv4-mapped, IPv4-compatible, NAT64 and 6to4). An operator re-opens a range by listing it
//! in `UrlPolicy::allowed_networks`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Whether Ferry may connect to `ip`: it is globally routable, or inside one of
/// `allowed_networks` (checked both as given and in its canonical IPv4 form for
/// IPv4-mapped IPv6 addresses).
pub(crate) fn is_permitted(ip: IpAddr, allowed_networks: &[IpNet]) -> bool {
    let canonical = ip.to_canonical();
    if allowed_networks
        .iter()
        .any(|net| net.contains(&ip) || net.contains(&canonical))
    {
        return true;
    }
    address_class(ip).is_none()
}

/// The kind of non-public address `ip` is, or `None` for a globally routable unicast
/// address. Used both for the decision and for error messages.
pub(crate) fn address_class(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_broadcast() => "broadcast",
        (0, _, _) => "unspecified (\"this network\", 0.0.0.0/8)",
        (127, _, _) => "loopback",
        (10, _, _) => "private (RFC 1918)",
        (172, 16..=31, _) => "private (RFC 1918)",
        (192, 168, _) => "private (RFC 1918)",
        (169, 254, _) => "link-local (includes the cloud metadata service 169.254.169.254)",
        (100, 64..=127, _) => "shared/CGNAT (100.64.0.0/10)",
        (192, 0, 0) => "reserved (IETF protocol assignments)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "reserved (6to4 relay anycast)",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::/96, deprecated IPv4-compatible addresses (::a.b.c.d).
    if seg[..6] == [0; 6] {
        return Some("reserved (IPv4-compatible IPv6)");
    }
    // 64:ff9b::/96 NAT64: the gateway connects to the embedded IPv4 address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_class(embedded_v4(seg[6], seg[7]));
    }
    // 2002::/16 6to4: the relay connects to the embedded IPv4 address.
    if seg[0] == 0x2002 {
        return v4_class(embedded_v4(seg[1], seg[2]));
    }
    Some(match seg[0] {
        0x0064 if seg[1] == 0xff9b && seg[2] == 1 => "private (local-use NAT64, 64:ff9b:1::/48)",
        0x0100 if seg[1..4] == [0, 0, 0] => "reserved (discard-only, 100::/64)",
        0x2001 if seg[1] == 0x0db8 => "documentation",
        0x2001 if seg[1] < 0x0200 => "reserved (IETF protocol assignments incl. Teredo, 2001::/23)",
        0x3fff if seg[1] < 0x1000 => "documentation",
        s if s & 0xfe00 == 0xfc00 => "private (unique local, fc00::/7)",
        s if s & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        s if s & 0xffc0 == 0xfec0 => "private (site-local, fec0::/10)",
        s if s & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn denied_addresses() {
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:a00:1::", "private"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "Teredo"),
            ("100::1", "discard"),
        ] {
            let got = address_class(ip(addr));
            assert!(
                got.is_some_and(|c| c.contains(class)),
                "{addr}: expected {class}, got {got:?}"
            );
            assert!(!is_permitted(ip(addr), &[]), "{addr} must be denied");
        }
    }

    #[test]
    fn public_addresses() {
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.1.1",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(address_class(ip(addr)), None, "{addr}");
            assert!(is_permitted(ip(addr), &[]), "{addr}");
        }
    }

    #[test]
    fn allowed_networks_reopen_ranges() {
        let nets: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert!(is_permitted(ip("127.0.0.1"), &nets));
        assert!(
            is_permitted(ip("::ffff:127.0.0.1"), &nets),
            "mapped form follows the v4 rule"
        );
        assert!(is_permitted(ip("10.9.8.7"), &nets));
        assert!(
            !is_permitted(ip("::1"), &nets),
            "IPv6 loopback is a different network"
        );
        assert!(!is_permitted(ip("169.254.169.254"), &nets));
        assert!(!is_permitted(ip("192.168.0.1"), &nets));
    }
}
