//! Every input in the committed fuzz corpus (`relay/fuzz/corpus`) holds the differential
//! property, on every `cargo test`.

use std::path::Path;

use sluice_relay_differential::{check_request, check_response};

fn replay(target: &str, check: fn(&[u8]) -> Result<(), sluice_relay_differential::Mismatch>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        if let Err(mismatch) = check(&input) {
            panic!("{}: {mismatch}", path.display());
        }
        count += 1;
    }
    assert!(
        count >= 10,
        "only {count} {target} inputs in {}",
        dir.display()
    );
}

#[test]
fn the_request_corpus_holds() {
    replay("request", check_request);
}

#[test]
fn the_response_corpus_holds() {
    replay("response", check_response);
}
