//! What checking framing costs the relay, in memory, on one core: a chunked body read as the
//! relay reads it (every byte of framing checked, the bytes forwarded as they are), against
//! decoding it and writing it chunked again (re-framing, as nginx does). 64 MiB per run, in
//! 16 KiB reads, for several chunk sizes; the best of five runs.
//!
//! ```text
//! target/release/relay-framing            # prints a Markdown table
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use sluice_relay::body::BodyReader;
use sluice_relay::{Framing, READ_CHUNK};

const TOTAL: usize = 64 << 20;

fn chunked_body(chunk: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(TOTAL + TOTAL / chunk * 12);
    let data = vec![b'x'; chunk];
    while body.len() < TOTAL {
        body.extend_from_slice(format!("{chunk:x}\r\n").as_bytes());
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// The best of five runs of `f` over `body` in reads of `READ_CHUNK`.
fn best(body: &[u8], mut f: impl FnMut(&[u8]) -> usize) -> Duration {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut done = 0;
            for read in body.chunks(READ_CHUNK) {
                done += f(read);
            }
            black_box(done);
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

fn main() {
    println!("| chunk size | check and pass (the relay) MiB/s | decode and re-encode MiB/s |");
    println!("|---|---|---|");
    for chunk in [64, 1024, 16 * 1024] {
        let body = chunked_body(chunk);
        let pass = best(&body, {
            let mut reader = BodyReader::new(Framing::Chunked);
            move |read| {
                if reader.is_done() {
                    reader = BodyReader::new(Framing::Chunked);
                }
                reader.take(read, None).expect("a valid body")
            }
        });
        let mut out = Vec::with_capacity(2 * READ_CHUNK);
        let mut payload = Vec::with_capacity(READ_CHUNK);
        let mut reader = BodyReader::new(Framing::Chunked);
        let reframe = best(&body, |read| {
            if reader.is_done() {
                reader = BodyReader::new(Framing::Chunked);
            }
            payload.clear();
            out.clear();
            let n = reader.take(read, Some(&mut payload)).expect("a valid body");
            // What was decoded goes out again as one chunk.
            out.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(b"\r\n");
            black_box(&out);
            n
        });
        println!(
            "| {chunk} B | {:.0} | {:.0} |",
            mib_per_s(body.len(), pass),
            mib_per_s(body.len(), reframe),
        );
    }
}
