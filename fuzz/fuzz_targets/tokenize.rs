//! The message tokenizer on arbitrary bytes (`harness::tokenize`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::tokenize(data));
