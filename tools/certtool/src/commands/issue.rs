//! `ca create`, `issue client`, `issue origin`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aop_pki::{Ca, CaRequest, CertInfo, ClientRequest, Issued, OriginRequest, Overwrite};
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::{
    CaArgs, CaCreateArgs, CrlCreateArgs, IssueClientArgs, IssueOriginArgs, IssuedArgs, WriteArgs,
};
use crate::commands::UsageError;
use crate::output::{Report, cert_block, emit};

/// What an issuing command did. JSON: see docs/json.md, "issue".
#[derive(Serialize)]
struct IssueReport {
    /// `ca create`, `issue client` or `issue origin`.
    command: &'static str,
    /// The files written.
    files: Vec<WrittenFile>,
    /// The new certificate.
    certificate: CertInfo,
}

#[derive(Serialize)]
struct WrittenFile {
    path: PathBuf,
    /// `certificate` (with its chain after it) or `private-key`.
    contents: &'static str,
    /// Octal permission bits.
    mode: &'static str,
}

impl Report for IssueReport {
    fn human(&self, out: &mut String) {
        out.push_str(&format!("{}: wrote\n", self.command));
        for f in &self.files {
            out.push_str(&format!(
                "  {}  ({}, {})\n",
                f.path.display(),
                f.contents,
                f.mode
            ));
        }
        out.push('\n');
        cert_block(&self.certificate, out);
    }
}

pub(crate) fn ca_create(args: &CaCreateArgs, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let req = CaRequest {
        name: args.name.clone(),
        key_type: args.key.key_type,
        days: args.days,
        path_len: args.path_len,
    };
    let issued = aop_pki::create_ca(&req, now)?;
    finish(
        "ca create",
        &issued,
        &args.out,
        (Ca::CERT_FILE, Ca::KEY_FILE),
        &args.write,
        now,
    )
}

pub(crate) fn client(args: &IssueClientArgs, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let ca = load_ca(&args.ca, now)?;
    let req = ClientRequest {
        common_name: args.cn.clone(),
        sans: args.sans.clone(),
        days: args.days,
        key_type: args.to.key.key_type,
    };
    finish_leaf("issue client", &ca.issue_client(&req, now)?, &args.to, now)
}

pub(crate) fn origin(args: &IssueOriginArgs, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let ca = load_ca(&args.ca, now)?;
    let req = OriginRequest {
        hostnames: args.hostnames.clone(),
        days: args.days,
        key_type: args.to.key.key_type,
    };
    finish_leaf("issue origin", &ca.issue_origin(&req, now)?, &args.to, now)
}

/// The issuing CA from `--ca DIR` (DIR/ca.pem, DIR/ca.key) or `--ca FILE --ca-key FILE`.
/// The other two combinations are usage errors saying which form was expected.
fn load_ca(args: &CaArgs, now: OffsetDateTime) -> anyhow::Result<Ca> {
    let is_dir = args.ca.is_dir();
    match &args.ca_key {
        None if is_dir || !args.ca.exists() => Ok(Ca::load(&args.ca, now)?),
        None => Err(UsageError(format!(
            "{}: --ca names a file, so --ca-key FILE (the CA's private key) is needed; \
             or give --ca DIR holding {} and {}",
            args.ca.display(),
            Ca::CERT_FILE,
            Ca::KEY_FILE
        ))
        .into()),
        Some(_) if is_dir => Err(UsageError(format!(
            "{}: --ca names a directory (its {} is the key), so --ca-key is not expected; \
             with --ca-key, --ca must be the CA certificate file",
            args.ca.display(),
            Ca::KEY_FILE
        ))
        .into()),
        Some(key) => Ok(Ca::from_files(&args.ca, key, now)?),
    }
}

/// [`finish`] for a leaf: `cert.pem` and `key.pem` in `--out`.
fn finish_leaf(
    command: &'static str,
    issued: &Issued,
    to: &IssuedArgs,
    now: OffsetDateTime,
) -> anyhow::Result<ExitCode> {
    finish(
        command,
        issued,
        &to.out,
        ("cert.pem", "key.pem"),
        &to.write,
        now,
    )
}

fn finish(
    command: &'static str,
    issued: &Issued,
    out: &Path,
    (cert_name, key_name): (&str, &str),
    write: &WriteArgs,
    now: OffsetDateTime,
) -> anyhow::Result<ExitCode> {
    aop_pki::ensure_dir(out, true)?;
    let cert_path = out.join(cert_name);
    let key_path = out.join(key_name);
    let overwrite = if write.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    aop_pki::write_issued(issued, &cert_path, &key_path, overwrite)?;
    let report = IssueReport {
        command,
        files: vec![
            WrittenFile {
                path: cert_path,
                contents: "certificate",
                mode: "0644",
            },
            WrittenFile {
                path: key_path,
                contents: "private-key",
                mode: "0600",
            },
        ],
        certificate: issued.info(now),
    };
    emit(&report, write.json)?;
    Ok(ExitCode::SUCCESS)
}

/// What `crl create` did. JSON: see docs/json.md, "crl create".
#[derive(Serialize)]
struct CrlReport {
    command: &'static str,
    path: PathBuf,
    issuer: String,
    /// Serials (hex) of the revoked certificates.
    revoked: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    next_update: OffsetDateTime,
}

impl Report for CrlReport {
    fn human(&self, out: &mut String) {
        out.push_str(&format!(
            "crl create: wrote {} (issuer {}, next update {})\n",
            self.path.display(),
            self.issuer,
            aop_pki::rfc3339(self.next_update)
        ));
        for s in &self.revoked {
            out.push_str(&format!("  revoked serial {s}\n"));
        }
    }
}

pub(crate) fn crl_create(args: &CrlCreateArgs, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let ca = load_ca(&args.ca, now)?;
    let mut certs = Vec::with_capacity(args.revoke.len());
    for path in &args.revoke {
        let first = aop_pki::load_certificates(path)?.swap_remove(0);
        certs.push((path.as_path(), first));
    }
    let refs: Vec<_> = certs.iter().map(|(p, c)| (*p, c)).collect();
    let pem = ca.create_crl(&refs, args.days, now)?;
    let overwrite = if args.write.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    aop_pki::write_atomic(
        &args.out,
        pem.as_bytes(),
        aop_pki::FileMode::Public,
        overwrite,
    )?;
    let revoked = certs
        .iter()
        .map(|(_, c)| {
            CertInfo::from_der(c, now)
                .map(|i| i.serial)
                .unwrap_or_default()
        })
        .collect();
    let report = CrlReport {
        command: "crl create",
        path: args.out.clone(),
        issuer: ca.info().subject.clone(),
        revoked,
        next_update: now + time::Duration::days(i64::from(args.days)),
    };
    emit(&report, args.write.json)?;
    Ok(ExitCode::SUCCESS)
}
