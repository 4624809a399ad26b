//! hamlet — a self-learning Bayesian mail filter.
//!
//! # Brief overview
//!
//! * [`tokenize`] turns a raw RFC 822 message into a set of feature strings
//!   (header, body, URL and attachment tokens), with bounded work per message.
//! * [`classify`] combines per-token evidence: Robinson's f(w) and Fisher's
//!   chi-square (plus Graham-2002 for comparison), and an on-line logistic
//!   regression over the same tokens.
//! * [`store`] keeps token counts, weights and the training journal behind the
//!   [`store::TokenStore`] trait: a redb file for real use, memory for tests.
//! * [`engine`] is the one entry point every edge (CLI, HTTP, SPAMD, IMAP) calls:
//!   check a message, learn it, unlearn it.
//! * [`envelope`] checks the SMTP envelope (HELO and RFC 5321 strictness,
//!   greylisting); [`policy`] serves them to Postfix.
//! * [`imap`] is `hamlet imap-train`: learning from users' Junk and ham
//!   folders.
//! * [`eval`] runs the TREC on-line protocol in-process and draws ROC curves.
//! * [`service`] is `hamlet serve`: one engine shared by its edges, [`http`]
//!   (the HTTP API, see `api.md`) and [`spamd`] (the SPAMD listener real
//!   `spamc` talks to).
//! * [`cli`] is the `hamlet` command line; `main.rs` only calls it.
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
pub mod classify;
pub mod cli;
pub mod config;
pub mod digest;
pub mod engine;
pub mod envelope;
pub mod error;
pub mod eval;
pub mod http;
pub mod imap;
pub mod mailbox;
pub mod metrics;
pub mod policy;
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
