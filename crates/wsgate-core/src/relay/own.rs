//! Frames of the proxy's own (its pings and closes), held whole until the destination is
//! between frames, and the masking key for those going to the backend.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::{self, MAX_CONTROL_FRAME, Opcode};

/// A frame of the proxy's own waiting for a frame boundary.
pub(super) struct Own {
    pub(super) bytes: [u8; MAX_CONTROL_FRAME],
    pub(super) len: usize,
    pub(super) written: usize,
    pub(super) close: bool,
}

impl Own {
    pub(super) fn new(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>, close: bool) -> Own {
        let mut bytes = [0; MAX_CONTROL_FRAME];
        let len = frame::encode_control(opcode, payload, mask, &mut bytes);
        Own {
            bytes,
            len,
            written: 0,
            close,
        }
    }
}

/// A masking key for the proxy's own frames to the backend.
pub(super) fn mask_key() -> [u8; 4] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = std::collections::hash_map::RandomState::new()
        .hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    (seed as u32).to_ne_bytes()
}
