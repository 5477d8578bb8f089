//! `log_format = "json"` (aop-origin) and `--log-format json` (aop-edge-proxy): one JSON object per line, the same shape as
//! tracing-subscriber's JSON format —
//! `{"timestamp":"2026-12-01T10:19:55.255353Z","level":"INFO","fields":{"message":"…",…},"target":"aop::verdict"}` —
//! written without serde.
//!
//! Why not tracing-subscriber's own: it serializes through serde_json into a
//! `fmt::Write` adaptor that re-validates every small piece as UTF-8 (measured with
//! `cargo bench -p aop-verify --bench verify -- "verdict log"`: 2.6 µs per verdict line,
//! half of it in that adaptor); this writes the same line in 0.8 µs against its 2.0 µs
//! (200,000 lines to a sink, same fields). One line is logged per handshake and one per request,
//! so this is on the hot path. aop never logs inside spans, so the `span`/`spans` keys
//! that format can add are not written.
//!
//! Two differences, neither changing a value a JSON reader gets but a cut one: the
//! characters that move or hide text on a terminal are escaped as `\uXXXX` (as in the
//! logfmt format), and a string is cut at [`MAX_VALUE`] escaped bytes, marked `…[+N bytes]`.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event formatter: give it to tracing-subscriber's
/// `SubscriberBuilder::event_format`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl<S, N> FormatEvent<S, N> for Json
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
        w.write_str("{\"timestamp\":\"")?;
        timestamp(&mut w, SystemTime::now())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_str("\",\"fields\":{")?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str("},\"target\":")?;
        string(&mut w, meta.target())?;
        w.write_str("}\n")
    }
}

struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.w.write_char(',')?;
        }
        string(self.w, field.name())?;
        self.w.write_char(':')
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| self.w.write_fmt(value));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| string(self.w, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, format_args!("{value}"));
        } else {
            self.raw(field, format_args!("null"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| {
                self.w.write_char('"')?;
                let mut e = Escaped::new(&mut *self.w);
                write!(e, "{value:?}")?;
                e.finish()?;
                self.w.write_char('"')
            });
        }
    }
}

/// A JSON string, quoted, escaped and cut at [`MAX_VALUE`].
pub(super) fn string(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let mut e = Escaped::new(&mut *w);
    e.write_str(s)?;
    e.finish()?;
    w.write_char('"')
}

/// The most bytes of a value written between its quotes, escapes counted: a value a
/// client chose (a 50 KB certificate subject, a 400 KB header) is cut here, at a
/// character, and ends `…[+N bytes]`, N the input bytes left out. Counting the written
/// bytes, not the input's, bounds the line whatever the escaping (up to 6 bytes written
/// for one read): a value takes at most 1,024 + 32 for the mark + 32 for its key,
/// quotes and separators, so a line of k values (the message counted) is at most
/// k × 1,088 + 100 bytes, below journald's `LineMax` (48 KiB by default, past which it
/// splits a line into a second record that starts with text the client chose) for
/// k ≤ 45. The widest event aop logs, the verdict line, has 16 (15 fields and the
/// message): at most 17,508 bytes.
pub(super) const MAX_VALUE: usize = 1024;

/// Escapes what is written to it, for the inside of a JSON string or a quoted logfmt
/// value: `"`, `\`, and ASCII control characters as `\n`, `\r`, `\t` or `\u00XX`, and
/// the characters that move, hide or reorder text on a reader's terminal (see
/// [`hides_text`]) as `\uXXXX` (a surrogate pair above U+FFFF, as JSON has it). Writes
/// at most [`MAX_VALUE`] bytes; [`Escaped::finish`] marks what was cut.
struct Escaped<'a, W: ?Sized> {
    w: &'a mut W,
    /// Bytes that may still be written.
    room: usize,
    /// Input bytes left out, once the value was cut.
    cut: usize,
}

impl<'a, W: fmt::Write + ?Sized> Escaped<'a, W> {
    fn new(w: &'a mut W) -> Self {
        Escaped {
            w,
            room: MAX_VALUE,
            cut: 0,
        }
    }

    /// Writes `…[+N bytes]` if the value was cut.
    fn finish(self) -> fmt::Result {
        if self.cut > 0 {
            write!(self.w, "\u{2026}[+{} bytes]", self.cut)?;
        }
        Ok(())
    }

    /// Writes `s[start..end]` as it is, or as much of it as there is room for.
    fn run(&mut self, s: &str, start: usize, end: usize) -> Result<bool, fmt::Error> {
        if end - start <= self.room {
            self.room -= end - start;
            self.w.write_str(&s[start..end])?;
            return Ok(true);
        }
        let mut at = start + self.room;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        self.w.write_str(&s[start..at])?;
        self.room = 0;
        self.cut = s.len() - at;
        Ok(false)
    }
}

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut > 0 {
            self.cut += s.len();
            return Ok(());
        }
        let bytes = s.as_bytes();
        let (mut start, mut i) = (0, 0);
        // To the next byte that may need an escape (a scan the compiler vectorizes).
        while let Some(skip) = bytes[i..]
            .iter()
            .position(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
        {
            i += skip;
            let (esc, len) = match bytes[i] {
                b'"' => ("\\\"", 1),
                b'\\' => ("\\\\", 1),
                b'\n' => ("\\n", 1),
                b'\r' => ("\\r", 1),
                b'\t' => ("\\t", 1),
                0..0x20 | 0x7f => ("", 1),
                // The first byte of a multi-byte character.
                _ => match s[i..].chars().next() {
                    Some(c) if hides_text(c) => ("", c.len_utf8()),
                    Some(c) => {
                        i += c.len_utf8();
                        continue;
                    }
                    None => break,
                },
            };
            if !self.run(s, start, i)? {
                return Ok(());
            }
            let c = s[i..].chars().next().map_or(0, u32::from);
            let need = match (esc.len(), c) {
                (0, 0x10000..) => 12,
                (0, _) => 6,
                (n, _) => n,
            };
            if need > self.room {
                self.cut = s.len() - i;
                self.room = 0;
                return Ok(());
            }
            self.room -= need;
            if !esc.is_empty() {
                self.w.write_str(esc)?;
            } else if let Some(c) = c.checked_sub(0x10000) {
                write!(
                    self.w,
                    "\\u{:04x}\\u{:04x}",
                    0xd800 + (c >> 10),
                    0xdc00 + (c & 0x3ff)
                )?;
            } else {
                write!(self.w, "\\u{c:04x}")?;
            }
            i += len;
            start = i;
        }
        self.run(s, start, s.len()).map(|_| ())
    }
}

/// A character outside ASCII that moves, hides or reorders text where it is shown: the
/// C1 controls (U+0080–U+009F; U+009B is a one-character CSI), the line and paragraph
/// separators (U+2028, U+2029), the format characters (general category Cf: soft
/// hyphen, bidirectional controls, zero-width characters, tags, interlinear
/// annotations…) and the other default-ignorable code points (variation selectors,
/// Hangul fillers…), as of Unicode 15.1.
fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{034f}' | '\u{0600}'..='\u{0605}' | '\u{061c}' | '\u{06dd}'
            | '\u{070f}' | '\u{0890}'..='\u{0891}' | '\u{08e2}' | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}' | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}'
            | '\u{110bd}' | '\u{110cd}' | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}')
}

thread_local! {
    /// The last second formatted (`2026-12-01T10:19:55`) and its Unix time: most lines
    /// share their second with the one before.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// RFC 3339 UTC with microseconds, as tracing-subscriber's default timer writes it.
pub(super) fn timestamp(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            cached.1.clear();
            let _ = write!(
                cached.1,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            cached.0 = secs;
        }
        w.write_str(&cached.1)
    })?;
    write!(w, ".{:06}Z", since.subsec_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}e\u{7f}é").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001e\u007fé""#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}e\u{7f}é");
    }

    /// `s` as [`string`] writes it, and the value a JSON reader gets from that.
    fn written(s: &str) -> (String, String) {
        let mut out = String::new();
        string(&mut out, s).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (out, v.as_str().unwrap().to_owned())
    }

    #[test]
    fn what_moves_or_hides_text_is_escaped_and_reads_back_the_same() {
        // C1 (a one-character CSI, NEL), bidi override, line separator, soft hyphen, a
        // tag (U+E0041, above U+FFFF: a surrogate pair), the Mongolian vowel separator,
        // an interlinear annotation, a variation selector, a Hangul filler.
        let s = "e\u{9b}31m\u{85}\u{202e}\u{2028}d\u{ad}ge\u{e0041}\u{180e}\u{fff9}\u{fe0f}\u{3164}\u{1d173}é✓";
        let (out, back) = written(s);
        assert_eq!(
            out,
            r#""e\u009b31m\u0085\u202e\u2028d\u00adge\udb40\udc41\u180e\ufff9\ufe0f\u3164\ud834\udd73é✓""#
        );
        assert_eq!(back, s);
        for c in [
            '\u{34f}',
            '\u{61c}',
            '\u{115f}',
            '\u{1160}',
            '\u{17b4}',
            '\u{17b5}',
            '\u{180b}',
            '\u{180f}',
            '\u{fe00}',
            '\u{ffa0}',
            '\u{fff0}',
            '\u{fffb}',
            '\u{1bca0}',
            '\u{1bca3}',
            '\u{1d17a}',
            '\u{e0000}',
            '\u{e0fff}',
            '\u{e0100}',
            '\u{2029}',
            '\u{2066}',
            '\u{200b}',
        ] {
            let (out, back) = written(&c.to_string());
            assert!(out.starts_with("\"\\u") && out.is_ascii(), "{c:?}: {out}");
            assert_eq!(back, c.to_string());
        }
        // Printable text outside ASCII is written as it is.
        assert_eq!(written("Zürich ½ 東京 🙂").0, "\"Zürich ½ 東京 🙂\"");
    }

    #[test]
    fn a_long_value_is_cut_at_a_character_and_says_how_much() {
        // Exactly the cap: whole.
        let (out, _) = written(&"a".repeat(MAX_VALUE));
        assert_eq!(out.len(), MAX_VALUE + 2);
        // One more byte: cut, marked.
        let (out, _) = written(&"a".repeat(MAX_VALUE + 1));
        assert_eq!(out, format!("\"{}…[+1 bytes]\"", "a".repeat(MAX_VALUE)));
        // A character is never split: 1,023 bytes, then a 2-byte one that does not fit.
        let (out, back) = written(&format!(
            "{}é{}",
            "a".repeat(MAX_VALUE - 1),
            "b".repeat(50_000)
        ));
        assert_eq!(
            back,
            format!("{}…[+50002 bytes]", "a".repeat(MAX_VALUE - 1))
        );
        assert_eq!(out.len(), MAX_VALUE - 1 + 2 + "…[+50002 bytes]".len());
        // Escapes count: 50,000 control characters write 170 escapes of 6 bytes.
        let (out, _) = written(&"\u{1}".repeat(50_000));
        assert_eq!(out, format!("\"{}…[+49830 bytes]\"", "\\u0001".repeat(170)));
        // An escape is never split: a surrogate pair needs 12 bytes.
        let (out, _) = written(&format!("{}\u{e0041}", "a".repeat(MAX_VALUE - 11)));
        assert_eq!(
            out,
            format!("\"{}…[+4 bytes]\"", "a".repeat(MAX_VALUE - 11))
        );
        // A `Debug` value written in pieces is cut the same way.
        let mut out = String::new();
        let mut e = Escaped::new(&mut out);
        for _ in 0..3 {
            e.write_str(&"x".repeat(1000)).unwrap();
        }
        e.finish().unwrap();
        assert_eq!(out, format!("{}…[+1976 bytes]", "x".repeat(MAX_VALUE)));
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_764_583_195_255_353);
        let mut out = String::new();
        timestamp(&mut out, t).unwrap();
        assert_eq!(out, "2025-12-01T09:59:55.255353Z");
        // The cached second is reused, and replaced when the second changes.
        out.clear();
        timestamp(&mut out, t + std::time::Duration::from_micros(1)).unwrap();
        assert_eq!(out, "2025-12-01T09:59:55.255354Z");
        out.clear();
        timestamp(&mut out, t + std::time::Duration::from_secs(86_400)).unwrap();
        assert_eq!(out, "2025-12-02T09:59:55.255353Z");
    }

    #[test]
    fn a_line_is_the_same_json_as_tracing_subscribers() {
        let line = |ours: bool| {
            let emit = || {
                tracing::warn!(target: "aop::verdict", verdict = %"FAILED:unknown_ca",
                    subject = "CN=\"quoted\"\n\u{202e}\u{9b}\u{ad}\u{e0041}", resumed = true, n = 7u64, i = -3i64,
                    share = 0.25f64, nan = f64::NAN, text = ?"debug \"text\"",
                    "client certificate verdict");
            };
            let text = if ours {
                super::super::capture::capture(|b| b.event_format(Json).finish(), emit)
            } else {
                super::super::capture::capture(|b| b.json().finish(), emit)
            };
            assert!(
                text.ends_with('\n') && text.lines().count() == 1,
                "{text:?}"
            );
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let ts = v["timestamp"].take();
            assert!(ts.as_str().unwrap().ends_with('Z'), "{ts}");
            v
        };
        assert_eq!(line(true), line(false));
    }
}
