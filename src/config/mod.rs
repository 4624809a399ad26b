//! `hamlet.toml`: the configuration of every command (`--config`). Every key is optional; flags
//! override the file, the file overrides the defaults. See
//! `examples/hamlet.toml` for a commented sample.

pub mod imap;

use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[redis]`: the Redis store's settings (used when `db` is a Redis URL).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Every key starts with this (several hamlet installations can share
    /// one Redis under different prefixes).
    pub prefix: String,
    /// A file holding the Redis password (AUTH), so it need not be in the
    /// URL or this file; it overrides a password in the URL.
    pub password_file: Option<PathBuf>,
    /// Milliseconds to open a connection.
    pub connect_timeout_ms: u64,
    /// Milliseconds for one reply; a check whose read runs out scores
    /// without the model (`STORE_ERROR`), a learn fails (503).
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig { prefix: "hamlet".into(), password_file: None, connect_timeout_ms: 500, timeout_ms: 2000 }
    }
}

/// `[ui]`: the web console at `/ui/` on the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Off unless set.
    pub enabled: bool,
    /// A console password besides the learn token, hashed: `hamlet
    /// ui-password` reads one on stdin and prints the line to put here.
    pub password_hash: Option<String>,
    /// Anyone who reaches the console may view its status and history
    /// without signing in (its actions still need it).
    pub read_only: bool,
    /// Serve the console to clients that are not on loopback (a listener
    /// on another address serves only the API to them otherwise).
    pub remote: bool,
    /// Hours a sign-in lasts.
    pub session_hours: u64,
    /// Checks the history keeps (the oldest goes first).
    pub history: usize,
    /// What the history keeps of sender and recipient addresses: `full`,
    /// `domain` or `none`.
    pub history_addresses: crate::history::Addresses,
    /// Whether the history keeps subjects.
    pub history_subjects: bool,
    /// Message bytes the history keeps, all checks together, so they can
    /// be learned from the console (0: none; the oldest go first).
    pub history_message_bytes: usize,
    /// The folder under which the Evaluate page may read labelled folders
    /// (`spam/` and `ham/` inside, or a TREC `index` file); unset: uploads only.
    pub eval_root: Option<PathBuf>,
}

impl Default for UiConfig {
    fn default() -> UiConfig {
        UiConfig {
            enabled: false,
            password_hash: None,
            read_only: false,
            remote: false,
            session_hours: 12,
            history: 1000,
            history_addresses: crate::history::Addresses::Full,
            history_subjects: true,
            history_message_bytes: 64 << 20,
            eval_root: None,
        }
    }
}

/// The service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address.
    pub http: String,
    /// Token database: a redb file, or a Redis URL (`redis://HOST:PORT[/DB]`,
    /// `rediss://…`, `redis+cluster://HOST:PORT[,HOST:PORT…]`) that several
    /// hosts share (see `[redis]`).
    pub db: PathBuf,
    /// `[redis]`: how the Redis store connects, when `db` is a Redis URL.
    pub redis: RedisConfig,
    /// Bearer token for the learn endpoints (also `HAMLET_LEARN_TOKEN`).
    /// Unset: the token in `learn_token_file`, made at first start.
    pub learn_token: Option<String>,
    /// Where the learn token is kept when `learn_token` is unset (default:
    /// beside the database, `<db stem>.learn-token`, readable by its owner
    /// only). `hamlet client` and `imap-train` read it from there too.
    pub learn_token_file: Option<PathBuf>,
    /// Learning over HTTP without any token (loopback addresses only).
    pub open_learning: bool,
    /// Largest request body accepted (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// Per-request time limit (seconds).
    pub timeout_s: u64,
    pub ham_cutoff: f64,
    pub spam_cutoff: f64,
    /// The cold-start gate's k, in messages (0: off): while a model that
    /// came with the starter model has learned few messages of its own, it
    /// does not call mail spam on the starter's word alone
    /// ([`crate::classify::Params::cold_start`]).
    pub cold_start: f64,
    /// Log filter (`info`, `hamlet=debug`, ...; `RUST_LOG` overrides).
    pub log: String,
    /// SPAMD listener: `IP:PORT`, or a UNIX socket path (starts with `/`);
    /// `None`: off.
    pub spamd: Option<String>,
    /// Whether SPAMD `TELL` (spamc -L / -C) may learn.
    pub spamd_allow_tell: bool,
    /// Client networks (CIDR) allowed to `TELL` over TCP; UNIX-socket
    /// clients are governed by the socket's file permissions.
    pub spamd_tell_from: Vec<String>,
    /// Most SPAMD connections served at once (see `http_max_connections`).
    pub spamd_max_connections: usize,
    /// Most HTTP connections served at once; past it, the connection that
    /// has waited on its client the longest is closed to make room (or, if
    /// every one is being answered, the newcomer waits).
    pub http_max_connections: usize,
    /// Most policy service connections served at once (see `http_max_connections`).
    pub policy_max_connections: usize,
    /// Message bytes all front ends together may hold in flight.
    pub inflight_body_bytes: usize,
    /// Seconds a client has to send a request's head (HTTP headers, the
    /// SPAMD head); its body then has `timeout_s`.
    pub head_timeout_s: u64,
    /// Per-user models: a folder for their files; `None`: off (everyone
    /// shares the one model).
    pub users_dir: Option<PathBuf>,
    /// User names that mean "no one in particular" (spamc sends the Unix
    /// user it runs as): they use the shared model.
    pub users_ignore: Vec<String>,
    /// Most per-user models open at once.
    pub users_max_open: usize,
    /// Most per-user models (files in `users_dir`): a learn that would
    /// create one more is refused. Each request may name a new user, so
    /// without a cap anyone who may learn can fill the disk.
    pub users_max: usize,
    /// Most bytes all per-user models may hold together before a learn for
    /// a new user is refused (existing users keep learning).
    pub users_max_bytes: u64,
    /// `hamlet imap-train`: its settings and accounts.
    pub imap: imap::ImapConfig,
    /// Postfix policy service: `IP:PORT` (Postfix's examples use
    /// 127.0.0.1:10040) or a UNIX socket path; `None`: off.
    pub policy: Option<String>,
    /// Milter listener (Postfix `smtpd_milters`, Sendmail): `IP:PORT`
    /// (rspamd's milter uses 127.0.0.1:11332) or a UNIX socket path;
    /// `None`: off.
    pub milter: Option<String>,
    /// Most milter sessions (SMTP sessions of the MTA) at once.
    pub milter_max_connections: usize,
    /// Milter: reject a message (550 5.7.1) at this spam probability or
    /// more; unset: never.
    pub milter_reject_at: Option<f64>,
    /// Milter: discard a message (accept it and drop it) at this
    /// probability or more; unset: never.
    pub milter_discard_at: Option<f64>,
    /// Milter: defer a message (451 4.7.1) at this probability or more;
    /// unset: never.
    pub milter_soft_reject_at: Option<f64>,
    /// Milter: hold a message in the MTA's quarantine (Postfix's hold
    /// queue) at this probability or more; unset: never.
    pub milter_quarantine_at: Option<f64>,
    /// The envelope checks: rule actions, greylisting.
    pub envelope: crate::envelope::EnvelopeConfig,
    /// `[antivirus]`: messages scanned by clamd (off unless `clamd` is set).
    pub antivirus: crate::envelope::antivirus::AntivirusConfig,
    /// `[autolearn]`: learning from the service's own confident verdicts.
    pub autolearn: crate::autolearn::AutoLearn,
    /// `[ui]`: the web console.
    pub ui: UiConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: "127.0.0.1:11333".into(),
            db: crate::store::default_db_path(),
            redis: RedisConfig::default(),
            learn_token: None,
            learn_token_file: None,
            open_learning: false,
            max_body_bytes: 20 << 20,
            timeout_s: 30,
            ham_cutoff: 0.20,
            spam_cutoff: 0.90,
            cold_start: crate::classify::Params::default().cold_start,
            log: "info".into(),
            spamd: None,
            spamd_allow_tell: false,
            spamd_tell_from: vec!["127.0.0.0/8".into(), "::1/128".into()],
            spamd_max_connections: 256,
            http_max_connections: 512,
            policy_max_connections: 512,
            milter: None,
            milter_max_connections: 256,
            milter_reject_at: None,
            milter_discard_at: None,
            milter_soft_reject_at: None,
            milter_quarantine_at: None,
            inflight_body_bytes: 256 << 20,
            head_timeout_s: 10,
            users_dir: None,
            // spamc sends the Unix user it runs as: the usual MTA, delivery
            // and filter accounts mean "no one in particular".
            users_ignore: [
                "root",
                "nobody",
                "mail",
                "postfix",
                "Debian-exim",
                "exim",
                "vmail",
                "dovecot",
                "dovenull",
                "amavis",
                "debian-spamd",
                "spamd",
                "_rspamd",
            ]
            .map(String::from)
            .to_vec(),
            users_max_open: 64,
            users_max: 10_000,
            users_max_bytes: 10 << 30,
            imap: Default::default(),
            policy: None,
            envelope: Default::default(),
            antivirus: Default::default(),
            autolearn: crate::autolearn::AutoLearn::default(),
            ui: UiConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {}", path.display(), e.message())))
    }

    /// Refuses settings that would be unsafe or cannot work.
    pub fn check(&self) -> Result<()> {
        let addr: std::net::SocketAddr = self.http.parse().map_err(|_| Error::Invalid(format!("http address {:?} is not IP:PORT", self.http)))?;
        if self.open_learning && !addr.ip().is_loopback() {
            return Err(Error::Invalid(format!(
                "refusing to serve learning on {} without a learn token: open_learning is for loopback addresses only",
                self.http
            )));
        }
        if self.learn_token.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Invalid("learn token is empty".into()));
        }
        for (what, addr) in [("spamd", &self.spamd), ("policy", &self.policy), ("milter", &self.milter)] {
            if let Some(s) = addr.as_ref().filter(|s| !s.starts_with('/') && s.parse::<std::net::SocketAddr>().is_err()) {
                return Err(Error::Invalid(format!("{what} address {s:?} is neither IP:PORT nor a socket path")));
            }
        }
        self.envelope.check()?;
        if self.ui.enabled {
            if self.open_learning && self.ui.password_hash.is_none() {
                return Err(Error::Invalid(
                    "the console needs a learn token or [ui] password_hash to sign in with (open_learning has no token)".into(),
                ));
            }
            if self.ui.history == 0 || self.ui.session_hours == 0 {
                return Err(Error::Invalid("[ui] history and session_hours must be at least 1".into()));
            }
            if let Some(h) = &self.ui.password_hash
                && !h.starts_with("pbkdf2-sha256$")
            {
                return Err(Error::Invalid("[ui] password_hash is not a line made by `hamlet ui-password`".into()));
            }
            if let Some(root) = &self.ui.eval_root
                && !root.is_dir()
            {
                return Err(Error::Invalid(format!("[ui] eval_root {} is not a folder", root.display())));
            }
        }
        crate::envelope::antivirus::Antivirus::new(&self.antivirus)?;
        for n in &self.spamd_tell_from {
            crate::net::Cidr::parse(n)?;
        }
        for (what, n) in [
            ("spamd_max_connections", self.spamd_max_connections),
            ("http_max_connections", self.http_max_connections),
            ("policy_max_connections", self.policy_max_connections),
            ("milter_max_connections", self.milter_max_connections),
        ] {
            if n == 0 {
                return Err(Error::Invalid(format!("{what} must be at least 1")));
            }
        }
        if self.head_timeout_s == 0 || self.timeout_s == 0 {
            return Err(Error::Invalid("head_timeout_s and timeout_s must be at least 1".into()));
        }
        // A largest message must fit, with room for its SPAMD reply.
        if self.inflight_body_bytes < 2 * self.max_body_bytes {
            return Err(Error::Invalid(format!(
                "inflight_body_bytes ({}) must be at least twice max_body_bytes ({})",
                self.inflight_body_bytes, self.max_body_bytes
            )));
        }
        self.check_cutoffs()?;
        for (what, t) in [
            ("milter_reject_at", self.milter_reject_at),
            ("milter_discard_at", self.milter_discard_at),
            ("milter_soft_reject_at", self.milter_soft_reject_at),
            ("milter_quarantine_at", self.milter_quarantine_at),
        ] {
            if let Some(t) = t.filter(|t| !(0.0..=1.0).contains(t)) {
                return Err(Error::Invalid(format!("{what} is a spam probability (0 to 1), not {t}")));
            }
        }
        if self.autolearn.enabled {
            self.autolearn.check(self.ham_cutoff, self.spam_cutoff)?;
        }
        Ok(())
    }
}

impl Config {
    /// The verdict cutoffs are probabilities, ham's no higher than spam's;
    /// the cold-start gate's k is a count.
    pub fn check_cutoffs(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.ham_cutoff) || !(0.0..=1.0).contains(&self.spam_cutoff) || self.ham_cutoff > self.spam_cutoff {
            return Err(Error::Invalid("cutoffs must satisfy 0 <= ham_cutoff <= spam_cutoff <= 1".into()));
        }
        if self.cold_start.is_nan() || self.cold_start < 0.0 || self.cold_start.is_infinite() {
            return Err(Error::Invalid(format!("cold_start must be a number of messages, 0 or more (0: off), not {}", self.cold_start)));
        }
        Ok(())
    }

    /// Where the learn token is kept when `learn_token` is unset.
    /// Whether `db` is a Redis URL (else a redb file).
    pub fn db_is_redis(&self) -> bool {
        crate::store::redis::is_redis_url(&self.db.to_string_lossy())
    }

    pub fn learn_token_path(&self) -> PathBuf {
        self.learn_token_file.clone().unwrap_or_else(|| self.beside_db("learn-token"))
    }

    /// A state file beside the token database: `<db stem>.<suffix>`
    /// (`hamlet.redb` → `hamlet.greylist.redb`).
    pub fn beside_db(&self, suffix: &str) -> PathBuf {
        if self.db_is_redis() {
            // No file to sit beside: the default database's folder.
            let d = crate::store::default_db_path();
            return d.with_file_name(format!("hamlet.{suffix}"));
        }
        let stem = self.db.file_stem().map_or_else(|| "hamlet".into(), |s| s.to_string_lossy().into_owned());
        self.db.with_file_name(format!("{stem}.{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let c: Config = toml::from_str("http = \"0.0.0.0:8080\"\nlearn_token = \"s3cret\"\n").unwrap();
        assert_eq!(c.http, "0.0.0.0:8080");
        assert!(c.check().is_ok());
        let open: Config = toml::from_str("http = \"0.0.0.0:8080\"\nopen_learning = true\n").unwrap();
        assert!(open.check().unwrap_err().to_string().contains("learn token"));
        let generated: Config = toml::from_str("http = \"0.0.0.0:8080\"\n").unwrap();
        assert!(generated.check().is_ok(), "the generated token guards learning");
        assert!(Config::default().check().is_ok(), "loopback without a token is fine");
        assert!(toml::from_str::<Config>("htp = \"x\"").is_err(), "unknown keys are errors");
        let bad: Config = toml::from_str("spamd = \"localhost\"\n").unwrap();
        assert!(bad.check().is_err());
        let bad: Config = toml::from_str("spamd_tell_from = [\"10.0.0.0/33\"]\n").unwrap();
        assert!(bad.check().is_err());
    }
}
