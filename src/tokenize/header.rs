//! Header tokens.
//!
//! The prototype measured header tokens as worth 3.5x in 1-ROCA on the
//! SpamAssassin corpus (0.103 with them, 0.371 without): relays, sender
//! domains and mailer software repeat across a spam run far more reliably than
//! its words do.
//!
//! Headers that other filters add (X-Spam-*, X-Barracuda-*, X-Bogosity,
//! X-DSPAM-*, our own X-Hamlet-*) are ignored entirely: they are forgeable by
//! the sender, and on csdmc2010 `X-Barracuda-Spam-Status` alone leaks the label
//! of 572 of 1,378 spam (and 1 of 2,949 ham), which would make both the
//! measurement and the filter lie.

use super::{Sink, prefix, small_bucket, text, url};
use mail_parser::{Address, HeaderValue, MimeHeaders};

/// Header name prefixes whose headers are never tokenized (see module doc).
const IGNORED_PREFIXES: &[&str] =
    &["x-spam", "x-barracuda", "x-bogosity", "x-dspam", "x-hamlet", "x-virus", "x-asg", "x-policyd", "x-amavis", "x-quarantine", "x-rspamd"];

/// Headers whose short values are tokenized whole (`hv:<name>:<value>`).
const VALUE_HEADERS: &[&str] = &[
    "x-priority",
    "x-msmail-priority",
    "importance",
    "precedence",
    "mime-version",
    "x-mimeole",
    "organization",
    "list-id",
    "errors-to",
    "content-language",
    "x-accept-language",
];

/// Headers whose absence is a cue (`hdr:missing:<name>`).
const EXPECTED: &[&str] = &["date", "message-id", "from", "to", "subject", "mime-version"];

/// Received headers after this many (from the top) are ignored: the deepest
/// ones are the sender's own, forgeable and rarely repeated. Measured
/// (1-ROCA% spamassassin / csdmc2010): no Received tokens 0.1020 / 0.0642,
/// the first 3 only 0.0839 / 0.0494, the first 8 0.0796 / 0.0456.
const MAX_RECEIVED: usize = 8;

/// The sequence token of [`order`] covers at most this many header names.
const MAX_ORDER: usize = 24;

/// [`order`] gives a token for each of this many adjacent pairs of names,
/// from the top of the sender's block.
const ORDER_PAIRS: usize = 2;

/// At most this many delivery addresses (Delivered-To, X-Original-To) are
/// read: a forwarded message can carry one per hop.
pub(crate) const MAX_DELIVERED: usize = 4;

pub(crate) fn is_ignored(name: &str) -> bool {
    IGNORED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Tokens of the top-level header block.
pub(crate) fn headers(message: &mail_parser::Message<'_>, raw: &[u8], sink: &mut Sink) {
    let Some(root) = message.parts.first() else { return };
    let mut received = 0;
    let mut deliveries = 0;
    let mut seen: Vec<String> = Vec::with_capacity(root.headers.len());
    for h in &root.headers {
        let name = h.name.as_str().to_ascii_lowercase();
        if is_ignored(&name) || !name.bytes().all(|b| b.is_ascii_graphic()) {
            continue;
        }
        if name.len() <= 40 {
            sink.push(prefix::HEADER_NAME, &name);
        }
        let raw_bytes = raw.get(h.offset_start as usize..h.offset_end as usize).unwrap_or_default();
        if !raw_bytes.is_ascii() {
            sink.push(prefix::HEADER_NAME, "8bit");
        }
        // Decoded only for the headers read raw below (most are not).
        let needs_raw = matches!(
            name.as_str(),
            "subject"
                | "return-path"
                | "received"
                | "delivered-to"
                | "x-original-to"
                | "message-id"
                | "content-transfer-encoding"
                | "x-mailer"
                | "user-agent"
                | "date"
        ) || VALUE_HEADERS.contains(&name.as_str());
        let raw_value = if needs_raw { String::from_utf8_lossy(raw_bytes) } else { std::borrow::Cow::Borrowed("") };
        match name.as_str() {
            "subject" => {
                if let Some(s) = h.value.as_text() {
                    text::subject_words(s, sink);
                } else if let HeaderValue::TextList(l) = &h.value {
                    for s in l {
                        text::subject_words(s, sink);
                    }
                }
                if raw_value.contains("=?") {
                    sink.push(prefix::SUBJECT, "encoded");
                }
            }
            "from" => addresses(prefix::FROM, &h.value, sink),
            "to" => addresses(prefix::TO, &h.value, sink),
            "cc" => addresses(prefix::CC, &h.value, sink),
            "reply-to" => addresses(prefix::REPLY_TO, &h.value, sink),
            "return-path" => {
                let a = raw_value.trim().trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
                if a.is_empty() {
                    sink.push(prefix::RETURN_PATH, "null");
                } else if let Some((_, d)) = a.rsplit_once('@') {
                    url::domain_tokens(prefix::RETURN_PATH, "domain:", d, sink);
                }
            }
            "received" => {
                received += 1;
                if received <= MAX_RECEIVED {
                    received_tokens(&raw_value, sink);
                }
            }
            "delivered-to" | "x-original-to" => {
                deliveries += 1;
                if deliveries <= MAX_DELIVERED {
                    delivered(&raw_value, sink);
                }
            }
            "message-id" => {
                let v = raw_value.trim().trim_start_matches('<').trim_end_matches('>');
                match v.rsplit_once('@') {
                    Some((local, d)) => {
                        // Only the first word: a broken Message-ID runs on
                        // into the folded remainder of the header.
                        let d = d.split_whitespace().next().unwrap_or("").trim_end_matches('>').to_ascii_lowercase();
                        sink.push3(prefix::MESSAGE_ID, "domain:", &d);
                        sink.push3(prefix::MESSAGE_ID, "shape:", &shape(local, 12));
                    }
                    None => sink.push(prefix::MESSAGE_ID, "no-at"),
                }
            }
            "content-type" => content_type(&h.value, sink),
            "content-transfer-encoding" => {
                sink.push(prefix::ENCODING, &raw_value.trim().to_ascii_lowercase());
            }
            "x-mailer" | "user-agent" => {
                let v = raw_value.trim().to_lowercase();
                let v: String = v.chars().take(60).collect();
                sink.push(prefix::MAILER, &v);
                if let Some(first) = v.split_whitespace().next() {
                    sink.push3(prefix::MAILER, "product:", first);
                }
            }
            "date" => {
                let v = raw_value.trim();
                if let Some(tz) = v.split_whitespace().find(|w| w.starts_with(['+', '-']) && w.len() == 5) {
                    sink.push3(prefix::DATE, "tz:", tz);
                }
                if v.ends_with(')') {
                    sink.push(prefix::DATE, "tz-comment");
                }
            }
            n if VALUE_HEADERS.contains(&n) => {
                let v: String = raw_value.trim().to_lowercase().chars().take(40).collect();
                sink.push(prefix::HEADER_VALUE, &format!("{n}:{v}"));
            }
            _ => {}
        }
        seen.push(name);
    }
    order(&seen, sink);
    for e in EXPECTED {
        if !seen.iter().any(|s| s == e) {
            sink.push3(prefix::HEADER_NAME, "missing:", e);
        }
    }
    sink.push(prefix::HEADER_NAME, &format!("received:{}", small_bucket(received)));
}

/// Tokens of the order of the sender's headers: those below the last
/// Received header, which the sending software wrote (the relays' and the
/// receiving side's sit above it). Each mailer and each spam tool writes its
/// headers in its own order, one that a forger seldom copies. One token for
/// the sequence of the first [`MAX_ORDER`] names (`hdr:seq:<hash>`) and one
/// for each of the first [`ORDER_PAIRS`] adjacent pairs
/// (`hdr:order:from>to`), which still match when the rest of the sequence
/// varies. Measured on the four streams of the protocol (bench/RESULTS.md,
/// 2026-12-07 (afternoon)): 1-ROCA% better or level on each, whole and
/// second half (merged 0.00216 → 0.00204, spamassassin 0.0340 → 0.0329,
/// csdmc2010 0.0107 → 0.0106), lam% too; the first eight pairs instead lost
/// on two second halves.
fn order(names: &[String], sink: &mut Sink) {
    let start = names.iter().rposition(|n| n == "received").map_or(0, |i| i + 1);
    let block = &names[start..];
    let seq = block[..block.len().min(MAX_ORDER)].join(">");
    sink.push3(prefix::HEADER_NAME, "seq:", &format!("{:016x}", crate::hash::token_hash(&seq)));
    for w in block.windows(2).take(ORDER_PAIRS) {
        if w[0].len() <= 30 && w[1].len() <= 30 {
            sink.push3(prefix::HEADER_NAME, "order:", &format!("{}>{}", w[0], w[1]));
        }
    }
}

/// Tokens of the address a message was delivered to: the address and its
/// domain with the domain's parents. Spam goes to harvested, old and alias
/// addresses that a user's own mail does not; a header the receiving side
/// writes, which the sender cannot choose. Measured on the four streams of
/// the protocol (bench/RESULTS.md, 2026-12-07 (midday)): 1-ROCA% better on
/// each, whole and second half (merged 0.00246 → 0.00228, spamassassin
/// 0.0381 → 0.0359, csdmc2010 0.0126 → 0.0116); the address alone gained
/// less, the domain alone less still.
pub(crate) fn delivered(value: &str, sink: &mut Sink) {
    let a = value.split_whitespace().next().unwrap_or("").trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
    if a.is_empty() {
        return;
    }
    sink.push3(prefix::DELIVERED, "addr:", &a);
    if let Some((_, d)) = a.rsplit_once('@') {
        url::domain_tokens(prefix::DELIVERED, "domain:", d, sink);
    }
}

/// Content type tokens for a MIME part other than the root.
pub(crate) fn part_headers(part: &mail_parser::MessagePart<'_>, sink: &mut Sink) {
    for h in &part.headers {
        let name = h.name.as_str();
        if name.eq_ignore_ascii_case("content-type") {
            content_type(&h.value, sink);
        } else if name.eq_ignore_ascii_case("content-transfer-encoding")
            && let Some(v) = part.content_transfer_encoding()
        {
            sink.push(prefix::ENCODING, &v.trim().to_ascii_lowercase());
        }
    }
}

fn content_type(value: &HeaderValue<'_>, sink: &mut Sink) {
    let Some(ct) = value.as_content_type() else { return };
    let t = match ct.subtype() {
        Some(s) => format!("{}/{}", ct.ctype(), s),
        None => ct.ctype().to_string(),
    };
    sink.push(prefix::CONTENT_TYPE, &t.to_ascii_lowercase());
    if let Some(cs) = ct.attribute("charset") {
        sink.push(prefix::CHARSET, &cs.trim().to_ascii_lowercase());
    }
    if let Some(b) = ct.attribute("boundary") {
        sink.push(prefix::BOUNDARY, &shape(b, 30));
    }
}

/// Address tokens: whole address, domain and parents, display-name words.
fn addresses(pfx: &str, value: &HeaderValue<'_>, sink: &mut Sink) {
    let Some(addr) = value.as_address() else {
        sink.push(pfx, "unparsed");
        return;
    };
    let list: Vec<&mail_parser::Addr<'_>> = match addr {
        Address::List(l) => l.iter().collect(),
        Address::Group(g) => g.iter().flat_map(|g| g.addresses.iter()).collect(),
    };
    if pfx == prefix::TO || pfx == prefix::CC {
        sink.push(pfx, &format!("count:{}", small_bucket(list.len())));
    }
    for a in list.iter().take(20) {
        if let Some(address) = &a.address {
            let address = address.trim().to_lowercase();
            sink.push3(pfx, "addr:", &address);
            match address.rsplit_once('@') {
                Some((local, domain)) => {
                    url::domain_tokens(pfx, "domain:", domain, sink);
                    sink.push3(pfx, "local-shape:", &shape(local, 12));
                }
                None => sink.push(pfx, "no-domain"),
            }
        }
        match &a.name {
            Some(name) => {
                for w in unicode_segmentation::UnicodeSegmentation::unicode_words(name.as_ref()).take(8) {
                    sink.push3(pfx, "name:", &w.to_lowercase());
                }
            }
            None => sink.push(pfx, "no-name"),
        }
    }
}

/// Tokens of one Received header: relay IPs at /16, /24 and /32, host names
/// and their parent domains, the HELO name, the protocol, and the address
/// it was received `for`, as a delivery address ([`delivered`]; on top of
/// Delivered-To, 1-ROCA% spamassassin 0.0359 → 0.0347, csdmc2010 0.0116 →
/// 0.0108, merged 0.00228 → 0.00218, second halves better too), and the
/// other words before the time stamp (`rcvd:w:`): the relays' software and
/// what they noted (`esmtp`, `postfix`, `qmail`, `unknown`, `forged`,
/// `authenticated`, `powermta`), which gave 0.0340 / 0.0107 / 0.00216 on
/// top of that, second halves better or level.
fn received_tokens(v: &str, sink: &mut Sink) {
    // Lowered once for the whole header: a copy per piece and per IP test
    // were a third of the header tokenizer's allocations (callgrind).
    let v = v.to_ascii_lowercase();
    // Where the time stamp starts: its day and month names are no evidence.
    let stamp = v.rfind(';').unwrap_or(v.len());
    let pieces: Vec<&str> =
        v.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ';' | '<' | '>' | ',')).filter(|p| !p.is_empty()).collect();
    for (i, &lower) in pieces.iter().enumerate() {
        if let Some(ip) = ipv4(lower) {
            // The /16 and /24 prefixes end at the second and third dots.
            let mut dots = ip.match_indices('.').map(|(d, _)| d);
            let (d2, d3) = (dots.nth(1).unwrap_or(ip.len()), dots.next().unwrap_or(ip.len()));
            sink.push3(prefix::RECEIVED, "ip:", &ip[..d2]);
            sink.push3(prefix::RECEIVED, "ip:", &ip[..d3]);
            sink.push3(prefix::RECEIVED, "ip:", ip);
            continue;
        }
        if i > 0 && (pieces[i - 1].eq_ignore_ascii_case("from") || lower.starts_with("helo=")) {
            let helo = lower.trim_start_matches("helo=");
            if helo.contains('.') {
                sink.push3(prefix::RECEIVED, "helo:", helo);
            } else {
                sink.push(prefix::RECEIVED, "helo-bare");
            }
        }
        if i > 0 && pieces[i - 1] == "for" && lower.contains('@') {
            delivered(lower, sink);
            continue;
        }
        if i > 0 && pieces[i - 1].eq_ignore_ascii_case("with") && lower.len() <= 20 {
            sink.push3(prefix::RECEIVED, "with:", lower);
        }
        if is_hostname(lower) {
            url::domain_tokens(prefix::RECEIVED, "host:", lower, sink);
        } else if (3..=20).contains(&lower.len())
            && lower.bytes().all(|b| b.is_ascii_alphabetic())
            && !matches!(lower, "from" | "with" | "for")
            && (lower.as_ptr() as usize - v.as_ptr() as usize) < stamp
        {
            sink.push3(prefix::RECEIVED, "w:", lower);
        }
    }
}

/// Returns the dotted quad if `s` is (or ends in, after `=`/`@`) an IPv4 address.
fn ipv4(s: &str) -> Option<&str> {
    let s = s.rsplit(['=', '@']).next().unwrap_or(s).trim_end_matches('.');
    let mut parts = 0;
    for p in s.split('.') {
        parts += 1;
        if parts > 4 || p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().ok()? > 255 {
            return None;
        }
    }
    (parts == 4).then_some(s)
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && !s.starts_with('.')
        && !s.ends_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.rsplit('.').next().is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))
}

/// The shape of a string: letters -> `a`, digits -> `9`, other chars kept,
/// runs of one class collapsed. `----=_NextPart_000_0012_01C2` -> `-=_a_9_9_9a9`.
pub(crate) fn shape(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut last = None;
    for c in s.chars() {
        let k = if c.is_ascii_alphabetic() {
            'a'
        } else if c.is_ascii_digit() {
            '9'
        } else if c.is_ascii() {
            c
        } else {
            'u'
        };
        if last != Some(k) {
            out.push(k);
            last = Some(k);
            if out.len() >= max {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_detection() {
        assert_eq!(ipv4("10.1.2.3"), Some("10.1.2.3"));
        assert_eq!(ipv4("helo=10.1.2.3"), Some("10.1.2.3"));
        assert!(ipv4("1.2.3.4.5").is_none());
        assert!(ipv4("1.2.3").is_none());
        assert!(ipv4("1.2.3.256").is_none());
        assert!(ipv4("a.b.c.d").is_none());
    }

    #[test]
    fn received_words_and_recipient() {
        let mut sink = Sink::new(&super::super::Limits::default());
        received_tokens(
            "from x (unknown [192.0.2.7]) by mail (Postfix) with ESMTP id AB12 for <Erin@corp.example>; Mon, 7 Dec 2026 10:00:00 +0000",
            &mut sink,
        );
        let t = sink.strings();
        for want in ["rcvd:w:unknown", "rcvd:w:postfix", "rcvd:w:mail", "rcvd:with:esmtp", "rcvd:ip:192.0.2.7", "dto:addr:erin@corp.example"] {
            assert!(t.iter().any(|x| x == want), "missing {want} in {t:?}");
        }
        // Not the time stamp's names, not the header's own keywords, not
        // the queue id (it has digits).
        for unwanted in ["rcvd:w:mon", "rcvd:w:dec", "rcvd:w:from", "rcvd:w:with", "rcvd:w:for", "rcvd:w:ab12"] {
            assert!(!t.iter().any(|x| x == unwanted), "{unwanted} in {t:?}");
        }
    }

    #[test]
    fn sender_header_order() {
        let toks = |raw: &str| super::super::Tokenizer::default().tokenize(raw.as_bytes());
        let body = "From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\nhello\r\n";
        let one = toks(&format!("Received: from a by b; Mon, 7 Dec 2026 10:00:01 +0000\r\n{body}"));
        // The pairs and the sequence are read below the last Received header:
        // another relay path gives the same tokens.
        let two = toks(&format!(
            "Delivered-To: c@example.org\r\nReceived: from x by y; Mon, 7 Dec 2026 10:00:02 +0000\r\nReceived: from a by b; Mon, 7 Dec 2026 10:00:01 +0000\r\n{body}"
        ));
        let order = |t: &[String]| t.iter().filter(|x| x.starts_with("hdr:order:") || x.starts_with("hdr:seq:")).cloned().collect::<Vec<_>>();
        let o = order(&one);
        assert_eq!(o.len(), 3, "{o:?}");
        for want in ["hdr:order:from>to", "hdr:order:to>subject"] {
            assert!(o.iter().any(|x| x == want), "missing {want} in {o:?}");
        }
        assert_eq!(o, order(&two));
        // Another order of the same headers is another sequence.
        let swapped =
            toks("Received: from a by b; Mon, 7 Dec 2026 10:00:01 +0000\r\nTo: b@example.com\r\nFrom: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n");
        let s = order(&swapped);
        assert!(s.iter().any(|x| x == "hdr:order:to>from"), "{s:?}");
        assert!(!s.iter().any(|x| x.starts_with("hdr:seq:") && o.contains(x)), "{s:?} {o:?}");
    }

    #[test]
    fn shapes() {
        assert_eq!(shape("----=_NextPart_000_0012", 30), "-=_a_9_9");
        assert_eq!(shape("abc123", 30), "a9");
    }

    #[test]
    fn ignored_headers() {
        assert!(is_ignored("x-spam-status"));
        assert!(is_ignored("x-barracuda-spam-score"));
        assert!(!is_ignored("x-mailer"));
    }
}
