//! The chunked transfer coding (RFC 9112 §7.1), read strictly as bytes arrive: every line ends
//! in CRLF (a bare CR or LF is an error), a chunk size is 1 to 16 hex digits, extensions
//! follow the grammar exactly with no whitespace (`;name`, `;name=token`,
//! `;name="quoted"`), chunk data ends in CRLF, and trailer fields are well-formed lines whose
//! names may be sent in trailers. Every byte is checked before the caller may forward it, so
//! what goes on is read the same way by any parser, strict or lenient.

use crate::fields::{forbidden_in_trailers, is_tchar};

/// Longest chunk-size line (size and extensions).
const MAX_LINE: usize = 4096;
/// Longest trailer section.
const MAX_TRAILERS: usize = 16 * 1024;
/// Trailer names longer than this cannot be one of the forbidden ones, so only this much of a
/// name is kept to check it.
const NAME_KEPT: usize = 32;

/// A chunked body that breaks RFC 9112 §7.1 (or a limit here).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct BadChunk(pub &'static str);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    #[default]
    Size,
    /// Right after `;`: an extension name must start.
    ExtName,
    /// Inside an extension name.
    ExtNameMore,
    /// Right after `=`: a token or a quoted string must start.
    ExtValue,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted value.
    Quoted,
    /// After a backslash in a quoted value.
    QuotedPair,
    /// After the closing quote.
    QuotedEnd,
    /// After the CR ending a size line.
    SizeLf,
    /// Chunk data.
    Data,
    /// After chunk data: CR.
    DataCr,
    /// After chunk data: LF.
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value.
    TrailerValue,
    /// After the CR ending a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    /// The whole body has been read.
    Done,
}

/// Reads a chunked body incrementally: [`Chunked::scan`] takes whatever bytes have arrived.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    line: usize,
    trailers: usize,
    name: [u8; NAME_KEPT],
    name_len: usize,
}

impl Chunked {
    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads bytes of the body from the start of `data` and returns how many belong to it:
    /// all of them, unless the body ends inside `data`. `on_data` gets the ranges of `data`
    /// that are chunk data, for a caller that removes the coding. Every byte counted has been
    /// checked.
    pub fn scan(
        &mut self,
        data: &[u8],
        mut on_data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < data.len() {
            if self.state == State::Done {
                break;
            }
            if self.state == State::Data {
                let take = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                on_data(i..i + take);
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = self.step(b)?;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<State, BadChunk> {
        use State::*;
        if matches!(
            self.state,
            Size | ExtName | ExtNameMore | ExtValue | ExtToken | Quoted | QuotedPair | QuotedEnd
        ) {
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(BadChunk("chunk-size line too long"));
            }
        }
        if matches!(
            self.state,
            TrailerStart | TrailerName | TrailerValue | TrailerLf | EndLf
        ) {
            self.trailers += 1;
            if self.trailers > MAX_TRAILERS {
                return Err(BadChunk("trailer section too large"));
            }
        }
        Ok(match (self.state, b) {
            (Size, b) if b.is_ascii_hexdigit() => {
                self.digits += 1;
                if self.digits > 16 {
                    return Err(BadChunk("chunk size has more than 16 hex digits"));
                }
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                self.size = (self.size << 4) | d;
                Size
            }
            (Size, _) if self.digits == 0 => return Err(BadChunk("chunk size missing")),
            (Size | ExtNameMore | ExtToken | QuotedEnd, b';') => ExtName,
            (Size | ExtNameMore | ExtToken | QuotedEnd, b'\r') => SizeLf,
            (ExtName, b) if is_tchar(b) => ExtNameMore,
            (ExtNameMore, b) if is_tchar(b) => ExtNameMore,
            (ExtNameMore, b'=') => ExtValue,
            (ExtValue, b'"') => Quoted,
            (ExtValue | ExtToken, b) if is_tchar(b) => ExtToken,
            (Quoted, b'"') => QuotedEnd,
            (Quoted, b'\\') => QuotedPair,
            (Quoted, b) if is_qdtext(b) => Quoted,
            (QuotedPair, b) if b == b'\t' || b == b' ' || is_vchar_or_obs(b) => Quoted,
            (SizeLf, b'\n') => {
                self.line = 0;
                self.digits = 0;
                if self.size == 0 { TrailerStart } else { Data }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, b) if is_tchar(b) => {
                self.name_len = 0;
                self.keep_name_byte(b);
                TrailerName
            }
            (TrailerName, b) if is_tchar(b) => {
                self.keep_name_byte(b);
                TrailerName
            }
            (TrailerName, b':') => {
                if self.name_len <= NAME_KEPT && forbidden_in_trailers(&self.name[..self.name_len])
                {
                    return Err(BadChunk("a framing or routing field in the trailers"));
                }
                TrailerValue
            }
            (TrailerValue, b) if b == b'\t' || b == b' ' || is_vchar_or_obs(b) => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (DataCr | DataLf, _) => return Err(BadChunk("chunk data not followed by CRLF")),
            (SizeLf | TrailerLf | EndLf, _) => return Err(BadChunk("CR not followed by LF")),
            (_, b'\n') => return Err(BadChunk("bare LF")),
            _ => return Err(BadChunk("unexpected byte")),
        })
    }

    fn keep_name_byte(&mut self, b: u8) {
        if self.name_len < NAME_KEPT {
            self.name[self.name_len] = b.to_ascii_lowercase();
        }
        self.name_len += 1;
    }
}

fn is_vchar_or_obs(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// `qdtext` of RFC 9110 §5.6.4.
fn is_qdtext(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<(usize, bool, Vec<u8>), BadChunk> {
        let mut c = Chunked::default();
        let mut data = Vec::new();
        let n = c.scan(body, |r| data.extend_from_slice(&body[r]))?;
        Ok((n, c.is_done(), data))
    }

    #[test]
    fn the_end_is_found_across_every_split() {
        let body = b"4;ext=1;q=\"a\\\"b\"\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let end = body.len() - "NEXT".len();
        for split in 0..body.len() {
            let mut c = Chunked::default();
            let mut data = Vec::new();
            let a = c
                .scan(&body[..split], |r| data.extend_from_slice(&body[r]))
                .unwrap();
            assert_eq!(a, split.min(end));
            let b = c
                .scan(&body[a..], |r| data.extend_from_slice(&body[a..][r]))
                .unwrap();
            assert!(c.is_done(), "split at {split}");
            assert_eq!(a + b, end, "split at {split}");
            assert_eq!(data, b"Wikipedia", "split at {split}");
        }
    }

    #[test]
    fn minimal_and_large_sizes() {
        assert_eq!(whole(b"0\r\n\r\n").unwrap(), (5, true, vec![]));
        assert!(whole(b"000\r\n\r\n").unwrap().1);
        let (_, done, _) = whole(b"ffffffffffffffff\r\nabc").unwrap();
        assert!(!done);
    }

    #[test]
    fn anything_a_parser_could_read_two_ways_is_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],      // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",           // bare LF after data
            b"5\r\nhello\r\n0\r\n\n",           // bare LF at the end
            b"5\r\nhello\r\n0\n\r\n",           // bare LF after the last chunk
            b"5\rhello\r\n0\r\n\r\n",           // bare CR
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",    // LF inside an extension
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",    // CR inside an extension
            b"5 \r\nhello\r\n0\r\n\r\n",        // whitespace after the size
            b"5 ;a\r\nhello\r\n0\r\n\r\n",      // whitespace before an extension
            b"5;\r\nhello\r\n0\r\n\r\n",        // empty extension name
            b"5;a=\r\nhello\r\n0\r\n\r\n",      // empty extension value
            b"5;a=\"b\r\n",                     // CR in a quoted value
            b"5;a=b c\r\n",                     // space in a token value
            b"+5\r\nhello\r\n0\r\n\r\n",        // sign
            b"0x5\r\nhello\r\n0\r\n\r\n",       // hex prefix
            b"\r\n5\r\nhello\r\n0\r\n\r\n",     // empty size line
            b"5\r\nhelloX\r\n0\r\n\r\n",        // data longer than its size
            b"10000000000000000\r\n",           // 17 digits
            b"0\r\nContent-Length: 5\r\n\r\n",  // framing field as a trailer
            b"0\r\nHost: x\r\n\r\n",            // routing field as a trailer
            b"0\r\nK-Original-Host: x\r\n\r\n", // trusted field as a trailer
            b"0\r\n folded: x\r\n\r\n",         // obs-fold
            b"0\r\nX : y\r\n\r\n",              // space before the colon
            b"0\r\nX: y\nZ: w\r\n\r\n",         // bare LF in the trailers
            b"0\r\nX: y\x00\r\n\r\n",           // NUL in a trailer value
        ] {
            assert!(
                whole(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE));
        assert_eq!(whole(&long), Err(BadChunk("chunk-size line too long")));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 10 {
            trailers.extend_from_slice(b"X-A: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(whole(&trailers), Err(BadChunk("trailer section too large")));
    }
}
