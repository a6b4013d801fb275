//! The relay's frame handling (crates/wsgate-core/src/relay/frame.rs): `frame::Reader` over
//! one direction's bytes, as the relay drives it (unread bytes kept and offered again with
//! what follows), plus the proxy's own frames (`encode_control`, `close_payload`) and
//! `apply_mask`.
//!
//! Input: byte 0 holds the rules (bit 0: frames must be masked, bit 1: text is checked for
//! UTF-8), bytes 1-2 the message size limit, byte 3 seeds the chunk sizes; the rest is the
//! byte stream.
//!
//! Beyond "no panic", it checks:
//! - the stream read whole and read in small chunks gives the same frames, control payloads,
//!   payload bytes and violation (chunk boundaries are the network's, not the peer's choice);
//! - no step claims more bytes than it was given, and every step but `NeedMore` consumes some;
//! - every data frame's payload adds up to its header's length, no message exceeds the limit,
//!   and with UTF-8 checks on, the text forwarded so far is always a valid UTF-8 prefix (an
//!   invalid byte is never forwarded);
//! - a close frame handed over has an empty payload or a valid code and a UTF-8 reason;
//! - the proxy's own control frames read back as what was written, and masking in pieces at
//!   offsets equals masking at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate_core::frame::{self, Opcode, Reader, Rules, Step, Violation};

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Data {
        opcode: Opcode,
        fin: bool,
        len: u64,
        first: bool,
    },
    /// Unmasked payload bytes; consecutive chunks are merged.
    Bytes(Vec<u8>),
    Control {
        opcode: Opcode,
        payload: Vec<u8>,
    },
    Violation(Violation),
}

/// True when `bytes` is valid UTF-8 or a valid prefix of it.
fn utf8_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none(),
    }
}

struct Run {
    reader: Reader,
    rules: Rules,
    events: Vec<Event>,
    /// Current data frame: mask, payload offset, bytes left.
    mask: Option<[u8; 4]>,
    offset: u64,
    left: u64,
    /// The text message in progress (unmasked), when UTF-8 is checked.
    text: Option<Vec<u8>>,
    message_len: u64,
    failed: bool,
}

impl Run {
    fn new(rules: Rules) -> Run {
        Run {
            reader: Reader::new(rules),
            rules,
            events: Vec::new(),
            mask: None,
            offset: 0,
            left: 0,
            text: None,
            message_len: 0,
            failed: false,
        }
    }

    fn bytes(&mut self, chunk: &[u8]) {
        let mut clear = chunk.to_vec();
        if let Some(mask) = self.mask {
            frame::apply_mask(&mut clear, mask, self.offset);
        }
        self.offset += chunk.len() as u64;
        if let Some(text) = &mut self.text {
            text.extend_from_slice(&clear);
            assert!(utf8_prefix(text), "invalid UTF-8 was forwarded");
        }
        match self.events.last_mut() {
            Some(Event::Bytes(bytes)) => bytes.extend_from_slice(&clear),
            _ => self.events.push(Event::Bytes(clear)),
        }
    }

    /// Feeds `input` (everything not yet consumed); returns how many bytes were consumed.
    fn feed(&mut self, input: &[u8]) -> usize {
        let mut at = 0;
        while !self.failed {
            let step = match self.reader.step(&input[at..]) {
                Ok(step) => step,
                Err(violation) => {
                    self.events.push(Event::Violation(violation));
                    self.failed = true;
                    break;
                }
            };
            let (len, message_end) = match step {
                Step::NeedMore => break,
                Step::Data {
                    header,
                    len,
                    first,
                    frame_end,
                    message_end,
                } => {
                    assert!(len >= 2 && len <= frame::MAX_HEADER);
                    assert!(!header.opcode.is_control());
                    assert_eq!(header.mask.is_some(), self.rules.masked);
                    assert_eq!(frame_end, header.len == 0);
                    assert_eq!(message_end, frame_end && header.fin);
                    if first {
                        self.message_len = 0;
                        self.text =
                            (self.rules.utf8 && header.opcode == Opcode::Text).then(Vec::new);
                    }
                    self.message_len += header.len;
                    assert!(self.message_len <= self.rules.max_message);
                    self.mask = header.mask;
                    self.offset = 0;
                    self.left = header.len;
                    self.events.push(Event::Data {
                        opcode: header.opcode,
                        fin: header.fin,
                        len: header.len,
                        first,
                    });
                    (len, message_end)
                }
                Step::Payload {
                    len,
                    frame_end,
                    message_end,
                } => {
                    assert!(len > 0 && len <= input.len() - at);
                    assert!(len as u64 <= self.left, "payload past the frame");
                    self.left -= len as u64;
                    assert_eq!(frame_end, self.left == 0);
                    self.bytes(&input[at..at + len]);
                    (len, message_end)
                }
                Step::Control {
                    header,
                    len,
                    payload,
                } => {
                    assert!(header.opcode.is_control() && header.fin);
                    assert!(len as u64 >= header.len + 2);
                    let body = payload.payload();
                    assert_eq!(body.len() as u64, header.len);
                    if header.opcode == Opcode::Close && !body.is_empty() {
                        let code = payload.close_code().expect("two bytes or more");
                        assert!(frame::valid_close_code(code), "close code {code} passed");
                        assert!(std::str::from_utf8(&body[2..]).is_ok());
                    }
                    self.events.push(Event::Control {
                        opcode: header.opcode,
                        payload: body.to_vec(),
                    });
                    (len, false)
                }
            };
            assert!(
                len > 0 && len <= input.len() - at,
                "step claims {len} bytes"
            );
            at += len;
            if message_end {
                if let Some(text) = self.text.take() {
                    assert!(std::str::from_utf8(&text).is_ok(), "text message not UTF-8");
                }
            }
        }
        at
    }
}

/// Reads `stream` arriving in chunks of the given sizes (cycled), as the relay does.
fn read(rules: Rules, stream: &[u8], sizes: &[usize]) -> Vec<Event> {
    let mut run = Run::new(rules);
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut size = sizes.iter().cycle();
    while at < stream.len() && !run.failed {
        let n = (*size.next().expect("sizes")).min(stream.len() - at);
        pending.extend_from_slice(&stream[at..at + n]);
        at += n;
        let used = run.feed(&pending);
        pending.drain(..used);
    }
    run.events
}

/// Events equal, except that before a violation the bytes forwarded of the failing frame
/// may differ in length (a chunk is checked whole), as long as one is a prefix of the other.
fn same(a: &[Event], b: &[Event]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    a.iter().zip(b).enumerate().all(|(i, pair)| match pair {
        (Event::Bytes(x), Event::Bytes(y))
            if i + 2 == n && matches!(a[n - 1], Event::Violation(_)) =>
        {
            x.starts_with(y) || y.starts_with(x)
        }
        (x, y) => x == y,
    })
}

/// Drops a trailing partial `Bytes` just before a violation, which one reading may have
/// (forwarded some payload) and another not (checked it as part of a larger chunk).
fn normal(mut events: Vec<Event>) -> Vec<Event> {
    let n = events.len();
    if n >= 2 && matches!(events[n - 1], Event::Violation(_)) {
        if matches!(events[n - 2], Event::Bytes(_)) {
            events.remove(n - 2);
        }
    }
    events
}

fn own_frames(data: &[u8]) {
    let opcodes = [Opcode::Ping, Opcode::Pong, Opcode::Close];
    let opcode = opcodes[usize::from(data.first().copied().unwrap_or(0) % 3)];
    let mut key = [0u8; 4];
    for (k, b) in key.iter_mut().zip(data.iter().skip(1)) {
        *k = *b;
    }
    let body = data.get(5..).unwrap_or_default();
    let (payload, len) = if opcode == Opcode::Close {
        let code = u16::from_be_bytes([
            data.get(1).copied().unwrap_or(3),
            data.get(2).copied().unwrap_or(232),
        ]);
        let reason = String::from_utf8_lossy(body);
        let (bytes, len) = frame::close_payload(code, &reason);
        if !frame::valid_close_code(code) {
            return;
        }
        (bytes.to_vec(), len)
    } else {
        let len = body.len().min(frame::MAX_CONTROL);
        (body[..len].to_vec(), len)
    };
    for masked in [false, true] {
        let mut out = [0u8; frame::MAX_CONTROL_FRAME];
        let written =
            frame::encode_control(opcode, &payload[..len], masked.then_some(key), &mut out);
        let mut reader = Reader::new(Rules {
            masked,
            max_message: 0,
            utf8: true,
        });
        match reader.step(&out[..written]) {
            Ok(Step::Control {
                header,
                len: read,
                payload: got,
            }) => {
                assert_eq!(read, written);
                assert_eq!(header.opcode, opcode);
                assert_eq!(got.payload(), &payload[..len]);
            }
            other => panic!("own {opcode:?} frame read back as {other:?}"),
        }
    }
    // Masking in two pieces at an offset equals masking at once.
    let split = usize::from(key[0]) % (body.len() + 1);
    let mut whole = body.to_vec();
    frame::apply_mask(&mut whole, key, 0);
    let mut pieces = body.to_vec();
    let (a, b) = pieces.split_at_mut(split);
    frame::apply_mask(a, key, 0);
    frame::apply_mask(b, key, split as u64);
    assert_eq!(whole, pieces);
}

fuzz_target!(|data: &[u8]| {
    let [flags, hi, lo, seed, stream @ ..] = data else {
        return;
    };
    let rules = Rules {
        masked: flags & 1 != 0,
        utf8: flags & 2 != 0,
        max_message: u64::from(u16::from_be_bytes([*hi, *lo])),
    };
    let whole = read(rules, stream, &[usize::MAX]);
    let mut state = u32::from(*seed) | 1;
    let sizes: Vec<usize> = (0..16)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            1 + (state >> 16) as usize % 23
        })
        .collect();
    let chunked = read(rules, stream, &sizes);
    assert!(
        same(&whole, &chunked) || normal(whole) == normal(chunked),
        "chunking changed what was read"
    );
    own_frames(stream);
});
