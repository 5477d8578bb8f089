//! The text format: logfmt, one event per line.
//!
//! `ts=… level=… target=… msg=…` and then the event's fields in the order the event
//! names them. A value is written bare when it is a non-empty run of printable ASCII
//! other than space, `"`, `=` and `\`; otherwise it is double-quoted, with `"`, `\` and
//! control characters escaped as in JSON (`\"`, `\\`, `\n`, `\r`, `\t`, `\u00XX`) and
//! the characters that move or hide text on a terminal (C1 controls, line separators,
//! format characters such as bidirectional overrides, soft hyphens and tags, and the
//! other default-ignorable characters) as `\uXXXX`. So a value a client chose (a header, a
//! path, a certificate's subject) stays one value: it can neither end the line nor add
//! a field (`x verdict=SUCCESS`) to it. Whether a value is quoted depends only on the
//! value, never on how the event recorded it (`%`, `?` or a `&str`). A value longer
//! than 1,024 bytes, escapes counted, is cut at a character and ends `…[+N bytes]`
//! (N the bytes left out), so no line reaches journald's `LineMax` (see
//! `json::MAX_VALUE`).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::json::{MAX_VALUE, string, timestamp};

/// The logfmt event formatter: give it to tracing-subscriber's
/// `SubscriberBuilder::event_format`. It writes no colour.
#[derive(Clone, Copy, Debug, Default)]
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("ts=")?;
        timestamp(&mut w, SystemTime::now())?;
        w.write_str(" level=")?;
        w.write_str(level(meta.level()))?;
        w.write_str(" target=")?;
        value(&mut w, meta.target())?;
        // The message first, whichever place the event gave it, then the other fields.
        let mut fields = Fields {
            w: &mut w,
            message: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.message = false;
        event.record(&mut fields);
        fields.result?;
        w.write_char('\n')
    }
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// Writes `value` bare if it is safe so, else quoted and escaped.
fn value(w: &mut impl fmt::Write, value: &str) -> fmt::Result {
    let bare = !value.is_empty()
        && value.len() <= MAX_VALUE
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'=' | b'\\'));
    if bare {
        w.write_str(value)
    } else {
        string(w, value)
    }
}

thread_local! {
    /// A `Debug` or `Display` value, formatted before it is known whether it needs quotes.
    static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Visits an event's fields: on the first pass only `message` (written `msg=`), on the
/// second all the others.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    message: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Writes ` key=` and `write`'s value, if this pass takes the field.
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || (name == "message") != self.message {
            return;
        }
        self.result = (|| {
            self.w.write_char(' ')?;
            self.w.write_str(if self.message { "msg" } else { name })?;
            self.w.write_char('=')?;
            write(self.w)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, v: &str) {
        self.field(field, |w| value(w, v));
    }

    fn record_bool(&mut self, field: &Field, v: bool) {
        self.field(field, |w| write!(w, "{v}"));
    }

    fn record_u64(&mut self, field: &Field, v: u64) {
        self.field(field, |w| write!(w, "{v}"));
    }

    fn record_i64(&mut self, field: &Field, v: i64) {
        self.field(field, |w| write!(w, "{v}"));
    }

    fn record_debug(&mut self, field: &Field, v: &dyn fmt::Debug) {
        self.field(field, |w| {
            // A `Debug` that logs would find the buffer taken: it gets one of its own.
            BUFFER.with(|cell| match cell.try_borrow_mut() {
                Ok(mut buf) => {
                    buf.clear();
                    write!(buf, "{v:?}")?;
                    value(w, &buf)
                }
                Err(_) => value(w, &format!("{v:?}")),
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `emit` logs through [`Logfmt`], without their `ts=…` prefix.
    fn lines(emit: impl FnOnce()) -> Vec<String> {
        let text = super::super::capture::capture(|b| b.event_format(Logfmt).finish(), emit);
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|l| {
                let (ts, rest) = l.split_once(' ').unwrap();
                assert!(ts.starts_with("ts=20") && ts.ends_with('Z'), "{l}");
                rest.to_owned()
            })
            .collect()
    }

    #[test]
    fn safe_values_are_bare_and_the_rest_quoted_whatever_recorded_them() {
        let got = lines(|| {
            tracing::warn!(target: "aop::verdict", verdict = %"FAILED:unknown_ca",
                peer = %"192.0.2.7:443", sni = "a.example", subject = "CN=edge",
                request_id = ?"abc", path = "/a?b", empty = "", n = 7u64, i = -3i64,
                ok = true, share = 0.25f64, error = %"connection refused",
                "client certificate verdict");
        });
        assert_eq!(
            got,
            [
                "level=warn target=aop::verdict msg=\"client certificate verdict\" \
                 verdict=FAILED:unknown_ca peer=192.0.2.7:443 sni=a.example \
                 subject=\"CN=edge\" request_id=\"\\\"abc\\\"\" path=/a?b empty=\"\" n=7 \
                 i=-3 ok=true share=0.25 error=\"connection refused\""
            ]
        );
    }

    #[test]
    fn hostile_values_stay_one_value_on_one_line() {
        let got = lines(|| {
            tracing::info!(target: "aop::access",
                x = "1.2.3.4 verdict=SUCCESS",
                y = %"a\"b\\c\nts=2026 level=info verdict=SUCCESS\r\t\u{1}\u{7f}",
                z = "é\u{9b}31m\u{202e}\u{2028}",
                "line\nbreak");
        });
        assert_eq!(
            got,
            [
                r#"level=info target=aop::access msg="line\nbreak" x="1.2.3.4 verdict=SUCCESS" y="a\"b\\c\nts=2026 level=info verdict=SUCCESS\r\t\u0001\u007f" z="é\u009b31m\u202e\u2028""#
            ]
        );
    }

    #[test]
    fn invisible_characters_are_escaped_and_long_values_cut() {
        let long = format!("{}ts=2026 level=info verdict=SUCCESS", "A".repeat(50_000));
        let got = lines(|| {
            tracing::info!(target: "aop::verdict", subject = "ed\u{ad}ge\u{e0041}\u{180e}\u{fff9}x",
                bare = "a".repeat(MAX_VALUE).as_str(), long = long.as_str(), "m");
        });
        assert_eq!(
            got,
            [format!(
                "level=info target=aop::verdict msg=m subject=\"ed\\u00adge\\udb40\\udc41\\u180e\\ufff9x\" \
                 bare={} long=\"{}…[+49010 bytes]\"",
                "a".repeat(MAX_VALUE),
                "A".repeat(MAX_VALUE)
            )]
        );
        // One byte over the cap: quoted, cut, marked.
        let got = lines(|| {
            tracing::info!(target: "t", v = "a".repeat(MAX_VALUE + 1).as_str());
        });
        assert_eq!(
            got,
            [format!(
                "level=info target=t v=\"{}…[+1 bytes]\"",
                "a".repeat(MAX_VALUE)
            )]
        );
    }

    #[test]
    fn an_event_without_fields_or_with_only_a_message() {
        let got = lines(|| {
            tracing::error!(target: "aop::origin", "stopped");
            tracing::debug!(target: "aop::origin", n = 1u64);
        });
        assert_eq!(got, ["level=error target=aop::origin msg=stopped"]);
    }
}
