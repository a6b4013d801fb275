//! A bounded, non-recursive RFC 8259 well-formedness and depth check, run on a client's text
//! message before anything is built from it: a megabyte of `[[[[` costs one pass and a few
//! words of state, never a deep tree or a deep stack.
//!
//! Depth counts nested arrays and objects (`[[[[1]]]]` is 4; scalars add nothing). The open
//! containers are kept as bits of one `u128`, so depth is capped at [`MAX_DEPTH`], which is
//! also the nesting serde_json accepts when a schema needs the value built.

/// The deepest nesting `max_depth` may allow (serde_json's own recursion limit).
pub const MAX_DEPTH: usize = 128;

/// Why a text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not one JSON value (RFC 8259).
    Malformed,
    /// Arrays and objects nest deeper than allowed (found before the rest is read).
    TooDeep,
}

/// The open arrays and objects, innermost last.
struct Open {
    /// Bit `i` is set when the container at depth `i + 1` is an object.
    objects: u128,
    depth: usize,
}

impl Open {
    fn push(&mut self, object: bool, max_depth: usize) -> Result<(), Fault> {
        if self.depth >= max_depth.min(MAX_DEPTH) {
            return Err(Fault::TooDeep);
        }
        self.objects |= u128::from(object) << self.depth;
        self.depth += 1;
        Ok(())
    }

    /// The innermost container: `Some(true)` for an object.
    fn top(&self) -> Option<bool> {
        let depth = self.depth.checked_sub(1)?;
        Some(self.objects >> depth & 1 == 1)
    }

    fn pop(&mut self) {
        self.depth -= 1;
        self.objects &= !(1 << self.depth);
    }
}

/// Checks that `text` is exactly one JSON value (surrounding whitespace allowed) nesting no
/// deeper than `max_depth` (at most [`MAX_DEPTH`]).
pub fn check(text: &str, max_depth: usize) -> Result<(), Fault> {
    let bytes = text.as_bytes();
    let mut open = Open {
        objects: 0,
        depth: 0,
    };
    let mut at = 0;
    loop {
        // A value starts here.
        at = whitespace(bytes, at);
        match bytes.get(at) {
            Some(&b @ (b'[' | b'{')) => {
                open.push(b == b'{', max_depth)?;
                at = whitespace(bytes, at + 1);
                let close = if b == b'{' { b'}' } else { b']' };
                if bytes.get(at) == Some(&close) {
                    open.pop();
                    at += 1;
                } else {
                    if b == b'{' {
                        at = key(bytes, at)?;
                    }
                    continue;
                }
            }
            Some(b'"') => at = string(bytes, at)?,
            Some(b't') => at = literal(bytes, at, b"true")?,
            Some(b'f') => at = literal(bytes, at, b"false")?,
            Some(b'n') => at = literal(bytes, at, b"null")?,
            Some(b'-' | b'0'..=b'9') => at = number(bytes, at)?,
            _ => return Err(Fault::Malformed),
        }
        // A value ended: close containers until one goes on with a comma.
        loop {
            at = whitespace(bytes, at);
            let Some(object) = open.top() else {
                return if at == bytes.len() {
                    Ok(())
                } else {
                    Err(Fault::Malformed)
                };
            };
            match bytes.get(at) {
                Some(b',') => {
                    at += 1;
                    if object {
                        at = key(bytes, whitespace(bytes, at))?;
                    }
                    break;
                }
                Some(b']') if !object => open.pop(),
                Some(b'}') if object => open.pop(),
                _ => return Err(Fault::Malformed),
            }
            at += 1;
        }
    }
}

fn whitespace(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// An object member's name and its colon; returns where its value starts.
fn key(bytes: &[u8], at: usize) -> Result<usize, Fault> {
    if bytes.get(at) != Some(&b'"') {
        return Err(Fault::Malformed);
    }
    let at = whitespace(bytes, string(bytes, at)?);
    match bytes.get(at) {
        Some(b':') => Ok(at + 1),
        _ => Err(Fault::Malformed),
    }
}

/// A string starting at its opening quote; returns the position after the closing one. The
/// text is UTF-8 already (a `&str`): only escapes and control characters are looked at.
fn string(bytes: &[u8], mut at: usize) -> Result<usize, Fault> {
    at += 1;
    loop {
        at += plain(bytes.get(at..).unwrap_or_default());
        match bytes.get(at) {
            Some(b'"') => return Ok(at + 1),
            Some(b'\\') => match bytes.get(at + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at += 2,
                Some(b'u') => {
                    let hex = bytes.get(at + 2..at + 6).ok_or(Fault::Malformed)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(Fault::Malformed);
                    }
                    at += 6;
                }
                _ => return Err(Fault::Malformed),
            },
            Some(0x00..=0x1f) | None => return Err(Fault::Malformed),
            Some(_) => at += 1,
        }
    }
}

/// How many bytes at the start of `rest` are plain string content: no quote, backslash or
/// control character. Eight bytes at a time (SWAR: a word flags any byte below 0x20 or equal to
/// `"` or `\\`; a flag may be a false alarm only above a true one, and the bytes are then
/// looked at one by one), which makes the check of long strings several times faster.
fn plain(rest: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // Bytes of `word` below `n` (n <= 0x80), as their high bits.
    let below = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word & HIGH;
    let mut at = 0;
    for chunk in rest.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let special =
            below(word, 0x20) | below(word ^ (ONES * 0x22), 1) | below(word ^ (ONES * 0x5c), 1);
        if special != 0 {
            break;
        }
        at += 8;
    }
    let tail = rest.get(at..).unwrap_or_default();
    at + tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(tail.len())
}

fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Result<usize, Fault> {
    match bytes.get(at..at + word.len()) {
        Some(found) if found == word => Ok(at + word.len()),
        _ => Err(Fault::Malformed),
    }
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
fn number(bytes: &[u8], mut at: usize) -> Result<usize, Fault> {
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match bytes.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => at = digits(bytes, at),
        _ => return Err(Fault::Malformed),
    }
    if bytes.get(at) == Some(&b'.') {
        at = some_digits(bytes, at + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        at = some_digits(bytes, at)?;
    }
    Ok(at)
}

fn digits(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// At least one digit.
fn some_digits(bytes: &[u8], at: usize) -> Result<usize, Fault> {
    let end = digits(bytes, at);
    if end == at {
        Err(Fault::Malformed)
    } else {
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> bool {
        check(text, 32).is_ok()
    }

    #[test]
    fn well_formed_values_pass() {
        for text in [
            "1",
            " true ",
            "null",
            "false",
            "\"\"",
            "-0",
            "0.5",
            "-12.25e+10",
            "1E-3",
            "123456789012345678901234567890",
            "1e400",
            "[]",
            "{}",
            " [ 1 , 2 ,[ ] , { } ] ",
            "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}",
            "\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00\"",
            "\"un\u{e9}code \u{1f600}\"",
            "{\"a\":1,\"a\":2}",
            "\t\r\n[1]\n",
        ] {
            assert!(ok(text), "{text:?} is JSON");
        }
    }

    #[test]
    fn malformed_texts_are_refused() {
        for text in [
            "",
            " ",
            "[",
            "]",
            "{",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{\"a\" 1}",
            "{1:2}",
            "{'a':1}",
            "[1 2]",
            "1 2",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "0x10",
            "NaN",
            "Infinity",
            "tru",
            "truex",
            "nul",
            "\"open",
            "\"bad \\x escape\"",
            "\"short \\u12\"",
            "\"\\u12G4\"",
            "\"raw\ncontrol\"",
            "\"tab\there\"",
            "\u{feff}1",
            "[1]]",
            "{\"a\":1}}",
            "[}",
            "{]",
            "// comment\n1",
        ] {
            assert_eq!(check(text, 32), Err(Fault::Malformed), "{text:?}");
        }
    }

    #[test]
    fn strings_stop_at_every_special_byte_wherever_it_is() {
        for at in 0..40 {
            let (before, after) = ("\u{e9}x".repeat(20), "y".repeat(40 - at));
            let before = &before[..before.floor_char_boundary(at)];
            for (special, verdict) in [
                ("\\n", Ok(())),
                ("\\\"", Ok(())),
                ("\\u001F", Ok(())),
                ("\u{1}", Err(Fault::Malformed)),
                ("\u{1f}", Err(Fault::Malformed)),
                ("\n", Err(Fault::Malformed)),
                ("\\q", Err(Fault::Malformed)),
                ("\u{7f}\u{80}\u{ff}", Ok(())),
            ] {
                let text = format!("\"{before}{special}{after}\"");
                assert_eq!(check(&text, 1), verdict, "{text:?}");
            }
            let cut = format!("[\"{before}\", \"{after}\"]");
            assert_eq!(check(&cut, 1), Ok(()), "{cut:?}");
            let open = format!("\"{before}");
            assert_eq!(check(&open, 1), Err(Fault::Malformed), "{open:?}");
        }
        assert_eq!(plain(b"0123456789abcdef\"x"), 16);
        assert_eq!(plain(b"01234567\\"), 8);
        assert_eq!(plain(b"\x1f"), 0);
        assert_eq!(plain("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}".as_bytes()), 10);
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(check("[[[[1]]]]", 4), Ok(()));
        assert_eq!(check("[[[[1]]]]", 3), Err(Fault::TooDeep));
        assert_eq!(check("{\"a\":[{\"b\":[]}]}", 4), Ok(()));
        assert_eq!(check("{\"a\":[{\"b\":[]}]}", 3), Err(Fault::TooDeep));
        assert_eq!(check("[[1],[2],[[3]]]", 3), Ok(()));
        assert_eq!(check("1", 1), Ok(()));
        assert_eq!(
            check("\"[[[[[[\"", 1),
            Ok(()),
            "brackets in strings do not nest"
        );
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check(&deep, MAX_DEPTH), Ok(()));
        assert_eq!(check(&deep, 1000), Ok(()), "capped at MAX_DEPTH");
        let deeper = format!("[{deep}]");
        assert_eq!(check(&deeper, 1000), Err(Fault::TooDeep));
    }

    #[test]
    fn a_depth_bomb_is_refused_at_once() {
        let bomb = "[".repeat(1 << 20);
        assert_eq!(check(&bomb, 32), Err(Fault::TooDeep));
        let objects = "{\"a\":".repeat(1 << 18);
        assert_eq!(check(&objects, 32), Err(Fault::TooDeep));
    }

    /// serde_json refuses what RFC 8259 allows: a number beyond f64, an unpaired surrogate
    /// escape (its errors for those).
    fn serde_stricter(message: &str) -> bool {
        [
            "number out of range",
            "surrogate",
            "hex escape",
            "unicode code point",
        ]
        .iter()
        .any(|known| message.contains(known))
    }

    /// Texts built from JSON's pieces at random (a fixed seed), each judged by the checker and
    /// by serde_json: they agree, except where serde_json is stricter than RFC 8259.
    #[test]
    fn agrees_with_serde_json_on_generated_texts() {
        const PIECES: [&str; 27] = [
            "\"0123456789abcdef\\u0041xyz\"",
            "\"0123456789abcdefgh",
            "\"\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\t\"",
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "\"a\"",
            "\"\\u00e9\"",
            "\"\\x\"",
            "1",
            "-0.5e-3",
            "01",
            "1.",
            "true",
            "nul",
            " ",
            "\n",
            "\"",
            "\\",
            "\"k\":",
            "1e400",
            "\"\\ud800\"",
            "x",
            "null",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = next() % 12;
            let text: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let verdict = check(&text, MAX_DEPTH);
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(_) => assert_eq!(verdict, Ok(()), "serde_json reads {text:?}"),
                Err(error) => {
                    let message = error.to_string();
                    if !serde_stricter(&message) {
                        assert_eq!(verdict, Err(Fault::Malformed), "{text:?}: {message}");
                    }
                }
            }
        }
    }
}
