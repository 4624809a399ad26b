//! The client side of `hamlet serve`: one request over SPAMD (TCP or a
//! UNIX socket) or the HTTP API, with a deadline on every step, and the
//! reply reduced to an [`Answer`]. `hamlet client` (the spamc-like pipe
//! command) and `imap-train` (learning through a running service) share
//! it.
//!
//! Plain blocking std I/O: `hamlet client` makes one request per run,
//! needs no runtime and should start fast; `imap-train` calls it from
//! tokio's blocking pool.

use crate::protocol::reply::{CheckReply, ErrorReply, LearnReply};
use crate::protocol::spamd::{self as proto, Outcome};
use crate::{Error, Result};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// spamc's default port.
pub const SPAMD_PORT: u16 = 783;

/// Where the service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Spamd { host: String, port: u16 },
    Socket(PathBuf),
    Http(String),
}

impl Target {
    /// `host:port`, `[v6]:port`, `host` (port 783) or `/socket/path`.
    pub fn spamd(s: &str) -> Result<Target> {
        spamd_target(s)
    }
}

/// What is asked of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Process,
    Headers,
    Check,
    Symbols,
    Report,
    ReportIfSpam,
    Ping,
    Learn(LearnType),
}

/// What a learn asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnType {
    Spam,
    Ham,
    Forget,
}

/// Who asks, and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The user whose model to use (SPAMD `User:`, HTTP `X-Hamlet-User`).
    pub user: Option<String>,
    /// Send SPAMD bodies zlib-compressed.
    pub compress: bool,
    /// The HTTP API's learn token.
    pub learn_token: Option<String>,
}

/// sysexits codes the client exits with.
pub const EX_DATAERR: u8 = 65;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_IOERR: u8 = 74;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_PROTOCOL: u8 = 76;

/// Why a request gave no usable reply.
#[derive(Debug)]
pub enum Failure {
    /// Could not connect.
    Unavailable(String),
    /// The time limit passed.
    TimedOut,
    /// The service answered, but not with a usable reply (status code, message).
    Refused(u8, String),
}

impl Failure {
    /// With `-X` every failure is EX_TEMPFAIL: the MTA defers and retries,
    /// never bounces because hamlet was down or broken.
    pub fn exit_code(&self, tempfail: bool) -> u8 {
        match self {
            _ if tempfail => EX_TEMPFAIL,
            Failure::Unavailable(_) => EX_UNAVAILABLE,
            Failure::TimedOut => EX_TEMPFAIL,
            Failure::Refused(c, _) => *c,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unavailable(e) => write!(f, "service unavailable: {e}"),
            Failure::TimedOut => f.write_str("timed out waiting for the service"),
            Failure::Refused(_, e) => f.write_str(e),
        }
    }
}

/// The service's answer, reduced to what the output needs.
#[derive(Debug)]
pub enum Answer {
    /// `threshold`: the server's required score (SPAMD `Spam:` line).
    Checked {
        outcome: Outcome,
        message: Option<Vec<u8>>,
        threshold: f64,
    },
    /// Whether the model changed, and the HTTP API's `result` (`learned`,
    /// `relearned`, `already learned`, ...; SPAMD says only whether).
    Learned {
        changed: bool,
        result: Option<String>,
    },
    Pong,
}

/// `host:port`, `[v6]:port`, `host` or `/socket/path`.
fn spamd_target(s: &str) -> Result<Target> {
    if s.starts_with('/') {
        return Ok(Target::Socket(PathBuf::from(s)));
    }
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(Target::Spamd { host: a.ip().to_string(), port: a.port() });
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            Ok(Target::Spamd { host: h.to_string(), port: p.parse().map_err(|_| Error::Invalid(format!("bad spamd address {s:?}")))? })
        }
        _ => Ok(Target::Spamd { host: s.to_string(), port: SPAMD_PORT }),
    }
}

/// A bidirectional byte stream with time limits.
trait Stream: Read + Write {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()>;
    fn shutdown_write(&self) -> std::io::Result<()>;
}

impl Stream for TcpStream {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Stream for UnixStream {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
    fn shutdown_write(&self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

fn remaining(deadline: Option<Instant>) -> std::result::Result<Option<Duration>, Failure> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() { Err(Failure::TimedOut) } else { Ok(Some(left)) }
        }
    }
}

/// Runs a blocking call that has no time limit of its own (a name lookup, a
/// UNIX-socket connect into a full backlog) on a thread, waiting at most
/// until the deadline.
fn within<T: Send + 'static>(deadline: Option<Instant>, f: impl FnOnce() -> T + Send + 'static) -> std::result::Result<T, Failure> {
    let Some(left) = remaining(deadline)? else { return Ok(f()) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(left).map_err(|_| Failure::TimedOut)
}

fn connect(target: &Target, deadline: Option<Instant>) -> std::result::Result<Box<dyn Stream>, Failure> {
    let tcp = |host: &str, port: u16| -> std::result::Result<Box<dyn Stream>, Failure> {
        let h = host.to_string();
        let addrs: Vec<_> = within(deadline, move || (h.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>))?
            .map_err(|e| Failure::Unavailable(format!("cannot resolve {host}: {e}")))?;
        let mut last = format!("{host} has no address");
        for addr in addrs {
            let t = remaining(deadline)?;
            let r = match t {
                Some(t) => TcpStream::connect_timeout(&addr, t),
                None => TcpStream::connect(addr),
            };
            match r {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(Box::new(s));
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Failure::TimedOut),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(Failure::Unavailable(last))
    };
    match target {
        Target::Spamd { host, port } => tcp(host, *port),
        Target::Socket(p) => within(deadline, {
            let p = p.clone();
            move || UnixStream::connect(p)
        })?
        .map(|s| Box::new(s) as Box<dyn Stream>)
        .map_err(|e| Failure::Unavailable(format!("{}: {e}", p.display()))),
        Target::Http(addr) => {
            let (host, port) = match spamd_target(addr) {
                Ok(Target::Spamd { host, port }) => (host, port),
                _ => return Err(Failure::Unavailable(format!("bad HTTP address {addr:?}"))),
            };
            tcp(&host, port)
        }
    }
}

/// Sends `req`, half-closes (SPAMD: spamc does; not HTTP, where hyper takes
/// a half-close for a client gone away), reads the whole reply until the
/// server closes, all within the deadline.
fn exchange(target: &Target, req: &[u8], deadline: Option<Instant>) -> std::result::Result<Vec<u8>, Failure> {
    // No honest reply is much larger than the request (the message plus
    // added headers): a server streaming more is broken.
    let cap = 2 * req.len() + (1 << 20);
    let mut s = connect(target, deadline)?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Failure::TimedOut,
        _ => Failure::Refused(EX_IOERR, format!("connection failed: {e}")),
    };
    s.set_timeouts(remaining(deadline)?).map_err(io)?;
    s.write_all(req).map_err(io)?;
    if !matches!(target, Target::Http(_)) {
        let _ = s.shutdown_write();
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        s.set_timeouts(remaining(deadline)?).map_err(io)?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > cap {
                    return Err(Failure::Refused(EX_PROTOCOL, format!("reply over {cap} bytes")));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(buf)
}

/// Sends one request and reads its answer, within `deadline`. A panic (a
/// bug) is a failure too, so that even then a caller can pass the message
/// through.
pub fn request(target: &Target, a: &Options, mode: Mode, raw: &[u8], deadline: Option<Instant>) -> std::result::Result<Answer, Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(target, a, mode, raw, deadline)))
        .unwrap_or_else(|_| Err(Failure::Refused(EX_PROTOCOL, "internal error in hamlet client".into())))
}

fn dispatch(target: &Target, a: &Options, mode: Mode, raw: &[u8], deadline: Option<Instant>) -> std::result::Result<Answer, Failure> {
    match target {
        Target::Http(_) => http_request(target, a, mode, raw, deadline),
        _ => spamd_request(target, a, mode, raw, deadline),
    }
}

fn spamd_request(target: &Target, a: &Options, mode: Mode, raw: &[u8], deadline: Option<Instant>) -> std::result::Result<Answer, Failure> {
    let command = match mode {
        Mode::Process => "PROCESS",
        Mode::Headers => "HEADERS",
        Mode::Check => "CHECK",
        Mode::Symbols => "SYMBOLS",
        Mode::Report => "REPORT",
        Mode::ReportIfSpam => "REPORT_IFSPAM",
        Mode::Ping => "PING",
        Mode::Learn(_) => "TELL",
    };
    let mut head = format!("{command} SPAMC/1.5\r\n");
    if mode != Mode::Ping {
        match mode {
            Mode::Learn(LearnType::Spam) => head.push_str("Message-class: spam\r\nSet: local\r\n"),
            Mode::Learn(LearnType::Ham) => head.push_str("Message-class: ham\r\nSet: local\r\n"),
            Mode::Learn(LearnType::Forget) => head.push_str("Remove: local\r\n"),
            _ => {}
        }
        if let Some(u) = &a.user {
            head.push_str(&format!("User: {u}\r\n"));
        }
    }
    let body = if mode == Mode::Ping {
        Vec::new()
    } else if a.compress {
        head.push_str("Compress: zlib\r\n");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(raw).and_then(|()| z.finish()).map_err(|e| Failure::Refused(EX_IOERR, format!("cannot compress: {e}")))?
    } else {
        raw.to_vec()
    };
    if mode != Mode::Ping {
        head.push_str(&format!("Content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(&body);
    let buf = exchange(target, &req, deadline)?;
    let reply = proto::parse_reply(&buf).map_err(|e| Failure::Refused(EX_PROTOCOL, format!("bad reply: {e}")))?;
    if reply.status != 0 {
        let code = u8::try_from(reply.status).unwrap_or(EX_PROTOCOL);
        return Err(Failure::Refused(code, format!("service refused: {} {}", reply.status, reply.message)));
    }
    match mode {
        Mode::Ping => Ok(Answer::Pong),
        Mode::Learn(_) => Ok(Answer::Learned { changed: reply.did_set || reply.did_remove, result: None }),
        _ => {
            let (spam, score, thr) = reply.spam.ok_or_else(|| Failure::Refused(EX_PROTOCOL, "reply has no Spam: line".into()))?;
            let body = reply.body;
            let mut outcome = Outcome {
                spam,
                verdict: if spam { "spam" } else { "ham" }.into(),
                probability: f64::NAN,
                score,
                symbols: Vec::new(),
                report: String::new(),
                virus_status: None,
            };
            let message = match mode {
                Mode::Process | Mode::Headers => {
                    // A rewritten message must say its length, and PROCESS
                    // must give back the body it was sent, untouched.
                    if !reply.has_length {
                        return Err(Failure::Refused(EX_PROTOCOL, "reply has no Content-length".into()));
                    }
                    let original_body = &raw[proto::header_section(raw).len()..];
                    if mode == Mode::Process && !body.ends_with(original_body) {
                        return Err(Failure::Refused(EX_PROTOCOL, "reply does not carry the message body unchanged".into()));
                    }
                    Some(body)
                }
                Mode::Symbols => {
                    outcome.symbols = String::from_utf8_lossy(&body).trim().split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
                    None
                }
                _ => {
                    outcome.report = String::from_utf8_lossy(&body).into_owned();
                    None
                }
            };
            Ok(Answer::Checked { outcome, message, threshold: thr })
        }
    }
}

/// The HTTP API path: `/v1/check` and the learn endpoints; the headers are
/// added here, from the JSON, with the same code the listener uses.
fn http_request(target: &Target, a: &Options, mode: Mode, raw: &[u8], deadline: Option<Instant>) -> std::result::Result<Answer, Failure> {
    let Target::Http(addr) = target else { unreachable!("http_request on a SPAMD target") };
    let (method, path) = match mode {
        Mode::Ping => ("GET", "/healthz"),
        Mode::Learn(LearnType::Spam) => ("POST", "/v1/learn/spam"),
        Mode::Learn(LearnType::Ham) => ("POST", "/v1/learn/ham"),
        Mode::Learn(LearnType::Forget) => ("POST", "/v1/unlearn"),
        _ => ("POST", "/v1/check"),
    };
    let token = if matches!(mode, Mode::Learn(_)) { a.learn_token.as_deref() } else { None };
    let req = http_message_request(method, path, addr, a.user.as_deref(), token, raw);
    let buf = exchange(target, &req, deadline)?;
    let (status, body) = parse_http(&buf).map_err(|e| Failure::Refused(EX_PROTOCOL, format!("bad HTTP reply: {e}")))?;
    if !(200..300).contains(&status) {
        let msg = serde_json::from_slice::<ErrorReply>(&body).map(|e| e.error.message).unwrap_or_default();
        let code = match status {
            401 | 403 => 77,
            413 => EX_DATAERR,
            503 => EX_TEMPFAIL,
            _ => EX_UNAVAILABLE,
        };
        return Err(Failure::Refused(code, format!("service refused: HTTP {status} {msg}")));
    }
    match mode {
        Mode::Ping => Ok(Answer::Pong),
        Mode::Learn(_) => {
            let result = serde_json::from_slice::<LearnReply>(&body).ok().map(|r| r.result);
            let changed = status == 200 && matches!(result.as_deref(), Some("learned" | "relearned" | "unlearned"));
            Ok(Answer::Learned { changed, result })
        }
        _ => {
            let reply: CheckReply = serde_json::from_slice(&body).map_err(|e| Failure::Refused(EX_PROTOCOL, format!("bad check reply: {e}")))?;
            Ok(Answer::Checked { outcome: Outcome::from_score(&reply.score(), reply.spam_cutoff), message: None, threshold: proto::THRESHOLD })
        }
    }
}

/// An HTTP/1.1 request carrying a message to hamlet's API (`Connection:
/// close`; the user and bearer token as headers when given).
pub fn http_message_request(method: &str, path: &str, addr: &str, user: Option<&str>, token: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: message/rfc822\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(u) = user {
        head.push_str(&format!("X-Hamlet-User: {u}\r\n"));
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    req
}

/// Status and body of an HTTP/1.1 response read to the end of the
/// connection (Content-Length or chunked).
pub fn parse_http(buf: &[u8]) -> std::result::Result<(u16, Vec<u8>), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let end = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("no end of headers".into()),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = resp.code.ok_or("bad status line")?;
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = String::from_utf8_lossy(h.value).to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &buf[end..];
    if chunked {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            if rest[pos..].starts_with(b"\r\n") {
                return Err("bad chunk size".into());
            }
            let (used, size) = match httparse::parse_chunk_size(&rest[pos..]) {
                Ok(httparse::Status::Complete(x)) => x,
                Ok(httparse::Status::Partial) => return Err("truncated chunk".into()),
                Err(_) => return Err("bad chunk size".into()),
            };
            pos += used;
            if size == 0 {
                return Ok((status, body));
            }
            let end = usize::try_from(size).ok().and_then(|s| pos.checked_add(s)).ok_or("bad chunk size")?;
            body.extend_from_slice(rest.get(pos..end).ok_or("truncated chunk")?);
            pos = end.checked_add(2).filter(|&p| p <= rest.len()).ok_or("truncated chunk")?;
        }
    }
    match length {
        Some(n) if rest.len() < n => Err(format!("body truncated: {} of {n} bytes", rest.len())),
        Some(n) => Ok((status, rest[..n].to_vec())),
        None => Ok((status, rest.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(spamd_target("/run/hamlet.sock").unwrap(), Target::Socket("/run/hamlet.sock".into()));
        assert_eq!(spamd_target("127.0.0.1:7830").unwrap(), Target::Spamd { host: "127.0.0.1".into(), port: 7830 });
        assert_eq!(spamd_target("[::1]:7830").unwrap(), Target::Spamd { host: "::1".into(), port: 7830 });
        assert_eq!(spamd_target("spamd.local").unwrap(), Target::Spamd { host: "spamd.local".into(), port: 783 });
        assert!(spamd_target("host:notaport").is_err());
    }

    #[test]
    fn http_replies() {
        assert_eq!(parse_http(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap(), (200, b"hi".to_vec()));
        assert_eq!(
            parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n").unwrap(),
            (200, b"hi!".to_vec())
        );
        assert!(parse_http(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi").is_err());
        assert!(parse_http(b"garbage").is_err());
        assert!(parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello").is_err(), "truncated: an error, no panic");
        assert!(parse_http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n").is_err());
    }
}
