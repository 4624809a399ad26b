//! Words of decoded text: Unicode word segmentation (UAX #29), lower-cased,
//! with long words folded into skip tokens and a non-ASCII density cue.

use super::{Sink, prefix};
use unicode_segmentation::UnicodeSegmentation;

/// ASCII words shorter than this are dropped ("a", "I" carry nothing).
///
/// Measured (TREC on-line, 1-ROCA% spamassassin / csdmc2010, Fisher alone,
/// 2026-11-26): a minimum of 3 gave 0.0707 / 0.0471 against 0.0796 / 0.0456
/// for 2: better on one corpus, worse on the other, so the cheaper-to-explain
/// 2 stays. Also tried and not kept, same table: body words with their case
/// kept as extra tokens (0.0679 / 0.0495), whitespace-split words with
/// punctuation as extra tokens (0.0777 / 0.0477), both with a minimum of 3
/// (0.0624 / 0.0529): each wins on spamassassin and loses on csdmc2010.
const MIN_WORD: usize = 2;
/// Words longer than this (in chars) become `skip:<first char> <len class>`
/// tokens: SpamBayes measured that long "words" are mostly base64 debris, hashes
/// and run-together junk whose exact spelling never repeats, while their
/// existence and rough length does. 12 (SpamBayes' value) measured
/// 0.0832 / 0.0476 against 0.0796 / 0.0456 for 20.
const MAX_WORD: usize = 20;

/// Splits `text` into words and pushes them.
///
/// `pairs`: also push orthogonal sparse bigrams (word, word at distance 1..=3).
pub(crate) fn words(text: &str, sink: &mut Sink, pairs: bool) {
    let mut window: [Option<String>; 3] = [None, None, None];
    let mut lw = String::with_capacity(32);
    for w in text.unicode_words() {
        let n = if w.is_ascii() { w.len() } else { w.chars().count() };
        if n > MAX_WORD {
            let first = w.chars().next().unwrap_or('?').to_lowercase().next().unwrap_or('?');
            sink.push(prefix::SKIP, &format!("{first} {}", (n / 10) * 10));
            continue;
        }
        if n < MIN_WORD && w.is_ascii() {
            continue;
        }
        // Lower-cased into a reused buffer: the sink copies a token only
        // the first time it sees it.
        lw.clear();
        if w.is_ascii() {
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

/// Subject words keep their case ("FREE" and "free" are different evidence).
pub(crate) fn subject_words(text: &str, sink: &mut Sink) {
    for w in text.unicode_words() {
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
