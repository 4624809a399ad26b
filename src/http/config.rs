//! `hamlet.toml`: the service's configuration. Every key is optional; flags
//! override the file, the file overrides the defaults. See
//! `examples/hamlet.toml` for a commented sample.

use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address.
    pub http: String,
    /// Token database.
    pub db: PathBuf,
    /// Bearer token for the learn endpoints (also `HAMLET_LEARN_TOKEN`).
    pub learn_token: Option<String>,
    /// Largest request body accepted (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// Per-request time limit (seconds).
    pub timeout_s: u64,
    pub ham_cutoff: f64,
    pub spam_cutoff: f64,
    /// Log filter (`info`, `hamlet=debug`, ...; `RUST_LOG` overrides).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: "127.0.0.1:11333".into(),
            db: crate::cli::default_db_path(),
            learn_token: None,
            max_body_bytes: 20 << 20,
            timeout_s: 30,
            ham_cutoff: 0.20,
            spam_cutoff: 0.90,
            log: "info".into(),
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
        let addr: std::net::SocketAddr = self
            .http
            .parse()
            .map_err(|_| Error::Invalid(format!("http address {:?} is not IP:PORT", self.http)))?;
        if self.learn_token.is_none() && !addr.ip().is_loopback() {
            return Err(Error::Invalid(format!(
                "refusing to serve learning on {} without a learn token: set learn_token in the config, \
                 --learn-token or HAMLET_LEARN_TOKEN",
                self.http
            )));
        }
        if self.learn_token.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Invalid("learn token is empty".into()));
        }
        if !(0.0..=1.0).contains(&self.ham_cutoff) || !(0.0..=1.0).contains(&self.spam_cutoff) || self.ham_cutoff > self.spam_cutoff {
            return Err(Error::Invalid("cutoffs must satisfy 0 <= ham_cutoff <= spam_cutoff <= 1".into()));
        }
        Ok(())
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
        let open: Config = toml::from_str("http = \"0.0.0.0:8080\"\n").unwrap();
        assert!(open.check().unwrap_err().to_string().contains("learn token"));
        assert!(Config::default().check().is_ok(), "loopback without a token is fine");
        assert!(toml::from_str::<Config>("htp = \"x\"").is_err(), "unknown keys are errors");
    }
}
