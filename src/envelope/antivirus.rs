//! Antivirus at the content stage: the message goes to clamd (`zINSTREAM`,
//! in chunks; clamd unpacks MIME, archives and documents itself) and the
//! answer becomes a stage of the check beside the envelope's: `AV_VIRUS`
//! with the signature name, `AV_ERROR` when clamd fails, `AV_SKIPPED` for a
//! message over the size limit. What a hit does is configured
//! (`[antivirus] action`): refuse it (a reject decision, as an envelope rule
//! would), quarantine it, or only mark it; in every case an infected
//! message is never learned and never scored as ham. What a failure does
//! is configured too: go on unscanned (`fail_open`) or defer (`tempfail`).
//!
//! One connection per scan, bounded by one time budget for connecting,
//! sending and reading the answer: a clamd that is down, silent or talking
//! nonsense gives `AV_ERROR` within the budget, never a stall.

use super::{Outcome, RuleAction};
use crate::{Error, Result};
use serde::Deserialize;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes sent to clamd per `INSTREAM` chunk.
const CHUNK: usize = 64 << 10;
/// The longest answer read from clamd (a signature name is short).
const MAX_REPLY: usize = 4096;

/// What a hit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HitAction {
    /// Refused: `550 5.7.1 virus found: NAME` at SMTP time (milter), the
    /// `reject` action over HTTP.
    #[default]
    Reject,
    /// Held in the MTA's quarantine (milter), marked elsewhere.
    Quarantine,
    /// Accepted with `X-Virus-Status: Infected (NAME)`.
    Header,
    /// Only recorded (the verdict is still spam).
    Score,
}

/// What a failed scan does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The message goes on unscanned, marked `AV_ERROR`.
    #[default]
    FailOpen,
    /// Deferred (`451 4.7.1` at SMTP time): the sender tries again later.
    Tempfail,
}

/// `[antivirus]` in hamlet.toml. Off unless `clamd` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AntivirusConfig {
    /// `unix:/run/clamav/clamd.ctl`, `tcp:127.0.0.1:3310` (or a bare path
    /// or `host:port`).
    pub clamd: Option<String>,
    /// The whole scan: connect, send, answer.
    pub timeout_ms: u64,
    /// Messages bigger than this are not sent (`AV_SKIPPED`): keep it at or
    /// below clamd's `StreamMaxLength` (25 MB by default), which refuses
    /// longer streams.
    pub max_bytes: usize,
    pub action: HitAction,
    pub on_error: OnError,
}

impl Default for AntivirusConfig {
    fn default() -> Self {
        AntivirusConfig { clamd: None, timeout_ms: 10_000, max_bytes: 25 << 20, action: HitAction::Reject, on_error: OnError::FailOpen }
    }
}

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(Target::Unix(p.into()));
        }
        if s.starts_with('/') {
            return Ok(Target::Unix(s.into()));
        }
        let addr = s.strip_prefix("tcp:").unwrap_or(s);
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Target::Tcp(addr.to_string())),
            _ => Err(Error::Invalid(format!("[antivirus] clamd = {s:?}: expected unix:/path or tcp:HOST:PORT"))),
        }
    }
}

/// One scan's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    Clean,
    /// The signature's name.
    Virus(String),
    /// Not sent (why).
    Skipped(String),
    /// clamd failed, was unreachable or too slow (why).
    Error(String),
}

impl Scan {
    /// `clean`, `virus`, `skipped`, `error`.
    pub fn name(&self) -> &'static str {
        match self {
            Scan::Clean => "clean",
            Scan::Virus(_) => "virus",
            Scan::Skipped(_) => "skipped",
            Scan::Error(_) => "error",
        }
    }

    /// The value of an `X-Virus-Status` field (ClamAV's own milter's words).
    pub fn status(&self) -> String {
        let clean = |s: &str| s.chars().filter(|c| !c.is_control()).take(200).collect::<String>();
        match self {
            Scan::Clean => "Clean".into(),
            Scan::Virus(name) => format!("Infected ({})", clean(name)),
            Scan::Skipped(why) => format!("Not scanned ({})", clean(why)),
            Scan::Error(why) => format!("Not scanned (error: {})", clean(why)),
        }
    }

    /// The rule that reports it (`AV_VIRUS`, `AV_SKIPPED`, `AV_ERROR`);
    /// none for a clean message.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            Scan::Clean => None,
            Scan::Virus(_) => Some("AV_VIRUS"),
            Scan::Skipped(_) => Some("AV_SKIPPED"),
            Scan::Error(_) => Some("AV_ERROR"),
        }
    }

    pub fn virus(&self) -> Option<&str> {
        match self {
            Scan::Virus(name) => Some(name),
            _ => None,
        }
    }
}

/// Reads clamd's answer to a stream scan (`stream: OK`, `stream: NAME
/// FOUND`, `... ERROR`), with or without its `\0` or newline.
pub fn parse_reply(reply: &[u8]) -> Scan {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n', '\r']).trim();
    let body = text.strip_prefix("stream:").map(str::trim).unwrap_or(text);
    if body == "OK" {
        Scan::Clean
    } else if let Some(name) = body.strip_suffix(" FOUND") {
        let name = name.trim();
        if name.is_empty() { Scan::Error("clamd found something it did not name".into()) } else { Scan::Virus(name.to_string()) }
    } else if body.is_empty() {
        Scan::Error("clamd closed the connection without an answer".into())
    } else {
        Scan::Error(format!("clamd: {}", body.chars().filter(|c| !c.is_control()).take(200).collect::<String>()))
    }
}

/// Sends `raw` as one `zINSTREAM` and reads the answer.
pub async fn instream<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let send = async {
        stream.write_all(b"zINSTREAM\0").await?;
        for chunk in raw.chunks(CHUNK) {
            stream.write_all(&(chunk.len() as u32).to_be_bytes()).await?;
            stream.write_all(chunk).await?;
        }
        stream.write_all(&[0, 0, 0, 0]).await?;
        stream.flush().await
    };
    // clamd may answer (a size limit) and close before all is sent: its
    // answer says more than the broken pipe.
    let sent = send.await;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.contains(&0) || reply.len() >= MAX_REPLY {
                    break;
                }
            }
            Err(e) if reply.is_empty() => return Err(sent.err().unwrap_or(e)),
            Err(_) => break,
        }
    }
    if reply.is_empty() {
        sent?;
    }
    Ok(reply)
}

/// The scanner: clamd's address and what its answers do.
#[derive(Debug, Clone)]
pub struct Antivirus {
    pub target: Target,
    pub budget: Duration,
    pub max_bytes: usize,
    pub action: HitAction,
    pub on_error: OnError,
}

impl Antivirus {
    /// `None` when `[antivirus] clamd` is not set.
    pub fn new(cfg: &AntivirusConfig) -> Result<Option<Antivirus>> {
        let Some(addr) = &cfg.clamd else { return Ok(None) };
        if cfg.timeout_ms == 0 || cfg.max_bytes == 0 {
            return Err(Error::Invalid("[antivirus] timeout_ms and max_bytes must be above 0".into()));
        }
        Ok(Some(Antivirus {
            target: Target::parse(addr)?,
            budget: Duration::from_millis(cfg.timeout_ms),
            max_bytes: cfg.max_bytes,
            action: cfg.action,
            on_error: cfg.on_error,
        }))
    }

    /// Scans a message within the budget.
    pub async fn scan(&self, raw: &[u8]) -> Scan {
        if raw.len() > self.max_bytes {
            return Scan::Skipped(format!("{} bytes, over max_bytes", raw.len()));
        }
        let work = async {
            match &self.target {
                Target::Tcp(addr) => instream(tokio::net::TcpStream::connect(addr).await?, raw).await,
                Target::Unix(path) => instream(tokio::net::UnixStream::connect(path).await?, raw).await,
            }
        };
        match tokio::time::timeout(self.budget, work).await {
            Ok(Ok(reply)) => parse_reply(&reply),
            Ok(Err(e)) => Scan::Error(format!("clamd at {}: {e}", self.describe())),
            Err(_) => Scan::Error(format!("clamd at {}: no answer within {} ms", self.describe(), self.budget.as_millis())),
        }
    }

    /// clamd's address.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Tcp(a) => a.clone(),
            Target::Unix(p) => p.display().to_string(),
        }
    }

    /// What this configuration does with a scan's answer (see
    /// `AntivirusStage::action` in the HTTP API).
    pub fn action_name(&self, scan: &Scan) -> &'static str {
        match (scan, self.action, self.on_error) {
            (Scan::Virus(_), HitAction::Reject, _) => "reject",
            (Scan::Virus(_), HitAction::Quarantine, _) => "quarantine",
            (Scan::Virus(_), HitAction::Header, _) => "header",
            (Scan::Virus(_), HitAction::Score, _) => "score",
            (Scan::Error(_), _, OnError::FailOpen) => "fail_open",
            (Scan::Error(_), _, OnError::Tempfail) => "tempfail",
            _ => "none",
        }
    }

    /// The scan as an outcome of the check (none for a clean message): a
    /// hit set to reject rejects, a failure set to tempfail defers. No
    /// token: an antivirus verdict is not the learner's to weigh.
    pub fn outcome(&self, scan: &Scan) -> Option<Outcome> {
        let rule = scan.rule()?;
        let (detail, action) = match scan {
            Scan::Clean => return None,
            Scan::Virus(name) => {
                (format!("virus found: {name}"), if self.action == HitAction::Reject { RuleAction::Reject } else { RuleAction::Score })
            }
            Scan::Skipped(why) => (format!("not scanned: {why}"), RuleAction::Score),
            Scan::Error(why) => (why.clone(), if self.defers(scan) { RuleAction::Defer } else { RuleAction::Score }),
        };
        Some(Outcome { rule, token: String::new(), detail, action })
    }

    /// Whether this scan's answer defers the message (a failure under
    /// `on_error = "tempfail"`).
    pub fn defers(&self, scan: &Scan) -> bool {
        matches!(scan, Scan::Error(_)) && self.on_error == OnError::Tempfail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamd_answers() {
        assert_eq!(parse_reply(b"stream: OK\0"), Scan::Clean);
        assert_eq!(parse_reply(b"stream: Eicar-Test-Signature FOUND\0"), Scan::Virus("Eicar-Test-Signature".into()));
        assert_eq!(parse_reply(b"stream: payload.bin.UNOFFICIAL FOUND\n"), Scan::Virus("payload.bin.UNOFFICIAL".into()));
        assert!(matches!(parse_reply(b"INSTREAM size limit exceeded. ERROR\0"), Scan::Error(e) if e.contains("size limit")));
        assert!(matches!(parse_reply(b""), Scan::Error(_)));
        assert!(matches!(parse_reply(b"stream:  FOUND\0"), Scan::Error(_)));
        assert!(matches!(parse_reply(b"\xff\xfe garbage \x01"), Scan::Error(_)));
        assert_eq!(Scan::Virus("X\r\nY".into()).status(), "Infected (XY)");
    }

    #[test]
    fn addresses_and_actions() {
        assert_eq!(Target::parse("unix:/run/clamav/clamd.ctl").unwrap(), Target::Unix("/run/clamav/clamd.ctl".into()));
        assert_eq!(Target::parse("/run/clamd.sock").unwrap(), Target::Unix("/run/clamd.sock".into()));
        assert_eq!(Target::parse("tcp:127.0.0.1:3310").unwrap(), Target::Tcp("127.0.0.1:3310".into()));
        assert_eq!(Target::parse("localhost:3310").unwrap(), Target::Tcp("localhost:3310".into()));
        assert!(Target::parse("tcp:3310").is_err() && Target::parse("clamd").is_err());
        let cfg = AntivirusConfig { clamd: Some("tcp:127.0.0.1:3310".into()), ..Default::default() };
        let av = Antivirus::new(&cfg).unwrap().unwrap();
        assert_eq!(av.outcome(&Scan::Clean), None);
        assert_eq!(av.outcome(&Scan::Virus("V".into())).unwrap().action, RuleAction::Reject);
        assert_eq!(av.outcome(&Scan::Error("down".into())).unwrap().action, RuleAction::Score, "fail open by default");
        let av = Antivirus { action: HitAction::Quarantine, on_error: OnError::Tempfail, ..av };
        assert_eq!(av.outcome(&Scan::Virus("V".into())).unwrap().action, RuleAction::Score);
        assert_eq!(av.outcome(&Scan::Error("down".into())).unwrap().action, RuleAction::Defer);
        assert!(Antivirus::new(&AntivirusConfig::default()).unwrap().is_none(), "off unless clamd is set");
    }

    #[tokio::test]
    async fn instream_frames_the_message_and_reads_the_answer() {
        let (mut clamd, us) = tokio::io::duplex(1 << 20);
        let raw = vec![b'x'; CHUNK + 10];
        let server = tokio::spawn(async move {
            let mut got = vec![0u8; 10 + 4 + CHUNK + 4 + 10 + 4];
            clamd.read_exact(&mut got).await.unwrap();
            clamd.write_all(b"stream: OK\0").await.unwrap();
            got
        });
        let reply = instream(us, &raw).await.unwrap();
        assert_eq!(parse_reply(&reply), Scan::Clean);
        let got = server.await.unwrap();
        assert_eq!(&got[..10], b"zINSTREAM\0");
        assert_eq!(&got[10..14], &(CHUNK as u32).to_be_bytes());
        assert_eq!(&got[14 + CHUNK..18 + CHUNK], &10u32.to_be_bytes());
        assert_eq!(&got[got.len() - 4..], &[0, 0, 0, 0]);
    }
}
