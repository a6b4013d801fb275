//! UTF-8 checked chunk by chunk, as text passes through the relay.

use std::str::Utf8Error;

use super::violation::Violation;

/// Incremental UTF-8 validation across chunks and frames.
#[derive(Debug, Default, Clone)]
pub(super) struct Utf8 {
    partial: [u8; 4],
    len: u8,
}

impl Utf8 {
    /// Checks the next chunk of a text message.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Violation> {
        if self.len > 0 {
            let have = usize::from(self.len);
            let width = match self.partial[0] {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => 4,
            };
            let take = (width - have).min(bytes.len());
            self.partial[have..have + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let now = have + take;
            match std::str::from_utf8(&self.partial[..now]) {
                Ok(_) => self.len = 0,
                Err(error) if incomplete(&error) && now < width => {
                    self.len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(Violation::InvalidUtf8),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(error) if incomplete(&error) => {
                let tail = &bytes[error.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Violation::InvalidUtf8),
        }
    }

    /// Checks that the message did not end inside a character, and starts over.
    pub(super) fn finish(&mut self) -> Result<(), Violation> {
        let ended_inside = self.len > 0;
        self.len = 0;
        if ended_inside {
            Err(Violation::InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

/// The input ended inside a character that could still be valid.
fn incomplete(error: &Utf8Error) -> bool {
    error.error_len().is_none()
}
