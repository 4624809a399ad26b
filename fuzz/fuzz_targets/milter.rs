//! The milter framing and command parser on arbitrary bytes (`harness::milter`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::milter(data));
