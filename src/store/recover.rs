//! `hamlet db recover OUT`: salvages what a damaged database still yields
//! into a new one. Each table is read in slices of its key space, each
//! slice on its own (a read that fails or panics loses that slice, not the
//! rest; a failed slice is split and tried again in smaller parts), each
//! token record is checked against its key, and the report says what was
//! kept and what was lost.

use super::dump::{Parsed, apply};
use super::redb_store::{GRAMS, JOURNAL, META, TOKENS, retry_open};
use super::{GRAM_DIM, JournalEntry, RedbStore, SCHEMA_VERSION, TokenRecord, TokenStore, safe, stored_weight};
use crate::digest::Digest;
use crate::hash::token_hash;
use crate::tokenize::TOKENIZER_VERSION;
use crate::{Error, Result};
use redb::{ReadTransaction, ReadableDatabase};
use std::path::Path;
use std::time::Duration;

/// What [`recover`] kept and lost.
#[derive(Debug, Default)]
pub struct Recovered {
    pub tokens: u64,
    pub journal: u64,
    /// The 4-gram weights were read whole.
    pub grams: bool,
    /// The totals, the bias and the mix were read.
    pub state: bool,
    /// Token records whose text does not hash to their key (damaged).
    pub damaged: u64,
    /// What could not be read, one phrase each.
    pub lost: Vec<String>,
}

impl Recovered {
    /// One line for the command line.
    pub fn summary(&self) -> String {
        let kept = format!(
            "kept {} tokens, {} journal entries, {}, {}",
            self.tokens,
            self.journal,
            if self.grams { "the 4-gram weights" } else { "no 4-gram weights" },
            if self.state { "the totals" } else { "no totals" }
        );
        let mut lost = self.lost.clone();
        if self.damaged > 0 {
            lost.push(format!("{} damaged token records", self.damaged));
        }
        if lost.is_empty() { format!("{kept}; lost nothing readable") } else { format!("{kept}; lost: {}", lost.join(", ")) }
    }
}

/// Slices a failed key range is split into, and how often.
const SPLIT: u64 = 16;
const MAX_DEPTH: u32 = 3;

/// Copies what is readable of the database at `src` into a new database
/// at `out` (which must not exist). `src` is not changed: a file that
/// needs a repair first is repaired in a copy beside `out`.
pub fn recover(src: &Path, out: &Path) -> Result<Recovered> {
    safe::validate_file(src)?;
    if !src.exists() {
        return Err(Error::Invalid(format!("{}: no database to recover", src.display())));
    }
    if out.exists() {
        return Err(Error::Invalid(format!("{} exists: recover writes a new database, give a new file", out.display())));
    }
    let scratch = out.with_extension("recover-copy");
    let result = salvage_from(src, &scratch).and_then(|(parsed, report)| {
        let store = RedbStore::open(out, Duration::ZERO)?;
        store.write(&mut |w| apply(w, &parsed, "recovered records"))?;
        Ok(report)
    });
    let _ = std::fs::remove_file(&scratch);
    result
}

fn salvage_from(src: &Path, scratch: &Path) -> Result<(Parsed, Recovered)> {
    let open_ro = |p: &Path| safe::guard(p, || retry_open(p, Duration::from_secs(3), || redb::Database::builder().open_read_only(p)));
    match open_ro(src) {
        Ok(db) => {
            let txn = safe::guard(src, || Ok(db.begin_read()?))?;
            salvage(src, &txn)
        }
        Err(Error::NeedsRepair { .. }) => {
            std::fs::copy(src, scratch).map_err(|e| Error::io(scratch, e))?;
            let db = safe::guard(scratch, || retry_open(scratch, Duration::ZERO, || redb::Database::create(scratch)))?;
            let txn = safe::guard(scratch, || Ok(db.begin_read()?))?;
            salvage(src, &txn)
        }
        Err(e) => Err(e),
    }
}

fn salvage(path: &Path, txn: &ReadTransaction) -> Result<(Parsed, Recovered)> {
    let mut p = Parsed::default();
    let mut r = Recovered::default();
    let guard = |f: &mut dyn FnMut() -> Result<()>| safe::guard(path, f);

    // meta: each value on its own.
    match guard(&mut || txn.open_table(META).map(|_| ()).map_err(Error::from)) {
        Err(_) => r.lost.push("the totals table".into()),
        Ok(()) => {
            let get = |k: &str| -> Option<u64> { safe::guard(path, || Ok(txn.open_table(META)?.get(k)?.map(|v| v.value()))).ok().flatten() };
            if let Some(s) = get("schema")
                && s != u64::from(SCHEMA_VERSION)
            {
                return Err(Error::SchemaMismatch {
                    path: path.to_path_buf(),
                    found: format!("schema {s}"),
                    expected: format!("schema {SCHEMA_VERSION} / tokenizer {TOKENIZER_VERSION}"),
                });
            }
            let vals: Vec<Option<u64>> =
                ["spam", "ham", "msg_spam", "msg_ham", "bias", "mix0", "mix1", "mix2", "starter_spam", "starter_ham", "mix3"]
                    .iter()
                    .map(|k| get(k))
                    .collect();
            let f = |i: usize| vals[i].map_or(0.0, f64::from_bits);
            p.totals = (vals[0].unwrap_or(0), vals[1].unwrap_or(0));
            p.messages = (vals[2].unwrap_or(0), vals[3].unwrap_or(0));
            // Never more starter messages than messages.
            p.starter = (vals[8].unwrap_or(0).min(p.messages.0), vals[9].unwrap_or(0).min(p.messages.1));
            p.bias = f(4);
            p.mix = [f(5), f(6), f(7), f(10)];
            let finite = [p.bias, p.mix[0], p.mix[1], p.mix[2], p.mix[3]].iter().all(|x| x.is_finite());
            if !finite {
                p.bias = 0.0;
                p.mix = [0.0; 4];
            }
            r.state = vals[..4].iter().all(Option::is_some) && finite;
            if !r.state {
                r.lost.push("some of the totals".into());
            }
        }
    }

    // tokens: slices of the hash key space.
    let mut tokens: Vec<(String, TokenRecord)> = Vec::new();
    let mut damaged = 0u64;
    let lost_tokens = slices(path, &mut |lo, hi, last| {
        let t = txn.open_table(TOKENS)?;
        for item in t.range::<u64>(lo..=hi)? {
            let (k, v) = item?;
            let key = k.value();
            *last = Some(key);
            let rec = v.value();
            if token_hash(rec.4) == key && rec.3.is_finite() {
                tokens.push((rec.4.to_string(), TokenRecord { spam: rec.0, ham: rec.1, day: rec.2, weight: rec.3 }));
            } else {
                damaged += 1;
            }
        }
        Ok(())
    });
    if lost_tokens > 0 {
        r.lost.push(format!("{lost_tokens} unreadable ranges of tokens"));
    }
    r.tokens = tokens.len() as u64;
    r.damaged = damaged;
    p.tokens = tokens;

    // journal: slices of the digest space by its first 8 bytes.
    let mut journal: Vec<(Digest, JournalEntry)> = Vec::new();
    let lost_journal = slices(path, &mut |lo, hi, last| {
        let t = txn.open_table(JOURNAL)?;
        let start = lo.to_be_bytes();
        let end = hi.checked_add(1).map(u64::to_be_bytes);
        let range = match &end {
            Some(e) => t.range::<&[u8]>(start.as_slice()..e.as_slice())?,
            None => t.range::<&[u8]>(start.as_slice()..)?,
        };
        for item in range {
            let (k, v) = item?;
            let key = k.value();
            if let Some(prefix) = key.get(..8) {
                *last = Some(u64::from_be_bytes(prefix.try_into().unwrap_or_default()));
            }
            let (c, day, weight) = v.value();
            if let (Ok(d), Some(entry)) = (<[u8; 32]>::try_from(key), super::redb_store::journal_entry(c, day, weight)) {
                journal.push((Digest(d), entry));
            }
        }
        Ok(())
    });
    if lost_journal > 0 {
        r.lost.push(format!("{lost_journal} unreadable ranges of the journal"));
    }
    // A slice retried after a failure may repeat entries read before it.
    journal.sort_by_key(|e| e.0.0);
    journal.dedup_by(|a, b| a.0 == b.0);
    p.tokens.sort_by(|a, b| a.0.cmp(&b.0));
    p.tokens.dedup_by(|a, b| a.0 == b.0);
    r.tokens = p.tokens.len() as u64;
    r.journal = journal.len() as u64;
    p.journal = journal;

    // grams: one value.
    let grams = safe::guard(path, || {
        Ok(match txn.open_table(GRAMS) {
            Ok(t) => t.get(0)?.map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => Some(Vec::new()),
            Err(e) => return Err(e.into()),
        })
    });
    match grams {
        Ok(Some(bytes)) if bytes.is_empty() || bytes.len() == GRAM_DIM * 4 => {
            p.grams = (0..bytes.len() / 4).map(|s| (s as u32, stored_weight(&bytes, s))).filter(|(_, w)| *w != 0.0 && w.is_finite()).collect();
            r.grams = true;
        }
        Ok(None) => r.grams = true,
        _ => r.lost.push("the 4-gram weights".into()),
    }
    Ok((p, r))
}

/// Reads the keys `lo..=hi` of one table, noting the last key reached.
type SliceReader<'a> = dyn FnMut(u64, u64, &mut Option<u64>) -> Result<()> + 'a;

/// Reads the key space `0..=u64::MAX` in 256 slices with `read(lo, hi,
/// last)` (which records in `last` the last key it got to); a slice that
/// fails is retried after its last good key in [`SPLIT`] parts, down to
/// [`MAX_DEPTH`]. Returns how many slices were given up.
fn slices(path: &Path, read: &mut SliceReader) -> u64 {
    fn go(path: &Path, lo: u64, hi: u64, parts: u64, depth: u32, read: &mut SliceReader) -> u64 {
        let width = (hi - lo) / parts;
        let mut lost = 0;
        for i in 0..parts {
            let a = lo + i * width;
            let b = if i + 1 == parts { hi } else { a + width - 1 };
            let mut last = None;
            if safe::guard(path, || read(a, b, &mut last)).is_ok() {
                continue;
            }
            let resume = match last {
                Some(k) if k < b => k + 1,
                Some(_) => continue,
                None => a,
            };
            if depth >= MAX_DEPTH || b - resume < SPLIT {
                lost += 1;
            } else {
                // Skip the key that failed to decode (its neighbours may be fine).
                lost += go(path, resume, b, SPLIT, depth + 1, read);
            }
        }
        lost
    }
    go(path, 0, u64::MAX, 256, 0, read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteView;

    #[test]
    fn recovers_a_healthy_database_whole() {
        let dir = std::env::temp_dir().join(format!("hamlet-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = dir.join("a.redb");
        let store = RedbStore::open(&src, Duration::ZERO).unwrap();
        store
            .write(&mut |w: &mut dyn WriteView| {
                for i in 0..500 {
                    w.put(&format!("tok{i}"), TokenRecord { spam: i, ham: 1, day: 3, weight: 0.5 })?;
                }
                w.set_journal(&Digest([7; 32]), Some(JournalEntry { class: crate::Class::Spam, day: 3, weight: 1, auto: true }))?;
                w.gram_add(&[9], 0.25)?;
                let mut st = w.state()?;
                st.messages.spam = 4;
                st.totals.spam = 4;
                w.set_state(st)
            })
            .unwrap();
        drop(store);
        let out = dir.join("b.redb");
        let r = recover(&src, &out).unwrap();
        assert_eq!((r.tokens, r.journal, r.grams, r.state, r.damaged), (500, 1, true, true, 0), "{}", r.summary());
        assert!(r.summary().contains("lost nothing"));
        let got = RedbStore::open_read_only(&out, Duration::ZERO).unwrap();
        let v = got.read().unwrap();
        assert_eq!(v.get("tok42").unwrap().unwrap().spam, 42);
        assert_eq!(v.state().unwrap().messages.spam, 4);
        assert_eq!(v.gram_sum(&[9]).unwrap(), 0.25);
        assert!(recover(&src, &out).unwrap_err().to_string().contains("exists"));
        drop(v);
        drop(got);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
