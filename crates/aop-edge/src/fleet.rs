//! Many origins at once: a bounded-concurrency runner ([`concurrently`]), the probe run
//! across a fleet with it ([`probe_all`]), and the origins file that lists a fleet
//! ([`read_origins`]).
//!
//! `certtool rotate activate` proves every origin accepts the next certificate before the
//! edge switches to it, and `certtool inventory --probe` records what each endpoint
//! presents. One origin at a time, 1,000 origins 100 ms away take 100 s; [`probe_all`]
//! keeps up to `limit` probes in flight, so the same fleet takes about
//! `ceil(1000 / limit) × 100 ms` plus the handshakes' CPU. Each probe keeps its own
//! [`Timeouts`]: one slow or silent origin holds one slot until its own timeout, never
//! the others. Results come back in input order, whatever order the origins answer in.
//!
//! Every probe holds one socket: keep `limit` well under the process's open-files limit
//! ([`MAX_CONCURRENCY`] is the most the runner takes).
//!
//! ## The origins file
//!
//! One origin a line: `URL [HOST:PORT:ADDR]`, the optional pin being `curl --resolve`'s
//! (connect to ADDR for this line's URL only, so several lines may name one hostname on
//! different addresses). `#` starts a comment (at the start of a line, or after a space);
//! blank lines are skipped. Anything else is an error naming `FILE:LINE`, and a file
//! with no origin is an error too:
//!
//! ```text
//! # the shop's origins
//! https://shop.example.com/healthz   shop.example.com:443:192.0.2.10
//! https://shop.example.com/healthz   shop.example.com:443:192.0.2.11   # the standby
//! https://api.example.com:8443/
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::task::JoinSet;

use crate::{Error, ProbeResult, Resolve, ResolveEntry, Result, Target, Timeouts, probe};

/// The default number of probes in flight: a fleet of 1,000 origins 100 ms away in four
/// rounds, with room under the usual 1,024 open files.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// The most probes [`concurrently`] keeps in flight (a larger `limit` is lowered to it).
pub const MAX_CONCURRENCY: usize = 4096;

/// The most bytes an origins file may hold (1 MiB: some 10,000 origins).
pub const MAX_ORIGINS_FILE: u64 = 1024 * 1024;

/// The longest line of an origins file, in bytes.
pub const MAX_LINE: usize = 4096;

/// One origin of a fleet: the URL to probe and, optionally, the address to connect to
/// for it (its own `--resolve`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// What to probe.
    pub target: Target,
    /// Connect here for this origin only; `None`: the shared [`Resolve`], then DNS.
    pub pin: Option<ResolveEntry>,
}

impl Origin {
    /// An origin with no pin of its own.
    pub fn new(target: Target) -> Self {
        Self { target, pin: None }
    }
}

/// Run `work` on every item with at most `limit` of them in flight (1 ≤ `limit` ≤
/// [`MAX_CONCURRENCY`]), each as its own task; the outputs in the items' order.
///
/// A panic in one task is resumed here once it is seen. Dropping the returned future
/// aborts the tasks still running.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// // The slowest item first: the outputs still come back in the items' order.
/// let delays = [30, 10, 20, 0];
/// let out = aop_edge::fleet::concurrently(delays, 2, |ms| async move {
///     tokio::time::sleep(Duration::from_millis(ms)).await;
///     ms * 2
/// })
/// .await;
/// assert_eq!(out, [60, 20, 40, 0]);
/// # }
/// ```
pub async fn concurrently<I, T, R, F, Fut>(items: I, limit: usize, mut work: F) -> Vec<R>
where
    I: IntoIterator<Item = T>,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let limit = limit.clamp(1, MAX_CONCURRENCY);
    let mut items = items.into_iter().enumerate();
    let mut done: Vec<Option<R>> = Vec::new();
    let mut running = JoinSet::new();
    loop {
        while running.len() < limit {
            let Some((i, item)) = items.next() else {
                break;
            };
            done.push(None);
            let task = work(item);
            running.spawn(async move { (i, task.await) });
        }
        match running.join_next().await {
            Some(Ok((i, out))) => done[i] = Some(out),
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: only by a runtime shutting down, which ends this future too.
            Some(Err(e)) => panic!("a task was cancelled: {e}"),
            None => break,
        }
    }
    done.into_iter()
        .map(|d| d.expect("every task reported"))
        .collect()
}

/// [`probe()`] every origin with `config`, at most `limit` at once, each under its own
/// `timeouts`; the results in the origins' order.
///
/// An origin's pin, if any, decides its address; else `resolve`, else DNS.
///
/// ```no_run
/// use std::sync::Arc;
/// use aop_edge::fleet::{self, DEFAULT_CONCURRENCY};
/// use aop_edge::{IdentitySpec, IdentityStore, Resolve, StoreSpec, Timeouts};
///
/// # async fn run() -> Result<(), aop_edge::Error> {
/// let mut spec = StoreSpec::new(["origin-ca.pem"]);
/// spec.shared = Some(IdentitySpec::new("next/cert.pem", "next/key.pem"));
/// let store = IdentityStore::load(&spec)?;
/// let config = store.select("any").expect("the shared identity").client_config().clone();
///
/// let origins = fleet::read_origins("origins.txt".as_ref())?;
/// let results = fleet::probe_all(&origins, &Resolve::default(), config, Timeouts::default(), DEFAULT_CONCURRENCY).await;
/// for r in results.iter().filter(|r| !r.observed.is_accepted()) {
///     println!("{} via {:?}: {}", r.target.url, r.addr, r.observed.word());
/// }
/// # Ok(())
/// # }
/// ```
pub async fn probe_all(
    origins: &[Origin],
    resolve: &Resolve,
    config: Arc<ClientConfig>,
    timeouts: Timeouts,
    limit: usize,
) -> Vec<ProbeResult> {
    let shared = Arc::new(resolve.clone());
    concurrently(origins.iter().cloned(), limit, move |origin| {
        let config = config.clone();
        let resolve = match origin.pin {
            Some(pin) => Arc::new(Resolve::new([pin])),
            None => shared.clone(),
        };
        async move { probe(&origin.target, &resolve, config, timeouts).await }
    })
    .await
}

/// Read an origins file (see the [module docs](self)): at most [`MAX_ORIGINS_FILE`]
/// bytes of a regular file (see [`aop_pki::read_file`]), parsed by [`parse_origins`].
pub fn read_origins(path: &Path) -> Result<Vec<Origin>> {
    let bytes = aop_pki::read_file_limited(path, MAX_ORIGINS_FILE)?;
    parse_origins(&bytes, path)
}

/// Parse the text of an origins file; `path` names it in errors.
///
/// Refused, as [`Error::OriginsFile`] naming the line: a line that is not UTF-8, has a
/// control character, is longer than [`MAX_LINE`] bytes, has more than two fields, whose
/// URL is not `https://…`, whose pin does not parse or names another HOST:PORT than the
/// URL; a line that repeats an earlier one (the same URL and pin). No origin at all is
/// an error without a line.
pub fn parse_origins(bytes: &[u8], path: &Path) -> Result<Vec<Origin>> {
    let at = |line: usize, reason: String| Error::OriginsFile {
        path: path.to_owned(),
        line: Some(line),
        reason,
    };
    let mut origins = Vec::new();
    // (host, port, path, pinned address) → the line that had it first.
    let mut seen: HashMap<(String, u16, String, Option<SocketAddr>), usize> = HashMap::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        if raw.len() > MAX_LINE {
            return Err(at(n, format!("line longer than {MAX_LINE} bytes")));
        }
        let text = std::str::from_utf8(raw).map_err(|e| {
            at(
                n,
                format!("not UTF-8 text (byte {} of the line)", e.valid_up_to() + 1),
            )
        })?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\t') {
            return Err(at(
                n,
                format!("a control character (U+{:04X})", u32::from(c)),
            ));
        }
        let fields: Vec<&str> = text
            .split_whitespace()
            .take_while(|f| !f.starts_with('#'))
            .collect();
        let (url, pin) = match fields.as_slice() {
            [] => continue,
            [url] => (*url, None),
            [url, pin] => (*url, Some(*pin)),
            more => {
                return Err(at(
                    n,
                    format!(
                        "expected `URL [HOST:PORT:ADDR]`, found {} fields",
                        more.len()
                    ),
                ));
            }
        };
        let target: Target = url.parse().map_err(|e| at(n, format!("{e}")))?;
        let pin = pin
            .map(|p| p.parse::<ResolveEntry>())
            .transpose()
            .map_err(|e| at(n, format!("{e}")))?;
        if let Some(p) = &pin
            && (p.host != target.host || p.port != target.port)
        {
            return Err(at(
                n,
                format!(
                    "the pin is for {}:{}, the URL for {}:{}",
                    p.host, p.port, target.host, target.port
                ),
            ));
        }
        let key = (
            target.host.clone(),
            target.port,
            target.path.clone(),
            pin.as_ref().map(|p| SocketAddr::new(p.addr, p.port)),
        );
        if let Some(first) = seen.insert(key, n) {
            return Err(at(n, format!("the same origin as line {first}")));
        }
        origins.push(Origin { target, pin });
    }
    if origins.is_empty() {
        return Err(Error::OriginsFile {
            path: path.to_owned(),
            line: None,
            reason: "no origins (one `URL [HOST:PORT:ADDR]` a line)".into(),
        });
    }
    Ok(origins)
}

/// Where a line of an origins file is, for messages: `FILE:LINE`.
pub(crate) fn place(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(n) => format!("{}:{n}", path.display()),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &[u8]) -> Result<Vec<Origin>> {
        parse_origins(text, Path::new("o.txt"))
    }

    fn error(text: &[u8]) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn lines_comments_and_pins() {
        let o = parse(
            b"# fleet\n\nhttps://A.example/x  a.example:443:192.0.2.1 # primary\r\n\
              https://a.example/x\ta.example:443:192.0.2.2\n  https://b.example:8443/  \n#end",
        )
        .unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].target.host, "a.example");
        assert_eq!(
            o[1].pin.as_ref().map(|p| p.addr.to_string()).as_deref(),
            Some("192.0.2.2")
        );
        assert_eq!((o[2].target.port, o[2].pin.is_none()), (8443, true));
    }

    #[test]
    fn every_bad_line_is_named() {
        for (text, want) in [
            (
                &b"https://a.example/\ngarbage\n"[..],
                "o.txt:2: \"garbage\": only https:// URLs can be probed",
            ),
            (
                b"https://a.example/ a.example:443:192.0.2.1 extra",
                "o.txt:1: expected `URL [HOST:PORT:ADDR]`, found 3 fields",
            ),
            (
                b"https://a.example/ b.example:443:192.0.2.1",
                "o.txt:1: the pin is for b.example:443, the URL for a.example:443",
            ),
            (
                b"https://a.example/ a.example:443:nowhere",
                "o.txt:1: \"a.example:443:nowhere\": ADDR is not an IP address",
            ),
            (
                b"\nhttps://a.example/\nhttps://A.EXAMPLE:443/",
                "o.txt:3: the same origin as line 2",
            ),
            (
                b"https://a.example/\xff",
                "o.txt:1: not UTF-8 text (byte 19 of the line)",
            ),
            (
                b"https://a.example/\x1b[2J",
                "o.txt:1: a control character (U+001B)",
            ),
            (
                b"# nothing\n\n   \n",
                "o.txt: no origins (one `URL [HOST:PORT:ADDR]` a line)",
            ),
            (b"", "o.txt: no origins (one `URL [HOST:PORT:ADDR]` a line)"),
        ] {
            assert_eq!(error(text), want, "{text:?}");
        }
        let long = format!("https://a.example/{}", "x".repeat(MAX_LINE));
        assert_eq!(
            error(long.as_bytes()),
            format!("o.txt:1: line longer than {MAX_LINE} bytes")
        );
        // The same URL on two addresses is two origins, not a duplicate.
        assert_eq!(
            parse(b"https://a.example/ a.example:443:192.0.2.1\nhttps://a.example/ a.example:443:192.0.2.2")
                .unwrap()
                .len(),
            2
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_most_limit_in_flight_and_results_in_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let out = concurrently(0..50u64, 7, |i| {
            let (now, most) = (now.clone(), most.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                // Later items finish first.
                tokio::time::sleep(Duration::from_millis(50 - i)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                i
            }
        })
        .await;
        assert_eq!(out, (0..50).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 7);
        // A limit of 0 is 1; nothing to do is nothing.
        assert_eq!(concurrently([1], 0, |i| async move { i }).await, [1]);
        assert!(
            concurrently(Vec::<u8>::new(), 4, |i| async move { i })
                .await
                .is_empty()
        );
    }
}
