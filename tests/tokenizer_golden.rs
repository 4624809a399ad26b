//! Golden tokenizer tests over the hand-written messages in `corpus/messages`.
//!
//! Each `corpus/messages/NAME.eml` has `corpus/golden/NAME.tokens`: the output
//! of `Tokenizer::default().tokenize`, one token a line, with `\` written as
//! `\\`, a newline as `\n` and a carriage return as `\r`.
//!
//! After an intended tokenizer change, rewrite the golden files with
//!
//! ```text
//! HAMLET_UPDATE_GOLDEN=1 cargo test --test tokenizer_golden
//! ```
//!
//! and review the diff of `corpus/golden/` before committing it.
//!
//! The `semantic_*` tests pin down facts that must hold whatever the golden
//! files say.

use hamlet::tokenize::Tokenizer;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The messages, in name order.
fn messages() -> Vec<PathBuf> {
    let dir = corpus().join("messages");
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    out.sort();
    out
}

fn golden_path(message: &Path) -> PathBuf {
    let stem = message.file_stem().unwrap().to_string_lossy();
    corpus().join("golden").join(format!("{stem}.tokens"))
}

fn tokens_of(name: &str) -> Vec<String> {
    let path = corpus().join("messages").join(name);
    let raw = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::default().tokenize(&raw)
}

fn escape(token: &str) -> String {
    let mut s = String::with_capacity(token.len());
    for c in token.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            c => s.push(c),
        }
    }
    s
}

fn unescape(line: &str) -> String {
    let mut s = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            s.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => s.push('\n'),
            Some('r') => s.push('\r'),
            Some(other) => s.push(other),
            None => s.push('\\'),
        }
    }
    s
}

fn encode(tokens: &[String]) -> String {
    tokens.iter().map(|t| escape(t) + "\n").collect()
}

fn decode(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.strip_suffix('\n').unwrap_or(text).split('\n').map(unescape).collect()
}

/// A readable account of how `actual` differs from `expected`.
fn diff(expected: &[String], actual: &[String]) -> String {
    let want: BTreeSet<&String> = expected.iter().collect();
    let got: BTreeSet<&String> = actual.iter().collect();
    let mut out = String::new();
    for t in want.difference(&got) {
        writeln!(out, "    - {}", escape(t)).unwrap();
    }
    for t in got.difference(&want) {
        writeln!(out, "    + {}", escape(t)).unwrap();
    }
    if out.is_empty() {
        out.push_str("    (same tokens, different order or duplicates)\n");
    }
    out
}

fn updating() -> bool {
    std::env::var("HAMLET_UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

#[test]
fn golden_token_files_match() {
    let messages = messages();
    assert!(messages.len() >= 12, "expected at least 12 messages in corpus/messages, found {}", messages.len());
    let golden_dir = corpus().join("golden");
    let update = updating();
    if update {
        fs::create_dir_all(&golden_dir).unwrap();
    }
    let mut failures = String::new();
    let mut wanted = BTreeSet::new();
    for msg in &messages {
        let raw = fs::read(msg).unwrap();
        let actual = Tokenizer::default().tokenize(&raw);
        let gpath = golden_path(msg);
        wanted.insert(gpath.file_name().unwrap().to_owned());
        let name = msg.file_name().unwrap().to_string_lossy();
        if update {
            fs::write(&gpath, encode(&actual)).unwrap();
            continue;
        }
        let Ok(text) = fs::read_to_string(&gpath) else {
            writeln!(
                failures,
                "{name}: golden file {} is missing; run `HAMLET_UPDATE_GOLDEN=1 cargo test --test tokenizer_golden` to write it",
                gpath.display()
            )
            .unwrap();
            continue;
        };
        let expected = decode(&text);
        if expected != actual {
            writeln!(failures, "{name}: tokens differ from {} (- missing, + extra):", gpath.display()).unwrap();
            failures.push_str(&diff(&expected, &actual));
        }
    }
    // Golden files whose message is gone.
    if let Ok(dir) = fs::read_dir(&golden_dir) {
        for e in dir {
            let p = e.unwrap().path();
            let fname = p.file_name().unwrap().to_owned();
            if p.extension().is_some_and(|x| x == "tokens") && !wanted.contains(&fname) {
                if update {
                    fs::remove_file(&p).unwrap();
                } else {
                    writeln!(failures, "{}: golden file has no message in corpus/messages", p.display()).unwrap();
                }
            }
        }
    }
    if update {
        eprintln!("tokenizer_golden: wrote {} golden files in {}", messages.len(), golden_dir.display());
    }
    assert!(
        failures.is_empty(),
        "tokenizer golden mismatch:\n{failures}\nIf the change is intended, rerun with HAMLET_UPDATE_GOLDEN=1 and review the diff of corpus/golden/."
    );
}

#[test]
fn golden_escaping_round_trips() {
    let tokens: Vec<String> =
        ["plain", "with space", "back\\slash", "new\nline", "cr\rlf", "\\n literal", ""].iter().map(|s| s.to_string()).collect();
    assert_eq!(decode(&encode(&tokens)), tokens);
    assert_eq!(decode(""), Vec::<String>::new());
}

// ---- semantic facts -------------------------------------------------------

fn has(tokens: &[String], want: &str) -> bool {
    tokens.iter().any(|t| t == want)
}

#[track_caller]
fn assert_has_all(name: &str, tokens: &[String], wanted: &[&str]) {
    let missing: Vec<&&str> = wanted.iter().filter(|w| !has(tokens, w)).collect();
    assert!(missing.is_empty(), "{name}: missing tokens {missing:?}\nall tokens: {tokens:#?}");
}

#[track_caller]
fn assert_has_none(name: &str, tokens: &[String], unwanted: &[&str]) {
    let present: Vec<&&str> = unwanted.iter().filter(|w| has(tokens, w)).collect();
    assert!(present.is_empty(), "{name}: unexpected tokens {present:?}");
}

#[test]
fn semantic_tokenizing_is_deterministic() {
    for msg in messages() {
        let raw = fs::read(&msg).unwrap();
        let t = Tokenizer::default();
        assert_eq!(t.tokenize(&raw), t.tokenize(&raw), "{}", msg.display());
    }
}

#[test]
fn semantic_plain_message_has_header_body_and_url_tokens() {
    let t = tokens_of("01-plain.eml");
    assert_has_all(
        "01-plain",
        &t,
        &[
            "subject:Minutes",
            "subject:committee",
            "from:addr:alice@mail.example.org",
            "from:domain:example.org",
            "to:addr:bob@example.net",
            "rcvd:ip:192.0.2.25",
            "msgid:domain:mail.example.org",
            "compost",
            "volunteers",
            "url:host:garden.example.org",
            "url:path:rota",
            "mailer:product:mozilla",
        ],
    );
}

#[test]
fn semantic_html_tag_split_word_is_joined_and_hidden_text_flagged() {
    let t = tokens_of("02-html-only.eml");
    assert_has_all(
        "02-html-only",
        &t,
        &[
            "free",
            "cruise",
            "café",
            "html:hidden-text",
            "html:img:1",
            "html:links:1",
            "html:comments:1",
            "url:host:click.bulk-sender.example",
            "url:host:img.bulk-sender.example",
        ],
    );
    // The split halves are not words of their own; <style> text is dropped.
    assert_has_none("02-html-only", &t, &["fr", "ee", "stylesheetonlyword", "promo", "amp"]);
}

#[test]
fn semantic_base64_body_is_decoded() {
    let t = tokens_of("03-base64-text.eml");
    assert_has_all("03-base64-text", &t, &["parcel", "courier", "café", "crème", "cte:base64"]);
}

#[test]
fn semantic_quoted_printable_soft_breaks_and_escapes_are_decoded() {
    let t = tokens_of("04-quoted-printable.eml");
    assert_has_all("04-quoted-printable", &t, &["résumé", "comité", "extraordinaire", "prochain", "très", "caractères", "charset:iso-8859-1"]);
    assert_has_none("04-quoted-printable", &t, &["extra", "ordinaire", "proch", "e9"]);
}

#[test]
fn semantic_attachment_gives_name_and_extension_not_payload() {
    let t = tokens_of("05-multipart-attachment.eml");
    assert_has_all("05-multipart-attachment", &t, &["att:ext:pdf", "att:name:invoice_2024-03.pdf", "att:type:application/pdf", "invoice", "payment"]);
    assert_has_none("05-multipart-attachment", &t, &["catalog", "mediabox", "endobj", "pdf"]);
}

#[test]
fn semantic_multipart_alternative_reads_both_parts() {
    let t = tokens_of("06-multipart-alternative.eml");
    assert_has_all(
        "06-multipart-alternative",
        &t,
        &["sourdough", "roses", "html:present", "ctype:multipart/alternative", "url:host:weekly.example.org"],
    );
}

#[test]
fn semantic_wrong_charset_does_not_lose_the_ascii_words() {
    let t = tokens_of("07-wrong-charset.eml");
    assert_has_all("07-wrong-charset", &t, &["dessert", "lunch", "menu", "charset:us-ascii"]);
}

#[test]
fn semantic_truncated_mime_still_tokenizes_what_is_there() {
    let t = tokens_of("08-truncated-mime.eml");
    assert_has_all("08-truncated-mime", &t, &["cover", "quarterly", "subject:Quarterly"]);
}

#[test]
fn semantic_8bit_header_junk_is_flagged() {
    let t = tokens_of("09-8bit-header-junk.eml");
    assert_has_all("09-8bit-header-junk", &t, &["hdr:8bit", "replica", "watches"]);
}

#[test]
fn semantic_huge_header_message_tokenizes() {
    let raw = fs::read(corpus().join("messages/10-huge-header.eml")).unwrap();
    assert!(raw.len() > 150_000 && raw.len() < 300_000, "10-huge-header.eml is {} bytes", raw.len());
    let t = Tokenizer::default().tokenize(&raw);
    assert_has_all("10-huge-header", &t, &["subject:Monthly", "subject:analytics", "hdr:x-tracking-data", "analytics", "errors"]);
}

#[test]
fn semantic_encoded_words_in_subject_and_from_are_decoded() {
    let t = tokens_of("11-encoded-subject.eml");
    assert_has_all(
        "11-encoded-subject",
        &t,
        &["subject:Réunion", "subject:demain", "subject:café", "subject:crème", "subject:encoded", "from:name:jürgen", "from:name:müller"],
    );
    assert!(!t.iter().any(|x| x.contains("=?") || x.contains("UTF-8")), "undecoded encoded word: {t:?}");
}

#[test]
fn semantic_other_filters_verdict_headers_give_no_tokens() {
    let t = tokens_of("12-spam-status-headers.eml");
    let leaked: Vec<&String> = t
        .iter()
        .filter(|x| {
            let l = x.to_lowercase();
            l.contains("barracuda")
                || l.starts_with("hdr:x-spam")
                || l.contains("spamstatusword")
                || l.contains("spamreportword")
                || l.contains("bayes_99")
                || l.contains("198.51.100.200")
        })
        .collect();
    assert!(leaked.is_empty(), "verdict headers leaked tokens: {leaked:?}");
    // The rest of the message is still tokenized.
    assert_has_all("12-spam-status-headers", &t, &["subject:furniture", "benches", "rcvd:ip:203.0.113.80"]);
}

#[test]
fn semantic_forwarded_message_keeps_words_not_relays() {
    let t = tokens_of("13-forwarded-rfc822.eml");
    assert_has_all("13-forwarded-rfc822", &t, &["msg:rfc822", "orchestra", "symphony", "concert"]);
    assert_has_none("13-forwarded-rfc822", &t, &["rcvd:ip:198.51.100.33", "rcvd:host:tickets.example.net"]);
}

#[test]
fn semantic_mbox_from_line_does_not_break_the_real_headers() {
    let t = tokens_of("14-mbox-from-line.eml");
    assert_has_all("14-mbox-from-line", &t, &["from:addr:kate@example.org", "subject:Lunch", "noodle"]);
}

// ---- regressions: tokenizer problems found with these messages ---------------

#[test]
fn regression_truncated_base64_decodes_the_complete_prefix() {
    let t = tokens_of("08-truncated-mime.eml");
    // Before the fix: no word of the decodable first 87 bytes (the undecoded base64
    // lines gave only long-word tokens).
    assert_has_all("08-truncated-mime", &t, &["revenue", "region", "northern", "warehouse"]);
}

#[test]
fn regression_mbox_from_line_gives_no_header_name_token() {
    let t = tokens_of("14-mbox-from-line.eml");
    // Before the fix: `hdr:from kate@example.org  tue mar 26 10` (every SpamAssassin
    // corpus file starts with such a line).
    let bad: Vec<&String> = t.iter().filter(|x| x.starts_with("hdr:") && x.contains(' ')).collect();
    assert!(bad.is_empty(), "header-name tokens with spaces: {bad:?}");
}

#[test]
fn regression_utf8_in_us_ascii_part_is_not_mojibake() {
    let t = tokens_of("07-wrong-charset.eml");
    // Before the fix: `crã`, `brã`, `lã`, `thã` and `me` from the UTF-8 line.
    assert_has_none("07-wrong-charset", &t, &["crã", "brã", "lã", "thã"]);
    assert_has_all("07-wrong-charset", &t, &["thé", "crème", "brûlée"]);
}
