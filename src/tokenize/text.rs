//! Words of decoded text: Unicode word segmentation (UAX #29), lower-cased,
//! with long ASCII words dropped, long others folded into skip tokens, and a
//! non-ASCII density cue.

use super::{Sink, prefix};
use unicode_segmentation::UnicodeSegmentation;

/// ASCII words shorter than this are dropped ("of", "to", "is": the
/// minimum of bogofilter, SpamAssassin's Bayes and SpamBayes too).
///
/// 3 against 2: 1-ROCA% spamassassin 0.02835 / csdmc2010 0.00912 /
/// enron-raw 0.000088, merged 0.001697, spam-heavy 0.006743 against
/// 0.02887 / 0.00976 / 0.000091 / 0.001731 / 0.006828, lam% better on all
/// five; second halves within a few pairs (spamassassin's two pairs worse).
/// Fisher alone better on every whole stream too (spamassassin 0.0369
/// against 0.0391). 4 lost merged (0.001803) (bench/RESULTS.md,
/// 2026-12-08). Other word variants tried: docs/tuning.md.
const MIN_WORD: usize = 3;
/// ASCII words longer than this are dropped: base64 debris, hashes,
/// tracking codes and run-together junk whose spelling never repeats (the
/// byte 4-grams still see them). SpamBayes' `skip:<first char> <length
/// class>` tokens for them measured worse: without them 1-ROCA%
/// spamassassin 0.02887 / csdmc2010 0.00976 / enron-raw 0.000091, merged
/// 0.001731, against 0.02893 / 0.01020 / 0.000092 / 0.001731 (csdmc2010's
/// second half 0.00097 against 0.00156; spam-heavy level but for one hard
/// ham newsletter); the length class alone gained as much on csdmc2010 and
/// less elsewhere; 30 or 40 instead of 20 came within ±0.00005
/// (bench/RESULTS.md, 2026-12-08).
///
/// Longer words of other scripts (mostly CJK runs, see [`CjkRuns`], where
/// such a run is often a whole clause) still become skip tokens: the shared
/// corpora hold too few of them to measure either way.
///
/// 20 rather than 12 (SpamBayes' value), which measured 0.0832 / 0.0476
/// against 0.0796 / 0.0456 (when every long word was a skip token).
const MAX_WORD: usize = 20;

/// Splits `text` into words and pushes them.
///
/// `pairs`: also push orthogonal sparse bigrams (word, word at distance 1..=3).
pub(crate) fn words(text: &str, sink: &mut Sink, pairs: bool) {
    let mut window: [Option<String>; 3] = [None, None, None];
    let mut lw = String::with_capacity(32);
    for w in unicode_words(text) {
        let ascii = w.is_ascii();
        let n = if ascii { w.len() } else { w.chars().count() };
        if n > MAX_WORD {
            if !ascii {
                let first = w.chars().next().unwrap_or('?').to_lowercase().next().unwrap_or('?');
                sink.push(prefix::SKIP, &format!("{first} {}", (n / 10) * 10));
            }
            continue;
        }
        if n < MIN_WORD && ascii {
            continue;
        }
        // Lower-cased into a reused buffer: the sink copies a token only
        // the first time it sees it.
        lw.clear();
        if ascii {
            lw.extend(w.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            lw.push_str(&w.to_lowercase());
        }
        sink.push("", &lw);
        if pairs {
            for (d, prev) in window.iter().enumerate() {
                if let Some(p) = prev {
                    sink.push(prefix::PAIR, &format!("{p} {} {lw}", d + 1));
                }
            }
            window.rotate_right(1);
            window[0] = Some(lw.clone());
        }
    }
}

/// UAX #29 words of `text` (CJK runs joined, see [`CjkRuns`]): a fast path
/// for ASCII, which gives exactly what `unicode_words` gives (a property
/// test checks that), at a fraction of the cost (the table-driven segmenter
/// was 11% of a bulk `check`).
///
/// Text with a few non-ASCII characters (an `&nbsp;`, a curly quote: about
/// one spamassassin message in six) takes the fast path too, but for the
/// whitespace-delimited stretches that hold them (see [`Mixed`]).
pub(crate) fn unicode_words(text: &str) -> Box<dyn Iterator<Item = &str> + '_> {
    if text.is_ascii() { Box::new(AsciiWords::new(text)) } else { Box::new(Mixed { text, pos: 0, ascii: AsciiWords::new(""), island: None }) }
}

/// The full segmenter, CJK runs joined.
fn segmenter(text: &str) -> CjkRuns<'_, unicode_segmentation::UnicodeWordIndices<'_>> {
    CjkRuns { inner: text.unicode_word_indices().peekable(), text }
}

/// ASCII whitespace: UAX #29 breaks before it after any other ASCII
/// character (WB3a/b, WB999), so text cut before a run of it segments as
/// the whole does.
fn is_cut(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Words of text that is not all ASCII: ASCII stretches through
/// [`AsciiWords`], each whitespace-delimited stretch holding a non-ASCII
/// character (an "island") through the full segmenter, in text order.
struct Mixed<'a> {
    text: &'a str,
    /// Where the text not yet planned starts.
    pos: usize,
    ascii: AsciiWords<'a>,
    island: Option<CjkRuns<'a, unicode_segmentation::UnicodeWordIndices<'a>>>,
}

impl<'a> Iterator for Mixed<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        loop {
            if let Some(w) = self.ascii.next() {
                return Some(w);
            }
            if let Some(w) = self.island.as_mut().and_then(|i| i.next()) {
                return Some(w);
            }
            let b = self.text.as_bytes();
            if self.pos >= b.len() {
                return None;
            }
            let rest = &b[self.pos..];
            match rest.iter().position(|&c| c >= 0x80) {
                None => {
                    self.ascii = AsciiWords::new(&self.text[self.pos..]);
                    self.island = None;
                    self.pos = b.len();
                }
                Some(off) => {
                    let k = self.pos + off;
                    // Cut points are ASCII, so both ends are char boundaries.
                    let piece = b[self.pos..k].iter().rposition(|&c| is_cut(c)).map_or(self.pos, |i| self.pos + i + 1);
                    // The whitespace before the piece goes with it: a
                    // combining mark right after a space joins the space
                    // (WB4), and that "word" holds the whole run of spaces.
                    let start = b[self.pos..piece].iter().rposition(|&c| !is_cut(c)).map_or(self.pos, |i| self.pos + i + 1);
                    let end = b[k..].iter().position(|&c| is_cut(c)).map_or(b.len(), |i| k + i);
                    self.ascii = AsciiWords::new(&self.text[self.pos..start]);
                    self.island = Some(segmenter(&self.text[start..end]));
                    self.pos = end;
                }
            }
        }
    }
}

/// Han and kana: scripts written without spaces between words, where UAX #29
/// gives one "word" per character.
///
/// A run of them between spaces or punctuation is kept as one word (and, at
/// over [`MAX_WORD`] characters, becomes a skip token), as a whitespace
/// tokenizer sees it: what SpamBayes, SpamAssassin's Bayes and bogofilter
/// do. One token per character made every kanji of a Japanese message a
/// separate, strongly correlated clue: on spamassassin (whose few CJK
/// messages are nearly all spam) a Japanese hard ham scored 0.99999995 on
/// the strength of 150 single characters. Runs measured 1-ROCA% 0.0404 on
/// spamassassin against 0.0504 for characters (csdmc2010 and enron-raw
/// about equal); character bigrams were no better (docs/tuning.md).
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xFF66..=0xFF9F)
}

/// UAX #29 words, with adjacent CJK words (nothing between them) joined
/// into one run, as a whitespace tokenizer would see them.
struct CjkRuns<'a, I: Iterator<Item = (usize, &'a str)>> {
    inner: std::iter::Peekable<I>,
    text: &'a str,
}

impl<'a, I: Iterator<Item = (usize, &'a str)>> Iterator for CjkRuns<'a, I> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let (start, w) = self.inner.next()?;
        let mut end = start + w.len();
        if w.chars().all(is_cjk) {
            while let Some(&(s, n)) = self.inner.peek() {
                if s != end || !n.chars().all(is_cjk) {
                    break;
                }
                end = s + n.len();
                self.inner.next();
            }
        }
        Some(&self.text[start..end])
    }
}

/// The UAX #29 word rules restricted to ASCII:
/// letters and digits join (WB5, WB8-10), `_` joins anything word-like
/// (WB13a/b), a letter-letter pair may be joined across one `:`, `.` or `'`
/// (WB6/7: MidLetter and MidNumLetQ), a digit-digit pair across one `,`,
/// `;`, `.` or `'` (WB11/12: MidNum and MidNumLetQ). A "word" is a segment
/// holding at least one letter or digit.
struct AsciiWords<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl<'a> AsciiWords<'a> {
    fn new(text: &'a str) -> AsciiWords<'a> {
        AsciiWords { s: text.as_bytes(), text, i: 0 }
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Iterator for AsciiWords<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let s = self.s;
        loop {
            // Skip to the next word character.
            while self.i < s.len() && !is_word(s[self.i]) {
                self.i += 1;
            }
            if self.i >= s.len() {
                return None;
            }
            let start = self.i;
            let mut j = self.i + 1;
            while j < s.len() {
                if is_word(s[j]) {
                    j += 1;
                    continue;
                }
                // A single separator between two word characters of the right kinds.
                if j + 1 < s.len() && j > start {
                    let (prev, mid, next) = (s[j - 1], s[j], s[j + 1]);
                    let letters = prev.is_ascii_alphabetic() && next.is_ascii_alphabetic() && matches!(mid, b':' | b'.' | b'\'');
                    let digits = prev.is_ascii_digit() && next.is_ascii_digit() && matches!(mid, b',' | b';' | b'.' | b'\'');
                    if letters || digits {
                        j += 2;
                        continue;
                    }
                }
                break;
            }
            self.i = j;
            let w = &self.text[start..j];
            if w.bytes().any(|b| b.is_ascii_alphanumeric()) {
                return Some(w);
            }
        }
    }
}

/// Subject words keep their case ("FREE" and "free" are different evidence).
pub(crate) fn subject_words(text: &str, sink: &mut Sink) {
    for w in unicode_words(text) {
        if w.chars().count() > MAX_WORD {
            sink.push(prefix::SUBJECT, "skip");
            continue;
        }
        sink.push(prefix::SUBJECT, w);
    }
    let bangs = text.chars().filter(|&c| c == '!').count();
    if bangs > 0 {
        sink.push(prefix::SUBJECT, &format!("!x{}", bangs.min(3)));
    }
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() >= 6 && letters.iter().all(|c| c.is_uppercase()) {
        sink.push(prefix::SUBJECT, "all-caps");
    }
}

/// A coarse class of the share of non-ASCII characters in a text part.
///
/// Spam in a script the recipient never writes in is a strong cue; the class
/// boundaries are deliberately coarse so the token generalizes.
pub(crate) fn non_ascii(text: &str, sink: &mut Sink) {
    // One pass over the bytes: a non-ASCII char is one UTF-8 lead byte.
    let (mut total, mut non) = (0usize, 0usize);
    for &b in text.as_bytes() {
        if b >= 0xC0 {
            non += 1;
            total += 1;
        } else if b < 0x80 && !b.is_ascii_whitespace() {
            total += 1;
        }
    }
    if total == 0 {
        return;
    }
    let class = match non * 100 / total {
        0 => "0",
        1..=4 => "low",
        5..=29 => "some",
        30..=69 => "half",
        _ => "most",
    };
    sink.push(prefix::NON_ASCII, class);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn long_ascii_words_are_dropped_and_long_cjk_runs_become_skip_tokens() {
        let mut sink = Sink::new(&super::super::Limits::default());
        let run = "日本語の文章はスペースなしで長く続くことがよくあります";
        words(&format!("keep aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ twentycharacterwords {run}"), &mut sink, false);
        let t = sink.strings();
        assert!(t.contains(&"keep".to_string()) && t.contains(&"twentycharacterwords".to_string()), "{t:?}");
        // The 32-letter base64 word gives nothing; the 27-character run one skip token.
        let skips: Vec<&String> = t.iter().filter(|x| x.starts_with(prefix::SKIP)).collect();
        assert_eq!(skips, [&format!("{}日 20", prefix::SKIP)], "{t:?}");
        assert!(!t.iter().any(|x| x.contains("agvs")), "{t:?}");
    }

    fn both(s: &str) -> (Vec<&str>, Vec<&str>) {
        (AsciiWords::new(s).collect(), s.unicode_words().collect())
    }

    /// `unicode_words` on text with non-ASCII, against the full segmenter
    /// over the whole text.
    fn mixed(s: &str) -> (Vec<&str>, Vec<&str>) {
        (unicode_words(s).collect(), segmenter(s).collect())
    }

    #[test]
    fn mixed_text_matches_the_full_segmenter_on_cases() {
        for s in [
            "caf\u{e9} au lait",
            "a\u{a0}b c",
            "\u{a0}",
            "x \u{301}y",
            "don\u{2019}t stop",
            "\u{ad}word next\u{ad}",
            "日本語 の テキスト abc",
            "price: 1\u{a0}000 \u{20ac}",
            "tab\there\u{e9}\r\nnext",
            "a\u{200d}\u{1f600} b",
            "\u{e9}",
            "e\u{301}t\u{e9} a.b\u{e9}.c",
            "カタカナabc漢字 x",
            "x \u{ce2}",
            "ab  \r\n \u{ce2}y z",
        ] {
            let (fast, full) = mixed(s);
            assert_eq!(fast, full, "on {s:?}");
        }
    }

    #[test]
    fn ascii_fast_path_matches_uax29_on_cases() {
        for s in [
            "don't stop",
            "www.example.com/x?y=1",
            "3.14 1,000,000 a1b2 _x_ x__y",
            "a:b c::d e.f. 'quoted'",
            "a.1 1.a 1'2 a'1 ''a'' ..a.. a,b 1;2;3 x_1.5",
            "e-mail foo@bar.baz",
            "",
            " ",
            "_",
            "__",
            "a_",
            "...",
            "A.B.C.",
        ] {
            let (fast, uax) = both(s);
            assert_eq!(fast, uax, "on {s:?}");
        }
    }

    proptest! {
        #[test]
        fn ascii_fast_path_matches_uax29(s in "[a-cA-C0-2 _.,;:'@/\\-]{0,40}") {
            let (fast, uax) = both(&s);
            prop_assert_eq!(fast, uax);
        }

        #[test]
        fn ascii_fast_path_matches_uax29_on_any_ascii(s in "[\\x00-\\x7f]{0,80}") {
            let (fast, uax) = both(&s);
            prop_assert_eq!(fast, uax);
        }

        #[test]
        fn mixed_text_matches_the_full_segmenter(
            s in "[a-cA-C0-2 _.,;:'@/\\t\\n\\r\\x0b\\x0c\\-\u{a0}\u{e9}\u{301}\u{ad}\u{200d}\u{2019}\u{20ac}\u{65e5}\u{672c}\u{30ab}\u{1f600}\u{0661}\u{ff10}]{0,60}"
        ) {
            let (fast, full) = mixed(&s);
            prop_assert_eq!(fast, full);
        }

        #[test]
        fn mixed_text_matches_on_any_chars(s in "[\\PC\\t\\n\\r ]{0,40}") {
            let (fast, full) = mixed(&s);
            prop_assert_eq!(fast, full);
        }
    }
}
