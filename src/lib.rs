//! hamlet — a self-learning Bayesian mail filter.
//!
//! # Layers
//!
//! Dependencies point one way, down this list (`layers.rules` states it,
//! CI checks it; `docs/architecture.md` walks a message through):
//!
//! * **Leaves**: [`error`], [`hash`] (token hashes), [`net`] (IP networks),
//!   [`message`] (header/body split), [`digest`], [`metrics`], [`mailbox`]
//!   (maildir, MH, mbox, TREC index).
//! * **Core**: [`tokenize`] turns a raw message into feature strings with
//!   bounded work; [`classify`] combines their evidence (Robinson/Fisher
//!   chi-square beside on-line logistic regressions); [`store`] keeps counts,
//!   weights and the training journal behind [`store::TokenStore`] (redb, or
//!   memory for tests); [`engine`] is the one place a message is scored,
//!   learned or unlearned, one at a time or many ([`engine::bulk`]);
//!   [`eval`] (the TREC protocol in-process), [`autolearn`], [`users`]
//!   (per-user models).
//! * **Service**: [`config`] (`hamlet.toml`), [`envelope`] (HELO, DNS lists,
//!   SPF, DKIM/DMARC, greylisting), [`build`] (the one step from a config to
//!   an engine or a service), [`service`] (what every front end shares).
//! * **Support**: [`protocol`] (SPAMD wire format, typed JSON replies),
//!   [`client`] (the client side of SPAMD and HTTP), [`listener`] (sockets
//!   and the accept loop with its caps).
//! * **Front ends**, which never import each other: [`http`] (the API of
//!   `api.md`), [`spamd`] (what real `spamc` talks to), [`policy`] (Postfix
//!   `check_policy_service`), [`imap`] (`hamlet imap-train`).
//! * **Composition roots**: [`serve`] binds the front ends around one
//!   service; [`cli`] parses the command line, calls the library and prints.
//!   `main.rs` only calls [`cli::main`].
//!
//! # Example
//!
//! ```
//! use hamlet::{engine::Engine, store::MemoryStore, Class};
//! let engine = Engine::new(MemoryStore::new(), Default::default());
//! engine.learn(b"Subject: cheap pills\r\n\r\nbuy cheap pills now", Class::Spam).unwrap();
//! engine.learn(b"Subject: minutes\r\n\r\nthe meeting minutes are attached", Class::Ham).unwrap();
//! let score = engine.check(b"Subject: pills\r\n\r\ncheap pills").unwrap();
//! assert!(score.probability > 0.5);
//! ```

pub mod autolearn;
pub mod build;
pub mod classify;
pub mod cli;
pub mod client;
pub mod config;
pub mod digest;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod eval;
pub mod hash;
pub mod history;
pub mod http;
pub mod imap;
pub mod listener;
pub mod mailbox;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod net;
pub mod policy;
pub mod protocol;
pub mod serve;
pub mod service;
pub mod spamd;
pub mod store;
pub mod tokenize;
pub mod users;

pub use error::{Error, Result};

/// The two classes a message can be learned as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Ham,
    Spam,
}

impl Class {
    /// The stored one-byte code (journal, dump format).
    pub fn code(self) -> u8 {
        match self {
            Class::Ham => 0,
            Class::Spam => 1,
        }
    }
    pub fn from_code(c: u8) -> Option<Class> {
        match c {
            0 => Some(Class::Ham),
            1 => Some(Class::Spam),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Class::Ham => "ham",
            Class::Spam => "spam",
        }
    }
    pub fn parse(s: &str) -> Option<Class> {
        match s.to_ascii_lowercase().as_str() {
            "ham" | "good" | "h" => Some(Class::Ham),
            "spam" | "bad" | "s" => Some(Class::Spam),
            _ => None,
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
