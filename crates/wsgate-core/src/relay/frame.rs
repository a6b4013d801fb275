//! WebSocket frames as the relay sees them: a header to check, then payload bytes to move.
//!
//! The relay forwards frames as bytes, without re-assembling messages or re-masking payloads
//! (a client's masked frame is as valid for the backend as it was for the proxy). [`Reader`]
//! enforces RFC 6455 on one direction as the bytes pass: reserved bits and opcodes, masking,
//! fragmentation order, control frame rules, close codes, the message size limit (from the
//! header, before the payload is read) and UTF-8 in text messages (as each chunk passes, so
//! an invalid byte is never forwarded). Control frames are small and handed over whole.

use super::utf8::Utf8;
pub use super::violation::Violation;

/// The longest frame header: 2 bytes, 8 of extended length and 4 of mask.
pub const MAX_HEADER: usize = 14;
/// The longest control frame payload.
pub const MAX_CONTROL: usize = 125;
/// The longest whole control frame.
pub const MAX_CONTROL_FRAME: usize = MAX_HEADER + MAX_CONTROL;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xa => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xa,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

/// Reads a frame header at the start of `input`; `Ok(None)` while it is incomplete.
/// Returns the header and its length in bytes.
pub fn parse_header(input: &[u8]) -> Result<Option<(Header, usize)>, Violation> {
    let [first, second, ..] = *input else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(Violation::Protocol("reserved bit set"));
    }
    let opcode = Opcode::from_bits(first & 0x0f).ok_or(Violation::Protocol("reserved opcode"))?;
    let fin = first & 0x80 != 0;
    let (len, mut at) = match second & 0x7f {
        126 => match input.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match input.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(bytes) => {
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(Violation::Protocol("length over 2^63"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let mask = if second & 0x80 != 0 {
        match input
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        {
            Some(mask) => {
                at += 4;
                Some(mask)
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    if opcode.is_control() {
        if !fin {
            return Err(Violation::Protocol("fragmented control frame"));
        }
        if len > MAX_CONTROL as u64 {
            return Err(Violation::Protocol("control frame over 125 bytes"));
        }
    }
    Ok(Some((
        Header {
            fin,
            opcode,
            mask,
            len,
        },
        at,
    )))
}

/// Writes a whole frame of the proxy's own (a ping or a close) into `out`, masked with `mask`
/// when given; returns its length. `payload` is at most 125 bytes.
pub fn encode_control(
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut [u8; MAX_CONTROL_FRAME],
) -> usize {
    let len = payload.len().min(MAX_CONTROL);
    out[0] = 0x80 | opcode.bits();
    out[1] = len as u8 | if mask.is_some() { 0x80 } else { 0 };
    let mut at = 2;
    if let Some(key) = mask {
        out[2..6].copy_from_slice(&key);
        at = 6;
    }
    out[at..at + len].copy_from_slice(&payload[..len]);
    if let Some(key) = mask {
        apply_mask(&mut out[at..at + len], key, 0);
    }
    at + len
}

/// A whole data frame (`fin` set) carrying `payload`, masked with `mask` when given: a
/// message the proxy held whole goes on as one frame.
pub fn encode_data(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_HEADER + payload.len());
    out.push(0x80 | opcode.bits());
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n => match u16::try_from(n) {
            Ok(n) => {
                out.push(bit | 126);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Err(_) => {
                out.push(bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        },
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    let at = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[at..], key, 0);
    }
    out
}

/// The payload of a close frame: code (big endian) and reason.
pub fn close_payload(code: u16, reason: &str) -> ([u8; MAX_CONTROL], usize) {
    let mut payload = [0u8; MAX_CONTROL];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    // Reasons are the proxy's own ASCII strings; cut at a character boundary regardless.
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    (payload, 2 + end)
}

/// XORs `bytes` with `mask`, the first byte being at `offset` of the payload.
pub fn apply_mask(bytes: &mut [u8], mask: [u8; 4], offset: u64) {
    let mut key = mask;
    key.rotate_left((offset % 4) as usize);
    let word = u32::from_ne_bytes(key);
    let mut chunks = bytes.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// Close codes a peer may send (RFC 6455 section 7.4 and the IANA registry).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What one direction requires of its frames.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Frames must be masked (client to server) or must not be (server to client).
    pub masked: bool,
    /// The largest message, summed over its fragments.
    pub max_message: u64,
    /// Text messages are checked for UTF-8.
    pub utf8: bool,
}

/// A whole control frame's payload, unmasked.
#[derive(Clone, Copy)]
pub struct Control {
    bytes: [u8; MAX_CONTROL],
    len: u8,
}

impl Control {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// A close frame's code, if it carries one.
    pub fn close_code(&self) -> Option<u16> {
        match self.payload() {
            [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("len", &self.len).finish()
    }
}

/// One step through a direction's bytes.
#[derive(Debug)]
pub enum Step {
    /// The input ends inside a header or a control frame: read more (the caller keeps the
    /// unread bytes and offers them again with what follows).
    NeedMore,
    /// A data frame's header, `len` bytes of input. `first` when it starts a message;
    /// `frame_end` / `message_end` when its payload is empty and it ends the frame/message.
    Data {
        header: Header,
        len: usize,
        first: bool,
        frame_end: bool,
        message_end: bool,
    },
    /// `len` bytes of the current data frame's payload.
    Payload {
        len: usize,
        frame_end: bool,
        message_end: bool,
    },
    /// A whole control frame of `len` bytes of input.
    Control {
        header: Header,
        len: usize,
        payload: Control,
    },
}

/// Follows one direction's frames; see the module documentation.
#[derive(Debug)]
pub struct Reader {
    rules: Rules,
    /// Payload bytes left in the current data frame.
    remaining: u64,
    /// Payload bytes of the current data frame already read (the masking offset).
    offset: u64,
    mask: Option<[u8; 4]>,
    fin: bool,
    /// A data message has started and not ended.
    in_message: bool,
    /// The message in progress is text (and `rules.utf8`: checked).
    text: bool,
    message_len: u64,
    utf8: Utf8,
}

impl Reader {
    pub fn new(rules: Rules) -> Reader {
        Reader {
            rules,
            remaining: 0,
            offset: 0,
            mask: None,
            fin: false,
            in_message: false,
            text: false,
            message_len: 0,
            utf8: Utf8::default(),
        }
    }

    /// Inside a data frame's payload.
    pub fn in_payload(&self) -> bool {
        self.remaining > 0
    }

    /// The next data frame starts a message (none is in progress).
    pub fn between_messages(&self) -> bool {
        !self.in_message && self.remaining == 0
    }

    /// Reads the next header, control frame or payload chunk from `input`.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, Violation> {
        if self.remaining > 0 {
            return self.payload(input);
        }
        let Some((header, len)) = parse_header(input)? else {
            return Ok(Step::NeedMore);
        };
        if header.mask.is_some() != self.rules.masked {
            return Err(Violation::Protocol(if self.rules.masked {
                "unmasked client frame"
            } else {
                "masked server frame"
            }));
        }
        if header.opcode.is_control() {
            let whole = len + header.len as usize;
            let Some(bytes) = input.get(len..whole) else {
                return Ok(Step::NeedMore);
            };
            let mut payload = Control {
                bytes: [0; MAX_CONTROL],
                len: bytes.len() as u8,
            };
            payload.bytes[..bytes.len()].copy_from_slice(bytes);
            if let Some(mask) = header.mask {
                apply_mask(&mut payload.bytes[..bytes.len()], mask, 0);
            }
            if header.opcode == Opcode::Close {
                check_close(payload.payload())?;
            }
            return Ok(Step::Control {
                header,
                len: whole,
                payload,
            });
        }
        let first = match (header.opcode, self.in_message) {
            (Opcode::Continuation, false) => {
                return Err(Violation::Protocol("continuation without a message"));
            }
            (Opcode::Continuation, true) => false,
            (_, true) => return Err(Violation::Protocol("new message inside a fragmented one")),
            (_, false) => true,
        };
        let total = if first {
            header.len
        } else {
            self.message_len.saturating_add(header.len)
        };
        if total > self.rules.max_message {
            return Err(Violation::TooBig);
        }
        if first {
            self.in_message = true;
            self.text = self.rules.utf8 && header.opcode == Opcode::Text;
        }
        self.message_len = total;
        self.remaining = header.len;
        self.offset = 0;
        self.mask = header.mask;
        self.fin = header.fin;
        let frame_end = header.len == 0;
        let message_end = frame_end && header.fin;
        if message_end {
            self.end_message()?;
        }
        Ok(Step::Data {
            header,
            len,
            first,
            frame_end,
            message_end,
        })
    }

    fn payload(&mut self, input: &[u8]) -> Result<Step, Violation> {
        let len = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        if len == 0 {
            return Ok(Step::NeedMore);
        }
        if self.text {
            let mut scratch = [0u8; 512];
            let mut offset = self.offset;
            for chunk in input[..len].chunks(scratch.len()) {
                let clear = &mut scratch[..chunk.len()];
                clear.copy_from_slice(chunk);
                if let Some(mask) = self.mask {
                    apply_mask(clear, mask, offset);
                }
                self.utf8.feed(clear)?;
                offset += chunk.len() as u64;
            }
        }
        self.remaining -= len as u64;
        self.offset += len as u64;
        let frame_end = self.remaining == 0;
        let message_end = frame_end && self.fin;
        if message_end {
            self.end_message()?;
        }
        Ok(Step::Payload {
            len,
            frame_end,
            message_end,
        })
    }

    fn end_message(&mut self) -> Result<(), Violation> {
        self.in_message = false;
        self.message_len = 0;
        if self.text {
            self.text = false;
            return self.utf8.finish();
        }
        Ok(())
    }
}

/// A close frame's payload: empty, or a valid code and a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), Violation> {
    match payload {
        [] => Ok(()),
        [_] => Err(Violation::Protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            if !valid_close_code(u16::from_be_bytes([*a, *b])) {
                return Err(Violation::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| Violation::InvalidUtf8)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Rules = Rules {
        masked: true,
        max_message: 1000,
        utf8: true,
    };

    fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![first];
        let bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(bit | n as u8),
            n if n <= 0xffff => {
                out.push(bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut body = payload.to_vec();
        if let Some(key) = mask {
            out.extend_from_slice(&key);
            apply_mask(&mut body, key, 0);
        }
        out.extend_from_slice(&body);
        out
    }

    /// Runs `bytes` through a reader in chunks of `chunk` bytes, as the relay does (keeping
    /// unread bytes), and returns the steps' kinds and whether it ended in a violation.
    fn run(rules: Rules, bytes: &[u8], chunk: usize) -> (Vec<String>, Option<Violation>) {
        let mut reader = Reader::new(rules);
        let mut steps = Vec::new();
        let mut buffered: Vec<u8> = Vec::new();
        for piece in bytes.chunks(chunk) {
            buffered.extend_from_slice(piece);
            loop {
                match reader.step(&buffered) {
                    Ok(Step::NeedMore) => break,
                    Ok(Step::Data {
                        header,
                        len,
                        message_end,
                        ..
                    }) => {
                        steps.push(format!("data {:?} {}", header.opcode, header.len));
                        if message_end {
                            steps.push("end".into());
                        }
                        buffered.drain(..len);
                    }
                    Ok(Step::Payload {
                        len, message_end, ..
                    }) => {
                        if message_end {
                            steps.push("end".into());
                        }
                        buffered.drain(..len);
                    }
                    Ok(Step::Control { header, len, .. }) => {
                        steps.push(format!("control {:?}", header.opcode));
                        buffered.drain(..len);
                    }
                    Err(violation) => return (steps, Some(violation)),
                }
                if buffered.is_empty() && !reader.in_payload() {
                    break;
                }
            }
        }
        (steps, None)
    }

    const KEY: Option<[u8; 4]> = Some([0x11, 0x22, 0x33, 0x44]);

    #[test]
    fn fragments_and_interleaved_control_frames_read_the_same_in_any_chunking() {
        let mut bytes = frame(0x01, "héllo ".as_bytes(), KEY);
        bytes.extend(frame(0x89, b"ping", KEY));
        bytes.extend(frame(0x80, "wörld €".as_bytes(), KEY));
        bytes.extend(frame(0x82, &[7u8; 300], KEY));
        bytes.extend(frame(0x88, &[0x03, 0xe8, b'o', b'k'], KEY));
        let (whole, error) = run(CLIENT, &bytes, bytes.len());
        assert_eq!(error, None);
        assert_eq!(
            whole,
            [
                "data Text 7",
                "control Ping",
                "data Continuation 10",
                "end",
                "data Binary 300",
                "end",
                "control Close"
            ]
        );
        for chunk in 1..20 {
            assert_eq!(run(CLIENT, &bytes, chunk), (whole.clone(), None), "{chunk}");
        }
    }

    #[test]
    fn violations_map_to_their_close_codes() {
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("reserved bit", frame(0xc1, b"hi", KEY), 1002),
            ("reserved opcode", frame(0x83, b"hi", KEY), 1002),
            ("unmasked", frame(0x81, b"hi", None), 1002),
            ("long ping", frame(0x89, &[0; 126], KEY), 1002),
            ("fragmented ping", frame(0x09, b"", KEY), 1002),
            ("lone continuation", frame(0x80, b"x", KEY), 1002),
            ("one-byte close", frame(0x88, &[3], KEY), 1002),
            ("close code 1005", frame(0x88, &[0x03, 0xed], KEY), 1002),
            ("close code 999", frame(0x88, &[0x03, 0xe7], KEY), 1002),
            ("close reason", frame(0x88, &[0x03, 0xe8, 0xff], KEY), 1007),
            ("invalid text", frame(0x81, &[0xce, 0xba, 0xff], KEY), 1007),
            ("text ends mid-character", frame(0x81, &[0xce], KEY), 1007),
            ("too big", frame(0x82, &[0; 1001], KEY), 1009),
        ];
        for (name, bytes, code) in cases {
            let (_, error) = run(CLIENT, &bytes, 3);
            assert_eq!(error.map(Violation::code), Some(code), "{name}");
        }
        // Fragments add up against the limit, and a new message inside one is refused.
        let mut bytes = frame(0x02, &[0; 600], KEY);
        bytes.extend(frame(0x80, &[0; 401], KEY));
        assert_eq!(run(CLIENT, &bytes, 64).1, Some(Violation::TooBig));
        let mut bytes = frame(0x01, b"a", KEY);
        bytes.extend(frame(0x81, b"b", KEY));
        assert!(matches!(
            run(CLIENT, &bytes, 64).1,
            Some(Violation::Protocol(_))
        ));
        // A server frame must not be masked.
        let server = Rules {
            masked: false,
            ..CLIENT
        };
        assert!(matches!(
            run(server, &frame(0x81, b"hi", KEY), 64).1,
            Some(Violation::Protocol(_))
        ));
        assert_eq!(run(server, &frame(0x81, b"hi", None), 64).1, None);
    }

    #[test]
    fn the_size_limit_is_checked_from_the_header_alone() {
        let header = [0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0xa0, 0, 0, 1, 2, 3, 4];
        let mut reader = Reader::new(CLIENT);
        assert_eq!(reader.step(&header).err(), Some(Violation::TooBig));
        let huge = [0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert!(matches!(
            Reader::new(CLIENT).step(&huge),
            Err(Violation::Protocol(_))
        ));
    }

    #[test]
    fn utf8_split_anywhere_is_accepted_and_invalid_bytes_anywhere_are_not() {
        let text = "añ€𝄞 mixed";
        for split in 0..=text.len() {
            let mut check = Utf8::default();
            let (a, b) = text.as_bytes().split_at(split);
            assert_eq!(check.feed(a), Ok(()), "{split}");
            assert_eq!(check.feed(b), Ok(()), "{split}");
            assert_eq!(check.finish(), Ok(()), "{split}");
        }
        // Overlong, surrogate and out-of-range sequences fail even when split.
        for bad in [
            &[0xc0, 0x80][..],
            &[0xed, 0xa0, 0x80],
            &[0xf4, 0x90, 0x80, 0x80],
        ] {
            for split in 0..=bad.len() {
                let mut check = Utf8::default();
                let (a, b) = bad.split_at(split);
                let result = check.feed(a).and_then(|()| check.feed(b));
                assert_eq!(result, Err(Violation::InvalidUtf8), "{bad:?} at {split}");
            }
        }
    }

    #[test]
    fn control_frames_encode_and_mask() {
        let (payload, len) = close_payload(4001, "token expired");
        let mut out = [0u8; MAX_CONTROL_FRAME];
        let n = encode_control(Opcode::Close, &payload[..len], KEY, &mut out);
        let mut reader = Reader::new(CLIENT);
        match reader.step(&out[..n]) {
            Ok(Step::Control {
                header,
                len: read,
                payload,
            }) => {
                assert_eq!(header.opcode, Opcode::Close);
                assert_eq!(read, n);
                assert_eq!(payload.close_code(), Some(4001));
                assert_eq!(&payload.payload()[2..], b"token expired");
            }
            other => panic!("{other:?}"),
        }
    }
}
