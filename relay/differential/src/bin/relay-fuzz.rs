//! The relay's differential fuzzer on stable Rust: replays the committed corpus, then mutates
//! it for a bounded time, keeping inputs that make the relay do something new, and stops at
//! the first input where what the relay forwards is read differently than it framed it.
//!
//! ```text
//! relay-fuzz [--seconds N] [--target request|response|both] [--seed S] [--corpus DIR]
//! relay-fuzz --replay request|response FILE
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_relay_differential::mutate::{Rng, mutate};
use sluice_relay_differential::{Mismatch, check_request_run, check_response_run};

type Check = fn(&[u8]) -> Result<u64, Mismatch>;

/// Most inputs kept in memory; past it, new ones replace random old ones.
const MAX_POOL: usize = 20_000;

fn check_of(target: &str) -> Option<Check> {
    match target {
        "request" => Some(check_request_run),
        "response" => Some(check_response_run),
        _ => None,
    }
}

fn corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

/// Runs `check` on `input`, a panic counted as a failure.
fn run(check: Check, input: &[u8]) -> Result<u64, String> {
    match std::panic::catch_unwind(|| check(input)) {
        Ok(Ok(signature)) => Ok(signature),
        Ok(Err(mismatch)) => Err(mismatch.to_string()),
        Err(_) => Err("the relay panicked".into()),
    }
}

fn fail(target: &str, input: &[u8], why: &str) -> ExitCode {
    let dir = PathBuf::from("target/relay-fuzz/failures");
    let _ = std::fs::create_dir_all(&dir);
    let name = format!(
        "{target}-{:016x}",
        input
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b))
                .wrapping_mul(0x100_0000_01b3))
    );
    let path = dir.join(name);
    let _ = std::fs::write(&path, input);
    eprintln!(
        "relay-fuzz: {target}: {why}\n  input {:?}\n  saved to {} (rerun: relay-fuzz --replay {target} {})",
        String::from_utf8_lossy(input),
        path.display(),
        path.display()
    );
    ExitCode::FAILURE
}

fn fuzz(target: &str, dir: &Path, budget: Duration, seed: u64) -> Result<(), ExitCode> {
    let check = check_of(target).expect("a known target");
    let mut pool = corpus(dir);
    if pool.is_empty() {
        pool.push(b"\0GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec());
    }
    let replayed = pool.len();
    let mut seen = HashSet::new();
    for input in &pool {
        match run(check, input) {
            Ok(signature) => {
                seen.insert(signature);
            }
            Err(why) => return Err(fail(target, input, &why)),
        }
    }
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut executions = 0u64;
    while started.elapsed() < budget {
        for _ in 0..256 {
            let mut input = pool[rng.below(pool.len())].clone();
            let other = &pool[rng.below(pool.len())];
            mutate(&mut rng, &mut input, other);
            executions += 1;
            match run(check, &input) {
                Ok(signature) => {
                    if seen.insert(signature) {
                        if pool.len() < MAX_POOL {
                            pool.push(input);
                        } else {
                            let i = rng.below(pool.len());
                            pool[i] = input;
                        }
                    }
                }
                Err(why) => return Err(fail(target, &input, &why)),
            }
        }
    }
    println!(
        "relay-fuzz: {target}: {replayed} corpus inputs replayed, {executions} executions in {:.0} s, {} behaviours, no mismatch",
        started.elapsed().as_secs_f64(),
        seen.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(i) = args.iter().position(|a| a == "--replay") {
        let (Some(target), Some(file)) = (args.get(i + 1), args.get(i + 2)) else {
            eprintln!("usage: relay-fuzz --replay request|response FILE");
            return ExitCode::from(2);
        };
        let Some(check) = check_of(target) else {
            eprintln!("relay-fuzz: --replay: target {target:?} is not request or response");
            return ExitCode::from(2);
        };
        let input = match std::fs::read(file) {
            Ok(input) => input,
            Err(e) => {
                eprintln!("relay-fuzz: cannot read {file}: {e}");
                return ExitCode::from(2);
            }
        };
        return match run(check, &input) {
            Ok(_) => {
                println!("relay-fuzz: {target}: {file}: no mismatch");
                ExitCode::SUCCESS
            }
            Err(why) => fail(target, &input, &why),
        };
    }
    let seconds: u64 = match value("--seconds").map(|s| s.parse()) {
        None => 30,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            eprintln!("relay-fuzz: --seconds takes a whole number of seconds");
            return ExitCode::from(2);
        }
    };
    let seed = value("--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let root = value("--corpus").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus"),
        PathBuf::from,
    );
    let targets: Vec<&str> = match value("--target").as_deref() {
        None | Some("both") => vec!["request", "response"],
        Some("request") => vec!["request"],
        Some("response") => vec!["response"],
        Some(other) => {
            eprintln!("relay-fuzz: --target {other:?}: use request, response or both");
            return ExitCode::from(2);
        }
    };
    println!("relay-fuzz: seed {seed}");
    let budget = Duration::from_secs(seconds) / targets.len() as u32;
    for target in targets {
        if let Err(code) = fuzz(target, &root.join(target), budget, seed) {
            return code;
        }
    }
    ExitCode::SUCCESS
}
