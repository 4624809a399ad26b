//! The SPAMD request head and reply parsers on arbitrary bytes (`harness::spamd`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::spamd(data));
