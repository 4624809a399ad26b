//! What each fuzz target does with one input. Shared, word for word, by the
//! libFuzzer targets (`fuzz/fuzz_targets/*.rs`) and the seed replay test
//! (`tests/fuzz_seeds.rs`), which is how CI checks the committed seeds
//! without libFuzzer. A function here panics only on a bug.
#![allow(dead_code)]

use hamlet::tokenize::{Tokenizer, grams::byte_grams};
use std::future::Future;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

/// The Redis store's reply parser. `store::redis::resp` is private to
/// hamlet, so its source is compiled in here.
#[path = "../src/store/redis/resp.rs"]
mod resp;

/// A fuzz target: the name of its `fuzz/seeds/` folder and what it runs.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] =
    &[("tokenize", tokenize), ("spamd", spamd), ("policy", policy), ("milter", milter), ("dump", dump), ("resp", redis_resp)];

/// The message tokenizer, as the engine calls it for a check or a learn
/// (`Tokenizer::token_set` and the byte 4-grams), with the invariants of
/// `tests/tokenizer_props.rs`.
pub fn tokenize(data: &[u8]) {
    static TOKENIZER: LazyLock<Tokenizer> = LazyLock::new(Tokenizer::default);
    let tk = &*TOKENIZER;
    let set = tk.token_set(data);
    assert!(set.len() <= tk.options.limits.max_tokens, "{} tokens, more than max_tokens", set.len());
    assert!(set.texts().all(|t| !t.is_empty()), "an empty token");
    let _ = byte_grams(data);
}

/// The SPAMD request head parser (the server's) and reply parser (the
/// client's).
pub fn spamd(data: &[u8]) {
    use hamlet::protocol::spamd::{parse_head, parse_reply, validate};
    if let Ok(req) = parse_head(data) {
        let _ = validate(&req);
    }
    let _ = parse_reply(data);
}

/// Runs a future that never waits (reading a `&[u8]` is always ready).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a read from a byte slice waited"),
    }
}

/// The Postfix policy request reader, request after request as on one
/// connection, and the envelope of each request.
pub fn policy(data: &[u8]) {
    use hamlet::policy::{envelope, read_request};
    let mut r = tokio::io::BufReader::new(data);
    // A request ends at an empty line: every turn consumes input.
    while let Ok(attrs) = ready(read_request(&mut r)) {
        let _ = envelope(&attrs);
    }
}

/// The milter framing and command parser, packet after packet as the
/// listener reads them, with the option negotiation answered as it does.
pub fn milter(data: &[u8]) {
    use hamlet::protocol::milter::{Command, action, frame, negotiate, parse, step};
    let mut buf = data;
    let mut out = Vec::new();
    while let Ok(Some((n, packet))) = frame(buf) {
        assert!(n > 0 && n <= buf.len(), "frame took {n} of {} bytes", buf.len());
        buf = &buf[n..];
        let Ok(cmd) = parse(packet) else { break };
        let _ = cmd.name();
        if let Command::OptNeg { version, actions, steps } = cmd {
            let want = action::ADD_HEADERS | action::CHANGE_HEADERS | action::QUARANTINE;
            if let Ok(reply) = negotiate(version, actions, steps, want, step::NO_UNKNOWN | step::NO_DATA) {
                out.clear();
                reply.encode(&mut out);
            }
        }
    }
}

/// The `db load` dump parser (nothing is stored).
pub fn dump(data: &[u8]) {
    if let Ok(parsed) = hamlet::store::parse(&mut &data[..], "fuzz") {
        let _ = parsed.stats();
    }
}

/// The Redis reply parser, reply after reply as a pipeline's replies
/// arrive, then every field of every reply.
pub fn redis_resp(data: &[u8]) {
    let mut r = resp::Replies::default();
    r.buffer().extend_from_slice(data);
    let mut at = 0;
    while let Ok(Some(end)) = r.parse_next(at) {
        assert!(end > at && end <= data.len(), "parse_next went from {at} to {end} of {}", data.len());
        at = end;
    }
    for i in 0..r.len() {
        for k in 0..=r.fields(i) {
            let _ = r.get(i, k);
        }
    }
    let _ = r.error();
}
