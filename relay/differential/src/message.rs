//! What a parser read: one message, or why it stopped.

/// One message as a parser read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The head's bytes as they were on the wire, final empty line included.
    pub head: Vec<u8>,
    /// The request method, or empty for a response.
    pub method: Vec<u8>,
    /// The request target, or empty for a response.
    pub target: Vec<u8>,
    /// The status code, or 0 for a request.
    pub status: u16,
    /// The `Host` value, if any.
    pub host: Option<Vec<u8>>,
    /// The payload (transfer coding removed).
    pub body: Vec<u8>,
}

/// How a stream of messages ended, after the last complete one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Nothing left over.
    Clean,
    /// The start of a message that had not ended.
    Incomplete,
    /// Bytes this parser rejects.
    Invalid(&'static str),
}

/// One step of reading.
pub enum Step {
    /// A whole message, and how many bytes it took.
    Message(Message, usize),
    /// Not all of the next message is here.
    Incomplete,
    /// The next message is not valid for this parser.
    Invalid(&'static str),
}

/// What the client of a response asked: parsers need it to know where a response ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked {
    /// A `HEAD` request.
    pub head: bool,
    /// An HTTP/1.0 request.
    pub http10: bool,
    /// An upgrade request.
    pub upgrade: bool,
}

/// Reads every message from `buf` with `step` until it stops; `eof` says the stream ended
/// there (a body delimited by the close is then complete).
pub(crate) fn read_all(buf: &[u8], mut step: impl FnMut(&[u8]) -> Step) -> (Vec<Message>, Tail) {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        if at == buf.len() {
            return (out, Tail::Clean);
        }
        match step(&buf[at..]) {
            Step::Message(m, n) => {
                // A message that took no bytes would loop forever; a parser never returns one.
                assert!(n > 0, "a parser read an empty message");
                let upgraded = m.status == 101;
                out.push(m);
                at += n;
                if upgraded {
                    // What follows a 101 is another protocol.
                    return (out, Tail::Clean);
                }
            }
            Step::Incomplete => return (out, Tail::Incomplete),
            Step::Invalid(why) => return (out, Tail::Invalid(why)),
        }
    }
}

/// Whether a response with `status` to `asked` has no body.
pub(crate) fn bodiless(status: u16, asked: Asked) -> bool {
    asked.head || (100..200).contains(&status) || status == 204 || status == 304
}

/// How a parser decided a body is delimited.
pub(crate) enum Body {
    /// This many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes.
    Close,
}

/// A chunked-body reader: the payload and the bytes used, `Ok(None)` while incomplete.
pub(crate) type ChunkedReader = fn(&[u8]) -> Result<Option<(Vec<u8>, usize)>, &'static str>;

/// Finishes `m`, whose head took `head_len` bytes of `buf`, by reading its body as `body`
/// says (chunked ones with the parser's own `chunked`); `eof` when the stream ended with
/// `buf`.
pub(crate) fn body_then(
    head_len: usize,
    buf: &[u8],
    body: Body,
    eof: bool,
    chunked: ChunkedReader,
    mut m: Message,
) -> Step {
    let rest = &buf[head_len..];
    match body {
        Body::Length(n) => {
            let Ok(n) = usize::try_from(n) else {
                return Step::Invalid("body too large");
            };
            if rest.len() < n {
                return Step::Incomplete;
            }
            m.body = rest[..n].to_vec();
            Step::Message(m, head_len + n)
        }
        Body::Chunked => match chunked(rest) {
            Ok(Some((payload, n))) => {
                m.body = payload;
                Step::Message(m, head_len + n)
            }
            Ok(None) => Step::Incomplete,
            Err(why) => Step::Invalid(why),
        },
        Body::Close if eof => {
            m.body = rest.to_vec();
            Step::Message(m, buf.len())
        }
        Body::Close => Step::Incomplete,
    }
}
