//! `certtool inventory` over 10,000 certificate files: the real binary, timed against
//! baselines measured in the same run (one thread, and merely reading the files).
//!
//! `cargo bench -p certtool --bench inventory` prints a table and a last line of ratios.
//! Bounded: it makes its files once and runs each variant three times.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: it panics on setup failure and prints its table

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aop_pki::{CaRequest, ClientRequest, KeyType};

const FILES: usize = 10_000;
const DISTINCT: usize = 2_000;
const RUNS: usize = 3;

fn make_tree(root: &Path) -> Vec<PathBuf> {
    let now = time::OffsetDateTime::now_utc();
    let ca_dir = root.join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    let ca = CaRequest::new("bench CA").create_in(&ca_dir, now).unwrap();
    let pems: Vec<String> = (0..DISTINCT)
        .map(|i| {
            let req = ClientRequest {
                common_name: format!("edge-{i}"),
                sans: vec![],
                days: 30 + (i % 700) as u32,
                key_type: KeyType::EcdsaP256,
            };
            ca.issue_client(&req, now).unwrap().cert_pem()
        })
        .collect();
    let mut files = Vec::with_capacity(FILES);
    for i in 0..FILES {
        let dir = root.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("cert-{i}.pem"));
        std::fs::write(&path, &pems[i % DISTINCT]).unwrap();
        files.push(path);
    }
    files
}

fn best<F: FnMut()>(mut f: F) -> Duration {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let files = make_tree(tmp.path());
    println!(
        "made {FILES} files ({DISTINCT} distinct certificates, each leaf + CA) in {:.1?}",
        t.elapsed()
    );
    let certtool = env!("CARGO_BIN_EXE_certtool");
    let jobs = std::thread::available_parallelism().map_or(2, usize::from);

    let read = best(|| {
        let mut n = 0;
        for f in &files {
            n += std::fs::read(f).unwrap().len();
        }
        assert!(n > 0);
    });
    let inventory = |j: usize| {
        best(|| {
            let o = Command::new(certtool)
                .args([
                    "inventory",
                    tmp.path().to_str().unwrap(),
                    "--json",
                    "--jobs",
                    &j.to_string(),
                ])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            // One row per distinct certificate (+ the CA), every file read.
            assert!(
                out.contains(&format!("\"certificates\": {}", DISTINCT + 1)),
                "unexpected output"
            );
        })
    };
    let one = inventory(1);
    let all = inventory(jobs);

    let rate = |d: Duration| FILES as f64 / d.as_secs_f64();
    println!("{:<34} {:>10} {:>14}", "variant", "best of 3", "files/s");
    println!(
        "{:<34} {:>10.1?} {:>14.0}",
        "read the files (baseline)",
        read,
        rate(read)
    );
    println!(
        "{:<34} {:>10.1?} {:>14.0}",
        "certtool inventory --jobs 1",
        one,
        rate(one)
    );
    println!(
        "{:<34} {:>10.1?} {:>14.0}",
        format!("certtool inventory --jobs {jobs}"),
        all,
        rate(all)
    );
    println!(
        "RATIO inventory jobs1/jobs{jobs}={:.2} inventory/read={:.1} files_per_s={:.0}",
        one.as_secs_f64() / all.as_secs_f64(),
        all.as_secs_f64() / read.as_secs_f64(),
        rate(all)
    );
}
