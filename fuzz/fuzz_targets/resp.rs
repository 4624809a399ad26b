//! The Redis store's reply parser on arbitrary bytes (`harness::redis_resp`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::redis_resp(data));
