//! The command line, as clap derive types. Help text comes from the doc comments; every
//! command has an example in its long help. Flags and exit codes follow the command-line
//! contract in DESIGN.md.

use std::path::PathBuf;

use aop_pki::KeyType;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes: 0 success; 1 the operation was refused (a target file exists without --force, \
or a check failed); 2 usage error or unusable input (the message names the file and what \
is wrong with it).";

/// Issue, inspect and check the certificates of authenticated origin pulls (mTLS from a
/// CDN edge to its origins).
#[derive(Debug, Parser)]
#[command(name = "certtool", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    #[command(flatten)]
    _generate: crate::generate::Flag,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create and manage certificate authorities.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Issue certificates from a CA made by `certtool ca create`.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// Show what certificate files hold: names, usages, validity, pins.
    #[command(long_about = "\
Show what certificate files hold: subject, issuer, serial, SANs, key usage, extended key \
usage, CA flag and path length, key and signature algorithms, validity and days left, the \
certificate pin (SHA-256 of the DER) and the SPKI pin (SHA-256 of the public key, which \
survives re-issue with the same key). Reads PEM (bundles included) and DER.

Example:
  certtool inspect testdata/cloudflare/authenticated_origin_pull_ca.pem
  certtool inspect --json edge/cert.pem | jq -r '.files[0].certificates[0].sha256'",
        after_help = EXIT_CODES)]
    Inspect(InspectArgs),
    /// Check a client chain offline and print the verdict the origin would log.
    #[command(long_about = "\
Check a client certificate chain offline, with the same code the origin runs during the \
handshake (aop-verify's Trust::check), and print the verdict it would log: SUCCESS, \
FAILED:<reason> or NONE. The chain file holds the client certificate first, then any \
intermediates. Trust anchors must be valid at the time of the check: an expired CA \
verifies nothing. Pins and --allow-san narrow trust; they never replace the chain check.

Exit codes: 0 SUCCESS; 1 FAILED or NONE; 2 usage error or unreadable input.

Example:
  certtool verify --trust pki/ca/ca.pem --chain pki/edge/cert.pem --sni example.com
  certtool verify --trust ca.pem --chain edge.pem --at 2030-01-01T00:00:00Z --json")]
    Verify(VerifyArgs),
    /// Certificate revocation lists.
    #[command(subcommand)]
    Crl(CrlCommand),
    /// The curl --resolve negative test: does the origin let this client in?
    #[command(long_about = "\
Connect straight to an origin's address, as `curl --resolve HOST:PORT:ADDR` does (SNI and \
the server-certificate check use HOST), optionally presenting a client certificate, and \
say in words what happened and what proves it: the TLS alert the origin refused with, the \
HTTP status it answered, and the verdict where the origin exposes it (X-Client-Verify). \
Exit 0 iff the expectation held for every URL.

--expect reject without --cert is the negative test every origin behind a CDN should pass: \
if the origin serves a client with no certificate, its back door is open. \
--expect accept with the edge's --cert/--key proves the edge still gets in.

Content served means open: any 2xx/3xx is OPEN for --expect reject, whatever its headers \
(X-Client-Verify: NONE) or body say. Refusals: a TLS alert after the origin asked for a \
certificate (aop-verify, rustls, OpenSSL), a close before the origin finished a handshake \
in which it asked for one (TLS 1.2), nginx's 400 certificate pages (\"No required SSL \
certificate was sent\", \"The SSL certificate error\"), 401, 403, 421, 495, 496. \
--expect accept holds on a 2xx/3xx whose X-Client-Verify, if any, is SUCCESS (or NONE when \
no certificate was sent). Anything else (other statuses, a close without a reply, silence, \
an unreachable origin) proves nothing either way: exit 1. The table is in the README.

Exit codes: 0 every expectation held; 1 one did not, or the result was inconclusive; 2 \
usage error or unreadable input.

Example:
  certtool probe https://example.com/ --resolve example.com:443:203.0.113.7 \\
      --cacert origin_ca_rsa_root_2019.pem --expect reject
  certtool probe https://example.com/ --resolve example.com:443:203.0.113.7 \\
      --cacert origin-ca.pem --cert edge/cert.pem --key edge/key.pem --expect accept --json")]
    Probe(ProbeArgs),
    /// Every certificate under some paths and at some endpoints: what, where, when it expires.
    #[command(long_about = "\
List every certificate found in files and directories (PEM and DER, bundles; walked \
recursively) and presented by live endpoints (--probe), one row per distinct certificate \
(by SHA-256) with every place it was found: role, subject, issuer, certificate and SPKI \
pins, expiry, days left and status: ok, renew-due (past 2/3 of its lifetime), expiring \
(within --warn-days), expired, not-yet-valid; unreadable files are listed with why. \
Private keys are never printed: each is paired with its certificate by public key. \
Cloudflare's origin-pull and Origin CA certificates are recognised by fingerprint. \
Problems flagged: a leaf whose issuer is nowhere in the inventory, a CA that expires \
before a leaf it signed, a key without its certificate (or a leaf without its key), \
certificates that share a key, and aop-origin configs that pin a certificate where an \
SPKI pin would survive re-issue.

Exit codes: 0 all ok; 1 something expiring or due for renewal; 2 something expired, not \
yet valid or unreadable (and usage errors).

Example:
  certtool inventory /etc/aop /etc/nginx/certs --warn-days 45
  certtool inventory pki/ --probe https://example.com/ --resolve example.com:443:203.0.113.7 --json")]
    Inventory(InventoryArgs),
    /// Rotate the edge's client certificate in the safe order: stage, activate, retire.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Cloudflare API helpers.
    #[command(subcommand)]
    Cloudflare(CloudflareCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CloudflareCommand {
    /// Write the JSON body Cloudflare's API takes to upload an origin-pull certificate.
    #[command(long_about = "\
Write {\"certificate\": PEM, \"private_key\": PEM}, the body Cloudflare's API takes to upload \
a zone-level or per-hostname authenticated-origin-pull client certificate. The key is \
checked against the certificate; the file is written 0600, atomically, never over an \
existing file without --force.

Example:
  certtool cloudflare payload --cert rot/edge/cert.pem --key rot/edge/key.pem --out upload.json
  curl -X POST https://api.cloudflare.com/client/v4/zones/$ZONE/origin_tls_client_auth \\
       -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' --data @upload.json",
        after_help = EXIT_CODES)]
    Payload(PayloadArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PayloadArgs {
    /// The client certificate (with its chain).
    #[arg(long)]
    pub(crate) cert: PathBuf,
    /// Its private key.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Where to write the JSON (0600).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub(crate) force: bool,
}

const ROTATE_ORDER: &str = "\
The safe order: `stage` issues the next certificate and makes DIR/trust.pem hold the current \
and the next CA (reload the origins); `activate` checks that every --probe origin accepts \
the next certificate, then switches DIR/edge to it (reload the edges); `retire` drops the old \
CA from DIR/trust.pem. `status` says where you are; `rollback` undoes the last step. Every \
write is atomic; a step killed part way is completed by running it again, or undone by \
`rollback`.";

const ROTATE_ACTIVATE: &str = "\
The safe order: `stage`, reload the origins, `activate`, reload the edges, `retire`.

`activate` probes every origin (--probe URL, and the lines of --origins FILE: one `URL \
[HOST:PORT:ADDR]` a line, the pin being curl --resolve's for that line only, `#` comments) \
presenting the next certificate, --concurrency at once (default 256), each under its own \
--timeout. Only when every origin served it (HTTP 2xx/3xx, X-Client-Verify absent or \
SUCCESS) does DIR/edge switch to it. Otherwise it prints a table of the origins that did \
not (the URL, the address tried, what happened: the TLS alert such as unknown_ca, the \
HTTP status, the connect error or timeout), exits 1 and changes nothing. A malformed \
--origins line is `FILE:LINE: …`, exit 2, and nothing is probed.

Exit codes: 0 activated (or already); 1 refused (an origin did not accept, or the step \
cannot be taken now); 2 usage error or unreadable input.";

#[derive(Debug, Subcommand)]
pub(crate) enum RotateCommand {
    /// Start: the first edge certificate (DIR/edge/), the origins' trust (DIR/trust.pem).
    #[command(long_about = ROTATE_ORDER, after_help = "Example:\n  certtool rotate init --dir rot --ca pki/edge-ca --cn edge.example.net --days 90")]
    Init(RotateInitArgs),
    /// Issue the next certificate; trust.pem becomes current + next.
    #[command(long_about = ROTATE_ORDER, after_help = "Example:\n  certtool rotate stage --dir rot [--new-ca pki/edge-ca-2027]")]
    Stage(RotateStageArgs),
    /// Switch the edge to the next certificate, once every origin accepts it.
    #[command(long_about = ROTATE_ACTIVATE, after_help = "Example:\n  certtool rotate activate --dir rot --probe https://example.com/ --resolve example.com:443:203.0.113.7 --cacert origin-ca.pem\n  certtool rotate activate --dir rot --origins origins.txt --cacert origin-ca.pem --concurrency 256 --json")]
    Activate(RotateActivateArgs),
    /// Drop the old certificate's CA from trust.pem.
    #[command(long_about = ROTATE_ORDER, after_help = "Example:\n  certtool rotate retire --dir rot")]
    Retire(RotateDirArgs),
    /// Where the rotation is, each certificate's expiry, and the next step.
    #[command(long_about = ROTATE_ORDER, after_help = "Example:\n  certtool rotate status --dir rot --json")]
    Status(RotateDirArgs),
    /// Undo the last step.
    #[command(long_about = ROTATE_ORDER, after_help = "Example:\n  certtool rotate rollback --dir rot")]
    Rollback(RotateDirArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RotateDirArgs {
    /// The rotation directory.
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// Print JSON (schema in docs/json.md).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RotateInitArgs {
    #[command(flatten)]
    pub(crate) common: RotateDirArgs,
    /// The CA directory (ca.pem, ca.key) to issue from.
    #[arg(long)]
    pub(crate) ca: PathBuf,
    /// Common name of the edge certificates.
    #[arg(long)]
    pub(crate) cn: String,
    /// Days of validity of each certificate.
    #[arg(long, default_value_t = 90)]
    pub(crate) days: u32,
    #[command(flatten)]
    pub(crate) key: KeyTypeArg,
}

#[derive(Debug, Args)]
pub(crate) struct RotateStageArgs {
    #[command(flatten)]
    pub(crate) common: RotateDirArgs,
    /// Issue the next certificate from this CA directory instead of the current CA.
    #[arg(long)]
    pub(crate) new_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RotateActivateArgs {
    #[command(flatten)]
    pub(crate) common: RotateDirArgs,
    /// An origin that must accept the next certificate. Repeat for every origin.
    #[arg(long = "probe", value_name = "URL")]
    pub(crate) probes: Vec<String>,
    /// A file listing origins, one `URL [HOST:PORT:ADDR]` a line (`#` comments); with
    /// any --probe.
    #[arg(long, value_name = "FILE")]
    pub(crate) origins: Option<PathBuf>,
    /// Connect to ADDR for HOST:PORT (a pin on an --origins line wins for its line).
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub(crate) resolve: Vec<aop_edge::ResolveEntry>,
    /// Roots the origins' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Vec<PathBuf>,
    /// Origins probed at once (1: one after another), each under its own timeouts.
    #[arg(
        long,
        visible_alias = "jobs",
        value_name = "N",
        default_value_t = aop_edge::fleet::DEFAULT_CONCURRENCY,
        value_parser = concurrency,
    )]
    pub(crate) concurrency: usize,
    /// Seconds for each origin's TCP connect, TLS handshake and reply.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub(crate) timeout: u64,
    /// Activate even if a probe fails (or none is given). You own the 525s.
    #[arg(long)]
    pub(crate) force: bool,
}

fn concurrency(s: &str) -> Result<usize, String> {
    let max = aop_edge::fleet::MAX_CONCURRENCY;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a number from 1 to {max}")),
    }
}

#[derive(Debug, Args)]
pub(crate) struct InventoryArgs {
    /// Files and directories to inventory.
    #[arg(value_name = "PATH", required_unless_present = "probes")]
    pub(crate) paths: Vec<PathBuf>,
    /// Also record the chain a live endpoint presents. Repeat for several.
    #[arg(long = "probe", value_name = "URL")]
    pub(crate) probes: Vec<String>,
    /// Connect to ADDR for HOST:PORT (like curl --resolve).
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub(crate) resolve: Vec<aop_edge::ResolveEntry>,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    /// Days before expiry that count as expiring.
    #[arg(long, default_value_t = 30)]
    pub(crate) warn_days: i64,
    /// Threads reading files (default: the machine's parallelism).
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// Endpoints (--probe) probed at once, each under its own timeouts.
    #[arg(
        long,
        value_name = "N",
        default_value_t = aop_edge::fleet::DEFAULT_CONCURRENCY,
        value_parser = concurrency,
    )]
    pub(crate) concurrency: usize,
    /// Compute statuses as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub(crate) at: Option<time::OffsetDateTime>,
    /// Print JSON (schema in docs/json.md).
    #[arg(long)]
    pub(crate) json: bool,
}

/// What the probe expects of the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Expect {
    /// The origin serves this client.
    Accept,
    /// The origin refuses this client.
    Reject,
}

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// https:// URLs to probe (several probe several origins).
    #[arg(required = true, value_name = "URL")]
    pub(crate) urls: Vec<String>,
    /// Connect to ADDR for HOST:PORT (like curl --resolve). Repeat for several origins.
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub(crate) resolve: Vec<aop_edge::ResolveEntry>,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
    /// Roots the origin's certificate must chain to. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Vec<PathBuf>,
    /// Do not verify the origin's certificate (says so in the output). Only to learn
    /// whether the origin demands a client certificate when you lack its CA.
    #[arg(long, conflicts_with = "cacert")]
    pub(crate) insecure: bool,
    /// accept: the origin must serve this client; reject: it must refuse it.
    #[arg(long, value_enum)]
    pub(crate) expect: Expect,
    /// Seconds for each of TCP connect, TLS handshake and the reply.
    #[arg(long, default_value_t = 10)]
    pub(crate) timeout: u64,
    /// Print JSON (schema in docs/json.md).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CrlCommand {
    /// Issue a CRL from a CA, revoking the given certificates.
    #[command(long_about = "\
Issue a CRL signed by the CA (--ca DIR holding ca.pem and ca.key, or --ca FILE --ca-key \
FILE) that revokes each CERT (each must have been issued by that CA). The CRL number is the issue time, so a newer CRL always has \
a larger number. Written atomically, 0644; never over an existing file without --force.

Example:
  certtool crl create --ca pki/ca --revoke pki/old-edge/cert.pem --days 7 --out pki/ca/crl.pem",
        after_help = EXIT_CODES)]
    Create(CrlCreateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Trust anchors (PEM or DER, bundles allowed). Repeat to trust several.
    #[arg(long, required = true, value_name = "FILE")]
    pub(crate) trust: Vec<PathBuf>,
    /// The client's chain: its certificate first, then intermediates.
    #[arg(long, value_name = "FILE")]
    pub(crate) chain: PathBuf,
    /// The SNI the connection would carry (recorded in the verdict).
    #[arg(long, value_name = "H")]
    pub(crate) sni: Option<String>,
    /// Certificate pin: SHA-256 of the client certificate's DER (hex, colons allowed).
    #[arg(long = "pin", value_name = "SHA256")]
    pub(crate) pins: Vec<aop_pki::Sha256Fingerprint>,
    /// SPKI pin: SHA-256 of the client certificate's public key.
    #[arg(long = "spki-pin", value_name = "SHA256")]
    pub(crate) spki_pins: Vec<aop_pki::Sha256Fingerprint>,
    /// Allowed name: a DNS SAN (the CN counts only if there is no SAN), a URI SAN, or a
    /// SPIFFE ID form: spiffe://TD (any ID of that trust domain), spiffe://TD/PATH (that
    /// ID), spiffe://TD/PATH/* (any ID under PATH). Repeat for several.
    #[arg(long = "allow-san", value_name = "V")]
    pub(crate) allow_san: Vec<String>,
    /// CRL file (PEM or DER). Repeat for several.
    #[arg(long = "crl", value_name = "FILE")]
    pub(crate) crls: Vec<PathBuf>,
    /// Check as of this time instead of now (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub(crate) at: Option<time::OffsetDateTime>,
    /// The most certificates the chain may hold, the client's own included.
    #[arg(long, default_value_t = aop_verify::DEFAULT_MAX_DEPTH)]
    pub(crate) max_depth: usize,
    /// Accept a client certificate with no extendedKeyUsage extension at all, as a site
    /// with `allow_missing_eku = true` does (an EKU without clientAuth still fails).
    #[arg(long)]
    pub(crate) allow_missing_eku: bool,
    /// Print JSON (schema in docs/json.md).
    #[arg(long)]
    pub(crate) json: bool,
}

/// The issuing CA: a directory as `certtool ca create` writes it, or two files (as step
/// and openssl take them).
#[derive(Debug, Args)]
pub(crate) struct CaArgs {
    /// The issuing CA: a directory holding ca.pem and ca.key (as `certtool ca create`
    /// writes them), or the CA certificate file, with --ca-key.
    #[arg(long, value_name = "DIR|FILE")]
    pub(crate) ca: PathBuf,
    /// The CA's private key, when --ca names the certificate file.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CrlCreateArgs {
    #[command(flatten)]
    pub(crate) ca: CaArgs,
    /// A certificate to revoke. Repeat for several; none gives an empty CRL.
    #[arg(long = "revoke", value_name = "CERT")]
    pub(crate) revoke: Vec<PathBuf>,
    /// Days until the CRL's nextUpdate (an expired CRL fails every certificate it covers).
    #[arg(long, default_value_t = 7)]
    pub(crate) days: u32,
    /// Where to write the CRL (PEM).
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) write: WriteArgs,
}

fn parse_rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time ({e}); example: 2030-01-01T00:00:00Z"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a self-signed CA: DIR/ca.pem and DIR/ca.key (0600).
    #[command(long_about = "\
Create a self-signed CA for origin pulls: DIR/ca.pem (the certificate origins will trust) \
and DIR/ca.key (its private key, mode 0600). The CA has basicConstraints CA with a path \
length (0 unless --path-len), key usage keyCertSign + cRLSign, a subject key identifier \
and a random 159-bit serial. Existing files are never overwritten without --force.

Example:
  certtool ca create --name 'example.com origin-pull CA' --out pki/ca",
        after_help = EXIT_CODES)]
    Create(CaCreateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CaCreateArgs {
    /// Common name of the CA.
    #[arg(long)]
    pub(crate) name: String,
    /// Directory to write ca.pem and ca.key into (created 0700 if missing).
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) key: KeyTypeArg,
    /// Days of validity.
    #[arg(long, default_value_t = 3650)]
    pub(crate) days: u32,
    /// How many intermediate CAs may sit below this one.
    #[arg(long, default_value_t = 0)]
    pub(crate) path_len: u8,
    #[command(flatten)]
    pub(crate) write: WriteArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum IssueCommand {
    /// Issue an edge (client) certificate: EKU clientAuth.
    #[command(long_about = "\
Issue the certificate an edge presents to origins: EKU clientAuth only, key usage \
digitalSignature, subject CN=NAME, optional SANs (DNS names, URIs such as spiffe://…, or IP \
addresses). Writes DIR/cert.pem (the certificate, then its CA) and DIR/key.pem (0600).

Example:
  certtool issue client --ca pki/ca --cn edge.example.net --san spiffe://example.net/edge --days 90 --out pki/edge
  certtool issue client --ca pki/ca/ca.pem --ca-key pki/ca/ca.key --cn edge.example.net --out pki/edge",
        after_help = EXIT_CODES)]
    Client(IssueClientArgs),
    /// Issue an origin (server) certificate, as Cloudflare's Origin CA does: EKU serverAuth.
    #[command(long_about = "\
Issue an origin's server certificate in the style of Cloudflare's Origin CA: EKU \
serverAuth only, every --hostname a DNS SAN (wildcards such as *.example.com allowed; the \
first is also the CN), and a validity of 7, 30, 90, 365, 730, 1095 or 5475 days. Writes \
DIR/cert.pem (the certificate, then its CA) and DIR/key.pem (0600).

Example:
  certtool issue origin --ca pki/origin-ca --hostname example.com --hostname '*.example.com' --days 365 --out pki/origin",
        after_help = EXIT_CODES)]
    Origin(IssueOriginArgs),
}

#[derive(Debug, Args)]
pub(crate) struct IssueClientArgs {
    #[command(flatten)]
    pub(crate) ca: CaArgs,
    /// Common name of the edge certificate.
    #[arg(long)]
    pub(crate) cn: String,
    /// A subject alternative name: DNS name, URI, or IP address. Repeat for several.
    #[arg(long = "san", value_name = "DNS|URI|IP")]
    pub(crate) sans: Vec<String>,
    /// Days of validity (must end before the CA does).
    #[arg(long, default_value_t = 365)]
    pub(crate) days: u32,
    #[command(flatten)]
    pub(crate) to: IssuedArgs,
}

#[derive(Debug, Args)]
pub(crate) struct IssueOriginArgs {
    #[command(flatten)]
    pub(crate) ca: CaArgs,
    /// A hostname the origin serves (exact, or *.zone). Repeat for several.
    #[arg(long = "hostname", value_name = "H", required = true)]
    pub(crate) hostnames: Vec<String>,
    /// Days of validity: 7, 30, 90, 365, 730, 1095 or 5475.
    #[arg(long, default_value_t = 365)]
    pub(crate) days: u32,
    #[command(flatten)]
    pub(crate) to: IssuedArgs,
}

/// What every `issue` subcommand takes after what it issues: the new key's type and
/// where the certificate and key go.
#[derive(Debug, Args)]
pub(crate) struct IssuedArgs {
    #[command(flatten)]
    pub(crate) key: KeyTypeArg,
    /// Directory to write cert.pem and key.pem into (created 0700 if missing).
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) write: WriteArgs,
}

#[derive(Debug, Args)]
pub(crate) struct KeyTypeArg {
    /// Key algorithm of the new key.
    #[arg(
        long = "key-type",
        default_value = "ecdsa-p256",
        value_parser = PossibleValuesParser::new(KeyType::ALL.map(KeyType::name))
            .map(|s| s.parse::<KeyType>().expect("listed as a possible value")),
    )]
    pub(crate) key_type: KeyType,
}

#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// Replace existing files (atomically). Without it, nothing is overwritten.
    #[arg(long)]
    pub(crate) force: bool,
    /// Print the result as JSON (schema in docs/json.md).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Certificate files: PEM (bundles too) or DER.
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Print JSON (schema in docs/json.md).
    #[arg(long)]
    pub(crate) json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}

/// `--cert FILE --key FILE`: a client certificate to present.
#[derive(Debug, Args)]
pub(crate) struct IdentityArgs {
    /// Client certificate to present (with its chain).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
}

impl IdentityArgs {
    /// The identity, if both files were given.
    pub(crate) fn spec(&self) -> Option<aop_edge::IdentitySpec> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some(aop_edge::IdentitySpec::new(c, k)),
            _ => None,
        }
    }
}
