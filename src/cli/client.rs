//! `hamlet client`: the spamc-like pipe command. A message on stdin, the
//! result on stdout, talking to a running `hamlet serve` over SPAMD (TCP or
//! a UNIX socket) or its HTTP API.
//!
//! Its first duty is never to lose mail. The whole message is read before
//! anything is sent, and nothing is written to stdout until a complete,
//! well-formed reply is in hand. When the service is unreachable, slow
//! (`-t`), answers badly, or the message is over `-s`, the original bytes are
//! written back unchanged and the exit status is 0 (`-c` prints `0/0`), as
//! spamc's safe fallback does; `-x` turns that into an error exit the MTA
//! can defer on.
//!
//! Plain blocking std I/O: one request per run needs no runtime, and a
//! short-lived process should start fast.

use crate::classify::{Clue, Score, Verdict};
use crate::spamd::proto::{self, Outcome};
use crate::{Error, Result};
use clap::{Args, ValueEnum};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// spamc's default port.
pub const SPAMD_PORT: u16 = 783;

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// SPAMD host [default: 127.0.0.1]; a name resolving to several
    /// addresses is tried address by address.
    #[arg(short = 'd', long = "dest")]
    pub host: Option<String>,
    /// SPAMD port [default: 783].
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// SPAMD UNIX socket.
    #[arg(short = 'U', long)]
    pub socket: Option<PathBuf>,
    /// Use the HTTP API at HOST:PORT instead of SPAMD (env HAMLET_HTTP).
    #[arg(long)]
    pub http: Option<String>,
    /// Take the service address from a hamlet.toml (its `spamd`, else `http`).
    #[arg(long, env = "HAMLET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print score/threshold; exit 1 if spam, 0 if not.
    #[arg(short = 'c', long)]
    pub check: bool,
    /// Exit 1 if spam (the message is still written).
    #[arg(short = 'E', long)]
    pub exitcode: bool,
    /// Print the symbols hit, comma-separated.
    #[arg(short = 'y', long = "tests")]
    pub symbols: bool,
    /// Print score/threshold and the report.
    #[arg(short = 'R', long = "full")]
    pub report: bool,
    /// Like -R, but the report only for spam.
    #[arg(short = 'r', long = "full-spam")]
    pub report_ifspam: bool,
    /// Only check that the service answers.
    #[arg(short = 'K')]
    pub ping: bool,
    /// Learn the message: spam, ham or forget.
    #[arg(short = 'L', long = "learntype", value_enum)]
    pub learn: Option<LearnType>,
    /// User name sent to the service.
    #[arg(short = 'u', long = "username")]
    pub user: Option<String>,
    /// Largest message sent (bytes, or with K/M); larger passes through.
    #[arg(short = 's', long = "max-size", default_value = "500K", value_parser = parse_size)]
    pub max_size: usize,
    /// Seconds to wait for the service (0: no limit).
    #[arg(short = 't', long, default_value_t = 60)]
    pub timeout: u64,
    /// No safe fallback: exit with an error status instead of passing the
    /// message through.
    #[arg(short = 'x', long = "no-safe-fallback")]
    pub no_fallback: bool,
    /// With -x, report an unreachable service as EX_TEMPFAIL (75), so the
    /// MTA defers instead of bouncing.
    #[arg(short = 'X', long = "unavailable-tempfail")]
    pub tempfail: bool,
    /// Compress the message (zlib) on the wire (SPAMD only).
    #[arg(short = 'z')]
    pub compress: bool,
    /// Have only the header block rewritten and sent back (SPAMD HEADERS).
    #[arg(long)]
    pub headers: bool,
    /// Log to stderr as well as syslog (by default pass-through warnings
    /// go only to syslog: Exim's transport_filter, for one, would write
    /// stderr into the message).
    #[arg(short = 'l', long = "log-to-stderr")]
    pub log_stderr: bool,
}

/// Logs a line to syslog (facility mail, warning), and to stderr when asked.
fn log(a: &ClientArgs, stderr: bool, msg: &str) {
    if stderr || a.log_stderr {
        eprintln!("hamlet client: {msg}");
    }
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let line = format!("<20>hamlet-client[{}]: {msg}", std::process::id());
        let _ = sock.send_to(line.as_bytes(), "/dev/log");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LearnType {
    Spam,
    Ham,
    Forget,
}

fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>().map(|n| n.saturating_mul(mult)).map_err(|_| format!("{s:?} is not a size (bytes, or a number with K or M)"))
}

/// Where the service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Spamd { host: String, port: u16 },
    Socket(PathBuf),
    Http(String),
}

/// What is asked of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Process,
    Headers,
    Check,
    Symbols,
    Report,
    ReportIfSpam,
    Ping,
    Learn(LearnType),
}

/// sysexits codes the client exits with.
const EX_DATAERR: u8 = 65;
const EX_UNAVAILABLE: u8 = 69;
const EX_IOERR: u8 = 74;
const EX_TEMPFAIL: u8 = 75;
const EX_PROTOCOL: u8 = 76;

/// Why a request gave no usable reply.
#[derive(Debug)]
enum Failure {
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
    fn exit_code(&self, tempfail: bool) -> u8 {
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
enum Answer {
    /// `threshold`: the server's required score (SPAMD `Spam:` line).
    Checked {
        outcome: Outcome,
        message: Option<Vec<u8>>,
        threshold: f64,
    },
    Learned(bool),
    Pong,
}

impl ClientArgs {
    fn mode(&self) -> Mode {
        if self.ping {
            Mode::Ping
        } else if let Some(l) = self.learn {
            Mode::Learn(l)
        } else if self.check {
            Mode::Check
        } else if self.symbols {
            Mode::Symbols
        } else if self.report {
            Mode::Report
        } else if self.report_ifspam {
            Mode::ReportIfSpam
        } else if self.headers {
            Mode::Headers
        } else {
            Mode::Process
        }
    }

    /// Flags, then `HAMLET_SPAMD` / `HAMLET_HTTP`, then the config file,
    /// then 127.0.0.1:783.
    fn target(&self) -> Result<Target> {
        if let Some(h) = &self.http {
            return Ok(Target::Http(h.clone()));
        }
        if let Some(s) = &self.socket {
            return Ok(Target::Socket(s.clone()));
        }
        if self.host.is_some() || self.port.is_some() {
            return Ok(Target::Spamd { host: self.host.clone().unwrap_or_else(|| "127.0.0.1".into()), port: self.port.unwrap_or(SPAMD_PORT) });
        }
        if let Ok(s) = std::env::var("HAMLET_SPAMD") {
            return spamd_target(&s);
        }
        if let Ok(h) = std::env::var("HAMLET_HTTP") {
            return Ok(Target::Http(h));
        }
        if let Some(path) = &self.config {
            let cfg = crate::config::Config::load(path)?;
            return match &cfg.spamd {
                Some(s) => spamd_target(s),
                None => Ok(Target::Http(cfg.http)),
            };
        }
        Ok(Target::Spamd { host: "127.0.0.1".into(), port: SPAMD_PORT })
    }
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

/// Runs `hamlet client`.
pub fn run(a: ClientArgs) -> Result<ExitCode> {
    let mode = a.mode();
    // A bad address or an unreadable config is a failure like any other:
    // the message still passes through.
    let target = a.target().map_err(|e| Failure::Unavailable(e.to_string()));
    let deadline = (a.timeout > 0).then(|| Instant::now() + Duration::from_secs(a.timeout));
    if mode == Mode::Ping {
        return Ok(match target.and_then(|t| guarded(&t, &a, mode, &[], deadline)) {
            Ok(_) => {
                let _ = writeln!(std::io::stdout(), "SPAMD/1.5 0 PONG");
                ExitCode::SUCCESS
            }
            Err(e) => {
                log(&a, true, &e.to_string());
                ExitCode::from(e.exit_code(a.tempfail))
            }
        });
    }
    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut raw) {
        // Nothing trustworthy to pass through: the MTA must retry.
        log(&a, true, &format!("cannot read the message: {e}"));
        return Ok(ExitCode::from(EX_IOERR));
    }
    // Over -s: not sent, passed through, exit 0, even with -x, as spamc
    // does: the size limit is policy, not a failure the MTA should retry.
    let result = if raw.len() > a.max_size { Err(None) } else { target.and_then(|t| guarded(&t, &a, mode, &raw, deadline)).map_err(Some) };
    let mut out = Vec::new();
    let code = match result {
        Ok(answer) => render(&a, mode, &raw, answer, &mut out),
        Err(failure) => {
            let learning = matches!(mode, Mode::Learn(_));
            match &failure {
                Some(e) if a.no_fallback || learning => {
                    log(&a, true, &e.to_string());
                    return Ok(ExitCode::from(e.exit_code(a.tempfail)));
                }
                Some(e) => log(&a, false, &format!("{e}; passing the message through unchecked")),
                None if learning => {
                    log(&a, true, &format!("message of {} bytes is over the -s limit of {}: not learned", raw.len(), a.max_size));
                    return Ok(ExitCode::from(EX_DATAERR));
                }
                None => {}
            }
            match mode {
                Mode::Check | Mode::Report | Mode::ReportIfSpam => out.extend_from_slice(b"0/0\n"),
                // spamc prints an empty line here (its bug 4991).
                Mode::Symbols => out.push(b'\n'),
                _ => out.extend_from_slice(&raw),
            }
            0
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&out).and_then(|()| stdout.flush()) {
        log(&a, true, &format!("cannot write the result: {e}"));
        return Ok(ExitCode::from(EX_IOERR));
    }
    Ok(ExitCode::from(code))
}

/// Writes the successful answer's output; returns the exit status.
fn render(a: &ClientArgs, mode: Mode, raw: &[u8], answer: Answer, out: &mut Vec<u8>) -> u8 {
    match answer {
        Answer::Pong => 0,
        Answer::Learned(changed) => {
            out.extend_from_slice(if changed { b"Message successfully un/learned\n" } else { b"Message was already un/learned\n" });
            0
        }
        Answer::Checked { outcome, message, threshold } => {
            let spam_exit = u8::from(outcome.spam);
            let score_line = format!("{:.1}/{:.1}\n", outcome.score, threshold);
            match mode {
                Mode::Check => {
                    out.extend_from_slice(score_line.as_bytes());
                    spam_exit
                }
                Mode::Symbols => {
                    // Without a line end, exactly as spamc prints them.
                    out.extend_from_slice(outcome.symbols.join(",").as_bytes());
                    u8::from(a.exitcode) * spam_exit
                }
                Mode::Report | Mode::ReportIfSpam => {
                    // -r prints nothing at all for ham, as spamc does.
                    if mode == Mode::Report || outcome.spam {
                        out.extend_from_slice(score_line.as_bytes());
                        out.extend_from_slice(outcome.report.as_bytes());
                    }
                    u8::from(a.exitcode) * spam_exit
                }
                Mode::Headers => {
                    // The rewritten header block, then the original body.
                    let head = message.unwrap_or_else(|| proto::add_headers(proto::header_section(raw), &outcome.headers(proto::line_ending(raw))));
                    out.extend_from_slice(&head);
                    out.extend_from_slice(&raw[proto::header_section(raw).len()..]);
                    u8::from(a.exitcode) * spam_exit
                }
                _ => {
                    let msg = message.unwrap_or_else(|| proto::add_headers(raw, &outcome.headers(proto::line_ending(raw))));
                    out.extend_from_slice(&msg);
                    u8::from(a.exitcode) * spam_exit
                }
            }
        }
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

/// [`request`], with a panic (a bug) turned into a failure, so that even
/// then the message passes through.
fn guarded(target: &Target, a: &ClientArgs, mode: Mode, raw: &[u8], deadline: Option<Instant>) -> std::result::Result<Answer, Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| request(target, a, mode, raw, deadline)))
        .unwrap_or_else(|_| Err(Failure::Refused(EX_PROTOCOL, "internal error in hamlet client".into())))
}

fn request(target: &Target, a: &ClientArgs, mode: Mode, raw: &[u8], deadline: Option<Instant>) -> std::result::Result<Answer, Failure> {
    match target {
        Target::Http(_) => http_request(target, a, mode, raw, deadline),
        _ => spamd_request(target, a, mode, raw, deadline),
    }
}

fn spamd_request(target: &Target, a: &ClientArgs, mode: Mode, raw: &[u8], deadline: Option<Instant>) -> std::result::Result<Answer, Failure> {
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
        Mode::Learn(_) => Ok(Answer::Learned(reply.did_set || reply.did_remove)),
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
fn http_request(target: &Target, a: &ClientArgs, mode: Mode, raw: &[u8], deadline: Option<Instant>) -> std::result::Result<Answer, Failure> {
    let Target::Http(addr) = target else { unreachable!("http_request on a SPAMD target") };
    let (method, path) = match mode {
        Mode::Ping => ("GET", "/healthz"),
        Mode::Learn(LearnType::Spam) => ("POST", "/v1/learn/spam"),
        Mode::Learn(LearnType::Ham) => ("POST", "/v1/learn/ham"),
        Mode::Learn(LearnType::Forget) => ("POST", "/v1/unlearn"),
        _ => ("POST", "/v1/check"),
    };
    let token = matches!(mode, Mode::Learn(_)).then(|| std::env::var("HAMLET_LEARN_TOKEN").ok()).flatten();
    let req = http_message_request(method, path, addr, a.user.as_deref(), token.as_deref(), raw);
    let buf = exchange(target, &req, deadline)?;
    let (status, body) = parse_http(&buf).map_err(|e| Failure::Refused(EX_PROTOCOL, format!("bad HTTP reply: {e}")))?;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !(200..300).contains(&status) {
        let msg = json["error"]["message"].as_str().unwrap_or("").to_string();
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
        Mode::Learn(_) => Ok(Answer::Learned(status == 200 && matches!(json["result"].as_str(), Some("learned" | "relearned" | "unlearned")))),
        _ => {
            let score = score_from_json(&json).ok_or_else(|| Failure::Refused(EX_PROTOCOL, "check reply lacks a score".into()))?;
            let cutoff = json["spam_cutoff"].as_f64().unwrap_or(0.9);
            Ok(Answer::Checked { outcome: Outcome::from_score(&score, cutoff), message: None, threshold: proto::THRESHOLD })
        }
    }
}

/// An HTTP/1.1 request carrying a message to hamlet's API (`Connection:
/// close`; the user and bearer token as headers when given).
pub(crate) fn http_message_request(method: &str, path: &str, addr: &str, user: Option<&str>, token: Option<&str>, body: &[u8]) -> Vec<u8> {
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

/// Rebuilds a [`Score`] from `/v1/check`'s JSON.
fn score_from_json(v: &serde_json::Value) -> Option<Score> {
    let verdict = match v["verdict"].as_str()? {
        "spam" => Verdict::Spam,
        "ham" => Verdict::Ham,
        _ => Verdict::Unsure,
    };
    let content = &v["stages"]["content"];
    let clues = v["clues"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    Some(Clue {
                        token: c["token"].as_str()?.to_string(),
                        prob: c["prob"].as_f64()?,
                        spam: u32::try_from(c["spam"].as_u64()?).ok()?,
                        ham: u32::try_from(c["ham"].as_u64()?).ok()?,
                        weight: c["weight"].as_f64().unwrap_or(0.0) as f32,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Score {
        probability: v["probability"].as_f64()?,
        logit: v["logit"].as_f64().unwrap_or(0.0),
        verdict,
        fisher_logit: content["fisher_logit"].as_f64().unwrap_or(0.0),
        lr_logit: content["lr_logit"].as_f64().unwrap_or(0.0),
        gram_logit: content["gram_logit"].as_f64().unwrap_or(0.0),
        mix_inputs: [0.0, 0.0],
        clues,
        tokens: content["tokens"].as_u64().unwrap_or(0) as usize,
    })
}

/// Status and body of an HTTP/1.1 response read to the end of the
/// connection (Content-Length or chunked).
pub(crate) fn parse_http(buf: &[u8]) -> std::result::Result<(u16, Vec<u8>), String> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).ok_or("bad status line")?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            match n.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
    }
    let rest = &buf[end + 4..];
    if chunked {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let nl = rest.get(pos..).ok_or("truncated chunk")?.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")? + pos;
            let size_text = String::from_utf8_lossy(&rest[pos..nl]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| "bad chunk size")?;
            pos = nl + 2;
            if size == 0 {
                return Ok((status, body));
            }
            let end = pos.checked_add(size).ok_or("bad chunk size")?;
            let chunk = rest.get(pos..end).ok_or("truncated chunk")?;
            body.extend_from_slice(chunk);
            pos = end + 2;
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
    fn sizes_and_targets() {
        assert_eq!(parse_size("500K"), Ok(512_000));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("lots").is_err());
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
