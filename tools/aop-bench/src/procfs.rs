//! A server's CPU time and memory, from /proc (Linux).

use std::process::Command;

/// Clock ticks per second for `/proc/<pid>/stat`.
pub(crate) fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// `pid` and its direct children (nginx's workers).
pub(crate) fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // Field 4 of stat (index 1 after the name) is the parent pid.
            if stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

/// User + system CPU seconds used so far by `pid` and its children.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let tck = clk_tck();
    family(pid)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            // utime and stime are fields 14 and 15: indexes 11 and 12 after the name.
            let u: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let s: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (u + s) / tck
        })
        .sum()
}

/// Resident memory (KiB) of `pid` and its children.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    family(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}
