//! The message rules' bounded JSON check (messages/json.rs), against serde_json as the oracle.
//!
//! Input: byte 0 picks `max_depth` (1 to 128), the rest is the message (UTF-8). Beyond "no
//! panic" (and no deep recursion: the checker has none), it checks that the checker and
//! serde_json agree on what is JSON, except where serde_json is stricter than RFC 8259 (a
//! number beyond f64, an unpaired surrogate escape); that a refusal for depth means the value
//! nests deeper than `max_depth`; and that a larger `max_depth` never refuses what a smaller
//! one accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wsgate_core::messages::json::{self, Fault, MAX_DEPTH};

/// Nesting of arrays and objects (`[[1]]` is 2).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let max_depth = usize::from(first) % MAX_DEPTH + 1;
    let verdict = json::check(text, max_depth);
    let deepest = json::check(text, MAX_DEPTH);
    if verdict.is_ok() {
        assert_eq!(deepest, Ok(()), "a larger max_depth refused {text:?}");
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            let nesting = depth(&value);
            if nesting <= max_depth {
                assert_eq!(verdict, Ok(()), "serde_json reads {text:?}");
            } else {
                assert_eq!(verdict, Err(Fault::TooDeep), "{text:?} nests {nesting}");
            }
        }
        Err(error) => {
            let message = error.to_string();
            // Its errors for a number beyond f64 and an unpaired surrogate escape.
            let stricter = [
                "number out of range",
                "surrogate",
                "hex escape",
                "unicode code point",
                "recursion limit",
            ]
            .iter()
            .any(|known| message.contains(known));
            if !stricter {
                assert_ne!(deepest, Ok(()), "serde_json refuses {text:?}: {message}");
            }
        }
    }
});
