//! Mutations for the stable runner: byte edits, HTTP tokens from a dictionary, splices.

/// A small, fast, seedable generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next number.
    pub fn number(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.number() % n as u64) as usize
    }
}

/// Pieces of HTTP/1.1 that matter to framing, inserted whole.
pub const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b"=",
    b"\"",
    b",",
    b"\\",
    b"\x00",
    b"\x7f",
    b"\xff",
    "é".as_bytes(),
    "\u{26fb}".as_bytes(),
    b"0",
    b"1",
    b"5",
    b"a",
    b"F",
    b"+",
    b"-",
    b"_",
    b"\r\n\r\n",
    b"0\r\n\r\n",
    b"0\r\n",
    b"5\r\nhello\r\n",
    b";ext=\"v\"",
    b"Trailer-X: t\r\n",
    b"Content-Length: ",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"content_length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: ",
    b"transfer-encoding: gzip, chunked\r\n",
    b"chunked",
    b"Host: a\r\n",
    b"Host: b\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"K-Original-Host: evil\r\n",
    b"HTTP/1.0",
    b"HTTP/1.1",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\n",
    b"GET http://a/x?q HTTP/1.1\r\n",
    b"HEAD / HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
    b"HTTP/1.0 200 OK\r\n",
];

/// Changes `input` in one to four random ways, sometimes splicing in part of `other`.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=rng.below(4) {
        let at = if input.is_empty() {
            0
        } else {
            rng.below(input.len() + 1)
        };
        match rng.below(9) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.number() as u8;
            }
            2 | 3 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 if at < input.len() => {
                let end = (at + 1 + rng.below(16)).min(input.len());
                input.drain(at..end);
            }
            5 if at < input.len() => {
                let end = (at + 1 + rng.below(32)).min(input.len());
                let piece = input[at..end].to_vec();
                input.splice(at..at, piece);
            }
            6 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
            7 if !input.is_empty() => input[0] = rng.number() as u8,
            8 => {
                // A CRLF turned into LF, or the other way.
                if let Some(i) = input.windows(2).position(|w| w == b"\r\n") {
                    input.remove(i);
                } else if let Some(i) = input.iter().position(|&b| b == b'\n') {
                    input.insert(i, b'\r');
                }
            }
            _ => {}
        }
    }
    input.truncate(64 * 1024);
}
