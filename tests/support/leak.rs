//! The whole suite's token-leakage check: no token the tests mint, nor any of its segments,
//! may appear in a log line, a `/metrics` exposition or a response the helpers read.
//!
//! - Every token the support module signs is [`register`]ed when it is minted, with each of its
//!   segments, before any request can carry it.
//! - One process-wide subscriber ([`install`], from [`TestProxy::start_full`]) formats every
//!   event at TRACE, of every crate, `log` records included, and scans each line as it is
//!   written: nothing is buffered and nothing written between two checks is missed.
//! - The helpers [`observe`] every response they read; a [`TestProxy`] scans its own metrics
//!   when it is dropped.
//! - A hit is recorded with its context; [`assert_clean`] (run when any `TestProxy` is
//!   dropped) fails the test while any hit is recorded. Hits are never cleared, so one leak
//!   fails every test that finishes after it.
//!
//! Tests run on parallel threads of one process: a global registry searched for every token
//! in every line is sound because a token is registered before it is sent, so it is known by
//! the time any line or response can contain it.
//!
//! Limits:
//! - pieces shorter than [`MIN_PIECE`] characters are not searched (the `AAAA` of a forged
//!   signature or the segments of `a.b.c` would match innocent text);
//! - lines written after the last `TestProxy` of the run is dropped are scanned, but no later
//!   check reports them;
//! - `tungstenite::handshake::client` is not captured: only the tests' own clients run that
//!   code (the proxy's backend handshake is hyper's), and it traces the client's whole
//!   request, token included;
//! - the [`QUIETER`] targets are captured at DEBUG only.
//!
//! [`TestProxy`]: super::TestProxy
//! [`TestProxy::start_full`]: super::TestProxy::start_full

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::sync::{Mutex, Once, RwLock};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Shortest piece searched for.
pub const MIN_PIECE: usize = 16;

/// The log target not captured (see the module documentation).
const TEST_CLIENT_TARGET: &str = "tungstenite::handshake::client";

/// Targets captured at DEBUG, not TRACE: their TRACE lines carry frame payloads (application
/// data, which the helpers observe as messages) or only poll plumbing (`file:line`, readiness
/// tokens), and formatting every payload as hex would make the suite several times slower.
const QUIETER: [&str; 3] = ["tungstenite::protocol", "tokio_tungstenite", "mio"];

/// A cheap hash for the 8-byte keys (the default SipHash would dominate the scan).
#[derive(Default)]
struct Fold(u64);

impl Hasher for Fold {
    fn finish(&self) -> u64 {
        // A product's low bits depend only on the key's low bits; the table indexes by them.
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Must never be seen.
    Token,
    /// Must be seen: proves the capture sees the proxy's lines.
    Canary,
}

struct Piece {
    text: Box<[u8]>,
    kind: Kind,
}

/// Bytes per key.
const STRIDE: usize = 8;

/// The searched pieces, indexed so that a scan looks up one key every [`STRIDE`] bytes: a
/// piece of at least [`MIN_PIECE`] (= 2 x STRIDE) bytes that starts at `s` covers the
/// STRIDE-aligned position `p` with `p - s < STRIDE`, and the STRIDE bytes at `p` lie inside
/// it; so each piece is indexed under its STRIDE-byte windows at offsets 0..STRIDE.
#[derive(Default)]
pub struct Pieces {
    pieces: Vec<Piece>,
    /// Window -> (piece index, offset of the window in the piece).
    windows: HashMap<u64, Vec<(usize, usize)>, BuildHasherDefault<Fold>>,
}

/// A piece found in some text.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit {
    kind: Kind,
    pub piece: String,
    pub context: String,
}

fn key(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(*bytes.first_chunk::<STRIDE>().expect("STRIDE bytes"))
}

impl Pieces {
    fn add(&mut self, piece: &str, kind: Kind) {
        let text = piece.as_bytes();
        if text.len() < MIN_PIECE {
            return;
        }
        let known = self.windows.get(&key(text)).into_iter().flatten();
        if known
            .clone()
            .any(|&(index, offset)| offset == 0 && *self.pieces[index].text == *text)
        {
            return;
        }
        let index = self.pieces.len();
        self.pieces.push(Piece {
            text: text.into(),
            kind,
        });
        for offset in 0..STRIDE {
            let entry = self.windows.entry(key(&text[offset..])).or_default();
            entry.push((index, offset));
        }
    }

    /// Adds a token and each of its dot-separated segments.
    pub fn add_token(&mut self, token: &str) {
        self.add(token, Kind::Token);
        for segment in token.split('.') {
            self.add(segment, Kind::Token);
        }
    }

    /// Every piece in `text`, once per place it starts.
    pub fn find(&self, text: &[u8]) -> Vec<Hit> {
        let mut hits: Vec<(usize, usize)> = Vec::new();
        let mut at = 0;
        while at + STRIDE <= text.len() && !self.pieces.is_empty() {
            for &(index, offset) in self.windows.get(&key(&text[at..])).into_iter().flatten() {
                let piece = &self.pieces[index].text;
                if let Some(start) = at.checked_sub(offset)
                    && text[start..].starts_with(piece)
                    && !hits.contains(&(index, start))
                {
                    hits.push((index, start));
                }
            }
            at += STRIDE;
        }
        hits.into_iter()
            .map(|(index, start)| {
                let piece = &self.pieces[index];
                Hit {
                    kind: piece.kind,
                    piece: String::from_utf8_lossy(&piece.text).into_owned(),
                    context: context(text, start, piece.text.len()),
                }
            })
            .collect()
    }
}

/// The line around a hit, with the piece marked, for the failure message.
fn context(text: &[u8], start: usize, len: usize) -> String {
    let from = start.saturating_sub(120);
    let to = (start + len + 120).min(text.len());
    format!(
        "{}[[{}]]{}",
        String::from_utf8_lossy(&text[from..start]),
        String::from_utf8_lossy(&text[start..start + len]),
        String::from_utf8_lossy(&text[start + len..to]),
    )
}

static PIECES: RwLock<Pieces> = RwLock::new(Pieces {
    pieces: Vec::new(),
    windows: HashMap::with_hasher(BuildHasherDefault::new()),
});
static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// (where, canary) for every canary seen.
static CANARIES_SEEN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Registers a token minted for a test: from now on it and its segments must not be seen.
pub fn register(token: &str) {
    PIECES.write().expect("pieces").add_token(token);
}

/// Registers text that must be seen in the logs (see [`canary_seen`]).
pub fn register_canary(canary: &str) {
    assert!(
        canary.len() >= MIN_PIECE,
        "a canary is searched like a piece"
    );
    PIECES.write().expect("pieces").add(canary, Kind::Canary);
}

/// True once a registered canary appeared in what was scanned as `what` (such as `logs`).
pub fn canary_seen(what: &str, canary: &str) -> bool {
    CANARIES_SEEN
        .lock()
        .expect("canaries")
        .iter()
        .any(|(w, c)| w == what && c == canary)
}

/// Scans text that left the proxy (`what` names where it was seen).
pub fn observe(what: &str, text: &[u8]) {
    let hits = PIECES.read().expect("pieces").find(text);
    for hit in hits {
        match hit.kind {
            Kind::Canary => CANARIES_SEEN
                .lock()
                .expect("canaries")
                .push((what.to_owned(), hit.piece)),
            Kind::Token => LEAKS.lock().expect("leaks").push(format!(
                "a token piece ({} chars) in the {what}: {}",
                hit.piece.len(),
                hit.context
            )),
        }
    }
}

/// Fails while any leak has been recorded anywhere in the run.
pub fn assert_clean() {
    // Copied out so that the failure below does not poison the lock the log writer takes.
    let leaks = LEAKS.lock().expect("leaks").clone();
    assert!(
        leaks.is_empty(),
        "{} token leak(s) recorded; the first: {}",
        leaks.len(),
        leaks[0]
    );
}

/// Each formatted event arrives here whole (the fmt layer writes a line in one call).
struct Sink;

impl Write for Sink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        observe("logs", line);
        Ok(line.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What is captured: everything at TRACE, but for the targets named in the module
/// documentation and [`QUIETER`].
pub fn filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target(TEST_CLIENT_TARGET, LevelFilter::OFF)
        .with_targets(QUIETER.map(|target| (target, LevelFilter::DEBUG)))
}

/// Installs the process-wide TRACE subscriber (and the `log` bridge) once.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(|| Sink)
            .with_ansi(false)
            .without_time();
        tracing_subscriber::registry()
            .with(layer.with_filter(filter()))
            .try_init()
            .expect("no other global subscriber in the e2e binary");
    });
}

#[test]
fn pieces_are_found_wherever_they_sit_and_only_when_whole() {
    let mut pieces = Pieces::default();
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
    pieces.add_token(token);
    pieces.add_token("a.b.c");
    let (header, claims) = token.split_once('.').expect("dot");
    let claims = claims.split_once('.').expect("dot").0;
    assert_eq!(pieces.find(format!("Bearer {token}\n").as_bytes()).len(), 4);
    assert_eq!(pieces.find(format!("x{claims}x").as_bytes()).len(), 1);
    assert_eq!(
        pieces.find(format!("path=\"/{header}\"").as_bytes()).len(),
        1
    );
    assert_eq!(pieces.find(&claims.as_bytes()[1..]), []);
    assert_eq!(
        pieces.find(b"a.b.c a b c AAAA"),
        [],
        "short pieces are not searched"
    );
    assert_eq!(pieces.find(b""), []);
}
