//! The `[imap]` part of `hamlet.toml`: the job's settings and its accounts.
//!
//! ```toml
//! [imap]
//! batch = 100            # messages per fetch, learn and state commit
//! poll_s = 300           # --watch: longest wait between passes
//!
//! [[imap.account]]
//! name = "alice"
//! host = "imap.example.org"
//! tls = "implicit"       # implicit (993) | starttls (143) | plain (loopback only)
//! user = "alice@example.org"
//! password_file = "/etc/hamlet/alice.pass"   # or password_env = "ALICE_IMAP_PASSWORD"
//! spam_folders = ["Junk"]
//! ham_folders = ["Archive"]
//! sent_folders = ["Sent"]    # learned as ham: mail the user wrote
//! ignore_folders = ["Trash"]
//! model = "user"         # "global" (default) or "user": the account's per-user model
//! after = "flag"         # leave (default) | flag | move | delete
//! ```

use crate::{Error, Result};
use serde::Deserialize;
use std::path::PathBuf;

/// `[imap]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapConfig {
    /// Where the job remembers what it has read (default: beside the token
    /// database, `<db stem>.imap-state.redb`).
    pub state: Option<PathBuf>,
    /// Messages per fetch, learn and state commit.
    pub batch: usize,
    /// `--watch`: the longest wait between passes (IDLE wakes it sooner).
    pub poll_s: u64,
    pub account: Vec<Account>,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig { state: None, batch: 100, poll_s: 300, account: Vec::new() }
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain connect, then STARTTLS before login (port 143).
    Starttls,
    /// No TLS: allowed only to a loopback address.
    Plain,
}

/// What to do with a message once learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Leave,
    /// Set `keyword`.
    Flag,
    /// Move to `move_to`.
    Move,
    /// Delete (and expunge).
    Delete,
}

/// Which model an account trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    Global,
    /// The per-user model named `model_user` (default: the login name).
    User,
}

/// `[[imap.account]]`. No password is ever held here: only where to read it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    pub host: String,
    pub port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: Tls,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    pub user: String,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    #[serde(default)]
    pub spam_folders: Vec<String>,
    #[serde(default)]
    pub ham_folders: Vec<String>,
    #[serde(default)]
    pub sent_folders: Vec<String>,
    /// Never read, even if listed above (Trash: a message deleted from Junk
    /// is not ham).
    #[serde(default)]
    pub ignore_folders: Vec<String>,
    #[serde(default = "default_model")]
    pub model: Model,
    pub model_user: Option<String>,
    #[serde(default = "default_after")]
    pub after: After,
    #[serde(default = "default_keyword")]
    pub keyword: String,
    pub move_to: Option<String>,
}

fn default_tls() -> Tls {
    Tls::Implicit
}
fn default_model() -> Model {
    Model::Global
}
fn default_after() -> After {
    After::Leave
}
fn default_keyword() -> String {
    "$HamletLearned".into()
}

impl Account {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls == Tls::Implicit { 993 } else { 143 })
    }

    /// The per-user model this account trains, if any.
    pub fn model_user(&self) -> Option<&str> {
        match self.model {
            Model::Global => None,
            Model::User => Some(self.model_user.as_deref().unwrap_or(&self.user)),
        }
    }

    /// Reads the password from its file (first line) or environment variable.
    pub fn password(&self) -> Result<String> {
        match (&self.password_file, &self.password_env) {
            (Some(p), _) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
                Ok(text.lines().next().unwrap_or("").to_string())
            }
            (None, Some(v)) => std::env::var(v).map_err(|_| Error::Invalid(format!("account {}: environment variable {v} is not set", self.name))),
            (None, None) => Err(Error::Invalid(format!("account {}: set password_file or password_env", self.name))),
        }
    }

    /// The folders to read, each with the class its mail is learned as.
    pub fn folders(&self) -> Vec<(String, crate::Class)> {
        let ignored = |f: &String| self.ignore_folders.iter().any(|i| i == f);
        let mut out = Vec::new();
        for (list, class) in
            [(&self.spam_folders, crate::Class::Spam), (&self.ham_folders, crate::Class::Ham), (&self.sent_folders, crate::Class::Ham)]
        {
            out.extend(list.iter().filter(|f| !ignored(f)).map(|f| (f.clone(), class)));
        }
        out
    }

    /// Refuses settings that cannot work or would be unsafe.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("account {}: {m}", self.name)));
        if self.name.is_empty() || self.name.contains('\0') {
            return bad("needs a name".into());
        }
        if self.tls == Tls::Plain && !is_loopback(&self.host) {
            return bad(format!("tls = \"plain\" is allowed only to a loopback host, not {}", self.host));
        }
        if self.password_file.is_none() && self.password_env.is_none() {
            return bad("set password_file or password_env".into());
        }
        if self.folders().is_empty() {
            return bad("no folders to read (spam_folders, ham_folders, sent_folders)".into());
        }
        for f in &self.spam_folders {
            if self.ham_folders.contains(f) || self.sent_folders.contains(f) {
                return bad(format!("folder {f:?} is both a spam and a ham folder"));
            }
        }
        if self.after == After::Move {
            match &self.move_to {
                None => return bad("after = \"move\" needs move_to".into()),
                Some(m) if self.folders().iter().any(|(f, _)| f == m) => {
                    return bad(format!("move_to {m:?} is a folder the job reads: it would learn its own moves"));
                }
                Some(_) => {}
            }
        }
        let atom_ok = !self.keyword.is_empty() && self.keyword.bytes().all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
        if !atom_ok {
            return bad(format!("keyword {:?} is not an IMAP keyword (an atom: no spaces, parentheses, quotes or backslash)", self.keyword));
        }
        if let Some(u) = self.model_user()
            && !crate::users::valid_name(u)
        {
            return bad(format!("{u:?} is not a valid per-user model name"));
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(extra: &str) -> Account {
        toml::from_str(&format!("name = \"a\"\nhost = \"127.0.0.1\"\nuser = \"u\"\npassword_env = \"P\"\n{extra}")).unwrap()
    }

    #[test]
    fn checks() {
        let a = account("tls = \"plain\"\nspam_folders = [\"Junk\"]\nham_folders = [\"INBOX\", \"Trash\"]\nignore_folders = [\"Trash\"]\n");
        assert!(a.check().is_ok());
        assert_eq!(a.port(), 143);
        assert_eq!(a.folders(), vec![("Junk".into(), crate::Class::Spam), ("INBOX".into(), crate::Class::Ham)]);
        assert!(account("spam_folders = [\"Junk\"]\n").check().is_ok());
        assert_eq!(account("").port(), 993);
        let remote: Account = toml::from_str(
            "name = \"a\"\nhost = \"imap.example.org\"\nuser = \"u\"\npassword_env = \"P\"\ntls = \"plain\"\nspam_folders = [\"J\"]\n",
        )
        .unwrap();
        assert!(remote.check().unwrap_err().to_string().contains("loopback"));
        assert!(account("").check().is_err(), "no folders");
        assert!(account("spam_folders = [\"J\"]\nham_folders = [\"J\"]\n").check().is_err());
        assert!(account("spam_folders = [\"J\"]\nafter = \"move\"\n").check().is_err());
        assert!(
            account("spam_folders = [\"J\"]\nham_folders = [\"A\"]\nafter = \"move\"\nmove_to = \"A\"\n").check().is_err(),
            "move into a read folder"
        );
        assert!(account("spam_folders = [\"J\"]\nafter = \"move\"\nmove_to = \"Learned\"\n").check().is_ok());
        assert!(account("spam_folders = [\"J\"]\nkeyword = \"\\\\Deleted\"\n").check().is_err());
        assert!(account("spam_folders = [\"J\"]\nkeyword = \"two words\"\n").check().is_err());
        assert!(toml::from_str::<Account>("name = \"a\"\nhost = \"h\"\nuser = \"u\"\npassword = \"x\"\n").is_err(), "no inline passwords");
        let u = account("spam_folders = [\"J\"]\nmodel = \"user\"\n");
        assert_eq!(u.model_user(), Some("u"));
    }
}
