//! The `db load` dump parser on arbitrary bytes (`harness::dump`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::dump(data));
