//! A log writer that never makes a system call on the handshake or request path: lines
//! are appended to a shared buffer, and a background thread writes the buffer out every
//! few milliseconds (or sooner when it grows). No thread wake-up per line, so the cost of
//! a verdict line is formatting it and one short lock.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often the buffer is written out.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this large is written out at once; twice this, and writers wait (lines are
/// never dropped).
const HIGH_WATER: usize = 256 * 1024;

#[derive(Default)]
struct Shared {
    buf: Mutex<(Vec<u8>, bool)>,
    wake: Condvar,
}

/// The `MakeWriter` for tracing-subscriber.
#[derive(Clone)]
pub(crate) struct Batched(Arc<Shared>);

/// Flushes what is left when dropped (at exit).
pub(crate) struct FlushGuard(Arc<Shared>, Option<std::thread::JoinHandle<()>>);

impl Drop for FlushGuard {
    fn drop(&mut self) {
        {
            let mut b = self
                .0
                .buf
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            b.1 = true;
        }
        self.0.wake.notify_all();
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// A batched writer to stderr, and the guard that flushes it at exit.
pub(crate) fn stderr() -> (Batched, FlushGuard) {
    let shared = Arc::new(Shared::default());
    let bg = shared.clone();
    let thread = std::thread::Builder::new()
        .name("aop-log".into())
        .spawn(move || {
            let mut out = std::io::stderr();
            loop {
                let (chunk, done) = {
                    let b = bg
                        .buf
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Every FLUSH_EVERY, or as soon as the buffer reaches HIGH_WATER.
                    let (mut b, _) = bg
                        .wake
                        .wait_timeout_while(b, FLUSH_EVERY, |b| b.0.len() < HIGH_WATER && !b.1)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    (std::mem::take(&mut b.0), b.1)
                };
                if !chunk.is_empty() {
                    let _ = out.write_all(&chunk);
                    let _ = out.flush();
                    // Writers waiting on a full buffer can go on.
                    bg.wake.notify_all();
                }
                if done {
                    return;
                }
            }
        })
        .expect("spawn the log writer thread");
    (Batched(shared.clone()), FlushGuard(shared, Some(thread)))
}

/// One event's writer: collects the line, appends it to the buffer when dropped.
pub(crate) struct Line(Arc<Shared>, Vec<u8>);

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let mut b = self
            .0
            .buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while b.0.len() >= 2 * HIGH_WATER && !b.1 {
            // The writer is behind: wait for it rather than drop a line.
            b = self
                .0
                .wake
                .wait(b)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        b.0.extend_from_slice(&self.1);
        if b.0.len() >= HIGH_WATER {
            self.0.wake.notify_all();
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(self.0.clone(), Vec::with_capacity(512))
    }
}
