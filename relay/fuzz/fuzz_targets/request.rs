//! The relay's request path, differentially: see `sluice_relay_differential::check_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(mismatch) = sluice_relay_differential::check_request(data) {
        panic!("{mismatch}");
    }
});
