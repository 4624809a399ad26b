//! What the web console shows of the service's recent work (`[ui]`): the
//! last N checks with what decided them (a ring buffer), checks and learns
//! per minute over the last six hours, and each stage's last error.
//!
//! Every front end's check goes through the shared `Service`, which
//! records it here; the HTTP edge reads it for `/ui/api/*`. Recording takes
//! one short lock and copies what the check already computed (the score's
//! clues, the report's outcomes); the subject and addresses come from the
//! message's header block alone. What it keeps about people is the
//! operator's choice ([`Privacy`]); the message itself is kept (for the
//! console's learn buttons) only within a byte budget, oldest dropped first.

use crate::classify::{Clue, Score, Verdict};
use crate::envelope::{Envelope, Report};
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Minutes of per-minute counts kept (six hours).
pub const MINUTES: usize = 360;

/// How much of a sender or recipient address is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addresses {
    /// The whole address.
    #[default]
    Full,
    /// Its domain only.
    Domain,
    /// Nothing.
    None,
}

/// What the history keeps of each check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privacy {
    pub addresses: Addresses,
    pub subjects: bool,
}

/// The history's size and what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Checks kept (the oldest goes first).
    pub capacity: usize,
    /// Message bytes kept for re-learning, all entries together.
    pub message_bytes: usize,
    pub privacy: Privacy,
}

/// A message kept so it can be learned from the console, with what it was
/// checked with (the same user and envelope make the same tokens).
#[derive(Debug, Clone)]
pub struct Kept {
    pub raw: Arc<Vec<u8>>,
    pub user: Option<String>,
    pub env: Option<Envelope>,
}

/// One envelope (or antivirus, DKIM) rule that fired.
#[derive(Debug, Clone)]
pub struct Fired {
    pub rule: &'static str,
    pub detail: String,
    /// `reject`, `defer`, `score` or `off`.
    pub action: &'static str,
}

/// One check as the console shows it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    /// Unix seconds.
    pub at: f64,
    /// The front end: `http`, `checkv2`, `spamd`, `milter`.
    pub via: &'static str,
    pub sender: Option<String>,
    pub rcpt: Option<String>,
    pub subject: Option<String>,
    pub probability: f64,
    pub verdict: Verdict,
    /// What the front end did with the verdict, when it acts on it (the
    /// milter, `/checkv2`); `None` where its client decides.
    pub action: Option<&'static str>,
    pub fired: Vec<Fired>,
    pub clues: Clues,
    /// Fisher's, the logistic regression's and the 4-gram learner's logits.
    pub logits: [f64; 3],
    pub tokens: usize,
    /// Set once it was learned (`spam`, `ham`) or forgotten from the console.
    pub learned: Option<&'static str>,
    pub kept: Option<Kept>,
}

/// A check's clues in two allocations, its tokens end to end and their
/// figures, not one string per token: a thousand entries of up to 50 clues
/// each are that many fewer blocks for the allocator to keep and free on
/// the scoring path.
#[derive(Debug, Clone, Default)]
pub struct Clues {
    text: String,
    items: Vec<ClueAt>,
}

#[derive(Debug, Clone, Copy)]
struct ClueAt {
    /// Where its token ends in `text`.
    end: u32,
    prob: f64,
    spam: u32,
    ham: u32,
    weight: f32,
}

impl Clues {
    pub fn new(clues: &[Clue]) -> Clues {
        let mut text = String::with_capacity(clues.iter().map(|c| c.token.len()).sum());
        let items = clues
            .iter()
            .map(|c| {
                text.push_str(&c.token);
                ClueAt { end: text.len() as u32, prob: c.prob, spam: c.spam, ham: c.ham, weight: c.weight }
            })
            .collect();
        Clues { text, items }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The clues as the classifier gave them, strongest first.
    pub fn to_vec(&self) -> Vec<Clue> {
        let mut start = 0;
        self.items
            .iter()
            .map(|c| {
                let end = c.end as usize;
                let token = self.text.get(start..end).unwrap_or_default().to_string();
                start = end;
                Clue { token, prob: c.prob, spam: c.spam, ham: c.ham, weight: c.weight }
            })
            .collect()
    }
}

/// Counts for one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Minute {
    /// Unix seconds at the minute's start.
    pub t: u64,
    pub checks: u64,
    pub learns: u64,
    pub spam: u64,
    pub ham: u64,
    pub unsure: u64,
}

/// A stage's last failure.
#[derive(Debug, Clone, PartialEq)]
pub struct StageError {
    pub at: f64,
    pub message: String,
}

#[derive(Default)]
struct Inner {
    entries: VecDeque<Entry>,
    next_id: u64,
    kept_bytes: usize,
    minutes: VecDeque<Minute>,
    actions: BTreeMap<&'static str, u64>,
    errors: BTreeMap<&'static str, StageError>,
}

/// The ring of recent checks and the per-minute counts.
pub struct History {
    settings: Settings,
    inner: Mutex<Inner>,
}

/// What a check leaves for the history to record.
pub struct Check<'a> {
    pub via: &'static str,
    pub raw: Vec<u8>,
    pub user: Option<&'a str>,
    pub env: Option<&'a Envelope>,
    pub score: &'a Score,
    pub report: Option<&'a Report>,
}

/// The stage a failing rule belongs to (the console's stage table), with
/// the rules that mean the stage itself failed (not the sender).
fn failing_stage(rule: &str) -> Option<&'static str> {
    match rule {
        "DNSBL_ERROR" => Some("dnsbl"),
        "SPF_TEMPERROR" => Some("spf"),
        "DKIM_TEMPERROR" | "DMARC_ERROR" => Some("dkim"),
        "AV_ERROR" => Some("antivirus"),
        _ => None,
    }
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `user@domain` as the privacy setting keeps it.
fn address(a: &str, keep: Addresses) -> Option<String> {
    let a = a.trim().trim_start_matches('<').trim_end_matches('>');
    if a.is_empty() {
        return None;
    }
    let a: String = a.chars().take(256).collect();
    match keep {
        Addresses::Full => Some(a),
        Addresses::Domain => Some(a.rsplit_once('@').map_or(a.as_str(), |(_, d)| d).to_string()),
        Addresses::None => None,
    }
}

impl History {
    pub fn new(settings: Settings) -> History {
        History { settings: Settings { capacity: settings.capacity.max(1), ..settings }, inner: Mutex::new(Inner::default()) }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counts, never broken
        // invariants that matter more than showing them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a check; returns its id.
    pub fn record(&self, c: Check<'_>) -> u64 {
        let at = now();
        let privacy = self.settings.privacy;
        let head = parse_head(&c.raw, privacy.subjects || privacy.addresses != Addresses::None);
        let sender = match c.env {
            Some(e) if e.known.mail_from && !e.mail_from.is_empty() => address(&e.mail_from, privacy.addresses),
            _ => head.from.as_deref().and_then(|a| address(a, privacy.addresses)),
        };
        let rcpt = match c.env.and_then(|e| e.rcpt_to.first().map(|r| (r, e.rcpt_to.len()))) {
            Some((first, n)) => address(first, privacy.addresses).map(|a| if n > 1 { format!("{a} (+{})", n - 1) } else { a }),
            None => head.to.as_deref().and_then(|a| address(a, privacy.addresses)),
        };
        let subject = if privacy.subjects { head.subject } else { None };
        let fired: Vec<Fired> = c
            .report
            .map(|r| r.outcomes.iter().map(|o| Fired { rule: o.rule, detail: o.detail.clone(), action: o.action.name() }).collect())
            .unwrap_or_default();
        let kept = (self.settings.message_bytes >= c.raw.len() && !c.raw.is_empty()).then(|| Kept {
            raw: Arc::new(c.raw),
            user: c.user.map(str::to_string),
            env: c.env.cloned(),
        });
        let s = c.score;
        let mut g = self.lock();
        let id = g.next_id;
        g.next_id += 1;
        for f in &fired {
            if let Some(stage) = failing_stage(f.rule) {
                g.errors.insert(stage, StageError { at, message: format!("{}: {}", f.rule, f.detail) });
            }
        }
        if s.store_error {
            g.errors.insert("store", StageError { at, message: "the model could not be read (STORE_ERROR)".into() });
        }
        let m = minute(&mut g.minutes, at);
        m.checks += 1;
        match s.verdict {
            Verdict::Spam => m.spam += 1,
            Verdict::Ham => m.ham += 1,
            Verdict::Unsure => m.unsure += 1,
        }
        if let Some(k) = &kept {
            g.kept_bytes += k.raw.len();
        }
        g.entries.push_back(Entry {
            id,
            at,
            via: c.via,
            sender,
            rcpt,
            subject,
            probability: s.probability,
            verdict: s.verdict,
            action: None,
            fired,
            clues: Clues::new(&s.clues),
            logits: [s.fisher_logit, s.lr_logit, s.gram_logit],
            tokens: s.tokens,
            learned: None,
            kept,
        });
        // What leaves the ring is freed after the lock is let go.
        let mut gone = Vec::new();
        while g.entries.len() > self.settings.capacity {
            if let Some(old) = g.entries.pop_front() {
                g.kept_bytes -= old.kept.as_ref().map_or(0, |k| k.raw.len());
                gone.push(old);
            }
        }
        // Over the byte budget: the oldest kept messages go (their entries stay).
        let mut dropped = Vec::new();
        let mut i = 0;
        while g.kept_bytes > self.settings.message_bytes && i < g.entries.len() {
            if let Some(k) = g.entries[i].kept.take() {
                g.kept_bytes -= k.raw.len();
                dropped.push(k);
            }
            i += 1;
        }
        drop(g);
        drop((gone, dropped));
        id
    }

    /// Notes what the front end did with check `id`.
    pub fn set_action(&self, id: u64, action: &'static str) {
        let mut g = self.lock();
        *g.actions.entry(action).or_default() += 1;
        if let Some(e) = find(&mut g.entries, id) {
            e.action = Some(action);
        }
    }

    /// Counts a learn that changed the model.
    pub fn learned(&self) {
        let mut g = self.lock();
        minute(&mut g.minutes, now()).learns += 1;
    }

    /// Marks check `id` as learned from the console (`spam`, `ham`, `forget`).
    pub fn mark(&self, id: u64, how: &'static str) {
        if let Some(e) = find(&mut self.lock().entries, id) {
            e.learned = Some(how);
        }
    }

    /// The newest `limit` entries, newest first (without their clues).
    pub fn recent(&self, limit: usize) -> Vec<Entry> {
        self.lock().entries.iter().rev().take(limit).map(Entry::shown).collect()
    }

    /// Entry `id` (with its message, if kept), if still in the ring.
    pub fn get(&self, id: u64) -> Option<Entry> {
        find(&mut self.lock().entries, id).map(|e| e.clone())
    }

    /// Checks kept now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One count per minute from `since` (unix seconds, rounded down to
    /// the minute, at most [`MINUTES`] ago) to now, oldest first; minutes
    /// without work are zeros.
    pub fn minutes(&self, since: f64) -> Vec<Minute> {
        let now = now() as u64 / 60 * 60;
        let first = (since as u64 / 60 * 60).max(now.saturating_sub(60 * (MINUTES as u64 - 1)));
        let g = self.lock();
        let mut have = g.minutes.iter().filter(|m| m.t >= first).peekable();
        let mut out = Vec::new();
        let mut t = first;
        while t <= now {
            match have.peek() {
                Some(m) if m.t == t => out.push(*have.next().unwrap_or(&Minute::default())),
                _ => out.push(Minute { t, ..Minute::default() }),
            }
            t += 60;
        }
        out
    }

    /// How many checks ended in each action.
    pub fn actions(&self) -> BTreeMap<&'static str, u64> {
        self.lock().actions.clone()
    }

    /// Each stage's last failure: `dnsbl`, `spf`, `dkim`, `antivirus`, `store`.
    pub fn errors(&self) -> BTreeMap<&'static str, StageError> {
        self.lock().errors.clone()
    }
}

impl Entry {
    /// The entry without its clues (for listings; a kept message is shared).
    fn shown(&self) -> Entry {
        Entry {
            id: self.id,
            at: self.at,
            via: self.via,
            sender: self.sender.clone(),
            rcpt: self.rcpt.clone(),
            subject: self.subject.clone(),
            probability: self.probability,
            verdict: self.verdict,
            action: self.action,
            fired: self.fired.clone(),
            clues: Clues::default(),
            logits: self.logits,
            tokens: self.tokens,
            learned: self.learned,
            kept: self.kept.clone(),
        }
    }

    /// Whether its message is still kept (it can be learned).
    pub fn learnable(&self) -> bool {
        self.kept.is_some()
    }
}

/// Entry `id` in a ring whose ids rise by one from front to back.
fn find(entries: &mut VecDeque<Entry>, id: u64) -> Option<&mut Entry> {
    let first = entries.front()?.id;
    let i = usize::try_from(id.checked_sub(first)?).ok()?;
    entries.get_mut(i).filter(|e| e.id == id)
}

/// The counts of the minute holding `at`, made if new; older than
/// [`MINUTES`] minutes are dropped.
fn minute(minutes: &mut VecDeque<Minute>, at: f64) -> &mut Minute {
    let t = at as u64 / 60 * 60;
    if minutes.back().is_none_or(|m| m.t < t) {
        minutes.push_back(Minute { t, ..Minute::default() });
        while minutes.front().is_some_and(|m| m.t + 60 * MINUTES as u64 <= t) {
            minutes.pop_front();
        }
    }
    // A clock stepped back: count it in the newest minute.
    let last = minutes.len() - 1;
    &mut minutes[last]
}

/// One parser for every check (`MessageParser::new()` builds its table of
/// header parsers each time it is called).
static PARSER: std::sync::LazyLock<mail_parser::MessageParser> = std::sync::LazyLock::new(mail_parser::MessageParser::new);

/// What the history shows from a message's header block.
#[derive(Default)]
struct Head {
    from: Option<String>,
    to: Option<String>,
    subject: Option<String>,
}

/// The first From and To addresses and the decoded subject (at most 200
/// characters), from the header block alone. Only these three fields go
/// through mail-parser, not the whole block (its Received fields, dates and
/// the rest would be parsed too).
fn parse_head(raw: &[u8], wanted: bool) -> Head {
    if !wanted {
        return Head::default();
    }
    let head = match crate::message::header_end(raw) {
        Some(end) => &raw[..end],
        None => &raw[..raw.len().min(64 << 10)],
    };
    let [from, to, subject] = crate::digest::header_values(head, &["from", "to", "subject"]);
    let mut block = Vec::with_capacity(256);
    for (name, value) in [("From", from), ("To", to), ("Subject", subject)] {
        if let Some(v) = value {
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(&v[..v.len().min(4096)]);
            block.extend_from_slice(b"\r\n");
        }
    }
    block.extend_from_slice(b"\r\n");
    let Some(msg) = PARSER.parse_headers(&block) else { return Head::default() };
    let first = |a: Option<&mail_parser::Address<'_>>| a.and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_string);
    Head { from: first(msg.from()), to: first(msg.to()), subject: msg.subject().map(|s| s.chars().filter(|c| !c.is_control()).take(200).collect()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(p: f64, verdict: Verdict) -> Score {
        Score { probability: p, verdict, store_error: false, ..Score::store_error(3) }
    }

    fn history(capacity: usize, message_bytes: usize, addresses: Addresses, subjects: bool) -> History {
        History::new(Settings { capacity, message_bytes, privacy: Privacy { addresses, subjects } })
    }

    const MAIL: &[u8] = b"From: Alice <alice@example.org>\r\nTo: bob@corp.example\r\nSubject: =?utf-8?q?caf=C3=A9?= plans\r\n\r\nHello\r\n";

    fn check<'a>(raw: &[u8], s: &'a Score) -> Check<'a> {
        Check { via: "http", raw: raw.to_vec(), user: None, env: None, score: s, report: None }
    }

    #[test]
    fn clues_come_back_as_they_went_in() {
        let clue = |token: &str, prob: f64| Clue { token: token.into(), prob, spam: 3, ham: 1, weight: prob as f32 / 2.0 };
        let clues = vec![clue("viagra", 0.99), clue("", 0.5), clue("café", 0.02), clue("url:example.org", 0.9)];
        let kept = Clues::new(&clues);
        let back = kept.to_vec();
        assert_eq!(back.len(), clues.len());
        for (a, b) in back.iter().zip(&clues) {
            assert_eq!((a.token.as_str(), a.prob, a.spam, a.ham, a.weight), (b.token.as_str(), b.prob, b.spam, b.ham, b.weight));
        }
        assert!(Clues::new(&[]).is_empty() && Clues::new(&[]).to_vec().is_empty());
    }

    #[test]
    fn keeps_the_last_n_newest_first_and_finds_them_by_id() {
        let h = history(3, 1 << 20, Addresses::Full, true);
        let s = score(0.9, Verdict::Spam);
        let ids: Vec<u64> = (0..5).map(|_| h.record(check(MAIL, &s))).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4]);
        assert_eq!(h.recent(10).iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 3, 2]);
        assert!(h.get(1).is_none(), "fell out of the ring");
        let e = h.get(3).unwrap();
        assert_eq!(e.sender.as_deref(), Some("alice@example.org"));
        assert_eq!(e.rcpt.as_deref(), Some("bob@corp.example"));
        assert_eq!(e.subject.as_deref(), Some("café plans"));
        assert!(e.learnable());
        assert!(h.recent(1)[0].clues.is_empty() && h.recent(1)[0].learnable(), "listings carry no clues");
    }

    #[test]
    fn privacy_settings_are_honoured() {
        let s = score(0.1, Verdict::Ham);
        let h = history(10, 0, Addresses::Domain, false);
        let e = h.get(h.record(check(MAIL, &s))).unwrap();
        assert_eq!((e.sender.as_deref(), e.rcpt.as_deref(), e.subject.as_deref()), (Some("example.org"), Some("corp.example"), None));
        assert!(!e.learnable(), "no bytes budget: nothing kept");
        let h = history(10, 0, Addresses::None, false);
        let e = h.get(h.record(check(MAIL, &s))).unwrap();
        assert_eq!((e.sender, e.rcpt), (None, None));
    }

    #[test]
    fn the_envelope_names_sender_and_recipients_first() {
        let s = score(0.1, Verdict::Ham);
        let h = history(10, 1 << 20, Addresses::Full, true);
        let env = Envelope {
            mail_from: "bounce@lists.example".into(),
            rcpt_to: vec!["<erin@corp.example>".into(), "<frank@corp.example>".into()],
            known: crate::envelope::Known::ALL,
            ..Envelope::default()
        };
        let e = h.get(h.record(Check { env: Some(&env), ..check(MAIL, &s) })).unwrap();
        assert_eq!(e.sender.as_deref(), Some("bounce@lists.example"));
        assert_eq!(e.rcpt.as_deref(), Some("erin@corp.example (+1)"));
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_messages_not_the_entries() {
        let s = score(0.5, Verdict::Unsure);
        let h = history(10, 2 * MAIL.len(), Addresses::Full, true);
        for _ in 0..3 {
            h.record(check(MAIL, &s));
        }
        let kept: Vec<bool> = (0..3).map(|i| h.get(i).unwrap().learnable()).collect();
        assert_eq!(kept, vec![false, true, true]);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn minutes_count_checks_learns_and_verdicts_with_gaps_filled() {
        let h = history(10, 0, Addresses::Full, true);
        h.record(check(MAIL, &score(0.99, Verdict::Spam)));
        h.record(check(MAIL, &score(0.01, Verdict::Ham)));
        h.learned();
        let since = now() - 300.0;
        let m = h.minutes(since);
        assert!((5..=6).contains(&m.len()), "{}", m.len());
        let last = m.last().unwrap();
        assert_eq!((last.checks, last.learns, last.spam, last.ham, last.unsure), (2, 1, 1, 1, 0));
        assert!(m.windows(2).all(|w| w[1].t == w[0].t + 60));
        assert_eq!(h.minutes(0.0).len(), MINUTES, "at most six hours");
    }

    #[test]
    fn actions_and_stage_errors_are_remembered() {
        let h = history(10, 0, Addresses::Full, true);
        let id = h.record(check(MAIL, &score(0.99, Verdict::Spam)));
        h.set_action(id, "reject");
        h.mark(id, "ham");
        let e = h.get(id).unwrap();
        assert_eq!((e.action, e.learned), (Some("reject"), Some("ham")));
        assert_eq!(h.actions().get("reject"), Some(&1));
        let broken = Score::store_error(3);
        h.record(check(MAIL, &broken));
        assert!(h.errors().contains_key("store"));
    }

    #[test]
    fn hostile_heads_do_not_break_recording() {
        let h = history(10, 1 << 20, Addresses::Full, true);
        let s = score(0.5, Verdict::Unsure);
        for raw in [&b""[..], b"\r\n\r\n", b"Subject: \x00\x01\x1b[31m red\r\n\r\n", &[0xffu8; 100][..]] {
            let e = h.get(h.record(check(raw, &s))).unwrap();
            assert!(e.subject.as_deref().is_none_or(|s| !s.chars().any(char::is_control)));
        }
    }
}
