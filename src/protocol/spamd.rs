//! The SPAMC/SPAMD wire format (SpamAssassin's `spamd/PROTOCOL`, versions
//! 1.2–1.5), as pure functions over bytes: request parsing, reply building,
//! the score scale and the `X-Spam-*` header rewrite. Both the listener and
//! `hamlet client` use them. Nothing here does I/O, and nothing panics on
//! hostile input: a bad request is a [`ProtoError`] carrying the sysexits
//! code the reply will have.

use crate::Class;
use crate::classify::{Score, Verdict};

/// spamd's default required score; hamlet keeps it so that rules written
/// against SpamAssassin's headers (`X-Spam-Score >= 5`) keep working.
pub const THRESHOLD: f64 = 5.0;

/// Largest request line or header line accepted.
pub const MAX_LINE: usize = 1024;
/// Most header lines in one request.
pub const MAX_HEADERS: usize = 32;

/// The request commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Check,
    Symbols,
    Report,
    ReportIfSpam,
    Process,
    Headers,
    Ping,
    Skip,
    Tell,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "CHECK" => Command::Check,
            "SYMBOLS" => Command::Symbols,
            "REPORT" => Command::Report,
            "REPORT_IFSPAM" => Command::ReportIfSpam,
            "PROCESS" => Command::Process,
            "HEADERS" => Command::Headers,
            "PING" => Command::Ping,
            "SKIP" => Command::Skip,
            "TELL" => Command::Tell,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Check => "CHECK",
            Command::Symbols => "SYMBOLS",
            Command::Report => "REPORT",
            Command::ReportIfSpam => "REPORT_IFSPAM",
            Command::Process => "PROCESS",
            Command::Headers => "HEADERS",
            Command::Ping => "PING",
            Command::Skip => "SKIP",
            Command::Tell => "TELL",
        }
    }

    /// Whether a message follows the headers.
    pub fn has_body(self) -> bool {
        !matches!(self, Command::Ping | Command::Skip)
    }
}

/// The sysexits.h codes a SPAMD reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    Usage = 64,
    DataErr = 65,
    NoInput = 66,
    NoUser = 67,
    NoHost = 68,
    Unavailable = 69,
    Software = 70,
    OsErr = 71,
    CantCreat = 73,
    IoErr = 74,
    TempFail = 75,
    Protocol = 76,
    NoPerm = 77,
    Config = 78,
}

impl Status {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u32) -> Option<Status> {
        use Status::*;
        [Ok, Usage, DataErr, NoInput, NoUser, NoHost, Unavailable, Software, OsErr, CantCreat, IoErr, TempFail, Protocol, NoPerm, Config]
            .into_iter()
            .find(|s| u32::from(s.code()) == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "EX_OK",
            Status::Usage => "EX_USAGE",
            Status::DataErr => "EX_DATAERR",
            Status::NoInput => "EX_NOINPUT",
            Status::NoUser => "EX_NOUSER",
            Status::NoHost => "EX_NOHOST",
            Status::Unavailable => "EX_UNAVAILABLE",
            Status::Software => "EX_SOFTWARE",
            Status::OsErr => "EX_OSERR",
            Status::IoErr => "EX_IOERR",
            Status::TempFail => "EX_TEMPFAIL",
            Status::Protocol => "EX_PROTOCOL",
            Status::NoPerm => "EX_NOPERM",
            Status::CantCreat => "EX_CANTCREAT",
            Status::Config => "EX_CONFIG",
        }
    }
}

/// A request that cannot be served, and the status its reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    pub status: Status,
    pub message: String,
}

impl ProtoError {
    pub fn new(status: Status, message: impl Into<String>) -> ProtoError {
        ProtoError { status, message: message.into() }
    }

    fn protocol(message: impl Into<String>) -> ProtoError {
        ProtoError::new(Status::Protocol, message)
    }

    /// The whole reply: the status line only; the server then closes.
    pub fn reply(&self) -> Vec<u8> {
        // One line: no CR/LF of the message may reach the wire.
        let msg: String = self.message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        format!("SPAMD/1.1 {} {} {}\r\n", self.status.code(), self.status.name(), msg).into_bytes()
    }
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.name(), self.message)
    }
}

/// `local` and/or `remote`, as in `Set:` and `Remove:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Targets {
    pub local: bool,
    pub remote: bool,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    /// `SPAMC/major.minor`.
    pub version: (u32, u32),
    pub content_length: Option<usize>,
    pub user: Option<String>,
    /// `Compress: zlib`.
    pub compress: bool,
    pub message_class: Option<Class>,
    pub set: Targets,
    pub remove: Targets,
}

/// Parses `COMMAND SPAMC/1.5` (trailing CR/LF allowed).
pub fn parse_request_line(line: &[u8]) -> Result<Request, ProtoError> {
    let line = trim_eol(line);
    let line = std::str::from_utf8(line).map_err(|_| ProtoError::protocol("request line is not ASCII"))?;
    let mut parts = line.split(' ');
    let (Some(cmd), Some(proto), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ProtoError::protocol(format!("bad request line {:?}", truncate(line, 60))));
    };
    let command = Command::parse(cmd).ok_or_else(|| ProtoError::protocol(format!("unknown command {:?}", truncate(cmd, 30))))?;
    let version = proto
        .strip_prefix("SPAMC/")
        .and_then(|v| v.split_once('.'))
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| ProtoError::protocol(format!("bad protocol {:?}", truncate(proto, 30))))?;
    if version.0 != 1 {
        return Err(ProtoError::protocol(format!("unsupported protocol version {}.{}", version.0, version.1)));
    }
    Ok(Request {
        command,
        version,
        content_length: None,
        user: None,
        compress: false,
        message_class: None,
        set: Targets::default(),
        remove: Targets::default(),
    })
}

/// Applies one `Name: value` header line to the request. Unknown headers
/// are ignored, as the protocol asks.
pub fn parse_header_line(req: &mut Request, line: &[u8]) -> Result<(), ProtoError> {
    let line = trim_eol(line);
    let line = std::str::from_utf8(line).map_err(|_| ProtoError::protocol("header line is not UTF-8"))?;
    let (name, value) = line.split_once(':').ok_or_else(|| ProtoError::protocol(format!("bad header line {:?}", truncate(line, 60))))?;
    let value = value.trim();
    match name.trim().to_ascii_lowercase().as_str() {
        "content-length" => {
            if !value.bytes().all(|b| b.is_ascii_digit()) || value.is_empty() || value.len() > 15 {
                return Err(ProtoError::protocol(format!("bad Content-length {:?}", truncate(value, 30))));
            }
            let n: usize = value.parse().map_err(|_| ProtoError::protocol("bad Content-length"))?;
            if req.content_length.is_some_and(|m| m != n) {
                return Err(ProtoError::protocol("conflicting Content-length headers"));
            }
            req.content_length = Some(n);
        }
        "user" => {
            if !crate::users::valid_name(value) {
                return Err(ProtoError::new(Status::NoUser, format!("bad user name {:?}", truncate(value, 40))));
            }
            req.user = Some(value.to_string());
        }
        "compress" => {
            if !value.eq_ignore_ascii_case("zlib") {
                return Err(ProtoError::protocol(format!("unsupported compression {:?}", truncate(value, 20))));
            }
            req.compress = true;
        }
        "message-class" => {
            req.message_class = Some(match value.to_ascii_lowercase().as_str() {
                "spam" => Class::Spam,
                "ham" => Class::Ham,
                _ => return Err(ProtoError::protocol(format!("bad Message-class {:?}", truncate(value, 20)))),
            });
        }
        "set" => req.set = parse_targets(value)?,
        "remove" => req.remove = parse_targets(value)?,
        _ => {}
    }
    Ok(())
}

fn parse_targets(value: &str) -> Result<Targets, ProtoError> {
    let mut t = Targets::default();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.to_ascii_lowercase().as_str() {
            "local" => t.local = true,
            "remote" => t.remote = true,
            _ => return Err(ProtoError::protocol(format!("bad Set/Remove target {:?}", truncate(part, 20)))),
        }
    }
    Ok(t)
}

/// Parses a whole head (request line, headers, blank line), for callers
/// that have it in one buffer. The server reads line by line with the same
/// two functions.
pub fn parse_head(head: &[u8]) -> Result<Request, ProtoError> {
    let mut lines = head.split_inclusive(|&b| b == b'\n');
    let first = lines.next().ok_or_else(|| ProtoError::protocol("empty request"))?;
    let mut req = parse_request_line(first)?;
    for (i, line) in lines.enumerate() {
        if trim_eol(line).is_empty() {
            break;
        }
        if i >= MAX_HEADERS || line.len() > MAX_LINE {
            return Err(ProtoError::protocol("request head too large"));
        }
        parse_header_line(&mut req, line)?;
    }
    Ok(req)
}

/// Checks a request that has been fully parsed for combinations that make
/// no sense.
pub fn validate(req: &Request) -> Result<(), ProtoError> {
    if req.command == Command::Tell {
        if !req.set.local && !req.set.remote && !req.remove.local && !req.remove.remote {
            return Err(ProtoError::protocol("TELL needs Set: or Remove:"));
        }
        if req.set.local && req.message_class.is_none() {
            return Err(ProtoError::protocol("TELL with Set: local needs Message-class"));
        }
    }
    if req.command.has_body() && req.content_length.is_none() && req.version >= (1, 2) {
        return Err(ProtoError::protocol("missing Content-length"));
    }
    Ok(())
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// hamlet's spam probability on spamd's score scale, piecewise linear so the
/// verdict cutoff lands exactly on the threshold:
///
/// ```text
///   s(p) = T · p / c                     for p ≤ c
///   s(p) = T + T · (p − c) / (1 − c)     for p > c        (T = 5, c = spam cutoff)
/// ```
///
/// so p = 0 → 0, c → 5.0 and 1 → 10.0. Below the spam verdict the shown
/// score stays under 5.0 even after rounding to one decimal (4.96 shows as
/// 4.9, not 5.0), so `score >= required` always agrees with the verdict.
pub fn spamd_score(probability: f64, spam_cutoff: f64, spam: bool) -> f64 {
    let p = if probability.is_nan() { 0.5 } else { probability.clamp(0.0, 1.0) };
    let c = spam_cutoff.clamp(1e-9, 1.0);
    let s = if p <= c || c >= 1.0 { THRESHOLD * p / c } else { THRESHOLD + THRESHOLD * (p - c) / (1.0 - c) };
    let s = (s * 10.0).round() / 10.0;
    if spam { s.max(THRESHOLD) } else { s.min(THRESHOLD - 0.1) }
}

/// What a check concluded, in the terms SPAMD replies and the added headers
/// use. Built from a [`Score`] by the listener, or from the HTTP API's JSON
/// by `hamlet client --http`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub spam: bool,
    /// `spam`, `ham` or `unsure`.
    pub verdict: String,
    pub probability: f64,
    /// On spamd's scale, see [`spamd_score`].
    pub score: f64,
    pub symbols: Vec<String>,
    /// The human-readable report (REPORT).
    pub report: String,
    /// `X-Virus-Status` (`Clean`, `Infected (NAME)`, ...), when the
    /// message was scanned (see [`Outcome::antivirus`]).
    pub virus_status: Option<String>,
}

/// SpamAssassin's Bayes buckets (BAYES_00 … BAYES_999), so rules and
/// habits built on them carry over.
pub fn bayes_bucket(p: f64) -> &'static str {
    match p {
        p if p < 0.01 => "BAYES_00",
        p if p < 0.05 => "BAYES_05",
        p if p < 0.20 => "BAYES_20",
        p if p < 0.40 => "BAYES_40",
        p if p < 0.60 => "BAYES_50",
        p if p < 0.80 => "BAYES_60",
        p if p < 0.95 => "BAYES_80",
        p if p < 0.99 => "BAYES_95",
        p if p < 0.999 => "BAYES_99",
        _ => "BAYES_999",
    }
}

/// A token as a rule-style symbol name: upper-case ASCII letters, digits
/// and single underscores, at most 32 bytes.
pub fn symbol_name(token: &str) -> String {
    let mut s = String::with_capacity(token.len().min(32));
    for c in token.chars() {
        if s.len() >= 32 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_uppercase());
        } else if !s.ends_with('_') && !s.is_empty() {
            s.push('_');
        }
    }
    while s.ends_with('_') {
        s.pop();
    }
    s
}

/// How many of the strongest clues become symbols.
const CLUE_SYMBOLS: usize = 5;
/// How many clues the report lists.
const REPORT_CLUES: usize = 15;

impl Outcome {
    /// Builds the outcome of a check against `spam_cutoff`.
    pub fn from_score(s: &Score, spam_cutoff: f64) -> Outcome {
        let spam = s.verdict == Verdict::Spam;
        let score = spamd_score(s.probability, spam_cutoff, spam);
        let mut symbols = vec![format!("HAMLET_{}", s.verdict.name().to_ascii_uppercase()), bayes_bucket(s.probability).to_string()];
        if s.store_error {
            symbols.push("STORE_ERROR".to_string());
        }
        for c in s.clues.iter().take(CLUE_SYMBOLS) {
            let name = symbol_name(&c.token);
            if name.is_empty() {
                continue;
            }
            let sym = format!("HAMLET_{}_{}", if c.prob >= 0.5 { "SPAMMY" } else { "HAMMY" }, name);
            if !symbols.contains(&sym) {
                symbols.push(sym);
            }
        }
        let mut report = format!(
            "hamlet: {}, spam probability {:.4} (score {:.1}, required {:.1})\n\n\
             Content analysis: Fisher logit {:.2}, regression logits {:.2} (words) and {:.2} (4-grams), {} tokens.\n\
             Strongest clues:\n   f(w)    spam     ham  token\n",
            s.verdict.name(),
            s.probability,
            score,
            THRESHOLD,
            s.fisher_logit,
            s.lr_logit,
            s.gram_logit,
            s.tokens
        );
        if s.store_error {
            report.push_str(" (the model could not be read: no opinion)\n");
        }
        for c in s.clues.iter().take(REPORT_CLUES) {
            let token: String = c.token.chars().map(|ch| if ch.is_control() { '?' } else { ch }).take(60).collect();
            report.push_str(&format!(" {:.4} {:>7} {:>7}  {}\n", c.prob, c.spam, c.ham, token));
        }
        Outcome { spam, verdict: s.verdict.name().to_string(), probability: s.probability, score, symbols, report, virus_status: None }
    }

    /// Adds an antivirus scan: its `X-Virus-Status`, its symbol (`AV_VIRUS`,
    /// `AV_ERROR`, `AV_SKIPPED`; none when clean) and a report line.
    pub fn antivirus(&mut self, status: String, symbol: Option<&str>) {
        if let Some(sym) = symbol {
            self.symbols.insert(0, sym.to_string());
        }
        self.report.push_str(&format!("\nAntivirus: {status}\n"));
        self.virus_status = Some(status);
    }

    /// `Spam: True ; 9.7 / 5.0` (without the line ending).
    pub fn spam_line(&self) -> String {
        format!("Spam: {} ; {:.1} / {:.1}", if self.spam { "True" } else { "False" }, self.score, THRESHOLD)
    }

    /// The header fields added to a checked message, each line ended with
    /// `eol` (the message's own line ending). SpamAssassin's names and
    /// formats, plus hamlet's verdict and probability.
    pub fn headers(&self, eol: &str) -> String {
        let yes = if self.spam { "Yes" } else { "No" };
        let stars = "*".repeat(self.score.floor().clamp(0.0, 50.0) as usize);
        let mut h = String::new();
        h.push_str(&format!("X-Spam-Checker-Version: hamlet {}{eol}", env!("CARGO_PKG_VERSION")));
        h.push_str(&format!("X-Spam-Flag: {}{eol}", if self.spam { "YES" } else { "NO" }));
        h.push_str(&format!("X-Spam-Score: {:.1}{eol}", self.score));
        h.push_str(&format!("X-Spam-Level: {stars}{eol}"));
        // Folded like SpamAssassin's: the tests list on its own line.
        h.push_str(&format!(
            "X-Spam-Status: {yes}, score={:.1} required={:.1}{eol}\ttests={}{eol}\tautolearn=no version=hamlet-{}{eol}",
            self.score,
            THRESHOLD,
            self.symbols.join(","),
            env!("CARGO_PKG_VERSION")
        ));
        h.push_str(&format!("X-Hamlet-Verdict: {}{eol}", self.verdict));
        h.push_str(&format!("X-Hamlet-Probability: {:.4}{eol}", self.probability));
        if let Some(v) = &self.virus_status {
            h.push_str(&format!("X-Virus-Status: {v}{eol}"));
        }
        h
    }
}

/// The message's line ending: that of its first line (LF when it has none).
pub fn line_ending(raw: &[u8]) -> &'static str {
    match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && raw[i - 1] == b'\r' => "\r\n",
        _ => "\n",
    }
}

/// The message with `added` header lines inserted at the end of its header
/// section. Every byte of `raw` is kept, in order; the only other byte ever
/// added is a line ending after a final header line that lacks one.
pub fn add_headers(raw: &[u8], added: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + added.len() + 2);
    match crate::message::header_end(raw) {
        Some(at) => {
            out.extend_from_slice(&raw[..at]);
            out.extend_from_slice(added.as_bytes());
            out.extend_from_slice(&raw[at..]);
        }
        None => {
            out.extend_from_slice(raw);
            if !raw.is_empty() && !raw.ends_with(b"\n") {
                out.extend_from_slice(line_ending(raw).as_bytes());
            }
            out.extend_from_slice(added.as_bytes());
        }
    }
    out
}

/// The header section of a (rewritten) message, up to and including the
/// blank line: what HEADERS returns.
pub fn header_section(msg: &[u8]) -> &[u8] {
    match crate::message::header_end(msg) {
        Some(at) => {
            let blank = if msg[at..].starts_with(b"\r\n") { 2 } else { 1 };
            &msg[..at + blank]
        }
        None => msg,
    }
}

/// A successful reply: status line, `Content-length` when there is a body,
/// the `Spam:` line and extra header lines, blank line, body.
pub fn reply(spam_line: Option<&str>, extra: &[&str], body: Option<&[u8]>) -> Vec<u8> {
    let mut out = b"SPAMD/1.1 0 EX_OK\r\n".to_vec();
    if let Some(b) = body {
        out.extend_from_slice(format!("Content-length: {}\r\n", b.len()).as_bytes());
    }
    if let Some(s) = spam_line {
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for e in extra {
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

/// A parsed reply (what `hamlet client` reads).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u32,
    pub message: String,
    /// `Spam:` as (is spam, score, threshold).
    pub spam: Option<(bool, f64, f64)>,
    pub did_set: bool,
    pub did_remove: bool,
    /// Whether the reply said its body's length.
    pub has_length: bool,
    pub body: Vec<u8>,
}

/// Parses a complete reply (the server closed after it). A body shorter
/// than its `Content-length` is an error: the caller must not use half a
/// message.
pub fn parse_reply(buf: &[u8]) -> Result<Reply, String> {
    let nl = buf.iter().position(|&b| b == b'\n').ok_or("reply has no status line")?;
    let status_line = String::from_utf8_lossy(trim_eol(&buf[..=nl])).into_owned();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(proto), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("bad status line {status_line:?}"));
    };
    if !proto.starts_with("SPAMD/") {
        return Err(format!("not a SPAMD reply: {status_line:?}"));
    }
    let status: u32 = code.parse().map_err(|_| format!("bad status line {status_line:?}"))?;
    let mut reply = Reply {
        status,
        message: parts.next().unwrap_or("").to_string(),
        spam: None,
        did_set: false,
        did_remove: false,
        has_length: false,
        body: Vec::new(),
    };
    let mut pos = nl + 1;
    let mut length = None;
    // Headers up to the blank line; an error reply may end right after the
    // status line.
    while pos < buf.len() {
        let end = buf[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i + 1).ok_or("reply header without line end")?;
        let line = trim_eol(&buf[pos..end]);
        pos = end;
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(line);
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad reply header {line:?}"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<usize>().map_err(|_| "bad reply Content-length")?),
            "spam" => {
                let (flag, rest) = value.split_once(';').ok_or("bad Spam: line")?;
                let (score, thr) = rest.split_once('/').ok_or("bad Spam: line")?;
                let flag = matches!(flag.trim().to_ascii_lowercase().as_str(), "true" | "yes");
                let score = score.trim().parse::<f64>().map_err(|_| "bad Spam: score")?;
                let thr = thr.trim().parse::<f64>().map_err(|_| "bad Spam: threshold")?;
                reply.spam = Some((flag, score, thr));
            }
            "didset" => reply.did_set = true,
            "didremove" => reply.did_remove = true,
            _ => {}
        }
    }
    let rest = &buf[pos.min(buf.len())..];
    reply.has_length = length.is_some();
    match length {
        Some(n) if rest.len() < n => return Err(format!("reply body truncated: {} of {n} bytes", rest.len())),
        Some(n) => reply.body = rest[..n].to_vec(),
        None => reply.body = rest.to_vec(),
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::header_end;

    #[test]
    fn parses_what_spamc_sends() {
        let r = parse_head(b"TELL SPAMC/1.5\r\nMessage-class: spam\r\nSet: local\r\nUser: root\r\nContent-length: 1038\r\n\r\n").unwrap();
        assert_eq!(r.command, Command::Tell);
        assert_eq!(r.version, (1, 5));
        assert_eq!(r.content_length, Some(1038));
        assert_eq!(r.user.as_deref(), Some("root"));
        assert_eq!(r.message_class, Some(Class::Spam));
        assert_eq!(r.set, Targets { local: true, remote: false });
        assert!(validate(&r).is_ok());
        let r = parse_head(b"TELL SPAMC/1.5\r\nMessage-class: ham\r\nSet: local\r\nRemove: remote\r\nContent-length: 1\r\n\r\n").unwrap();
        assert_eq!(r.remove, Targets { local: false, remote: true });
        let r = parse_head(b"PING SPAMC/1.5\r\n\r\n").unwrap();
        assert_eq!(r.command, Command::Ping);
        assert!(validate(&r).is_ok(), "PING has no body");
        let r = parse_head(b"CHECK SPAMC/1.2\nContent-length: 5\nX-Unknown: whatever\nCompress: zlib\n\n").unwrap();
        assert!(r.compress, "LF-only heads and unknown headers are accepted");
    }

    #[test]
    fn refuses_bad_requests_with_the_right_status() {
        let st = |h: &[u8]| parse_head(h).and_then(|r| validate(&r).map(|()| r)).unwrap_err().status;
        assert_eq!(st(b"FROB SPAMC/1.5\r\n\r\n"), Status::Protocol);
        assert_eq!(st(b"CHECK HTTP/1.1\r\n\r\n"), Status::Protocol);
        assert_eq!(st(b"CHECK SPAMC/2.0\r\n\r\n"), Status::Protocol);
        assert_eq!(st(b"CHECK SPAMC/1.5\r\n\r\n"), Status::Protocol, "missing Content-length");
        assert_eq!(st(b"CHECK SPAMC/1.5\r\nContent-length: -5\r\n\r\n"), Status::Protocol);
        assert_eq!(st(b"CHECK SPAMC/1.5\r\nContent-length: 99999999999999999999\r\n\r\n"), Status::Protocol);
        assert_eq!(st(b"CHECK SPAMC/1.5\r\nContent-length: 5\r\nContent-length: 6\r\n\r\n"), Status::Protocol);
        assert_eq!(st(b"CHECK SPAMC/1.5\r\nContent-length: 5\r\nCompress: gzip\r\n\r\n"), Status::Protocol);
        assert_eq!(st(b"CHECK SPAMC/1.5\r\nContent-length: 5\r\nUser: ../etc\r\n\r\n"), Status::NoUser);
        assert_eq!(st(b"TELL SPAMC/1.5\r\nContent-length: 5\r\nSet: local\r\n\r\n"), Status::Protocol, "no class");
        assert_eq!(st(b"TELL SPAMC/1.5\r\nContent-length: 5\r\n\r\n"), Status::Protocol, "nothing to do");
        assert_eq!(st(b"CHECK SPAMC/1.5\r\nno colon here\r\n\r\n"), Status::Protocol);
        assert_eq!(st(b""), Status::Protocol);
    }

    #[test]
    fn error_replies_are_one_line() {
        let r = ProtoError::protocol("bad\r\nSpam: True ; 9 / 5").reply();
        assert_eq!(r.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(r.starts_with(b"SPAMD/1.1 76 EX_PROTOCOL bad  Spam"));
    }

    #[test]
    fn score_scale_puts_the_cutoff_on_the_threshold() {
        assert_eq!(spamd_score(0.0, 0.9, false), 0.0);
        assert_eq!(spamd_score(0.9, 0.9, true), 5.0);
        assert_eq!(spamd_score(1.0, 0.9, true), 10.0);
        assert_eq!(spamd_score(0.45, 0.9, false), 2.5);
        assert_eq!(spamd_score(0.8995, 0.9, false), 4.9, "never rounds up to the threshold below the cutoff");
        assert_eq!(spamd_score(f64::NAN, 0.9, false), 2.8);
        for i in 0..=1000 {
            let p = f64::from(i) / 1000.0;
            let s = spamd_score(p, 0.9, p >= 0.9);
            assert!((0.0..=10.0).contains(&s));
            assert_eq!(s >= THRESHOLD, p >= 0.9, "p={p}");
        }
    }

    #[test]
    fn symbol_names() {
        assert_eq!(symbol_name("subject:cheap pills!"), "SUBJECT_CHEAP_PILLS");
        assert_eq!(symbol_name("::"), "");
        assert_eq!(symbol_name("ñandú"), "AND");
        assert!(symbol_name(&"x".repeat(100)).len() <= 32);
        assert_eq!(bayes_bucket(0.0), "BAYES_00");
        assert_eq!(bayes_bucket(0.5), "BAYES_50");
        assert_eq!(bayes_bucket(0.9995), "BAYES_999");
    }

    #[test]
    fn adds_headers_without_touching_other_bytes() {
        let add = "X-A: 1\r\n";
        assert_eq!(add_headers(b"A: b\r\nC: d\r\n\r\nbody\r\n", add), b"A: b\r\nC: d\r\nX-A: 1\r\n\r\nbody\r\n");
        assert_eq!(add_headers(b"A: b\n\nbody\n\nmore\n", "X-A: 1\n"), b"A: b\nX-A: 1\n\nbody\n\nmore\n");
        assert_eq!(add_headers(b"A: b\n", "X-A: 1\n"), b"A: b\nX-A: 1\n", "all header");
        assert_eq!(add_headers(b"A: b", "X-A: 1\n"), b"A: b\nX-A: 1\n", "no final line end");
        assert_eq!(add_headers(b"\nbody", "X-A: 1\n"), b"X-A: 1\n\nbody", "no headers");
        assert_eq!(add_headers(b"", "X-A: 1\n"), b"X-A: 1\n");
        let msg = add_headers(b"A: b\r\n\r\nbody", add);
        assert_eq!(header_section(&msg), b"A: b\r\nX-A: 1\r\n\r\n");
        assert_eq!(line_ending(b"A: b\r\n"), "\r\n");
        assert_eq!(line_ending(b"A: b\n"), "\n");
    }

    #[test]
    fn replies_round_trip() {
        let r = reply(Some("Spam: True ; 9.7 / 5.0"), &[], Some(b"A,B"));
        assert_eq!(r, b"SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: True ; 9.7 / 5.0\r\n\r\nA,B");
        let p = parse_reply(&r).unwrap();
        assert_eq!((p.status, p.spam, p.body.as_slice()), (0, Some((true, 9.7, 5.0)), &b"A,B"[..]));
        let p = parse_reply(b"SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n").unwrap();
        assert!(p.did_set && !p.did_remove);
        let p = parse_reply(b"SPAMD/1.1 76 EX_PROTOCOL bad\r\n").unwrap();
        assert_eq!(p.status, 76);
        assert!(parse_reply(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\n\r\nshort").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes);
            let _ = parse_reply(&bytes);
            if let Ok(r) = parse_head(&bytes) {
                let _ = validate(&r);
            }
        }

        #[test]
        fn add_headers_keeps_every_byte(msg in proptest::collection::vec(proptest::sample::select(b"ab: \r\n\t\xff".to_vec()), 0..300)) {
            let added = "X-Hamlet-T: 1\n";
            let out = add_headers(&msg, added);
            let at = header_end(&msg).unwrap_or(msg.len());
            proptest::prop_assert_eq!(&out[..at], &msg[..at]);
            let rest = &out[at..];
            let rest = if header_end(&msg).is_none() && !msg.is_empty() && !msg.ends_with(b"\n") {
                &rest[line_ending(&msg).len()..]
            } else {
                rest
            };
            proptest::prop_assert!(rest.starts_with(added.as_bytes()));
            proptest::prop_assert_eq!(&rest[added.len()..], &msg[at..]);
        }
    }
}
