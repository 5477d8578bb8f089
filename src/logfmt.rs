//! A strict logfmt reader for the tests: what a log shipper that splits `key=value`
//! pairs sees in a line of aop's text log.

/// The fields of one logfmt line, in order. Strict: keys are non-empty runs without
/// space, `=`, `"` or control characters, each followed by `=`; a value is either bare
/// (a non-empty run without space, `"`, `=` or `\`) or double-quoted with only the
/// escapes `\"`, `\\`, `\n`, `\r`, `\t` and `\uXXXX`; one space between fields, none
/// at either end; no control character anywhere in the line; no key twice (a second
/// `verdict=` would be a forged field).
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
                            let hex: String = (0..4)
                                .filter_map(|_| chars.next())
                                .map(|(_, c)| c)
                                .collect();
                            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                                Some(c) if hex.len() == 4 => value.push(c),
                                _ => return err(&format!("a bad escape \\u{hex}")),
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
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
