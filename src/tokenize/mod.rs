//! The MIME-aware tokenizer: a raw RFC 822 message in, a sorted set of feature
//! strings out.
//!
//! mail-parser does the MIME work (multipart trees, base64 and quoted-printable,
//! RFC 2047 encoded words, charsets to UTF-8); this module decides what counts as
//! evidence. Every token carries a prefix naming where it came from (see
//! [`prefix`]); the prefixes are part of the stored model, so changing one
//! changes [`TOKENIZER_VERSION`] and old databases are refused.
//!
//! The tokenizer never fails and never panics: a malformed message just gives
//! fewer tokens. Work is bounded per message by [`Limits`]: a 20 MB message or a
//! MIME bomb costs no more than its first [`Limits::max_parse_bytes`] bytes.
//!
//! Messages are token *sets* (each feature counted once per message), as in
//! SpamBayes and bogofilter: repeating a word a thousand times buys a spammer
//! nothing.

pub mod grams;
mod header;
mod html;
mod text;
mod url;

use crate::hash::token_hash;
use mail_parser::{MessageParser, MimeHeaders, PartType};

/// Version of the token vocabulary; stored in every database.
///
/// Bump it whenever a token would change meaning (the same text read
/// another way), which would make a stored model's counts lie. A family
/// added or no longer produced leaves every stored count true: a new family
/// starts at zero, a dropped one is never looked up again and expires.
pub const TOKENIZER_VERSION: u32 = 2;

/// Token prefixes. They are part of the stored model: renaming one is a
/// tokenizer version change.
pub mod prefix {
    pub const SUBJECT: &str = "subject:";
    pub const FROM: &str = "from:";
    pub const TO: &str = "to:";
    pub const CC: &str = "cc:";
    pub const REPLY_TO: &str = "reply-to:";
    pub const RETURN_PATH: &str = "return-path:";
    pub const RECEIVED: &str = "rcvd:";
    pub const MESSAGE_ID: &str = "msgid:";
    pub const CONTENT_TYPE: &str = "ctype:";
    pub const CHARSET: &str = "charset:";
    pub const BOUNDARY: &str = "boundary:";
    pub const ENCODING: &str = "cte:";
    pub const MAILER: &str = "mailer:";
    /// The address a message was delivered to (Delivered-To, X-Original-To,
    /// or the envelope's RCPT TO where those are not written yet).
    pub const DELIVERED: &str = "dto:";
    pub const HEADER_NAME: &str = "hdr:";
    pub const HEADER_VALUE: &str = "hv:";
    pub const DATE: &str = "date:";
    pub const URL: &str = "url:";
    pub const HTML: &str = "html:";
    pub const ATTACHMENT: &str = "att:";
    pub const SKIP: &str = "skip:";
    pub const NON_ASCII: &str = "nonascii:";
    pub const MESSAGE: &str = "msg:";
    /// Word pairs (orthogonal sparse bigrams), when enabled.
    pub const PAIR: &str = "pair:";
    /// Synthetic tokens from the envelope stage (SPF, DNSBL, HELO...).
    pub const ENVELOPE: &str = "env:";
}

/// Per-message work bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Only this many leading bytes of a message are parsed at all.
    pub max_parse_bytes: usize,
    /// Only this many bytes of decoded text (all parts together) are split into words.
    pub max_text_bytes: usize,
    /// At most this many MIME parts are looked at.
    pub max_parts: usize,
    /// At most this many tokens are emitted (before de-duplication).
    pub max_tokens: usize,
    /// Only this many leading bytes are read for the byte 4-grams
    /// ([`grams::GRAM_BYTES`]; other values for evaluation:
    /// `hamlet eval --gram-bytes`).
    pub gram_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Spam puts its pitch up front; 1 MiB covers every message body of the
            // three shared corpora but a handful with big attachments.
            max_parse_bytes: 1 << 20,
            max_text_bytes: 256 << 10,
            max_parts: 256,
            max_tokens: 30_000,
            gram_bytes: grams::GRAM_BYTES,
        }
    }
}

/// Tokenizer settings. The defaults are what the shared corpora measured best.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub limits: Limits,
    /// Emit orthogonal sparse bigrams of body words. Off: measured with
    /// Fisher alone (min-dev 0.45), 1-ROCA% spamassassin / csdmc2010 went from
    /// 0.0848 / 0.0467 without to 0.0937 / 0.0776 with them (plain bigrams
    /// too: docs/tuning.md).
    pub pairs: bool,
}

/// The tokenizer. Cheap to build, shareable across threads.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub options: Options,
    parser: MessageParser,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Tokenizer::new(Options::default())
    }
}

/// mail-parser set up to parse only the headers whose parsed form we use
/// (MIME headers, Subject, the address headers); every other header is kept
/// raw. Parsing Received, Date and Message-ID into structures we never read
/// cost about 4% of a `check`.
fn parser() -> MessageParser {
    use mail_parser::HeaderName;
    MessageParser::new()
        .with_mime_headers()
        .header_text(HeaderName::Subject)
        .header_address(HeaderName::From)
        .header_address(HeaderName::To)
        .header_address(HeaderName::Cc)
        .header_address(HeaderName::ReplyTo)
}

/// Sorts a token list into hamlet's canonical order and removes duplicates.
///
/// The order is by the token's [`token_hash`] (ties by the token itself):
/// any fixed order makes floating-point sums repeat exactly run after run,
/// and this one is cheaper to sort: many tokens share long prefixes
/// (`rcvd:host:`, `url:path:`), so string order spends its time in memcmp
/// (a bulk `check` took 4% more instructions with it, callgrind; figures
/// in docs/tuning.md).
pub fn canonical_order(tokens: &mut Vec<String>) {
    let mut keyed: Vec<(u64, String)> = tokens.drain(..).map(|t| (token_hash(&t), t)).collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    keyed.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    tokens.extend(keyed.into_iter().map(|(_, t)| t));
}

/// The longest token, in bytes (prefix included).
pub const MAX_TOKEN_BYTES: usize = 160;

/// Where tokens are collected, with the per-message budget.
///
/// Duplicates are dropped as they arrive (by [`token_hash`]: a message repeats
/// most of its words), so only distinct tokens are kept and sorted. Their
/// texts sit back to back in one buffer: a `String` per token was a
/// quarter of a bulk check's allocations.
pub(crate) struct Sink {
    /// The distinct tokens' texts, back to back.
    text: String,
    /// (hash, start in `text`, length) of each distinct token.
    tokens: Vec<(u64, u32, u32)>,
    /// token hash -> index in `tokens` of the first token with that hash.
    seen: SeenMap,
    budget: usize,
    text_budget: usize,
}

/// A message's distinct tokens with their [`token_hash`]es, in
/// [`canonical_order`], their texts in one buffer: what scoring needs,
/// without a `String` per token.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    text: String,
    spans: Vec<(u64, u32, u32)>,
}

impl TokenSet {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The tokens and their hashes, in canonical order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u64, &str)> + '_ {
        self.spans.iter().map(|&(h, start, len)| (h, &self.text[start as usize..(start + len) as usize]))
    }

    /// The tokens alone, in canonical order.
    pub fn texts(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.iter().map(|(_, t)| t)
    }

    /// Adds tokens (e.g. envelope outcomes), keeping the set in canonical
    /// order and free of duplicates.
    pub fn extend<S: AsRef<str>>(&mut self, extra: impl IntoIterator<Item = S>) {
        for t in extra {
            let t = t.as_ref();
            let start = self.text.len() as u32;
            self.text.push_str(t);
            self.spans.push((token_hash(t), start, t.len() as u32));
        }
        let text = &self.text;
        let at = |&(_, start, len): &(u64, u32, u32)| &text[start as usize..(start + len) as usize];
        self.spans.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| at(a).cmp(at(b))));
        self.spans.dedup_by(|a, b| a.0 == b.0 && at(a) == at(b));
    }
}

impl<S: AsRef<str>> FromIterator<S> for TokenSet {
    /// The set of the given tokens (in any order, repeats allowed).
    fn from_iter<I: IntoIterator<Item = S>>(tokens: I) -> TokenSet {
        let mut set = TokenSet::default();
        set.extend(tokens);
        set
    }
}

type SeenMap = std::collections::HashMap<u64, usize, crate::hash::FxBuild>;

/// A `seen` table kept larger than this is not kept for the next message.
const KEEP_SEEN: usize = 16 * 1024;

thread_local! {
    /// The previous message's `seen` table, emptied, for the next one on
    /// this thread: a new table per message cost an allocation of 34 KB,
    /// the zeroing of its control bytes, and the regrowths of big messages.
    static SPARE_SEEN: std::cell::Cell<Option<SeenMap>> = const { std::cell::Cell::new(None) };
}

impl Sink {
    fn new(limits: &Limits) -> Sink {
        let seen = SPARE_SEEN.with(std::cell::Cell::take).unwrap_or_else(|| SeenMap::with_capacity_and_hasher(1024, crate::hash::FxBuild));
        Sink {
            text: String::with_capacity(8192),
            tokens: Vec::with_capacity(512),
            seen,
            budget: limits.max_tokens,
            text_budget: limits.max_text_bytes,
        }
    }

    fn span(&self, i: usize) -> &str {
        let (_, start, len) = self.tokens[i];
        &self.text[start as usize..(start + len) as usize]
    }

    /// The distinct tokens, in [`canonical_order`].
    fn into_set(mut self) -> TokenSet {
        let mut spans = std::mem::take(&mut self.tokens);
        let text = std::mem::take(&mut self.text);
        let at = |&(_, start, len): &(u64, u32, u32)| &text[start as usize..(start + len) as usize];
        spans.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| at(a).cmp(at(b))));
        // Only hash collisions can leave duplicates here (see `push3`).
        spans.dedup_by(|a, b| a.0 == b.0 && at(a) == at(b));
        TokenSet { text, spans }
    }

    /// The distinct tokens, in [`canonical_order`].
    fn into_tokens(self) -> Vec<String> {
        self.into_set().iter().map(|(_, t)| t.to_string()).collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let mut seen = std::mem::take(&mut self.seen);
        if seen.capacity() <= KEEP_SEEN {
            seen.clear();
            // A thread being torn down has no slot left: the table is dropped.
            let _ = SPARE_SEEN.try_with(|spare| spare.set(Some(seen)));
        }
    }
}

impl Sink {
    #[cfg(test)]
    pub(crate) fn strings(&self) -> Vec<String> {
        (0..self.tokens.len()).map(|i| self.span(i).to_string()).collect()
    }

    /// Adds `prefix` + `word`; silently drops it once the budget is spent.
    ///
    /// Tokens are at most [`MAX_TOKEN_BYTES`] long (cut on a char boundary)
    /// and never contain line breaks or tabs (they become spaces), so a
    /// hostile header cannot make a huge or multi-line token.
    pub(crate) fn push(&mut self, prefix: &str, word: &str) {
        self.push3(prefix, "", word);
    }

    /// [`Sink::push`] with a two-part prefix (`"url:"`, `"host:"`), so callers
    /// need no `format!` (an allocation per token) to join them.
    pub(crate) fn push3(&mut self, prefix: &str, prefix2: &str, word: &str) {
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        let mut end = word.len().min(MAX_TOKEN_BYTES.saturating_sub(prefix.len() + prefix2.len()));
        while !word.is_char_boundary(end) {
            end -= 1;
        }
        let word = &word[..end];
        // Written where it would stay, and taken back if it is a repeat.
        let start = self.text.len();
        self.text.push_str(prefix);
        self.text.push_str(prefix2);
        if word.bytes().any(|b| b == b'\n' || b == b'\r' || b == b'\t') {
            self.text.extend(word.chars().map(|c| if matches!(c, '\n' | '\r' | '\t') { ' ' } else { c }));
        } else {
            self.text.push_str(word);
        }
        let t = &self.text[start..];
        let h = token_hash(t);
        let span = (h, start as u32, t.len() as u32);
        match self.seen.get(&h) {
            // Seen: the common case.
            Some(&i) if self.span(i) == &self.text[start..] => self.text.truncate(start),
            // A different token with the same hash (crafted, or 2⁻⁶⁴ bad
            // luck): kept too, so no word can be hidden behind another.
            Some(_) => self.tokens.push(span),
            None => {
                self.seen.insert(h, self.tokens.len());
                self.tokens.push(span);
            }
        }
    }

    /// Takes up to `want` bytes of text budget; returns how many were granted.
    pub(crate) fn take_text(&mut self, want: usize) -> usize {
        let got = want.min(self.text_budget);
        self.text_budget -= got;
        got
    }

    fn full(&self) -> bool {
        self.budget == 0
    }
}

impl Tokenizer {
    pub fn new(options: Options) -> Tokenizer {
        Tokenizer { options, parser: parser() }
    }

    /// Tokenizes a raw message into a de-duplicated token set in
    /// [`canonical_order`].
    pub fn tokenize(&self, raw: &[u8]) -> Vec<String> {
        let mut sink = Sink::new(&self.options.limits);
        self.tokenize_into(raw, &mut sink);
        sink.into_tokens()
    }

    /// The distinct byte 4-gram slots of the first `limits.gram_bytes`
    /// bytes ([`grams::byte_grams`]).
    pub fn grams(&self, raw: &[u8]) -> Vec<u32> {
        grams::byte_grams(&raw[..raw.len().min(self.options.limits.gram_bytes)])
    }

    /// [`Tokenizer::tokenize`]'s tokens, with their hashes, in one buffer.
    pub fn token_set(&self, raw: &[u8]) -> TokenSet {
        let mut sink = Sink::new(&self.options.limits);
        self.tokenize_into(raw, &mut sink);
        sink.into_set()
    }

    /// The tokens a message's Delivered-To header would give for each of
    /// `recipients` (envelope RCPT TO addresses, `<>` allowed): the milter
    /// and an HTTP check with `Rcpt` judge mail before the delivery agent
    /// writes that header, which the same mail has when it is learned later
    /// from a folder.
    pub fn recipient_tokens(&self, recipients: &[String]) -> Vec<String> {
        let mut sink = Sink::new(&self.options.limits);
        for r in recipients.iter().take(header::MAX_DELIVERED) {
            header::delivered(r, &mut sink);
        }
        sink.into_tokens()
    }

    fn tokenize_into(&self, raw: &[u8], sink: &mut Sink) {
        let limits = &self.options.limits;
        // An mbox "From " separator line is not a header: parsed as one it
        // gives every message a unique junk token (5,453 of the 6,046
        // SpamAssassin corpus files start with one).
        let raw = if raw.starts_with(b"From ") { raw.iter().position(|&b| b == b'\n').map_or(&raw[raw.len()..], |i| &raw[i + 1..]) } else { raw };
        let raw = if raw.len() > limits.max_parse_bytes {
            sink.push(prefix::MESSAGE, "truncated");
            cut_at_line(&raw[..limits.max_parse_bytes])
        } else {
            raw
        };
        sink.push(prefix::MESSAGE, &format!("size:{}", log2_bucket(raw.len())));
        let Some(message) = self.parser.parse(raw) else {
            // Not even a header block: treat the bytes as plain text.
            sink.push(prefix::MESSAGE, "unparsable");
            let text = String::from_utf8_lossy(raw);
            text::words(&text, sink, self.options.pairs);
            return;
        };
        if let Some(body) = message.parts.first().and_then(|p| raw.get(p.offset_body as usize..)) {
            sink.push(prefix::MESSAGE, &format!("maxline:{}", log2_bucket(longest_line(body))));
        }
        let mut parts_seen = 0usize;
        self.message(&message, raw, sink, 0, &mut parts_seen);
    }

    /// Tokenizes one (possibly nested) message.
    fn message(&self, message: &mail_parser::Message<'_>, raw: &[u8], sink: &mut Sink, depth: usize, parts_seen: &mut usize) {
        if depth == 0 {
            header::headers(message, raw, sink);
        } else {
            // A forwarded message: its subject words still matter, its
            // relay headers are someone else's.
            sink.push(prefix::MESSAGE, "rfc822");
            if let Some(s) = message.subject() {
                text::words(s, sink, false);
            }
        }
        let limits = &self.options.limits;
        for (i, part) in message.parts.iter().enumerate() {
            if sink.full() || *parts_seen >= limits.max_parts {
                sink.push(prefix::MESSAGE, "too-many-parts");
                return;
            }
            *parts_seen += 1;
            if i > 0 {
                header::part_headers(part, sink);
            }
            if part.is_encoding_problem {
                sink.push(prefix::MESSAGE, "encoding-problem");
            }
            match &part.body {
                PartType::Text(body) => {
                    if is_attachment(part) {
                        attachment(part, sink);
                    }
                    let repaired = repair_text(part, raw);
                    let body = clip(repaired.as_deref().unwrap_or(body), sink);
                    text::non_ascii(body, sink);
                    url::find_in_text(body, sink);
                    text::words(body, sink, self.options.pairs);
                }
                PartType::Html(body) => {
                    let body = clip(body, sink);
                    let visible = html::tokenize(body, sink);
                    text::non_ascii(&visible, sink);
                    url::find_in_text(&visible, sink);
                    text::words(&visible, sink, self.options.pairs);
                }
                PartType::Binary(_) | PartType::InlineBinary(_) => attachment(part, sink),
                PartType::Message(inner) => {
                    if depth < 3 {
                        self.message(inner, inner.raw_message(), sink, depth + 1, parts_seen);
                    }
                }
                PartType::Multipart(children) => {
                    sink.push(prefix::MESSAGE, &format!("parts:{}", small_bucket(children.len())));
                }
            }
        }
    }
}

/// Better text for two kinds of broken part than mail-parser's best effort:
///
/// * a base64 part cut mid-way (mail-parser then hands back the undecoded
///   base64 as text): the complete leading quanta are decoded;
/// * 8-bit text in a part labelled us-ascii (or unlabelled) that is valid
///   UTF-8: valid UTF-8 is read as UTF-8 (mail-parser reads all of it as
///   Latin-1, giving mojibake), other high bytes as Latin-1.
fn repair_text(part: &mail_parser::MessagePart<'_>, raw: &[u8]) -> Option<String> {
    let body = raw.get(part.offset_body as usize..part.offset_end as usize)?;
    let cte = part.content_transfer_encoding().map(|c| c.trim().to_ascii_lowercase());
    if part.is_encoding_problem && cte.as_deref() == Some("base64") {
        return Some(String::from_utf8_lossy(&base64_prefix(body)).into_owned());
    }
    let declared = part.content_type().and_then(|ct| ct.attribute("charset")).map(|c| c.trim().to_ascii_lowercase());
    let asciiish = matches!(declared.as_deref(), None | Some("us-ascii" | "ascii"));
    if asciiish && part.encoding == mail_parser::Encoding::None && !body.is_ascii() {
        // Valid UTF-8 sequences as UTF-8, any other high byte as Latin-1.
        let mut s = String::with_capacity(body.len());
        for chunk in body.utf8_chunks() {
            s.push_str(chunk.valid());
            s.extend(chunk.invalid().iter().map(|&b| char::from(b)));
        }
        return Some(s);
    }
    None
}

/// Decodes base64 up to the first byte that is not base64 (whitespace is
/// skipped), keeping only complete 4-character quanta.
fn base64_prefix(data: &[u8]) -> Vec<u8> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let (mut acc, mut n) = (0u32, 0);
    for &c in data {
        if c.is_ascii_whitespace() {
            continue;
        }
        let Some(v) = val(c) else { break };
        acc = (acc << 6) | v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    out
}

fn is_attachment(part: &mail_parser::MessagePart<'_>) -> bool {
    part.content_disposition().is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment")) || part.attachment_name().is_some()
}

/// Attachment tokens: file name, extension and content type, never the payload.
fn attachment(part: &mail_parser::MessagePart<'_>, sink: &mut Sink) {
    if let Some(ct) = part.content_type() {
        let t = match ct.subtype() {
            Some(s) => format!("type:{}/{}", ct.ctype(), s),
            None => format!("type:{}", ct.ctype()),
        };
        sink.push(prefix::ATTACHMENT, &t.to_ascii_lowercase());
    }
    if let Some(name) = part.attachment_name() {
        let name = name.trim().to_lowercase();
        let short: String = name.chars().take(60).collect();
        sink.push(prefix::ATTACHMENT, &format!("name:{short}"));
        if let Some((_, ext)) = name.rsplit_once('.')
            && !ext.is_empty()
            && ext.len() <= 8
        {
            sink.push(prefix::ATTACHMENT, &format!("ext:{ext}"));
        }
    }
    sink.push(prefix::ATTACHMENT, &format!("size:{}", log2_bucket(part.contents().len())));
}

/// Clips `s` to the remaining text budget, on a char boundary.
fn clip<'a>(s: &'a str, sink: &mut Sink) -> &'a str {
    let mut n = sink.take_text(s.len());
    while n < s.len() && !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Cuts a truncated message back to its last complete line.
fn cut_at_line(raw: &[u8]) -> &[u8] {
    match raw.iter().rposition(|&b| b == b'\n') {
        Some(i) => &raw[..=i],
        None => raw,
    }
}

/// The body lines [`longest_line`] reads.
const LINES_READ: usize = 300;

/// The length of the longest of the body's first [`LINES_READ`] lines, as
/// sent (all parts, encoded; without the line end). Mail programs wrap text
/// at 72-78 columns and base64 at 76, while many bulk tools send HTML or
/// text as one long line each: the token `msg:maxline:<log2 class>` says
/// which. Measured on the four streams of the protocol (bench/RESULTS.md,
/// 2026-12-07 (afternoon)): 1-ROCA% better on each, whole and second half
/// (merged 0.00204 → 0.00203, spamassassin 0.0329 → 0.0328, csdmc2010
/// 0.0106 → 0.0103); two finer classings gained as much.
fn longest_line(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n').take(LINES_READ).map(|l| l.strip_suffix(b"\r").unwrap_or(l).len()).max().unwrap_or(0)
}

/// floor(log2(n)) as a coarse size class.
pub(crate) fn log2_bucket(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

/// 0, 1, 2, 3, 4, 5-9 → "5+", 10+ → "10+"
pub(crate) fn small_bucket(n: usize) -> String {
    match n {
        0..=4 => n.to_string(),
        5..=9 => "5+".into(),
        _ => "10+".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(raw: &str) -> Vec<String> {
        Tokenizer::default().tokenize(raw.as_bytes())
    }

    #[test]
    fn longest_line_class() {
        assert_eq!(longest_line(b"short\r\nlines\r\n"), 5);
        assert_eq!(longest_line(b""), 0);
        let long = format!("From: a@example.com\r\n\r\n{}\r\nhi\r\n", "x".repeat(1000));
        let wrapped = format!("From: a@example.com\r\n\r\n{}\r\n{}\r\n", "x".repeat(70), "y".repeat(70));
        assert!(toks(&long).iter().any(|t| t == "msg:maxline:10"), "{:?}", toks(&long));
        assert!(toks(&wrapped).iter().any(|t| t == "msg:maxline:7"), "{:?}", toks(&wrapped));
        // A long header line is not the body's.
        let header = format!("From: a@example.com\r\nSubject: {}\r\n\r\nhi\r\n", "s".repeat(500));
        assert!(toks(&header).iter().any(|t| t == "msg:maxline:2"), "{:?}", toks(&header));
    }

    #[test]
    fn plain_message_gives_header_and_body_tokens() {
        let t = toks("From: Alice <alice@example.com>\r\nSubject: Hello World\r\n\r\nCheap watches here\r\n");
        for want in ["subject:Hello", "subject:World", "from:addr:alice@example.com", "cheap", "watches"] {
            assert!(t.iter().any(|x| x == want), "missing {want} in {t:?}");
        }
    }

    #[test]
    fn delivery_addresses_give_the_same_tokens_as_the_envelope() {
        let t = toks(
            "Delivered-To: Erin@Mail.Corp.Example\r\nX-Original-To: <erin@mail.corp.example>\r\nDelivered-To: a\r\nDelivered-To: b\r\n\
             Delivered-To: c\r\nDelivered-To: d\r\nSubject: x\r\n\r\nbody\r\n",
        );
        let mut dto: Vec<&String> = t.iter().filter(|x| x.starts_with(prefix::DELIVERED)).collect();
        dto.sort();
        // One address read twice; the fifth and sixth headers past the cap.
        assert_eq!(dto, ["dto:addr:a", "dto:addr:b", "dto:addr:erin@mail.corp.example", "dto:domain:corp.example", "dto:domain:mail.corp.example"]);
        // The envelope's recipients (the milter, before Delivered-To is written).
        let mut env = Tokenizer::default().recipient_tokens(&["<Erin@Mail.Corp.Example>".into(), "<>".into()]);
        env.sort();
        assert_eq!(env, ["dto:addr:erin@mail.corp.example", "dto:domain:corp.example", "dto:domain:mail.corp.example"]);
    }

    #[test]
    fn empty_and_garbage_input_do_not_panic() {
        let tk = Tokenizer::default();
        tk.tokenize(b"");
        tk.tokenize(b"\xff\xfe\x00\x01");
        tk.tokenize(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x--");
    }

    #[test]
    fn output_is_canonical_and_unique() {
        let t = toks("Subject: a a a\r\n\r\nword word word other");
        let mut s = t.clone();
        s.reverse();
        s.push("word".into());
        canonical_order(&mut s);
        assert_eq!(t, s);
        let mut u = t.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), t.len());
    }

    #[test]
    fn token_set_is_the_tokens_with_their_hashes() {
        let tk = Tokenizer::default();
        let raw = b"Subject: a a b\r\nFrom: x@example.org\r\n\r\nword word http://example.com/x other\r\n";
        let set = tk.token_set(raw);
        let from_set: Vec<String> = set.iter().map(|(_, t)| t.to_string()).collect();
        assert_eq!(from_set, tk.tokenize(raw));
        assert!(set.iter().all(|(h, t)| h == token_hash(t)));
        assert_eq!(set.len(), from_set.len());
        // Built or extended from loose tokens: the same canonical set.
        let mut loose: Vec<&str> = from_set.iter().rev().map(String::as_str).collect();
        loose.push(loose[0]);
        assert_eq!(loose.iter().collect::<TokenSet>().texts().collect::<Vec<_>>(), from_set);
        let mut grown: TokenSet = loose[..3].iter().collect();
        grown.extend(&loose[2..]);
        assert_eq!(grown.iter().collect::<Vec<_>>(), set.iter().collect::<Vec<_>>());
        // Two tokens sharing a hash (as crafted ones could) are both kept
        // (the second put in as `push` would on a collision).
        let mut sink = Sink::new(&Limits::default());
        sink.push("", "b");
        sink.push("", "a");
        sink.push("", "a");
        let (h, start) = (token_hash("b"), sink.text.len() as u32);
        sink.text.push_str("not-b");
        sink.tokens.push((h, start, 5));
        let set = sink.into_set();
        let got: Vec<&str> = set.iter().map(|(_, t)| t).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.contains(&"b") && got.contains(&"not-b"), "{got:?}");
    }

    #[test]
    fn base64_prefix_decodes_complete_quanta() {
        assert_eq!(base64_prefix(b"aGVs\nbG8gd29y\nbGQ"), b"hello wor");
        assert_eq!(base64_prefix(b"aGVsbG8=rest"), b"hel");
        assert_eq!(base64_prefix(b"!!"), b"");
    }

    #[test]
    fn truncation_is_marked() {
        let mut tk = Tokenizer::default();
        tk.options.limits.max_parse_bytes = 100;
        let raw = format!("Subject: x\r\n\r\n{}", "word ".repeat(1000));
        let t = tk.tokenize(raw.as_bytes());
        assert!(t.iter().any(|x| x == "msg:truncated"));
    }

    #[test]
    fn hostile_header_values_give_short_single_line_tokens() {
        let long = "€".repeat(100);
        let raw = format!("Message-ID: <a@{long}>\r\nReceived: from {long}.example.com by x\r\nFrom: {long}@{long}.com\r\n\r\nx");
        let t = Tokenizer::default().tokenize(raw.as_bytes());
        assert!(t.iter().all(|x| x.len() <= MAX_TOKEN_BYTES && !x.contains('\n')), "{t:?}");
        assert!(t.iter().any(|x| x.starts_with("msgid:domain:€")));
    }

    #[test]
    fn token_budget_is_honoured() {
        let mut tk = Tokenizer::default();
        tk.options.limits.max_tokens = 50;
        let body: String = (0..5000).map(|i| format!("w{i} ")).collect();
        let t = tk.tokenize(format!("Subject: x\r\n\r\n{body}").as_bytes());
        assert!(t.len() <= 50);
    }
}
