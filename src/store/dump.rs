//! `db dump` / `db load`: a plain, line-oriented, diffable text format.
//!
//! ```text
//! # hamlet dump
//! schema 3                         (the dump format, [`DUMP_FORMAT`])
//! tokenizer 2
//! totals <spam> <ham>                (weighted, as the counts see them)
//! messages <spam> <ham>              (messages learned)
//! starter <spam> <ham>               (of those, a starter model's; optional)
//! bias <logistic bias>
//! mix <fisher weight offset> <logistic weight offset> <intercept> <4-gram weight offset>
//!   (the last absent in dumps from before it: 0)
//! t <spam> <ham> <last-seen day> <weight> <token>
//! g <slot> <weight>                  (byte 4-gram regression, non-zero weights)
//! j <digest hex> <spam|ham> <day> <weight> [auto]
//! ```
//!
//! `auto` marks a message auto-learned (not labelled by anyone); dumps
//! without it, older ones included, load as confirmed labels.
//!
//! Tokens come last on their line and may contain spaces; `\`, newline, CR
//! and tab are escaped as `\\`, `\n`, `\r`, `\t`. Lines are in the store's fixed
//! order (by token hash), so two dumps diff cleanly. Loading *adds* to what the store holds (counts and
//! totals summed, weights summed, latest day kept), in one transaction: a bad
//! line anywhere loads nothing.

use super::{DUMP_FORMAT, GRAM_DIM, JournalEntry, TokenRecord, TokenStore, Totals, WriteView};
use crate::digest::Digest;
use crate::tokenize::TOKENIZER_VERSION;
use crate::{Class, Error, Result};
use std::io::{BufRead, Write};

/// Counts of what a dump or load moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub tokens: u64,
    pub journal: u64,
    /// Non-zero byte 4-gram weights.
    pub grams: u64,
}

fn escape(t: &str) -> String {
    let mut o = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c => o.push(c),
        }
    }
    o
}

fn unescape(t: &str) -> String {
    let mut o = String::with_capacity(t.len());
    let mut it = t.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => o.push('\n'),
                Some('r') => o.push('\r'),
                Some('t') => o.push('\t'),
                Some(other) => o.push(other),
                None => o.push('\\'),
            }
        } else {
            o.push(c);
        }
    }
    o
}

/// What [`dump`] writes besides the model's state.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOptions {
    /// Skip tokens seen in fewer messages (for a compact starter model).
    pub min_count: u32,
    /// Include the byte 4-gram weights.
    pub grams: bool,
    /// Include the training journal.
    pub journal: bool,
    /// Mark every message in the dump as a starter model's (`starter` =
    /// `messages`): a database loading it gates its verdicts until it has
    /// learned mail of its own (`models/build-starter`).
    pub as_starter: bool,
}

/// Writes the whole store, as `opts` says.
pub fn dump(store: &dyn TokenStore, out: &mut dyn Write, opts: DumpOptions) -> Result<DumpStats> {
    let DumpOptions { min_count, grams: with_grams, journal: with_journal, as_starter } = opts;
    let io = |e| Error::io("<dump output>", e);
    let view = store.read()?;
    let state = view.state()?;
    let mut stats = DumpStats::default();
    writeln!(out, "# hamlet dump").map_err(io)?;
    writeln!(out, "schema {DUMP_FORMAT}").map_err(io)?;
    writeln!(out, "tokenizer {TOKENIZER_VERSION}").map_err(io)?;
    writeln!(out, "totals {} {}", state.totals.spam, state.totals.ham).map_err(io)?;
    writeln!(out, "messages {} {}", state.messages.spam, state.messages.ham).map_err(io)?;
    let starter = if as_starter { state.messages } else { state.starter };
    if starter != Totals::default() {
        writeln!(out, "starter {} {}", starter.spam, starter.ham).map_err(io)?;
    }
    writeln!(out, "bias {}", state.bias).map_err(io)?;
    writeln!(out, "mix {} {} {} {}", state.mix[0], state.mix[1], state.mix[2], state.mix[3]).map_err(io)?;
    view.for_each_token(&mut |_, t, r| {
        if u64::from(r.spam) + u64::from(r.ham) >= u64::from(min_count) {
            writeln!(out, "t {} {} {} {} {}", r.spam, r.ham, r.day, r.weight, escape(t)).map_err(io)?;
            stats.tokens += 1;
        }
        Ok(())
    })?;
    if with_grams {
        for (slot, w) in view.gram_weights()?.iter().enumerate() {
            if *w != 0.0 {
                writeln!(out, "g {slot} {w}").map_err(io)?;
                stats.grams += 1;
            }
        }
    }
    if with_journal {
        let mut after: Option<Digest> = None;
        loop {
            let chunk = view.journal_scan(after.as_ref(), 10_000)?;
            let Some((last, _)) = chunk.last() else { break };
            after = Some(*last);
            for (d, e) in &chunk {
                let auto = if e.auto { " auto" } else { "" };
                writeln!(out, "j {} {} {} {}{auto}", d.hex(), e.class, e.day, e.weight).map_err(io)?;
                stats.journal += 1;
            }
        }
    }
    drop(view);
    out.flush().map_err(io)?;
    Ok(stats)
}

/// Reads a dump and adds it to the store in one transaction.
pub fn load(store: &dyn TokenStore, input: &mut dyn BufRead, what: &str) -> Result<DumpStats> {
    let parsed = parse(input, what)?;
    store.write(&mut |w| apply(w, &parsed, what))?;
    Ok(parsed.stats())
}

/// A parsed dump, ready to [`apply`] (also what `recover` salvages).
#[derive(Default)]
pub struct Parsed {
    pub(super) tokens: Vec<(String, TokenRecord)>,
    pub(super) grams: Vec<(u32, f32)>,
    pub(super) journal: Vec<(Digest, JournalEntry)>,
    pub(super) totals: (u64, u64),
    pub(super) messages: (u64, u64),
    pub(super) starter: (u64, u64),
    pub(super) bias: f64,
    pub(super) mix: [f64; 4],
}

impl Parsed {
    pub fn stats(&self) -> DumpStats {
        DumpStats { tokens: self.tokens.len() as u64, journal: self.journal.len() as u64, grams: self.grams.len() as u64 }
    }
}

fn finite<T: Into<f64> + Copy>(v: T) -> Option<T> {
    v.into().is_finite().then_some(v)
}

/// Parses a dump (nothing is stored).
pub fn parse(input: &mut dyn BufRead, what: &str) -> Result<Parsed> {
    let perr = |line: usize, message: String| Error::Parse { what: what.to_string(), line, message };
    let mut tokens: Vec<(String, TokenRecord)> = Vec::new();
    let mut journal: Vec<(Digest, JournalEntry)> = Vec::new();
    let mut grams: Vec<(u32, f32)> = Vec::new();
    let mut totals = (0u64, 0u64);
    let mut messages = (0u64, 0u64);
    let mut starter = (0u64, 0u64);
    let mut bias = 0.0f64;
    let mut mix = [0.0f64; 4];
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        let got = input.read_line(&mut line).map_err(|e| Error::io(what, e))?;
        if got == 0 {
            break;
        }
        n += 1;
        let l = line.trim_end_matches(['\n', '\r']);
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (kind, rest) = l.split_once(' ').unwrap_or((l, ""));
        match kind {
            "schema" => {
                if rest.trim() != DUMP_FORMAT.to_string() {
                    return Err(perr(n, format!("schema {rest}, expected {DUMP_FORMAT}")));
                }
            }
            "tokenizer" => {
                if rest.trim() != TOKENIZER_VERSION.to_string() {
                    return Err(perr(n, format!("tokenizer {rest}, expected {TOKENIZER_VERSION}")));
                }
            }
            "totals" | "messages" | "starter" => {
                let v: Vec<&str> = rest.split_whitespace().collect();
                let pair = match v.as_slice() {
                    [s, h] => {
                        (s.parse().map_err(|_| perr(n, format!("bad spam {kind}")))?, h.parse().map_err(|_| perr(n, format!("bad ham {kind}")))?)
                    }
                    _ => return Err(perr(n, format!("expected `{kind} <spam> <ham>`"))),
                };
                match kind {
                    "totals" => totals = pair,
                    "messages" => messages = pair,
                    _ => starter = pair,
                }
            }
            "bias" => bias = rest.trim().parse().ok().and_then(finite).ok_or_else(|| perr(n, "bad bias".into()))?,
            "mix" => {
                let v: Vec<f64> = rest
                    .split_whitespace()
                    .map(|x| x.parse::<f64>().ok().and_then(finite))
                    .collect::<Option<_>>()
                    .ok_or_else(|| perr(n, "bad mix".into()))?;
                // Three values: a dump from before the 4-gram weight was learned.
                mix = match v.as_slice() {
                    [a, b, c] => [*a, *b, *c, 0.0],
                    [a, b, c, d] => [*a, *b, *c, *d],
                    _ => return Err(perr(n, "expected `mix <a> <b> <c> [<d>]`".into())),
                };
            }
            "t" => {
                let mut it = rest.splitn(5, ' ');
                let mut num = |name: &str| -> Result<&str> { it.next().ok_or_else(|| perr(n, format!("missing {name}"))) };
                let spam: u32 = num("spam count")?.parse().map_err(|_| perr(n, "bad spam count".into()))?;
                let ham: u32 = num("ham count")?.parse().map_err(|_| perr(n, "bad ham count".into()))?;
                let day: u32 = num("day")?.parse().map_err(|_| perr(n, "bad day".into()))?;
                let weight: f32 = num("weight")?.parse().ok().and_then(finite).ok_or_else(|| perr(n, "bad weight".into()))?;
                let token = unescape(num("token")?);
                if token.is_empty() {
                    return Err(perr(n, "empty token".into()));
                }
                tokens.push((token, TokenRecord { spam, ham, day, weight }));
            }
            "g" => {
                let v: Vec<&str> = rest.split_whitespace().collect();
                let [slot, w] = v.as_slice() else { return Err(perr(n, "expected `g <slot> <weight>`".into())) };
                let slot: u32 = slot.parse().ok().filter(|&s: &u32| (s as usize) < GRAM_DIM).ok_or_else(|| perr(n, "bad slot".into()))?;
                let w: f32 = w.parse().ok().and_then(finite).ok_or_else(|| perr(n, "bad weight".into()))?;
                grams.push((slot, w));
            }
            "j" => {
                let v: Vec<&str> = rest.split_whitespace().collect();
                let (hex, class, day, weight, auto) = match v.as_slice() {
                    [h, c, d] => (h, c, d, "1", false),
                    [h, c, d, w] => (h, c, d, *w, false),
                    [h, c, d, w, "auto"] => (h, c, d, *w, true),
                    _ => return Err(perr(n, "expected `j <digest> <class> <day> <weight> [auto]`".into())),
                };
                let weight: u8 = weight.parse().map_err(|_| perr(n, "bad weight".into()))?;
                let mut d = [0u8; 32];
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(perr(n, "digest must be 64 hex digits".into()));
                }
                for (i, b) in d.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| perr(n, "bad digest".into()))?;
                }
                let class = Class::parse(class).ok_or_else(|| perr(n, "bad class".into()))?;
                let day = day.parse().map_err(|_| perr(n, "bad day".into()))?;
                journal.push((Digest(d), JournalEntry { class, day, weight, auto }));
            }
            other => return Err(perr(n, format!("unknown line kind {other:?}"))),
        }
    }
    if starter.0 > messages.0 || starter.1 > messages.1 {
        return Err(perr(n, format!("starter {} {} exceeds messages {} {}", starter.0, starter.1, messages.0, messages.1)));
    }
    Ok(Parsed { tokens, grams, journal, totals, messages, starter, bias, mix })
}

/// Adds a parsed dump to a store inside a write transaction. A journaled
/// message the store already journals is refused (its counts would be held
/// twice, and a later unlearn would remove only one copy).
pub fn apply(w: &mut dyn WriteView, p: &Parsed, what: &str) -> Result<()> {
    // One read of everything for a remote store (not one per token).
    let digests: Vec<Digest> = p.journal.iter().map(|(d, _)| *d).collect();
    let keys: Vec<(u64, &str)> = p.tokens.iter().map(|(t, _)| (crate::hash::token_hash(t), t.as_str())).collect();
    w.prefetch(&digests, &keys)?;
    for (d, _) in &p.journal {
        if w.journal(d)?.is_some() {
            return Err(Error::Invalid(format!(
                "{what}: message {} is already learned in this database: load a dump with its journal only into a database without those messages",
                d.hex()
            )));
        }
    }
    let overflow = || Error::Invalid(format!("{what}: totals overflow"));
    let mut st = w.state()?;
    st.totals.spam = st.totals.spam.checked_add(p.totals.0).ok_or_else(overflow)?;
    st.totals.ham = st.totals.ham.checked_add(p.totals.1).ok_or_else(overflow)?;
    st.messages.spam = st.messages.spam.checked_add(p.messages.0).ok_or_else(overflow)?;
    st.messages.ham = st.messages.ham.checked_add(p.messages.1).ok_or_else(overflow)?;
    st.starter.spam = st.starter.spam.saturating_add(p.starter.0);
    st.starter.ham = st.starter.ham.saturating_add(p.starter.1);
    st.bias += p.bias;
    for (m, v) in st.mix.iter_mut().zip(p.mix) {
        *m += v;
    }
    w.set_state(st)?;
    {
        let tokens = &p.tokens;
        for (t, r) in tokens {
            let rec = match w.get(t)? {
                Some(old) => TokenRecord {
                    spam: old.spam.saturating_add(r.spam),
                    ham: old.ham.saturating_add(r.ham),
                    day: old.day.max(r.day),
                    weight: old.weight + r.weight,
                },
                None => *r,
            };
            w.put(t, rec)?;
        }
    }
    for &(slot, v) in &p.grams {
        w.gram_add(&[slot], v)?;
    }
    for (d, e) in &p.journal {
        w.set_journal(d, Some(*e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, ModelState, Totals};

    const ALL: DumpOptions = DumpOptions { min_count: 0, grams: true, journal: true, as_starter: false };

    #[test]
    fn round_trip() {
        let a = MemoryStore::new();
        a.write(&mut |w| {
            w.put("plain", TokenRecord { spam: 1, ham: 2, day: 3, weight: -0.125 })?;
            w.put("with space\tand\\tab\n", TokenRecord { spam: 4, ham: 0, day: 9, weight: 1.5e-7 })?;
            w.set_journal(&crate::digest::digest(b"x"), Some(JournalEntry { class: Class::Spam, day: 7, weight: 2, auto: false }))?;
            w.set_journal(&crate::digest::digest(b"y"), Some(JournalEntry { class: Class::Ham, day: 8, weight: 1, auto: true }))?;
            w.gram_add(&[3, 70_000], 0.375)?;
            w.gram_add(&[3], -1.0e-3)?;
            w.set_state(ModelState {
                totals: Totals { spam: 5, ham: 6 },
                messages: Totals { spam: 4, ham: 6 },
                starter: Totals { spam: 3, ham: 1 },
                bias: -0.5,
                mix: [0.25, 0.0, -1.5, 0.125],
                last_pair: [0.0; 4],
            })
        })
        .unwrap();
        let mut buf = Vec::new();
        assert_eq!(dump(&a, &mut buf, ALL).unwrap(), DumpStats { tokens: 2, journal: 2, grams: 2 });
        assert!(String::from_utf8_lossy(&buf).lines().any(|l| l.starts_with("j ") && l.ends_with(" ham 8 1 auto")), "the auto flag is dumped");
        let b = MemoryStore::new();
        load(&b, &mut buf.as_slice(), "dump").unwrap();
        let mut buf2 = Vec::new();
        dump(&b, &mut buf2, ALL).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), String::from_utf8(buf2).unwrap());
        assert_eq!(b.read().unwrap().journal(&crate::digest::digest(b"y")).unwrap().map(|e| e.auto), Some(true), "and loaded");
        assert_eq!(b.read().unwrap().state().unwrap().starter, Totals { spam: 3, ham: 1 }, "the starter's share survives a dump");
    }

    #[test]
    fn a_starter_dump_marks_all_its_messages() {
        let a = MemoryStore::new();
        a.write(&mut |w| {
            w.set_state(ModelState { totals: Totals { spam: 3, ham: 4 }, messages: Totals { spam: 2, ham: 4 }, ..ModelState::default() })
        })
        .unwrap();
        let mut buf = Vec::new();
        dump(&a, &mut buf, DumpOptions { as_starter: true, ..ALL }).unwrap();
        assert!(String::from_utf8_lossy(&buf).lines().any(|l| l == "starter 2 4"));
        let b = MemoryStore::new();
        load(&b, &mut buf.as_slice(), "dump").unwrap();
        assert_eq!(b.read().unwrap().state().unwrap().starter, Totals { spam: 2, ham: 4 });
        let mut plain = Vec::new();
        dump(&a, &mut plain, ALL).unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("starter"), "a model with no starter share writes no line");
        let err = load(&MemoryStore::new(), &mut "messages 1 1\nstarter 2 1\n".as_bytes(), "dump").unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn old_journal_lines_load_as_confirmed() {
        let d = crate::digest::digest(b"old").hex();
        let s = MemoryStore::new();
        load(&s, &mut format!("j {d} spam 3 2\n").as_bytes(), "dump").unwrap();
        let e = s.read().unwrap().journal(&crate::digest::digest(b"old")).unwrap().unwrap();
        assert_eq!((e.class, e.weight, e.auto), (Class::Spam, 2, false));
        assert!(load(&MemoryStore::new(), &mut format!("j {d} spam 3 2 maybe\n").as_bytes(), "dump").is_err());
    }

    #[test]
    fn three_value_mix_lines_load_with_no_learned_gram_weight() {
        let s = MemoryStore::new();
        load(&s, &mut "mix 0.5 0.25 -1\n".as_bytes(), "dump").unwrap();
        assert_eq!(s.read().unwrap().state().unwrap().mix, [0.5, 0.25, -1.0, 0.0]);
    }

    #[test]
    fn hostile_lines_are_errors_not_panics() {
        for bad in [
            "j \u{20ac}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ham 1 1\n",
            "t 1 0 1 NaN from:x\n",
            "bias inf\n",
            "mix 0 NaN 0\n",
            "mix 0 0\n",
            "mix 0 0 0 0 0\n",
            "g 262144 0.5\n",
            "g 1 NaN\n",
            "g 1\n",
        ] {
            let s = MemoryStore::new();
            assert!(load(&s, &mut bad.as_bytes(), "in").is_err(), "accepted {bad:?}");
        }
        let s = MemoryStore::new();
        load(&s, &mut "totals 18446744073709551615 0\n".as_bytes(), "in").unwrap();
        assert!(load(&s, &mut "totals 1 0\n".as_bytes(), "in").is_err(), "overflow");
    }

    #[test]
    fn journaled_messages_are_not_loaded_twice() {
        let s = MemoryStore::new();
        let d = crate::digest::digest(b"x").hex();
        let dump = format!("t 1 0 1 0 tok\nj {d} spam 1 1\n");
        load(&s, &mut dump.as_bytes(), "in").unwrap();
        assert!(load(&s, &mut dump.as_bytes(), "in").is_err());
        assert_eq!(s.read().unwrap().get("tok").unwrap().unwrap().spam, 1);
    }

    #[test]
    fn bad_line_loads_nothing() {
        let s = MemoryStore::new();
        let input = "t 1 2 3 0.5 good\nt x 2 3 0 bad\n";
        let e = load(&s, &mut input.as_bytes(), "in").unwrap_err();
        assert!(e.to_string().contains("in:2"), "{e}");
        assert_eq!(s.read().unwrap().token_count().unwrap(), 0);
    }
}
