//! The log line formats both proxies write (cargo feature `log`): tracing-subscriber
//! event formatters, one line per event, never a span.
//!
//! - [`Logfmt`], the text format: `key=value` pairs any logfmt reader splits the same
//!   way, whatever a client put into a value.
//!
//!   ```text
//!   ts=2026-12-01T10:19:55.255353Z level=info target=aop::access msg=request request_id=rid-1 peer=192.0.2.7:50312 cf_connecting_ip="1.2.3.4 verdict=SUCCESS\"\n" path=/p status=200 verdict=SUCCESS
//!   ```
//!
//! - [`Json`]: one JSON object per line, the shape of tracing-subscriber's JSON format.
//!
//! ```
//! let subscriber = tracing_subscriber::fmt()
//!     .with_writer(std::io::stderr)
//!     .event_format(aop_http::log::Logfmt)
//!     .finish();
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::info!(target: "aop::example", peer = %"192.0.2.7:443", "started");
//! });
//! ```

mod json;
mod logfmt;

pub use json::Json;
pub use logfmt::Logfmt;

/// What a subscriber writes, for the formatters' tests.
#[cfg(test)]
mod capture {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::fmt::SubscriberBuilder;
    use tracing_subscriber::fmt::format::{DefaultFields, Format};
    use tracing_subscriber::fmt::writer::BoxMakeWriter;

    type Builder = SubscriberBuilder<DefaultFields, Format, LevelFilter, BoxMakeWriter>;

    /// The text that `emit` logs through the subscriber `finish` makes of a builder
    /// writing to memory.
    pub(super) fn capture<S>(finish: impl FnOnce(Builder) -> S, emit: impl FnOnce()) -> String
    where
        S: tracing::Subscriber + Send + Sync + 'static,
    {
        let buf = Buf::default();
        let b = buf.clone();
        let builder = tracing_subscriber::fmt().with_writer(BoxMakeWriter::new(move || b.clone()));
        tracing::subscriber::with_default(finish(builder), emit);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
