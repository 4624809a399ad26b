//! An in-memory [`TokenStore`]: for tests and in-process evaluation.
//!
//! Snapshots are `Arc`s of the whole state; a write collects its changes in an
//! overlay and swaps them in on commit (copy-on-write only if a snapshot is
//! still held), so it has the same isolation and rollback as the redb store.

use super::{Grams, JournalEntry, ModelState, ReadView, TokenRecord, TokenStore, WriteView, gram_at, set_slots, sum_slots};
use crate::Result;
use crate::digest::Digest;
use crate::hash::token_hash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
struct Inner {
    tokens: HashMap<String, TokenRecord>,
    state: ModelState,
    journal: HashMap<Digest, JournalEntry>,
    grams: Grams,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Arc<Inner>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn snapshot(&self) -> Arc<Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Snapshot(Arc<Inner>);

fn scan_journal(map: &HashMap<Digest, JournalEntry>, after: Option<&Digest>, limit: usize) -> Vec<(Digest, JournalEntry)> {
    let mut keys: Vec<&Digest> = map.keys().filter(|k| after.is_none_or(|a| *k > a)).collect();
    keys.sort_unstable();
    keys.truncate(limit);
    keys.into_iter().map(|k| (*k, map[k])).collect()
}

/// Scans in the same order as the redb store: by token hash, then text.
fn scan_map(map: &HashMap<String, TokenRecord>, after: Option<&str>, limit: usize) -> Vec<(String, TokenRecord)> {
    let key = |t: &str| (token_hash(t), t.to_string());
    let after = after.map(key);
    let mut keys: Vec<(u64, String)> = map.keys().map(|k| key(k)).filter(|k| after.as_ref().is_none_or(|a| k > a)).collect();
    keys.sort_unstable();
    keys.truncate(limit);
    keys.into_iter()
        .map(|(_, k)| {
            let r = map[&k];
            (k, r)
        })
        .collect()
}

impl ReadView for Snapshot {
    fn state(&self) -> Result<ModelState> {
        Ok(self.0.state)
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        Ok(self.0.tokens.get(token).copied())
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        Ok(self.0.journal.get(digest).copied())
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        Ok(scan_map(&self.0.tokens, after, limit))
    }
    fn token_count(&self) -> Result<u64> {
        Ok(self.0.tokens.len() as u64)
    }
    fn journal_count(&self) -> Result<u64> {
        Ok(self.0.journal.len() as u64)
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        Ok(scan_journal(&self.0.journal, after, limit))
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        Ok(sum_slots(&self.0.grams, slots))
    }
    fn gram_weights(&self) -> Result<Grams> {
        Ok(self.0.grams.clone())
    }
}

/// A write in progress: the base snapshot plus an overlay of changes.
struct Overlay {
    base: Arc<Inner>,
    tokens: HashMap<String, Option<TokenRecord>>,
    journal: HashMap<Digest, Option<JournalEntry>>,
    state: Option<ModelState>,
    /// The 4-gram weights this write has changed, by slot: their new values
    /// (set on commit, so a write does not copy the whole vector).
    grams: HashMap<u32, f32>,
}

impl ReadView for Overlay {
    fn state(&self) -> Result<ModelState> {
        Ok(self.state.unwrap_or(self.base.state))
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        Ok(match self.tokens.get(token) {
            Some(v) => *v,
            None => self.base.tokens.get(token).copied(),
        })
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        Ok(match self.journal.get(digest) {
            Some(v) => *v,
            None => self.base.journal.get(digest).copied(),
        })
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        let mut merged = self.base.tokens.clone();
        for (k, v) in &self.tokens {
            match v {
                Some(r) => merged.insert(k.clone(), *r),
                None => merged.remove(k),
            };
        }
        Ok(scan_map(&merged, after, limit))
    }
    fn token_count(&self) -> Result<u64> {
        let mut n = self.base.tokens.len() as i64;
        for (k, v) in &self.tokens {
            match (self.base.tokens.contains_key(k), v.is_some()) {
                (false, true) => n += 1,
                (true, false) => n -= 1,
                _ => {}
            }
        }
        Ok(n.max(0) as u64)
    }
    fn journal_count(&self) -> Result<u64> {
        let mut n = self.base.journal.len() as i64;
        for (k, v) in &self.journal {
            match (self.base.journal.contains_key(k), v.is_some()) {
                (false, true) => n += 1,
                (true, false) => n -= 1,
                _ => {}
            }
        }
        Ok(n.max(0) as u64)
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        let mut merged = self.base.journal.clone();
        for (k, v) in &self.journal {
            match v {
                Some(e) => merged.insert(*k, *e),
                None => merged.remove(k),
            };
        }
        Ok(scan_journal(&merged, after, limit))
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        if self.grams.is_empty() {
            return Ok(sum_slots(&self.base.grams, slots));
        }
        Ok(super::sum_weights(slots, |s| self.grams.get(&s).copied().unwrap_or_else(|| gram_at(&self.base.grams, s))))
    }
    fn gram_weights(&self) -> Result<Grams> {
        let mut w = self.base.grams.as_ref().clone();
        set_slots(&mut w, &self.grams);
        Ok(std::sync::Arc::new(w))
    }
}

impl WriteView for Overlay {
    fn set_state(&mut self, state: ModelState) -> Result<()> {
        self.state = Some(state);
        Ok(())
    }
    fn put(&mut self, token: &str, record: TokenRecord) -> Result<()> {
        self.tokens.insert(token.to_string(), Some(record));
        Ok(())
    }
    fn remove(&mut self, token: &str) -> Result<()> {
        self.tokens.insert(token.to_string(), None);
        Ok(())
    }
    fn set_journal(&mut self, digest: &Digest, entry: Option<JournalEntry>) -> Result<()> {
        self.journal.insert(*digest, entry);
        Ok(())
    }
    fn gram_add(&mut self, slots: &[u32], delta: f32) -> Result<()> {
        for &s in slots.iter().filter(|&&s| (s as usize) < super::GRAM_DIM) {
            *self.grams.entry(s).or_insert_with(|| gram_at(&self.base.grams, s)) += delta;
        }
        Ok(())
    }
}

impl TokenStore for MemoryStore {
    fn read(&self) -> Result<Box<dyn ReadView + '_>> {
        Ok(Box::new(Snapshot(self.snapshot())))
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteView) -> Result<()>) -> Result<()> {
        // Holding the lock for the whole write serializes writers, as redb does.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut overlay = Overlay { base: guard.clone(), tokens: HashMap::new(), journal: HashMap::new(), state: None, grams: HashMap::new() };
        f(&mut overlay)?;
        let Overlay { base, tokens, journal, state, grams } = overlay;
        drop(base);
        let inner = Arc::make_mut(&mut guard);
        for (k, v) in tokens {
            match v {
                Some(r) => inner.tokens.insert(k, r),
                None => inner.tokens.remove(&k),
            };
        }
        for (k, v) in journal {
            match v {
                Some(e) => inner.journal.insert(k, e),
                None => inner.journal.remove(&k),
            };
        }
        if let Some(s) = state {
            inner.state = s;
        }
        if !grams.is_empty() {
            // In place unless a snapshot still holds these weights.
            set_slots(Arc::make_mut(&mut inner.grams), &grams);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::run(&super::MemoryStore::new(), true);
    }
}
