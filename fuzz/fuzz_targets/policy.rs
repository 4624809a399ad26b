//! The Postfix policy request reader on arbitrary bytes (`harness::policy`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::policy(data));
