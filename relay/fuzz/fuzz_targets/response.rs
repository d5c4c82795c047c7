//! The relay's response path, differentially: see `sluice_relay_differential::check_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(mismatch) = sluice_relay_differential::check_response(data) {
        panic!("{mismatch}");
    }
});
