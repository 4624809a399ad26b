//! The SPAMD listener of `hamlet serve`: SpamAssassin's spamc/spamd protocol
//! (versions 1.2–1.5) over TCP or a UNIX socket, so real `spamc` and
//! everything that speaks to spamd (Exim's `spam =` condition, milters,
//! MIMEDefang) use hamlet unchanged. The wire format is in
//! [`crate::protocol::spamd`].
//!
//! One request per connection, as spamc does: read the head line by line
//! (each line at most [`crate::protocol::spamd::MAX_LINE`] bytes), then exactly
//! `Content-length` body bytes (at most `max_body_bytes`), answer, close.
//! A bad request gets its sysexits status line and the connection closes;
//! nothing else is affected. Reading the request has the service's time
//! limit, and so does the engine's work.

use crate::Class;
use crate::config::Config;
use crate::engine::LearnOutcome;
use crate::listener::{self, Conn, Guard, Listener, Slot};
use crate::net::Cidr;
use crate::protocol::spamd::{self as proto, Command, Outcome, ProtoError, Request, Status};
use crate::service::{JobError, Service};
use crate::store::TokenStore;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

/// The listener's settings (from [`Config`]).
#[derive(Debug, Clone)]
pub struct Options {
    pub allow_tell: bool,
    pub tell_from: Vec<Cidr>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Time limit for reading a request's body (and the engine's work).
    pub timeout: Duration,
    /// Time limit for the request line and headers: short, so clients that
    /// connect and dawdle cannot hold every connection slot for long.
    pub head_timeout: Duration,
}

impl Options {
    /// The listener's part of the configuration (already [`Config::check`]ed).
    pub fn from_config(cfg: &Config) -> Options {
        Options {
            allow_tell: cfg.spamd_allow_tell,
            tell_from: cfg.spamd_tell_from.iter().filter_map(|c| Cidr::parse(c).ok()).collect(),
            max_body_bytes: cfg.max_body_bytes,
            max_connections: cfg.spamd_max_connections,
            timeout: Duration::from_secs(cfg.timeout_s),
            head_timeout: Duration::from_secs(cfg.head_timeout_s.min(cfg.timeout_s)),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::from_config(&Config::default())
    }
}

/// Serves until `shutdown` completes, then waits (up to the time limit plus
/// five seconds) for connections in flight to finish. Bodies take their
/// room in `guard`'s budget, shared with the other listeners.
pub async fn serve<S: TokenStore + 'static>(
    listener: Listener,
    service: Arc<Service<S>>,
    opts: Options,
    guard: Arc<Guard>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let opts = Arc::new(opts);
    let drain = opts.timeout + Duration::from_secs(5);
    listener::serve(listener, "spamd", opts.max_connections, drain, guard, shutdown, |conn, peer, slot| {
        let (service, opts) = (service.clone(), opts.clone());
        async move { handle(&service, &opts, &slot, conn, peer).await }
    })
    .await;
}

/// How long a body waits for room in the budget before it is refused.
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// Serves one connection: one request, one reply.
async fn handle<S: TokenStore + 'static>(service: &Arc<Service<S>>, opts: &Options, slot: &Slot, stream: Conn, peer: Option<IpAddr>) {
    let start = Instant::now();
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let (label, reply) = match respond(service, opts, slot, &mut r, peer).await {
        Ok((cmd, reply)) => (cmd.name(), Ok(reply)),
        Err((cmd, e)) => (cmd.map_or("unparsed", Command::name), Err(e)),
    };
    let (status, bytes) = match reply {
        Ok(b) => (Status::Ok, b),
        Err(e) => {
            tracing::info!(peer = ?peer, command = label, error = %e, "spamd request refused");
            (e.status, e.reply())
        }
    };
    service.metrics().request(&format!("spamd {label}"), u16::from(status.code()), start.elapsed().as_secs_f64());
    let _ = tokio::time::timeout(opts.timeout, async {
        w.write_all(&bytes).await?;
        w.shutdown().await
    })
    .await;
    // Read what the client may still be sending (a refused oversize body),
    // briefly, so closing does not reset the connection under our reply.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut sink = [0u8; 16 << 10];
        let mut left = opts.max_body_bytes + (64 << 10);
        while left > 0 {
            match r.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

type Failure = (Option<Command>, ProtoError);

/// Reads one request and computes its reply.
async fn respond<S: TokenStore + 'static, R: AsyncRead + Unpin>(
    service: &Arc<Service<S>>,
    opts: &Options,
    slot: &Slot,
    r: &mut BufReader<R>,
    peer: Option<IpAddr>,
) -> Result<(Command, Vec<u8>), Failure> {
    let req = match tokio::time::timeout(opts.head_timeout, read_head(r)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err((None, ProtoError::new(Status::IoErr, "timed out reading the request head"))),
    };
    let cmd = req.command;
    let fail = |e: ProtoError| (Some(cmd), e);
    match cmd {
        Command::Ping => return Ok((cmd, b"SPAMD/1.5 0 PONG\r\n".to_vec())),
        Command::Skip => return Ok((cmd, Vec::new())),
        _ => {}
    }
    // Room in the budget for this body before reading it: the body, and
    // as much again for the rewritten reply (a compressed body may grow to
    // max_body_bytes).
    let want = if req.compress { opts.max_body_bytes } else { req.content_length.unwrap_or(opts.max_body_bytes).min(opts.max_body_bytes) };
    let Some(_room) = slot.reserve(want.saturating_mul(2), ROOM_WAIT).await else {
        return Err(fail(ProtoError::new(Status::TempFail, "server busy: too many message bytes in flight, try again")));
    };
    let body = match tokio::time::timeout(opts.timeout, read_body(r, &req, opts.max_body_bytes)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(fail(e)),
        Err(_) => return Err(fail(ProtoError::new(Status::IoErr, "timed out reading the message"))),
    };
    slot.working();
    let raw = if req.compress {
        let max = opts.max_body_bytes;
        tokio::task::spawn_blocking(move || inflate(&body, max))
            .await
            .map_err(|e| fail(ProtoError::new(Status::Software, e.to_string())))?
            .map_err(fail)?
    } else {
        body
    };
    if raw.is_empty() {
        return Err(fail(ProtoError::new(Status::DataErr, "empty message")));
    }
    if cmd == Command::Tell {
        return tell(service, opts, &req, raw, peer).await.map(|b| (cmd, b)).map_err(fail);
    }
    let cutoff = service.engine().params.spam_cutoff;
    // Only a rewrite needs the message again after scoring, and HEADERS
    // only its header section (adding headers to the section alone gives
    // the same header block as rewriting the whole message).
    let (scored, kept) = match cmd {
        Command::Process => (raw.clone(), raw),
        Command::Headers => {
            let head = proto::header_section(&raw).to_vec();
            (raw, head)
        }
        _ => (raw, Vec::new()),
    };
    let crate::service::Checked { score, report, .. } =
        service.check("spamd", req.user.clone(), scored, None).await.map_err(job_error).map_err(fail)?;
    let mut out = Outcome::from_score(&score, cutoff);
    if let (Some(scan), Some(av)) = (report.as_ref().and_then(|r| r.antivirus.as_ref()), service.antivirus()) {
        // A scan that failed with `on_error = "tempfail"`: the caller
        // (an MTA through spamc) tries again later.
        if av.defers(scan) {
            return Err(fail(ProtoError::new(Status::TempFail, "message not scanned for viruses, try again later")));
        }
        out.antivirus(scan.status(), scan.rule());
    }
    let spam_line = out.spam_line();
    let reply = match cmd {
        Command::Check => proto::reply(Some(&spam_line), &[], None),
        Command::Symbols => proto::reply(Some(&spam_line), &[], Some(out.symbols.join(",").as_bytes())),
        Command::Report => proto::reply(Some(&spam_line), &[], Some(out.report.as_bytes())),
        Command::ReportIfSpam => proto::reply(Some(&spam_line), &[], Some(if out.spam { out.report.as_bytes() } else { b"" })),
        Command::Process | Command::Headers => {
            let msg = proto::add_headers(&kept, &out.headers(proto::line_ending(&kept)));
            proto::reply(Some(&spam_line), &[], Some(&msg))
        }
        Command::Ping | Command::Skip | Command::Tell => unreachable!("answered above"),
    };
    tracing::debug!(peer = ?peer, command = cmd.name(), user = req.user.as_deref().unwrap_or("-"), verdict = %out.verdict, probability = out.probability, "spamd");
    Ok((cmd, reply))
}

/// TELL: learn (`Set: local` with a class) or forget (`Remove: local`).
/// `remote` targets (Razor, Pyzor reporting) are accepted and ignored:
/// hamlet has no remote network to report to.
async fn tell<S: TokenStore + 'static>(
    service: &Arc<Service<S>>,
    opts: &Options,
    req: &Request,
    raw: Vec<u8>,
    peer: Option<IpAddr>,
) -> Result<Vec<u8>, ProtoError> {
    if !opts.allow_tell {
        return Err(ProtoError::new(Status::Unavailable, "TELL commands are not enabled, set spamd_allow_tell"));
    }
    if let Some(ip) = peer
        && !opts.tell_from.iter().any(|n| n.contains(ip))
    {
        return Err(ProtoError::new(Status::NoPerm, format!("TELL is not allowed from {ip} (spamd_tell_from)")));
    }
    let action = match (req.set.local, req.message_class, req.remove.local) {
        (true, Some(class), _) => Some(Some(class)),
        (false, _, true) => Some(None),
        _ => None,
    };
    let Some(action) = action else {
        return Ok(proto::reply(None, &[], None));
    };
    let outcome = service.train(req.user.clone(), raw, action, None).await.map_err(job_error)?;
    tracing::info!(peer = ?peer, user = req.user.as_deref().unwrap_or("-"), class = action.map_or("forget", Class::name), result = outcome.name(), "spamd TELL");
    // spamc prints "successfully un/learned" when DidSet/DidRemove comes
    // back, "already un/learned" when neither does.
    let did: &[&str] = match outcome {
        LearnOutcome::Learned | LearnOutcome::Relearned | LearnOutcome::Confirmed => &["DidSet: local"],
        LearnOutcome::Unlearned => &["DidRemove: local"],
        LearnOutcome::AlreadyLearned | LearnOutcome::NotLearned => &[],
    };
    Ok(proto::reply(None, did, None))
}

fn job_error(e: JobError) -> ProtoError {
    match e {
        JobError::TimedOut => ProtoError::new(Status::TempFail, "timed out"),
        JobError::StoreUnavailable(m) => ProtoError::new(Status::TempFail, m),
        JobError::UsersFull(m) => ProtoError::new(Status::CantCreat, m),
        JobError::Infected(name) => ProtoError::new(Status::DataErr, format!("virus found: {name}; an infected message is not learned")),
        JobError::Failed(e) => {
            tracing::error!(error = %e, "spamd request failed");
            ProtoError::new(Status::Software, "internal error")
        }
    }
}

/// Reads the request line and headers, line by line.
async fn read_head<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<Request, Failure> {
    let first = read_line(r).await.map_err(|e| (None, e))?;
    if first.is_empty() {
        return Err((None, ProtoError::new(Status::Protocol, "no request")));
    }
    let mut req = proto::parse_request_line(&first).map_err(|e| (None, e))?;
    let cmd = req.command;
    let fail = |e: ProtoError| (Some(cmd), e);
    // PING and SKIP are answered without waiting for headers, as spamd does.
    if !cmd.has_body() {
        return Ok(req);
    }
    let mut n = 0;
    loop {
        let line = read_line(r).await.map_err(fail)?;
        if line.is_empty() {
            return Err(fail(ProtoError::new(Status::Protocol, "connection closed inside the request head")));
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        n += 1;
        if n > proto::MAX_HEADERS {
            return Err(fail(ProtoError::new(Status::Protocol, "too many header lines")));
        }
        proto::parse_header_line(&mut req, &line).map_err(fail)?;
    }
    proto::validate(&req).map_err(fail)?;
    Ok(req)
}

/// Reads exactly `Content-length` bytes (protocol 1.0/1.1 without one: to
/// the end of the stream), at most `max_body`.
async fn read_body<R: AsyncRead + Unpin>(r: &mut BufReader<R>, req: &Request, max_body: usize) -> Result<Vec<u8>, ProtoError> {
    match req.content_length {
        Some(len) if len > max_body => Err(ProtoError::new(Status::DataErr, format!("message of {len} bytes is over the limit of {max_body}"))),
        Some(len) => {
            let mut body = vec![0u8; len];
            let mut got = 0;
            while got < len {
                match r.read(&mut body[got..]).await {
                    Ok(0) => {
                        return Err(ProtoError::new(Status::Protocol, format!("body truncated: Content-length {len}, got {got} bytes")));
                    }
                    Ok(k) => got += k,
                    Err(e) => return Err(ProtoError::new(Status::IoErr, format!("read error: {e}"))),
                }
            }
            Ok(body)
        }
        None => {
            let mut body = Vec::new();
            (&mut *r)
                .take(max_body as u64 + 1)
                .read_to_end(&mut body)
                .await
                .map_err(|e| ProtoError::new(Status::IoErr, format!("read error: {e}")))?;
            if body.len() > max_body {
                return Err(ProtoError::new(Status::DataErr, format!("message over the limit of {max_body} bytes")));
            }
            Ok(body)
        }
    }
}

/// One line including its `\n`; empty at end of stream. Longer than
/// [`crate::protocol::spamd::MAX_LINE`] is an error.
async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<Vec<u8>, ProtoError> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(proto::MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| ProtoError::new(Status::IoErr, format!("read error: {e}")))?;
    if n > 0 && !line.ends_with(b"\n") {
        let why = if n > proto::MAX_LINE { "request line too long" } else { "connection closed inside the request head" };
        return Err(ProtoError::new(Status::Protocol, why));
    }
    Ok(line)
}

/// `Compress: zlib` bodies, inflated to at most `max` bytes (a small
/// compressed body must not become an unbounded one).
pub fn inflate(body: &[u8], max: usize) -> Result<Vec<u8>, ProtoError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ProtoError::new(Status::DataErr, format!("cannot inflate the zlib body: {e}")))?;
    if out.len() > max {
        return Err(ProtoError::new(Status::DataErr, format!("inflated message over the limit of {max} bytes")));
    }
    Ok(out)
}
