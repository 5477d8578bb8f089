//! Names as aop compares them: DNS names (SNI, identity hostnames and zones, policy
//! patterns) and TLS protocol versions.

use std::net::IpAddr;

/// A DNS name as aop compares it: ASCII lowercase, without the trailing dot(s) of a
/// fully qualified name. Not validated: see [`is_dns_name`].
///
/// ```
/// assert_eq!(aop_pki::normalize_dns_name("Shop.Example.COM."), "shop.example.com");
/// ```
pub fn normalize_dns_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is a DNS name a TLS client could send as SNI: valid as a rustls server
/// name, and not an IP address (which is valid there, but never a hostname). Wildcards
/// (`*`) are not DNS names; callers that allow `*.zone` strip the `*.` first.
///
/// ```
/// assert!(aop_pki::is_dns_name("shop.example.com"));
/// assert!(!aop_pki::is_dns_name("192.0.2.1"));
/// assert!(!aop_pki::is_dns_name("*.example.com"));
/// ```
pub fn is_dns_name(name: &str) -> bool {
    rustls_pki_types::DnsName::try_from(name).is_ok() && name.parse::<IpAddr>().is_err()
}

/// A TLS protocol version as nginx's `$ssl_protocol` and OpenSSL write it: `TLSv1.3`,
/// `TLSv1.2`; `other` for anything else (aop negotiates only those two).
///
/// ```
/// assert_eq!(aop_pki::tls_version_name(rustls::ProtocolVersion::TLSv1_3), "TLSv1.3");
/// ```
pub fn tls_version_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::{is_dns_name, normalize_dns_name, tls_version_name};

    #[test]
    fn dns_names() {
        for good in [
            "example.com",
            "a-b.example",
            "localhost",
            "xn--bcher-kva.example",
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "::1",
            "*.example.com",
            "a..b",
            "-a.example",
            "a b.example",
            "example.com/x",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert_eq!(normalize_dns_name("EXAMPLE.com.."), "example.com");
        assert_eq!(normalize_dns_name("."), "");
    }

    #[test]
    fn version_names() {
        use rustls::ProtocolVersion as V;
        assert_eq!(tls_version_name(V::TLSv1_3), "TLSv1.3");
        assert_eq!(tls_version_name(V::TLSv1_2), "TLSv1.2");
        assert_eq!(tls_version_name(V::TLSv1_1), "other");
    }
}
