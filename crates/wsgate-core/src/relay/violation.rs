//! What a peer can do wrong on the wire, and the close code it earns.

/// Why a peer's stream was refused: each maps to the close code RFC 6455 section 7.4.1 gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    Protocol(&'static str),
    TooBig,
    InvalidUtf8,
}

impl Violation {
    pub fn code(self) -> u16 {
        match self {
            Violation::Protocol(_) => 1002,
            Violation::TooBig => 1009,
            Violation::InvalidUtf8 => 1007,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Violation::Protocol(_) => "protocol error",
            Violation::TooBig => "message too big",
            Violation::InvalidUtf8 => "invalid UTF-8",
        }
    }
}
