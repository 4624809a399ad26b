//! The HTTP scoring and training API of `hamlet serve` (axum on tokio),
//! documented in `api.md`: a thin edge over the shared [`Service`], whose
//! [`Service::blocking`] runs the engine's work off the reactor.
//!
//! Errors have one JSON shape, `{"error": {"status": 413, "message": "..."}}`;
//! 5xx bodies say only "internal error", the detail goes to the log.
//!
//! Request bodies are read by [`Body`]: a declared length over the limit
//! is refused before any byte is read, the body has a deadline, and its
//! bytes take room in the listeners' shared budget ([`crate::listener::Guard`]).

mod serve;
pub mod ui;

pub use serve::{Options, serve};
pub use ui::Console;

use crate::Class;
use crate::engine::{Engine, LearnOutcome};
use crate::envelope::antivirus::Scan;
use crate::envelope::{Decision, Envelope, Report};
use crate::listener::{Room, Slot};
use crate::protocol::reply::{AntivirusStage, CheckReply, EnvelopeStage, ErrorBody, ErrorReply, LearnReply, OutcomeReply};
use crate::service::{Checked, JobError, Service};
use crate::store::TokenStore;
use axum::extract::{DefaultBodyLimit, FromRequest, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An API error: status and a one-line message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorReply { error: ErrorBody { status: self.status.as_u16(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

/// The body limits every handler reads with.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_body: usize,
    /// From the end of the head to the body's last byte.
    body_timeout: Duration,
}

/// The client's address, when it came over TCP ([`serve`] puts it in the
/// request; a request from elsewhere, a test's, has none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Peer, Self::Rejection> {
        Ok(parts.extensions.get::<Peer>().copied().unwrap_or_default())
    }
}

/// The router, with its state; bodies up to `max_body_bytes`, each read
/// within the service's time limit. Tests drive it with
/// `tower::ServiceExt::oneshot`; [`serve`] adds the connection's place in
/// the listeners' budget.
pub fn router<S: TokenStore + 'static>(state: Arc<Service<S>>, max_body_bytes: usize) -> Router {
    app(state, max_body_bytes, None)
}

/// [`router`], with the web console at `/ui/` when given one.
pub fn app<S: TokenStore + 'static>(state: Arc<Service<S>>, max_body_bytes: usize, console: Option<Console>) -> Router {
    let limits = Limits { max_body: max_body_bytes, body_timeout: state.timeout() };
    let console = console.map(|c| (ui::routes::<S>(), Arc::new(c)));
    let routes = Router::new()
        .route("/v1/check", post(check::<S>))
        .route("/v1/learn/spam", post(learn_spam::<S>))
        .route("/v1/learn/ham", post(learn_ham::<S>))
        .route("/v1/unlearn", post(unlearn::<S>))
        .route("/v1/stats", get(stats::<S>))
        .route("/healthz", get(healthz::<S>))
        .route("/metrics", get(metrics_text::<S>))
        .route("/ping", get(|| async { "pong\n" }))
        .route("/checkv2", post(checkv2::<S>))
        .route("/learnspam", post(rspamd_learn_spam::<S>))
        .route("/learnham", post(rspamd_learn_ham::<S>))
        .route("/stat", get(rspamd_stat::<S>))
        .route("/counters", get(rspamd_counters::<S>))
        .route("/auth", get(rspamd_auth::<S>));
    let routes = match console {
        Some((ui, c)) => routes.merge(ui).layer(axum::Extension(c)),
        None => routes,
    };
    routes
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::<S>))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::Extension(limits))
        .with_state(state)
}

/// Gives every error reply of the router the one JSON shape: axum's own
/// (405 for a wrong method, an extractor's 400, 413 or 415) come with an
/// empty or plain-text body, which this rewrites, keeping their status and
/// headers (`Allow` on a 405).
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    let message = match (status, first) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => "method not allowed (see api.md)".to_string(),
        (s, _) if s.is_server_error() => "internal error".to_string(),
        (_, Some(l)) => l.to_string(),
        (s, None) => s.canonical_reason().unwrap_or("error").to_ascii_lowercase(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let mut fixed = ApiError::new(status, message).into_response();
    for (k, v) in &parts.headers {
        fixed.headers_mut().entry(k).or_insert_with(|| v.clone());
    }
    fixed
}

/// rspamd's compressed request bodies: `Compression: zstd` (what `rspamc
/// -z` sends), or `Content-Encoding: zstd`, or a body that starts with
/// zstd's magic number (rspamd sniffs it too; no RFC 822 message starts
/// with those bytes). Whether the headers declare zstd; any other encoding,
/// or a zstd dictionary, is a 415, never scored as bytes. The body is
/// decoded where it is read ([`read_body`]), within `max_body_bytes` (413
/// past it, without inflating the rest).
fn declared_zstd(headers: &HeaderMap) -> Result<bool, ApiError> {
    let coding = |name: &str| headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_ascii_lowercase());
    let declared = [coding("compression"), coding("content-encoding")].into_iter().flatten().find(|c| !c.is_empty() && c != "identity");
    if let Some(c) = &declared
        && c != "zstd"
    {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unsupported body compression {c:?}: send zstd or none")));
    }
    if headers.contains_key("dictionary") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "zstd dictionaries (the Dictionary header) are not supported: compress without one",
        ));
    }
    Ok(declared.is_some())
}

/// Decodes a zstd body within `max` bytes.
async fn unzstd(bytes: Vec<u8>, max: usize) -> Result<Vec<u8>, ApiError> {
    match tokio::task::spawn_blocking(move || crate::protocol::zstd::unzstd(&bytes, max)).await {
        Ok(Ok(raw)) => Ok(raw),
        Ok(Err(e @ crate::protocol::zstd::UnzstdError::TooLarge(_))) => Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())),
        Ok(Err(e)) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Times every request and counts it by route pattern and status.
async fn observe<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.extensions().get::<axum::extract::MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
    state.metrics().request(&path, resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
}

async fn metrics_text<S: TokenStore + 'static>(State(state): State<Arc<Service<S>>>) -> Response {
    let body = state.metrics().render(state.engine().store().size_bytes(), state.uptime().as_secs());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint (see api.md)")
}

/// Runs the engine's (blocking) work off the reactor, within the time limit.
async fn blocking<S, T, F>(state: &Arc<Service<S>>, f: F) -> Result<T, ApiError>
where
    S: TokenStore + 'static,
    T: Send + 'static,
    F: FnOnce(&Engine<S>) -> crate::Result<T> + Send + 'static,
{
    state.blocking(f).await.map_err(job)
}

/// How long a body waits for room in the budget before the request gets 503.
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// A request body, read within the limits: the bytes (or why there are
/// none) and their room in the budget, held while the handler runs. The
/// error is kept for the handler to return after its own checks (a learn
/// without its token is 401 whatever its body).
pub struct Body {
    bytes: Result<Vec<u8>, ApiError>,
    _room: Vec<Room>,
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Body, Self::Rejection> {
        Ok(read_body(req).await)
    }
}

async fn read_body(req: axum::extract::Request) -> Body {
    let limits = req.extensions().get::<Limits>().copied().unwrap_or(Limits { max_body: 20 << 20, body_timeout: Duration::from_secs(30) });
    let slot = req.extensions().get::<Slot>().cloned();
    let fail = |status, message: String| Body { bytes: Err(ApiError::new(status, message)), _room: Vec::new() };
    let zstd = match declared_zstd(req.headers()) {
        Ok(z) => z,
        Err(e) => return Body { bytes: Err(e), _room: Vec::new() },
    };
    let too_large = || format!("message too large: the limit is {} bytes (max_body_bytes)", limits.max_body);
    let declared = match req.headers().get(header::CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok())) {
        Some(None) => return fail(StatusCode::BAD_REQUEST, "Content-Length is not a number".into()),
        Some(Some(n)) if n > limits.max_body as u64 => return fail(StatusCode::PAYLOAD_TOO_LARGE, too_large()),
        Some(Some(n)) => Some(n as usize),
        None => None,
    };
    let busy = || fail(StatusCode::SERVICE_UNAVAILABLE, "server busy: too many message bytes in flight, try again".into());
    let mut rooms = Vec::new();
    if let Some(slot) = &slot {
        match slot.reserve(declared.unwrap_or(limits.max_body), ROOM_WAIT).await {
            Some(r) => rooms.push(r),
            None => return busy(),
        }
    }
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    let mut body = req.into_body();
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                let msg = format!(
                    "timed out reading the request body ({} of {} bytes in {} s)",
                    buf.len(),
                    declared.map_or("?".into(), |n| n.to_string()),
                    limits.body_timeout.as_secs()
                );
                return fail(StatusCode::REQUEST_TIMEOUT, msg);
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return fail(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}")),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limits.max_body {
                        return fail(StatusCode::PAYLOAD_TOO_LARGE, too_large());
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    if let Some(slot) = &slot {
        slot.working();
    }
    if zstd || buf.starts_with(&crate::protocol::zstd::MAGIC) {
        // Room for what it decodes to, at most the limit.
        if let Some(slot) = &slot {
            match slot.reserve(limits.max_body, ROOM_WAIT).await {
                Some(r) => rooms.push(r),
                None => return busy(),
            }
        }
        return Body { bytes: unzstd(buf, limits.max_body).await, _room: rooms };
    }
    Body { bytes: Ok(buf), _room: rooms }
}

/// A body that arrived is a message; an empty one is a client error, and one
/// that could not be read gets the JSON error shape too.
fn message(body: &mut Body) -> Result<Vec<u8>, ApiError> {
    let raw = std::mem::replace(&mut body.bytes, Ok(Vec::new()))?;
    if raw.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty body: send the raw RFC 822 message"));
    }
    Ok(raw)
}

/// The request's user (`X-Hamlet-User`, or rspamd's `Deliver-To`), for
/// per-user models. (rspamd's `User` is the SASL user: see [`envelope`].)
fn user(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("x-hamlet-user").or_else(|| headers.get("deliver-to")) else { return Ok(None) };
    match v.to_str().map(|u| u.trim().trim_start_matches('<').trim_end_matches('>')) {
        Ok(u) if crate::users::valid_name(u) => Ok(Some(u.to_string())),
        _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad user name: letters, digits and -_.@+ only")),
    }
}

/// The SMTP envelope from rspamd's request headers: `IP` (client address),
/// `Hostname` (its verified reverse DNS name), `Helo`, `From` (MAIL FROM),
/// `Rcpt` (repeated, or comma-separated), `User` (SASL user). `None` when
/// the request carries none of them.
fn envelope(headers: &HeaderMap) -> Result<Option<Envelope>, ApiError> {
    // Lossy, not to_str(): a UTF-8 address must not vanish.
    let get = |n: &str| headers.get(n).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    if ["ip", "hostname", "helo", "from", "rcpt"].iter().all(|n| headers.get(*n).is_none()) {
        return Ok(None);
    }
    let client_ip = match get("ip") {
        Some(ip) => Some(ip.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("IP header {ip:?} is not an address")))?),
        None => None,
    };
    let unbracket = |s: &str| s.trim().trim_start_matches('<').trim_end_matches('>').to_string();
    let rcpt_to = headers
        .get_all("rcpt")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .flat_map(|v| v.split(',').map(unbracket).collect::<Vec<_>>())
        .filter(|r| !r.is_empty())
        .collect();
    let known = crate::envelope::Known { helo: get("helo").is_some(), mail_from: get("from").is_some(), client_name: get("hostname").is_some() };
    Ok(Some(Envelope {
        client_ip,
        client_name: get("hostname").filter(|h| !h.is_empty() && h != "unknown"),
        helo: get("helo").unwrap_or_default(),
        mail_from: get("from").map(|f| unbracket(&f)).unwrap_or_default(),
        rcpt_to,
        sasl_user: get("user").filter(|u| !u.is_empty()),
        known,
    }))
}

/// The envelope stage of a check reply.
fn envelope_stage(r: &Report) -> EnvelopeStage {
    let (decision, text) = match &r.decision {
        Decision::Continue => ("continue", None),
        Decision::Defer(t) => ("defer", Some(t.clone())),
        Decision::Reject(t) => ("reject", Some(t.clone())),
    };
    let outcomes = r
        .outcomes
        .iter()
        .map(|o| OutcomeReply { rule: o.rule.to_string(), token: o.token.clone(), detail: o.detail.clone(), action: o.action.name().to_string() })
        .collect();
    EnvelopeStage { decision: decision.into(), text, outcomes }
}

fn job(e: JobError) -> ApiError {
    match e {
        JobError::TimedOut => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timed out"),
        JobError::StoreUnavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
        JobError::UsersFull(m) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, m),
        JobError::Infected(name) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("virus found: {name}; an infected message is not learned"))
        }
        JobError::Failed(e) => ApiError::internal(e),
    }
}

async fn check<S: TokenStore + 'static>(
    State(state): State<Arc<Service<S>>>,
    headers: HeaderMap,
    mut body: Body,
) -> Result<Json<CheckReply>, ApiError> {
    let start = Instant::now();
    let user = user(&headers)?;
    let env = envelope(&headers)?;
    let raw = message(&mut body)?;
    let Checked { score, report, .. } = state.check("http", user, raw, env).await.map_err(job)?;
    let params = &state.engine().params;
    let mut reply = CheckReply::new(&score, start.elapsed().as_secs_f64() * 1000.0, params.ham_cutoff, params.spam_cutoff);
    reply.stages.envelope = report.as_ref().map(envelope_stage);
    reply.stages.antivirus = match (report.as_ref().and_then(|r| r.antivirus.as_ref()), state.antivirus()) {
        (Some(scan), Some(av)) => Some(AntivirusStage {
            result: scan.name().to_string(),
            name: scan.virus().map(str::to_string),
            detail: match scan {
                Scan::Skipped(why) | Scan::Error(why) => Some(why.clone()),
                _ => None,
            },
            action: av.action_name(scan).to_string(),
        }),
        _ => None,
    };
    Ok(Json(reply))
}

fn authorize<S: TokenStore>(state: &Service<S>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(want) = state.learn_token() else { return Ok(()) };
    // `Authorization: Bearer <token>` (the scheme in any case, RFC 9110
    // 11.1), or rspamd's `Password: <token>` (rspamc -P).
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .or_else(|| headers.get("password").and_then(|v| v.to_str().ok()));
    match got {
        Some(g) if same_token(g, want) => Ok(()),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "learning needs `Authorization: Bearer <learn token>`")),
    }
}

/// Compares the SHA-256 digests of the two, without an early exit: the
/// time taken says nothing of the token, its length included.
fn same_token(got: &str, want: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(got.as_bytes()), Sha256::digest(want.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn learn_as<S: TokenStore + 'static>(
    state: Arc<Service<S>>,
    headers: HeaderMap,
    mut body: Body,
    class: Option<Class>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let user = user(&headers)?;
    let raw = message(&mut body)?;
    let env = envelope(&headers)?;
    let outcome = state.train(user, raw, class, env).await.map_err(job)?;
    let status = match outcome {
        LearnOutcome::AlreadyLearned => StatusCode::ALREADY_REPORTED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(LearnReply { result: outcome.name().into() })).into_response())
}

async fn learn_spam<S: TokenStore + 'static>(State(s): State<Arc<Service<S>>>, h: HeaderMap, b: Body) -> Result<Response, ApiError> {
    learn_as(s, h, b, Some(Class::Spam)).await
}

async fn learn_ham<S: TokenStore + 'static>(State(s): State<Arc<Service<S>>>, h: HeaderMap, b: Body) -> Result<Response, ApiError> {
    learn_as(s, h, b, Some(Class::Ham)).await
}

async fn unlearn<S: TokenStore + 'static>(State(s): State<Arc<Service<S>>>, h: HeaderMap, b: Body) -> Result<Response, ApiError> {
    learn_as(s, h, b, None).await
}

/// rspamd's score scale: `score = 15 · p` (two decimals), so the verdict
/// cutoffs land at 15 · 0.20 = 3 and 15 · 0.90 = 13.5, and `required_score`
/// is the spam cutoff on that scale. Actions: spam -> `add header`, unsure and
/// ham -> `no action` (content alone never rejects; envelope checks may).
pub const RSPAMD_SCALE: f64 = 15.0;

async fn checkv2<S: TokenStore + 'static>(State(state): State<Arc<Service<S>>>, headers: HeaderMap, mut body: Body) -> Result<Json<Value>, ApiError> {
    let start = Instant::now();
    let user = user(&headers)?;
    let env = envelope(&headers)?;
    let raw = message(&mut body)?;
    let msgid = crate::digest::header_value(crate::message::split(&raw).0, "message-id")
        .map(|v| String::from_utf8_lossy(&v).trim_start_matches('<').trim_end_matches('>').to_string());
    let checked = state.check("checkv2", user, raw, env).await.map_err(job)?;
    let (score, report) = (&checked.score, &checked.report);
    let p = score.probability;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let (name, desc) = match score.verdict {
        crate::classify::Verdict::Spam => ("HAMLET_SPAM", "hamlet: spam"),
        crate::classify::Verdict::Ham => ("HAMLET_HAM", "hamlet: ham"),
        crate::classify::Verdict::Unsure => ("HAMLET_UNSURE", "hamlet: unsure"),
    };
    let options: Vec<String> = score.clues.iter().take(10).map(|c| format!("{}({:.3})", c.token, c.prob)).collect();
    let sym_score = round(RSPAMD_SCALE * p);
    // Envelope outcomes are symbols too (scored 0: their weight is in the
    // content score through their tokens); a reject or defer decides the
    // action, as rspamd's own envelope modules would.
    let mut symbols = json!({ name: { "name": name, "score": sym_score, "metric_score": sym_score, "description": desc, "options": options } });
    if score.store_error {
        symbols["STORE_ERROR"] =
            json!({ "name": "STORE_ERROR", "score": 0.0, "metric_score": 0.0, "description": "hamlet: the model could not be read", "options": [] });
    }
    let mut action = if score.verdict == crate::classify::Verdict::Spam { "add header" } else { "no action" };
    if let Some(r) = &report {
        for o in &r.outcomes {
            let options = match (o.rule, &r.antivirus) {
                ("AV_VIRUS", Some(scan)) => vec![scan.virus().unwrap_or_default().to_string()],
                _ if o.token.is_empty() => Vec::new(),
                _ => vec![o.token.clone()],
            };
            symbols[o.rule] = json!({ "name": o.rule, "score": 0.0, "metric_score": 0.0, "description": o.detail, "options": options });
        }
        match r.decision {
            Decision::Reject(_) => action = "reject",
            Decision::Defer(_) => action = "soft reject",
            Decision::Continue => {}
        }
    }
    let mut reply = json!({
        "is_skipped": false,
        "score": sym_score,
        "required_score": round(RSPAMD_SCALE * state.engine().params.spam_cutoff),
        "action": action,
        "symbols": symbols,
        "messages": {},
        "time_real": start.elapsed().as_secs_f64(),
    });
    if let Some(id) = msgid {
        reply["message-id"] = json!(id);
    }
    state.acted(&checked, action);
    Ok(Json(reply))
}

/// rspamd's learn replies: `{"success": true}`, or 208 when already learned.
async fn rspamd_learn<S: TokenStore + 'static>(state: Arc<Service<S>>, headers: HeaderMap, body: Body, class: Class) -> Result<Response, ApiError> {
    let resp = learn_as(state, headers, body, Some(class)).await?;
    Ok(if resp.status() == StatusCode::ALREADY_REPORTED {
        (StatusCode::ALREADY_REPORTED, Json(json!({ "error": format!("already learned as {class}"), "success": false }))).into_response()
    } else {
        Json(json!({ "success": true })).into_response()
    })
}

async fn rspamd_learn_spam<S: TokenStore + 'static>(State(s): State<Arc<Service<S>>>, h: HeaderMap, b: Body) -> Result<Response, ApiError> {
    rspamd_learn(s, h, b, Class::Spam).await
}

async fn rspamd_learn_ham<S: TokenStore + 'static>(State(s): State<Arc<Service<S>>>, h: HeaderMap, b: Body) -> Result<Response, ApiError> {
    rspamd_learn(s, h, b, Class::Ham).await
}

async fn stats<S: TokenStore + 'static>(State(state): State<Arc<Service<S>>>) -> Result<Json<Value>, ApiError> {
    let (st, tokens, journal) = blocking(&state, |e| {
        let v = e.store().read()?;
        Ok((v.state()?, v.token_count()?, v.journal_count()?))
    })
    .await?;
    let (checks, learns) = state.counts();
    Ok(Json(json!({
        "messages": { "spam": st.messages.spam, "ham": st.messages.ham },
        "tokens": tokens,
        "journal": journal,
        "db_bytes": state.engine().store().size_bytes(),
        "uptime_s": state.uptime().as_secs(),
        "checks": checks,
        "learns": learns,
    })))
}

/// The learned messages and tokens of the shared model, and the number of
/// per-user models: what `/stat` and `/auth` report of the store.
async fn store_state<S: TokenStore + 'static>(state: &Arc<Service<S>>) -> Result<(crate::store::ModelState, u64), ApiError> {
    blocking(state, |e| {
        let v = e.store().read()?;
        Ok((v.state()?, v.token_count()?))
    })
    .await
}

/// rspamd's `/stat` (`rspamc stat`), from this service's own counters:
/// checks since start and their actions (spam -> `add header`, else `no
/// action`, as `/checkv2` answers), learns that changed the model, and one
/// statfile per class for the shared model (`revision`: messages learned as
/// that class; `used` and `total`: tokens; `size`: database bytes; `users`:
/// per-user models on disk, plus the shared model).
async fn rspamd_stat<S: TokenStore + 'static>(State(state): State<Arc<Service<S>>>) -> Result<Json<Value>, ApiError> {
    let (st, tokens) = store_state(&state).await?;
    let (scanned, learned) = state.counts();
    let verdicts = state.metrics().verdicts();
    let spam = verdicts.get("spam").copied().unwrap_or(0);
    let size = state.engine().store().size_bytes();
    let users = 1 + state.user_models();
    let statfile = |symbol: &str, revision: u64| json!({ "revision": revision, "used": tokens, "total": tokens, "size": size, "symbol": symbol, "type": "redb", "languages": 0, "users": users });
    Ok(Json(json!({
        "read_only": false,
        "scanned": scanned,
        "learned": learned,
        "actions": { "reject": 0, "soft reject": 0, "rewrite subject": 0, "add header": spam, "greylist": 0, "no action": scanned.saturating_sub(spam) },
        "scan_times": [],
        "spam_count": spam,
        "ham_count": scanned.saturating_sub(spam),
        "connections": state.metrics().requests_total(),
        "control_connections": 0,
        "pools_allocated": 0, "pools_freed": 0, "bytes_allocated": 0, "chunks_allocated": 0,
        "shared_chunks_allocated": 0, "chunks_freed": 0, "chunks_oversized": 0, "fragmented": 0,
        "total_learns": learned,
        "statfiles": [statfile("BAYES_SPAM", st.messages.spam), statfile("BAYES_HAM", st.messages.ham)],
        "fuzzy_hashes": {},
        "uptime": state.uptime().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "config_id": "",
    })))
}

/// rspamd's `/counters` (`rspamc counters`): hamlet's three verdict
/// symbols, each with its hits since start and their rate per second
/// (`frequency`); `weight` is the rspamd scale (a symbol scores 15 × p).
async fn rspamd_counters<S: TokenStore + 'static>(State(state): State<Arc<Service<S>>>) -> Json<Value> {
    let verdicts = state.metrics().verdicts();
    let secs = state.uptime().as_secs_f64().max(1.0);
    let rows: Vec<Value> = [("HAMLET_SPAM", "spam"), ("HAMLET_UNSURE", "unsure"), ("HAMLET_HAM", "ham")]
        .iter()
        .map(|(symbol, v)| {
            let hits = verdicts.get(v).copied().unwrap_or(0);
            json!({ "symbol": symbol, "weight": RSPAMD_SCALE, "frequency": hits as f64 / secs, "hits": hits, "time": 0.0 })
        })
        .collect();
    Json(Value::Array(rows))
}

/// rspamd's `/auth`, which `rspamc uptime` asks: the version, seconds since
/// start and the scan and learn counts.
async fn rspamd_auth<S: TokenStore + 'static>(State(state): State<Arc<Service<S>>>) -> Json<Value> {
    let (scanned, learned) = state.counts();
    Json(json!({ "auth": "ok", "version": env!("CARGO_PKG_VERSION"), "uptime": state.uptime().as_secs(), "error": 0,
        "scanned": scanned, "learned": learned, "config_id": "", "read_only": false }))
}

async fn healthz<S: TokenStore + 'static>(State(state): State<Arc<Service<S>>>) -> Result<Json<Value>, ApiError> {
    // A database that cannot be read, written (a full disk) or is damaged
    // is unhealthy, with the store's reason; the store reopens itself here
    // after an I/O error, so health comes back without a learn.
    state.blocking(|e| e.store().health()).await.map_err(|e| {
        let why = match e {
            JobError::TimedOut => "timed out".to_string(),
            JobError::Failed(e) | JobError::UsersFull(e) | JobError::StoreUnavailable(e) | JobError::Infected(e) => e,
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {why}"))
    })?;
    Ok(Json(json!({ "status": "ok" })))
}
