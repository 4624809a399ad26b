//! The shared corpora (spamassassin, csdmc2010, enron-raw): every message
//! tokenizes within bounds, and the classifier's on-line accuracy on
//! spamassassin stays under a loose ceiling (a guard against breaking the
//! classifier, not the accuracy target).
//!
//! The corpora are read from `$HAMLET_CORPORA` (scripts/test.sh sets it to
//! target/corpora after unpacking). Missing corpora fail the tests: they are
//! never skipped silently.

use hamlet::classify::Params;
use hamlet::eval::{self, TrainMode};
use hamlet::hash::token_hash;
use hamlet::mailbox::{self, Entry};
use hamlet::tokenize::{Limits, Tokenizer};
use std::path::PathBuf;

/// Longest token (bytes) accepted. The tokenizer caps most tokens well below
/// this (words at 20 chars, header names at 40, mailers at 60, HELO and
/// Message-ID domains at 80, host names at 253), but not all of them (see
/// `long_token_report`).
const MAX_TOKEN_BYTES: usize = 300;
/// 1-ROCA% ceiling for the default parameters on spamassassin.
const ROCA_CEILING_PERCENT: f64 = 0.06;
const THREADS: usize = 2;

fn corpora_dir() -> PathBuf {
    const HOW: &str = "run scripts/test.sh (which unpacks the corpora and sets HAMLET_CORPORA), \
                       or ../shared/tools/unpack-corpora target/corpora and set HAMLET_CORPORA=$PWD/target/corpora";
    let Some(dir) = std::env::var_os("HAMLET_CORPORA") else {
        panic!("HAMLET_CORPORA is not set: {HOW}");
    };
    let dir = PathBuf::from(dir);
    assert!(dir.is_dir(), "HAMLET_CORPORA={} is not a folder: {HOW}", dir.display());
    dir
}

fn corpus(name: &str) -> Vec<Entry> {
    let index = corpora_dir().join(name).join("index");
    assert!(index.is_file(), "{} is missing: run scripts/test.sh or ../shared/tools/unpack-corpora target/corpora", index.display());
    let entries = mailbox::index(&index).unwrap_or_else(|e| panic!("{}: {e}", index.display()));
    assert!(entries.len() > 1000, "{}: only {} messages, expected the whole corpus", index.display(), entries.len());
    entries
}

/// What went wrong with one message.
#[derive(Debug)]
struct Problem {
    message: String,
    what: String,
}

/// Tokenizes every message of `entries` on `THREADS` threads and returns the
/// problems found, plus the longest token seen and the largest token count.
fn check_bounds(entries: &[Entry]) -> (Vec<Problem>, (usize, String, String), usize) {
    let tk = Tokenizer::default();
    let limits: &Limits = &tk.options.limits;
    let max_read = limits.max_parse_bytes + 1;
    let chunk = entries.len().div_ceil(THREADS);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .map(|part| {
                let tk = &tk;
                s.spawn(move || {
                    let mut problems = Vec::new();
                    let mut longest = (0usize, String::new(), String::new());
                    let mut most = 0usize;
                    for e in part {
                        let raw = match e.read(max_read) {
                            Ok(r) => r,
                            Err(err) => {
                                problems.push(Problem { message: e.name(), what: format!("cannot read: {err}") });
                                continue;
                            }
                        };
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tk.tokenize(&raw)));
                        let tokens = match r {
                            Ok(t) => t,
                            Err(p) => {
                                let msg = p
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                problems.push(Problem { message: e.name(), what: format!("tokenize panicked: {msg}") });
                                continue;
                            }
                        };
                        most = most.max(tokens.len());
                        if tokens.len() > tk.options.limits.max_tokens {
                            problems.push(Problem {
                                message: e.name(),
                                what: format!("{} tokens > max_tokens {}", tokens.len(), tk.options.limits.max_tokens),
                            });
                        }
                        if !tokens.windows(2).all(|w| (token_hash(&w[0]), &w[0]) < (token_hash(&w[1]), &w[1])) {
                            problems.push(Problem { message: e.name(), what: "tokens not in canonical order and unique".into() });
                        }
                        if tokens.iter().any(|t| t.is_empty()) {
                            problems.push(Problem { message: e.name(), what: "empty token".into() });
                        }
                        for t in &tokens {
                            if t.len() > longest.0 {
                                longest = (t.len(), t.clone(), e.name());
                            }
                            if t.len() > MAX_TOKEN_BYTES {
                                let shown: String = t.chars().take(100).collect();
                                problems.push(Problem {
                                    message: e.name(),
                                    what: format!("token of {} bytes > {MAX_TOKEN_BYTES}: {shown:?}...", t.len()),
                                });
                            }
                        }
                    }
                    (problems, longest, most)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker thread")).collect()
    });
    let mut problems = Vec::new();
    let mut longest = (0, String::new(), String::new());
    let mut most = 0;
    for (p, l, m) in results {
        problems.extend(p);
        if l.0 > longest.0 {
            longest = l;
        }
        most = most.max(m);
    }
    (problems, longest, most)
}

fn bounds_test(name: &str) {
    let entries = corpus(name);
    let (problems, longest, most) = check_bounds(&entries);
    let shown: String = longest.1.chars().take(120).collect();
    eprintln!(
        "{name}: {} messages, most tokens in one message {most}, longest token {} bytes ({shown:?}... in {})",
        entries.len(),
        longest.0,
        longest.2
    );
    if !problems.is_empty() {
        let mut report = format!("{name}: {} problems in {} messages:\n", problems.len(), entries.len());
        for p in problems.iter().take(25) {
            report.push_str(&format!("  {}: {}\n", p.message, p.what));
        }
        if problems.len() > 25 {
            report.push_str(&format!("  ... and {} more\n", problems.len() - 25));
        }
        panic!("{report}");
    }
}

#[test]
fn spamassassin_tokenizes_within_bounds() {
    bounds_test("spamassassin");
}

#[test]
fn csdmc2010_tokenizes_within_bounds() {
    bounds_test("csdmc2010");
}

#[test]
fn enron_raw_tokenizes_within_bounds() {
    bounds_test("enron-raw");
}

#[test]
fn spamassassin_online_accuracy_guard() {
    let entries = corpus("spamassassin");
    let tk = Tokenizer::default();
    let prepared = eval::prepare_all(&tk, &entries, THREADS).expect("prepare_all on spamassassin");
    assert_eq!(prepared.len(), entries.len());
    let judgements = eval::online(&Params::default(), &prepared, TrainMode::OnEverything).expect("online run");
    assert_eq!(judgements.len(), entries.len(), "one judgement per message");
    let m = eval::metrics(&judgements, 0.5);
    let report = m.report(1.0);
    eprintln!("spamassassin, default Params, on-line:\n{report}");
    assert_eq!((m.ham, m.spam), (4150, 1896), "spamassassin has 4,150 ham and 1,896 spam\n{report}");
    let roca = 100.0 * m.one_minus_roca;
    assert!(roca.is_finite(), "1-ROCA% is not a number\n{report}");
    assert!(
        roca < ROCA_CEILING_PERCENT,
        "1-ROCA% = {roca:.4} on spamassassin is above the guard ceiling {ROCA_CEILING_PERCENT}: \
         the classifier or tokenizer got much worse\n{report}"
    );
    // Sanity: a classifier that works misclassifies few messages at 0.5.
    assert!(100.0 * m.lam < 5.0, "lam% = {:.3} is implausibly bad\n{report}", 100.0 * m.lam);
}
