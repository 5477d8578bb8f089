//! A strict logfmt reader for the tests: what a log shipper that splits `key=value`
//! pairs sees in a line of aop's text log.

/// The fields of one logfmt line, in order. Strict: keys are non-empty runs without
/// space, `=`, `"` or control characters, each followed by `=`; a value is either bare
/// (a non-empty run without space, `"`, `=` or `\`) or double-quoted with only the
/// escapes `\"`, `\\`, `\n`, `\r`, `\t` and `\uXXXX` (above U+FFFF a surrogate
/// pair); one space between fields, none at either end; no control character anywhere
/// in the line; no key twice (a second `verdict=` would be a forged field).
pub fn parse(line: &str) -> Result<Vec<(String, String)>, String> {
    let err = |what: &str| Err(format!("{what} in {line:?}"));
    if let Some(c) = line.chars().find(|c| c.is_control()) {
        return err(&format!("a raw control character {c:?}"));
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut rest = line;
    loop {
        let key_len = rest.find(['=', ' ', '"']).unwrap_or(rest.len());
        let (key, after) = rest.split_at(key_len);
        if key.is_empty() {
            return err("an empty key");
        }
        let Some(after) = after.strip_prefix('=') else {
            return err(&format!("key {key:?} without `=`"));
        };
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    None => return err("an unterminated quoted value"),
                    Some((i, '"')) => break i + 1,
                    Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                        Some('"') => value.push('"'),
                        Some('\\') => value.push('\\'),
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        Some('t') => value.push('\t'),
                        Some('u') => {
                            let c = match hex4(&mut chars) {
                                // Above U+FFFF: a surrogate pair, as in JSON.
                                Ok(hi @ 0xd800..0xdc00) => match (chars.next(), chars.next()) {
                                    (Some((_, '\\')), Some((_, 'u'))) => match hex4(&mut chars) {
                                        Ok(lo @ 0xdc00..0xe000) => char::from_u32(
                                            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00),
                                        )
                                        .ok_or(format!("{hi:x}")),
                                        _ => Err(format!("{hi:x} without its pair")),
                                    },
                                    _ => Err(format!("{hi:x} without its pair")),
                                },
                                Ok(c) => char::from_u32(c).ok_or(format!("{c:x}")),
                                Err(hex) => Err(hex),
                            };
                            match c {
                                Ok(c) => value.push(c),
                                Err(hex) => return err(&format!("a bad escape \\u{hex}")),
                            }
                        }
                        other => return err(&format!("a bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            (value, &quoted[end..])
        } else {
            let len = after.find(' ').unwrap_or(after.len());
            let value = &after[..len];
            if value.is_empty() || value.contains(['"', '=', '\\']) {
                return err(&format!("a bare value {value:?} that should be quoted"));
            }
            (value.to_owned(), &after[len..])
        };
        if fields.iter().any(|(k, _)| k == key) {
            return err(&format!("key {key:?} twice"));
        }
        fields.push((key.to_owned(), value));
        if after.is_empty() {
            return Ok(fields);
        }
        match after.strip_prefix(' ') {
            Some(next) if !next.is_empty() => rest = next,
            _ => return err("a field not followed by one space and a key"),
        }
    }
}

/// Four hex digits, as a number (else what was read).
fn hex4(chars: &mut impl Iterator<Item = (usize, char)>) -> Result<u32, String> {
    let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
    let n = u32::from_str_radix(&hex, 16).ok();
    n.filter(|_| hex.len() == 4).ok_or(hex)
}

/// The value of `key` among `fields` (from [`parse`]).
pub fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bare_and_quoted_values() {
        let f = parse(r#"ts=1 msg="a \"b\" \\ \n\u009b" x=y:z"#).unwrap();
        assert_eq!(field(&f, "msg"), Some("a \"b\" \\ \n\u{9b}"));
        assert_eq!(field(&f, "x"), Some("y:z"));
        let f = parse(r#"a="\udb40\udc41x""#).unwrap();
        assert_eq!(field(&f, "a"), Some("\u{e0041}x"));
    }

    #[test]
    fn refuses_what_a_forgery_or_a_sloppy_writer_makes() {
        for bad in [
            "a=1 a=2",
            "a=x verdict=1 verdict=2",
            "a=\"x",
            "a=x\"y",
            "a=b=c",
            "a=",
            "a=1  b=2",
            "a=1 ",
            "a",
            "=1",
            "a=\"\\x\"",
            "a=\"\u{1b}[31m\"",
            "a=\"\\u12\"",
            "a=\"\\udb40\"",
            "a=\"\\udb40\\u0041\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
