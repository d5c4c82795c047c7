//! Reading a body by its framing as it arrives, the same way in every place a body is read:
//! relayed, read ahead of a replica slot, or skipped.

use crate::Framing;
use crate::chunked::{BadChunk, Chunked};

/// Where a body is in the bytes read so far.
#[derive(Debug)]
pub struct BodyReader {
    framing: Framing,
    left: u64,
    chunked: Chunked,
    done: bool,
}

impl BodyReader {
    /// Starts reading a body delimited by `framing`.
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: Chunked::default(),
            done: framing.is_empty(),
        }
    }

    /// Whether the whole body has been taken (never, for a body that ends when the
    /// connection closes).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes bytes of the body from the start of `buf` and returns how many belong to it:
    /// all of them, unless the body ends inside `buf`. With `decode`, the payload (the chunk
    /// framing removed) is appended to it. Every byte counted has been checked.
    pub fn take(&mut self, buf: &[u8], decode: Option<&mut Vec<u8>>) -> Result<usize, BadChunk> {
        let n = match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.left -= n as u64;
                self.done = self.left == 0;
                if let Some(out) = decode {
                    out.extend_from_slice(&buf[..n]);
                }
                n
            }
            Framing::Chunked => {
                let n = match decode {
                    Some(out) => self.chunked.scan(buf, |r| out.extend_from_slice(&buf[r]))?,
                    None => self.chunked.scan(buf, |_| {})?,
                };
                self.done = self.chunked.is_done();
                n
            }
            Framing::UntilClose => {
                if let Some(out) = decode {
                    out.extend_from_slice(buf);
                }
                buf.len()
            }
        };
        Ok(n)
    }
}
