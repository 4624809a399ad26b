//! Tokenizer properties: whatever the input (arbitrary bytes, or random
//! "mail-shaped" text: header lines, MIME trees with random boundaries,
//! base64 / quoted-printable fragments, HTML tags), `tokenize` never panics,
//! returns a set in canonical order without duplicates or empty tokens, is
//! deterministic, and emits at most `Limits::max_tokens` tokens. Plus
//! deterministic monsters: a 20 MB message and MIME bombs.

mod common;

use common::base64;
use hamlet::hash::token_hash;
use hamlet::tokenize::{Limits, Options, Tokenizer};
use proptest::prelude::*;

/// The invariants every tokenization must satisfy.
fn check_output(tokens: &[String], limits: &Limits, input: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        tokens.len() <= limits.max_tokens,
        "{} tokens, more than max_tokens = {} (input of {} bytes)",
        tokens.len(),
        limits.max_tokens,
        input.len()
    );
    for w in tokens.windows(2) {
        prop_assert!((token_hash(&w[0]), &w[0]) < (token_hash(&w[1]), &w[1]), "output not in canonical order and unique: {:?} then {:?}", w[0], w[1]);
    }
    // An empty token could not be stored by `db dump` / `db load` (load refuses it).
    prop_assert!(tokens.iter().all(|t| !t.is_empty()), "empty token in output");
    Ok(())
}

fn tokenize_checked(tk: &Tokenizer, input: &[u8]) -> Result<(), TestCaseError> {
    let a = tk.tokenize(input);
    check_output(&a, &tk.options.limits, input)?;
    let b = tk.tokenize(input);
    prop_assert_eq!(a, b, "tokenize is not deterministic");
    // The 4-gram slots: distinct, in range, at most one per window read.
    let g = tk.grams(input);
    let read = input.len().min(tk.options.limits.gram_bytes);
    prop_assert!(g.len() <= read.saturating_sub(3), "{} slots from {read} bytes", g.len());
    prop_assert!(g.iter().all(|&s| (s as usize) < hamlet::tokenize::grams::GRAM_DIM));
    let mut sorted = g.clone();
    sorted.sort_unstable();
    sorted.dedup();
    prop_assert_eq!(sorted.len(), g.len(), "repeated 4-gram slots");
    Ok(())
}

// ---------------------------------------------------------------------------
// Mail-shaped input
// ---------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 .,!?$%-]{0,80}",
        "\\PC{0,40}",
        "(FREE|free|viagra|meeting|click here|http://www\\.[a-z]{1,12}\\.com/[a-z0-9/?=&%]{0,30}|mailto:x@y\\.z| ){0,12}",
        // long "words" (skip tokens), digits, non-ASCII scripts
        "[a-z]{15,200}",
        "[\u{400}-\u{4ff}\u{4e00}-\u{4e40} ]{0,40}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        // RFC 2047 encoded words, valid or not
        ("(utf-8|iso-8859-1|koi8-r|gb2312|x-unknown|)", "[BbQqX]", "[A-Za-z0-9+/=_?]{0,40}").prop_map(|(cs, enc, p)| format!("=?{cs}?{enc}?{p}?=")),
        prop::collection::vec(any::<u8>(), 0..30).prop_map(|b| format!("=?utf-8?b?{}?=", base64(&b))),
        // addresses
        "(\"[a-zA-Z ]{0,20}\" )?<?[a-z0-9.]{0,20}@[a-z0-9.-]{0,30}>?(, [a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3})*",
        // Received-ish
        "from [a-z.]{0,20} \\(\\[[0-9.]{0,20}\\]\\) by [a-z.]{0,20} with E?SMTP id [a-z0-9]{0,10}; Mon, 1 Jul 2024",
        // content types
        "(text|multipart|message|application|image)/[a-z0-9.+-]{0,20}(; ?(charset|boundary|name)=\"?[^\r\n\"]{0,30}\"?)*",
    ]
}

fn header_line() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("Subject".to_string()),
        Just("From".to_string()),
        Just("To".to_string()),
        Just("Cc".to_string()),
        Just("Reply-To".to_string()),
        Just("Return-Path".to_string()),
        Just("Received".to_string()),
        Just("Message-ID".to_string()),
        Just("Date".to_string()),
        Just("Content-Type".to_string()),
        Just("Content-Transfer-Encoding".to_string()),
        Just("Content-Disposition".to_string()),
        Just("MIME-Version".to_string()),
        Just("X-Mailer".to_string()),
        Just("X-Spam-Status".to_string()),
        Just("X-Priority".to_string()),
        "[A-Za-z][A-Za-z0-9-]{0,60}",
        "[^:\r\n]{0,20}",
    ];
    prop_oneof![
        8 => (name, header_value(), proptest::bool::ANY).prop_map(|(n, v, fold)| {
            if fold && v.len() > 4 {
                let (a, b) = v.split_at(v.char_indices().nth(v.chars().count() / 2).map_or(0, |(i, _)| i));
                format!("{n}: {a}\n\t{b}")
            } else {
                format!("{n}: {v}")
            }
        }),
        // junk that is not a header at all
        1 => "[^\r\n]{0,60}",
    ]
}

/// One piece of a part's payload.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => text(),
        // valid base64 of random bytes, wrapped
        2 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| {
            let s = base64(&b);
            s.as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\n")
        }),
        // broken base64
        1 => "[A-Za-z0-9+/=!*\\-]{0,120}",
        // quoted-printable: escapes, soft breaks, bad escapes
        2 => prop::collection::vec(
            prop_oneof![
                "[a-zA-Z ]{0,10}",
                "=[0-9A-F]{2}",
                Just("=\n".to_string()),
                Just("=\r\n".to_string()),
                "=[G-Z]{0,2}",
                Just("=".to_string()),
            ],
            0..30
        )
        .prop_map(|v| v.concat()),
        // HTML
        3 => prop::collection::vec(
            prop_oneof![
                "<(p|br|div|td|b|i|font|span|a|img|table|form|input|style|script|html|body|!DOCTYPE|!--|/[a-z]{1,6})( [a-z]{1,8}=(\"[^\"]{0,30}\"|'[^']{0,30}'|[^ >]{0,20}))*>",
                "<a href=\"(https?|ftp|mailto|javascript)://?[a-z0-9.@:%-]{0,30}(/[a-z0-9?&=%.]{0,20})?\">",
                "<img src=(http://)?[a-z0-9./]{0,40}>",
                "&(#[0-9]{0,9}|#x[0-9a-fA-F]{0,9}|[a-z]{0,8});?",
                "<!--[^>]{0,20}(-->)?",
                "<style>[^<]{0,30}(</style>)?",
                "<script>[^<]{0,30}(</script>)?",
                "<[^>]{0,20}",
                text(),
            ],
            0..40
        )
        .prop_map(|v| v.concat()),
    ]
}

/// A MIME part tree.
#[derive(Debug, Clone)]
enum Part {
    Leaf { headers: Vec<String>, body: Vec<String> },
    Multi { subtype: String, boundary: String, preamble: String, parts: Vec<Part>, close: bool, headers: Vec<String> },
    Rfc822 { headers: Vec<String>, inner_headers: Vec<String>, inner: Box<Part> },
}

fn leaf() -> impl Strategy<Value = Part> {
    let ctype = prop_oneof![
        Just("text/plain; charset=utf-8".to_string()),
        Just("text/plain; charset=iso-8859-1".to_string()),
        Just("text/html; charset=\"windows-1252\"".to_string()),
        Just("text/html".to_string()),
        Just("application/octet-stream; name=\"invoice.pdf.exe\"".to_string()),
        Just("image/gif; name=x.gif".to_string()),
        Just("text/plain; charset=x-no-such-charset".to_string()),
        "[a-z]{1,10}/[a-z0-9.+-]{1,12}",
    ];
    let cte = prop_oneof![
        Just(None),
        Just(Some("base64".to_string())),
        Just(Some("quoted-printable".to_string())),
        Just(Some("7bit".to_string())),
        Just(Some("8bit".to_string())),
        Just(Some("x-uuencode".to_string())),
        "[a-z0-9-]{0,12}".prop_map(Some),
    ];
    let disposition = prop_oneof![
        Just(None),
        Just(Some("attachment; filename=\"report.doc\"".to_string())),
        Just(Some("inline".to_string())),
        "attachment; filename=[^\r\n]{0,40}".prop_map(Some),
    ];
    (ctype, cte, disposition, prop::collection::vec(header_line(), 0..3), prop::collection::vec(fragment(), 0..6)).prop_map(
        |(ct, cte, disp, mut extra, body)| {
            let mut headers = vec![format!("Content-Type: {ct}")];
            if let Some(c) = cte {
                headers.push(format!("Content-Transfer-Encoding: {c}"));
            }
            if let Some(d) = disp {
                headers.push(format!("Content-Disposition: {d}"));
            }
            headers.append(&mut extra);
            Part::Leaf { headers, body }
        },
    )
}

fn part() -> impl Strategy<Value = Part> {
    leaf().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            3 => (
                "(mixed|alternative|related|signed|x-junk)",
                prop_oneof!["[a-zA-Z0-9'()+_,./:=? -]{1,70}", "[=_-]{0,10}NextPart_[0-9A-F_.]{0,30}", Just(String::new())],
                text(),
                prop::collection::vec(inner.clone(), 0..6),
                proptest::bool::weighted(0.8),
                prop::collection::vec(header_line(), 0..2),
            )
                .prop_map(|(subtype, boundary, preamble, parts, close, headers)| Part::Multi {
                    subtype,
                    boundary,
                    preamble,
                    parts,
                    close,
                    headers
                }),
            1 => (prop::collection::vec(header_line(), 0..2), prop::collection::vec(header_line(), 0..6), inner)
                .prop_map(|(headers, inner_headers, inner)| Part::Rfc822 { headers, inner_headers, inner: Box::new(inner) }),
        ]
    })
}

fn render(p: &Part, nl: &str, out: &mut String) {
    match p {
        Part::Leaf { headers, body } => {
            for h in headers {
                out.push_str(h);
                out.push_str(nl);
            }
            out.push_str(nl);
            for f in body {
                out.push_str(f);
                out.push_str(nl);
            }
        }
        Part::Multi { subtype, boundary, preamble, parts, close, headers } => {
            out.push_str(&format!("Content-Type: multipart/{subtype}; boundary=\"{boundary}\"{nl}"));
            for h in headers {
                out.push_str(h);
                out.push_str(nl);
            }
            out.push_str(nl);
            out.push_str(preamble);
            out.push_str(nl);
            for c in parts {
                out.push_str(&format!("--{boundary}{nl}"));
                render(c, nl, out);
            }
            if *close {
                out.push_str(&format!("--{boundary}--{nl}"));
            }
        }
        Part::Rfc822 { headers, inner_headers, inner } => {
            out.push_str(&format!("Content-Type: message/rfc822{nl}"));
            for h in headers {
                out.push_str(h);
                out.push_str(nl);
            }
            out.push_str(nl);
            for h in inner_headers {
                out.push_str(h);
                out.push_str(nl);
            }
            render(inner, nl, out);
        }
    }
}

fn mail() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(header_line(), 0..25),
        part(),
        prop_oneof![Just("\r\n"), Just("\n"), Just("\r")],
        // sometimes a leading mbox From_ line, sometimes trailing garbage
        proptest::bool::weighted(0.1),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(headers, body, nl, from_line, tail)| {
            let mut s = String::new();
            if from_line {
                s.push_str(&format!("From someone@example.com Mon Jul  1 00:00:00 2024{nl}"));
            }
            for h in headers {
                s.push_str(&h.replace('\n', nl));
                s.push_str(nl);
            }
            render(&body, nl, &mut s);
            let mut b = s.into_bytes();
            b.extend_from_slice(&tail);
            b
        })
}

fn small_limits() -> impl Strategy<Value = Options> {
    (0usize..4096, 0usize..2048, 0usize..8, 0usize..300, 0usize..8192, proptest::bool::ANY).prop_map(
        |(max_parse_bytes, max_text_bytes, max_parts, max_tokens, gram_bytes, pairs)| Options {
            limits: Limits { max_parse_bytes, max_text_bytes, max_parts, max_tokens, gram_bytes },
            pairs,
        },
    )
}

proptest! {
    // Failures are not persisted (proptest looks for a lib.rs beside an
    // integration test); inputs found failing are pinned as the explicit
    // tests at the end of this file instead.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..65_536)) {
        tokenize_checked(&Tokenizer::default(), &input)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_header(
        headers in prop::collection::vec(header_line(), 0..10),
        input in prop::collection::vec(any::<u8>(), 0..16_384),
    ) {
        let mut raw = headers.join("\r\n").into_bytes();
        raw.extend_from_slice(b"\r\n\r\n");
        raw.extend_from_slice(&input);
        tokenize_checked(&Tokenizer::default(), &raw)?;
    }

    #[test]
    fn mail_shaped(raw in mail()) {
        tokenize_checked(&Tokenizer::default(), &raw)?;
        tokenize_checked(&Tokenizer::new(Options { pairs: true, ..Options::default() }), &raw)?;
    }

    #[test]
    fn mail_shaped_small_limits(raw in mail(), options in small_limits()) {
        tokenize_checked(&Tokenizer::new(options), &raw)?;
    }

    #[test]
    fn arbitrary_bytes_small_limits(input in prop::collection::vec(any::<u8>(), 0..8192), options in small_limits()) {
        tokenize_checked(&Tokenizer::new(options), &input)?;
    }
}

// ---------------------------------------------------------------------------
// Deterministic monsters
// ---------------------------------------------------------------------------

/// Tokenizes on a thread with a 2 MiB stack: the size of the worker threads
/// `hamlet train`, `check` and `eval` tokenize on (std's default), so deep
/// recursion shows up here as it would there.
fn tokenize_bounded(name: &str, raw: Vec<u8>) -> Vec<String> {
    let name = name.to_string();
    let n = raw.len();
    let h = std::thread::Builder::new().name(name.clone()).stack_size(2 << 20).spawn(move || Tokenizer::default().tokenize(&raw)).unwrap();
    let t = h.join().unwrap_or_else(|_| panic!("{name}: tokenize panicked on {n} bytes"));
    let limits = Limits::default();
    assert!(t.len() <= limits.max_tokens, "{name}: {} tokens > max_tokens {}", t.len(), limits.max_tokens);
    assert!(t.windows(2).all(|w| (token_hash(&w[0]), &w[0]) < (token_hash(&w[1]), &w[1])), "{name}: output not in canonical order and unique");
    t
}

#[test]
fn twenty_megabyte_message() {
    let mut raw = b"From: a@example.com\r\nSubject: big\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    let mut i = 0u64;
    while raw.len() < 20 << 20 {
        raw.extend_from_slice(format!("word{i} another{i} and more text here\r\n").as_bytes());
        i += 1;
    }
    let t = tokenize_bounded("20 MB text", raw);
    assert!(t.iter().any(|x| x == "msg:truncated"), "a 20 MB message must be marked msg:truncated");
    assert!(t.iter().any(|x| x == "word0"), "the start of the body is still tokenized");
}

#[test]
fn twenty_megabyte_base64_attachment() {
    let mut raw = b"From: a@example.com\r\nSubject: attachment\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/octet-stream; name=\"big.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let line = base64(&(0..57u8).collect::<Vec<_>>());
    while raw.len() < 20 << 20 {
        raw.extend_from_slice(line.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"--b--\r\n");
    let t = tokenize_bounded("20 MB base64", raw);
    assert!(t.iter().any(|x| x == "msg:truncated"));
}

#[test]
fn mime_bomb_100k_parts() {
    // Big parts: most of the bomb lies beyond max_parse_bytes.
    let mut raw = b"Subject: bomb\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n".to_vec();
    for i in 0..100_000 {
        raw.extend_from_slice(format!("--XX\r\nContent-Type: text/plain\r\n\r\npart{i} text\r\n").as_bytes());
    }
    raw.extend_from_slice(b"--XX--\r\n");
    let t = tokenize_bounded("100k parts", raw);
    assert!(t.iter().any(|x| x == "msg:too-many-parts"), "max_parts must cut the bomb");
    // Tiny parts: all 100k fit within max_parse_bytes and are parsed.
    let mut raw = b"Content-Type: multipart/mixed; boundary=b\n\n".to_vec();
    for _ in 0..100_000 {
        raw.extend_from_slice(b"--b\n\nx\n");
    }
    assert!(raw.len() < Limits::default().max_parse_bytes, "the compact bomb should be parsed whole");
    let t = tokenize_bounded("100k tiny parts", raw);
    assert!(t.iter().any(|x| x == "msg:too-many-parts"), "max_parts must cut the compact bomb");
}

#[test]
fn deeply_nested_multiparts() {
    let depth = 20_000;
    let mut raw = b"Subject: nest\n".to_vec();
    for d in 0..depth {
        raw.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"b{d}\"\n\n--b{d}\n").as_bytes());
    }
    raw.extend_from_slice(b"Content-Type: text/plain\n\ninnermost words\n");
    for d in (0..depth).rev() {
        raw.extend_from_slice(format!("--b{d}--\n").as_bytes());
    }
    tokenize_bounded("20k nested multiparts", raw);
}

#[test]
fn deeply_nested_rfc822() {
    let depth = 20_000;
    let mut raw = b"Subject: outer\n".to_vec();
    for d in 0..depth {
        raw.extend_from_slice(format!("Content-Type: message/rfc822\n\nSubject: level {d}\n").as_bytes());
    }
    raw.extend_from_slice(b"Content-Type: text/plain\n\ninnermost words\n");
    tokenize_bounded("20k nested message/rfc822", raw);
}

#[test]
fn many_headers_and_huge_header() {
    let mut raw = Vec::new();
    for i in 0..200_000 {
        raw.extend_from_slice(format!("X-H{i}: value {i}\r\nReceived: from h{i}.example.com ([10.0.{}.{}])\r\n", i % 256, i / 256 % 256).as_bytes());
    }
    raw.extend_from_slice(b"Subject: ");
    raw.extend(std::iter::repeat_n(b'A', 2 << 20));
    raw.extend_from_slice(b"\r\n\r\nbody\r\n");
    tokenize_bounded("many headers", raw);
    let mut raw = b"To: ".to_vec();
    for i in 0..100_000 {
        raw.extend_from_slice(format!("u{i}@d{i}.example.com, ").as_bytes());
    }
    raw.extend_from_slice(b"\r\n\r\nbody\r\n");
    tokenize_bounded("100k recipients", raw);
}

// ---------------------------------------------------------------------------
// Inputs the properties above found failing, pinned
// ---------------------------------------------------------------------------

#[test]
fn long_non_ascii_message_id_domain() {
    // header.rs cut the Message-ID domain at byte 80 with `&d[..80]`, which
    // panics when byte 80 falls inside a multi-byte character.
    let raw = format!("Message-ID: <abc@{}>\r\nSubject: x\r\n\r\nbody\r\n", "\u{20ac}".repeat(30));
    let t = tokenize_bounded("non-ASCII Message-ID domain", raw.into_bytes());
    assert!(t.iter().any(|x| x.starts_with("msgid:domain:")), "the Message-ID domain is still a token");
}

#[test]
fn long_non_ascii_helo() {
    // Same cut for the HELO name of a Received header (`&helo[..80]`).
    let raw = format!(
        "Received: from ab.{} (host.example.com [10.1.2.3]) by mx.example.org with SMTP\r\nSubject: x\r\n\r\nbody\r\n",
        "\u{20ac}".repeat(30)
    );
    let t = tokenize_bounded("non-ASCII HELO", raw.into_bytes());
    assert!(t.iter().any(|x| x.starts_with("rcvd:helo:")), "the HELO name is still a token");
}
