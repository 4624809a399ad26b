//! The web console at `/ui/` (`[ui] enabled = true`): a page embedded in
//! the binary (`index.html`, `app.js`, `app.css` beside this file; nothing
//! loaded from elsewhere) over the JSON endpoints under `/ui/api/`.
//!
//! - Sign-in with the learn token or the console password makes a session
//!   (cookie `HttpOnly`, `SameSite=Strict`, path `/ui`); every POST but
//!   the sign-in must also send the session's `X-CSRF-Token`. Without a
//!   session nothing is shown, unless `read_only` lets anyone view.
//! - Loopback clients only, unless `remote = true`.
//! - Learning from the console goes through [`Service::train`], the path
//!   of `/v1/learn`; checks shown come from the service's
//!   [`crate::history::History`], which every front end's check feeds.
//! - The Evaluate page runs the on-line protocol (`hamlet eval`) on an
//!   empty model in the background, one run at a time.

mod auth;

pub use auth::{hash_password, verify_password};

use super::{ApiError, Body, Peer, blocking, job, message, same_token};
use crate::Class;
use crate::config::UiConfig;
use crate::engine::LearnOutcome;
use crate::history::Entry;
use crate::protocol::reply::{CheckReply, ClueReply};
use crate::service::Service;
use crate::store::TokenStore;
use auth::{Session, Sessions};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// The page's policy: its own scripts and styles only, no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'";

const COOKIE: &str = "hamlet_console";

/// Most messages one evaluation reads.
const EVAL_MAX: usize = 100_000;

/// The console's own state beside the service.
pub struct Console {
    cfg: UiConfig,
    learn_token: Option<String>,
    sessions: Sessions,
    /// One sign-in checked at a time (a password costs PBKDF2's rounds),
    /// and a wrong one waits before the next may try.
    sign_in: tokio::sync::Mutex<()>,
    /// `redb` or `redis`, and where.
    backend: &'static str,
    store: String,
    eval: Arc<Mutex<EvalState>>,
}

impl Console {
    /// The console for `cfg`; `learn_token` signs in as well as the
    /// password; `backend` and `store` name the model's store.
    pub fn new(cfg: &UiConfig, learn_token: Option<String>, backend: &'static str, store: String) -> Console {
        Console {
            cfg: cfg.clone(),
            learn_token,
            sessions: Sessions::new(Duration::from_secs(cfg.session_hours.saturating_mul(3600))),
            sign_in: tokio::sync::Mutex::new(()),
            backend,
            store,
            eval: Arc::new(Mutex::new(EvalState::Idle)),
        }
    }
}

/// The console's routes, for the API's router (which adds its limits,
/// metrics and error shape); the [`Console`] comes as an extension.
pub fn routes<S: TokenStore + 'static>() -> Router<Arc<Service<S>>> {
    Router::new()
        .route("/ui", get(|| async { (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/ui/")]) }))
        .route("/ui/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/ui/api/session", get(session_info))
        .route("/ui/api/login", post(login))
        .route("/ui/api/logout", post(logout))
        .route("/ui/api/status", get(status::<S>))
        .route("/ui/api/history", get(history::<S>))
        .route("/ui/api/history/{id}", get(history_entry::<S>))
        .route("/ui/api/history/{id}/learn", post(history_learn::<S>))
        .route("/ui/api/try", post(try_message::<S>))
        .route("/ui/api/learn", post(learn::<S>))
        .route("/ui/api/eval", get(eval_state).post(eval_start::<S>))
        .route("/ui/api/eval/folders", get(eval_folders))
        .route("/ui/api/eval/roc.svg", get(eval_roc))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Who is asking: a signed-in session, or a viewer `read_only` lets in.
enum Access {
    Session(String, Session),
    Viewer,
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_string())
    })
}

/// Refuses clients off loopback unless the console is open to them.
fn local(c: &Console, peer: &Peer) -> Result<(), ApiError> {
    match peer.0 {
        Some(ip) if !ip.is_loopback() && !c.cfg.remote => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "the console serves loopback clients only ([ui] remote = true opens it)"))
        }
        _ => Ok(()),
    }
}

/// The session of a request, or a viewer when `read_only`; else 401.
fn viewer(c: &Console, peer: &Peer, headers: &HeaderMap) -> Result<Access, ApiError> {
    local(c, peer)?;
    if let Some(id) = cookie(headers)
        && let Some(s) = c.sessions.get(&id)
    {
        return Ok(Access::Session(id, s));
    }
    if c.cfg.read_only { Ok(Access::Viewer) } else { Err(ApiError::new(StatusCode::UNAUTHORIZED, "sign in first")) }
}

/// The session of a state-changing request, whose `X-CSRF-Token` must be
/// the session's.
fn actor(c: &Console, peer: &Peer, headers: &HeaderMap) -> Result<(String, Session), ApiError> {
    let Access::Session(id, s) = viewer(c, peer, headers)? else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "sign in first"));
    };
    let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !same_token(sent, &s.csrf) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token"));
    }
    Ok((id, s))
}

async fn session_info(Extension(c): Extension<Arc<Console>>, peer: Peer, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    local(&c, &peer)?;
    let s = cookie(&headers).and_then(|id| c.sessions.get(&id));
    Ok(Json(json!({
        "signed_in": s.is_some(),
        "read_only": c.cfg.read_only,
        "csrf": s.map(|s| s.csrf),
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

#[derive(Deserialize)]
struct Login {
    secret: String,
}

async fn login(Extension(c): Extension<Arc<Console>>, peer: Peer, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    local(&c, &peer)?;
    // JSON only: a form on another site cannot send it without CORS's
    // permission, which this server never gives.
    if !headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json")) {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send {\"secret\": \"...\"} as application/json"));
    }
    let raw = body.bytes?;
    let Login { secret } = serde_json::from_slice(&raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad sign-in: {e}")))?;
    let _one = c.sign_in.lock().await;
    let by_token = c.learn_token.as_deref().is_some_and(|t| same_token(&secret, t));
    let by_password = !by_token
        && match c.cfg.password_hash.clone() {
            Some(line) => tokio::task::spawn_blocking(move || verify_password(&secret, &line)).await.unwrap_or(false),
            None => false,
        };
    if !(by_token || by_password) {
        tracing::warn!(peer = ?peer.0, "console: sign-in refused");
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong token or password"));
    }
    let (id, s) = c.sessions.open();
    tracing::info!(peer = ?peer.0, "console: signed in");
    let cookie = format!("{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}", c.sessions.max_age());
    let mut resp = Json(json!({ "signed_in": true, "csrf": s.csrf })).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    Ok(resp)
}

async fn logout(Extension(c): Extension<Arc<Console>>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    let (id, _) = actor(&c, &peer, &headers)?;
    c.sessions.close(&id);
    let mut resp = Json(json!({ "signed_in": false })).into_response();
    let gone = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&gone).map_err(ApiError::internal)?);
    Ok(resp)
}

/// The shared model's messages per class and tokens.
async fn model<S: TokenStore + 'static>(state: &Arc<Service<S>>) -> Result<Value, ApiError> {
    let (st, tokens) = blocking(state, |e| {
        let v = e.store().read()?;
        Ok((v.state()?, v.token_count()?))
    })
    .await?;
    Ok(json!({ "spam": st.messages.spam, "ham": st.messages.ham, "tokens": tokens }))
}

fn history_of<S: TokenStore + 'static>(state: &Service<S>) -> Result<&crate::history::History, ApiError> {
    state.history().ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "the console's history is off"))
}

async fn status<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    Extension(c): Extension<Arc<Console>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    viewer(&c, &peer, &headers)?;
    let h = history_of(&state)?;
    let (checks, learns) = state.counts();
    let uptime = state.uptime();
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()) - uptime.as_secs_f64();
    let minutes: Vec<Value> = h
        .minutes(since)
        .iter()
        .map(|m| json!({ "t": m.t, "checks": m.checks, "learns": m.learns, "spam": m.spam, "ham": m.ham, "unsure": m.unsure }))
        .collect();
    let errors = h.errors();
    let last = |k: &str| errors.get(k).map(|e| json!({ "at": e.at, "message": e.message }));
    let env = &state.envelope_checker().config;
    let lists: Vec<&str> = env.dnsbl.iter().map(|z| z.zone.as_str()).collect();
    let stage =
        |name: &str, enabled: bool, detail: String, key: &str| json!({ "name": name, "enabled": enabled, "detail": detail, "last_error": last(key) });
    let stages = vec![
        stage("Model store", true, format!("{} ({})", c.backend, c.store), "store"),
        stage("DNS lists", !lists.is_empty(), if lists.is_empty() { "none configured".into() } else { lists.join(", ") }, "dnsbl"),
        stage("SPF", env.spf.enabled, if env.spf.enabled { "at MAIL and on checks with an envelope".into() } else { "off".into() }, "spf"),
        stage("DKIM/DMARC", env.dkim.enabled, if env.dkim.enabled { "every message".into() } else { "off".into() }, "dkim"),
        stage(
            "Greylisting",
            env.greylist.enabled,
            if env.greylist.enabled { format!("policy service and milter, {} s delay", env.greylist.delay_s) } else { "off".into() },
            "greylist",
        ),
        stage(
            "Antivirus",
            state.antivirus().is_some(),
            state.antivirus().map_or("off".into(), |a| format!("clamd at {}", a.describe())),
            "antivirus",
        ),
    ];
    let verdicts = state.metrics().verdicts();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": uptime.as_secs(),
        "backend": c.backend,
        "db_bytes": state.engine().store().size_bytes(),
        "model": model(&state).await?,
        "checks": checks,
        "learns": learns,
        "verdicts": { "spam": verdicts.get("spam").copied().unwrap_or(0), "ham": verdicts.get("ham").copied().unwrap_or(0), "unsure": verdicts.get("unsure").copied().unwrap_or(0) },
        "actions": h.actions(),
        "minutes": minutes,
        "stages": stages,
        "history": { "capacity": h.settings().capacity, "kept": h.len() },
    })))
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "id": e.id,
        "at": e.at,
        "via": e.via,
        "sender": e.sender,
        "rcpt": e.rcpt,
        "subject": e.subject,
        "probability": e.probability,
        "verdict": e.verdict.name(),
        "action": e.action,
        "outcomes": e.fired.iter().map(|f| f.rule).collect::<Vec<_>>(),
        "learnable": e.learnable(),
        "learned": e.learned,
    })
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn history<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    Extension(c): Extension<Arc<Console>>,
    peer: Peer,
    Query(q): Query<Limit>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    viewer(&c, &peer, &headers)?;
    let entries: Vec<Value> = history_of(&state)?.recent(q.limit.unwrap_or(100).min(10_000)).iter().map(entry_json).collect();
    Ok(Json(json!({ "entries": entries })))
}

fn find<S: TokenStore + 'static>(state: &Service<S>, id: u64) -> Result<Entry, ApiError> {
    history_of(state)?.get(id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("check {id} is no longer in the history")))
}

/// One check opened: its listing, with its clues (typed, so each weight
/// reads as `/v1/check` writes it) and the rest.
#[derive(serde::Serialize)]
struct Detail {
    #[serde(flatten)]
    entry: Value,
    clues: Vec<ClueReply>,
    #[serde(flatten)]
    more: Value,
}

async fn history_entry<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    Extension(c): Extension<Arc<Console>>,
    peer: Peer,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Json<Detail>, ApiError> {
    viewer(&c, &peer, &headers)?;
    let e = find(&state, id)?;
    let params = &state.engine().params;
    Ok(Json(Detail {
        entry: entry_json(&e),
        clues: e.clues.to_vec().iter().map(ClueReply::from).collect(),
        more: json!({
            "details": e.fired.iter().map(|f| json!({ "rule": f.rule, "detail": f.detail, "action": f.action })).collect::<Vec<_>>(),
            "content": { "fisher_logit": e.logits[0], "lr_logit": e.logits[1], "gram_logit": e.logits[2], "tokens": e.tokens },
            "ham_cutoff": params.ham_cutoff,
            "spam_cutoff": params.spam_cutoff,
        }),
    }))
}

/// `spam`, `ham` or `forget` (unlearn).
fn class_of(how: &str) -> Result<(Option<Class>, &'static str), ApiError> {
    match how {
        "spam" => Ok((Some(Class::Spam), "spam")),
        "ham" => Ok((Some(Class::Ham), "ham")),
        "forget" => Ok((None, "forget")),
        _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "learn as spam, ham or forget")),
    }
}

async fn learned<S: TokenStore + 'static>(state: &Arc<Service<S>>, outcome: LearnOutcome) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "result": outcome.name(), "model": model(state).await? })))
}

#[derive(Deserialize)]
struct LearnAs {
    #[serde(rename = "as")]
    how: String,
}

async fn history_learn<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    Extension(c): Extension<Arc<Console>>,
    peer: Peer,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    actor(&c, &peer, &headers)?;
    let raw = body.bytes?;
    let LearnAs { how } =
        serde_json::from_slice(&raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("send {{\"as\": \"spam\"}}: {e}")))?;
    let (class, name) = class_of(&how)?;
    let e = find(&state, id)?;
    let kept = e.kept.ok_or_else(|| ApiError::new(StatusCode::GONE, "the message is no longer kept ([ui] history_message_bytes)"))?;
    let outcome = state.train(kept.user, kept.raw.to_vec(), class, kept.env).await.map_err(job)?;
    history_of(&state)?.mark(id, name);
    tracing::info!(check = id, how = name, result = outcome.name(), "console: learned from the history");
    learned(&state, outcome).await
}

async fn learn<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    Extension(c): Extension<Arc<Console>>,
    peer: Peer,
    Query(q): Query<LearnAs>,
    headers: HeaderMap,
    mut body: Body,
) -> Result<Json<Value>, ApiError> {
    actor(&c, &peer, &headers)?;
    let (class, _) = class_of(&q.how)?;
    let raw = message(&mut body)?;
    let outcome = state.train(None, raw, class, None).await.map_err(job)?;
    learned(&state, outcome).await
}

/// Scores a pasted message without recording it.
async fn try_message<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    Extension(c): Extension<Arc<Console>>,
    peer: Peer,
    headers: HeaderMap,
    mut body: Body,
) -> Result<Json<CheckReply>, ApiError> {
    actor(&c, &peer, &headers)?;
    let raw = message(&mut body)?;
    let start = Instant::now();
    let score = blocking(&state, move |e| e.check(&raw)).await?;
    let params = &state.engine().params;
    Ok(Json(CheckReply::new(&score, start.elapsed().as_secs_f64() * 1000.0, params.ham_cutoff, params.spam_cutoff)))
}

/// The Evaluate page's one run.
enum EvalState {
    Idle,
    Running { source: String, done: Arc<AtomicUsize>, total: usize },
    Done { source: String, metrics: crate::eval::Metrics, seconds: f64, svg: String },
    Failed(String),
}

async fn eval_state(Extension(c): Extension<Arc<Console>>, peer: Peer, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    viewer(&c, &peer, &headers)?;
    let st = c.eval.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Json(match &*st {
        EvalState::Idle => json!({ "state": "idle", "done": 0, "total": 0, "result": null, "error": null }),
        EvalState::Running { source, done, total } => {
            json!({ "state": "running", "source": source, "done": done.load(Ordering::Relaxed), "total": total, "result": null, "error": null })
        }
        EvalState::Done { source, metrics: m, seconds, svg: _ } => json!({
            "state": "done", "done": m.messages, "total": m.messages, "error": null,
            "result": {
                "messages": m.messages, "spam": m.spam, "ham": m.ham, "roca": 100.0 * m.one_minus_roca, "lam": 100.0 * m.lam,
                "hm": 100.0 * m.hm, "sm": 100.0 * m.sm, "threshold": 0.5, "seconds": seconds, "source": source,
            },
        }),
        EvalState::Failed(e) => json!({ "state": "failed", "done": 0, "total": 0, "result": null, "error": e }),
    }))
}

async fn eval_roc(Extension(c): Extension<Arc<Console>>, peer: Peer, headers: HeaderMap) -> Result<Response, ApiError> {
    viewer(&c, &peer, &headers)?;
    let st = c.eval.lock().unwrap_or_else(|e| e.into_inner());
    match &*st {
        EvalState::Done { svg, .. } => {
            Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CONTENT_SECURITY_POLICY, CSP)], svg.clone()).into_response())
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no evaluation has finished yet")),
    }
}

/// The labelled folders under `root`, two levels deep: those with `spam/`
/// and `ham/` inside, or a TREC `index` file.
fn labelled_folders(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut walk = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = walk.pop() {
        if dir != root && (dir.join("index").is_file() || (dir.join("spam").is_dir() && dir.join("ham").is_dir())) {
            if let Ok(rel) = dir.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
            continue;
        }
        if depth < 2
            && let Ok(rd) = std::fs::read_dir(&dir)
        {
            walk.extend(rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| (e.path(), depth + 1)));
        }
    }
    out.sort();
    out
}

async fn eval_folders(Extension(c): Extension<Arc<Console>>, peer: Peer, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    viewer(&c, &peer, &headers)?;
    let root = c.cfg.eval_root.clone();
    let folders = match &root {
        Some(r) => {
            let r = r.clone();
            tokio::task::spawn_blocking(move || labelled_folders(&r)).await.unwrap_or_default()
        }
        None => Vec::new(),
    };
    Ok(Json(json!({ "root": root, "folders": folders })))
}

#[derive(Deserialize)]
struct Upload {
    label: String,
    data: String,
}

#[derive(Deserialize)]
struct EvalRequest {
    folder: Option<String>,
    messages: Option<Vec<Upload>>,
}

/// The messages of a labelled folder under `root`, in on-line order: a
/// TREC index's order, or spam and ham interleaved by file name (every
/// file must stay under `root`).
fn folder_entries(root: &std::path::Path, folder: &str) -> Result<Vec<crate::mailbox::Entry>, String> {
    let root = root.canonicalize().map_err(|e| format!("eval_root: {e}"))?;
    let dir = root.join(folder).canonicalize().map_err(|_| format!("no folder {folder:?} under eval_root"))?;
    if !dir.starts_with(&root) {
        return Err(format!("{folder:?} is not under eval_root"));
    }
    let inside = |e: &crate::mailbox::Entry| match &e.location {
        crate::mailbox::Location::File(p) | crate::mailbox::Location::Mbox { path: p, .. } => p.canonicalize().is_ok_and(|p| p.starts_with(&root)),
    };
    let entries = if dir.join("index").is_file() {
        crate::mailbox::index(&dir.join("index")).map_err(|e| e.to_string())?
    } else {
        let label = |sub: &str, class: Class| -> Result<Vec<crate::mailbox::Entry>, String> {
            let mut v = crate::mailbox::entries(&dir.join(sub)).map_err(|e| e.to_string())?;
            v.iter_mut().for_each(|e| e.label = Some(class));
            Ok(v)
        };
        let (spam, ham) = (label("spam", Class::Spam)?, label("ham", Class::Ham)?);
        interleave(spam, ham)
    };
    if let Some(e) = entries.iter().find(|e| !inside(e)) {
        return Err(format!("{} is not under eval_root", e.name()));
    }
    if entries.len() > EVAL_MAX {
        return Err(format!("{} messages: at most {EVAL_MAX} are evaluated here (use `hamlet eval`)", entries.len()));
    }
    Ok(entries)
}

/// Two lists merged in proportion, so the stream keeps their mix
/// throughout (as mail arrives), each in its own order.
fn interleave<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    let (na, nb) = (a.len(), b.len());
    let mut out = Vec::with_capacity(na + nb);
    let (mut ia, mut ib) = (a.into_iter().peekable(), b.into_iter().peekable());
    let (mut ta, mut tb) = (0usize, 0usize);
    while ia.peek().is_some() || ib.peek().is_some() {
        // Take from whichever list is behind its share.
        let a_next = ib.peek().is_none() || (ia.peek().is_some() && ta * nb <= tb * na);
        if a_next {
            out.extend(ia.next());
            ta += 1;
        } else {
            out.extend(ib.next());
            tb += 1;
        }
    }
    out
}

async fn eval_start<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    Extension(c): Extension<Arc<Console>>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    actor(&c, &peer, &headers)?;
    let raw = body.bytes?;
    let req: EvalRequest =
        serde_json::from_slice(&raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad evaluation request: {e}")))?;
    enum Source {
        Folder(Vec<crate::mailbox::Entry>),
        Upload(Vec<(Class, Vec<u8>)>),
    }
    let (source, name) = match (req.folder, req.messages) {
        (Some(folder), None) => {
            let root = c.cfg.eval_root.clone().ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "no [ui] eval_root: upload messages instead"))?;
            let f = folder.clone();
            let entries = tokio::task::spawn_blocking(move || folder_entries(&root, &f))
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
            (Source::Folder(entries), folder)
        }
        (None, Some(msgs)) => {
            let mut out = Vec::with_capacity(msgs.len());
            for (i, m) in msgs.into_iter().enumerate() {
                let class =
                    Class::parse(&m.label).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("message {i}: label spam or ham")))?;
                let bytes = mail_parser::decoders::base64::base64_decode(m.data.as_bytes())
                    .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("message {i}: data is not base64")))?;
                out.push((class, bytes));
            }
            let n = out.len();
            (Source::Upload(out), format!("{n} uploaded messages"))
        }
        _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "send a folder or messages, not both")),
    };
    let total = match &source {
        Source::Folder(e) => e.len(),
        Source::Upload(m) => m.len(),
    };
    let done = Arc::new(AtomicUsize::new(0));
    {
        let mut st = c.eval.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*st, EvalState::Running { .. }) {
            return Err(ApiError::new(StatusCode::CONFLICT, "an evaluation is running"));
        }
        *st = EvalState::Running { source: name.clone(), done: done.clone(), total };
    }
    let slot = c.eval.clone();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let e = state.engine();
        let run = || -> crate::Result<Vec<crate::eval::Judgement>> {
            let prepared: Vec<(Class, crate::engine::Prepared)> = match source {
                Source::Folder(entries) => crate::eval::prepare_all(&e.tokenizer, &entries, 1)?,
                Source::Upload(msgs) => msgs.into_iter().map(|(class, raw)| (class, e.prepare(&raw))).collect(),
            };
            let fresh = crate::eval::empty(&e.params);
            let mut out = Vec::with_capacity(prepared.len());
            for chunk in prepared.chunks(100) {
                out.extend(crate::eval::online_with(&fresh, chunk, crate::eval::TrainMode::OnEverything)?);
                done.store(out.len(), Ordering::Relaxed);
            }
            Ok(out)
        };
        let next = match run() {
            Ok(j) if j.is_empty() => EvalState::Failed("no messages".into()),
            Ok(j) => EvalState::Done {
                metrics: crate::eval::metrics(&j, 0.5),
                seconds: start.elapsed().as_secs_f64(),
                svg: crate::eval::roc_svg(&j, &name),
                source: name,
            },
            Err(err) => EvalState::Failed(err.to_string()),
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = next;
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "state": "running" }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_keeps_the_mix_and_each_order() {
        let out = interleave(vec!["s1", "s2", "s3", "s4"], vec!["h1", "h2"]);
        assert_eq!(out, vec!["s1", "h1", "s2", "s3", "h2", "s4"]);
        assert_eq!(interleave(Vec::<u8>::new(), vec![1, 2]), vec![1, 2]);
        assert_eq!(interleave(vec![1], Vec::new()), vec![1]);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; hamlet_console=abc; b=2"));
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        assert_eq!(cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn labelled_folders_stay_under_the_root() {
        let dir = std::env::temp_dir().join(format!("hamlet-ui-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["a/spam", "a/ham", "b/c", "outside/spam", "outside/ham"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("a/spam/1"), "Subject: x\r\n\r\nbuy\r\n").unwrap();
        std::fs::write(dir.join("a/ham/1"), "Subject: y\r\n\r\nhi\r\n").unwrap();
        std::fs::write(dir.join("b/c/index"), "spam ../../outside/spam/1\n").unwrap();
        std::fs::write(dir.join("outside/spam/1"), "x").unwrap();
        let root = dir.join("b");
        assert_eq!(labelled_folders(&dir), vec!["a", "b/c", "outside"]);
        let e = folder_entries(&dir, "a").unwrap();
        assert_eq!(e.iter().map(|e| e.label).collect::<Vec<_>>(), vec![Some(Class::Spam), Some(Class::Ham)]);
        assert!(folder_entries(&root, "c").unwrap_err().contains("not under eval_root"), "an index may not reach out");
        assert!(folder_entries(&root, "../a").unwrap_err().contains("not under eval_root"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
