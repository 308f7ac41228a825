//! The one check of a value's bytes (DESIGN.md §2 "Value"): what every write path applies
//! before a value may enter the log, and what every read applies before a stored value is
//! written into an answer verbatim.
//!
//! A value is accepted when it is valid UTF-8 (no encoded surrogates, no overlong forms), one
//! JSON document by RFC 8259 (surrounded by optional whitespace), nested at most
//! `VALUE_DEPTH_MAX` arrays and objects deep, with no `\u` escape that leaves a surrogate
//! unpaired, and, for writes, no object with two members of the same name (after unescaping):
//! parsers disagree on which duplicate wins, so a value could pass its schema for one parser and
//! mean something else to another.
//!
//! Invariants: the scan is iterative (a stack of 256 bits, no recursion on untrusted input);
//! it never allocates unless an object's member names must be remembered (writes only); it
//! never panics, whatever the bytes.

use std::collections::HashSet;

/// Arrays and objects nested in a value, at most. serde_json's default limit (which accepted
/// values before this check existed) allows 127, so every value stored by an older server
/// still reads.
pub const VALUE_DEPTH_MAX: usize = 127;

/// The deepest nesting `check` can be asked to allow (a request body that embeds values adds a
/// few levels around them).
pub const CHECK_DEPTH_MAX: usize = 255;

// The container stack is one bit per level.
const _: () = assert!(VALUE_DEPTH_MAX <= CHECK_DEPTH_MAX);
const _: () = assert!(CHECK_DEPTH_MAX < 2 * u128::BITS as usize);

/// Why bytes are not an acceptable value. `offset` is the byte where the scan stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("not valid UTF-8 at byte {offset}")]
    InvalidUtf8 { offset: usize },
    #[error("not JSON: {what} at byte {offset}")]
    Syntax { offset: usize, what: &'static str },
    #[error("nested deeper than {max} arrays and objects at byte {offset}")]
    TooDeep { offset: usize, max: usize },
    #[error("an unpaired surrogate escape at byte {offset}")]
    LoneSurrogate { offset: usize },
    #[error("duplicate member name {name:?} at byte {offset}")]
    DuplicateMember { offset: usize, name: String },
}

impl JsonError {
    /// A short, stable code for an answer's `value_error` field.
    pub fn code(&self) -> &'static str {
        match self {
            JsonError::InvalidUtf8 { .. } => "invalid_utf8",
            JsonError::TooDeep { .. } => "too_deep",
            _ => "invalid_json",
        }
    }
}

/// What a check refuses beyond the grammar and UTF-8.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Arrays and objects nested this deep at most (≤ `CHECK_DEPTH_MAX`).
    pub depth_max: usize,
    /// Two members of one object with the same name (after unescaping).
    pub refuse_duplicates: bool,
    /// A `\u` escape of a surrogate that is not half of a pair.
    pub refuse_lone_surrogates: bool,
}

/// What every write accepts.
pub const WRITE_RULES: Rules = Rules {
    depth_max: VALUE_DEPTH_MAX,
    refuse_duplicates: true,
    refuse_lone_surrogates: true,
};

/// What a stored value must be to be served verbatim: whatever an older server's check (serde_json,
/// which let duplicate names and lone surrogate escapes through) may have stored, if it is JSON.
pub const STORED_RULES: Rules = Rules {
    depth_max: VALUE_DEPTH_MAX,
    refuse_duplicates: false,
    refuse_lone_surrogates: false,
};

/// The check every write applies.
pub fn check_value(bytes: &[u8]) -> Result<(), JsonError> {
    check(bytes, &WRITE_RULES)
}

/// The check before a stored value is written verbatim into an answer: UTF-8, grammar, depth.
pub fn check_stored(bytes: &[u8]) -> Result<(), JsonError> {
    check(bytes, &STORED_RULES)
}

/// A whole JSON document (a value, or a request body or an answer that embeds values) under
/// `rules`.
pub fn check(bytes: &[u8], rules: &Rules) -> Result<(), JsonError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(JsonError::InvalidUtf8 {
            offset: e.valid_up_to(),
        });
    }
    Scanner {
        bytes,
        at: 0,
        depth_max: rules.depth_max.min(CHECK_DEPTH_MAX),
        names: rules.refuse_duplicates.then(Vec::new),
        refuse_lone_surrogates: rules.refuse_lone_surrogates,
    }
    .document()
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    depth_max: usize,
    refuse_lone_surrogates: bool,
    /// Member names of each open object, innermost last (only when duplicates are refused).
    names: Option<Vec<HashSet<Vec<u8>>>>,
}

impl Scanner<'_> {
    fn syntax(&self, what: &'static str) -> JsonError {
        JsonError::Syntax {
            offset: self.at,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn document(mut self) -> Result<(), JsonError> {
        // Bit i of `stack` is 1 when level i + 1 is an object, 0 for an array.
        let mut stack = [0u128; 2];
        let bit = |depth: usize| (depth / 128, 1u128 << (depth % 128));
        let mut depth = 0usize;
        'value: loop {
            self.skip_whitespace();
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    if depth == self.depth_max {
                        return Err(JsonError::TooDeep {
                            offset: self.at,
                            max: self.depth_max,
                        });
                    }
                    self.at += 1;
                    let object = open == b'{';
                    let (word, mask) = bit(depth);
                    if object {
                        stack[word] |= mask;
                        if let Some(names) = &mut self.names {
                            names.push(HashSet::new());
                        }
                    } else {
                        stack[word] &= !mask;
                    }
                    depth += 1;
                    self.skip_whitespace();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        depth -= 1;
                        if object && let Some(names) = &mut self.names {
                            names.pop();
                        }
                    } else {
                        if object {
                            self.member_name()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.at += 1;
                    self.string(None)?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return Err(self.syntax("expected a value")),
                None => return Err(self.syntax("unexpected end, expected a value")),
            }
            // After a value: a separator, the end of its container, or the end of the document.
            loop {
                self.skip_whitespace();
                if depth == 0 {
                    return match self.peek() {
                        None => Ok(()),
                        Some(_) => Err(self.syntax("trailing characters after the value")),
                    };
                }
                let (word, mask) = bit(depth - 1);
                let object = stack[word] & mask != 0;
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.at += 1;
                        if object {
                            self.skip_whitespace();
                            self.member_name()?;
                        }
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.at += 1;
                        depth -= 1;
                        if object && let Some(names) = &mut self.names {
                            names.pop();
                        }
                    }
                    (None, _) => return Err(self.syntax("unexpected end inside a container")),
                    (Some(_), true) => return Err(self.syntax("expected `,` or `}`")),
                    (Some(_), false) => return Err(self.syntax("expected `,` or `]`")),
                }
            }
        }
    }

    /// A member name and its colon; remembered (and checked) when duplicates are refused.
    fn member_name(&mut self) -> Result<(), JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.syntax("expected a member name"));
        }
        let offset = self.at;
        self.at += 1;
        match self.names.take() {
            None => self.string(None)?,
            Some(mut names) => {
                let mut name = Vec::new();
                let result = self.string(Some(&mut name));
                if result.is_ok()
                    && let Some(open) = names.last_mut()
                    && !open.insert(name.clone())
                {
                    return Err(JsonError::DuplicateMember {
                        offset,
                        name: String::from_utf8_lossy(&name).into_owned(),
                    });
                }
                self.names = Some(names);
                result?;
            }
        }
        self.skip_whitespace();
        if self.peek() != Some(b':') {
            return Err(self.syntax("expected `:` after a member name"));
        }
        self.at += 1;
        Ok(())
    }

    /// The rest of a string after its opening quote; its unescaped bytes into `out` if given.
    fn string(&mut self, mut out: Option<&mut Vec<u8>>) -> Result<(), JsonError> {
        loop {
            let start = self.at;
            // The bytes are valid UTF-8 (checked first), so only ASCII needs looking at.
            while let Some(&b) = self.bytes.get(self.at) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(&self.bytes[start..self.at]);
            }
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    let unescaped = match self.peek() {
                        Some(b'"') => b'"',
                        Some(b'\\') => b'\\',
                        Some(b'/') => b'/',
                        Some(b'b') => 0x08,
                        Some(b'f') => 0x0c,
                        Some(b'n') => b'\n',
                        Some(b'r') => b'\r',
                        Some(b't') => b'\t',
                        Some(b'u') => {
                            let c = self.unicode_escape()?;
                            if let Some(out) = out.as_deref_mut() {
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                            continue;
                        }
                        _ => return Err(self.syntax("invalid escape")),
                    };
                    self.at += 1;
                    if let Some(out) = out.as_deref_mut() {
                        out.push(unescaped);
                    }
                }
                Some(_) => return Err(self.syntax("control character in a string")),
                None => return Err(self.syntax("unterminated string")),
            }
        }
    }

    /// `\uXXXX` (the `u` at `self.at`), or a surrogate pair of two; the character it names
    /// (U+FFFD for a lone surrogate where those are let through).
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let offset = self.at - 1;
        let high = self.hex4()?;
        let lone = |scanner: &Self| {
            if scanner.refuse_lone_surrogates {
                Err(JsonError::LoneSurrogate { offset })
            } else {
                Ok('\u{FFFD}')
            }
        };
        let code = match high {
            0xD800..=0xDBFF => {
                // A low surrogate escape must follow; else this one stands alone (and what
                // follows is read as itself).
                let low = self
                    .bytes
                    .get(self.at..self.at + 6)
                    .filter(|next| next.starts_with(b"\\u"))
                    .and_then(|next| std::str::from_utf8(&next[2..]).ok())
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .filter(|low| (0xDC00..=0xDFFF).contains(low));
                let Some(low) = low else {
                    return lone(self);
                };
                self.at += 6;
                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC00..=0xDFFF => return lone(self),
            _ => high,
        };
        char::from_u32(code).ok_or(JsonError::LoneSurrogate { offset })
    }

    /// `uXXXX` at `self.at`: four hex digits after the `u`.
    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut value = 0u32;
        for i in 1..=4 {
            let digit = match self.bytes.get(self.at + i) {
                Some(&b) => (b as char).to_digit(16),
                None => None,
            };
            match digit {
                Some(d) => value = value * 16 + d,
                None => {
                    self.at += i;
                    return Err(self.syntax("`\\u` needs four hex digits"));
                }
            }
        }
        self.at += 5;
        Ok(value)
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), JsonError> {
        if self.bytes.get(self.at..self.at + word.len()) == Some(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(self.syntax("expected `true`, `false` or `null`"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.syntax("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.syntax("expected a digit after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.syntax("expected a digit in the exponent"));
            }
        }
        // Beyond a double's range most parsers fail or read infinity: refused, as serde_json
        // (the check before this one) refused it. Only a long number or one with an exponent
        // can be out of range, so only those are converted.
        let text = &self.bytes[start..self.at];
        if (text.len() > 300 || text.iter().any(|&b| b == b'e' || b == b'E'))
            && !std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        {
            self.at = start;
            return Err(self.syntax("a number out of a double's range"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &[u8]) -> bool {
        check_value(text).is_ok()
    }

    #[test]
    fn accepts_json_documents() {
        for text in [
            &b"null"[..],
            b" true ",
            b"false",
            b"0",
            b"-0.5e+10",
            b"12E3",
            b"\"\"",
            b"\"a\\\"b\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"",
            "\"é漢😀\"".as_bytes(),
            b"[]",
            b"{}",
            b"[1, [2, {\"a\": [3]}], {}]",
            b"{\"a\": 1, \"b\": {\"a\": 2}}",
            b"\n\t{ \"k\" : [ ] }\r\n",
        ] {
            assert!(ok(text), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn refuses_what_is_not_one_json_document() {
        for text in [
            &b""[..],
            b" ",
            b"nul",
            b"truex",
            b"01",
            b"1.",
            b"1e",
            b"-",
            b"+1",
            b".5",
            b"[1,]",
            b"[,1]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{1:2}",
            b"[1 2]",
            b"[1}",
            b"{\"a\":1]",
            b"[",
            b"\"abc",
            b"\"a\\x\"",
            b"\"\\u12\"",
            b"\"\t\"",
            b"1 2",
            b"{}{}",
            b"\xef\xbb\xbf{}",
            b"1e309",
            b"-5e915",
        ] {
            assert!(!ok(text), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn refuses_invalid_utf8_and_surrogates() {
        assert_eq!(
            check_value(b"\"\xff\xfe\""),
            Err(JsonError::InvalidUtf8 { offset: 1 })
        );
        assert_eq!(
            check_value(b"{\"\xff\":1}").unwrap_err().code(),
            "invalid_utf8"
        );
        // An encoded surrogate (CESU-style) is not UTF-8.
        assert_eq!(
            check_value(b"\"\xed\xa0\x80\"").unwrap_err().code(),
            "invalid_utf8"
        );
        // Overlong encoding of '/'.
        assert!(!ok(b"\"\xc0\xaf\""));
        assert!(matches!(
            check_value(b"\"\\ud800\""),
            Err(JsonError::LoneSurrogate { .. })
        ));
        assert!(matches!(
            check_value(b"\"\\udc00\\ud800\""),
            Err(JsonError::LoneSurrogate { .. })
        ));
        assert!(matches!(
            check_value(b"\"\\ud800\\u0041\""),
            Err(JsonError::LoneSurrogate { .. })
        ));
        // An older server stored such escapes (serde_json let them through): they still read.
        for stored in [
            &b"\"\\ud800\""[..],
            b"\"\\udc00\\ud800\"",
            b"\"\\ud800\\u0041\"",
            b"{\"\\ud800\":1}",
        ] {
            assert!(
                check_stored(stored).is_ok(),
                "{:?}",
                String::from_utf8_lossy(stored)
            );
        }
        assert!(check_stored(b"\"\\ud800\\u00\"").is_err());
    }

    #[test]
    fn duplicate_member_names_are_refused_for_writes_only() {
        for text in [
            &b"{\"a\":1,\"a\":2}"[..],
            b"{\"a\":1,\"\\u0061\":2}",
            b"[{\"x\":{\"a\":1},\"y\":1,\"x\":2}]",
        ] {
            assert!(matches!(
                check_value(text),
                Err(JsonError::DuplicateMember { .. })
            ));
            assert!(check_stored(text).is_ok());
        }
        // The same name in sibling or nested objects is fine.
        assert!(ok(b"[{\"a\":1},{\"a\":2},{\"b\":{\"a\":3},\"a\":4}]"));
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let nested = |n: usize| {
            let mut v = "[".repeat(n).into_bytes();
            v.extend(std::iter::repeat_n(b']', n));
            v
        };
        assert!(ok(&nested(VALUE_DEPTH_MAX)));
        assert!(matches!(
            check_value(&nested(VALUE_DEPTH_MAX + 1)),
            Err(JsonError::TooDeep { .. })
        ));
        // A million levels is refused quickly, not by overflowing the stack.
        assert!(!ok(&nested(1_000_000)));
        let depth = |depth_max| Rules {
            depth_max,
            ..STORED_RULES
        };
        assert!(check(&nested(10), &depth(9)).is_err());
        assert!(check(&nested(9), &depth(9)).is_ok());
        assert!(check(&nested(CHECK_DEPTH_MAX), &depth(CHECK_DEPTH_MAX)).is_ok());
        assert!(check(&nested(CHECK_DEPTH_MAX + 1), &depth(usize::MAX)).is_err());
        // Objects and arrays alternating across the two words of the stack.
        let mut mixed = String::new();
        for i in 0..200 {
            mixed.push_str(if i % 2 == 0 { "{\"a\":" } else { "[" });
        }
        mixed.push('1');
        for i in (0..200).rev() {
            mixed.push(if i % 2 == 0 { '}' } else { ']' });
        }
        let strict = |depth_max| Rules {
            depth_max,
            ..WRITE_RULES
        };
        assert!(check(mixed.as_bytes(), &strict(200)).is_ok());
        assert!(check(mixed.as_bytes(), &strict(199)).is_err());
    }

    #[test]
    fn agrees_with_serde_json_on_valid_documents() {
        for text in [
            r#"{"model":"m1","temperature":0.7,"stop":["\n"],"nested":{"a":[true,false,null]}}"#,
            r#"[-1.5e-3, 0, 1e300, "\u0000"]"#,
        ] {
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok());
            assert!(ok(text.as_bytes()));
        }
    }
}
