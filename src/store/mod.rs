//! The token store: per-token counts and weights, per-class message totals,
//! and the training journal, behind the [`TokenStore`] trait.
//!
//! Three implementations: [`RedbStore`] (one redb file: the embedded
//! default), [`RedisStore`] (one model shared by several hosts) and
//! [`MemoryStore`] (tests and in-process evaluation); [`Db`] is whichever
//! the configuration names.
//!
//! Reads go through a [`ReadView`]: a consistent snapshot on redb and in
//! memory (redb's MVCC: a reader never waits for the writer); on Redis each
//! read call sees the latest commits (see [`redis`]). Writes go through [`TokenStore::write`],
//! which hands a [`WriteView`] to a closure and commits everything it did as
//! one transaction, or nothing if it returns an error.

mod dump;
mod gram_file;
mod memory;
mod open;
mod recover;
mod redb_store;
pub mod redis;
pub mod safe;

pub use dump::{DumpOptions, DumpStats, Parsed, apply, dump, load, parse};
pub use memory::MemoryStore;
pub use open::{Db, default_db_path, open_db, open_db_read_only, open_redis, starter};
pub use recover::{Recovered, recover};
pub use redb_store::{RedbStore, USER_CACHE_BYTES};
pub use redis::RedisStore;

use crate::digest::Digest;
use crate::hash::FxBuild;
use crate::{Class, Result};

/// Version of the stored layout; a database of another version is refused.
///
/// 4: tokens keyed by the folded-multiply [`token_hash`] (3 keyed them by
/// an Fx hash that gave some tokens one key, see there). A dump carries no
/// keys, so `db dump` with the hamlet that wrote a database and `db load`
/// into a new one moves a model across.
///
/// [`token_hash`]: crate::hash::token_hash
pub const SCHEMA_VERSION: u32 = 4;

/// Version of the `db dump` format ([`dump()`]), written on its `schema` line.
/// Independent of [`SCHEMA_VERSION`] since schema 4 (same dumps).
pub const DUMP_FORMAT: u32 = 3;

/// What is stored per token.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenRecord {
    /// Spam messages learned that contained the token.
    pub spam: u32,
    /// Ham messages learned that contained the token.
    pub ham: u32,
    /// Day (since 1970-01-01, UTC) the token was last seen in training.
    pub day: u32,
    /// The logistic-regression weight.
    pub weight: f32,
}

/// Messages learned per class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub spam: u64,
    pub ham: u64,
}

/// Model-wide state beside the per-token records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelState {
    /// Per-class totals as the counts see them: a message learned with
    /// weight 2 (see `Params::boost_errors`) counts twice.
    pub totals: Totals,
    /// Messages learned per class (each once).
    pub messages: Totals,
    /// How many of `messages` came with a starter model (loaded when the
    /// database was created, or from a dump marked `starter`); the rest
    /// were learned here. The cold-start gate reads it
    /// (the classifier's `cold_start`).
    pub starter: Totals,
    /// The logistic regression's bias term.
    pub bias: f64,
    /// What the combiner has learned: offsets from `Params::mix_init` of the
    /// weights of the Fisher and logistic logits, the intercept, and the
    /// offset from `Params::gram_mix` of the 4-gram logit's weight (a
    /// database from before it reads 0).
    pub mix: [f64; 4],
    /// The combiner's pairwise step's memory: the last learned ham's two
    /// numbers, then the last learned spam's (its combined logit without
    /// the 4-gram term, and its clamped 4-gram logit); (0, 0) is none. Kept
    /// with the model so one process per message (`hamlet train`) steps as
    /// a server does. Not in dumps: it is the stream's recent past, not
    /// model.
    pub last_pair: [f64; 4],
}

/// One journal entry: how a message (by digest) was learned, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalEntry {
    pub class: Class,
    pub day: u32,
    /// How many times its counts were added (2 when it was learned after
    /// being misclassified; see `Params::boost_errors`).
    pub weight: u8,
    /// Learned by auto-learn (the service's own guess), not by a label
    /// someone gave: an explicit learn confirms or corrects it.
    pub auto: bool,
}

/// A consistent, read-only view of the store.
pub trait ReadView {
    fn state(&self) -> Result<ModelState>;
    fn get(&self, token: &str) -> Result<Option<TokenRecord>>;
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>>;
    /// Up to `limit` tokens in the store's order (by [`token_hash`], then
    /// text), starting after the token `after` (the last of the previous chunk).
    ///
    /// [`token_hash`]: crate::hash::token_hash
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>>;
    /// Calls `f` with every stored token, its [`token_hash`] and its record,
    /// in the store's order ([`ReadView::scan`] in batches, unless a store
    /// has a cheaper way); stops at `f`'s first error.
    ///
    /// [`token_hash`]: crate::hash::token_hash
    fn for_each_token(&self, f: &mut dyn FnMut(u64, &str, TokenRecord) -> Result<()>) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let batch = self.scan(after.as_deref(), 4096)?;
            let Some((last, _)) = batch.last() else { return Ok(()) };
            for (t, r) in &batch {
                f(crate::hash::token_hash(t), t, *r)?;
            }
            after = Some(last.clone());
        }
    }
    /// The records of `tokens` (each with its [`token_hash`]), in order,
    /// appended to `out`: what
    /// [`ReadView::get`] gives each, which is all this does unless a store
    /// can look many up faster together.
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        get_each(self, tokens, out)
    }
    /// The state and [`ReadView::get_many`] of `tokens`: what scoring a
    /// message reads, in one call to a remote store.
    fn state_and_records(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<ModelState> {
        self.get_many(tokens, out)?;
        self.state()
    }
    /// Tells the view the next read will be followed by a look at
    /// `digest`'s journal entry, so a remote store can fetch it in the same
    /// round trip; the others need nothing.
    fn want_journal(&self, _digest: &Digest) {}
    /// Number of distinct tokens stored.
    fn token_count(&self) -> Result<u64>;
    /// Number of journal entries.
    fn journal_count(&self) -> Result<u64>;
    /// Up to `limit` journal entries in digest order, starting after `after`.
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>>;
    /// Σ w over the byte 4-gram regression's slots `slots` (see
    /// [`crate::tokenize::grams`]; a new model's weights are all zero).
    fn gram_sum(&self, slots: &[u32]) -> Result<f64>;
    /// All the byte 4-gram regression's weights: [`GRAM_DIM`] of them, or
    /// none when they are all zero. For dumps; scoring uses [`ReadView::gram_sum`].
    fn gram_weights(&self) -> Result<Grams>;
}

pub use crate::tokenize::grams::GRAM_DIM;

/// [`ReadView::get_many`] by one [`ReadView::get`] per token.
fn get_each<V: ReadView + ?Sized>(view: &V, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
    for (_, t) in tokens {
        out.push(view.get(t)?);
    }
    Ok(())
}

/// The byte 4-gram regression's weights, shared between snapshots that
/// have the same ones (empty: all zero).
pub type Grams = std::sync::Arc<Vec<f32>>;

/// Σ w over `slots` of a dense weight vector (empty: all zero).
pub fn sum_slots(w: &[f32], slots: &[u32]) -> f64 {
    sum_weights(slots, |s| gram_at(w, s))
}

/// Σ weight(s) over `slots`, the one way every store sums them, so the
/// same slots give the same sum everywhere: in four running sums (slot i
/// into sum i mod 4), then (s₀ + s₁) + (s₂ + s₃). One running sum made the
/// ~3,000 additions of a message one chain of dependent adds (4 cycles
/// each); four chains run side by side.
pub fn sum_weights(slots: &[u32], weight: impl Fn(u32) -> f32) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut quads = slots.chunks_exact(4);
    for q in &mut quads {
        for (a, &s) in acc.iter_mut().zip(q) {
            *a += f64::from(weight(s));
        }
    }
    for (a, &s) in acc.iter_mut().zip(quads.remainder()) {
        *a += f64::from(weight(s));
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// The weight at `slot` (0 in an empty vector).
pub fn gram_at(w: &[f32], slot: u32) -> f32 {
    w.get(slot as usize).copied().unwrap_or(0.0)
}

/// The weights as stored (redb's `grams` value, the `gram_file`): f32
/// little-endian, one after another.
pub(crate) fn weight_bytes(w: &[f32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Weight `slot` of stored weights ([`weight_bytes`]; 0 past their end).
pub(crate) fn stored_weight(bytes: &[u8], slot: usize) -> f32 {
    bytes.get(slot * 4..slot * 4 + 4).map_or(0.0, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Sets the weights in `values` (slot → new value), making the vector dense
/// first. A write collects its changes this way (each slot changed in
/// sequence, as one message after another), so every store ends with the
/// same bits.
pub fn set_slots(w: &mut Vec<f32>, values: &std::collections::HashMap<u32, f32>) {
    if w.is_empty() {
        w.resize(GRAM_DIM, 0.0);
    }
    for (&s, &v) in values {
        if let Some(x) = w.get_mut(s as usize) {
            *x = v;
        }
    }
}

/// A per-user model over the shared one, for scoring: token counts and
/// totals are the sums of both (DSPAM's "merged" groups), so a user's own
/// corrections count beside everyone's, and on tokens only that user sees
/// (their correspondents, their lists) they are all the evidence there is.
/// The logistic regression and the combiner stay the shared model's: the
/// user's store keeps counts only (see `Engine::train_in`).
///
/// Listing (`scan`, counts) shows the shared model.
pub struct Layered<'a> {
    pub base: &'a dyn ReadView,
    pub top: &'a dyn ReadView,
}

fn layered_state(b: ModelState, t: ModelState) -> ModelState {
    ModelState {
        totals: Totals { spam: b.totals.spam + t.totals.spam, ham: b.totals.ham + t.totals.ham },
        messages: Totals { spam: b.messages.spam + t.messages.spam, ham: b.messages.ham + t.messages.ham },
        starter: Totals { spam: b.starter.spam + t.starter.spam, ham: b.starter.ham + t.starter.ham },
        ..b
    }
}

fn layered_record(b: Option<TokenRecord>, t: Option<TokenRecord>) -> Option<TokenRecord> {
    match (b, t) {
        (b, None) => b,
        (None, Some(t)) => Some(TokenRecord { weight: 0.0, ..t }),
        (Some(b), Some(t)) => {
            Some(TokenRecord { spam: b.spam.saturating_add(t.spam), ham: b.ham.saturating_add(t.ham), day: b.day.max(t.day), weight: b.weight })
        }
    }
}

impl ReadView for Layered<'_> {
    fn state(&self) -> Result<ModelState> {
        Ok(layered_state(self.base.state()?, self.top.state()?))
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        Ok(layered_record(self.base.get(token)?, self.top.get(token)?))
    }
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        let (mut b, mut t) = (Vec::with_capacity(tokens.len()), Vec::with_capacity(tokens.len()));
        self.base.get_many(tokens, &mut b)?;
        self.top.get_many(tokens, &mut t)?;
        out.extend(b.into_iter().zip(t).map(|(b, t)| layered_record(b, t)));
        Ok(())
    }
    fn state_and_records(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<ModelState> {
        let (mut b, mut t) = (Vec::with_capacity(tokens.len()), Vec::with_capacity(tokens.len()));
        let bs = self.base.state_and_records(tokens, &mut b)?;
        let ts = self.top.state_and_records(tokens, &mut t)?;
        out.extend(b.into_iter().zip(t).map(|(b, t)| layered_record(b, t)));
        Ok(layered_state(bs, ts))
    }
    fn want_journal(&self, digest: &Digest) {
        self.base.want_journal(digest);
        self.top.want_journal(digest);
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        match self.top.journal(digest)? {
            Some(e) => Ok(Some(e)),
            None => self.base.journal(digest),
        }
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        self.base.scan(after, limit)
    }
    fn token_count(&self) -> Result<u64> {
        self.base.token_count()
    }
    fn journal_count(&self) -> Result<u64> {
        self.base.journal_count()
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        self.base.journal_scan(after, limit)
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        self.base.gram_sum(slots)
    }
    fn gram_weights(&self) -> Result<Grams> {
        self.base.gram_weights()
    }
}

/// A view inside a write transaction.
pub trait WriteView: ReadView {
    fn set_state(&mut self, state: ModelState) -> Result<()>;
    fn put(&mut self, token: &str, record: TokenRecord) -> Result<()>;
    fn remove(&mut self, token: &str) -> Result<()>;
    fn set_journal(&mut self, digest: &Digest, entry: Option<JournalEntry>) -> Result<()>;
    /// Adds `delta` to the byte 4-gram regression's weights at `slots`.
    fn gram_add(&mut self, slots: &[u32], delta: f32) -> Result<()>;
    /// A hint: these journal entries and tokens are about to be read. A
    /// remote store reads them all in one call; a local one ignores it.
    fn prefetch(&mut self, _digests: &[Digest], _tokens: &[(u64, &str)]) -> Result<()> {
        Ok(())
    }
}

/// How big one write transaction should get, and whether the store may run
/// the write closure more than once (see [`TokenStore::write_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    pub records: usize,
    pub messages: usize,
    /// The closure may run again (a remote store's commit met a concurrent
    /// change): it must not consume what it cannot produce again.
    pub replays: bool,
}

/// A token store.
pub trait TokenStore: Send + Sync {
    /// A consistent snapshot for reading.
    fn read(&self) -> Result<Box<dyn ReadView + '_>>;
    /// Runs `f` in one write transaction: committed if `f` returns `Ok`,
    /// rolled back otherwise.
    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteView) -> Result<()>) -> Result<()>;
    /// Size of the store on disk in bytes (0 for memory).
    fn size_bytes(&self) -> u64 {
        0
    }
    /// Whether the store can serve; the error says why not (see
    /// [`RedbStore::health`]).
    fn health(&self) -> Result<()> {
        self.read()?.state().map(|_| ())
    }
    /// Limits on one write transaction (bulk training keeps under them).
    fn write_limits(&self) -> WriteLimits {
        WriteLimits { records: usize::MAX, messages: usize::MAX, replays: false }
    }
    /// Drops old tokens (see [`expire`]); a store may do it its own way.
    fn expire(&self, today: u32, max_age_days: u32, hapax_age_days: u32, batch: usize) -> Result<ExpireStats> {
        expire_by_scan(self, today, max_age_days, hapax_age_days, batch)
    }
}

impl<T: TokenStore + ?Sized> TokenStore for std::sync::Arc<T> {
    fn read(&self) -> Result<Box<dyn ReadView + '_>> {
        (**self).read()
    }
    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteView) -> Result<()>) -> Result<()> {
        (**self).write(f)
    }
    fn size_bytes(&self) -> u64 {
        (**self).size_bytes()
    }
    fn health(&self) -> Result<()> {
        (**self).health()
    }
    fn write_limits(&self) -> WriteLimits {
        (**self).write_limits()
    }
    fn expire(&self, today: u32, max_age_days: u32, hapax_age_days: u32, batch: usize) -> Result<ExpireStats> {
        (**self).expire(today, max_age_days, hapax_age_days, batch)
    }
}

/// A read view that remembers the records it has looked up. A snapshot never
/// changes, so this is always correct; it pays off when many messages are
/// scored against one snapshot (bulk `check`), where most tokens (relay
/// hosts, common words) recur: a hash lookup instead of a B-tree descent.
pub struct CachedView<'a> {
    inner: Box<dyn ReadView + 'a>,
    cache: std::cell::RefCell<std::collections::HashMap<String, Option<TokenRecord>, FxBuild>>,
    limit: usize,
    /// Every token of the snapshot, once `preload` has read them; then
    /// `cache` is not used.
    preloaded: Option<Preloaded>,
}

/// Every token of a snapshot, read in one scan (see [`CachedView::preload`]),
/// in an open-addressing table of one cache line per token.
///
/// Scoring a message looks up each of its few hundred tokens here, and
/// with a model of 145,622 tokens the table is far bigger than the CPU's
/// caches: the cost of a lookup is its cache misses. A general hash map of
/// owned strings takes three (the control bytes, the entry, the string's
/// heap text); here a slot holds the key (the token's [`token_hash`], the
/// key the redb store uses too), the record and the text itself when it is
/// at most [`INLINE`] bytes (almost all are), so a lookup takes one.
/// Preloading costs no allocation per token either (39% fewer instructions
/// than a map of owned strings, callgrind).
///
/// Three things make those misses cheaper, each worth 3-6% of a bulk
/// `check` of spamassassin (history: docs/tuning.md):
/// - [`Preloaded::get_many`] prefetches the slot of the token [`AHEAD`]
///   places on while it reads this one, so the misses overlap;
/// - the table asks for huge pages (`MADV_HUGEPAGE`): one TLB entry per
///   2 MiB instead of per 4 KiB, and a third of the page faults;
/// - at most three quarters full: 16 MiB of slots for that model (32 at
///   half full), which fits a 32 MiB L3 cache (linear probing at load 0.56
///   reads 1.6 slots per hit, most of them in the line the first read
///   brought).
///
/// [`token_hash`]: crate::hash::token_hash
struct Preloaded {
    /// A power of two of slots, at most 3/4 full; linear probing from the
    /// top bits of the hash (the well-mixed ones of a multiplicative hash).
    slots: Vec<Slot>,
    shift: u32,
    /// Slots in use.
    used: usize,
    /// The texts longer than [`INLINE`].
    long_texts: String,
    /// Stored tokens whose hash an earlier one has (a store keyed by text
    /// can hold both; redb's cannot).
    others: std::collections::HashMap<String, TokenRecord, FxBuild>,
}

/// Asks the kernel to back `len` bytes at `ptr` (memory not yet touched)
/// with huge pages where it can.
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize + len) / PAGE * PAGE;
        if end > start {
            // SAFETY: madvise only gives the kernel a hint about pages of
            // this allocation (the range is inside it, page-aligned); it
            // changes no contents. Failure (no THP) is fine.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// How many lookups ahead [`Preloaded::get_many`] fetches slots.
const AHEAD: usize = 8;

/// Texts up to this many bytes are kept in their slot.
const INLINE: usize = 38;

/// `Slot::len` of a slot not in use.
const EMPTY: u16 = u16::MAX;

/// One token: 64 bytes, one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    hash: u64,
    record: TokenRecord,
    /// The text's length in bytes, or [`EMPTY`].
    len: u16,
    /// The text if it fits; else its offset in `long_texts` (4 bytes, LE).
    text: [u8; INLINE],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Preloaded {
    /// A table for up to `count` tokens (more still fit, more slowly).
    fn with_capacity(count: usize) -> Preloaded {
        let n = (count.max(1) * 4 / 3 + 1).next_power_of_two().max(16);
        let empty = Slot { hash: 0, record: TokenRecord::default(), len: EMPTY, text: [0; INLINE] };
        let mut slots: Vec<Slot> = Vec::with_capacity(n);
        advise_huge_pages(slots.as_mut_ptr().cast(), n * std::mem::size_of::<Slot>());
        slots.resize(n, empty);
        Preloaded { slots, shift: 64 - n.trailing_zeros(), used: 0, long_texts: String::new(), others: Default::default() }
    }

    fn text<'s>(&'s self, slot: &'s Slot) -> &'s [u8] {
        let len = usize::from(slot.len);
        if len <= INLINE {
            &slot.text[..len]
        } else {
            let at = u32::from_le_bytes([slot.text[0], slot.text[1], slot.text[2], slot.text[3]]) as usize;
            self.long_texts.as_bytes().get(at..at + len).unwrap_or_default()
        }
    }

    /// The index of `hash`'s slot, or of the empty slot where it would go.
    fn find(&self, hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = (hash >> self.shift) as usize;
        while self.slots[i].len != EMPTY && self.slots[i].hash != hash {
            i = (i + 1) & mask;
        }
        i
    }

    /// Twice the slots, the same tokens.
    fn grow(&mut self) {
        let mut bigger = Preloaded::with_capacity(self.slots.len());
        for slot in self.slots.iter().filter(|s| s.len != EMPTY) {
            let i = bigger.find(slot.hash);
            bigger.slots[i] = *slot;
        }
        bigger.used = self.used;
        bigger.long_texts = std::mem::take(&mut self.long_texts);
        bigger.others = std::mem::take(&mut self.others);
        *self = bigger;
    }

    fn insert(&mut self, hash: u64, token: &str, record: TokenRecord) {
        if (self.used + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let i = self.find(hash);
        if self.slots[i].len != EMPTY || token.len() >= usize::from(EMPTY) {
            self.others.insert(token.to_string(), record);
            return;
        }
        let mut text = [0; INLINE];
        if token.len() <= INLINE {
            text[..token.len()].copy_from_slice(token.as_bytes());
        } else {
            // Offsets fit: at most `limit` tokens of MAX_TOKEN_BYTES.
            text[..4].copy_from_slice(&(self.long_texts.len() as u32).to_le_bytes());
            self.long_texts.push_str(token);
        }
        self.slots[i] = Slot { hash, record, len: token.len() as u16, text };
        self.used += 1;
    }

    fn get(&self, token: &str) -> Option<TokenRecord> {
        self.get_hashed(token, crate::hash::token_hash(token))
    }

    /// The records of `tokens`, in order. Each lookup is one cache miss in
    /// a table far bigger than the caches; here the slot of the token
    /// [`AHEAD`] places on is fetched while this one is read, so the misses
    /// overlap instead of following each other.
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) {
        for &(h, _) in tokens.iter().take(AHEAD) {
            self.prefetch(h);
        }
        for (i, &(h, token)) in tokens.iter().enumerate() {
            if let Some(&(next, _)) = tokens.get(i + AHEAD) {
                self.prefetch(next);
            }
            out.push(self.get_hashed(token, h));
        }
    }

    /// Asks the CPU to bring `hash`'s first slot into the cache.
    #[inline]
    fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot = &self.slots[(hash >> self.shift) as usize];
            // SAFETY: SSE is part of x86_64's baseline, and a prefetch of
            // any address (here one inside `slots`) reads and faults nothing.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((slot as *const Slot).cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    fn get_hashed(&self, token: &str, hash: u64) -> Option<TokenRecord> {
        let slot = &self.slots[self.find(hash)];
        if slot.len == EMPTY {
            None
        } else if self.text(slot) == token.as_bytes() {
            Some(slot.record)
        } else {
            self.others.get(token).copied()
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.used + self.others.len()
    }
}

impl<'a> CachedView<'a> {
    /// Caches at most `limit` tokens (then stops adding).
    pub fn new(inner: Box<dyn ReadView + 'a>, limit: usize) -> CachedView<'a> {
        CachedView { inner, cache: Default::default(), limit, preloaded: None }
    }

    /// Reads every token of the snapshot into the cache in one scan, if
    /// there are at most `limit`; then a token not in the cache is not in
    /// the model, with no lookup. Returns whether it did.
    ///
    /// Worth it when many messages will be scored: a scan reads each stored
    /// record once, in key order (a 145,622-token model in about 50 ms),
    /// where lookups of tokens not yet cached each descend the B-tree (about
    /// 1.5 µs apiece; scoring all 6,046 spamassassin messages against the
    /// model trained on them misses once per distinct token).
    pub fn preload(&mut self) -> Result<bool> {
        let count = self.inner.token_count()?;
        if count > self.limit as u64 {
            return Ok(false);
        }
        // Sized once: growing a map to 145,622 entries rehashed them all
        // along the way (a fifth of the preload's instructions, callgrind).
        let mut p = Preloaded::with_capacity(count as usize);
        self.inner.for_each_token(&mut |hash, token, r| {
            p.insert(hash, token, r);
            Ok(())
        })?;
        self.preloaded = Some(p);
        self.cache.get_mut().clear();
        Ok(true)
    }
}

impl ReadView for CachedView<'_> {
    fn state(&self) -> Result<ModelState> {
        self.inner.state()
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        if let Some(p) = &self.preloaded {
            return Ok(p.get(token));
        }
        if let Some(r) = self.cache.borrow().get(token) {
            return Ok(*r);
        }
        let r = self.inner.get(token)?;
        let mut c = self.cache.borrow_mut();
        if c.len() < self.limit {
            c.insert(token.to_string(), r);
        }
        Ok(r)
    }
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        match &self.preloaded {
            Some(p) => {
                p.get_many(tokens, out);
                Ok(())
            }
            None => {
                // The misses in one call to the inner view (one round trip
                // to a remote store, not one per token).
                let missing: Vec<(u64, &str)> = {
                    let c = self.cache.borrow();
                    tokens.iter().filter(|(_, t)| !c.contains_key(*t)).copied().collect()
                };
                let mut got = Vec::with_capacity(missing.len());
                if !missing.is_empty() {
                    self.inner.get_many(&missing, &mut got)?;
                }
                let fetched: std::collections::HashMap<&str, Option<TokenRecord>> = missing.iter().map(|&(_, t)| t).zip(got).collect();
                let mut c = self.cache.borrow_mut();
                out.extend(tokens.iter().map(|(_, t)| c.get(*t).copied().or_else(|| fetched.get(t).copied()).flatten()));
                for (t, r) in fetched {
                    if c.len() >= self.limit {
                        break;
                    }
                    c.insert(t.to_string(), r);
                }
                Ok(())
            }
        }
    }
    fn want_journal(&self, digest: &Digest) {
        self.inner.want_journal(digest);
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        self.inner.journal(digest)
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        self.inner.scan(after, limit)
    }
    fn for_each_token(&self, f: &mut dyn FnMut(u64, &str, TokenRecord) -> Result<()>) -> Result<()> {
        self.inner.for_each_token(f)
    }
    fn token_count(&self) -> Result<u64> {
        self.inner.token_count()
    }
    fn journal_count(&self) -> Result<u64> {
        self.inner.journal_count()
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        self.inner.journal_scan(after, limit)
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        self.inner.gram_sum(slots)
    }
    fn gram_weights(&self) -> Result<Grams> {
        self.inner.gram_weights()
    }
}

/// Today, as days since 1970-01-01 UTC.
pub fn today() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    (secs / 86_400) as u32
}

/// What `expire` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireStats {
    /// Tokens looked at.
    pub examined: u64,
    /// Tokens removed.
    pub removed: u64,
    /// Journal entries removed (learned more than `max_age_days` ago).
    pub journal_removed: u64,
}

/// Drops tokens unseen for `max_age_days`, and hapaxes (spam + ham count of
/// 1: one message, learned once) unseen for `hapax_age_days`, in batches of `batch` tokens per transaction
/// so a big database never holds one huge write.
///
/// Journal entries of messages learned more than `max_age_days` ago go too:
/// a steady stream adds one per learned message, so without this the
/// journal is what grows without bound once the tokens have levelled off
/// (bench/redis-soak.sh). Relearning or unlearning a message that old would
/// move counts its tokens may no longer hold; once its entry is gone, a
/// relearn learns it afresh.
pub fn expire(store: &dyn TokenStore, today: u32, max_age_days: u32, hapax_age_days: u32, batch: usize) -> Result<ExpireStats> {
    store.expire(today, max_age_days, hapax_age_days, batch)
}

/// [`expire`] by scanning every token and removing the old ones.
fn expire_by_scan<S: TokenStore + ?Sized>(store: &S, today: u32, max_age_days: u32, hapax_age_days: u32, batch: usize) -> Result<ExpireStats> {
    let mut stats = ExpireStats::default();
    let mut after: Option<String> = None;
    loop {
        let chunk = store.read()?.scan(after.as_deref(), batch.max(1))?;
        let Some((last, _)) = chunk.last() else { break };
        after = Some(last.clone());
        stats.examined += chunk.len() as u64;
        let doomed: Vec<&str> = chunk
            .iter()
            .filter(|(_, r)| {
                let age = today.saturating_sub(r.day);
                age > max_age_days || (u64::from(r.spam) + u64::from(r.ham) <= 1 && age > hapax_age_days)
            })
            .map(|(t, _)| t.as_str())
            .collect();
        if !doomed.is_empty() {
            store.write(&mut |w| {
                for t in &doomed {
                    w.remove(t)?;
                }
                Ok(())
            })?;
            stats.removed += doomed.len() as u64;
        }
    }
    let mut after: Option<Digest> = None;
    loop {
        let chunk = store.read()?.journal_scan(after.as_ref(), batch.max(1))?;
        let Some((last, _)) = chunk.last() else { break };
        after = Some(*last);
        let doomed: Vec<&Digest> = chunk.iter().filter(|(_, e)| today.saturating_sub(e.day) > max_age_days).map(|(d, _)| d).collect();
        if !doomed.is_empty() {
            store.write(&mut |w| {
                for d in &doomed {
                    w.set_journal(d, None)?;
                }
                Ok(())
            })?;
            stats.journal_removed += doomed.len() as u64;
        }
    }
    Ok(stats)
}

#[cfg(test)]
pub(crate) mod conformance {
    //! Behaviour every `TokenStore` must have; run against each implementation.
    use super::*;
    use crate::Error;

    /// `snapshots`: whether a read view is a snapshot (redb, memory); a
    /// Redis view reads what is committed when it reads.
    pub fn run(store: &dyn TokenStore, snapshots: bool) {
        let d = crate::digest::digest(b"Subject: x\n\nbody");
        // Empty store.
        let r = store.read().unwrap();
        assert_eq!(r.state().unwrap(), ModelState::default());
        assert_eq!(r.get("a").unwrap(), None);
        drop(r);
        // A committed write is visible.
        let rec = TokenRecord { spam: 2, ham: 1, day: 100, weight: 0.5 };
        store
            .write(&mut |w| {
                w.put("a", rec)?;
                w.put("b", rec)?;
                w.set_state(ModelState {
                    totals: Totals { spam: 3, ham: 4 },
                    messages: Totals { spam: 2, ham: 4 },
                    starter: Totals { spam: 1, ham: 3 },
                    bias: 0.25,
                    mix: [0.5, -0.25, 1.0, -0.0625],
                    last_pair: [1.5, -2.0, 0.0, 0.0],
                })?;
                w.set_journal(&d, Some(JournalEntry { class: Class::Spam, day: 100, weight: 2, auto: false }))?;
                // Reads inside the transaction see its own writes.
                assert_eq!(w.get("a")?, Some(rec));
                Ok(())
            })
            .unwrap();
        let r = store.read().unwrap();
        assert_eq!(r.get("a").unwrap(), Some(rec));
        assert_eq!(r.state().unwrap().totals, Totals { spam: 3, ham: 4 });
        assert_eq!(r.state().unwrap().mix, [0.5, -0.25, 1.0, -0.0625]);
        assert_eq!(r.state().unwrap().last_pair, [1.5, -2.0, 0.0, 0.0]);
        assert_eq!(r.state().unwrap().messages, Totals { spam: 2, ham: 4 });
        assert_eq!(r.state().unwrap().starter, Totals { spam: 1, ham: 3 });
        assert_eq!(r.journal(&d).unwrap(), Some(JournalEntry { class: Class::Spam, day: 100, weight: 2, auto: false }));
        assert_eq!(r.token_count().unwrap(), 2);
        let all = r.scan(None, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(r.scan(Some(&all[0].0), 10).unwrap(), vec![all[1].clone()]);
        assert_eq!(r.scan(Some(&all[1].0), 10).unwrap(), vec![]);
        drop(r);
        // A failed write leaves nothing behind.
        let res = store.write(&mut |w| {
            w.put("c", rec)?;
            w.remove("a")?;
            Err(Error::Invalid("boom".into()))
        });
        assert!(res.is_err());
        let r = store.read().unwrap();
        assert_eq!(r.get("c").unwrap(), None);
        assert_eq!(r.get("a").unwrap(), Some(rec));
        drop(r);
        // A snapshot does not see later writes; another view sees them.
        let snap = store.read().unwrap();
        store.write(&mut |w| w.remove("a")).unwrap();
        assert_eq!(snap.get("a").unwrap(), if snapshots { Some(rec) } else { None });
        drop(snap);
        assert_eq!(store.read().unwrap().get("a").unwrap(), None);
        // Expire: "b" is old...
        let d2 = crate::digest::digest(b"Subject: y\n\nbody");
        store.write(&mut |w| w.set_journal(&d2, Some(JournalEntry { class: Class::Ham, day: 180, weight: 1, auto: true }))).unwrap();
        let st = expire(store, 200, 50, 10, 1).unwrap();
        assert_eq!(st.removed, 1);
        assert_eq!(store.read().unwrap().token_count().unwrap(), 0);
        // ... and so is the journal entry of day 100; the one of day 180 stays.
        assert_eq!(st.journal_removed, 1);
        assert_eq!(store.read().unwrap().journal(&d).unwrap(), None);
        assert!(store.read().unwrap().journal(&d2).unwrap().is_some());
        grams(store, snapshots);
    }

    /// The byte 4-gram weights: zero at first, changes seen inside their
    /// write, committed or rolled back whole, snapshots isolated.
    fn grams(store: &dyn TokenStore, snapshots: bool) {
        let r = store.read().unwrap();
        assert_eq!(r.gram_sum(&[0, 5, 70_000]).unwrap(), 0.0);
        assert!(r.gram_weights().unwrap().iter().all(|w| *w == 0.0));
        drop(r);
        store
            .write(&mut |w| {
                w.gram_add(&[5, 70_000], 0.5)?;
                w.gram_add(&[5, (GRAM_DIM - 1) as u32], -0.25)?;
                // Out of range: ignored, not a panic.
                w.gram_add(&[GRAM_DIM as u32], 1.0)?;
                assert_eq!(w.gram_sum(&[5, 70_000])?, 0.75);
                Ok(())
            })
            .unwrap();
        let snap = store.read().unwrap();
        assert_eq!(snap.gram_sum(&[5]).unwrap(), 0.25);
        assert_eq!(snap.gram_sum(&[5, 70_000, (GRAM_DIM - 1) as u32, 6]).unwrap(), 0.5);
        let all = snap.gram_weights().unwrap();
        assert_eq!((all.len(), all[70_000]), (GRAM_DIM, 0.5));
        let res = store.write(&mut |w| {
            w.gram_add(&[5], 10.0)?;
            Err(Error::Invalid("boom".into()))
        });
        assert!(res.is_err());
        assert_eq!(store.read().unwrap().gram_sum(&[5]).unwrap(), 0.25);
        store.write(&mut |w| w.gram_add(&[5], 1.0)).unwrap();
        if snapshots {
            assert_eq!(snap.gram_sum(&[5]).unwrap(), 0.25, "a snapshot keeps its weights");
        }
        drop(snap);
        assert_eq!(store.read().unwrap().gram_sum(&[5]).unwrap(), 1.25);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preloaded_cache_answers_without_the_store() {
        let store = MemoryStore::new();
        // More tokens than one scan batch.
        store
            .write(&mut |w| {
                for i in 0..5000u32 {
                    w.put(&format!("t{i}"), TokenRecord { spam: i, ham: 1, day: 1, weight: 0.0 })?;
                }
                Ok(())
            })
            .unwrap();
        let mut small = CachedView::new(store.read().unwrap(), 4999);
        assert!(!small.preload().unwrap(), "more tokens than the limit: not preloaded");
        assert_eq!(small.get("t4999").unwrap().map(|r| r.spam), Some(4999));
        let mut view = CachedView::new(store.read().unwrap(), 5000);
        assert!(view.preload().unwrap());
        // Written after the snapshot: neither the snapshot nor its cache has it.
        store.write(&mut |w| w.put("late", TokenRecord::default())).unwrap();
        assert_eq!(view.preloaded.as_ref().map(Preloaded::len), Some(5000));
        for i in (0..5000u32).step_by(97) {
            assert_eq!(view.get(&format!("t{i}")).unwrap().map(|r| r.spam), Some(i));
        }
        assert_eq!(view.get("t5000").unwrap(), None);
        assert_eq!(view.get("late").unwrap(), None);
        // Many at once (the prefetching path): the same answers, in order,
        // for lists shorter and longer than the prefetch distance.
        for n in [0, 1, AHEAD - 1, AHEAD, AHEAD + 1, 300] {
            let tokens: Vec<String> = (0..n).map(|i| if i % 3 == 0 { format!("absent{i}") } else { format!("t{}", i * 13) }).collect();
            let hashed: Vec<(u64, &str)> = tokens.iter().map(|t| (crate::hash::token_hash(t), t.as_str())).collect();
            let mut got = vec![Some(TokenRecord::default())];
            view.get_many(&hashed, &mut got).unwrap();
            let want: Vec<_> = tokens.iter().map(|t| view.get(t).unwrap()).collect();
            assert_eq!(got[1..], want[..], "n = {n}");
        }
        assert_eq!(view.preloaded.as_ref().map(Preloaded::len), Some(5000));
        assert!(view.cache.borrow().is_empty(), "misses are not cached once preloaded");
    }

    #[test]
    fn preloaded_confirms_the_text_and_keeps_tokens_sharing_a_hash() {
        use crate::hash::token_hash;
        let rec = |spam| TokenRecord { spam, ham: 0, day: 1, weight: 0.0 };
        let mut p = Preloaded::with_capacity(2);
        // A stored token whose hash is "b"'s (a collision, as a crafted
        // token could have): "b" must not get its record...
        p.insert(token_hash("b"), "not-b", rec(1));
        assert_eq!(p.get("b"), None);
        // ...and a "b" stored after it is still found.
        p.insert(token_hash("b"), "b", rec(2));
        assert_eq!(p.get("b").map(|r| r.spam), Some(2));
        p.insert(token_hash("c"), "c", rec(3));
        assert_eq!(p.get("c").map(|r| r.spam), Some(3));
        assert_eq!(p.get("d"), None);
        assert_eq!(p.len(), 3);
        // Past its capacity (it grows), texts in the slot and outside it.
        let long = |i: u32| format!("{i}-{}", "x".repeat(i as usize % 90));
        for i in 0..300 {
            p.insert(token_hash(&long(i)), &long(i), rec(100 + i));
        }
        assert_eq!(p.len(), 303);
        for i in 0..300 {
            assert_eq!(p.get(&long(i)).map(|r| r.spam), Some(100 + i), "{}", long(i));
        }
        assert_eq!(p.get("b").map(|r| r.spam), Some(2));
        assert_eq!(p.get(&format!("{}y", long(200))), None);
    }
}
