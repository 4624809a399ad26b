//! The milter front end of `hamlet serve` (`--milter ADDR`, `milter =` in
//! hamlet.toml): Postfix (`smtpd_milters`) and Sendmail (`INPUT_MAIL_FILTER`)
//! hand hamlet each SMTP session, so mail can be refused before the MTA
//! takes responsibility for it. The wire format is in
//! [`crate::protocol::milter`].
//!
//! One MTA connection per SMTP session. The envelope is checked at its own
//! stage by the policy service's checker (one implementation, two front
//! ends): DNS lists at connect, the HELO rules at HELO, the sender and SPF
//! at MAIL, greylisting and the recipient rules at each RCPT. A reject or
//! defer decided there answers that stage (`SMFIR_REPLYCODE`: 550, or 450
//! for a deferral; at RCPT only that recipient is refused). At the end of
//! the message it is scored as `/v1/check` scores it with that envelope
//! (its checks' outcomes as tokens, SPF, DKIM/DMARC); a content-stage rule
//! set to reject or defer (a DMARC fail) answers, else the action for its
//! probability is taken (see [`Actions`]): reject (`550 5.7.1`), soft reject
//! (`451 4.7.1`), discard, quarantine, or accept with hamlet's `X-Spam-*`
//! headers (the SPAMD listener's) and, on top, `Authentication-Results`,
//! `Received-SPF` and `X-Greylist` as they apply, after removing the
//! `X-Spam-*` fields and our own `Authentication-Results` the message came
//! with. With one recipient and per-user models on, that user's model
//! scores it; with several, the shared model does.
//!
//! Caps and deadlines: at most `milter_max_connections` sessions; each
//! command has `timeout_s` to arrive while the MTA is inside a message
//! and the SMTP session's own pace (up to [`IDLE`]) between messages; a
//! message's bytes take room in the shared in-flight budget (a session is
//! closed to make room only between messages, never inside one); an envelope
//! stage that takes longer than 10 s or `timeout_s` (the lesser) lets the
//! mail go on, as does a score that takes longer than `timeout_s` (DNS
//! lookups have their own, shorter budget). A message bigger than
//! `max_body_bytes`, or one for which no room or no score came in time, is
//! accepted unscored with `X-Spam-Status: unscored (why)`: hamlet never
//! loses or holds up mail on its own account.

use crate::config::Config;
use crate::envelope::antivirus::HitAction;
use crate::envelope::greylist::{GreyStore, Verdict};
use crate::envelope::{Checker, Decision, Envelope, Known, Lookups, Report};
use crate::listener::{self, Conn, Guard, Listener, Room, Slot};
use crate::protocol::milter::{self as proto, Command, Reply};
use crate::protocol::spamd::Outcome;
use crate::service::Service;
use crate::store::TokenStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a session may sit between messages (an SMTP client between
/// commands: Postfix's `smtpd_timeout` is 300 s).
pub const IDLE: Duration = Duration::from_secs(330);

/// The most an envelope stage (its DNS lookups, then its checks) may take:
/// well inside Postfix's `milter_command_timeout` (30 s), so the answer is
/// ours and not the MTA's default action. DNS has its own, shorter budget.
const STAGE: Duration = Duration::from_secs(10);

/// What to do with a message by its spam probability: the first of reject,
/// discard, soft reject, quarantine whose threshold it reaches; else accept
/// with headers. `None`: that action is off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    pub reject: Option<f64>,
    pub discard: Option<f64>,
    pub soft_reject: Option<f64>,
    pub quarantine: Option<f64>,
}

/// The action taken on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reject,
    Discard,
    SoftReject,
    Quarantine,
    AddHeaders,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::Discard => "discard",
            Action::SoftReject => "soft reject",
            Action::Quarantine => "quarantine",
            Action::AddHeaders => "add headers",
        }
    }
}

impl Actions {
    /// The action for `probability` (see [`Actions`]).
    pub fn decide(&self, probability: f64) -> Action {
        let at = |t: Option<f64>| t.is_some_and(|t| probability >= t);
        if at(self.reject) {
            Action::Reject
        } else if at(self.discard) {
            Action::Discard
        } else if at(self.soft_reject) {
            Action::SoftReject
        } else if at(self.quarantine) {
            Action::Quarantine
        } else {
            Action::AddHeaders
        }
    }
}

/// The listener's settings (from [`Config`]).
#[derive(Debug, Clone)]
pub struct Options {
    pub max_connections: usize,
    pub max_message_bytes: usize,
    /// Time limit for a command inside a message, and for scoring.
    pub timeout: Duration,
    pub actions: Actions,
    /// The `authserv-id` of the `Authentication-Results` fields hamlet
    /// adds (and removes when a message comes with one already).
    pub authserv_id: String,
}

impl Options {
    /// The listener's part of the configuration (already [`Config::check`]ed).
    pub fn from_config(cfg: &Config) -> Options {
        Options {
            max_connections: cfg.milter_max_connections,
            max_message_bytes: cfg.max_body_bytes,
            timeout: Duration::from_secs(cfg.timeout_s),
            actions: Actions {
                reject: cfg.milter_reject_at,
                discard: cfg.milter_discard_at,
                soft_reject: cfg.milter_soft_reject_at,
                quarantine: cfg.milter_quarantine_at,
            },
            authserv_id: cfg.envelope.my_names.first().cloned().unwrap_or_else(host_name),
        }
    }
}

/// This host's name (the kernel's), for `Authentication-Results` when
/// `[envelope] my_names` does not give one.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Serves until `shutdown` completes, then waits (up to the time limit plus
/// five seconds) for sessions in flight.
pub async fn serve<S: TokenStore + 'static, G: GreyStore + 'static>(
    listener: Listener,
    service: Arc<Service<S>>,
    checker: Arc<Checker<G>>,
    opts: Options,
    guard: Arc<Guard>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let opts = Arc::new(opts);
    let drain = opts.timeout + Duration::from_secs(5);
    listener::serve(listener, "milter", opts.max_connections, drain, guard, shutdown, |conn, peer, slot| {
        let (service, checker, opts) = (service.clone(), checker.clone(), opts.clone());
        async move {
            if let Err(e) = session(&service, &checker, &opts, &slot, conn).await {
                tracing::info!(peer = ?peer, error = %e, "milter session ended");
            }
        }
    })
    .await;
}

/// The most verdict fields of a message that are removed.
const MAX_FIELDS: usize = 1_000;

/// How much budget a message takes at a time (most mail is a few KiB:
/// a smaller step would only mean more reservations).
const ROOM_STEP: usize = 64 << 10;

/// One message being received.
#[derive(Default)]
struct Message {
    mail_from: Option<String>,
    rcpts: Vec<String>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// The names of its `X-Spam-*` and `X-Hamlet-*` fields, in order (kept
    /// when the message is not: forged verdicts go whether it is scored or
    /// not; a field's index counts only fields of its own name).
    names: Vec<String>,
    rooms: Vec<Room>,
    /// Bytes of the message so far (fields counted as `name: value\r\n`).
    size: usize,
    /// Why it will not be scored (too big, no room), if so.
    unscored: Option<&'static str>,
    /// Its `Authentication-Results` fields in order: whether each claims
    /// our `authserv-id` (forged, or left by a hop that is not us).
    results: Vec<bool>,
    /// SPF's answer for its sender (at MAIL).
    spf: Option<crate::envelope::spf::Spf>,
    /// Seconds greylisting held its (first) recipient back, when it did.
    greylisted: Option<u64>,
}

/// Reads packets and answers them until the MTA quits.
async fn session<S: TokenStore + 'static, G: GreyStore + 'static>(
    service: &Arc<Service<S>>,
    checker: &Arc<Checker<G>>,
    opts: &Options,
    slot: &Slot,
    mut conn: Conn,
) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(8 << 10);
    let mut out = Vec::new();
    let mut msg = Message::default();
    let mut client = Client::default();
    // From the first header on, the MTA has the whole message and sends it
    // without pause; before, it goes at its SMTP client's pace.
    let mut streaming = false;
    // The packets the MTA agreed not to wait for a reply to.
    let mut quiet = 0u32;
    loop {
        let limit = if streaming { opts.timeout } else { IDLE };
        // Inside a message the MTA streams it without pause (each packet
        // within the time limit): the session is at work, and is not closed
        // to make room for another; between messages it waits on the SMTP
        // client, and may be.
        if !streaming {
            slot.waiting();
        }
        let packet =
            tokio::time::timeout(limit, read_packet(&mut conn, &mut buf)).await.map_err(|_| "timed out waiting for the MTA".to_string())??;
        slot.working();
        let Some(packet) = packet else { return Ok(()) };
        let cmd = proto::parse(&packet).map_err(|e| e.to_string())?;
        out.clear();
        match cmd {
            Command::OptNeg { version, actions, steps } => {
                let want = proto::action::ADD_HEADERS | proto::action::CHANGE_HEADERS | proto::action::QUARANTINE;
                let skip = proto::step::NO_UNKNOWN | proto::step::NO_DATA | proto::step::NR_HDR | proto::step::NR_EOH | proto::step::NR_BODY;
                let reply = proto::negotiate(version, actions, steps, want, skip).map_err(|e| e.to_string())?;
                if let Reply::OptNeg { steps, .. } = reply {
                    quiet = steps;
                }
                reply.encode(&mut out);
            }
            Command::Macro { pairs, .. } => {
                if let Some((_, user)) = pairs.into_iter().find(|(k, _)| k == "{auth_authen}") {
                    client.sasl_user = Some(user).filter(|u| !u.is_empty());
                }
            }
            Command::Connect { host, peer } => {
                client = Client::default();
                client.ip = match peer {
                    proto::Peer::Inet(ip, _) => Some(ip),
                    _ => None,
                };
                // Postfix names a client without verified reverse DNS "unknown".
                client.name = Some(host).filter(|h| !h.is_empty() && h != "unknown" && !h.starts_with('['));
                if let Some(ip) = client.ip {
                    client.lists = tokio::time::timeout(opts.timeout.min(STAGE), checker.lookup_lists(ip)).await.unwrap_or_default();
                }
                let env = envelope(&client, &Message::default());
                let lookups = Lookups { dnsbl: client.lists.clone(), spf: None };
                stage(service, checker, opts, "connect", env, lookups).await.0.encode(&mut out);
            }
            Command::Helo(name) => {
                client.helo = Some(name);
                let env = envelope(&client, &Message::default());
                let lookups = Lookups { dnsbl: client.lists.clone(), spf: None };
                stage(service, checker, opts, "helo", env, lookups).await.0.encode(&mut out);
            }
            Command::Data | Command::Unknown(_) => Reply::Continue.encode(&mut out),
            Command::Mail(args) => {
                msg = Message { mail_from: args.into_iter().next(), ..Message::default() };
                streaming = false;
                let env = envelope(&client, &msg);
                msg.spf = tokio::time::timeout(opts.timeout.min(STAGE), checker.lookup_spf(&env)).await.ok().flatten();
                let lookups = Lookups { dnsbl: client.lists.clone(), spf: msg.spf.clone() };
                stage(service, checker, opts, "mail", env, lookups).await.0.encode(&mut out);
            }
            Command::Rcpt(args) => {
                let rcpt = args.into_iter().next().unwrap_or_default();
                // Checked alone, as the policy service checks each RCPT TO:
                // greylisting is per recipient.
                let mut env = envelope(&client, &msg);
                env.rcpt_to = vec![unbracket(&rcpt)].into_iter().filter(|r| !r.is_empty()).collect();
                let lookups = Lookups { dnsbl: client.lists.clone(), spf: msg.spf.clone() };
                let (reply, report) = stage(service, checker, opts, "rcpt", env, lookups).await;
                if reply == Reply::Continue {
                    msg.rcpts.push(rcpt);
                    if let Some(Verdict::Pass { delayed: Some(secs) }) = report.and_then(|r| r.greylist) {
                        msg.greylisted.get_or_insert(secs);
                    }
                }
                reply.encode(&mut out);
            }
            Command::Header { name, value } => {
                streaming = true;
                let size = name.len() + value.len() + 4;
                keep(slot, opts, &mut msg, size).await;
                if ours(&name) && name.len() <= 256 && msg.names.len() < MAX_FIELDS {
                    msg.names.push(name.clone());
                }
                if name.eq_ignore_ascii_case("Authentication-Results") && msg.results.len() < MAX_FIELDS {
                    msg.results.push(claims(&value, &opts.authserv_id));
                }
                if msg.unscored.is_none() {
                    msg.headers.push((name, value));
                }
                answer(quiet, proto::step::NR_HDR, &mut out);
            }
            Command::EndOfHeader => answer(quiet, proto::step::NR_EOH, &mut out),
            Command::Body(chunk) => {
                keep(slot, opts, &mut msg, chunk.len()).await;
                if msg.unscored.is_none() {
                    msg.body.extend_from_slice(&chunk);
                }
                answer(quiet, proto::step::NR_BODY, &mut out);
            }
            Command::EndOfMessage(chunk) => {
                keep(slot, opts, &mut msg, chunk.len()).await;
                if msg.unscored.is_none() {
                    msg.body.extend_from_slice(&chunk);
                }
                let done = std::mem::take(&mut msg);
                end_of_message(service, opts, &client, done, &mut out).await;
                streaming = false;
            }
            Command::Abort => {
                msg = Message::default();
                streaming = false;
            }
            Command::QuitNewConnection => {
                msg = Message::default();
                client = Client::default();
                streaming = false;
            }
            Command::Quit => return Ok(()),
        }
        if !out.is_empty() {
            tokio::time::timeout(opts.timeout, conn.write_all(&out))
                .await
                .map_err(|_| "timed out writing to the MTA".to_string())?
                .map_err(|e| e.to_string())?;
        }
    }
}

/// Continues after a packet, unless the MTA agreed (`step`, one of the
/// `NR_*` steps in `quiet`) not to wait for the reply.
fn answer(quiet: u32, step: u32, out: &mut Vec<u8>) {
    if quiet & step == 0 {
        Reply::Continue.encode(out);
    }
}

/// What the session knows of the SMTP client.
#[derive(Default)]
struct Client {
    ip: Option<std::net::IpAddr>,
    name: Option<String>,
    helo: Option<String>,
    sasl_user: Option<String>,
    /// The DNS lists' answers for its address (at connect).
    lists: Vec<crate::envelope::dnsbl::Listing>,
}

/// Checks the envelope as far as it is known at `stage` (the checks whose
/// input is not known yet are skipped: see [`Known`]) and answers with its
/// decision: continue, or the reject or defer reply. A check that fails or
/// takes longer than the time limit lets the mail go on.
async fn stage<S: TokenStore + 'static, G: GreyStore + 'static>(
    service: &Service<S>,
    checker: &Arc<Checker<G>>,
    opts: &Options,
    stage: &'static str,
    env: Envelope,
    lookups: Lookups,
) -> (Reply, Option<Report>) {
    let now = crate::envelope::now();
    // Only a recipient's check touches the greylisting store; before RCPT
    // the rules are a few string checks, run here.
    let checked = if env.rcpt_to.is_empty() {
        Ok(Ok(checker.check_with(&env, &lookups, now).map(|r| (r, env))))
    } else {
        let c = checker.clone();
        let job = tokio::task::spawn_blocking(move || c.check_with(&env, &lookups, now).map(|r| (r, env)));
        tokio::time::timeout(opts.timeout.min(STAGE), job).await
    };
    let (report, env) = match checked {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(e))) => {
            tracing::warn!(stage, error = %e, "milter: envelope check failed; continuing");
            service.metrics().milter(stage, "error");
            return (Reply::Continue, None);
        }
        Ok(Err(e)) => {
            tracing::error!(stage, error = %e, "milter: envelope check panicked; continuing");
            service.metrics().milter(stage, "error");
            return (Reply::Continue, None);
        }
        Err(_) => {
            tracing::warn!(stage, "milter: envelope check timed out; continuing");
            service.metrics().milter(stage, "timeout");
            return (Reply::Continue, None);
        }
    };
    let (reply, result) = decision_reply(&report.decision);
    if result != "continue" {
        let rules: Vec<&str> = report.outcomes.iter().map(|o| o.rule).collect();
        tracing::info!(stage, client = ?env.client_ip, helo = %env.helo, sender = %env.mail_from, recipient = env.rcpt_to.first().map_or("", String::as_str),
            outcomes = %rules.join(","), result, "milter envelope");
    }
    service.metrics().milter(stage, result);
    (reply, Some(report))
}

/// The reply to an envelope decision, and its name for the metrics: a
/// rejection is 550, a deferral 450 with a temporary status code (a rule
/// set to defer may carry a permanent one in its text).
fn decision_reply(decision: &Decision) -> (Reply, &'static str) {
    match decision {
        Decision::Continue => (Reply::Continue, "continue"),
        Decision::Reject(text) => (Reply::ReplyCode { code: 550, text: text.clone() }, "reject"),
        Decision::Defer(text) => {
            let text = match text.strip_prefix('5') {
                Some(rest) if rest.starts_with('.') => format!("4{rest}"),
                _ => text.clone(),
            };
            (Reply::ReplyCode { code: 450, text }, "defer")
        }
    }
}

/// Whether an `Authentication-Results` value claims `authserv_id` (RFC
/// 8601 section 5: a receiver removes those it did not add itself).
fn claims(value: &[u8], authserv_id: &str) -> bool {
    let v = String::from_utf8_lossy(value);
    let id = v.trim_start().split([';', ' ', '\t', '\r', '\n']).next().unwrap_or("");
    id.eq_ignore_ascii_case(authserv_id)
}

fn unbracket(s: &str) -> String {
    s.trim().trim_start_matches('<').trim_end_matches('>').to_string()
}

/// The envelope of a message, as the policy service would see it.
fn envelope(client: &Client, msg: &Message) -> Envelope {
    Envelope {
        client_ip: client.ip,
        client_name: client.name.clone(),
        helo: client.helo.clone().unwrap_or_default(),
        mail_from: msg.mail_from.as_deref().map(unbracket).unwrap_or_default(),
        rcpt_to: msg.rcpts.iter().map(|r| unbracket(r)).filter(|r| !r.is_empty()).collect(),
        sasl_user: client.sasl_user.clone(),
        known: Known { helo: client.helo.is_some(), mail_from: msg.mail_from.is_some(), client_name: true },
    }
}

/// Makes room for `more` bytes of the message, or marks it unscored (too
/// big, or no room in the budget) and lets go of what it held.
async fn keep(slot: &Slot, opts: &Options, msg: &mut Message, more: usize) {
    if msg.unscored.is_some() {
        return;
    }
    msg.size += more;
    let size = msg.size;
    if size > opts.max_message_bytes {
        msg.unscored = Some("too big");
    } else if size > msg.rooms.len() * ROOM_STEP {
        match slot.reserve(ROOM_STEP, Duration::from_secs(2)).await {
            Some(r) => msg.rooms.push(r),
            None => msg.unscored = Some("busy"),
        }
    }
    if msg.unscored.is_some() {
        msg.headers = Vec::new();
        msg.body = Vec::new();
        msg.rooms.clear();
    }
}

/// Scores the message and encodes the replies for its action.
async fn end_of_message<S: TokenStore + 'static>(service: &Arc<Service<S>>, opts: &Options, client: &Client, msg: Message, out: &mut Vec<u8>) {
    let start = Instant::now();
    let outside = removals(&msg.names, &msg.results);
    // Accepted as it is, with a field saying why it was not scored.
    let unscored = |out: &mut Vec<u8>, why: &'static str, code: u16| {
        for r in &outside {
            r.encode(out);
        }
        Reply::AddHeader { name: "X-Spam-Status".into(), value: format!("unscored ({why})") }.encode(out);
        Reply::Continue.encode(out);
        service.metrics().milter("eom", why);
        service.metrics().request("milter unscored", code, start.elapsed().as_secs_f64());
    };
    if let Some(why) = msg.unscored {
        return unscored(out, why, 200);
    }
    let raw = message(&msg.headers, &msg.body);
    let env = envelope(client, &msg);
    let user = match msg.rcpts.as_slice() {
        [one] => Some(unbracket(one)).filter(|u| !u.is_empty()),
        _ => None,
    };
    let lookups = Lookups { dnsbl: client.lists.clone(), spf: msg.spf.clone() };
    let checked = match tokio::time::timeout(opts.timeout, service.check_looked_up("milter", user, raw, Some(env.clone()), lookups)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = ?e, "milter: no score, accepted unscored");
            return unscored(out, "error", 500);
        }
        Err(_) => return unscored(out, "timed out", 504),
    };
    let (score, report) = (&checked.score, checked.report.as_ref());
    // A content-stage rule (DKIM, DMARC) set to reject or defer answers
    // before the score's action.
    let refused = report.map(|r| decision_reply(&r.decision)).filter(|(_, result)| *result != "continue");
    let outcome = Outcome::from_score(score, service.engine().params.spam_cutoff);
    let mut action = opts.actions.decide(score.probability);
    // A virus the antivirus is set to quarantine is held, whatever the score
    // says (set to reject, it was refused above).
    let virus = report.and_then(|r| r.virus());
    let hold_virus = virus.is_some() && service.antivirus().is_some_and(|a| a.action == HitAction::Quarantine);
    if hold_virus && action == Action::AddHeaders {
        action = Action::Quarantine;
    }
    let name = match (&refused, action) {
        (Some((reply, result)), _) => {
            reply.encode(out);
            result
        }
        (None, Action::Reject) => {
            Reply::ReplyCode { code: 550, text: format!("5.7.1 message refused as spam (hamlet {:.4})", score.probability) }.encode(out);
            action.name()
        }
        (None, Action::SoftReject) => {
            Reply::ReplyCode { code: 451, text: format!("4.7.1 message deferred as likely spam (hamlet {:.4}), try again later", score.probability) }
                .encode(out);
            action.name()
        }
        (None, Action::Discard) => {
            Reply::Discard.encode(out);
            action.name()
        }
        (None, Action::Quarantine | Action::AddHeaders) => {
            for r in &outside {
                r.encode(out);
            }
            for (name, value) in header_fields(&outcome.headers("\n")) {
                Reply::AddHeader { name, value }.encode(out);
            }
            if let Some(scan) = report.and_then(|r| r.antivirus.as_ref()) {
                Reply::AddHeader { name: "X-Virus-Status".into(), value: scan.status() }.encode(out);
            }
            // Trace fields go on top; each insert lands above the last.
            if let Some(secs) = msg.greylisted {
                let value = crate::envelope::greylist::x_greylist(secs, crate::envelope::now());
                Reply::InsertHeader { index: 0, name: "X-Greylist".into(), value }.encode(out);
            }
            if let (Some(spf), Some(ip)) = (&msg.spf, client.ip) {
                let value = crate::envelope::spf::received_spf(spf, ip, &env.helo, &env.mail_from);
                Reply::InsertHeader { index: 0, name: "Received-SPF".into(), value }.encode(out);
            }
            if let Some(value) = report.and_then(|r| r.authentication_results(&opts.authserv_id, &env)) {
                Reply::InsertHeader { index: 0, name: "Authentication-Results".into(), value }.encode(out);
            }
            if action == Action::Quarantine {
                let why = match virus {
                    Some(name) if hold_virus => format!("hamlet: virus found: {name}"),
                    _ => format!("hamlet: spam probability {:.4}", score.probability),
                };
                Reply::Quarantine(why).encode(out);
            }
            Reply::Continue.encode(out);
            action.name()
        }
    };
    tracing::debug!(verdict = %outcome.verdict, probability = outcome.probability, action = name, "milter");
    service.acted(&checked, name);
    service.metrics().milter("eom", name);
    service.metrics().request(&format!("milter {name}"), 200, start.elapsed().as_secs_f64());
}

/// Whether a field is a verdict of the kind hamlet adds.
fn ours(name: &str) -> bool {
    let n = name.as_bytes();
    [&b"x-spam-"[..], b"x-hamlet-"].iter().any(|p| n.len() >= p.len() && n[..p.len()].eq_ignore_ascii_case(p))
}

/// Deletions of the `X-Spam-*` and `X-Hamlet-*` fields the message came
/// with (forgeable, and they would contradict hamlet's), and of the
/// `Authentication-Results` fields that claim our `authserv-id` (`results`:
/// each such field in order, whether it claims it). Last first within a
/// name, so each index still names the field it did.
fn removals(names: &[String], results: &[bool]) -> Vec<Reply> {
    let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for name in names {
        let k = name.to_ascii_lowercase();
        let i = seen.entry(k).or_insert(0);
        *i += 1;
        if ours(name) {
            out.push(Reply::ChangeHeader { index: *i, name: name.clone(), value: String::new() });
        }
    }
    for (i, _) in results.iter().enumerate().filter(|(_, ours)| **ours) {
        out.push(Reply::ChangeHeader { index: i as u32 + 1, name: "Authentication-Results".into(), value: String::new() });
    }
    out.reverse();
    out
}

/// The message as the MTA received it: its fields (the MTA gives each
/// value unfolded at LF; lines end in CRLF here) and body.
fn message(headers: &[(String, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>() + 2);
    for (name, value) in headers {
        m.extend_from_slice(name.as_bytes());
        m.extend_from_slice(b": ");
        for (i, line) in value.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                m.extend_from_slice(b"\r\n");
            }
            m.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        }
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice(body);
    m
}

/// (name, value) of header lines `Name: value\n\tmore\n`, a folded value
/// kept with its `\n` and leading whitespace (as milters add them).
fn header_fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.to_string(), v.trim_start().to_string()));
        }
    }
    out
}

/// Reads one packet; `None` at a clean end of stream.
async fn read_packet(conn: &mut Conn, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    loop {
        match proto::frame(buf).map_err(|e| e.to_string())? {
            Some((n, packet)) => {
                let p = packet.to_vec();
                buf.drain(..n);
                return Ok(Some(p));
            }
            None => {
                let mut chunk = [0u8; 16 << 10];
                let k = conn.read(&mut chunk).await.map_err(|e| format!("read error: {e}"))?;
                conn.quick_ack();
                if k == 0 {
                    return if buf.is_empty() { Ok(None) } else { Err("the MTA closed the connection inside a packet".into()) };
                }
                buf.extend_from_slice(&chunk[..k]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_by_probability() {
        let a = Actions { reject: Some(0.999), discard: None, soft_reject: Some(0.99), quarantine: Some(0.9) };
        assert_eq!(a.decide(0.9995), Action::Reject);
        assert_eq!(a.decide(0.995), Action::SoftReject);
        assert_eq!(a.decide(0.95), Action::Quarantine);
        assert_eq!(a.decide(0.5), Action::AddHeaders);
        assert_eq!(Actions::default().decide(1.0), Action::AddHeaders, "all off: headers only");
    }

    #[test]
    fn outside_spam_headers_are_removed_last_first() {
        let got = removals(&["X-Spam-Flag", "Subject", "x-spam-flag", "X-Hamlet-Verdict", "X-Spamming"].map(String::from), &[true, false, true]);
        assert_eq!(
            got,
            vec![
                Reply::ChangeHeader { index: 3, name: "Authentication-Results".into(), value: String::new() },
                Reply::ChangeHeader { index: 1, name: "Authentication-Results".into(), value: String::new() },
                Reply::ChangeHeader { index: 1, name: "X-Hamlet-Verdict".into(), value: String::new() },
                Reply::ChangeHeader { index: 2, name: "x-spam-flag".into(), value: String::new() },
                Reply::ChangeHeader { index: 1, name: "X-Spam-Flag".into(), value: String::new() },
            ]
        );
    }

    #[test]
    fn envelope_decisions_answer_their_stage() {
        assert_eq!(decision_reply(&Decision::Continue), (Reply::Continue, "continue"));
        assert_eq!(
            decision_reply(&Decision::Reject("5.7.1 Service unavailable; client 192.0.2.1 listed".into())),
            (Reply::ReplyCode { code: 550, text: "5.7.1 Service unavailable; client 192.0.2.1 listed".into() }, "reject")
        );
        assert_eq!(
            decision_reply(&Decision::Defer("4.2.0 Greylisted: please retry later".into())),
            (Reply::ReplyCode { code: 450, text: "4.2.0 Greylisted: please retry later".into() }, "defer")
        );
        // A rule set to defer keeps its text, with a temporary status code.
        assert_eq!(decision_reply(&Decision::Defer("5.5.2 HELO \"x\"".into())).0, Reply::ReplyCode { code: 450, text: "4.5.2 HELO \"x\"".into() });
        assert!(claims(b" mx.corp.example; spf=pass", "MX.corp.example"));
        assert!(claims(b"mx.corp.example 1; none", "mx.corp.example"));
        assert!(!claims(b"mx.corp.example.evil; spf=pass", "mx.corp.example"));
        assert!(!claims(b"other.example; dkim=pass", "mx.corp.example"));
    }

    #[test]
    fn the_message_is_rebuilt_with_crlf() {
        let m = message(&[("Subject".into(), b"a\n\tb".to_vec()), ("To".into(), b"bob@example.net".to_vec())], b"Hi\r\n");
        assert_eq!(m, b"Subject: a\r\n\tb\r\nTo: bob@example.net\r\n\r\nHi\r\n");
        assert_eq!(
            header_fields("X-Spam-Flag: NO\nX-Spam-Status: No, score=0.1\n\ttests=A,B\n"),
            vec![("X-Spam-Flag".into(), "NO".into()), ("X-Spam-Status".into(), "No, score=0.1\n\ttests=A,B".into())]
        );
    }
}
