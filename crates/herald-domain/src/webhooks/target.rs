//! Where Herald may send integrators' events. An endpoint URL is chosen by whoever holds an
//! admin key, but a URL that reaches Herald's own network (loopback, private ranges, cloud
//! metadata at 169.254.169.254) would turn Herald into a proxy into it (SSRF). So, unless the
//! operator allows insecure targets (development), only `https://` URLs with public hosts are
//! accepted, and the addresses a host name resolves to are checked again at delivery time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must be an absolute https:// URL of at most 2048 characters")]
    Malformed,
    #[error("must use https://")]
    NotHttps,
    #[error("must not name a loopback, private or link-local address")]
    NotPublic,
    #[error("must not carry credentials (user:password@)")]
    Credentials,
}

/// Whether an address is reachable on the public internet (not loopback, private, link-local,
/// shared, documentation, multicast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240)
}

/// The host part of an absolute http(s) URL (brackets removed from IPv6 literals).
fn host_of(rest: &str) -> Result<&str, TargetError> {
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .ok_or(TargetError::Malformed)?;
    if authority.contains('@') {
        return Err(TargetError::Credentials);
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().ok_or(TargetError::Malformed)?
    } else {
        authority.split(':').next().ok_or(TargetError::Malformed)?
    };
    if host.is_empty() {
        return Err(TargetError::Malformed);
    }
    Ok(host)
}

/// Checks an endpoint URL when it is registered.
pub fn check_url(url: &str, allow_insecure: bool) -> Result<(), TargetError> {
    if url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TargetError::Malformed);
    }
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("https://") {
        rest
    } else if let Some(rest) = lower.strip_prefix("http://") {
        if !allow_insecure {
            return Err(TargetError::NotHttps);
        }
        rest
    } else {
        return Err(TargetError::Malformed);
    };
    let host = host_of(rest)?;
    if allow_insecure {
        return Ok(());
    }
    let host = host.trim_end_matches('.');
    if host == "localhost" || host.ends_with(".localhost") || host.ends_with(".internal") {
        return Err(TargetError::NotPublic);
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && !is_public(ip)
    {
        return Err(TargetError::NotPublic);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_urls_pass() {
        for url in [
            "https://shop.example.com/hooks/herald",
            "https://93.184.216.34:8443/x?y=1",
            "https://[2606:4700::1111]/hook",
        ] {
            assert_eq!(check_url(url, false), Ok(()), "{url}");
        }
    }

    #[test]
    fn internal_targets_are_refused_unless_allowed() {
        for url in [
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://10.1.2.3/x",
            "https://192.168.0.10/x",
            "https://172.16.5.4/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://0.0.0.0/x",
            "https://metadata.google.internal/x",
        ] {
            assert_eq!(check_url(url, false), Err(TargetError::NotPublic), "{url}");
            assert_eq!(check_url(url, true), Ok(()), "{url}");
        }
    }

    #[test]
    fn malformed_urls_are_refused() {
        assert_eq!(
            check_url("http://example.com/x", false),
            Err(TargetError::NotHttps)
        );
        assert_eq!(
            check_url("ftp://example.com", false),
            Err(TargetError::Malformed)
        );
        assert_eq!(check_url("https://", false), Err(TargetError::Malformed));
        assert_eq!(
            check_url("https://exa mple.com", false),
            Err(TargetError::Malformed)
        );
        assert_eq!(
            check_url("https://user:pw@example.com/", false),
            Err(TargetError::Credentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(check_url(&long, false), Err(TargetError::Malformed));
    }
}
