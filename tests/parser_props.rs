//! Property tests for the parsers that read what others send: the Postfix
//! policy request reader, the dump loader, the zstd body decoder and the
//! clients' HTTP and SPAMD reply parsers. Each must end in a value or an
//! error on any input, never a panic or a hang, and stay within its limits.
//! (The tokenizer has its own: `tests/tokenizer_props.rs`.)
//!
//! `PROPTEST_CASES=N` runs more cases (the default, 256 a property, takes a
//! few seconds); the long runs and what they found are in
//! `docs/hardening.md`.

use proptest::prelude::*;
use tokio::io::BufReader;

/// Lines that look like a dump's, mixed with noise.
fn dump_line() -> impl Strategy<Value = String> {
    let num = prop_oneof![Just("0".to_string()), Just("-1".into()), Just("1e309".into()), Just("NaN".into()), "[0-9]{1,12}"];
    prop_oneof![
        Just("# hamlet dump".to_string()),
        Just("schema 3".into()),
        Just("tokenizer 2".into()),
        (num.clone(), num.clone()).prop_map(|(a, b)| format!("totals {a} {b}")),
        (num.clone(), num.clone()).prop_map(|(a, b)| format!("messages {a} {b}")),
        num.clone().prop_map(|a| format!("bias {a}")),
        (num.clone(), num.clone(), num.clone(), "[ -~]{0,20}").prop_map(|(a, b, c, t)| format!("t {a} {b} {c} 0.5 {t}")),
        (num.clone(), "[a-f0-9]{0,70}", num.clone()).prop_map(|(a, d, c)| format!("j {d} {a} {c} 1")),
        (num.clone(), num).prop_map(|(a, b)| format!("g {a} {b}")),
        "[ -~]{0,40}",
    ]
}

fn policy_request() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[a-z_]{1,20}=[ -~]{0,40}\n".prop_map(String::into_bytes),
        Just(b"\n".to_vec()),
        Just(b"request=smtpd_access_policy\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..50),
        (1usize..20_000).prop_map(|n| format!("x={}\n", "a".repeat(n)).into_bytes()),
    ];
    prop::collection::vec(line, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn dump_loader_never_panics(lines in prop::collection::vec(dump_line(), 0..60)) {
        let text = lines.join("\n");
        let _ = hamlet::store::parse(&mut text.as_bytes(), "prop");
    }

    #[test]
    fn dump_loader_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = hamlet::store::parse(&mut bytes.as_slice(), "prop");
    }

    #[test]
    fn policy_reader_never_panics_and_ends(input in policy_request()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut r = BufReader::new(input.as_slice());
            // Every request either parses or is refused; the reader always
            // reaches the end of its input.
            for _ in 0..=input.len() {
                match hamlet::policy::read_request(&mut r).await {
                    Ok(attrs) => prop_assert!(attrs.len() <= 200),
                    Err(_) => return Ok(()),
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn zstd_decoder_never_panics_and_keeps_its_limit(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        magic in any::<bool>(),
        max in 0usize..100_000,
    ) {
        let mut b = if magic { hamlet::protocol::zstd::MAGIC.to_vec() } else { Vec::new() };
        b.extend_from_slice(&body);
        if let Ok(out) = hamlet::protocol::zstd::unzstd(&b, max) {
            prop_assert!(out.len() <= max);
        }
    }

    #[test]
    fn reply_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = hamlet::client::parse_http(&bytes);
        let _ = hamlet::protocol::spamd::parse_reply(&bytes);
        let mut http = b"HTTP/1.1 200 OK\r\nContent-Length: ".to_vec();
        http.extend_from_slice(&bytes);
        let _ = hamlet::client::parse_http(&http);
        let mut spamd = b"SPAMD/1.5 0 EX_OK\r\n".to_vec();
        spamd.extend_from_slice(&bytes);
        let _ = hamlet::protocol::spamd::parse_reply(&spamd);
    }
}

/// A zstd magic number with nothing after it is an error, not a message.
#[test]
fn a_bare_magic_number_is_not_a_frame() {
    assert!(hamlet::protocol::zstd::unzstd(&hamlet::protocol::zstd::MAGIC, 10).is_err());
}
