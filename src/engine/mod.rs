//! The engine: the one place where a message is scored or learned. The CLI,
//! the HTTP and SPAMD services and the IMAP job all call it.
//!
//! Learning is journaled by message digest: learning a message again as the
//! same class is a no-op ("already learned"); learning it as the other class
//! moves its counts ("relearned"); unlearning removes them.

pub mod bulk;

use crate::classify::{self, Evidence, Params, Score};
use crate::digest::{Digest, digest};
use crate::store::{JournalEntry, ReadView, TokenRecord, TokenStore, WriteView, today};
use crate::tokenize::{TokenSet, Tokenizer};
use crate::{Class, Result};
use std::collections::HashMap;

/// What a learn or unlearn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// Newly learned.
    Learned,
    /// Already learned as this class: nothing changed.
    AlreadyLearned,
    /// Was learned as the other class; its counts were moved.
    Relearned,
    /// Its counts were removed.
    Unlearned,
    /// Unlearn of a message that was never learned: nothing changed.
    NotLearned,
    /// Was auto-learned as this class: its journal entry now records a
    /// confirmed label (the counts were already there and stay).
    Confirmed,
}

impl LearnOutcome {
    pub fn name(self) -> &'static str {
        match self {
            LearnOutcome::Learned => "learned",
            LearnOutcome::AlreadyLearned => "already learned",
            LearnOutcome::Relearned => "relearned",
            LearnOutcome::Unlearned => "unlearned",
            LearnOutcome::NotLearned => "not learned",
            LearnOutcome::Confirmed => "confirmed",
        }
    }
    /// Whether anything in the store changed.
    pub fn changed(self) -> bool {
        matches!(self, LearnOutcome::Learned | LearnOutcome::Relearned | LearnOutcome::Unlearned | LearnOutcome::Confirmed)
    }
}

/// What to do with a message in a training batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A label someone gave.
    Learn(Class),
    /// Auto-learn's guess: journaled as such, and never over a message
    /// already learned (guessed or labelled).
    AutoLearn(Class),
    Unlearn,
}

/// A tokenized message, ready to score or learn (tokenizing is the expensive
/// part and needs no store, so callers may do it in parallel).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub digest: Digest,
    /// De-duplicated, in [`crate::tokenize::canonical_order`], with their
    /// hashes.
    pub tokens: TokenSet,
    /// The byte 4-gram slots, distinct ([`Tokenizer::grams`]).
    pub grams: Vec<u32>,
}

impl Prepared {
    /// Tokenizes and digests a raw message (a leading mbox `From ` line is
    /// not part of it: [`crate::mailbox::as_message`]).
    pub fn new(tokenizer: &Tokenizer, raw: &[u8]) -> Prepared {
        let raw = crate::mailbox::as_message(raw);
        Prepared { digest: digest(&raw), tokens: tokenizer.token_set(&raw), grams: tokenizer.grams(&raw) }
    }

    /// Adds synthetic tokens (e.g. envelope outcomes), keeping the set sorted.
    pub fn add_tokens(&mut self, extra: impl IntoIterator<Item = String>) {
        self.tokens.extend(extra);
    }
}

/// See the module documentation.
pub struct Engine<S: TokenStore> {
    store: S,
    pub params: Params,
    pub tokenizer: Tokenizer,
    /// Fixed "today" (tests, evaluation); `None` uses the clock.
    pub day: Option<u32>,
}

impl<S: TokenStore> Engine<S> {
    pub fn new(store: S, params: Params) -> Engine<S> {
        Engine { store, params, tokenizer: Tokenizer::default(), day: None }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn today(&self) -> u32 {
        self.day.unwrap_or_else(today)
    }

    /// Tokenizes and digests a raw message.
    pub fn prepare(&self, raw: &[u8]) -> Prepared {
        Prepared::new(&self.tokenizer, raw)
    }

    /// Scores a raw message.
    pub fn check(&self, raw: &[u8]) -> Result<Score> {
        self.score_raw(&*self.store.read()?, raw)
    }

    /// Scores a raw message against a snapshot: what [`Prepared::new`]
    /// reads of it, without the digest (scoring needs none).
    pub fn score_raw(&self, view: &dyn ReadView, raw: &[u8]) -> Result<Score> {
        let raw = crate::mailbox::as_message(raw);
        self.score(view, &self.tokenizer.token_set(&raw), &self.tokenizer.grams(&raw))
    }

    /// Scores a message's tokens and byte 4-gram slots (a [`Prepared`]'s)
    /// against a snapshot.
    pub fn score(&self, view: &dyn ReadView, tokens: &TokenSet, grams: &[u32]) -> Result<Score> {
        let hashed: Vec<(u64, &str)> = tokens.iter().collect();
        self.score_hashed(view, &hashed, grams)
    }

    /// [`Engine::score`] of tokens that come with their [`token_hash`]
    /// (as a [`TokenSet`] has them).
    ///
    /// [`token_hash`]: crate::hash::token_hash
    /// [`TokenSet`]: crate::tokenize::TokenSet
    pub fn score_hashed(&self, view: &dyn ReadView, tokens: &[(u64, &str)], grams: &[u32]) -> Result<Score> {
        let mut records = Vec::with_capacity(tokens.len());
        let state = view.state_and_records(tokens, &mut records)?;
        let evidence: Vec<Evidence<'_>> = tokens
            .iter()
            .zip(records)
            .map(|(&(_, t), r)| {
                let r = r.unwrap_or_default();
                Evidence { token: t, spam: r.spam, ham: r.ham, weight: r.weight }
            })
            .collect();
        let gram_z = if self.params.gram_mix != 0.0 || self.params.combining == classify::Combining::Grams {
            view.gram_sum(grams)? * gram_scale(&self.params, grams.len())
        } else {
            0.0
        };
        Ok(classify::score(&self.params, &state, &evidence, gram_z))
    }

    /// Learns a raw message as `class`.
    pub fn learn(&self, raw: &[u8], class: Class) -> Result<LearnOutcome> {
        let p = self.prepare(raw);
        Ok(self.train(&[(p, Action::Learn(class))])?[0])
    }

    /// Removes a raw message's training.
    pub fn unlearn(&self, raw: &[u8]) -> Result<LearnOutcome> {
        let p = self.prepare(raw);
        Ok(self.train(&[(p, Action::Unlearn)])?[0])
    }

    /// Scores a raw message with a per-user model layered over this
    /// engine's (see [`crate::store::Layered`]); `None`: the shared model alone.
    pub fn check_layered(&self, user: Option<&dyn TokenStore>, raw: &[u8]) -> Result<Score> {
        self.score_layered(user, &self.prepare(raw))
    }

    /// Scores a prepared message (perhaps with envelope tokens added)
    /// against the shared model, with `user`'s layered over it.
    pub fn score_layered(&self, user: Option<&dyn TokenStore>, p: &Prepared) -> Result<Score> {
        self.score_layered_on(&*self.store.read()?, user.map(|u| u.read()).transpose()?.as_deref(), p)
    }

    /// [`Engine::score_layered`] on views the caller opened (and may read
    /// more from afterwards).
    pub fn score_layered_on(&self, base: &dyn ReadView, user: Option<&dyn ReadView>, p: &Prepared) -> Result<Score> {
        match user {
            None => self.score(base, &p.tokens, &p.grams),
            Some(top) => self.score(&crate::store::Layered { base, top }, &p.tokens, &p.grams),
        }
    }

    /// Applies a batch of learns and unlearns in one write transaction.
    pub fn train(&self, batch: &[(Prepared, Action)]) -> Result<Vec<LearnOutcome>> {
        self.train_with(&self.store, &self.params, batch)
    }

    /// Trains a per-user model (its own journal, so learn/relearn/unlearn
    /// work per user). It keeps counts only: no error boost (judged on the
    /// user's few counts alone, every early message would look
    /// misclassified) and no use of its regression weights, which
    /// [`Engine::check_layered`] ignores.
    pub fn train_in(&self, user: &dyn TokenStore, batch: &[(Prepared, Action)]) -> Result<Vec<LearnOutcome>> {
        let mut params = self.params.clone();
        params.boost_errors = false;
        params.gram_rate = 0.0;
        params.mix_pair_rate = 0.0;
        self.train_with(user, &params, batch)
    }

    /// Trains batches as they arrive, several to one write transaction:
    /// it commits once the transaction has touched `max_records` token
    /// records or learned `max_messages` messages (so memory stays bounded:
    /// redb keeps a transaction's changed pages, journal entries included,
    /// in memory until it commits), and when the batches end. `done`
    /// hears each batch's outcomes once they are applied (committed with
    /// the transaction that follows). A batch that fails to arrive (`Err`:
    /// a message could not be read) ends training: what came before it is
    /// committed, then the error returned.
    ///
    /// Why not a transaction per batch: each costs a flush of every record
    /// it touched and a commit, and the next transaction reads the records
    /// back from the B-tree. Bulk-training spamassassin's 6,046 messages,
    /// the writer's time was 0.32-0.36 s in one transaction against
    /// 0.51-0.59 s in transactions of 2,000 (history: docs/tuning.md).
    ///
    /// The store must call the write closure once per transaction (redb's
    /// and the memory store do): it consumes the batches.
    pub fn train_stream(
        &self,
        batches: &mut dyn Iterator<Item = Result<Vec<(Prepared, Action)>>>,
        max_records: usize,
        max_messages: usize,
        done: &mut dyn FnMut(&[LearnOutcome]),
    ) -> Result<()> {
        let day = self.today();
        let limits = self.store.write_limits();
        let (max_records, max_messages) = (max_records.min(limits.records), max_messages.min(limits.messages));
        let mut batches = batches.peekable();
        let mut failed = None;
        while failed.is_none() && batches.peek().is_some() {
            // A store that may run the closure again (see `WriteLimits`)
            // gets the same batches again: they are kept until the commit.
            let mut taken: Vec<Vec<(Prepared, Action)>> = Vec::new();
            let mut heard: Vec<Vec<LearnOutcome>> = Vec::new();
            self.store.write(&mut |view| {
                let mut cache = Cache::new();
                let mut state = view.state()?;
                heard.clear();
                let mut messages = 0;
                let mut i = 0;
                loop {
                    if i == taken.len() {
                        if cache.records.len() >= max_records || messages >= max_messages {
                            break;
                        }
                        match batches.next() {
                            None => break,
                            Some(Ok(b)) => taken.push(b),
                            Some(Err(e)) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    let batch = &taken[i];
                    i += 1;
                    prefetch(&mut *view, &cache, batch)?;
                    let mut outcomes = Vec::with_capacity(batch.len());
                    apply_all(&self.params, day, &mut *view, &mut cache, &mut state, batch, &mut outcomes)?;
                    messages += batch.len();
                    if limits.replays {
                        heard.push(outcomes);
                    } else {
                        done(&outcomes);
                        taken[i - 1] = Vec::new();
                    }
                }
                cache.flush(view)?;
                view.set_state(state)
            })?;
            for o in &heard {
                done(o);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    fn train_with(&self, store: &dyn TokenStore, params: &Params, batch: &[(Prepared, Action)]) -> Result<Vec<LearnOutcome>> {
        let day = self.today();
        let mut outcomes = Vec::with_capacity(batch.len());
        store.write(&mut |view| {
            outcomes.clear();
            let mut cache = Cache::new();
            prefetch(&mut *view, &cache, batch)?;
            let mut state = view.state()?;
            apply_all(params, day, &mut *view, &mut cache, &mut state, batch, &mut outcomes)?;
            cache.flush(view)?;
            view.set_state(state)
        })?;
        Ok(outcomes)
    }
}

/// Token records read and changed in this transaction, written once at the
/// end (in the store's key order, which B-trees like) instead of once per
/// message.
///
/// Looked up by the hash each token comes with (a [`TokenSet`]'s), its text
/// compared to make sure: hashing every token's text again here, and a
/// `String` per record, made the writer's lookups a tenth of its time.
struct Cache {
    /// Token hash -> place in `records` of the first token with that hash.
    index: HashMap<u64, usize, crate::hash::FxBuild>,
    /// Tokens whose hash an earlier token here has (crafted collisions).
    others: HashMap<String, usize, crate::hash::FxBuild>,
    records: Vec<TokenRecord>,
    /// Each record's token: (hash, start in `text`, length).
    keys: Vec<(u64, usize, usize)>,
    text: String,
    /// Scratch for the records read from the store.
    read: Vec<Option<TokenRecord>>,
}

impl Cache {
    fn new() -> Cache {
        Cache {
            index: HashMap::with_hasher(crate::hash::FxBuild),
            others: HashMap::with_hasher(crate::hash::FxBuild),
            records: Vec::new(),
            keys: Vec::new(),
            text: String::new(),
            read: Vec::new(),
        }
    }

    fn key(&self, i: usize) -> &str {
        let (_, start, len) = self.keys[i];
        &self.text[start..start + len]
    }

    fn known(&self, hash: u64, token: &str) -> Option<usize> {
        match self.index.get(&hash) {
            Some(&i) if self.key(i) == token => Some(i),
            Some(_) => self.others.get(token).copied(),
            None => None,
        }
    }

    /// The places of `tokens`' records in `records`, in order (into
    /// `slots`); the records not yet here are read from the store, in one
    /// call.
    fn slots(&mut self, view: &dyn WriteView, tokens: &TokenSet, slots: &mut Vec<usize>) -> Result<()> {
        let mut missing: Vec<(u64, &str)> = Vec::new();
        for (hash, token) in tokens.iter() {
            match self.known(hash, token) {
                Some(i) => slots.push(i),
                None => {
                    slots.push(usize::MAX);
                    missing.push((hash, token));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.read.clear();
        view.get_many(&missing, &mut self.read)?;
        let mut read = 0;
        for (slot, (hash, token)) in slots.iter_mut().zip(tokens.iter()) {
            if *slot != usize::MAX {
                continue;
            }
            // A token set holds each token once, so none was added meanwhile.
            let i = self.records.len();
            self.records.push(self.read[read].unwrap_or_default());
            read += 1;
            let start = self.text.len();
            self.text.push_str(token);
            self.keys.push((hash, start, token.len()));
            match self.index.entry(hash) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.others.insert(token.to_string(), i);
                }
            }
            *slot = i;
        }
        Ok(())
    }

    fn flush(&mut self, view: &mut dyn WriteView) -> Result<()> {
        let mut order: Vec<usize> = (0..self.records.len()).collect();
        order.sort_unstable_by(|&a, &b| self.keys[a].0.cmp(&self.keys[b].0).then_with(|| self.key(a).cmp(self.key(b))));
        for i in order {
            let r = self.records[i];
            if r.spam == 0 && r.ham == 0 {
                view.remove(self.key(i))?;
            } else {
                view.put(self.key(i), r)?;
            }
        }
        Ok(())
    }
}

/// Tells the store what a batch will read (its journal entries, the tokens
/// not in `cache` yet): a remote store reads them in one call.
fn prefetch(view: &mut dyn WriteView, cache: &Cache, batch: &[(Prepared, Action)]) -> Result<()> {
    let digests: Vec<crate::digest::Digest> = batch.iter().map(|(p, _)| p.digest).collect();
    let tokens: Vec<(u64, &str)> = batch.iter().flat_map(|(p, _)| p.tokens.iter()).filter(|&(h, t)| cache.known(h, t).is_none()).collect();
    view.prefetch(&digests, &tokens)
}

/// [`apply`] to each of a batch, in order, appending the outcomes.
fn apply_all(
    params: &Params,
    day: u32,
    view: &mut dyn WriteView,
    cache: &mut Cache,
    state: &mut crate::store::ModelState,
    batch: &[(Prepared, Action)],
    outcomes: &mut Vec<LearnOutcome>,
) -> Result<()> {
    for (p, action) in batch {
        outcomes.push(apply(params, day, view, cache, state, p, *action)?);
    }
    Ok(())
}

/// One learn/unlearn inside a transaction.
fn apply(
    params: &Params,
    day: u32,
    view: &mut dyn WriteView,
    cache: &mut Cache,
    state: &mut crate::store::ModelState,
    p: &Prepared,
    action: Action,
) -> Result<LearnOutcome> {
    let prev = view.journal(&p.digest)?;
    let auto = matches!(action, Action::AutoLearn(_));
    let (remove, add, outcome) = match (action, prev) {
        (Action::AutoLearn(_), Some(_)) => return Ok(LearnOutcome::AlreadyLearned),
        (Action::AutoLearn(c), None) => (None, Some(c), LearnOutcome::Learned),
        // A label for a guess of the same class: the counts are right, the
        // journal now says someone confirmed them.
        (Action::Learn(c), Some(old)) if old.class == c && old.auto => {
            view.set_journal(&p.digest, Some(JournalEntry { auto: false, ..old }))?;
            return Ok(LearnOutcome::Confirmed);
        }
        (Action::Learn(c), Some(old)) if old.class == c => return Ok(LearnOutcome::AlreadyLearned),
        (Action::Learn(c), Some(old)) => (Some(old), Some(c), LearnOutcome::Relearned),
        (Action::Learn(c), None) => (None, Some(c), LearnOutcome::Learned),
        (Action::Unlearn, None) => return Ok(LearnOutcome::NotLearned),
        (Action::Unlearn, Some(old)) => (Some(old), None, LearnOutcome::Unlearned),
    };
    // Current records: the message is scored as `check` would score it now.
    let mut slots = Vec::with_capacity(p.tokens.len());
    cache.slots(view, &p.tokens, &mut slots)?;
    let mut recs: Vec<TokenRecord> = slots.iter().map(|&i| cache.records[i]).collect();
    let mut weight: u8 = 1;
    // The regression's z before this message, when the score above computed it.
    let mut z_before = None;
    let g_scale = gram_scale(params, p.grams.len());
    if let Some(c) = add {
        let evidence: Vec<Evidence<'_>> =
            p.tokens.texts().zip(&recs).map(|(t, r)| Evidence { token: t, spam: r.spam, ham: r.ham, weight: r.weight }).collect();
        let before = classify::score(params, state, &evidence, view.gram_sum(&p.grams)? * g_scale);
        z_before = Some((before.lr_logit, before.gram_logit));
        let y = if c == Class::Spam { 1.0 } else { 0.0 };
        // Misclassified: on the wrong side of 0.5 (exactly 0.5, "no idea", is not wrong).
        let wrong = match c {
            Class::Spam => before.probability < 0.5,
            Class::Ham => before.probability > 0.5,
        };
        if params.boost_errors && prev.is_none() && wrong {
            weight = 2;
        }
        // The 4-gram weight's pairwise step, then the combiner's: d(log
        // loss)/d(weights) at the score it gave.
        classify::pair_step(params, state, c == Class::Spam, &before);
        let g = params.mix_rate * (y - before.probability);
        state.mix[0] += g * before.mix_inputs[0];
        state.mix[1] += g * before.mix_inputs[1];
        state.mix[2] += g;
    }
    let removed = remove.map_or(0, |e| u32::from(e.weight.max(1)));
    let added = u32::from(weight);
    let remove = remove.map(|e| e.class);
    // Logistic regression: one gradient step towards the new label, or
    // towards 0.5 on unlearn (a step cannot be undone exactly; this removes
    // the message's pull without inventing a label).
    let target = match add {
        Some(Class::Spam) => 1.0,
        Some(Class::Ham) => 0.0,
        None => 0.5,
    };
    let (z, z_gram) = match z_before {
        Some(z) => z,
        None => (classify::lr_z(params, state.bias, recs.iter().map(|r| r.weight), recs.len()), view.gram_sum(&p.grams)? * g_scale),
    };
    // One step per message, even for one learned twice (`boost_errors` is
    // for the counts): a doubled step left the 4-gram regression alone at
    // 1-ROCA% 0.4721 against 0.1950 on spamassassin (docs/tuning.md).
    let (dw, db) = classify::lr_step(params, z, target, recs.len());
    state.bias += db;
    // The byte 4-gram regression: the same step over the message's slots
    // (binary features, or 1/√n each with `gram_unit`; no bias).
    let dg = params.gram_rate * (target - classify::sigmoid(z_gram)) * g_scale;
    if dg != 0.0 {
        view.gram_add(&p.grams, dg as f32)?;
    }
    for (&i, r) in slots.iter().zip(recs.iter_mut()) {
        if let Some(c) = remove {
            match c {
                Class::Spam => r.spam = r.spam.saturating_sub(removed),
                Class::Ham => r.ham = r.ham.saturating_sub(removed),
            }
        }
        if let Some(c) = add {
            match c {
                Class::Spam => r.spam = r.spam.saturating_add(added),
                Class::Ham => r.ham = r.ham.saturating_add(added),
            }
            r.day = day;
        }
        r.weight += dw as f32;
        cache.records[i] = *r;
    }
    if let Some(c) = remove {
        match c {
            Class::Spam => {
                state.totals.spam = state.totals.spam.saturating_sub(u64::from(removed));
                state.messages.spam = state.messages.spam.saturating_sub(1);
            }
            Class::Ham => {
                state.totals.ham = state.totals.ham.saturating_sub(u64::from(removed));
                state.messages.ham = state.messages.ham.saturating_sub(1);
            }
        }
    }
    if let Some(c) = add {
        match c {
            Class::Spam => {
                state.totals.spam += u64::from(added);
                state.messages.spam += 1;
            }
            Class::Ham => {
                state.totals.ham += u64::from(added);
                state.messages.ham += 1;
            }
        }
    }
    view.set_journal(&p.digest, add.map(|class| JournalEntry { class, day, weight, auto }))?;
    Ok(outcome)
}

/// The value of each of a message's `n` 4-gram features: 1, or 1/√n with
/// [`Params::gram_unit`].
fn gram_scale(params: &Params, n: usize) -> f64 {
    if params.gram_unit && n > 0 { 1.0 / (n as f64).sqrt() } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const SPAM: &[u8] = b"Subject: cheap pills\r\n\r\nbuy cheap pills now, best prices online";
    const HAM: &[u8] = b"Subject: meeting minutes\r\n\r\nthe minutes of the meeting are attached";

    #[test]
    fn auto_learned_entries_are_confirmed_or_corrected_never_overwritten() {
        let e = Engine::new(MemoryStore::new(), Params::default());
        let auto = |raw: &[u8], c| e.train(&[(e.prepare(raw), Action::AutoLearn(c))]).unwrap()[0];
        let entry = |raw: &[u8]| e.store().read().unwrap().journal(&crate::digest::digest(raw)).unwrap().unwrap();
        assert_eq!(auto(SPAM, Class::Spam), LearnOutcome::Learned);
        assert!(entry(SPAM).auto);
        let counts = e.store().read().unwrap().state().unwrap();
        assert_eq!(auto(SPAM, Class::Ham), LearnOutcome::AlreadyLearned, "a guess never replaces a guess");
        assert_eq!(e.learn(SPAM, Class::Spam).unwrap(), LearnOutcome::Confirmed);
        assert!(!entry(SPAM).auto, "now a confirmed label");
        assert_eq!(e.store().read().unwrap().state().unwrap(), counts, "confirming changes no count");
        assert_eq!(e.learn(SPAM, Class::Spam).unwrap(), LearnOutcome::AlreadyLearned);
        assert_eq!(auto(SPAM, Class::Ham), LearnOutcome::AlreadyLearned, "a guess never overwrites a label");
        // A wrong guess corrected: relearned, and confirmed.
        assert_eq!(auto(HAM, Class::Spam), LearnOutcome::Learned);
        assert_eq!(e.learn(HAM, Class::Ham).unwrap(), LearnOutcome::Relearned);
        let h = entry(HAM);
        assert_eq!((h.class, h.auto), (Class::Ham, false));
        let st = e.store().read().unwrap().state().unwrap();
        assert_eq!((st.messages.spam, st.messages.ham), (1, 1));
    }

    #[test]
    fn journal_semantics() {
        let e = Engine::new(MemoryStore::new(), Params::default());
        assert_eq!(e.learn(SPAM, Class::Spam).unwrap(), LearnOutcome::Learned);
        assert_eq!(e.learn(SPAM, Class::Spam).unwrap(), LearnOutcome::AlreadyLearned);
        let st = e.store().read().unwrap().state().unwrap();
        assert_eq!((st.totals.spam, st.totals.ham), (1, 0));
        assert_eq!(e.learn(SPAM, Class::Ham).unwrap(), LearnOutcome::Relearned);
        let v = e.store().read().unwrap();
        let st = v.state().unwrap();
        assert_eq!((st.totals.spam, st.totals.ham), (0, 1));
        let r = v.get("cheap").unwrap().unwrap();
        assert_eq!((r.spam, r.ham), (0, 1));
        drop(v);
        assert_eq!(e.unlearn(SPAM).unwrap(), LearnOutcome::Unlearned);
        assert_eq!(e.unlearn(SPAM).unwrap(), LearnOutcome::NotLearned);
        let v = e.store().read().unwrap();
        assert_eq!(v.get("cheap").unwrap(), None, "zero-count tokens are removed");
        assert_eq!(v.state().unwrap().totals.ham, 0);
    }

    #[test]
    fn misclassified_messages_count_twice_and_unlearn_cleanly() {
        let e = Engine::new(MemoryStore::new(), Params::default());
        // One of each class first: a model that has seen only one class
        // scores everything 0.5, and 0.5 is not an error.
        e.learn(HAM, Class::Ham).unwrap();
        e.learn(SPAM, Class::Spam).unwrap();
        // A ham that looks like the spam is misclassified before it is learned.
        let lookalike = b"Subject: cheap pills\r\n\r\nbuy cheap pills now, best prices online. regards, mum";
        assert!(e.check(lookalike).unwrap().probability > 0.5);
        assert_eq!(e.learn(lookalike, Class::Ham).unwrap(), LearnOutcome::Learned);
        let v = e.store().read().unwrap();
        assert_eq!(v.state().unwrap().totals.ham, 3, "boosted");
        assert_eq!(v.get("mum").unwrap().unwrap().ham, 2);
        drop(v);
        assert_eq!(e.unlearn(lookalike).unwrap(), LearnOutcome::Unlearned);
        let v = e.store().read().unwrap();
        assert_eq!(v.state().unwrap().totals.ham, 1);
        assert_eq!(v.get("mum").unwrap(), None);
        assert_eq!(v.get("cheap").unwrap().unwrap().spam, 1);
    }

    #[test]
    fn learning_moves_the_byte_gram_weights() {
        let e = Engine::new(MemoryStore::new(), Params::default());
        let p = e.prepare(SPAM);
        assert!(!p.grams.is_empty());
        e.learn(SPAM, Class::Spam).unwrap();
        let z = e.store().read().unwrap().gram_sum(&p.grams).unwrap();
        // One step from z = 0: η (1 − ½) on each slot.
        let want = p.grams.len() as f64 * Params::default().gram_rate * 0.5;
        assert!((z - want).abs() < 1e-4 * want, "{z} vs {want}");
        e.learn(SPAM, Class::Ham).unwrap();
        assert!(e.store().read().unwrap().gram_sum(&p.grams).unwrap() < z, "a relearn steps towards ham");
    }

    #[test]
    fn unit_length_grams_score_and_learn_at_one_over_root_n() {
        let p = Params { gram_unit: true, gram_rate: 10.0, ..Params::default() };
        let e = Engine::new(MemoryStore::new(), p.clone());
        let prep = e.prepare(SPAM);
        let n = prep.grams.len() as f64;
        e.learn(SPAM, Class::Spam).unwrap();
        // One step from z = 0: each slot moves η (1 − ½) / √n ...
        let sum = e.store().read().unwrap().gram_sum(&prep.grams).unwrap();
        let want = n * p.gram_rate * 0.5 / n.sqrt();
        assert!((sum - want).abs() < 1e-4 * want, "{sum} vs {want}");
        // ... and the score reads the sum at 1 / √n: η · ½ in all.
        let s = e.check(SPAM).unwrap();
        assert!((s.gram_logit - p.gram_rate * 0.5).abs() < 1e-3, "{}", s.gram_logit);
    }

    #[test]
    fn learns_to_separate() {
        let e = Engine::new(MemoryStore::new(), Params::default());
        for i in 0..5 {
            e.learn(format!("Subject: cheap pills {i}\r\n\r\nbuy cheap pills now {i}").as_bytes(), Class::Spam).unwrap();
            e.learn(format!("Subject: minutes {i}\r\n\r\nthe meeting minutes {i}").as_bytes(), Class::Ham).unwrap();
        }
        let s = e.check(b"Subject: cheap pills\r\n\r\nbuy pills").unwrap();
        let h = e.check(b"Subject: minutes\r\n\r\nmeeting minutes").unwrap();
        assert!(s.probability > 0.9, "{s:?}");
        assert!(h.probability < 0.1, "{h:?}");
        assert!(!s.clues.is_empty());
    }

    #[test]
    fn batch_equals_one_by_one() {
        let a = Engine::new(MemoryStore::new(), Params::default());
        let b = Engine::new(MemoryStore::new(), Params::default());
        let msgs = [(SPAM, Class::Spam), (HAM, Class::Ham), (SPAM, Class::Spam)];
        for (m, c) in msgs {
            a.learn(m, c).unwrap();
        }
        let batch: Vec<_> = msgs.iter().map(|(m, c)| (b.prepare(m), Action::Learn(*c))).collect();
        let out = b.train(&batch).unwrap();
        assert_eq!(out[2], LearnOutcome::AlreadyLearned);
        let (va, vb) = (a.store().read().unwrap(), b.store().read().unwrap());
        assert_eq!(va.scan(None, 1000).unwrap(), vb.scan(None, 1000).unwrap());
        assert_eq!(va.state().unwrap(), vb.state().unwrap());
    }

    #[test]
    fn stream_equals_one_by_one_and_keeps_what_came_before_an_error() {
        let msgs = [(SPAM, Class::Spam), (HAM, Class::Ham), (SPAM, Class::Spam), (b"Subject: x\r\n\r\nother words".as_slice(), Class::Ham)];
        let one = Engine::new(MemoryStore::new(), Params::default());
        let want: Vec<LearnOutcome> = msgs.iter().map(|&(m, c)| one.learn(m, c).unwrap()).collect();
        // One transaction for everything, then one per batch (by records,
        // then by messages).
        for (max_records, max_messages) in [(usize::MAX, usize::MAX), (1, usize::MAX), (usize::MAX, 1)] {
            let e = Engine::new(MemoryStore::new(), Params::default());
            let mut batches = msgs.chunks(2).map(|c| Ok(c.iter().map(|&(m, class)| (e.prepare(m), Action::Learn(class))).collect()));
            let mut got = Vec::new();
            e.train_stream(&mut batches, max_records, max_messages, &mut |o| got.extend_from_slice(o)).unwrap();
            assert_eq!(got, want);
            let (va, vb) = (one.store().read().unwrap(), e.store().read().unwrap());
            assert_eq!(va.scan(None, 1000).unwrap(), vb.scan(None, 1000).unwrap());
            assert_eq!(va.state().unwrap(), vb.state().unwrap());
        }
        // A batch that fails to arrive: the one before it is committed, none after.
        let e = Engine::new(MemoryStore::new(), Params::default());
        let mut batches = vec![
            Ok(vec![(e.prepare(SPAM), Action::Learn(Class::Spam))]),
            Err(crate::Error::Invalid("unreadable".into())),
            Ok(vec![(e.prepare(HAM), Action::Learn(Class::Ham))]),
        ]
        .into_iter();
        let mut got = Vec::new();
        assert!(e.train_stream(&mut batches, usize::MAX, usize::MAX, &mut |o| got.extend_from_slice(o)).is_err());
        assert_eq!(got, [LearnOutcome::Learned]);
        assert_eq!(e.learn(SPAM, Class::Spam).unwrap(), LearnOutcome::AlreadyLearned, "learned before the error");
        assert_eq!(e.store().read().unwrap().state().unwrap().messages.ham, 0, "nothing after it");
    }

    #[test]
    fn per_user_layer() {
        let e = Engine::new(MemoryStore::new(), Params::default());
        e.learn(SPAM, Class::Spam).unwrap();
        e.learn(HAM, Class::Ham).unwrap();
        let user = MemoryStore::new();
        let msg: &[u8] = b"Subject: weekly digest\r\n\r\nthe weekly digest of listings";
        let shared = e.check(msg).unwrap().probability;
        assert_eq!(e.check_layered(Some(&user), msg).unwrap().probability, shared, "an empty layer changes nothing");
        let p = e.prepare(msg);
        assert_eq!(e.train_in(&user, &[(p.clone(), Action::Learn(Class::Spam))]).unwrap()[0], LearnOutcome::Learned);
        assert_eq!(e.train_in(&user, &[(p, Action::Learn(Class::Spam))]).unwrap()[0], LearnOutcome::AlreadyLearned);
        assert!(e.check_layered(Some(&user), msg).unwrap().probability > shared);
        assert_eq!(e.check(msg).unwrap().probability, shared, "the shared model is untouched");
        let st = user.read().unwrap().state().unwrap();
        assert_eq!((st.totals.spam, st.messages.spam), (1, 1), "no error boost in a user's model");
    }
}
