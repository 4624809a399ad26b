//! Many messages at once: read and tokenize them on all cores, then learn
//! them in few write transactions (`hamlet train`, `imap-train`) or score
//! them against one read snapshot (`hamlet check FILE...`). The command
//! line and the IMAP job only say what to do and print; the work is here.

use super::{Action, Engine, LearnOutcome, Prepared};
use crate::classify::Score;
use crate::mailbox::Entry;
use crate::store::{self, ReadView, TokenStore};
use crate::tokenize::Tokenizer;
use crate::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `f` over `items` on up to `threads` threads and returns the results
/// in the items' order, or the error of the earliest item that failed (as
/// a loop in order would). Each thread first makes its own state with
/// `init`.
///
/// The threads take the next few items as they finish their last, rather
/// than a fixed share each: messages vary in cost (a 200 KB one takes the
/// time of dozens), and with fixed halves one thread sat idle while the
/// other finished.
pub fn parallel_map<T, S, R>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> Result<S> + Sync,
    f: impl Fn(&mut S, &T) -> Result<R> + Sync,
) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
{
    const TAKE: usize = 4;
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, items.len().div_ceil(TAKE).max(1));
    // Each thread's results with their places, or the first it failed on.
    type Part<R> = std::result::Result<Vec<(usize, R)>, (usize, Error)>;
    let parts: Vec<Part<R>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut state = init().map_err(|e| (0, e))?;
                    let mut done = Vec::new();
                    loop {
                        let start = next.fetch_add(TAKE, Ordering::Relaxed);
                        if start >= items.len() {
                            return Ok(done);
                        }
                        for (i, item) in items.iter().enumerate().skip(start).take(TAKE) {
                            match f(&mut state, item) {
                                Ok(r) => done.push((i, r)),
                                Err(err) => return Err((i, err)),
                            }
                        }
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err((0, Error::Internal("a worker thread panicked".into()))))).collect()
    });
    let mut slots: Vec<Option<R>> = Vec::new();
    slots.resize_with(items.len(), || None);
    let mut first_error: Option<(usize, Error)> = None;
    for part in parts {
        match part {
            Ok(done) => {
                for (i, r) in done {
                    slots[i] = Some(r);
                }
            }
            Err((i, e)) => {
                if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_error = Some((i, e));
                }
            }
        }
    }
    if let Some((_, e)) = first_error {
        return Err(e);
    }
    // Every item was taken by a thread that finished without error.
    Ok(slots.into_iter().flatten().collect())
}

/// Reads and tokenizes entries across `threads` threads, keeping their
/// order (tokenizing needs no store, so it runs in parallel).
pub fn prepare_entries(tokenizer: &Tokenizer, entries: &[Entry], threads: usize) -> Result<Vec<Prepared>> {
    let max = tokenizer.options.limits.max_parse_bytes + 1;
    parallel_map(entries, threads, || Ok(()), |(), e| e.read(max).map(|raw| Prepared::new(tokenizer, &raw)))
}

/// Tokenizes messages in memory across all cores, keeping their order.
pub fn prepare_messages(tokenizer: &Tokenizer, messages: &[Vec<u8>]) -> Vec<Prepared> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    parallel_map(messages, threads, || Ok(()), |(), m| Ok(Prepared::new(tokenizer, m))).unwrap_or_else(|_| {
        // Tokenizing cannot fail; only a panicked worker lands here.
        messages.iter().map(|m| Prepared::new(tokenizer, m)).collect()
    })
}

/// Messages read and tokenized per chunk, while the writer learns the chunk
/// before.
const CHUNK: usize = 500;
/// A write transaction spans chunks until it has touched this many token
/// records (about 100 MB of cache; spamassassin's 6,046 messages touch
/// 146,000) ...
const MAX_RECORDS: usize = 1_000_000;
/// ... or learned this many messages (their journal entries, about 10 MB;
/// redb holds a transaction's pages until it commits).
const MAX_MESSAGES: usize = 100_000;

impl<S: TokenStore> Engine<S> {
    /// Learns (or unlearns) `entries`, `action` saying what each gets.
    /// Entries are read and tokenized `CHUNK` at a time on `threads`
    /// threads while the writer learns the chunk before, in few write
    /// transactions ([`Engine::train_stream`]: one transaction took
    /// spamassassin 0.32-0.36 s of writer time, one per 2,000 messages
    /// 0.51-0.59 s). `done` hears every chunk's outcomes. If an entry
    /// cannot be read, what came before it is committed and the error
    /// returned.
    pub fn train_entries(
        &self,
        entries: &[Entry],
        threads: usize,
        action: impl Fn(&Entry) -> Action + Sync,
        done: &mut dyn FnMut(&[LearnOutcome]),
    ) -> Result<()> {
        let tokenizer = &self.tokenizer;
        let make_batch = |chunk: &[Entry]| -> Result<Vec<(Prepared, Action)>> {
            Ok(prepare_entries(tokenizer, chunk, threads)?.into_iter().zip(chunk).map(|(p, e)| (p, action(e))).collect())
        };
        if threads <= 1 {
            return self.train_stream(&mut entries.chunks(CHUNK).map(make_batch), MAX_RECORDS, MAX_MESSAGES, done);
        }
        // With more threads, a pipeline: the next chunk is tokenized while
        // the writer learns this one.
        std::thread::scope(|s| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<(Prepared, Action)>>>(1);
            let make_batch = &make_batch;
            let producer = s.spawn(move || {
                for chunk in entries.chunks(CHUNK) {
                    let item = make_batch(chunk);
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        break;
                    }
                }
            });
            let outcome = self.train_stream(&mut rx.iter(), MAX_RECORDS, MAX_MESSAGES, done);
            // On an error the receiver goes first, so a blocked producer wakes.
            drop(rx);
            let _ = producer.join();
            outcome
        })
    }

    /// Scores `entries` on `threads` threads against one read snapshot:
    /// each entry's name and its score, or why it could not be scored.
    pub fn check_entries(&self, entries: &[Entry], threads: usize) -> Result<Vec<(String, Result<Score>)>> {
        let max = self.tokenizer.options.limits.max_parse_bytes + 1;
        let threads = threads.clamp(1, entries.len().max(1));
        let share = entries.len().div_ceil(threads) as u64;
        let init = || -> Result<store::CachedView<'_>> {
            // ~2 M cached tokens in all, shared out between the threads.
            let mut view = store::CachedView::new(self.store().read()?, 2_000_000 / threads);
            // Read the whole model in one scan when these messages would
            // look up a good part of it anyway: a message brings ~150 tokens
            // new to the cache early on, and a stored token costs a scan
            // about a fifth of what a lookup costs (see `CachedView::preload`).
            if share * 750 >= view.token_count()? {
                view.preload()?;
            }
            Ok(view)
        };
        parallel_map(entries, threads, init, |view, e| Ok((e.name(), e.read(max).and_then(|raw| self.score_raw(&*view, &raw)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_entries_keeps_order_and_reports_the_first_failure() {
        use crate::mailbox::{Entry, Location};
        let dir = std::env::temp_dir().join(format!("hamlet-prepare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let entries: Vec<Entry> = (0..50)
            .map(|i| {
                let p = dir.join(format!("{i}"));
                std::fs::write(&p, format!("Subject: message {i}\n\nbody {i} word{i}\n")).unwrap();
                Entry { label: None, location: Location::File(p) }
            })
            .collect();
        let tk = Tokenizer::default();
        for threads in [1, 2, 3, 8] {
            let got = prepare_entries(&tk, &entries, threads).unwrap();
            assert_eq!(got.len(), entries.len());
            for (i, p) in got.iter().enumerate() {
                assert!(p.tokens.texts().any(|t| t == format!("word{i}")), "entry {i} out of place with {threads} threads");
            }
        }
        std::fs::remove_file(dir.join("37")).unwrap();
        std::fs::remove_file(dir.join("9")).unwrap();
        for threads in [1, 2, 3, 8] {
            let err = prepare_entries(&tk, &entries, threads).expect_err("a missing file is an error").to_string();
            assert!(err.contains(&dir.join("9").display().to_string()), "{threads} threads: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
