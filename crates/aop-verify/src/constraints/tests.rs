//! Name constraints and allow_san: the matchers one by one, then whole chains (rcgen
//! certificates, parsed and judged by [`check`]), then the same through `Trust::check`.

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, CustomExtension, DistinguishedName, DnType,
    DnValue, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer as _;

use super::*;
use crate::der::{seq, set, tlv};
use crate::trust::{Trust, TrustSpec};
use crate::verdict::Outcome;

mod review;

// ---- the matchers --------------------------------------------------------------------

#[test]
fn dns_host_and_domain_subtrees() {
    use Subtrees::{Excluded as E, Permitted as P};
    let cases = [
        // (name, base, permitted?, excluded?)
        ("example.com", "example.com", true, true),
        ("a.example.com", "example.com", true, true),
        ("a.b.example.com", "example.com", true, true),
        ("badexample.com", "example.com", false, false),
        ("example.com.evil", "example.com", false, false),
        ("com", "example.com", false, false),
        ("example.com", ".example.com", false, false),
        ("a.example.com", ".example.com", true, true),
        ("xexample.com", ".example.com", false, false),
        ("anything.test", "", true, true),
        // a wildcard: permitted only if every expansion is inside, excluded if any is
        ("*.a.example.com", "example.com", true, true),
        ("*.example.com", "example.com", true, true),
        ("*.example.com", ".example.com", true, true),
        ("*.example.com", "a.example.com", false, true),
        ("*.example.com", "a.b.example.com", false, false),
        ("*.com", "example.com", false, true),
        ("*.example.com", "other.com", false, false),
    ];
    for (name, base, permitted, excluded) in cases {
        assert_eq!(
            dns_within(name, base, P),
            permitted,
            "{name} in {base} (permitted)"
        );
        assert_eq!(
            dns_within(name, base, E),
            excluded,
            "{name} in {base} (excluded)"
        );
    }
}

#[test]
fn dns_names_and_bases_are_validated_and_lowercased() {
    assert_eq!(dns_name("A.Example.COM").as_deref(), Some("a.example.com"));
    assert_eq!(dns_name("*.Example.com").as_deref(), Some("*.example.com"));
    assert_eq!(dns_name("edge").as_deref(), Some("edge"));
    assert_eq!(
        dns_name("_svc.example.com").as_deref(),
        Some("_svc.example.com")
    );
    for bad in [
        "",
        "a.example.com.",
        "a..example.com",
        "*",
        "a.*.example.com",
        "*a.example.com",
        "-a.example.com",
        "a b.example.com",
        "a.example.com/x",
        "10.0.0.1",
        "ex%41mple.com",
    ] {
        assert_eq!(dns_name(bad), None, "{bad:?}");
    }
    assert_eq!(dns_base("").as_deref(), Some(""));
    assert_eq!(dns_base(".Example.COM").as_deref(), Some(".example.com"));
    for bad in [
        "*.example.com",
        "example.com.",
        "..example.com",
        ".",
        "spiffe://example.org",
    ] {
        assert_eq!(dns_base(bad), None, "{bad:?}");
    }
    for dns in ["edge", "edge.test", "a-b.example", "_x.example"] {
        assert!(looks_like_dns(dns), "{dns}");
    }
    for not in [
        "Edge Server",
        "edge.test.",
        "*.edge.test",
        "10.1.2.3",
        "",
        "a@b.test",
    ] {
        assert!(!looks_like_dns(not), "{not}");
    }
}

#[test]
fn ip_subtrees_are_per_family_and_masked() {
    let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap().octets().to_vec();
    let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets().to_vec();
    let m4 = [255, 255, 255, 0];
    assert!(ip_within(&v4("10.1.2.3"), &v4("10.1.2.0"), &m4));
    assert!(
        ip_within(&v4("10.1.2.255"), &v4("10.1.2.77"), &m4),
        "host bits of the base are masked too"
    );
    assert!(!ip_within(&v4("10.1.3.3"), &v4("10.1.2.0"), &m4));
    assert!(
        ip_within(&v4("192.0.2.1"), &v4("0.0.0.0"), &[0; 4]),
        "/0 holds every IPv4 address"
    );
    let mut m6 = [0u8; 16];
    m6[..4].copy_from_slice(&[255; 4]);
    assert!(ip_within(&v6("2001:db8::1"), &v6("2001:db8::"), &m6));
    assert!(!ip_within(&v6("2001:db9::1"), &v6("2001:db8::"), &m6));
    // families never mix, IPv4-mapped or not
    assert!(!ip_within(
        &v4("10.1.2.3"),
        &v6("::ffff:10.1.2.0"),
        &[255; 16]
    ));
    assert!(!ip_within(&v6("::ffff:10.1.2.3"), &v4("10.1.2.0"), &m4));
    assert!(!ip_within(&v4("0.0.0.0"), &v6("::"), &[0; 16]));

    for good in [
        &[255, 255, 255, 0][..],
        &[0; 4],
        &[255; 4],
        &[255, 240, 0, 0],
        &[255, 255, 255, 254],
    ] {
        assert!(is_prefix_mask(good), "{good:?}");
    }
    for bad in [
        &[255, 0, 255, 0][..],
        &[0, 255, 0, 0],
        &[255, 254, 1, 0],
        &[0b1010_0000, 0, 0, 0],
    ] {
        assert!(!is_prefix_mask(bad), "{bad:?}");
    }
}

#[test]
fn email_mailbox_host_and_domain() {
    use Subtrees::{Excluded as E, Permitted as P};
    let base = |s: &str| email_base(s).unwrap();
    let within = |email: &str, b: &str, s| {
        let (local, host) = mailbox(email).unwrap();
        email_within(local, &host, &base(b), s)
    };
    assert!(within("alice@example.com", "alice@example.com", P));
    assert!(
        within("alice@EXAMPLE.com", "alice@example.com", P),
        "hosts are case-insensitive"
    );
    assert!(
        !within("Alice@example.com", "alice@example.com", P),
        "local parts are case-sensitive when permitted"
    );
    assert!(
        within("Alice@example.com", "alice@example.com", E),
        "and not when excluded"
    );
    assert!(!within("bob@example.com", "alice@example.com", P));
    assert!(!within("alice@a.example.com", "alice@example.com", P));
    assert!(within("bob@example.com", "example.com", P));
    assert!(within("bob@Example.Com", "EXAMPLE.com", P));
    assert!(
        !within("bob@a.example.com", "example.com", P),
        "a host holds no subdomain"
    );
    assert!(within("bob@a.example.com", ".example.com", P));
    assert!(
        !within("bob@example.com", ".example.com", P),
        "a domain holds only subdomains"
    );
    assert!(!within("bob@badexample.com", ".example.com", P));
    for bad in [
        "",
        "example.com",
        "@example.com",
        "a@",
        "a@exa mple.com",
        "a@example.com.",
        "\"a@evil.com\"@example.com",
        "a@b@example.com",
    ] {
        assert!(mailbox(bad).is_none(), "{bad:?}");
    }
    for bad in [
        "",
        "@example.com",
        "a@b@",
        ".",
        "exa mple.com",
        "..example.com",
    ] {
        assert!(email_base(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn uri_hosts() {
    let cases = [
        ("spiffe://example.org/edge/1", Some("example.org")),
        ("spiffe://Example.ORG", Some("example.org")),
        ("https://example.org:8443/x?y#z", Some("example.org")),
        ("https://user:pw@example.org:8443/x", None),
        ("spiffe://example.org@evil.com/x", None),
        ("https:///x", None),
        ("https://:443/x", None),
        ("https://example.org:443", Some("example.org")),
        ("https://example.org:/", Some("example.org")),
        ("https://example.org?q", None),
        ("https://example.org#f", None),
        ("https://[2001:db8::1]:443/x", Some("[2001:db8::1]")),
        ("https://[2001:db8::1]/x", Some("[2001:db8::1]")),
        ("https://192.0.2.1/x", Some("192.0.2.1")),
        ("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", None),
        ("mailto:a@example.org", None),
        ("spiffe:/example.org/x", None),
        ("spiffe:///x", None),
        ("https://a@b@example.org/", None),
        ("https://example.org:44x/", None),
        ("https://%65xample.org/", None),
        ("https://example.org./", None),
        ("https://[not-v6]/", None),
        ("https://[::1]x/", None),
        ("1https://example.org/", None),
        ("://example.org/", None),
        ("example.org", None),
        ("", None),
    ];
    for (uri, host) in cases {
        assert_eq!(uri_host(uri).as_deref(), host, "{uri:?}");
    }
    assert!(uri_within("example.org", "example.org"));
    assert!(
        !uri_within("a.example.org", "example.org"),
        "a host holds only itself"
    );
    assert!(uri_within("a.example.org", ".example.org"));
    assert!(!uri_within("example.org", ".example.org"));
    assert!(!uri_within("badexample.org", ".example.org"));
    assert!(!uri_within("[::1]", ".example.org"));
    assert!(!uri_within("192.0.2.1", "example.org"));
}

// ---- certificates for the chain tests ------------------------------------------------

/// A certificate and the issuer it makes (for CAs).
struct Made {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn name(attrs: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in attrs {
        dn.push(t.clone(), DnValue::Utf8String((*v).to_owned()));
    }
    dn
}

fn params(subject: DistinguishedName, sans: Vec<SanType>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject;
    p.subject_alt_names = sans;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(30);
    p
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = params(name(&[(DnType::CommonName, cn)]), vec![]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A CA (self-signed, or by `parent`) with these rcgen name constraints.
fn ca(cn: &str, constraints: Option<NameConstraints>, parent: Option<&Made>) -> Made {
    let mut p = ca_params(cn);
    p.name_constraints = constraints;
    make(p, parent)
}

/// A CA with a nameConstraints extension of these bytes (critical).
fn ca_raw(cn: &str, value: Vec<u8>, parent: Option<&Made>) -> Made {
    let mut p = ca_params(cn);
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 30], value);
    ext.set_criticality(true);
    p.custom_extensions.push(ext);
    make(p, parent)
}

fn make(p: CertificateParams, parent: Option<&Made>) -> Made {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = match parent {
        Some(parent) => p.signed_by(&key, &parent.issuer).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    Made {
        der: cert.der().clone(),
        issuer: Issuer::new(p, key),
    }
}

/// A client certificate with this subject and these SANs.
fn leaf(subject: DistinguishedName, sans: Vec<SanType>, parent: &Made) -> CertificateDer<'static> {
    let mut p = params(subject, sans);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    make(p, Some(parent)).der
}

/// A client certificate with a subjectAltName extension of these raw GeneralNames.
fn leaf_raw_san(cn: &str, general_names: &[Vec<u8>], parent: &Made) -> CertificateDer<'static> {
    let mut p = params(name(&[(DnType::CommonName, cn)]), vec![]);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &[2, 5, 29, 17],
        seq(general_names),
    ));
    make(p, Some(parent)).der
}

fn cn(s: &str) -> DistinguishedName {
    name(&[(DnType::CommonName, s)])
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn email(s: &str) -> SanType {
    SanType::Rfc822Name(s.try_into().unwrap())
}

fn permit(subtrees: Vec<GeneralSubtree>) -> Option<NameConstraints> {
    Some(NameConstraints {
        permitted_subtrees: subtrees,
        excluded_subtrees: vec![],
    })
}

fn exclude(subtrees: Vec<GeneralSubtree>) -> Option<NameConstraints> {
    Some(NameConstraints {
        permitted_subtrees: vec![],
        excluded_subtrees: subtrees,
    })
}

fn sub_dns(s: &str) -> GeneralSubtree {
    GeneralSubtree::DnsName(s.into())
}

// DER, for what rcgen does not write: URI subtrees, raw names, malformed extensions.

/// `NameConstraints` with these GeneralName bases (each becomes one GeneralSubtree).
fn nc(permitted: &[Vec<u8>], excluded: &[Vec<u8>]) -> Vec<u8> {
    let subtrees = |names: &[Vec<u8>]| -> Vec<u8> {
        names
            .iter()
            .map(|n| seq(std::slice::from_ref(n)))
            .collect::<Vec<_>>()
            .concat()
    };
    let mut parts = Vec::new();
    if !permitted.is_empty() {
        parts.push(tlv(0xa0, &subtrees(permitted)));
    }
    if !excluded.is_empty() {
        parts.push(tlv(0xa1, &subtrees(excluded)));
    }
    seq(&parts)
}

fn g_dns(s: &str) -> Vec<u8> {
    tlv(0x82, s.as_bytes())
}

fn g_uri(s: &str) -> Vec<u8> {
    tlv(0x86, s.as_bytes())
}

fn g_email(s: &str) -> Vec<u8> {
    tlv(0x81, s.as_bytes())
}

fn g_ip(b: &[u8]) -> Vec<u8> {
    tlv(0x87, b)
}

/// An otherName (a UPN) with this value.
fn g_other(s: &str) -> Vec<u8> {
    let oid = tlv(
        0x06,
        &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x14, 0x02, 0x03],
    );
    tlv(0xa0, &[oid, tlv(0xa0, &tlv(0x0c, s.as_bytes()))].concat())
}

/// A directoryName: RDNs, each a set of (OID bytes, tag, value).
fn g_dir(rdns: &[&[(&[u8], u8, &str)]]) -> Vec<u8> {
    tlv(0xa4, &dn_der(rdns))
}

fn dn_der(rdns: &[&[(&[u8], u8, &str)]]) -> Vec<u8> {
    let rdns: Vec<Vec<u8>> = rdns
        .iter()
        .map(|rdn| {
            let attrs: Vec<Vec<u8>> = rdn
                .iter()
                .map(|(oid, tag, v)| seq(&[tlv(0x06, oid), tlv(*tag, v.as_bytes())]))
                .collect();
            set(&attrs)
        })
        .collect();
    seq(&rdns)
}

const O: &[u8] = &[0x55, 0x04, 0x0a];
const OU: &[u8] = &[0x55, 0x04, 0x0b];
const CN: &[u8] = &[0x55, 0x04, 0x03];
const UTF8: u8 = 0x0c;
const PRINTABLE: u8 = 0x13;

/// Parse and judge `leaf` under `issuers` (nearest first, anchor last).
fn judge(leaf: &CertificateDer<'_>, issuers: &[&Made]) -> Result<(), Refusal> {
    let (_, leaf) = X509Certificate::from_der(leaf).unwrap();
    let issuers: Vec<_> = issuers
        .iter()
        .map(|m| X509Certificate::from_der(&m.der).unwrap().1)
        .collect();
    check(&leaf, &issuers)
}

#[track_caller]
fn refused(result: Result<(), Refusal>, reason: Reason, words: &[&str]) {
    let (r, detail) = result.expect_err("refused");
    assert_eq!(r, reason, "{detail}");
    for w in words {
        assert!(detail.contains(w), "{detail:?} lacks {w:?}");
    }
}

// ---- chains --------------------------------------------------------------------------

#[test]
fn dns_permitted_subtree_holds_sans_and_the_cn() {
    let root = ca("root", permit(vec![sub_dns("example.com")]), None);
    let ok = |sans, subject| judge(&leaf(subject, sans, &root), &[&root]);
    ok(vec![dns("edge.example.com")], cn("x")).unwrap();
    ok(vec![dns("EDGE.Example.Com")], cn("x")).unwrap();
    ok(vec![dns("*.edge.example.com")], cn("x")).unwrap();
    refused(
        ok(vec![dns("edge.example.com"), dns("edge.evil.com")], cn("x")),
        Reason::NameConstraints,
        &[
            "DNS SAN \"edge.evil.com\" of the client certificate",
            "outside the permitted DNS subtrees [\"example.com\"]",
            "CA CN=root",
        ],
    );
    refused(
        ok(vec![dns("edge.example.com.")], cn("x")),
        Reason::NameConstraints,
        &["not a DNS name"],
    );
    // No DNS SAN: the CN counts when it looks like a DNS name.
    ok(vec![], cn("edge.example.com")).unwrap();
    refused(
        ok(vec![], cn("edge.evil.com")),
        Reason::NameConstraints,
        &["subject CN \"edge.evil.com\""],
    );
    refused(
        ok(vec![], cn("edge")),
        Reason::NameConstraints,
        &["subject CN \"edge\""],
    );
    refused(
        ok(vec![uri("spiffe://x/y")], cn("edge.evil.com")),
        Reason::NameConstraints,
        &["subject CN"],
    );
    ok(vec![], cn("Edge Server 1")).unwrap();
    // A CN with a NUL cannot be checked (one reader may stop at it, another not).
    refused(
        ok(vec![], cn("edge.example.com\0.evil.com")),
        Reason::NameConstraints,
        &["not a DNS name"],
    );
    // A DNS SAN present: the CN is not a DNS name then.
    ok(vec![dns("edge.example.com")], cn("edge.evil.com")).unwrap();
    // Another CN attribute, not the first, outside: still refused.
    let two = name(&[
        (DnType::CommonName, "edge.example.com"),
        (DnType::OrganizationName, "o"),
    ]);
    ok(vec![], two).unwrap();
}

#[test]
fn domain_subtree_excludes_the_domain_itself() {
    let root = ca("root", permit(vec![sub_dns(".example.com")]), None);
    judge(&leaf(cn("x"), vec![dns("a.example.com")], &root), &[&root]).unwrap();
    refused(
        judge(&leaf(cn("x"), vec![dns("example.com")], &root), &[&root]),
        Reason::NameConstraints,
        &["\".example.com\""],
    );
}

#[test]
fn excluded_beats_permitted_and_wildcards_reach_into_excluded() {
    let root = ca(
        "root",
        Some(NameConstraints {
            permitted_subtrees: vec![sub_dns("example.com")],
            excluded_subtrees: vec![sub_dns("secret.example.com")],
        }),
        None,
    );
    let j = |sans| judge(&leaf(cn("x"), sans, &root), &[&root]);
    j(vec![dns("a.example.com")]).unwrap();
    refused(
        j(vec![dns("db.secret.example.com")]),
        Reason::NameConstraints,
        &["in the excluded DNS subtree \"secret.example.com\""],
    );
    refused(
        j(vec![dns("*.example.com")]),
        Reason::NameConstraints,
        &["excluded"],
    );
    refused(
        j(vec![dns("SECRET.example.com")]),
        Reason::NameConstraints,
        &["excluded"],
    );
}

#[test]
fn ip_subtrees() {
    let root = ca(
        "root",
        permit(vec![GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(
            [10, 1, 0, 0],
            16,
        ))]),
        None,
    );
    let ip = |s: &str| SanType::IpAddress(s.parse().unwrap());
    let j = |sans| judge(&leaf(cn("x"), sans, &root), &[&root]);
    j(vec![ip("10.1.200.3")]).unwrap();
    j(vec![dns("anything.test")]).unwrap();
    refused(
        j(vec![ip("10.2.0.1")]),
        Reason::NameConstraints,
        &["IP SAN 10.2.0.1", "[10.1.0.0/16]"],
    );
    refused(
        j(vec![ip("::ffff:10.1.0.1")]),
        Reason::NameConstraints,
        &["IP SAN"],
    );
    let v6 = ca(
        "root6",
        exclude(vec![GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
            "2001:db8::".parse::<Ipv6Addr>().unwrap().octets(),
            32,
        ))]),
        None,
    );
    judge(
        &leaf(cn("x"), vec![ip("2001:db9::1"), ip("10.0.0.1")], &v6),
        &[&v6],
    )
    .unwrap();
    refused(
        judge(&leaf(cn("x"), vec![ip("2001:db8:1::1")], &v6), &[&v6]),
        Reason::NameConstraints,
        &["excluded IP subtree 2001:db8::/32"],
    );
    // Malformed IP subtrees: a mask that is not a prefix, an odd length.
    for (bad, why) in [
        (&[10, 0, 0, 0, 255, 0, 255, 0][..], "not a prefix"),
        (&[10, 0, 0, 0, 255], "not 5 bytes"),
    ] {
        let r = ca_raw("bad", nc(&[g_ip(bad)], &[]), None);
        refused(
            judge(&leaf(cn("x"), vec![], &r), &[&r]),
            Reason::BadEncoding,
            &[
                "CA CN=bad: nameConstraints permittedSubtrees: a IP subtree",
                why,
            ],
        );
    }
}

#[test]
fn email_subtrees_hold_sans_and_the_subject_email_address() {
    let root = ca(
        "root",
        permit(vec![GeneralSubtree::Rfc822Name(".example.com".into())]),
        None,
    );
    let with_email = |addr: &str| {
        let mut dn = cn("x");
        dn.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            DnValue::Ia5String(addr.try_into().unwrap()),
        );
        dn
    };
    judge(
        &leaf(cn("x"), vec![email("a@mail.example.com")], &root),
        &[&root],
    )
    .unwrap();
    judge(
        &leaf(with_email("a@mail.example.com"), vec![], &root),
        &[&root],
    )
    .unwrap();
    refused(
        judge(
            &leaf(with_email("a@evil.com"), vec![dns("x.test")], &root),
            &[&root],
        ),
        Reason::NameConstraints,
        &["subject emailAddress \"a@evil.com\"", "[\".example.com\"]"],
    );
    // emailAddress is an IA5String; another string type cannot be checked (OpenSSL
    // refuses it under any name constraint; aop where email constraints apply).
    let mut utf8 = cn("Edge Server");
    utf8.push(
        DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
        DnValue::Utf8String("a@mail.example.com".into()),
    );
    refused(
        judge(&leaf(utf8.clone(), vec![], &root), &[&root]),
        Reason::NameConstraints,
        &["subject emailAddress \"?\"", "is not an IA5String"],
    );
    let dns_only = ca("dns-only", permit(vec![sub_dns("example.com")]), None);
    judge(&leaf(utf8, vec![], &dns_only), &[&dns_only]).unwrap();
    refused(
        judge(
            &leaf(cn("x"), vec![email("a@example.com")], &root),
            &[&root],
        ),
        Reason::NameConstraints,
        &["email SAN \"a@example.com\""],
    );
    refused(
        judge(
            &leaf(cn("x"), vec![email("not-a-mailbox")], &root),
            &[&root],
        ),
        Reason::NameConstraints,
        &["not a mailbox"],
    );
    // A mailbox subtree.
    let mb = ca(
        "mb",
        exclude(vec![GeneralSubtree::Rfc822Name("eve@example.com".into())]),
        None,
    );
    judge(
        &leaf(cn("x"), vec![email("alice@example.com")], &mb),
        &[&mb],
    )
    .unwrap();
    refused(
        judge(&leaf(cn("x"), vec![email("EVE@example.com")], &mb), &[&mb]),
        Reason::NameConstraints,
        &["excluded"],
    );
}

/// A SPIFFE trust domain: a URI constraint on the host.
#[test]
fn uri_subtrees_and_spiffe_trust_domains() {
    let root = ca_raw("spiffe-root", nc(&[g_uri("example.org")], &[]), None);
    let j = |sans| judge(&leaf(cn("x"), sans, &root), &[&root]);
    j(vec![uri("spiffe://example.org/edge/1")]).unwrap();
    j(vec![uri("spiffe://example.org")]).unwrap();
    j(vec![uri("https://Example.Org:8443/x")]).unwrap();
    j(vec![dns("other.test")]).unwrap();
    for (bad, words) in [
        (
            "spiffe://other.org/edge/1",
            "outside the permitted URI subtrees [\"example.org\"]",
        ),
        ("spiffe://a.example.org/edge/1", "outside"),
        ("spiffe://example.org.evil.com/x", "outside"),
        ("spiffe://example.org@evil.com/x", "has no host"),
        ("spiffe://user@example.org/x", "has no host"),
        ("https://example.org?x", "has no host"),
        ("https://[2001:db8::1]/x", "outside"),
        ("urn:example.org:x", "has no host"),
        ("spiffe:example.org/x", "has no host"),
        ("spiffe://%65xample.org/x", "has no host"),
    ] {
        refused(j(vec![uri(bad)]), Reason::NameConstraints, &[words]);
    }
    refused(
        j(vec![
            uri("spiffe://example.org/a"),
            uri("spiffe://other.org/b"),
        ]),
        Reason::NameConstraints,
        &["URI SAN \"spiffe://other.org/b\""],
    );
    // A domain, and an excluded host.
    let dom = ca_raw(
        "dom",
        nc(&[g_uri(".example.org")], &[g_uri("bad.example.org")]),
        None,
    );
    let j = |sans| judge(&leaf(cn("x"), sans, &dom), &[&dom]);
    j(vec![uri("spiffe://a.example.org/x")]).unwrap();
    refused(
        j(vec![uri("spiffe://example.org/x")]),
        Reason::NameConstraints,
        &["outside"],
    );
    refused(
        j(vec![uri("spiffe://BAD.example.org/x")]),
        Reason::NameConstraints,
        &["excluded URI subtree \"bad.example.org\""],
    );
    // Excluded only: a hostless URI still cannot be checked.
    let ex = ca_raw("ex", nc(&[], &[g_uri("evil.org")]), None);
    judge(
        &leaf(cn("x"), vec![uri("spiffe://good.org/x")], &ex),
        &[&ex],
    )
    .unwrap();
    refused(
        judge(&leaf(cn("x"), vec![uri("urn:x:y")], &ex), &[&ex]),
        Reason::NameConstraints,
        &["has no host"],
    );
    // A constraint written as a URI is not a host: malformed.
    let wrong = ca_raw("wrong", nc(&[g_uri("spiffe://example.org")], &[]), None);
    refused(
        judge(&leaf(cn("x"), vec![], &wrong), &[&wrong]),
        Reason::BadEncoding,
        &["URI subtree"],
    );
}

#[test]
fn directory_name_subtrees_compare_normalised_rdn_prefixes() {
    let root = ca_raw(
        "root",
        nc(&[g_dir(&[&[(O, UTF8, "Example Org")]])], &[]),
        None,
    );
    let j = |subject| judge(&leaf(subject, vec![], &root), &[&root]);
    j(name(&[
        (DnType::OrganizationName, "Example Org"),
        (DnType::CommonName, "edge"),
    ]))
    .unwrap();
    j(name(&[
        (DnType::OrganizationName, "  EXAMPLE   org "),
        (DnType::CommonName, "edge"),
    ]))
    .unwrap();
    refused(
        j(name(&[
            (DnType::OrganizationName, "Example Org2"),
            (DnType::CommonName, "edge"),
        ])),
        Reason::NameConstraints,
        &[
            "subject CN=edge,O=Example Org2 of the client certificate",
            "outside the permitted directoryName subtrees [\"O=Example Org\"]",
        ],
    );
    refused(
        j(name(&[
            (DnType::CommonName, "edge"),
            (DnType::OrganizationName, "Example Org"),
        ])),
        Reason::NameConstraints,
        &["outside"],
    );
    // The constraint longer than the name.
    let deep = ca_raw(
        "deep",
        nc(&[g_dir(&[&[(O, UTF8, "E")], &[(OU, UTF8, "edge")]])], &[]),
        None,
    );
    refused(
        judge(
            &leaf(name(&[(DnType::OrganizationName, "E")]), vec![], &deep),
            &[&deep],
        ),
        Reason::NameConstraints,
        &["outside"],
    );
    // Multi-valued RDNs compare as sets; a PrintableString and a UTF8String of one
    // text are one value.
    let ex = ca_raw(
        "ex",
        nc(&[], &[g_dir(&[&[(OU, PRINTABLE, "b"), (O, UTF8, "a")]])]),
        None,
    );
    let san =
        |rdn: &[(&[u8], u8, &str)]| leaf_raw_san("x", &[g_dir(&[rdn, &[(CN, UTF8, "e")]])], &ex);
    refused(
        judge(&san(&[(O, PRINTABLE, "A"), (OU, UTF8, "B")]), &[&ex]),
        Reason::NameConstraints,
        &["directoryName SAN", "excluded directoryName subtree"],
    );
    judge(&san(&[(O, UTF8, "a")]), &[&ex]).unwrap();
    judge(&san(&[(O, UTF8, "a"), (OU, UTF8, "c")]), &[&ex]).unwrap();
    // The subject is a directoryName too, beside a directoryName SAN that is inside.
    let inside = leaf_raw_san("x", &[g_dir(&[&[(O, UTF8, "Example Org")]])], &root);
    refused(
        judge(&inside, &[&root]),
        Reason::NameConstraints,
        &["subject CN=x"],
    );
    // A vertical tab is whitespace too (as OpenSSL's canonical names have it).
    let tab = ca_raw(
        "tab",
        nc(&[], &[g_dir(&[&[(O, UTF8, "Example Org")]])]),
        None,
    );
    refused(
        judge(
            &leaf(
                name(&[(DnType::OrganizationName, "Example\x0bOrg\x0b")]),
                vec![],
                &tab,
            ),
            &[&tab],
        ),
        Reason::NameConstraints,
        &["excluded"],
    );
    // An empty subject is no name.
    judge(
        &leaf(DistinguishedName::new(), vec![dns("x.test")], &root),
        &[&root],
    )
    .unwrap();
    // A NumericString is compared as it is encoded (as OpenSSL does).
    let numeric = ca_raw("numeric", nc(&[g_dir(&[&[(O, 0x12, "123")]])], &[]), None);
    refused(
        judge(
            &leaf(name(&[(DnType::OrganizationName, "123")]), vec![], &numeric),
            &[&numeric],
        ),
        Reason::NameConstraints,
        &["outside"],
    );
    let numeric_ex = ca_raw(
        "numeric-ex",
        nc(&[], &[g_dir(&[&[(O, 0x12, "123")]])]),
        None,
    );
    let as_numeric = leaf_raw_san("Edge Server", &[g_dir(&[&[(O, 0x12, "123")]])], &numeric_ex);
    refused(
        judge(&as_numeric, &[&numeric_ex]),
        Reason::NameConstraints,
        &["directoryName SAN O=123", "excluded"],
    );
    // Every ASN.1 string type decodes to the same text.
    let typed = |value: DnValue| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, value);
        leaf(dn, vec![], &root)
    };
    for value in [
        DnValue::BmpString(rcgen::string::BmpString::try_from("EXAMPLE ORG").unwrap()),
        DnValue::UniversalString(rcgen::string::UniversalString::try_from("example  org").unwrap()),
        DnValue::TeletexString(rcgen::string::TeletexString::try_from("Example Org").unwrap()),
        DnValue::PrintableString(rcgen::string::PrintableString::try_from("Example Org").unwrap()),
        DnValue::Ia5String(rcgen::string::Ia5String::try_from("example org").unwrap()),
    ] {
        let what = format!("{value:?}");
        judge(&typed(value), &[&root]).unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }
    // A value that does not decode (a BMPString of odd length) cannot be compared with a
    // directoryName constraint, and is no obstacle where there is none.
    let odd = leaf_raw_san("x", &[g_dir(&[&[(O, 0x1e, "abc")]])], &ex);
    refused(
        judge(&odd, &[&ex]),
        Reason::NameConstraints,
        &["directoryName SAN", "does not decode"],
    );
    let dns_only = ca("dns-only", permit(vec![sub_dns("x.test")]), None);
    let odd = leaf_raw_san("x.test", &[g_dir(&[&[(O, 0x1e, "abc")]])], &dns_only);
    judge(&odd, &[&dns_only]).unwrap();
}

#[test]
fn forms_aop_cannot_process_fail_closed_only_where_the_certificate_has_that_form() {
    let root = ca_raw("root", nc(&[g_other("x@example.com")], &[]), None);
    judge(&leaf(cn("x"), vec![dns("a.test")], &root), &[&root]).unwrap();
    refused(
        judge(
            &leaf_raw_san("x", &[g_other("y@example.com")], &root),
            &[&root],
        ),
        Reason::NameConstraints,
        &["otherName", "does not process"],
    );
    let reg = ca_raw("reg", nc(&[], &[tlv(0x88, &[0x2a, 0x03])]), None);
    judge(&leaf(cn("x"), vec![], &reg), &[&reg]).unwrap();
    refused(
        judge(
            &leaf_raw_san("x", &[tlv(0x88, &[0x2a, 0x04])], &reg),
            &[&reg],
        ),
        Reason::NameConstraints,
        &["registeredID"],
    );
}

/// Every byte of a nameConstraints of every form, changed three ways, and every
/// truncation: no panic, no verdict but `bad_encoding` or `name_constraints`, and
/// never a pass: a change that still parses still constrains the leaf, which is outside
/// every subtree.
#[test]
fn mutated_name_constraints_never_panic() {
    let value = nc(
        &[
            g_dns("example.com"),
            g_uri(".example.org"),
            g_email("a@example.com"),
            g_ip(&[10, 0, 0, 0, 255, 0, 0, 0]),
            g_dir(&[&[(O, UTF8, "Org")]]),
        ],
        &[g_dns("bad.example.com")],
    );
    let mut variants: Vec<Vec<u8>> = (0..value.len()).map(|n| value[..n].to_vec()).collect();
    for i in 0..value.len() {
        for delta in [1u8, 0x80, 0xff] {
            let mut v = value.clone();
            v[i] = v[i].wrapping_add(delta);
            variants.push(v);
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (total, mut judged, mut passed) = (variants.len(), 0, 0);
    for v in variants {
        let mut p = ca_params("fuzz");
        let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 30], v);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
        let Ok(cert) = p.self_signed(&key) else {
            continue;
        };
        let root = Made {
            der: cert.der().clone(),
            issuer: Issuer::new(
                p,
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            ),
        };
        let Ok((_, parsed)) = X509Certificate::from_der(&root.der) else {
            continue;
        };
        let leaf_der = leaf(
            name(&[(DnType::OrganizationName, "Other")]),
            vec![dns("x.evil.test"), uri("spiffe://evil.test/x")],
            &root,
        );
        let (_, leaf_parsed) = X509Certificate::from_der(&leaf_der).unwrap();
        judged += 1;
        match check(&leaf_parsed, std::slice::from_ref(&parsed)) {
            Ok(()) => passed += 1,
            Err((Reason::BadEncoding | Reason::NameConstraints, _)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    // Each variant reaches the check (the extension's value is opaque to the
    // certificate's parser) and none lets the leaf through.
    assert_eq!((judged, passed), (total, 0));
}

#[test]
fn malformed_name_constraints_are_bad_encoding() {
    let subtree = |gn: Vec<u8>| seq(&[gn]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty SEQUENCE", seq::<Vec<u8>>(&[])),
        ("empty permitted", seq(&[tlv(0xa0, &[])])),
        ("empty excluded", seq(&[tlv(0xa1, &[])])),
        (
            "minimum present",
            seq(&[tlv(0xa0, &seq(&[g_dns("a.test"), tlv(0x80, &[1])]))]),
        ),
        (
            "maximum present",
            seq(&[tlv(0xa0, &seq(&[g_dns("a.test"), tlv(0x81, &[3])]))]),
        ),
        (
            "trailing garbage",
            seq(&[tlv(0xa0, &subtree(g_dns("a.test"))), vec![0x05, 0x00]]),
        ),
        (
            "after the SEQUENCE",
            [nc(&[g_dns("a.test")], &[]), vec![0]].concat(),
        ),
        (
            "excluded before permitted",
            seq(&[
                tlv(0xa1, &subtree(g_dns("a.test"))),
                tlv(0xa0, &subtree(g_dns("b.test"))),
            ]),
        ),
        ("unknown tag", nc(&[tlv(0x89, b"x")], &[])),
        (
            "constructed dNSName",
            nc(&[tlv(0xa2, &tlv(0x16, b"a.test"))], &[]),
        ),
        (
            "a subtree not a SEQUENCE",
            seq(&[tlv(0xa0, &g_dns("a.test"))]),
        ),
        ("bad DNS base", nc(&[g_dns("exa mple.com")], &[])),
        ("wildcard DNS base", nc(&[g_dns("*.example.com")], &[])),
        ("bad email base", nc(&[g_email("@example.com")], &[])),
        ("empty email base", nc(&[g_email("")], &[])),
        ("empty URI base", nc(&[], &[g_uri("")])),
        ("bad UTF-8", nc(&[tlv(0x82, &[0xff, 0xfe])], &[])),
        ("IP of 32+1 bytes", nc(&[g_ip(&[0; 33])], &[])),
    ];
    for (what, value) in cases {
        let root = ca_raw("root", value, None);
        let (r, detail) = judge(&leaf(cn("x"), vec![dns("a.test")], &root), &[&root]).unwrap_err();
        assert_eq!(r, Reason::BadEncoding, "{what}: {detail}");
        assert!(
            detail.contains("CA CN=root: nameConstraints"),
            "{what}: {detail}"
        );
    }
    // Two nameConstraints extensions.
    let mut p = ca_params("two");
    for _ in 0..2 {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 30],
            nc(&[g_dns("a.test")], &[]),
        ));
    }
    let two = make(p, None);
    refused(
        judge(&leaf(cn("x"), vec![], &two), &[&two]),
        Reason::BadEncoding,
        &["nameConstraints"],
    );
    // An empty DNS base is well-formed: it holds every DNS name (excluded: none allowed).
    let none = ca_raw("none", nc(&[], &[g_dns("")]), None);
    judge(
        &leaf(cn("Edge Server"), vec![uri("spiffe://a/b")], &none),
        &[&none],
    )
    .unwrap();
    // A one-label CN is a DNS name to name constraints when allow_san could match it (no
    // subjectAltName extension at all); beside a SAN, only a CN with a dot counts
    // (OpenSSL's rule).
    refused(
        judge(&leaf(cn("x"), vec![], &none), &[&none]),
        Reason::NameConstraints,
        &["subject CN \"x\""],
    );
    judge(&leaf(cn("x"), vec![uri("spiffe://a/b")], &none), &[&none]).unwrap();
    refused(
        judge(
            &leaf(cn("x.test"), vec![uri("spiffe://a/b")], &none),
            &[&none],
        ),
        Reason::NameConstraints,
        &["subject CN \"x.test\""],
    );
    refused(
        judge(
            &leaf(cn("Edge Server"), vec![dns("a.test")], &none),
            &[&none],
        ),
        Reason::NameConstraints,
        &["excluded DNS subtree \"\""],
    );
}

#[test]
fn every_constraining_ca_applies_to_everything_below_it() {
    let root = ca("root", permit(vec![sub_dns("example.com")]), None);
    let mid = ca("mid", permit(vec![sub_dns("a.example.com")]), Some(&root));
    judge(
        &leaf(cn("x"), vec![dns("x.a.example.com")], &mid),
        &[&mid, &root],
    )
    .unwrap();
    refused(
        judge(
            &leaf(cn("x"), vec![dns("b.example.com")], &mid),
            &[&mid, &root],
        ),
        Reason::NameConstraints,
        &["CA CN=mid"],
    );
    // The root's constraints reach the intermediate's own names, and the intermediate's
    // permitted subtree cannot widen the root's.
    let wide = ca("wide", permit(vec![sub_dns("com")]), Some(&root));
    refused(
        judge(
            &leaf(cn("x"), vec![dns("evil.com")], &wide),
            &[&wide, &root],
        ),
        Reason::NameConstraints,
        &["CA CN=root"],
    );
    let mut p = ca_params("named-mid");
    p.subject_alt_names = vec![dns("mid.evil.com")];
    let named = make(p, Some(&root));
    refused(
        judge(
            &leaf(cn("x"), vec![dns("a.example.com")], &named),
            &[&named, &root],
        ),
        Reason::NameConstraints,
        &[
            "DNS SAN \"mid.evil.com\" of intermediate CN=named-mid",
            "CA CN=root",
        ],
    );
    // The intermediate's CN is not a DNS name to name constraints (the client's is).
    let dotted = ca("mid.evil.com", None, Some(&root));
    judge(
        &leaf(cn("x"), vec![dns("a.example.com")], &dotted),
        &[&dotted, &root],
    )
    .unwrap();
}

#[test]
fn self_issued_intermediates_are_not_checked_and_a_self_signed_leaf_has_nothing_below() {
    // The root permits O=Org only; its own name (CN=root) is outside, so a re-keyed copy
    // of it (self-issued: subject = issuer = CN=root) would fail if it were checked.
    let root = ca_raw("root", nc(&[g_dir(&[&[(O, UTF8, "Org")]])], &[]), None);
    let rekeyed = ca("root", None, Some(&root));
    let org = name(&[
        (DnType::OrganizationName, "Org"),
        (DnType::CommonName, "edge"),
    ]);
    judge(&leaf(org.clone(), vec![], &rekeyed), &[&rekeyed, &root]).unwrap();
    let other = ca("other", None, Some(&root));
    refused(
        judge(&leaf(org, vec![], &other), &[&other, &root]),
        Reason::NameConstraints,
        &["intermediate CN=other"],
    );
    // A self-signed certificate trusted directly, excluding its own name.
    let mut p = params(cn("self.test"), vec![dns("self.test")]);
    p.name_constraints = exclude(vec![sub_dns("self.test")]);
    let selfie = make(p, None);
    judge(&selfie.der, &[&selfie]).unwrap();
}

#[test]
fn the_comparisons_are_bounded() {
    let excluded: Vec<_> = (0..40).map(|i| sub_dns(&format!("ex{i}.test"))).collect();
    let root = ca("root", exclude(excluded.clone()), None);
    let sans = |n: usize| {
        (0..n)
            .map(|i| dns(&format!("n{i}.ok.test")))
            .collect::<Vec<_>>()
    };
    // 25 names (and the subject, of another form) × 40 subtrees = 1,000: within.
    judge(&leaf(cn("x"), sans(25), &root), &[&root]).unwrap();
    refused(
        judge(&leaf(cn("x"), sans(26), &root), &[&root]),
        Reason::NameConstraints,
        &["more than 1024 comparisons"],
    );
    // Spread over two CAs, the count is per path: 2 × 13 × 40 = 1,040.
    let mid = ca("mid", exclude(excluded), Some(&root));
    judge(&leaf(cn("x"), sans(12), &mid), &[&mid, &root]).unwrap();
    refused(
        judge(&leaf(cn("x"), sans(13), &mid), &[&mid, &root]),
        Reason::NameConstraints,
        &["more than 1024 comparisons"],
    );
    // A hostile certificate with thousands of names under one subtree stops at the limit.
    let one = ca("one", exclude(vec![sub_dns("ex.test")]), None);
    refused(
        judge(&leaf(cn("x"), sans(3000), &one), &[&one]),
        Reason::NameConstraints,
        &["more than 1024 comparisons"],
    );
}

// ---- allow_san -----------------------------------------------------------------------

fn info(der: &CertificateDer<'_>) -> CertInfo {
    CertInfo::from_der(der, OffsetDateTime::now_utc()).unwrap()
}

fn allow(entries: &[&str]) -> AllowSan {
    AllowSan::parse(&entries.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn allow_san_entries_parse_or_are_refused_by_name() {
    let a = allow(&[
        "Edge.Test",
        "https://x.test/id",
        "spiffe://example.org",
        "spiffe://example.org/edge/1",
        "spiffe://example.org/edge/*",
        "spiffe://example.org/*",
    ]);
    assert_eq!(a.dns, ["edge.test"]);
    assert_eq!(a.uri, ["https://x.test/id"]);
    assert_eq!(
        a.spiffe,
        [
            SpiffeRule::TrustDomain("example.org".into()),
            SpiffeRule::Exact("spiffe://example.org/edge/1".into()),
            SpiffeRule::Under("example.org".into(), "/edge".into()),
            SpiffeRule::Under("example.org".into(), String::new()),
        ]
    );
    assert!(allow(&[]).is_empty());
    for bad in [
        "spiffe://",
        "spiffe:///edge",
        "spiffe://Example.org/edge",
        "SPIFFE://example.org/edge",
        "spiffe:example.org",
        "spiffe://example.org/",
        "spiffe://example.org/edge/",
        "spiffe://example.org//edge",
        "spiffe://example.org/./edge",
        "spiffe://example.org/edge/..",
        "spiffe://example.org:443/edge",
        "spiffe://user@example.org/edge",
        "spiffe://example.org/edge?x=1",
        "spiffe://example.org/edge#f",
        "spiffe://example.org/ed%20ge",
        "spiffe://example.org/edge*",
        "spiffe://example.org/*/x",
        "spiffe://example.org/edge/**",
        "spiffe://*",
        "10.0.0.1",
        "2001:db8::1",
        "::1",
    ] {
        let e = AllowSan::parse(&[bad.to_owned()]).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
    let long = format!("spiffe://example.org/{}", "a".repeat(2048));
    assert!(
        AllowSan::parse(&[long])
            .unwrap_err()
            .contains("longer than 2048")
    );
}

#[test]
fn allow_san_matching() {
    let root = ca("root", None, None);
    let with = |subject, sans| info(&leaf(subject, sans, &root));
    let spiffe = |id: &str| with(cn("x"), vec![uri(id)]);
    let a = allow(&["spiffe://example.org/edge/*"]);
    assert!(a.allows(&spiffe("spiffe://example.org/edge/1")));
    assert!(a.allows(&spiffe("spiffe://example.org/edge/eu/1")));
    for no in [
        "spiffe://example.org/edge",
        "spiffe://example.org/edgeX/1",
        "spiffe://example.org/edg",
        "spiffe://example.org/other/1",
        "spiffe://other.org/edge/1",
        "spiffe://a.example.org/edge/1",
        "spiffe://Example.org/edge/1",
        "SPIFFE://example.org/edge/1",
        "spiffe://example.org/edge/1/",
        "spiffe://example.org/edge//1",
        "spiffe://example.org/edge/../x",
        "spiffe://example.org:8443/edge/1",
        "spiffe://example.org/edge/1?x",
    ] {
        assert!(!a.allows(&spiffe(no)), "{no}");
    }
    // An X.509-SVID has exactly one URI SAN.
    assert!(!a.allows(&with(
        cn("x"),
        vec![
            uri("spiffe://example.org/edge/1"),
            uri("spiffe://example.org/edge/2")
        ]
    )));
    assert!(a.allows(&with(
        cn("x"),
        vec![uri("spiffe://example.org/edge/1"), dns("edge.test")]
    )));

    let td = allow(&["spiffe://example.org"]);
    assert!(td.allows(&spiffe("spiffe://example.org/anything/at/all")));
    assert!(
        !td.allows(&spiffe("spiffe://example.org")),
        "the trust domain itself is no workload"
    );
    assert!(!td.allows(&spiffe("spiffe://example.org.evil/x")));
    let exact = allow(&["spiffe://example.org/edge/1"]);
    assert!(exact.allows(&spiffe("spiffe://example.org/edge/1")));
    assert!(!exact.allows(&spiffe("spiffe://example.org/edge/1/2")));
    assert!(
        !exact.allows(&spiffe("spiffe://example.org/Edge/1")),
        "paths are case-sensitive"
    );
    let any = allow(&["spiffe://example.org/*"]);
    assert!(any.allows(&spiffe("spiffe://example.org/x")));
    assert!(!any.allows(&spiffe("spiffe://example.org")));

    // Plain URIs: exact, any of several.
    let u = allow(&["https://x.test/id"]);
    assert!(u.allows(&with(cn("x"), vec![uri("urn:a"), uri("https://x.test/id")])));
    assert!(!u.allows(&with(cn("x"), vec![uri("https://x.test/ID")])));

    // DNS: exact, case-insensitive; the CN only without any SAN, and only a DNS-like CN.
    let d = allow(&["Edge.Test", "edge"]);
    assert!(d.allows(&with(cn("x"), vec![dns("EDGE.test")])));
    assert!(!d.allows(&with(cn("x"), vec![dns("a.edge.test")])));
    assert!(d.allows(&with(cn("edge.test"), vec![])));
    assert!(d.allows(&with(cn("EDGE"), vec![])));
    assert!(
        !d.allows(&with(cn("edge.test"), vec![uri("urn:x")])),
        "a SAN extension: no CN"
    );
    let spaced = allow(&["edge server"]);
    assert!(
        !spaced.allows(&with(cn("edge server"), vec![])),
        "not a DNS name: no CN match"
    );
    assert!(!d.allows(&with(cn("edge.test."), vec![])));
    assert!(!allow(&["spiffe://example.org"]).allows(&with(cn("example.org"), vec![])));
}

// ---- through Trust::check ------------------------------------------------------------

/// Write `root` as the only anchor and load a trust with these allow_san entries.
fn trust(dir: &std::path::Path, root: &Made, allow_san: &[&str]) -> Trust {
    let path = dir.join("anchor.der");
    std::fs::write(&path, root.der.as_ref()).unwrap();
    let mut spec = TrustSpec::new([path]);
    spec.allow_san = allow_san.iter().map(|s| (*s).to_owned()).collect();
    Trust::load(&spec).unwrap()
}

#[track_caller]
fn verdict(t: &Trust, leaf: &CertificateDer<'_>, chain: &[&Made]) -> (Outcome, String) {
    let chain: Vec<_> = chain.iter().map(|m| m.der.clone()).collect();
    let c = t.check(leaf, &chain, OffsetDateTime::now_utc());
    (c.outcome, c.detail.unwrap_or_default())
}

#[test]
fn through_trust_check_dns_and_cn() {
    let d = tempfile::tempdir().unwrap();
    let root = ca("root", permit(vec![sub_dns("example.com")]), None);
    let t = trust(d.path(), &root, &[]);
    assert_eq!(
        verdict(
            &t,
            &leaf(cn("x"), vec![dns("edge.example.com")], &root),
            &[]
        )
        .0,
        Outcome::Success
    );
    assert_eq!(
        verdict(&t, &leaf(cn("edge.example.com"), vec![], &root), &[]).0,
        Outcome::Success
    );
    // webpki does not look at the CN; aop does.
    let (o, detail) = verdict(&t, &leaf(cn("edge.evil.com"), vec![], &root), &[]);
    assert_eq!(o, Outcome::Failed(Reason::NameConstraints), "{detail}");
    assert!(detail.contains("subject CN \"edge.evil.com\""), "{detail}");
    let (o, detail) = verdict(&t, &leaf(cn("x"), vec![dns("edge.evil.com")], &root), &[]);
    assert_eq!(o, Outcome::Failed(Reason::NameConstraints), "{detail}");
    // The CN allow_san could match is the CN name constraints checked.
    let allowing = trust(d.path(), &root, &["edge.evil.com", "edge.example.com"]);
    assert_eq!(
        verdict(&allowing, &leaf(cn("edge.evil.com"), vec![], &root), &[]).0,
        Outcome::Failed(Reason::NameConstraints)
    );
    assert_eq!(
        verdict(&allowing, &leaf(cn("edge.example.com"), vec![], &root), &[]).0,
        Outcome::Success
    );
}

#[test]
fn through_trust_check_spiffe() {
    let d = tempfile::tempdir().unwrap();
    let root = ca_raw("spiffe-root", nc(&[g_uri("example.org")], &[]), None);
    let t = trust(d.path(), &root, &["spiffe://example.org/edge/*"]);
    let svid = |id: &str| leaf(cn("x"), vec![uri(id)], &root);
    assert_eq!(
        verdict(&t, &svid("spiffe://example.org/edge/1"), &[]).0,
        Outcome::Success
    );
    let (o, detail) = verdict(&t, &svid("spiffe://other.org/edge/1"), &[]);
    assert_eq!(o, Outcome::Failed(Reason::NameConstraints), "{detail}");
    assert!(
        detail.contains("URI SAN \"spiffe://other.org/edge/1\""),
        "{detail}"
    );
    assert_eq!(
        verdict(&t, &svid("spiffe://example.org/db/1"), &[]).0,
        Outcome::Failed(Reason::NameNotAllowed)
    );
    // Through an intermediate that narrows nothing: the root's constraint still holds.
    let mid = ca("mid", None, Some(&root));
    let under_mid = |id: &str| leaf(cn("x"), vec![uri(id)], &mid);
    assert_eq!(
        verdict(&t, &under_mid("spiffe://example.org/edge/2"), &[&mid]).0,
        Outcome::Success
    );
    assert_eq!(
        verdict(&t, &under_mid("spiffe://evil.org/edge/2"), &[&mid]).0,
        Outcome::Failed(Reason::NameConstraints)
    );
    // An invalid entry is a load error naming it.
    let path = d.path().join("anchor.der");
    let mut spec = TrustSpec::new([path]);
    spec.allow_san = vec!["spiffe://example.org/edge/".into()];
    let e = Trust::load(&spec).unwrap_err().to_string();
    assert!(
        e.starts_with("invalid policy: allow_san entry \"spiffe://example.org/edge/\""),
        "{e}"
    );
}

#[test]
fn through_trust_check_email_and_directory_name() {
    let d = tempfile::tempdir().unwrap();
    let root = ca(
        "root",
        permit(vec![GeneralSubtree::Rfc822Name("example.com".into())]),
        None,
    );
    let t = trust(d.path(), &root, &[]);
    assert_eq!(
        verdict(&t, &leaf(cn("x"), vec![email("a@example.com")], &root), &[]).0,
        Outcome::Success
    );
    assert_eq!(
        verdict(&t, &leaf(cn("x"), vec![email("a@evil.com")], &root), &[]).0,
        Outcome::Failed(Reason::NameConstraints)
    );
    let dn = ca(
        "dn-root",
        permit(vec![GeneralSubtree::DirectoryName(name(&[(
            DnType::OrganizationName,
            "Org",
        )]))]),
        None,
    );
    let t = trust(d.path(), &dn, &[]);
    let org = |o: &str| name(&[(DnType::OrganizationName, o), (DnType::CommonName, "edge")]);
    assert_eq!(
        verdict(&t, &leaf(org("ORG"), vec![], &dn), &[]).0,
        Outcome::Success
    );
    assert_eq!(
        verdict(&t, &leaf(org("Other"), vec![], &dn), &[]).0,
        Outcome::Failed(Reason::NameConstraints)
    );
}
