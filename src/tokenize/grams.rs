//! Byte 4-grams of the raw message: the features of the second learner (an
//! on-line logistic regression, see `classify`), as in Cormack's TREC 2007
//! filter, the best of that year's on-line task.
//!
//! Every overlapping 4-byte window of the first [`GRAM_BYTES`] bytes of the
//! message as it arrived (headers and undecoded body alike) is hashed into
//! one of [`GRAM_DIM`] slots; a message's features are the set of its slots.
//! They see what word tokens cannot: spelling inside words ("v1agra"),
//! header formatting and ordering, punctuation, encodings, and scripts
//! written without spaces, at no parsing cost.
//!
//! The first 3,500 bytes and 2¹⁸ slots: added to the Fisher logit at weight
//! 0.1 they measured 1-ROCA% 0.0391 / 0.0232 on spamassassin / csdmc2010;
//! 2,500 or 5,000 bytes lost on spamassassin, and 2²⁰ or 2²² slots came
//! within 0.0003 while 2¹⁸ keeps the weights at 1 MiB, which a one-shot
//! `hamlet check` reads. On the 40,220-message merged stream too, 2²⁰
//! slots gave the learner alone 0.0080 against 0.0083: collisions cost
//! nothing measurable at that scale. History: docs/tuning.md.

/// Slots: the regression has this many weights (a power of two).
pub const GRAM_BITS: u32 = 18;
/// Number of weights.
pub const GRAM_DIM: usize = 1 << GRAM_BITS;
/// Only the first this-many bytes of a message are read for 4-grams (the
/// tokenizer's `limits.gram_bytes`). With binary features more bytes lose:
/// the learner alone on merged / spamassassin went from 0.0083 / 0.2027 to
/// 0.0142 / 0.2711 at 10,000 bytes. With unit-length ones
/// (`Params::gram_unit`) 10,000 bytes won alone (0.0047 / 0.1321) but not
/// in the combination (bench/RESULTS.md, 2026-12-07).
pub const GRAM_BYTES: usize = 3500;

/// The distinct slots of the byte 4-grams of `head` (the part of a message
/// the caller reads, its first [`GRAM_BYTES`] by default), in order of first
/// occurrence (a fixed order, so sums over them repeat exactly).
///
/// De-duplicated with a bitmap of all slots (32 KiB) rather than by sorting:
/// a sort of 3,500 slots cost more than the scoring they feed.
pub fn byte_grams(head: &[u8]) -> Vec<u32> {
    let mut out = vec![0u32; head.len().saturating_sub(3)];
    let mut n = 0;
    SEEN_SLOTS.with_borrow_mut(|seen| {
        // The 4-gram ending at each byte, rolled along (little-endian, as
        // `u32::from_le_bytes` of the window).
        let mut x = u32::from_le_bytes([0, head.first().copied().unwrap_or(0), head.get(1).copied().unwrap_or(0), head.get(2).copied().unwrap_or(0)]);
        for &b in head.iter().skip(3) {
            x = (x >> 8) | (u32::from(b) << 24);
            let s = slot(x);
            let (word, bit) = ((s >> 6) as usize, 1u64 << (s & 63));
            // Without a branch on it: every slot is written at `n`, and
            // only a new one moves `n` on (whether a 4-gram repeats is a
            // coin toss that a branch predictor loses often).
            let new = seen[word] & bit == 0;
            seen[word] |= bit;
            if let Some(o) = out.get_mut(n) {
                *o = s;
            }
            n += usize::from(new);
        }
        // Left all clear for the next message.
        for &s in &out[..n] {
            seen[(s >> 6) as usize] = 0;
        }
    });
    out.truncate(n);
    out
}

thread_local! {
    /// The slots seen in the message at hand, one bit each (32 KiB): kept
    /// per thread, where a new zeroed one per message was 2% of a bulk
    /// check's instructions. An array, so a slot's word (a slot is below
    /// GRAM_DIM) needs no bounds check.
    static SEEN_SLOTS: std::cell::RefCell<[u64; GRAM_DIM / 64]> = const { std::cell::RefCell::new([0; GRAM_DIM / 64]) };
}

/// Fibonacci hashing: the top bits of the 4 bytes times 2³²/φ spread
/// neighbouring byte patterns over the table.
fn slot(x: u32) -> u32 {
    x.wrapping_mul(0x9E37_79B1) >> (32 - GRAM_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grams_are_unique_and_in_range() {
        let g = byte_grams(b"abcdabcdabcd xyz");
        let mut sorted = g.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), g.len());
        assert!(g.iter().all(|&s| (s as usize) < GRAM_DIM));
        // "abcd", "bcda", "cdab", "dabc" repeat; then "bcd ", "cd x", "d xy", " xyz".
        assert_eq!(g.len(), 8);
    }

    #[test]
    fn same_as_the_plain_definition() {
        // Distinct slots of every 4-byte window, in order of first occurrence.
        fn plain(raw: &[u8]) -> Vec<u32> {
            let mut out: Vec<u32> = Vec::new();
            for w in raw.windows(4) {
                let s = slot(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            out
        }
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        for input in [&b""[..], b"a", b"abcd", b"abcde", b"aaaaaaaa", b"From: x@y\r\n\r\nhello hello", &noise[..], &noise[..17]] {
            assert_eq!(byte_grams(input), plain(input));
            // And again: the per-thread bitmap was left clear.
            assert_eq!(byte_grams(input), plain(input));
        }
    }

    #[test]
    fn short_and_long_inputs() {
        assert!(byte_grams(b"").is_empty());
        assert!(byte_grams(b"abc").is_empty());
        assert_eq!(byte_grams(b"abcd").len(), 1);
        let long = vec![b'x'; 10 * GRAM_BYTES];
        assert_eq!(byte_grams(&long).len(), 1);
        // The tokenizer reads only the head: GRAM_BYTES, or what its limits say.
        let mut a = vec![b'a'; GRAM_BYTES];
        a.extend_from_slice(b"zzzz");
        let t = crate::tokenize::Tokenizer::default();
        assert_eq!(t.grams(&a), byte_grams(&vec![b'a'; GRAM_BYTES]));
        let mut o = crate::tokenize::Options::default();
        o.limits.gram_bytes = GRAM_BYTES + 4;
        // aaaa, aaaz, aazz, azzz, zzzz.
        assert_eq!(crate::tokenize::Tokenizer::new(o).grams(&a).len(), 5);
    }
}
