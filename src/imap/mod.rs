//! `hamlet imap-train`: learn from users' IMAP folders. Mail the user put in
//! Junk is learned as spam; mail in their ham folders (and, optionally, what
//! they sent) as ham.
//!
//! * **Idempotent.** For each (account, folder) the job remembers the
//!   folder's UIDVALIDITY and the highest UID it has read, in its own small
//!   redb file ([`State`]), and reads only newer UIDs. The engine's journal,
//!   keyed by message digest, does the rest: a message seen again (a re-run
//!   after a crash, a folder whose UIDVALIDITY changed and is read afresh)
//!   is "already learned" and changes nothing.
//! * **Move-aware.** A message moved from Junk to a ham folder gets a new UID
//!   there, is read as ham, and the journal relearns it: its spam counts
//!   are removed and ham counts added. Folders not listed (Trash) are never
//!   read, so a message deleted from Junk is not learned as ham.
//! * **Resumable.** Each batch is fetched, learned, then committed to the
//!   state; an interrupted run goes on from the last batch.
//! * **One learning path.** Directly into the redb database when no one
//!   holds it; through `hamlet serve`'s HTTP learn endpoint (with its token)
//!   when the service has it open.

use crate::config::imap::{Account, After, ImapConfig, Tls};
use crate::engine::{Action, Engine, LearnOutcome, Prepared};
use crate::store::{Db, TokenStore};
use crate::users::Users;
use crate::{Class, Error, Result};
use futures_util::TryStreamExt;
use redb::{ReadableDatabase, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// A connection: plain TCP or TLS, behind one type for async-imap.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}
type Session = async_imap::Session<Box<dyn Io>>;

const FOLDERS: TableDefinition<&str, (u32, u32)> = TableDefinition::new("folders");

/// What the job remembers: per (account, folder), UIDVALIDITY and the
/// highest UID read.
pub struct State {
    db: redb::Database,
}

impl State {
    pub fn open(path: &Path) -> Result<State> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = redb::Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Invalid(format!("{} is in use: another hamlet imap-train is running", path.display())),
            e => Error::storage(path, e),
        })?;
        let tx = db.begin_write()?;
        tx.open_table(FOLDERS)?;
        tx.commit()?;
        Ok(State { db })
    }

    fn key(account: &str, folder: &str) -> String {
        format!("{account}\0{folder}")
    }

    /// (UIDVALIDITY, highest UID read).
    pub fn get(&self, account: &str, folder: &str) -> Result<Option<(u32, u32)>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(FOLDERS)?;
        Ok(t.get(State::key(account, folder).as_str())?.map(|v| v.value()))
    }

    pub fn set(&self, account: &str, folder: &str, validity: u32, last: u32) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(FOLDERS)?;
            t.insert(State::key(account, folder).as_str(), (validity, last))?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Where learning goes.
// One per pass: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Learner {
    /// Straight into the database.
    Direct { engine: Engine<Db>, users: Option<Users> },
    /// Through `hamlet serve`'s HTTP API.
    Http { addr: String, token: Option<String>, timeout: Duration },
}

impl Learner {
    /// Learns `messages` as `class`, into `user`'s model if given.
    async fn learn(&self, messages: Vec<Vec<u8>>, class: Class, user: Option<&str>) -> Result<Vec<LearnOutcome>> {
        match self {
            Learner::Direct { engine, users } => tokio::task::block_in_place(|| {
                let batch: Vec<(Prepared, Action)> =
                    crate::engine::bulk::prepare_messages(&engine.tokenizer, &messages).into_iter().map(|p| (p, Action::Learn(class))).collect();
                match user {
                    None => engine.train(&batch),
                    Some(u) => {
                        let users = users.as_ref().ok_or_else(|| Error::Invalid("model = \"user\" needs users_dir in the configuration".into()))?;
                        match users.get(u, true)? {
                            Some(store) => engine.train_in(&*store as &dyn TokenStore, &batch),
                            None => engine.train(&batch),
                        }
                    }
                }
            }),
            Learner::Http { addr, token, timeout } => {
                let mut out = Vec::with_capacity(messages.len());
                for m in &messages {
                    // The digest and the tokenizer read the first MiB only,
                    // so this learns exactly what the direct path learns,
                    // and no message is too large for the service.
                    let part = &m[..m.len().min(crate::digest::DIGEST_BYTES)];
                    out.push(http_learn(addr, token.as_deref(), part, class, user, *timeout).await?);
                }
                Ok(out)
            }
        }
    }
}

/// One learn through `hamlet serve`'s HTTP API: the blocking client on
/// tokio's blocking pool, within `timeout`.
async fn http_learn(addr: &str, token: Option<&str>, raw: &[u8], class: Class, user: Option<&str>, timeout: Duration) -> Result<LearnOutcome> {
    use crate::client::{self, Answer, Failure, LearnType, Mode, Target};
    let fail = |m: String| Error::Remote(format!("learning through hamlet serve at {addr}: {m}"));
    let target = Target::Http(addr.to_string());
    let opts = client::Options { user: user.map(str::to_string), compress: false, learn_token: token.map(str::to_string) };
    let mode = Mode::Learn(match class {
        Class::Spam => LearnType::Spam,
        Class::Ham => LearnType::Ham,
    });
    let deadline = Some(Instant::now() + timeout);
    let raw = raw.to_vec();
    let answer = tokio::task::spawn_blocking(move || client::request(&target, &opts, mode, &raw, deadline))
        .await
        .map_err(|e| Error::Internal(format!("learning through hamlet serve: {e}")))?;
    match answer {
        Ok(Answer::Learned { result, .. }) => match result.as_deref() {
            Some("learned") => Ok(LearnOutcome::Learned),
            Some("relearned") => Ok(LearnOutcome::Relearned),
            Some("already learned") => Ok(LearnOutcome::AlreadyLearned),
            Some("confirmed") => Ok(LearnOutcome::Confirmed),
            other => Err(fail(format!("unexpected reply {other:?}"))),
        },
        Ok(other) => Err(fail(format!("unexpected answer {other:?}"))),
        Err(Failure::Refused(77, m)) => Err(fail(format!("{m}: set learn_token in the configuration (or HAMLET_LEARN_TOKEN)"))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// What one folder's pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FolderSummary {
    pub fetched: u64,
    pub learned: u64,
    pub relearned: u64,
    /// Already learned as this class, or not a message (no body).
    pub skipped: u64,
    /// The folder's UIDVALIDITY changed since the last run: read afresh.
    pub uidvalidity_reset: bool,
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub batch: usize,
    /// Stop after this many messages in all (resume on the next run).
    pub max_messages: Option<u64>,
    pub progress: bool,
}

/// Connects, secures and logs in, with clear errors for each step.
pub async fn connect(acct: &Account) -> Result<Session> {
    connect_inner(acct).await.map_err(|e| Error::Imap { account: acct.name.clone(), source: Box::new(e) })
}

async fn connect_inner(acct: &Account) -> Result<Session> {
    let addr = format!("{}:{}", acct.host, acct.port());
    let fail = Error::Remote;
    let unreachable = |source| Error::System { what: format!("cannot connect to {addr}"), source };
    let tcp = tokio::time::timeout(Duration::from_secs(30), tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| unreachable(std::io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
    let stream: Box<dyn Io> = match acct.tls {
        Tls::Plain => Box::new(tcp),
        Tls::Implicit => Box::new(tls_wrap(acct, tcp).await?),
        Tls::Starttls => {
            let mut c = async_imap::Client::new(tcp);
            c.read_response().await.map_err(|e| fail(format!("no IMAP greeting from {addr}: {e}")))?;
            c.run_command_and_check_ok("STARTTLS", None).await.map_err(|e| fail(format!("STARTTLS refused by {addr}: {e}")))?;
            Box::new(tls_wrap(acct, c.into_inner()).await?)
        }
    };
    let mut client = async_imap::Client::new(stream);
    if acct.tls != Tls::Starttls {
        match client.read_response().await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(fail(format!("{addr} closed the connection before greeting"))),
            Err(e) => return Err(fail(format!("no IMAP greeting from {addr}: {e}"))),
        }
    }
    let password = acct.password()?;
    client.login(&acct.user, &password).await.map_err(|(e, _)| fail(format!("login as {} failed: {e}", acct.user)))
}

async fn tls_wrap(acct: &Account, tcp: tokio::net::TcpStream) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls;
    let fail = |m: String| Error::Remote(format!("TLS with {}: {m}", acct.host));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = &acct.ca_file {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        for c in certs {
            roots.add(c.map_err(|e| fail(format!("{}: {e}", ca.display())))?).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(fail("no trusted CA certificates (install ca-certificates, or set ca_file)".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(acct.host.clone()).map_err(|e| fail(e.to_string()))?;
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| fail(format!("handshake failed: {e}")))
}

/// `1:5,7,9:12` from sorted UIDs.
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && end.checked_add(1) == Some(uids[i + 1]) {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Reads one folder's new mail and learns it.
#[allow(clippy::too_many_arguments)]
async fn train_folder(
    sess: &mut Session,
    acct: &Account,
    folder: &str,
    class: Class,
    learner: &Learner,
    state: &State,
    opts: &RunOptions,
    budget: &mut Option<u64>,
    bar: &indicatif::ProgressBar,
) -> Result<FolderSummary> {
    let fail = |m: String| Error::Remote(format!("folder {folder:?}: {m}"));
    let mbox = if acct.after == After::Leave { sess.examine(folder).await } else { sess.select(folder).await }
        .map_err(|e| fail(format!("cannot open the folder (does it exist?): {e}")))?;
    let validity = mbox.uid_validity.unwrap_or(0);
    let mut summary = FolderSummary::default();
    let mut last = match state.get(&acct.name, folder)? {
        Some((v, last)) if v == validity => last,
        Some(_) => {
            summary.uidvalidity_reset = true;
            0
        }
        None => 0,
    };
    if mbox.exists == 0 {
        state.set(&acct.name, folder, validity, last)?;
        return Ok(summary);
    }
    let found = sess.uid_search(format!("UID {}:*", last.saturating_add(1))).await.map_err(|e| fail(format!("SEARCH failed: {e}")))?;
    let mut uids: Vec<u32> = found.into_iter().filter(|&u| u > last).collect();
    uids.sort_unstable();
    if let Some(b) = budget {
        uids.truncate(usize::try_from(*b).unwrap_or(usize::MAX));
    }
    bar.inc_length(uids.len() as u64);
    for chunk in uids.chunks(opts.batch.max(1)) {
        let set = uid_set(chunk);
        let fetched: Vec<async_imap::types::Fetch> = sess
            .uid_fetch(&set, "(UID BODY.PEEK[])")
            .await
            .map_err(|e| fail(format!("FETCH failed: {e}")))?
            .try_collect()
            .await
            .map_err(|e| fail(format!("FETCH failed: {e}")))?;
        let mut messages: Vec<(u32, Vec<u8>)> =
            fetched.iter().filter_map(|f| Some((f.uid?, f.body()?.to_vec()))).filter(|(u, _)| chunk.binary_search(u).is_ok()).collect();
        messages.sort_unstable_by_key(|(u, _)| *u);
        messages.dedup_by_key(|(u, _)| *u);
        // A UID that came back without a body: expunged since the SEARCH
        // (fine, pass over it), or a failed FETCH (async-imap does not
        // report a NO): then stop before it, so the next run retries it.
        let missing: Vec<u32> = chunk.iter().copied().filter(|u| messages.binary_search_by_key(u, |(m, _)| *m).is_err()).collect();
        let mut stop_before = None;
        if !missing.is_empty() {
            let still = sess.uid_search(format!("UID {}", uid_set(&missing))).await.map_err(|e| fail(format!("SEARCH failed: {e}")))?;
            stop_before = missing.iter().copied().filter(|u| still.contains(u)).min();
        }
        if let Some(u) = stop_before {
            messages.retain(|(m, _)| *m < u);
        }
        let (empty, messages): (Vec<_>, Vec<_>) = messages.into_iter().partition(|(_, m)| m.is_empty());
        summary.fetched += (messages.len() + empty.len()) as u64;
        summary.skipped += empty.len() as u64;
        let outcomes = learner.learn(messages.into_iter().map(|(_, m)| m).collect(), class, acct.model_user()).await?;
        for o in &outcomes {
            match o {
                LearnOutcome::Learned => summary.learned += 1,
                LearnOutcome::Relearned => summary.relearned += 1,
                _ => summary.skipped += 1,
            }
        }
        let done: Vec<u32> = chunk.iter().copied().filter(|u| stop_before.is_none_or(|s| *u < s)).collect();
        if !done.is_empty() {
            after_learning(sess, acct, &uid_set(&done)).await.map_err(|e| fail(e.to_string()))?;
            last = *done.last().unwrap_or(&last);
            state.set(&acct.name, folder, validity, last)?;
        }
        if let Some(u) = stop_before {
            return Err(fail(format!("the server sent no body for UID {u}; it is retried on the next run")));
        }
        bar.inc(chunk.len() as u64);
        if let Some(b) = budget {
            *b = b.saturating_sub(chunk.len() as u64);
        }
    }
    Ok(summary)
}

/// The configured action on the UIDs just learned.
async fn after_learning(sess: &mut Session, acct: &Account, set: &str) -> std::result::Result<(), async_imap::error::Error> {
    match acct.after {
        After::Leave => Ok(()),
        After::Flag => {
            let _: Vec<_> = sess.uid_store(set, format!("+FLAGS.SILENT ({})", acct.keyword)).await?.try_collect().await?;
            Ok(())
        }
        After::Delete => delete(sess, set).await,
        After::Move => {
            let to = acct.move_to.as_deref().unwrap_or("Trash");
            if sess.capabilities().await?.has_str("MOVE") {
                sess.uid_mv(set, to).await
            } else {
                sess.uid_copy(set, to).await?;
                delete(sess, set).await
            }
        }
    }
}

/// Marks the learned UIDs deleted and expunges exactly those (UIDPLUS's
/// UID EXPUNGE). Without UIDPLUS they stay marked: a plain EXPUNGE would
/// also remove whatever the user had marked deleted.
async fn delete(sess: &mut Session, set: &str) -> std::result::Result<(), async_imap::error::Error> {
    let _: Vec<_> = sess.uid_store(set, "+FLAGS.SILENT (\\Deleted)").await?.try_collect().await?;
    if sess.capabilities().await?.has_str("UIDPLUS") {
        let _: Vec<_> = sess.uid_expunge(set).await?.try_collect().await?;
    }
    Ok(())
}

/// One pass over an account's folders; returns each folder's summary.
pub async fn train_account(
    acct: &Account,
    learner: &Learner,
    state: &State,
    opts: &RunOptions,
    budget: &mut Option<u64>,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<(String, FolderSummary)>> {
    let mut sess = connect(acct).await?;
    let mut out = Vec::new();
    for (folder, class) in acct.folders() {
        if budget.is_some_and(|b| b == 0) {
            break;
        }
        let s = train_folder(&mut sess, acct, &folder, class, learner, state, opts, budget, bar)
            .await
            .map_err(|e| Error::Imap { account: acct.name.clone(), source: Box::new(e) })?;
        out.push((folder, s));
    }
    let _ = sess.logout().await;
    Ok(out)
}

/// Opens the learning path: the database itself, or, when `hamlet serve`
/// holds it, the service's HTTP API.
pub fn learner(cfg: &crate::config::Config) -> Result<Learner> {
    match crate::build::engine(cfg, crate::build::Open::Learn) {
        Ok(engine) => {
            let users = crate::build::users(cfg, engine.store());
            Ok(Learner::Direct { engine, users })
        }
        // The service's own time limit, and a little for the network.
        Err(Error::DatabaseInUse { .. }) => Ok(Learner::Http {
            addr: cfg.http.clone(),
            token: crate::build::read_learn_token(cfg)?,
            timeout: Duration::from_secs(cfg.timeout_s.saturating_add(5)),
        }),
        Err(e) => Err(e),
    }
}

/// Where the job's state lives: `[imap] state`, else beside the database.
pub fn state_path(cfg: &crate::config::Config) -> PathBuf {
    cfg.imap.state.clone().unwrap_or_else(|| cfg.beside_db("imap-state.redb"))
}

/// The accounts selected (all, or the one named).
pub fn accounts<'a>(cfg: &'a ImapConfig, only: Option<&str>) -> Result<Vec<&'a Account>> {
    if cfg.account.is_empty() {
        return Err(Error::Invalid("no [[imap.account]] in the configuration (see examples/hamlet.toml)".into()));
    }
    for a in &cfg.account {
        a.check()?;
    }
    let picked: Vec<&Account> = cfg.account.iter().filter(|a| only.is_none_or(|n| a.name == n)).collect();
    if picked.is_empty() {
        return Err(Error::Invalid(format!("no account named {:?}", only.unwrap_or(""))));
    }
    Ok(picked)
}

/// `--watch`: a pass, then wait for news (IDLE on the first spam folder,
/// where the server has IDLE) or `poll`, and again, until `stop` turns
/// true. The learning path is opened for each pass and released after it,
/// so `hamlet serve` can start (and take over) between passes; `pass_lock`
/// keeps several accounts' passes from overlapping. Errors (a server down,
/// a pass stuck past half an hour) are logged and retried on the next
/// round.
pub async fn watch(
    acct: &Account,
    cfg: &crate::config::Config,
    state: &State,
    opts: &RunOptions,
    poll: Duration,
    pass_lock: &tokio::sync::Mutex<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let hidden = indicatif::ProgressBar::hidden();
    loop {
        let start = Instant::now();
        let pass = async {
            let _guard = pass_lock.lock().await;
            let learner = learner(cfg)?;
            tokio::time::timeout(Duration::from_secs(1800), train_account(acct, &learner, state, opts, &mut None, &hidden)).await.map_err(|_| {
                Error::Imap { account: acct.name.clone(), source: Box::new(Error::Remote("pass took over 30 minutes; abandoned".into())) }
            })?
        };
        let result = tokio::select! {
            r = pass => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match result {
            Ok(folders) => {
                for (f, s) in folders.iter().filter(|(_, s)| s.fetched > 0 || s.uidvalidity_reset) {
                    tracing::info!(account = %acct.name, folder = %f, fetched = s.fetched, learned = s.learned, relearned = s.relearned, skipped = s.skipped, "imap pass");
                }
            }
            Err(e) => tracing::warn!(account = %acct.name, error = %e, "imap pass failed; retrying later"),
        }
        tokio::select! {
            () = wait_for_news(acct, state, poll) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        // Never spin: at least a few seconds between passes.
        if start.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// Returns when the first spam folder has news (IDLE), or after `poll`.
async fn wait_for_news(acct: &Account, state: &State, poll: Duration) {
    let idle = async {
        let mut sess = tokio::time::timeout(Duration::from_secs(60), connect(acct)).await.ok()?.ok()?;
        if !sess.capabilities().await.ok()?.has_str("IDLE") {
            return None;
        }
        let folder = acct.folders().into_iter().find(|(_, c)| *c == Class::Spam).map(|(f, _)| f)?;
        let mbox = sess.examine(&folder).await.ok()?;
        // Mail that came in since the pass read the folder: no need to wait.
        let seen = state.get(&acct.name, &folder).ok().flatten();
        let fresh = match (seen, mbox.uid_validity, mbox.uid_next) {
            (Some((v, last)), Some(mv), Some(next)) => v != mv || next > last.saturating_add(1),
            _ => false,
        };
        if fresh {
            let _ = sess.logout().await;
            return Some(());
        }
        let mut h = sess.idle();
        h.init().await.ok()?;
        {
            // The server's keep-alives reset async-imap's own timeout, so
            // the poll interval is enforced here.
            let (fut, _stop) = h.wait_with_timeout(poll);
            let _ = tokio::time::timeout(poll, fut).await;
        }
        if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(30), h.done()).await {
            let _ = s.logout().await;
        }
        Some(())
    };
    let started = Instant::now();
    if tokio::time::timeout(poll + Duration::from_secs(90), idle).await.ok().flatten().is_none() {
        // No IDLE (or it failed): plain polling.
        tokio::time::sleep(poll.saturating_sub(started.elapsed())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[4]), "4");
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    }

    #[test]
    fn state_round_trip() {
        let dir = std::env::temp_dir().join(format!("hamlet-imap-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = State::open(&dir.join("s.redb")).unwrap();
        assert_eq!(s.get("a", "Junk").unwrap(), None);
        s.set("a", "Junk", 7, 42).unwrap();
        assert_eq!(s.get("a", "Junk").unwrap(), Some((7, 42)));
        assert_eq!(s.get("a\0Junk", "").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
