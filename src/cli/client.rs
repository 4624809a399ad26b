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
//! The request itself is [`crate::client`]'s; this is the command's flags,
//! its fallbacks and its output.

use crate::Result;
use crate::client::{self, Answer, EX_DATAERR, EX_IOERR, Failure, Mode, SPAMD_PORT, Target};
use crate::protocol::spamd as proto;
use clap::{Args, ValueEnum};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

impl From<LearnType> for client::LearnType {
    fn from(l: LearnType) -> client::LearnType {
        match l {
            LearnType::Spam => client::LearnType::Spam,
            LearnType::Ham => client::LearnType::Ham,
            LearnType::Forget => client::LearnType::Forget,
        }
    }
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

impl ClientArgs {
    fn mode(&self) -> Mode {
        if self.ping {
            Mode::Ping
        } else if let Some(l) = self.learn {
            Mode::Learn(l.into())
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

    /// Flags, then `HAMLET_SPAMD` / `HAMLET_HTTP`, then the config file
    /// (its `spamd`, else `http`), then 127.0.0.1:783.
    fn target(&self, config: Option<&Path>) -> Result<Target> {
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
            return Target::spamd(&s);
        }
        if let Ok(h) = std::env::var("HAMLET_HTTP") {
            return Ok(Target::Http(h));
        }
        if let Some(path) = config {
            let cfg = crate::config::Config::load(path)?;
            return match &cfg.spamd {
                Some(s) => Target::spamd(s),
                None => Ok(Target::Http(cfg.http)),
            };
        }
        Ok(Target::Spamd { host: "127.0.0.1".into(), port: SPAMD_PORT })
    }
}

/// The token to learn with: `HAMLET_LEARN_TOKEN`, else the configuration's
/// (`--config`, or the defaults: the token `hamlet serve` made beside its
/// database). None when there is none to read: the service then says 401.
fn learn_token(config: Option<&Path>) -> Option<String> {
    if let Ok(t) = std::env::var("HAMLET_LEARN_TOKEN") {
        return Some(t);
    }
    let cfg = match config {
        Some(path) => crate::config::Config::load(path).ok()?,
        None => crate::config::Config::default(),
    };
    crate::build::read_learn_token(&cfg).ok().flatten()
}

/// Runs `hamlet client`; `config` is `--config`, where the service's
/// address may be.
pub fn run(a: ClientArgs, config: Option<&Path>) -> Result<ExitCode> {
    let mode = a.mode();
    // A bad address or an unreadable config is a failure like any other:
    // the message still passes through.
    let target = a.target(config).map_err(|e| Failure::Unavailable(e.to_string()));
    let learn_token = if matches!(mode, Mode::Learn(_)) { learn_token(config) } else { None };
    let opts = client::Options { user: a.user.clone(), compress: a.compress, learn_token };
    let deadline = (a.timeout > 0).then(|| Instant::now() + Duration::from_secs(a.timeout));
    if mode == Mode::Ping {
        return Ok(match target.and_then(|t| client::request(&t, &opts, mode, &[], deadline)) {
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
    let result = if raw.len() > a.max_size { Err(None) } else { target.and_then(|t| client::request(&t, &opts, mode, &raw, deadline)).map_err(Some) };
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
        Answer::Learned { changed, .. } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500K"), Ok(512_000));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("lots").is_err());
    }
}
