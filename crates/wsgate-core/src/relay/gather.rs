//! Client messages the proxy reads whole instead of forwarding as they pass: on a route with
//! in-band refresh, a text message that starts with the refresh prefix; on a route with message
//! rules, every message the rules judge (text with `text: json`; binary with `binary: refuse`
//! is refused at its first frame, nothing of it held).
//!
//! Every other message streams through the pump untouched. Which path a message takes is
//! decided on its first frame, from the first bytes of its payload (the prefix's length at
//! most, so the decision waits for a few bytes, never for the message): a message that cannot
//! start with the prefix streams; one that does is held whole (unmasked, up to `limit` bytes
//! after the prefix) and handed to the session. A first fragment shorter than the prefix that
//! matches as far as it goes is held too, and if the whole message turns out not to be a
//! refresh it goes on to the backend as one frame with a mask of the proxy's own.

use super::frame::{self, Header, Opcode, apply_mask};
use crate::messages::{Binary, Rules};

/// The most a held message reserves before its bytes arrive.
const HELD_UPFRONT: usize = 16 * 1024;

/// What a route asks the up pump to gather.
pub(crate) struct Gather {
    /// `auth.refresh_prefix`.
    pub prefix: Box<[u8]>,
    /// The most bytes a refresh carries after the prefix; a longer one is refused unread.
    pub limit: usize,
}

/// How a message is relayed, decided at its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// Forwarded as its bytes arrive.
    Stream,
    /// Held whole before anything of it goes on.
    Hold,
    /// Too few payload bytes are in yet to tell.
    Undecided,
    /// Refused by the message rules from its first frame (binary on a `binary: refuse` route).
    Refuse,
}

/// The path of the message whose first frame starts `input` (at a message boundary), on a
/// route with refresh (`gather`), message rules, or both. The rules hold every JSON text
/// whole; a refresh among them is still the proxy's, told apart once the message is whole.
pub(super) fn path(gather: Option<&Gather>, rules: Option<&Rules>, input: &[u8]) -> Path {
    if let Some(rules) = rules
        && let Ok(Some((header, _))) = frame::parse_header(input)
    {
        match header.opcode {
            Opcode::Text if rules.holds_text() => return Path::Hold,
            Opcode::Binary if rules.binary == Binary::Refuse => return Path::Refuse,
            _ => {}
        }
    }
    gather.map_or(Path::Stream, |gather| gather.path(input))
}

impl Gather {
    /// The path of the message whose first frame starts `input` (at a message boundary).
    pub(super) fn path(&self, input: &[u8]) -> Path {
        let Ok(Some((header, at))) = frame::parse_header(input) else {
            // Incomplete headers are read on; broken ones are the reader's to refuse.
            return Path::Stream;
        };
        if header.opcode != Opcode::Text {
            return Path::Stream;
        }
        let want = self.prefix.len().min(header.len as usize);
        let Some(start) = input.get(at..at + want) else {
            return Path::Undecided;
        };
        let mut clear = [0u8; 64];
        let clear = &mut clear[..want.min(64)];
        clear.copy_from_slice(&start[..clear.len()]);
        if let Some(mask) = header.mask {
            apply_mask(clear, mask, 0);
        }
        if !self.prefix.starts_with(clear) {
            return Path::Stream;
        }
        if want == self.prefix.len() || !header.fin {
            Path::Hold
        } else {
            // A whole message shorter than the prefix.
            Path::Stream
        }
    }
}

/// A message being held.
pub(super) struct Held {
    opcode: Opcode,
    /// The payload so far, unmasked (up to the prefix and `limit` bytes).
    bytes: Vec<u8>,
    /// The payload's length, held or not.
    len: usize,
    /// The current frame's mask and how far into its payload the next byte is.
    mask: Option<[u8; 4]>,
    offset: u64,
}

/// A held message, once whole.
pub(super) enum Whole {
    /// A refresh: the text after the prefix (empty when over the limit: no token is).
    Refresh(String),
    /// Not a refresh: the message, unmasked, to judge and write to the backend as one frame.
    Message { opcode: Opcode, payload: Vec<u8> },
}

impl Held {
    pub(super) fn new(header: &Header) -> Held {
        Held {
            opcode: header.opcode,
            // Room for the first frame as declared (the reader has capped it at the message
            // limit), but no more than a large read buffer until its bytes actually arrive.
            bytes: Vec::with_capacity((header.len as usize).min(HELD_UPFRONT)),
            len: 0,
            mask: header.mask,
            offset: 0,
        }
    }

    /// A continuation frame of the message starts.
    pub(super) fn frame(&mut self, header: &Header) {
        self.mask = header.mask;
        self.offset = 0;
    }

    /// The next payload bytes of the current frame, as they arrived.
    pub(super) fn payload(&mut self, gather: Option<&Gather>, masked: &[u8]) {
        let most = gather.map_or(usize::MAX, |gather| gather.prefix.len() + gather.limit + 1);
        let capped = self.bytes.len() >= most;
        if !capped {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(masked);
            if let Some(mask) = self.mask {
                apply_mask(&mut self.bytes[at..], mask, self.offset);
            }
            // A refresh keeps no more than it may carry; anything else is kept whole (the
            // reader caps it at `max_message_size`).
            if let Some(gather) = gather
                && self.bytes.starts_with(&gather.prefix)
            {
                self.bytes.truncate(most);
            }
        }
        self.offset += masked.len() as u64;
        self.len += masked.len();
    }

    /// What becomes of the whole message.
    pub(super) fn finish(self, gather: Option<&Gather>) -> Whole {
        if let Some(gather) = gather
            && self.opcode == Opcode::Text
            && let Some(token) = self.bytes.strip_prefix(&*gather.prefix)
        {
            if self.len > gather.prefix.len() + gather.limit {
                return Whole::Refresh(String::new());
            }
            return Whole::Refresh(String::from_utf8_lossy(token).into_owned());
        }
        // Not a refresh: nothing of it was let go.
        Whole::Message {
            opcode: self.opcode,
            payload: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather() -> Gather {
        Gather {
            prefix: b"wsgate.refresh:".to_vec().into_boxed_slice(),
            limit: 8,
        }
    }

    fn text(payload: &[u8], fin: bool) -> Vec<u8> {
        let mut frame = frame::encode_data(Opcode::Text, payload, Some([1, 2, 3, 4]));
        if !fin {
            frame[0] &= 0x7f;
        }
        frame
    }

    #[test]
    fn a_message_is_held_only_when_it_can_start_with_the_prefix() {
        let gather = gather();
        assert_eq!(
            gather.path(&text(b"hello there, world", true)),
            Path::Stream
        );
        assert_eq!(gather.path(&text(b"wsgate.refresh:abc", true)), Path::Hold);
        let binary = frame::encode_data(Opcode::Binary, b"wsgate.refresh:abc", Some([1; 4]));
        assert_eq!(gather.path(&binary), Path::Stream);
        // Only the header and part of the prefix are in.
        assert_eq!(
            gather.path(&text(b"wsgate.refresh:abc", true)[..10]),
            Path::Undecided
        );
        assert_eq!(
            gather.path(&text(b"hello there", true)[..8]),
            Path::Undecided
        );
        // A first fragment shorter than the prefix, matching so far: held to find out.
        assert_eq!(gather.path(&text(b"wsgate", false)), Path::Hold);
        assert_eq!(gather.path(&text(b"wsgate", true)), Path::Stream);
        assert_eq!(gather.path(&text(b"wsgxte", false)), Path::Stream);
    }

    #[test]
    fn rules_hold_json_text_and_refuse_binary_at_the_first_frame() {
        let rules = Rules {
            text: crate::messages::Text::Json,
            binary: Binary::Refuse,
            ..Rules::default()
        };
        let binary = frame::encode_data(Opcode::Binary, b"x", Some([1; 4]));
        assert_eq!(path(None, Some(&rules), &text(b"{}", true)), Path::Hold);
        assert_eq!(path(None, Some(&rules), &binary), Path::Refuse);
        assert_eq!(path(None, None, &binary), Path::Stream);
        // A refresh on a route with rules is held too, and told apart once whole.
        let gather = gather();
        assert_eq!(
            path(
                Some(&gather),
                Some(&rules),
                &text(b"wsgate.refresh:abc", true)
            ),
            Path::Hold
        );
        let any = Rules::default();
        assert_eq!(path(None, Some(&any), &text(b"{}", true)), Path::Stream);
        assert_eq!(path(None, Some(&any), &binary), Path::Stream);
    }

    #[test]
    fn a_held_message_is_a_refresh_or_goes_on_whole() {
        let gather = gather();
        let mut held = Held::new(&Header {
            fin: false,
            opcode: Opcode::Text,
            mask: Some([9, 8, 7, 6]),
            len: 6,
        });
        let mut part = b"wsgate".to_vec();
        apply_mask(&mut part, [9, 8, 7, 6], 0);
        held.payload(Some(&gather), &part[..2]);
        held.payload(Some(&gather), &part[2..]);
        held.frame(&Header {
            fin: true,
            opcode: Opcode::Continuation,
            mask: Some([5, 5, 5, 5]),
            len: 12,
        });
        let mut rest = b".refresh:tok".to_vec();
        apply_mask(&mut rest, [5, 5, 5, 5], 0);
        held.payload(Some(&gather), &rest);
        assert!(matches!(held.finish(Some(&gather)), Whole::Refresh(token) if token == "tok"));

        let mut other = Held::new(&Header {
            fin: false,
            opcode: Opcode::Text,
            mask: None,
            len: 3,
        });
        other.payload(Some(&gather), b"wsg");
        other.payload(Some(&gather), b"!!");
        let Whole::Message { opcode, payload } = other.finish(Some(&gather)) else {
            panic!("not a refresh");
        };
        assert_eq!((opcode, payload.as_slice()), (Opcode::Text, &b"wsg!!"[..]));
    }

    #[test]
    fn a_refresh_over_the_limit_carries_no_token() {
        let gather = gather();
        let mut held = Held::new(&Header {
            fin: true,
            opcode: Opcode::Text,
            mask: None,
            len: 40,
        });
        held.payload(Some(&gather), b"wsgate.refresh:0123456789abcdefghijklmnopq");
        assert!(matches!(held.finish(Some(&gather)), Whole::Refresh(token) if token.is_empty()));
        // A long message that only began like the prefix is kept whole.
        let mut long = Held::new(&Header {
            fin: false,
            opcode: Opcode::Text,
            mask: None,
            len: 4,
        });
        long.payload(Some(&gather), b"wsga");
        long.payload(Some(&gather), &[b'x'; 1000]);
        let Whole::Message { payload, .. } = long.finish(Some(&gather)) else {
            panic!("not a refresh");
        };
        assert_eq!(payload.len(), 1004);
    }
}
