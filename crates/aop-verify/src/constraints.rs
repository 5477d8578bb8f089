//! RFC 5280 name constraints (section 4.2.1.10), every form a client certificate meets:
//! DNS, IP address, email (rfc822Name), URI (a SPIFFE trust domain is a URI host) and
//! directoryName, permitted and excluded. The subject counts too: the client
//! certificate's CNs as DNS names when it has no DNS SAN, every certificate's
//! emailAddress attributes as email names, and its whole subject as a directoryName.
//!
//! rustls-webpki handles DNS and IP constraints only and fails every URI, email and
//! directoryName constraint; [`crate::trust`] shows webpki certificates without their
//! nameConstraints extension where they carry such forms and applies [`check`] to every
//! path (webpki's own DNS and IP checks still run where it sees the extension: a path
//! must pass both). Also here: SPIFFE-aware matching of `allow_san` entries
//! ([`AllowSan`]).
//!
//! The matching rules, each a small function below with its tests:
//!
//! | form | constraint | a name is inside when |
//! |------|------------|-----------------------|
//! | DNS | `example.com` | it is example.com or ends in `.example.com` |
//! | DNS | `.example.com` | it ends in `.example.com` (subdomains only) |
//! | IP | address + mask | same family, and equal under the mask |
//! | email | `user@example.com` | that mailbox (local part case-sensitive when permitted, not when excluded) |
//! | email | `example.com` | its host is example.com |
//! | email | `.example.com` | its host ends in `.example.com` |
//! | URI | `example.org` | it is `scheme://example.org[:port]`, then nothing or `/…` |
//! | URI | `.example.org` | its host ends in `.example.org` |
//! | directoryName | a Name | its RDNs start with the constraint's (values compared after normalisation) |
//!
//! DNS names, hosts and domains compare ASCII case-insensitively; an empty DNS
//! constraint holds every DNS name (an empty email or URI constraint is malformed: RFC
//! 5280 asks for a host or domain). A wildcard DNS SAN `*.x.example.com` is inside a
//! permitted subtree when every name it stands for is, and inside an excluded subtree
//! when any name it stands for is. Whatever cannot be checked fails closed: a name of a
//! constrained form that does not parse (a DNS SAN that is not a DNS name, a client CN
//! with a NUL or that does not decode, an email without exactly one `@`, a subject
//! emailAddress that is not an IA5String, a URI without a host or with userinfo, a
//! directoryName value that does not decode), and any name of a form aop
//! does not process (otherName, x400Address, ediPartyName, registeredID) under a
//! constraint of that form.

use std::net::{Ipv4Addr, Ipv6Addr};

use aop_pki::{CertInfo, rfc4514};
use x509_parser::asn1_rs::{Any, Class, FromDer as _, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_X509_EXT_NAME_CONSTRAINTS;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::strict::Refusal;
use crate::verdict::Reason;

/// The most comparisons of a name with a subtree of its form that one path may cost
/// (names × subtrees, summed over the constraining CAs). A path that needs more is
/// refused (`name_constraints`): a client chain has a handful of names and its CAs a
/// handful of subtrees each, so only a hostile chain comes near.
pub(crate) const COMPARISON_LIMIT: usize = 1024;

/// Check every name of `leaf` and of each issuer below a constraining CA against the
/// nameConstraints of the CAs above it. `issuers` as in [`crate::strict::check_path`]:
/// the client's issuer first, the trust anchor's certificate last. A CA's constraints
/// apply to the client's certificate and to the intermediates below that CA that are
/// not self-issued (RFC 5280 6.1.3 b). A violation, or a constraint of a form aop cannot
/// process (otherName, x400Address, ediPartyName, registeredID) on a name of that form,
/// is `name_constraints`; a malformed nameConstraints extension is `bad_encoding`.
pub(crate) fn check(
    leaf: &X509Certificate<'_>,
    issuers: &[X509Certificate<'_>],
) -> Result<(), Refusal> {
    // A self-signed certificate trusted directly: nothing is below it.
    if let [only] = issuers
        && only.as_raw() == leaf.as_raw()
    {
        return Ok(());
    }
    // Every name on the path must be read whole: x509-parser stops reading a Name at the
    // first RDN it cannot parse (an empty SET) and silently drops the rest, and reads an
    // attribute type OID without checking its encoding. A name read in part hides
    // attributes (a CN, an emailAddress, an O) from the checks below while another reader
    // (OpenSSL, Go, aop's own rendering) sees them; and two different names read in part
    // alike would make a certificate look self-issued.
    for (who, cert) in std::iter::once(("the client certificate", leaf))
        .chain(issuers.iter().map(|c| ("a CA certificate", c)))
    {
        for (which, name) in [("subject", cert.subject()), ("issuer", cert.issuer())] {
            if !name_is_whole(name) {
                return Err(bad_encoding(format!(
                    "{who} {}: its {which} name does not parse whole (an empty RDN, an \
                     attribute without a value, or an attribute type that is not a DER OID)",
                    rfc4514(cert.subject())
                )));
            }
        }
    }
    let mut budget = Budget(COMPARISON_LIMIT);
    // Top-down, as RFC 5280 processes a path: the anchor's constraints first.
    for (i, ca) in issuers.iter().enumerate().rev() {
        let Some(constraints) = Constraints::of(ca)? else {
            continue;
        };
        let ca_name = format!("CA {}", rfc4514(ca.subject()));
        let below = issuers[..i]
            .iter()
            .filter(|c| c.subject().as_raw() != c.issuer().as_raw())
            .map(|c| (c, false, format!("intermediate {}", rfc4514(c.subject()))));
        let leaf = (leaf, true, "the client certificate".to_owned());
        for (cert, is_leaf, who) in std::iter::once(leaf).chain(below) {
            let names = names_of(cert, is_leaf, &who)?;
            constraints.admit(&names, &ca_name, &mut budget)?;
        }
    }
    Ok(())
}

/// What is left of [`COMPARISON_LIMIT`] on this path.
struct Budget(usize);

impl Budget {
    fn spend(&mut self) -> Result<(), Refusal> {
        match self.0.checked_sub(1) {
            Some(left) => {
                self.0 = left;
                Ok(())
            }
            None => Err((
                Reason::NameConstraints,
                format!(
                    "checking the chain's names against its CAs' name constraints needs more \
                     than {COMPARISON_LIMIT} comparisons (names × subtrees); refused"
                ),
            )),
        }
    }
}

fn bad_encoding(detail: String) -> Refusal {
    (Reason::BadEncoding, detail)
}

fn violation(detail: String) -> Refusal {
    (Reason::NameConstraints, detail)
}

/// The name forms of GeneralName (RFC 5280 4.2.1.6), by their context tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    OtherName,
    Email,
    Dns,
    X400,
    Directory,
    EdiParty,
    Uri,
    Ip,
    RegisteredId,
}

impl Form {
    fn of_tag(tag: u32) -> Option<Self> {
        Some(match tag {
            0 => Self::OtherName,
            1 => Self::Email,
            2 => Self::Dns,
            3 => Self::X400,
            4 => Self::Directory,
            5 => Self::EdiParty,
            6 => Self::Uri,
            7 => Self::Ip,
            8 => Self::RegisteredId,
            _ => return None,
        })
    }

    /// Whether the DER encoding of this form is constructed (the CHOICE and SEQUENCE
    /// forms) or primitive (the strings, the IP octets, the OID).
    fn constructed(self) -> bool {
        matches!(
            self,
            Self::OtherName | Self::X400 | Self::Directory | Self::EdiParty
        )
    }

    fn word(self) -> &'static str {
        match self {
            Self::OtherName => "otherName",
            Self::Email => "email",
            Self::Dns => "DNS",
            Self::X400 => "x400Address",
            Self::Directory => "directoryName",
            Self::EdiParty => "ediPartyName",
            Self::Uri => "URI",
            Self::Ip => "IP",
            Self::RegisteredId => "registeredID",
        }
    }
}

/// One CA's nameConstraints, parsed and validated.
#[derive(Debug, Default)]
struct Constraints {
    permitted: Vec<Base>,
    excluded: Vec<Base>,
}

/// The base of one subtree, validated and normalised for matching.
#[derive(Debug)]
enum Base {
    /// Lowercase; empty (everything), `.domain` or `host`.
    Dns(String),
    /// Address and mask, both 4 or both 16 bytes; the mask a prefix.
    Ip {
        addr: Vec<u8>,
        mask: Vec<u8>,
    },
    Email(EmailBase),
    /// Lowercase; empty (everything), `.domain` or `host`.
    Uri(String),
    /// The normalised RDNs, and the name as written (for the detail).
    Directory(Vec<Rdn>, String),
    /// A form aop does not process.
    Other(Form),
}

#[derive(Debug)]
enum EmailBase {
    Mailbox {
        local: String,
        host: String,
    },
    Host(String),
    /// Without its leading dot.
    Domain(String),
}

impl Base {
    fn form(&self) -> Form {
        match self {
            Self::Dns(_) => Form::Dns,
            Self::Ip { .. } => Form::Ip,
            Self::Email(_) => Form::Email,
            Self::Uri(_) => Form::Uri,
            Self::Directory(..) => Form::Directory,
            Self::Other(f) => *f,
        }
    }

    fn parse(name: &GeneralName<'_>) -> Result<Self, String> {
        Ok(match name {
            GeneralName::DNSName(s) => Self::Dns(dns_base(s).ok_or("not a DNS name")?),
            GeneralName::URI(s) => Self::Uri(
                dns_base(s)
                    .filter(|b| !b.is_empty())
                    .ok_or("not a host or .domain")?,
            ),
            GeneralName::RFC822Name(s) => {
                Self::Email(email_base(s).ok_or("not a mailbox, host or .domain")?)
            }
            GeneralName::IPAddress(b) => {
                if !matches!(b.len(), 8 | 32) {
                    return Err(format!(
                        "an address and a mask of 4 + 4 or 16 + 16 bytes, not {} bytes",
                        b.len()
                    ));
                }
                let (addr, mask) = b.split_at(b.len() / 2);
                if !is_prefix_mask(mask) {
                    return Err("a mask that is not a prefix (ones, then zeros)".into());
                }
                Self::Ip {
                    addr: addr.to_vec(),
                    mask: mask.to_vec(),
                }
            }
            GeneralName::DirectoryName(n) => {
                let normalised = rdns(n).ok_or("an attribute value that does not decode")?;
                Self::Directory(normalised, rfc4514(n))
            }
            GeneralName::OtherName(..) => Self::Other(Form::OtherName),
            GeneralName::X400Address(_) => Self::Other(Form::X400),
            GeneralName::EDIPartyName(_) => Self::Other(Form::EdiParty),
            GeneralName::RegisteredID(_) => Self::Other(Form::RegisteredId),
            GeneralName::Invalid(tag, _) => return Err(format!("an invalid name (tag {})", tag.0)),
        })
    }
}

impl std::fmt::Display for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dns(s) | Self::Uri(s) => write!(f, "{s:?}"),
            Self::Ip { addr, mask } => {
                let bits: u32 = mask.iter().map(|b| b.count_ones()).sum();
                match <[u8; 4]>::try_from(addr.as_slice()) {
                    Ok(a) => write!(f, "{}/{bits}", Ipv4Addr::from(a)),
                    Err(_) => match <[u8; 16]>::try_from(addr.as_slice()) {
                        Ok(a) => write!(f, "{}/{bits}", Ipv6Addr::from(a)),
                        Err(_) => f.write_str("?"),
                    },
                }
            }
            Self::Email(EmailBase::Mailbox { local, host }) => write!(f, "\"{local}@{host}\""),
            Self::Email(EmailBase::Host(h)) => write!(f, "{h:?}"),
            Self::Email(EmailBase::Domain(d)) => write!(f, "\".{d}\""),
            Self::Directory(_, text) => write!(f, "{text:?}"),
            Self::Other(form) => f.write_str(form.word()),
        }
    }
}

impl Constraints {
    /// The nameConstraints of `ca`, if it has them. Parsed strictly (x509-parser's own
    /// parser skips what it does not understand, which here would drop a constraint):
    /// `SEQUENCE { [0] subtrees?, [1] subtrees? }`, at least one of the two, each with at
    /// least one `GeneralSubtree`, which holds a base and no minimum or maximum (RFC 5280:
    /// "the minimum MUST be zero, and maximum MUST be absent"), nothing left over.
    fn of(ca: &X509Certificate<'_>) -> Result<Option<Self>, Refusal> {
        let malformed = |why: String| {
            bad_encoding(format!(
                "CA {}: nameConstraints {why}",
                rfc4514(ca.subject())
            ))
        };
        let ext = match ca.get_extension_unique(&OID_X509_EXT_NAME_CONSTRAINTS) {
            Ok(Some(ext)) => ext,
            Ok(None) => return Ok(None),
            Err(e) => return Err(malformed(e.to_string())),
        };
        if !matches!(ext.parsed_extension(), ParsedExtension::NameConstraints(_)) {
            return Err(malformed("does not parse".into()));
        }
        let (rest, seq) = Any::from_der(ext.value).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() || !is(&seq, Class::Universal, Tag::Sequence.0, true) {
            return Err(malformed("is not one SEQUENCE".into()));
        }
        let mut constraints = Self::default();
        let mut input = seq.data;
        let mut seen = 0;
        for (number, into) in [
            (0, &mut constraints.permitted),
            (1, &mut constraints.excluded),
        ] {
            let Ok((rest, tagged)) = Any::from_der(input) else {
                continue;
            };
            if !is(&tagged, Class::ContextSpecific, number, true) {
                continue;
            }
            input = rest;
            seen += 1;
            *into = subtrees(tagged.data).map_err(|why| {
                malformed(format!(
                    "{}: {why}",
                    ["permittedSubtrees", "excludedSubtrees"][number as usize]
                ))
            })?;
        }
        if !input.is_empty() {
            return Err(malformed("has data after its subtrees".into()));
        }
        if seen == 0 {
            return Err(malformed("is empty (RFC 5280: it MUST NOT be)".into()));
        }
        Ok(Some(constraints))
    }

    /// Check one certificate's names: each is refused when it falls in an excluded
    /// subtree of its form (excluded beats permitted), or when this CA permits subtrees
    /// of its form and it falls in none.
    fn admit(&self, names: &[Name], ca: &str, budget: &mut Budget) -> Result<(), Refusal> {
        for name in names {
            let form = name.value.form();
            for base in self.excluded.iter().filter(|b| b.form() == form) {
                budget.spend()?;
                if name.within(base, Subtrees::Excluded)? {
                    return Err(violation(format!(
                        "{} is in the excluded {} subtree {base} of {ca}",
                        name.what,
                        form.word()
                    )));
                }
            }
            let mut permitted = self
                .permitted
                .iter()
                .filter(|b| b.form() == form)
                .peekable();
            if permitted.peek().is_none() {
                continue;
            }
            let mut inside = false;
            for base in permitted {
                budget.spend()?;
                if name.within(base, Subtrees::Permitted)? {
                    inside = true;
                    break;
                }
            }
            if !inside {
                let list: Vec<String> = self
                    .permitted
                    .iter()
                    .filter(|b| b.form() == form)
                    .map(ToString::to_string)
                    .collect();
                return Err(violation(format!(
                    "{} is outside the permitted {} subtrees [{}] of {ca}",
                    name.what,
                    form.word(),
                    list.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Whether `any` has this class, tag number and constructedness.
fn is(any: &Any<'_>, class: Class, tag: u32, constructed: bool) -> bool {
    any.class() == class && any.tag().0 == tag && any.header.is_constructed() == constructed
}

/// `GeneralSubtrees ::= SEQUENCE SIZE (1..MAX) OF GeneralSubtree`, strictly.
fn subtrees(mut input: &[u8]) -> Result<Vec<Base>, String> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (rest, subtree) = Any::from_der(input).map_err(|e| e.to_string())?;
        input = rest;
        if !is(&subtree, Class::Universal, Tag::Sequence.0, true) {
            return Err("a subtree is not a SEQUENCE".into());
        }
        let (rest, base) = Any::from_der(subtree.data).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("a subtree has a minimum or maximum (RFC 5280: it MUST NOT)".into());
        }
        let form = Form::of_tag(base.tag().0)
            .filter(|f| is(&base, Class::ContextSpecific, base.tag().0, f.constructed()))
            .ok_or_else(|| format!("a subtree's base has an unknown tag {}", base.tag().0))?;
        let name = GeneralName::try_from(base).map_err(|e| e.to_string())?;
        out.push(Base::parse(&name).map_err(|why| format!("a {} subtree: {why}", form.word()))?);
    }
    if out.is_empty() {
        return Err("no subtree (RFC 5280: at least one)".into());
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Subtrees {
    Permitted,
    Excluded,
}

/// One name of a certificate, as name constraints see it.
#[derive(Debug)]
struct Name {
    /// For the detail: "DNS SAN \"a.example\"", "subject CN \"a.example\"", …
    what: String,
    value: Value,
}

#[derive(Debug)]
enum Value {
    /// As presented (may be a wildcard, may not be a DNS name at all).
    Dns(String),
    Ip(Vec<u8>),
    /// `None` for a subject emailAddress that is not an IA5String (RFC 5280's type).
    Email(Option<String>),
    Uri(String),
    /// `None` when an attribute value does not decode.
    Directory(Option<Vec<Rdn>>),
    Other(Form),
}

impl Value {
    fn form(&self) -> Form {
        match self {
            Self::Dns(_) => Form::Dns,
            Self::Ip(_) => Form::Ip,
            Self::Email(_) => Form::Email,
            Self::Uri(_) => Form::Uri,
            Self::Directory(_) => Form::Directory,
            Self::Other(f) => *f,
        }
    }
}

impl Name {
    /// Whether this name is inside `base` (of the same form). A name that cannot be
    /// compared is a violation in either list: fail closed.
    fn within(&self, base: &Base, subtrees: Subtrees) -> Result<bool, Refusal> {
        let unusable = |why: &str| violation(format!("{} {why}", self.what));
        Ok(match (&self.value, base) {
            (Value::Dns(name), Base::Dns(base)) => {
                let name = dns_name(name).ok_or_else(|| {
                    unusable("is not a DNS name, so DNS name constraints cannot be checked")
                })?;
                dns_within(&name, base, subtrees)
            }
            (Value::Ip(ip), Base::Ip { addr, mask }) => ip_within(ip, addr, mask),
            (Value::Email(email), Base::Email(base)) => {
                let email = email.as_deref().ok_or_else(|| {
                    unusable("is not an IA5String, so email name constraints cannot be checked")
                })?;
                let (local, host) = mailbox(email).ok_or_else(|| {
                    unusable("is not a mailbox, so email name constraints cannot be checked")
                })?;
                // A quoted or escaped local part ("eve"@example.com is eve@example.com
                // to a mail system) cannot be compared with a mailbox subtree.
                if matches!(base, EmailBase::Mailbox { .. })
                    && (local.contains('"') || local.contains('\\'))
                {
                    return Err(unusable(
                        "has a quoted local part, so email mailbox constraints cannot be checked",
                    ));
                }
                email_within(local, &host, base, subtrees)
            }
            (Value::Uri(uri), Base::Uri(base)) => {
                let host = uri_host(uri).ok_or_else(|| {
                    unusable(
                        "has no host aop reads (scheme://host[:port][/…], no userinfo), so \
                         URI name constraints cannot be checked",
                    )
                })?;
                uri_within(&host, base)
            }
            (Value::Directory(name), Base::Directory(base, _)) => {
                let name = name.as_ref().ok_or_else(|| {
                    unusable(
                        "has a value that does not decode, so directoryName name constraints \
                         cannot be checked",
                    )
                })?;
                base.len() <= name.len() && name[..base.len()] == base[..]
            }
            (Value::Other(form), Base::Other(_)) => {
                return Err(unusable(&format!(
                    "is under a name constraint on {} names, which aop does not process",
                    form.word()
                )));
            }
            // admit() compares only names and subtrees of one form.
            _ => false,
        })
    }
}

/// The names of `cert` that name constraints apply to: its SANs, its subject (when not
/// empty) as a directoryName, its subject emailAddress attributes as email names, and,
/// for the client's certificate when it has no DNS SAN, each subject CN that looks like a
/// DNS name ([`looks_like_dns`]) and either has a dot (OpenSSL's rule) or is one
/// `allow_san` could match (the certificate has no subjectAltName extension at all).
fn names_of(cert: &X509Certificate<'_>, is_leaf: bool, who: &str) -> Result<Vec<Name>, Refusal> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad_encoding(format!("{who}: subjectAltName: {e}")))?;
    let mut names = Vec::new();
    for general in san.iter().flat_map(|s| &s.value.general_names) {
        let (what, value) = match general {
            GeneralName::DNSName(s) => (format!("DNS SAN {s:?}"), Value::Dns((*s).to_owned())),
            GeneralName::IPAddress(b) => {
                if !matches!(b.len(), 4 | 16) {
                    return Err(bad_encoding(format!(
                        "{who}: an IP SAN of {} bytes",
                        b.len()
                    )));
                }
                (format!("IP SAN {}", ip_text(b)), Value::Ip(b.to_vec()))
            }
            GeneralName::RFC822Name(s) => (
                format!("email SAN {s:?}"),
                Value::Email(Some((*s).to_owned())),
            ),
            GeneralName::URI(s) => (format!("URI SAN {s:?}"), Value::Uri((*s).to_owned())),
            GeneralName::DirectoryName(n) => (
                format!("directoryName SAN {}", rfc4514(n)),
                Value::Directory(rdns(n)),
            ),
            GeneralName::OtherName(..) => {
                ("an otherName SAN".into(), Value::Other(Form::OtherName))
            }
            GeneralName::X400Address(_) => ("an x400Address SAN".into(), Value::Other(Form::X400)),
            GeneralName::EDIPartyName(_) => {
                ("an ediPartyName SAN".into(), Value::Other(Form::EdiParty))
            }
            GeneralName::RegisteredID(_) => (
                "a registeredID SAN".into(),
                Value::Other(Form::RegisteredId),
            ),
            GeneralName::Invalid(tag, _) => {
                return Err(bad_encoding(format!(
                    "{who}: a subjectAltName entry that does not parse (tag {})",
                    tag.0
                )));
            }
        };
        names.push(Name {
            what: format!("{what} of {who}"),
            value,
        });
    }
    let subject = cert.subject();
    if subject.iter().next().is_some() {
        names.push(Name {
            what: format!("subject {} of {who}", rfc4514(subject)),
            value: Value::Directory(rdns(subject)),
        });
    }
    for email in subject.iter_email() {
        let value = (email.attr_value().tag() == Tag::Ia5String)
            .then(|| text(email))
            .flatten();
        names.push(Name {
            what: format!(
                "subject emailAddress {:?} of {who}",
                value.as_deref().unwrap_or("?")
            ),
            value: Value::Email(value),
        });
    }
    let has_dns_san = names.iter().any(|n| matches!(n.value, Value::Dns(_)));
    let has_san_extension = san.is_some();
    if is_leaf && !has_dns_san {
        for cn in subject.iter_common_name() {
            // A CN that does not decode, or holds a NUL, might be read as a DNS name by
            // someone: it cannot be checked (OpenSSL refuses it too).
            match text(cn) {
                Some(cn)
                    if looks_like_dns(&cn) && (cn.contains('.') || !has_san_extension)
                        || cn.contains('\0') =>
                {
                    names.push(Name {
                        what: format!("subject CN {cn:?} of {who}"),
                        value: Value::Dns(cn),
                    });
                }
                Some(_) => {}
                None => names.push(Name {
                    what: format!("a subject CN that does not decode, of {who}"),
                    value: Value::Dns(String::new()),
                }),
            }
        }
    }
    Ok(names)
}

// ---- DNS -----------------------------------------------------------------------------

/// Whether `s` is a DNS name: LDH labels (and `_`), as rustls validates one, without a
/// trailing dot. One label is enough. This is the test a subject CN must pass to be
/// treated as a DNS name, by name constraints and by `allow_san` alike.
pub(crate) fn looks_like_dns(s: &str) -> bool {
    !s.ends_with('.') && rustls_pki_types::DnsName::try_from(s).is_ok()
}

/// A presented DNS name, lowercase, when it is one: a DNS name, or `*.` and a DNS name
/// (a wildcard is a whole leftmost label).
fn dns_name(s: &str) -> Option<String> {
    let rest = s.strip_prefix("*.").unwrap_or(s);
    looks_like_dns(rest).then(|| s.to_ascii_lowercase())
}

/// A DNS (or URI host) constraint, lowercase, when it is one: empty, a DNS name, or `.`
/// and a DNS name.
fn dns_base(s: &str) -> Option<String> {
    let rest = s.strip_prefix('.').unwrap_or(s);
    (s.is_empty() || looks_like_dns(rest)).then(|| s.to_ascii_lowercase())
}

/// Whether the DNS name `name` (lowercase, perhaps `*.`-prefixed) is in the subtree of
/// `base` (lowercase; empty, `host` or `.domain`). `host` holds itself and its
/// subdomains, `.domain` the subdomains only (webpki and OpenSSL read it so).
///
/// A wildcard stands for every name with any one label in its place: it is inside a
/// permitted subtree only when all those names are (the literal suffix test does that:
/// `*.a.example` ends in `.example`), and inside an excluded subtree when any of them
/// is — also when the base is one of them (`*.example` against `evil.example`).
fn dns_within(name: &str, base: &str, subtrees: Subtrees) -> bool {
    if suffix_within(name, base) {
        return true;
    }
    match name.strip_prefix("*.") {
        Some(rest) if subtrees == Subtrees::Excluded => base
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        _ => false,
    }
}

/// The suffix rule shared by DNS names and URI hosts: empty holds all, `.domain` holds
/// strict subdomains, `host` holds itself and its subdomains.
fn suffix_within(name: &str, base: &str) -> bool {
    if base.is_empty() {
        return true;
    }
    if base.starts_with('.') {
        return name.len() > base.len() && name.ends_with(base);
    }
    name == base
        || name
            .strip_suffix(base)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1)
}

// ---- IP ------------------------------------------------------------------------------

/// Whether `mask` is a prefix mask: ones, then zeros.
fn is_prefix_mask(mask: &[u8]) -> bool {
    let ones: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
    mask.iter().enumerate().all(|(i, &b)| {
        let here = ones.saturating_sub(8 * i).min(8);
        u16::from(b) == (0xff00_u16 >> here) & 0xff
    })
}

/// Whether `ip` (4 or 16 bytes) is in `addr`/`mask`: same family (an IPv4 address is
/// never inside an IPv6 subtree, IPv4-mapped or not), equal under the mask.
fn ip_within(ip: &[u8], addr: &[u8], mask: &[u8]) -> bool {
    ip.len() == addr.len()
        && ip
            .iter()
            .zip(addr)
            .zip(mask)
            .all(|((i, a), m)| i & m == a & m)
}

fn ip_text(b: &[u8]) -> String {
    match (<[u8; 4]>::try_from(b), <[u8; 16]>::try_from(b)) {
        (Ok(a), _) => Ipv4Addr::from(a).to_string(),
        (_, Ok(a)) => Ipv6Addr::from(a).to_string(),
        _ => format!("of {} bytes", b.len()),
    }
}

// ---- email ---------------------------------------------------------------------------

/// `local@host` with exactly one `@` (a quoted local part holding another is read
/// differently by different verifiers: it cannot be checked), the host a DNS name,
/// lowercase.
fn mailbox(s: &str) -> Option<(&str, String)> {
    let (local, host) = s.split_once('@')?;
    (!local.is_empty() && !host.contains('@') && looks_like_dns(host))
        .then(|| (local, host.to_ascii_lowercase()))
}

fn email_base(s: &str) -> Option<EmailBase> {
    if s.contains('@') {
        let (local, host) = mailbox(s)?;
        return Some(EmailBase::Mailbox {
            local: local.to_owned(),
            host,
        });
    }
    match s.strip_prefix('.') {
        Some(d) => looks_like_dns(d).then(|| EmailBase::Domain(d.to_ascii_lowercase())),
        None => looks_like_dns(s).then(|| EmailBase::Host(s.to_ascii_lowercase())),
    }
}

/// Whether the mailbox `local@host` is in the subtree of `base`. The host compares
/// case-insensitively; the local part exactly when permitted (RFC 5280 7.5: it is
/// case-sensitive) and case-insensitively when excluded (a mail system may not
/// distinguish `Eve` from `eve`: the stricter reading in both lists).
fn email_within(local: &str, host: &str, base: &EmailBase, subtrees: Subtrees) -> bool {
    match base {
        EmailBase::Mailbox { local: l, host: h } => {
            host == h
                && match subtrees {
                    Subtrees::Permitted => local == l,
                    Subtrees::Excluded => local.eq_ignore_ascii_case(l),
                }
        }
        EmailBase::Host(h) => host == h,
        EmailBase::Domain(d) => host
            .strip_suffix(d.as_str())
            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
    }
}

// ---- URI -----------------------------------------------------------------------------

/// The host of a URI, for URI name constraints: `scheme://host[:port]`, then nothing or
/// `/` and the rest. A DNS host comes back lowercase; an IP literal (`[v6]` or dotted
/// IPv4) as its text, which no host or domain constraint holds. `None` — which no URI
/// constraint can check, so a violation — for anything else: no authority (`urn:…`,
/// `mailto:…`), an empty host, userinfo (`user@host`), a host that is neither a DNS
/// name nor an IP literal (percent escapes, a trailing dot), a port that is not digits,
/// or a `?` or `#` straight after the authority. Stricter than RFC 3986 where it would
/// take more than OpenSSL reads as the host: what both can read, they read alike.
fn uri_host(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    if !chars.next()?.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let rest = rest.strip_prefix("//")?;
    let hostport = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (inside, after) = v6.split_once(']')?;
        inside.parse::<Ipv6Addr>().ok()?;
        (
            &hostport[..inside.len() + 2],
            after
                .strip_prefix(':')
                .or_else(|| after.is_empty().then_some(""))?,
        )
    } else {
        hostport.split_once(':').unwrap_or((hostport, ""))
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return Some(host.to_owned());
    }
    looks_like_dns(host).then(|| host.to_ascii_lowercase())
}

/// Whether a URI's host is in the subtree of `base` (lowercase; `host` or `.domain`).
/// Unlike DNS, `host` holds exactly that host (RFC 5280: "the constraint MUST be
/// specified as a fully qualified domain name and MAY specify a host or a domain"):
/// `example.org` holds `spiffe://example.org/…`, not `spiffe://a.example.org/…`. An IP
/// literal is in no subtree.
fn uri_within(host: &str, base: &str) -> bool {
    if base.starts_with('.') {
        return host.len() > base.len() && host.ends_with(base);
    }
    host == base
}

// ---- directoryName -------------------------------------------------------------------

/// One RDN, normalised: its attributes (OID bytes and value), sorted, so two RDNs with
/// the same attributes in another order compare equal.
type Rdn = Vec<(Vec<u8>, Canon)>;

/// An attribute value as directoryName constraints compare it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Canon {
    /// A directory string (UTF8, Printable, IA5, Visible, T.61, BMP or Universal),
    /// decoded, then (as RFC 5280 7.1 and OpenSSL's canonical names do) trimmed, inner
    /// whitespace runs collapsed to one space, ASCII letters lowercased.
    Text(String),
    /// Anything else (a NumericString too, as OpenSSL leaves it): its tag and bytes.
    Raw(u32, Vec<u8>),
}

/// The name's RDNs, normalised; `None` when a string value does not decode.
fn rdns(name: &X509Name<'_>) -> Option<Vec<Rdn>> {
    if !name_is_whole(name) {
        return None;
    }
    name.iter()
        .map(|rdn| {
            let mut attrs = rdn
                .iter()
                .map(|a| Some((a.attr_type().as_bytes().to_vec(), canon(a)?)))
                .collect::<Option<Rdn>>()?;
            attrs.sort();
            Some(attrs)
        })
        .collect()
}

/// Whether x509-parser read all of `name`. Its Name parser stops at the first RDN it
/// cannot parse (an empty SET) and its RDN parser at the first attribute it cannot parse
/// (one without a value), silently dropping the rest, and it reads an attribute type
/// without checking that it is an OID. So the Name is walked here on its own — a
/// SEQUENCE of non-empty SETs of `SEQUENCE { OID, value }`, the OIDs DER (not empty, no
/// sub-identifier starting 0x80, the last octet without its high bit), nothing left
/// over at any level — and must hold as many RDNs and attributes as x509-parser read.
fn name_is_whole(name: &X509Name<'_>) -> bool {
    fn walk(raw: &[u8]) -> Option<(usize, usize)> {
        let (rest, seq) = Any::from_der(raw).ok()?;
        if !rest.is_empty() || !is(&seq, Class::Universal, Tag::Sequence.0, true) {
            return None;
        }
        let (mut rdns, mut attrs) = (0, 0);
        let mut input = seq.data;
        while !input.is_empty() {
            let (rest, set) = Any::from_der(input).ok()?;
            input = rest;
            if !is(&set, Class::Universal, Tag::Set.0, true) || set.data.is_empty() {
                return None;
            }
            rdns += 1;
            let mut atvs = set.data;
            while !atvs.is_empty() {
                let (rest, atv) = Any::from_der(atvs).ok()?;
                atvs = rest;
                if !is(&atv, Class::Universal, Tag::Sequence.0, true) {
                    return None;
                }
                let (rest, oid) = Any::from_der(atv.data).ok()?;
                let (rest, _value) = Any::from_der(rest).ok()?;
                let der_oid = |o: &[u8]| {
                    o.last().is_some_and(|b| b & 0x80 == 0)
                        && o.iter()
                            .enumerate()
                            .all(|(i, &b)| b != 0x80 || (i > 0 && o[i - 1] & 0x80 != 0))
                };
                if !rest.is_empty()
                    || !is(&oid, Class::Universal, Tag::Oid.0, false)
                    || !der_oid(oid.data)
                {
                    return None;
                }
                attrs += 1;
            }
        }
        Some((rdns, attrs))
    }
    let read = (
        name.iter().count(),
        name.iter().map(|rdn| rdn.iter().count()).sum(),
    );
    walk(name.as_raw()) == Some(read)
}

fn canon(attr: &AttributeTypeAndValue<'_>) -> Option<Canon> {
    let v = attr.attr_value();
    if v.tag() == Tag::NumericString {
        return Some(Canon::Raw(v.tag().0, v.data.to_vec()));
    }
    match text(attr) {
        Some(s) => Some(Canon::Text(
            // ASCII whitespace as C's isspace() has it (with the vertical tab).
            s.split(|c: char| c.is_ascii_whitespace() || c == '\x0b')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_lowercase(),
        )),
        None if is_string(v.tag()) => None,
        None => Some(Canon::Raw(v.tag().0, v.data.to_vec())),
    }
}

fn is_string(tag: Tag) -> bool {
    matches!(
        tag,
        Tag::Utf8String
            | Tag::PrintableString
            | Tag::Ia5String
            | Tag::VisibleString
            | Tag::TeletexString
            | Tag::BmpString
            | Tag::UniversalString
    )
}

/// An attribute's value as text, from any ASN.1 string type (T.61 read as Latin-1, as
/// OpenSSL does; BMP as UTF-16, Universal as UTF-32, both big-endian).
fn text(attr: &AttributeTypeAndValue<'_>) -> Option<String> {
    let v = attr.attr_value();
    let data = v.data;
    match v.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::VisibleString
        | Tag::NumericString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString if data.len() % 2 == 0 => char::decode_utf16(
            data.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        Tag::UniversalString if data.len() % 4 == 0 => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

// ---- allow_san -----------------------------------------------------------------------

/// A rule's `allow_san` entries, parsed: which client names it lets in.
///
/// - An entry without `:` is a DNS name, matched exactly and case-insensitively against
///   the DNS SANs (and the CN, when the certificate has no subjectAltName extension and
///   the CN [looks like a DNS name](looks_like_dns), so that name constraints checked it).
/// - `spiffe://td` holds every SPIFFE ID of the trust domain td (with a path: a workload);
///   `spiffe://td/a/b` exactly that ID; `spiffe://td/a/*` every ID under `/a/` (whole
///   segments: `/a/x` and `/a/x/y`, not `/a` or `/ab`). A SPIFFE entry matches only a
///   certificate with exactly one URI SAN (X.509-SVID), which is a valid SPIFFE ID.
/// - Any other entry with `:` is a URI, matched exactly against the URI SANs.
#[derive(Debug, Default)]
pub(crate) struct AllowSan {
    /// Lowercase.
    dns: Vec<String>,
    uri: Vec<String>,
    spiffe: Vec<SpiffeRule>,
}

#[derive(Debug, PartialEq, Eq)]
enum SpiffeRule {
    /// `spiffe://td`: any workload of the trust domain.
    TrustDomain(String),
    /// `spiffe://td/a/b`: that ID.
    Exact(String),
    /// `spiffe://td/a/*`: the trust domain, and the path prefix (`/a`, or empty for
    /// `spiffe://td/*`) that the ID's path must continue with `/`.
    Under(String, String),
}

/// The longest SPIFFE ID the SPIFFE specification allows, in bytes.
const SPIFFE_ID_MAX: usize = 2048;

/// A valid SPIFFE ID split into trust domain and path (empty, or `/seg/…`): the scheme
/// `spiffe://` in lowercase, a trust domain of `[a-z0-9._-]`, path segments of
/// `[A-Za-z0-9._-]` that are neither empty, `.` nor `..`; so no port, userinfo, query,
/// fragment, percent escape or trailing `/`. At most 2,048 bytes.
fn spiffe_id(s: &str) -> Result<(&str, &str), &'static str> {
    if s.len() > SPIFFE_ID_MAX {
        return Err("longer than 2048 bytes");
    }
    let rest = s
        .strip_prefix("spiffe://")
        .ok_or("the scheme is not spiffe://")?;
    let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if td.is_empty() {
        return Err("the trust domain is empty");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("the trust domain has a character other than a-z 0-9 . - _");
    }
    if !path.is_empty() {
        for segment in path[1..].split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err("the path has an empty, . or .. segment");
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return Err("the path has a character other than A-Z a-z 0-9 . - _");
            }
        }
    }
    Ok((td, path))
}

impl AllowSan {
    /// Parse a rule's entries. An entry starting `spiffe://` that is not a SPIFFE ID,
    /// a trust domain, or one followed by a path prefix and `/*`, is an error naming it;
    /// so is a SPIFFE entry whose scheme is not written in lowercase (it would never
    /// match).
    pub(crate) fn parse(entries: &[String]) -> Result<Self, String> {
        let mut allow = Self::default();
        for entry in entries {
            // An IP address would read as a DNS name (10.0.0.1) or a URI (2001:db8::1) and
            // never match an IP SAN: say so rather than allow nothing silently.
            if entry.parse::<std::net::IpAddr>().is_ok() {
                return Err(format!(
                    "allow_san entry {entry:?} is an IP address; allow_san matches DNS names, \
                     URIs and SPIFFE IDs, not IP SANs"
                ));
            }
            let Some((scheme, _)) = entry.split_once(':') else {
                allow.dns.push(entry.to_ascii_lowercase());
                continue;
            };
            if !scheme.eq_ignore_ascii_case("spiffe") {
                allow.uri.push(entry.clone());
                continue;
            }
            let bad = |why: &str| {
                format!(
                    "allow_san entry {entry:?} is not a SPIFFE ID, trust domain \
                     (spiffe://example.org) or path prefix (spiffe://example.org/edge/*): {why}"
                )
            };
            let (id, wildcard) = match entry.strip_suffix("/*") {
                Some(prefix) => (prefix, true),
                None => (entry.as_str(), false),
            };
            let (td, path) = spiffe_id(id).map_err(bad)?;
            allow.spiffe.push(match (wildcard, path.is_empty()) {
                (true, _) => SpiffeRule::Under(td.to_owned(), path.to_owned()),
                (false, true) => SpiffeRule::TrustDomain(td.to_owned()),
                (false, false) => SpiffeRule::Exact(id.to_owned()),
            });
        }
        Ok(allow)
    }

    /// Whether there are no entries (no name check).
    pub(crate) fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.uri.is_empty() && self.spiffe.is_empty()
    }

    /// Whether the certificate has a name these entries allow.
    pub(crate) fn allows(&self, info: &CertInfo) -> bool {
        // The CN counts only when there is no subjectAltName extension at all, and only
        // as a DNS name.
        if !info.has_san_extension {
            return info.common_name.as_deref().is_some_and(|cn| {
                looks_like_dns(cn) && self.dns.contains(&cn.to_ascii_lowercase())
            });
        }
        if info
            .san
            .dns
            .iter()
            .any(|d| self.dns.contains(&d.to_ascii_lowercase()))
            || info.san.uri.iter().any(|u| self.uri.contains(u))
        {
            return true;
        }
        // An X.509-SVID has exactly one URI SAN, its SPIFFE ID.
        let [uri] = info.san.uri.as_slice() else {
            return false;
        };
        let Ok((td, path)) = spiffe_id(uri) else {
            return false;
        };
        self.spiffe.iter().any(|rule| match rule {
            SpiffeRule::TrustDomain(t) => t == td && !path.is_empty(),
            SpiffeRule::Exact(id) => id == uri,
            SpiffeRule::Under(t, prefix) => {
                t == td
                    && path
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
            }
        })
    }
}

#[cfg(test)]
mod tests;
