//! Message rules (`routes[].messages`): what a route lets a client send to its backend, each
//! message judged whole. Text may have to be one JSON value ([`json`] checks it without
//! building anything, depth first), of a bounded depth, satisfying a schema ([`schema`]);
//! binary may be refused. The relay holds such messages whole, asks [`Rules::judge`], and
//! forwards, drops or closes on the answer; message content never leaves this module.

pub mod json;
pub mod schema;

use self::json::Fault;
pub use self::schema::Schema;

/// `max_depth` when absent.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// A route's `messages` section, validated (its schema compiled).
#[derive(Debug)]
pub struct Rules {
    pub text: Text,
    pub binary: Binary,
    /// Nesting of arrays and objects allowed in a JSON message (1 to [`json::MAX_DEPTH`]).
    pub max_depth: usize,
    /// Only with `text: json`.
    pub schema: Option<Schema>,
    pub on_invalid: OnInvalid,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            text: Text::Any,
            binary: Binary::Allow,
            max_depth: DEFAULT_MAX_DEPTH,
            schema: None,
            on_invalid: OnInvalid::Close,
        }
    }
}

/// `messages.text`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Any (UTF-8) text.
    Any,
    /// Exactly one JSON value (RFC 8259).
    Json,
}

/// `messages.binary`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Allow,
    Refuse,
}

/// `messages.on_invalid`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// Close the session: 1007 for malformed JSON, 1008 otherwise.
    Close,
    /// Drop the message (no answer) and go on.
    Drop,
}

/// Why a message was refused: the metric's `reason` label and the close it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not one JSON value.
    Json,
    /// Nested deeper than `max_depth`.
    Depth,
    /// Fails the schema.
    Schema,
    /// Binary on a `binary: refuse` route.
    Binary,
}

impl Rejection {
    pub const ALL: [Rejection; 4] = [
        Rejection::Json,
        Rejection::Depth,
        Rejection::Schema,
        Rejection::Binary,
    ];

    /// The `reason` label of `wsgate_messages_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Json => "json",
            Rejection::Depth => "depth",
            Rejection::Schema => "schema",
            Rejection::Binary => "binary",
        }
    }

    /// The close code the client gets with `on_invalid: close`.
    pub fn code(self) -> u16 {
        match self {
            Rejection::Json => 1007,
            _ => 1008,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Json => "invalid message",
            _ => "policy violation",
        }
    }
}

impl Rules {
    /// Text messages must be read whole before any of them goes on.
    pub fn holds_text(&self) -> bool {
        self.text == Text::Json
    }

    /// Judges a whole message's payload (unmasked); `text` tells a text message from binary.
    pub fn judge(&self, text: bool, payload: &[u8]) -> Result<(), Rejection> {
        if !text {
            return match self.binary {
                Binary::Allow => Ok(()),
                Binary::Refuse => Err(Rejection::Binary),
            };
        }
        if self.text == Text::Any {
            return Ok(());
        }
        // The relay has checked text for UTF-8 already; this is what lets it be a `&str`.
        let text = std::str::from_utf8(payload).map_err(|_| Rejection::Json)?;
        json::check(text, self.max_depth).map_err(|fault| match fault {
            Fault::Malformed => Rejection::Json,
            Fault::TooDeep => Rejection::Depth,
        })?;
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        // Well-formed and shallow: now a value may be built. serde_json is stricter than RFC
        // 8259 in two places (a number beyond f64, an unpaired surrogate escape): such a
        // message cannot be judged, and counts as malformed.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| Rejection::Json)?;
        if schema.accepts(&value) {
            Ok(())
        } else {
            Err(Rejection::Schema)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(max_depth: usize) -> Rules {
        Rules {
            text: Text::Json,
            max_depth,
            ..Rules::default()
        }
    }

    #[test]
    fn rules_judge_each_kind() {
        let any = Rules::default();
        assert_eq!(any.judge(true, b"not json"), Ok(()));
        assert_eq!(any.judge(false, &[0xff, 0]), Ok(()));
        assert!(!any.holds_text());
        let refuse = Rules {
            binary: Binary::Refuse,
            ..Rules::default()
        };
        assert_eq!(refuse.judge(false, b"{}"), Err(Rejection::Binary));
        let json = json(2);
        assert!(json.holds_text());
        assert_eq!(json.judge(true, b"{\"a\":[1]}"), Ok(()));
        assert_eq!(json.judge(true, b"{\"a\":[[1]]}"), Err(Rejection::Depth));
        assert_eq!(json.judge(true, b"{\"a\":"), Err(Rejection::Json));
        assert_eq!(json.judge(true, &[b'"', 0xff, b'"']), Err(Rejection::Json));
    }

    #[test]
    fn closes_and_labels() {
        assert_eq!(Rejection::Json.code(), 1007);
        assert_eq!(Rejection::Json.reason(), "invalid message");
        for rejection in [Rejection::Depth, Rejection::Schema, Rejection::Binary] {
            assert_eq!(rejection.code(), 1008);
            assert_eq!(rejection.reason(), "policy violation");
        }
        let labels: Vec<_> = Rejection::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["json", "depth", "schema", "binary"]);
    }
}
