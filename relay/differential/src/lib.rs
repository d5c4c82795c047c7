//! Differential checks of the relay ([`sluice_relay`]): its request and response paths run on
//! arbitrary bytes, and what they forward must be read by a strict parser ([`strict`], CRLF
//! only) and a lenient one ([`lenient`], bare LF and the usual leniencies) as exactly the
//! messages the relay framed, no more and no fewer; a message cut part-way must read as
//! unfinished, never as another message. The relay must also have read its input as the
//! strict parser reads it, for every message it framed. Anything else the relay refuses.
//!
//! [`check_request`] and [`check_response`] take fuzzer input: a first byte that chooses the
//! proxy's edit (or the request being answered) and how the bytes are split into reads, then
//! the bytes from the client (or the upstream). The cargo-fuzz targets in `relay/fuzz` and
//! the stable `relay-fuzz` runner both call them. [`upstream`] is a strict server for the
//! proxies' loopback tests.
//!
//! Owns the relay's outside truth: the reference parsers, the fuzz runner and the CRLF-only
//! upstream the proxies' tests use. Must not share parsing code with the relay it checks.

pub mod driver;
pub mod lenient;
pub mod message;
pub mod mutate;
pub mod strict;
pub mod upstream;

use driver::{End, Framed, Reads};
use message::{Asked, Message, Tail};
use sluice_relay::Edit;

/// A difference between what the relay framed and what a parser read.
#[derive(Debug)]
pub struct Mismatch(pub String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// Compares what `parser` read from the relay's output with what the relay framed.
fn agree(
    parser: &str,
    (read, tail): (Vec<Message>, Tail),
    framed: &[Framed],
    end: End,
) -> Result<(), Mismatch> {
    if read.len() != framed.len() {
        return Err(Mismatch(format!(
            "the {parser} parser read {} messages where the relay framed {} (tail {tail:?}, end {end:?}); read {:?}",
            read.len(),
            framed.len(),
            read.iter().map(|m| show(&m.head)).collect::<Vec<_>>()
        )));
    }
    for (i, (m, f)) in read.iter().zip(framed).enumerate() {
        if m.head != f.head {
            return Err(Mismatch(format!(
                "message {i}: the {parser} parser read head {} where the relay wrote {}",
                show(&m.head),
                show(&f.head)
            )));
        }
        if m.body != f.body {
            return Err(Mismatch(format!(
                "message {i}: the {parser} parser read body {} where the relay framed {}",
                show(&m.body),
                show(&f.body)
            )));
        }
    }
    let want = if end == End::Partial {
        Tail::Incomplete
    } else {
        Tail::Clean
    };
    if tail != want {
        return Err(Mismatch(format!(
            "after {} messages the {parser} parser found {tail:?}, want {want:?} (end {end:?})",
            read.len()
        )));
    }
    Ok(())
}

/// What a run did, in a few numbers: the stable runner keeps inputs that do something new.
pub fn signature(end: End, framed: &[Framed]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    std::mem::discriminant(&end).hash(&mut h);
    if let End::Refused(status, why) = end {
        (status, why).hash(&mut h);
    }
    framed.len().min(6).hash(&mut h);
    for f in framed.iter().take(6) {
        (f.status, f.body.len().min(64).next_power_of_two()).hash(&mut h);
    }
    h.finish()
}

/// The request path: `data[0]` picks the edit (bit 0: the activator's, else the
/// queue-proxy's) and the read sizes (the other bits); the rest is what a client sent.
pub fn check_request(data: &[u8]) -> Result<(), Mismatch> {
    check_request_run(data).map(|_| ())
}

/// [`check_request`], returning the run's [`signature`].
pub fn check_request_run(data: &[u8]) -> Result<u64, Mismatch> {
    let Some((&mode, input)) = data.split_first() else {
        return Ok(0);
    };
    let edit = if mode & 1 == 1 {
        Edit::ToRevision {
            peer_ip: "10.0.0.1",
            revision: b"hello-00001",
            namespace: b"default",
        }
    } else {
        Edit::ToUser {
            peer_ip: "127.0.0.1",
            default_host: "127.0.0.1:8080",
        }
    };
    let (run, end) = driver::requests(Reads::new(input, mode >> 1), &edit);
    agree("strict", strict::requests(&run.out), &run.framed, end)?;
    agree("lenient", lenient::requests(&run.out), &run.framed, end)?;
    // The relay read its input as the strict parser does, for every request it framed.
    let (from_input, _) = strict::requests(input);
    for (i, f) in run.framed.iter().enumerate() {
        let Some(m) = from_input.get(i) else {
            return Err(Mismatch(format!(
                "the relay framed request {i} from input the strict parser does not accept ({})",
                show(&f.head)
            )));
        };
        let method = f.head.split(|&b| b == b' ').next().unwrap_or_default();
        if m.method != method || m.body != f.body {
            return Err(Mismatch(format!(
                "request {i}: the relay framed {} with body {}, the strict parser read {} {} with body {}",
                show(method),
                show(&f.body),
                show(&m.method),
                show(&m.target),
                show(&m.body)
            )));
        }
    }
    Ok(signature(end, &run.framed))
}

/// The response path: `data[0]` picks the request answered (bit 0: HEAD, bit 1: HTTP/1.0,
/// bit 2: an upgrade) and the read sizes (the other bits); the rest is what the upstream
/// sent.
pub fn check_response(data: &[u8]) -> Result<(), Mismatch> {
    check_response_run(data).map(|_| ())
}

/// [`check_response`], returning the run's [`signature`].
pub fn check_response_run(data: &[u8]) -> Result<u64, Mismatch> {
    let Some((&mode, input)) = data.split_first() else {
        return Ok(0);
    };
    let req = driver::asked_request(mode & 1 == 1, mode & 2 == 2, mode & 4 == 4);
    let asked = Asked {
        head: req.is_head,
        http10: req.http10,
        upgrade: req.upgrade,
    };
    let (run, end) = driver::responses(Reads::new(input, mode >> 3), &req);
    let eof = end == End::Closed;
    agree(
        "strict",
        strict::responses(&run.out, asked, eof),
        &run.framed,
        end,
    )?;
    agree(
        "lenient",
        lenient::responses(&run.out, asked, eof),
        &run.framed,
        end,
    )?;
    let (from_input, _) = strict::responses(input, asked, true);
    let finals = from_input
        .iter()
        .filter(|m| m.status >= 200 || m.status == 101);
    for (i, (f, m)) in run
        .framed
        .iter()
        .filter(|f| f.status >= 200 || f.status == 101)
        .zip(finals)
        .enumerate()
    {
        if m.status != f.status || m.body != f.body {
            return Err(Mismatch(format!(
                "response {i}: the relay framed {} with body {}, the strict parser read {} with body {}",
                f.status,
                show(&f.body),
                m.status,
                show(&m.body)
            )));
        }
    }
    let relayed = run
        .framed
        .iter()
        .filter(|f| f.status >= 200 || f.status == 101)
        .count();
    let accepted = from_input
        .iter()
        .filter(|m| m.status >= 200 || m.status == 101)
        .count();
    if relayed > accepted {
        return Err(Mismatch(format!(
            "the relay framed {relayed} responses from input the strict parser reads as {accepted}"
        )));
    }
    Ok(signature(end, &run.framed) ^ u64::from(mode & 7))
}
