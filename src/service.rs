//! What every front end of `hamlet serve` shares: one [`Engine`] over one
//! database, the envelope checker, per-user models, auto-learn, counters.
//! The HTTP API, the SPAMD listener and the Postfix policy service each
//! hold an `Arc<Service>`; none of them knows the others (the `serve` module
//! binds them). A redb file can be opened by one process only, so the
//! front ends must share the engine rather than each open the database.
//!
//! Every request's CPU work (tokenizing, scoring, the write transaction of
//! a learn) runs on tokio's blocking pool through [`Service::blocking`], so
//! the reactor only moves bytes. Scoring reads a redb snapshot and never
//! waits for a learn; learns are serialized by redb's single writer, and a
//! learn's transaction is committed before its reply is sent.

use crate::Class;
use crate::autolearn::AutoLearn;
use crate::classify::Score;
use crate::engine::{Action, Engine, LearnOutcome, Prepared};
use crate::envelope::antivirus::{Antivirus, Scan};
use crate::envelope::greylist::MemoryGreyStore;
use crate::envelope::{Checker, Envelope, Report};
use crate::history::History;
use crate::metrics::Metrics;
use crate::store::{Db, TokenStore};
use crate::users::Users;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Adds the envelope's tokens to a prepared message: the envelope checks'
/// outcomes, and the RCPT TO addresses as the Delivered-To tokens the stored
/// message will carry (it does not carry the header yet at SMTP time), so a
/// check in the SMTP dialogue and a later learn from a folder count the same.
fn add_envelope_tokens<S: TokenStore>(e: &Engine<S>, p: &mut Prepared, report: Option<&Report>, env: Option<&Envelope>) {
    if let Some(r) = report {
        p.add_tokens(r.tokens());
    }
    if let Some(env) = env {
        p.add_tokens(e.tokenizer.recipient_tokens(&env.rcpt_to));
    }
}

/// Logs that a check went on without the model, at most once a minute (a
/// Redis outage under load would otherwise log every check).
fn store_error_logged(err: &crate::Error) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60 && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(error = %err, "the model is unreachable: checks answer unsure (STORE_ERROR) until it is back");
    }
}

/// What every request handler, of every front end, shares. Made by
/// [`Service::builder`] (from a configuration: the `build` module).
pub struct Service<S: TokenStore + 'static> {
    engine: Engine<S>,
    /// Bearer token the HTTP learn endpoints require (`None`: learning is
    /// open, allowed only on loopback, see `Config::check`).
    learn_token: Option<String>,
    started: Instant,
    /// Per-request time limit for the engine's work.
    timeout: Duration,
    checks: AtomicU64,
    learns: AtomicU64,
    metrics: Metrics,
    /// Per-user models, when configured.
    users: Option<Users>,
    /// Auto-learn rule (`None`: off) and the queue to its writer, which
    /// [`Service::start_autolearn`] sets up.
    autolearn: Option<AutoLearn>,
    autolearn_tx: std::sync::OnceLock<tokio::sync::mpsc::Sender<AutoLearnItem>>,
    /// Envelope checks for requests that carry an envelope (HTTP headers).
    /// No greylisting here: that belongs to the SMTP transaction (the
    /// policy service), not to scoring a message already received.
    envelope: Checker<MemoryGreyStore>,
    /// clamd, when `[antivirus]` is on.
    antivirus: Option<Antivirus>,
    /// The console's record of recent checks, when `[ui]` is on.
    history: Option<History>,
}

/// Builds a [`Service`]: the engine, then whatever differs from the
/// defaults (no learn token, 30 s per request, no per-user models, no
/// auto-learn, envelope checks with the default rules and no DNS lists).
pub struct ServiceBuilder<S: TokenStore + 'static> {
    engine: Engine<S>,
    learn_token: Option<String>,
    timeout: Duration,
    users: Option<Users>,
    autolearn: Option<AutoLearn>,
    envelope: Option<Checker<MemoryGreyStore>>,
    antivirus: Option<Antivirus>,
    history: Option<History>,
}

impl<S: TokenStore + 'static> ServiceBuilder<S> {
    /// The bearer token the HTTP learn endpoints require.
    pub fn learn_token(mut self, token: Option<String>) -> Self {
        self.learn_token = token;
        self
    }
    /// The per-request time limit for the engine's work.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Per-user models layered over the shared one.
    pub fn users(mut self, users: Option<Users>) -> Self {
        self.users = users;
        self
    }
    /// The auto-learn rule (`None`: off).
    pub fn autolearn(mut self, rule: Option<AutoLearn>) -> Self {
        self.autolearn = rule;
        self
    }
    /// The envelope checker for requests that carry an envelope.
    pub fn envelope(mut self, checker: Checker<MemoryGreyStore>) -> Self {
        self.envelope = Some(checker);
        self
    }
    /// The antivirus scanner (`None`: off).
    pub fn antivirus(mut self, av: Option<Antivirus>) -> Self {
        self.antivirus = av;
        self
    }
    /// The record of recent checks the console shows (`None`: off).
    pub fn history(mut self, history: Option<History>) -> Self {
        self.history = history;
        self
    }
    pub fn build(self) -> crate::Result<Service<S>> {
        let envelope = match self.envelope {
            Some(c) => c,
            None => Checker::new(Default::default(), None)?,
        };
        Ok(Service {
            engine: self.engine,
            learn_token: self.learn_token,
            started: Instant::now(),
            timeout: self.timeout,
            checks: AtomicU64::new(0),
            learns: AtomicU64::new(0),
            metrics: Metrics::default(),
            users: self.users,
            autolearn: self.autolearn,
            autolearn_tx: std::sync::OnceLock::new(),
            envelope,
            antivirus: self.antivirus,
            history: self.history,
        })
    }
}

/// A check's answer: the score, the envelope's report, and its entry in
/// the console's history (when `[ui]` is on).
#[derive(Debug)]
pub struct Checked {
    pub score: Score,
    pub report: Option<Report>,
    pub entry: Option<u64>,
}

/// A message the service decided to auto-learn.
struct AutoLearnItem {
    user: Option<String>,
    prepared: Prepared,
    class: Class,
}

/// Auto-learns waiting beyond this are dropped (and counted): a check never
/// waits for learning.
const AUTOLEARN_QUEUE: usize = 1024;

/// Why [`Service::blocking`] gave no value.
#[derive(Debug)]
pub enum JobError {
    /// The time limit passed (the job may still finish; a learn may commit).
    TimedOut,
    /// A learn for a user without a model, past the per-user caps (the
    /// one-line reason, for the client: it is not an internal error).
    UsersFull(String),
    /// The model's store cannot be reached (Redis down or too slow): try
    /// again later (HTTP 503, SPAMD `EX_TEMPFAIL`); nothing was applied.
    StoreUnavailable(String),
    /// The engine failed, or the job panicked.
    Failed(String),
    /// A learn of a message the antivirus found a virus in (its name): the
    /// Bayes side never learns one.
    Infected(String),
}

impl<S: TokenStore + 'static> Service<S> {
    /// Starts building a service around `engine`.
    pub fn builder(engine: Engine<S>) -> ServiceBuilder<S> {
        ServiceBuilder {
            engine,
            learn_token: None,
            timeout: Duration::from_secs(30),
            users: None,
            autolearn: None,
            envelope: None,
            antivirus: None,
            history: None,
        }
    }

    pub fn engine(&self) -> &Engine<S> {
        &self.engine
    }

    /// The envelope checker of requests that carry an envelope.
    pub fn envelope_checker(&self) -> &Checker<MemoryGreyStore> {
        &self.envelope
    }

    /// The console's record of recent checks, when `[ui]` is on.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// The antivirus scanner, when `[antivirus]` is on.
    pub fn antivirus(&self) -> Option<&Antivirus> {
        self.antivirus.as_ref()
    }

    /// The bearer token learning requires, if any.
    pub fn learn_token(&self) -> Option<&str> {
        self.learn_token.as_deref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The per-request time limit for the engine's work.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Time since the service was built.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Messages checked, and learns that changed the model, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.checks.load(Ordering::Relaxed), self.learns.load(Ordering::Relaxed))
    }

    /// Per-user models on disk (0 without `users_dir`).
    pub fn user_models(&self) -> u64 {
        self.users.as_ref().map_or(0, |u| u.model_count())
    }

    /// The DNS list answers for an envelope (async; before the blocking part).
    async fn lookups(&self, env: Option<&Envelope>) -> crate::envelope::Lookups {
        match env {
            Some(e) => self.envelope.lookups(e).await,
            None => Default::default(),
        }
    }

    /// The envelope's outcomes and DKIM/DMARC's, and the tokens to add
    /// for them.
    fn envelope_report(
        &self,
        env: Option<&Envelope>,
        lookups: &crate::envelope::Lookups,
        auth: Option<crate::envelope::dkim::AuthReport>,
        scan: Option<Scan>,
    ) -> crate::Result<Option<Report>> {
        let report = env.map(|e| self.envelope.check_with(e, lookups, crate::envelope::now())).transpose()?;
        let report = match auth {
            Some(a) => Some(self.envelope.add_auth(report, a)),
            None => report,
        };
        Ok(match (scan, &self.antivirus) {
            (Some(scan), Some(av)) => Some(Report::with_antivirus(report, av, scan)),
            _ => report,
        })
    }

    /// The antivirus scan of a message (`None` when antivirus is off),
    /// counted in the metrics.
    async fn scan(&self, raw: &[u8]) -> Option<Scan> {
        let av = self.antivirus.as_ref()?;
        let start = Instant::now();
        let scan = av.scan(raw).await;
        if let Scan::Error(e) = &scan {
            tracing::warn!(error = %e, "antivirus scan failed");
        }
        self.metrics.antivirus(scan.name(), start.elapsed().as_secs_f64());
        Some(scan)
    }

    /// The user's model to layer over the shared one: `None` without a
    /// name, without per-user models, or for an ignored name.
    fn user_store(&self, user: Option<&str>, create: bool) -> crate::Result<Option<Arc<Db>>> {
        match (user, &self.users) {
            (Some(u), Some(users)) => users.get(u, create),
            _ => Ok(None),
        }
    }

    /// Scores a message, for `user` if per-user models are on; with an
    /// envelope, its outcomes are checked, reported, and their tokens join
    /// the message's (so the classifier weighs them as it learns). `via`
    /// names the front end, for the console's history.
    pub async fn check(self: &Arc<Self>, via: &'static str, user: Option<String>, raw: Vec<u8>, env: Option<Envelope>) -> Result<Checked, JobError> {
        let lookups = self.lookups(env.as_ref()).await;
        self.check_looked_up(via, user, raw, env, lookups).await
    }

    /// Notes what a front end did with a check's verdict (`reject`, `add
    /// header`, ...), for the console.
    pub fn acted(&self, checked: &Checked, action: &'static str) {
        if let (Some(h), Some(id)) = (&self.history, checked.entry) {
            h.set_action(id, action);
        }
    }

    /// [`Service::check`] with the envelope's DNS answers already in hand
    /// (the milter looks them up at their SMTP stages).
    pub async fn check_looked_up(
        self: &Arc<Self>,
        via: &'static str,
        user: Option<String>,
        raw: Vec<u8>,
        env: Option<Envelope>,
        lookups: crate::envelope::Lookups,
    ) -> Result<Checked, JobError> {
        let me = self.clone();
        // The console's history keeps who asked, and with what envelope.
        let asked = self.history.as_ref().map(|_| (user.clone(), env.clone()));
        let (auth, scan) = tokio::join!(self.envelope.authenticate(&raw, env.as_ref(), lookups.spf.as_ref()), self.scan(&raw));
        // An infected message is spam whatever its tokens say, and is never
        // auto-learned.
        let infected = scan.as_ref().is_some_and(|s| s.virus().is_some());
        let (mut score, report, auto, raw) = self
            .blocking(move |e| {
                // A user's model that cannot be opened must not stop mail
                // being scored: the shared model alone, and a warning.
                let u = me.user_store(user.as_deref(), false).unwrap_or_else(|err| {
                    tracing::warn!(user = user.as_deref().unwrap_or(""), error = %err, "per-user model unavailable; scoring with the shared model");
                    None
                });
                let report = me.envelope_report(env.as_ref(), &lookups, auth, scan)?;
                let mut p = e.prepare(&raw);
                add_envelope_tokens(e, &mut p, report.as_ref(), env.as_ref());
                let tokens = p.tokens.len();
                let scored = || -> crate::Result<_> {
                    let layer = u.as_deref().map(|s| s as &dyn TokenStore);
                    // One view of each model for the score and the auto-learn
                    // decision: a remote store reads both in one round trip.
                    let base = e.store().read()?;
                    let top = layer.map(|l| l.read()).transpose()?;
                    if me.autolearn.is_some() {
                        base.want_journal(&p.digest);
                        if let Some(t) = &top {
                            t.want_journal(&p.digest);
                        }
                    }
                    let score = e.score_layered_on(&*base, top.as_deref(), &p)?;
                    // Auto-learn, judged on the counts the score came from, into
                    // the model the score came from: a user's own (only if it
                    // exists: a check never creates one), else the shared one.
                    let target = match (&me.users, user.as_deref()) {
                        (Some(users), Some(name)) if !users.ignored(name) => u.is_some().then(|| Some(name.to_string())),
                        _ => Some(None),
                    };
                    let auto = match (&me.autolearn, target) {
                        (Some(rule), Some(target)) => {
                            let mut learned = base.state()?.messages;
                            // A message learned before (by a user's correction, or
                            // auto-learned already) is never auto-learned again:
                            // a rescan must not undo a correction.
                            let mut known = base.journal(&p.digest)?.is_some();
                            if let (Some(top), Some(_)) = (&top, &target) {
                                let m = top.state()?.messages;
                                learned = crate::store::Totals { spam: learned.spam + m.spam, ham: learned.ham + m.ham };
                                known = top.journal(&p.digest)?.is_some();
                            }
                            if known || infected { None } else { rule.decide(score.probability, learned).map(|c| (p, c, target)) }
                        }
                        _ => None,
                    };
                    Ok((score, auto))
                };
                // The model unreachable (Redis down or slow): the message is
                // scored with no opinion, never held up or refused.
                let (score, auto) = match scored() {
                    Err(err) if err.is_store_unavailable() => {
                        store_error_logged(&err);
                        (Score::store_error(tokens), None)
                    }
                    other => other?,
                };
                Ok((score, report, auto, raw))
            })
            .await?;
        if infected {
            score.verdict = crate::classify::Verdict::Spam;
            score.probability = 1.0;
            // As far as a finite logit goes (1 - p below f64's precision).
            score.logit = score.logit.max(40.0);
        }
        if let Some((prepared, class, user)) = auto {
            self.queue_autolearn(AutoLearnItem { user, prepared, class });
        }
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.metrics.verdict(score.verdict.name());
        let entry = match (&self.history, asked) {
            (Some(h), Some((user, env))) => {
                Some(h.record(crate::history::Check { via, raw, user: user.as_deref(), env: env.as_ref(), score: &score, report: report.as_ref() }))
            }
            _ => None,
        };
        Ok(Checked { score, report, entry })
    }

    /// Learns (`Some(class)`) or unlearns (`None`) a message: into `user`'s
    /// model if per-user models are on and the name is not ignored, else
    /// into the shared model.
    /// With an envelope, its outcome tokens are learned with the message
    /// (send the same envelope when unlearning it).
    pub async fn train(
        self: &Arc<Self>,
        user: Option<String>,
        raw: Vec<u8>,
        class: Option<Class>,
        env: Option<Envelope>,
    ) -> Result<LearnOutcome, JobError> {
        // An explicit learn of an infected message is refused, and says so
        // (an unlearn is always allowed).
        if class.is_some()
            && let Some(Scan::Virus(name)) = self.scan(&raw).await
        {
            self.metrics.learn("infected");
            return Err(JobError::Infected(name));
        }
        let me = self.clone();
        let lookups = self.lookups(env.as_ref()).await;
        let auth = self.envelope.authenticate(&raw, env.as_ref(), lookups.spf.as_ref()).await;
        let outcome = self
            .blocking(move |e| {
                let mut p = e.prepare(&raw);
                let report = me.envelope_report(env.as_ref(), &lookups, auth, None)?;
                add_envelope_tokens(e, &mut p, report.as_ref(), env.as_ref());
                let action = class.map_or(Action::Unlearn, Action::Learn);
                let batch = [(p, action)];
                let out = match me.user_store(user.as_deref(), true)? {
                    Some(u) => e.train_in(&*u, &batch)?,
                    None => e.train(&batch)?,
                };
                Ok(out[0])
            })
            .await?;
        if outcome.changed() {
            self.learned();
        }
        self.metrics.learn(outcome.name());
        Ok(outcome)
    }

    /// Starts the auto-learn writer (when auto-learn is on): one task that
    /// takes queued auto-learns in batches of up to 256 and learns each
    /// batch in one write transaction per model. Call once, inside the
    /// runtime; auto-learns still queued at shutdown are not learned.
    pub fn start_autolearn(self: &Arc<Self>) {
        if self.autolearn.is_none() {
            return;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<AutoLearnItem>(AUTOLEARN_QUEUE);
        if self.autolearn_tx.set(tx).is_err() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let n = batch.len();
                let inner = me.clone();
                let done = me
                    .blocking(move |e| {
                        let mut by_user: std::collections::BTreeMap<Option<String>, Vec<(Prepared, Action)>> = Default::default();
                        for item in batch {
                            by_user.entry(item.user).or_default().push((item.prepared, Action::AutoLearn(item.class)));
                        }
                        let mut outcomes = Vec::new();
                        for (user, items) in by_user {
                            outcomes.extend(match inner.user_store(user.as_deref(), true)? {
                                Some(u) => e.train_in(&*u, &items)?,
                                None => e.train(&items)?,
                            });
                        }
                        Ok(outcomes)
                    })
                    .await;
                match done {
                    Ok(outcomes) => {
                        for o in outcomes {
                            if o.changed() {
                                me.learned();
                            }
                            me.metrics.learn(if o.changed() { "autolearned" } else { "autolearn skipped" });
                        }
                    }
                    Err(e) => tracing::warn!(messages = n, error = ?e, "auto-learn batch failed"),
                }
            }
        });
    }

    /// Counts a learn that changed a model.
    fn learned(&self) {
        self.learns.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.history {
            h.learned();
        }
    }

    fn queue_autolearn(&self, item: AutoLearnItem) {
        if let Some(tx) = self.autolearn_tx.get()
            && tx.try_send(item).is_err()
        {
            self.metrics.learn("autolearn dropped");
        }
    }

    /// Runs the engine's (blocking) work off the reactor, within the time limit.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine<S>) -> crate::Result<T> + Send + 'static,
    {
        let me = self.clone();
        let job = tokio::task::spawn_blocking(move || f(&me.engine));
        match tokio::time::timeout(self.timeout, job).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e @ crate::Error::UsersFull { .. }))) => {
                self.metrics.user_refused();
                Err(JobError::UsersFull(e.to_string()))
            }
            Ok(Ok(Err(e))) if e.is_store_unavailable() => Err(JobError::StoreUnavailable(e.to_string())),
            Ok(Ok(Err(e))) => Err(JobError::Failed(e.to_string())),
            Ok(Err(join)) => Err(JobError::Failed(join.to_string())),
            Err(_) => Err(JobError::TimedOut),
        }
    }
}
