//! The log line formats both proxies write (cargo feature `log`): tracing-subscriber
//! event formatters, one line per event, never a span.
//!
//! - [`Logfmt`], the text format: `key=value` pairs any logfmt reader splits the same
//!   way, whatever a client put into a value.
//!
//!   ```text
//!   ts=2026-12-01T10:19:55.255353Z level=warn target=aop::verdict msg="client certificate verdict" verdict=FAILED:unknown_ca peer=192.0.2.7:50312 sni=a.example subject="CN=edge, O=\"Edge\"" …
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
