//! `inspect FILE... [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use aop_pki::CertInfo;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::InspectArgs;
use crate::output::{Report, cert_block, emit};

/// JSON: see docs/json.md, "inspect".
#[derive(Serialize)]
struct InspectReport {
    /// The time days_left and validity were computed for.
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    /// Files that were read, in the order given.
    files: Vec<FileReport>,
    /// Files that could not be read, with the reason (also printed to stderr).
    errors: Vec<FileError>,
}

#[derive(Serialize)]
struct FileReport {
    path: PathBuf,
    certificates: Vec<CertInfo>,
}

#[derive(Serialize)]
struct FileError {
    path: PathBuf,
    error: String,
}

impl Report for InspectReport {
    fn human(&self, out: &mut String) {
        let mut first = true;
        for f in &self.files {
            let n = f.certificates.len();
            for (i, cert) in f.certificates.iter().enumerate() {
                if !first {
                    out.push('\n');
                }
                first = false;
                out.push_str(&format!("{} [{}/{n}]\n", f.path.display(), i + 1));
                cert_block(cert, out);
            }
        }
    }
}

pub(crate) fn run(args: &InspectArgs, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let mut report = InspectReport {
        at: now,
        files: Vec::new(),
        errors: Vec::new(),
    };
    for path in &args.files {
        let loaded = aop_pki::load_certificates(path).and_then(|certs| {
            certs
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    CertInfo::from_der(c, now).map_err(|detail| aop_pki::Error::BadCertificate {
                        path: path.clone(),
                        index: i + 1,
                        detail,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        });
        match loaded {
            Ok(certificates) => report.files.push(FileReport {
                path: path.clone(),
                certificates,
            }),
            Err(e) => {
                #[allow(clippy::print_stderr)] // diagnostics, one line per unreadable file
                {
                    eprintln!("certtool: {e}");
                }
                report.errors.push(FileError {
                    path: path.clone(),
                    error: e.to_string(),
                });
            }
        }
    }
    emit(&report, args.json)?;
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
