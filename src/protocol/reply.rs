//! The JSON bodies of hamlet's HTTP API (`api.md`) as types: the server
//! serializes them and the clients (`hamlet client --http`, `imap-train`
//! learning through `hamlet serve`) deserialize the same types, so the two
//! sides cannot drift apart.

use crate::classify::{Clue, Score, Verdict};
use serde::{Deserialize, Serialize};

/// How many clues a check reply lists.
pub const REPLY_CLUES: usize = 30;

/// `POST /v1/check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// A client needs only `verdict` and `probability`; the rest default when
/// missing (an older server), as the clients always allowed.
pub struct CheckReply {
    /// `spam`, `ham` or `unsure`.
    pub verdict: String,
    pub probability: f64,
    #[serde(default)]
    pub logit: f64,
    #[serde(default)]
    pub stages: Stages,
    #[serde(default)]
    pub clues: Vec<ClueReply>,
    #[serde(default)]
    pub elapsed_ms: f64,
    #[serde(default = "default_ham_cutoff")]
    pub ham_cutoff: f64,
    #[serde(default = "default_spam_cutoff")]
    pub spam_cutoff: f64,
    /// The model could not be read (Redis unreachable): the verdict is
    /// `unsure` with no opinion. Sent only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub store_error: bool,
}

fn default_ham_cutoff() -> f64 {
    crate::classify::Params::default().ham_cutoff
}

fn default_spam_cutoff() -> f64 {
    crate::classify::Params::default().spam_cutoff
}

/// What each stage of the check found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    pub content: ContentStage,
    /// Present when the request carried an envelope (or DKIM/DMARC ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<EnvelopeStage>,
    /// Present when `[antivirus]` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub antivirus: Option<AntivirusStage>,
}

/// The antivirus scan of the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntivirusStage {
    /// `clean`, `virus`, `skipped` or `error`.
    pub result: String,
    /// The signature's name, for a virus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why it was skipped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the configuration does with it: for a virus `reject`,
    /// `quarantine`, `header` or `score`; for an error `fail_open` or
    /// `tempfail`; else `none`.
    pub action: String,
}

/// The classifier's inputs to the verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentStage {
    pub fisher_logit: f64,
    pub lr_logit: f64,
    pub gram_logit: f64,
    pub tokens: usize,
}

/// The envelope checks' decision and the rules that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeStage {
    /// `continue`, `defer` or `reject`.
    pub decision: String,
    /// The SMTP reply text of a defer or reject.
    pub text: Option<String>,
    pub outcomes: Vec<OutcomeReply>,
}

/// One envelope rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeReply {
    pub rule: String,
    pub token: String,
    pub detail: String,
    /// `reject`, `defer`, `score` or `off`.
    pub action: String,
}

/// One deciding token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClueReply {
    pub token: String,
    pub prob: f64,
    pub spam: u32,
    pub ham: u32,
    pub weight: f32,
}

impl From<&Clue> for ClueReply {
    fn from(c: &Clue) -> ClueReply {
        ClueReply { token: c.token.clone(), prob: c.prob, spam: c.spam, ham: c.ham, weight: c.weight }
    }
}

/// `POST /v1/learn/{spam,ham}` and `/v1/unlearn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnReply {
    /// `learned`, `already learned`, `relearned` or `unlearned`
    /// (`LearnOutcome::name`).
    pub result: String,
}

/// Every error: `{"error": {"status": 413, "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub status: u16,
    pub message: String,
}

impl CheckReply {
    /// The reply for `score`, made under the given cutoffs.
    pub fn new(s: &Score, elapsed_ms: f64, ham_cutoff: f64, spam_cutoff: f64) -> CheckReply {
        CheckReply {
            verdict: s.verdict.name().to_string(),
            probability: s.probability,
            logit: s.logit,
            stages: Stages {
                content: ContentStage { fisher_logit: s.fisher_logit, lr_logit: s.lr_logit, gram_logit: s.gram_logit, tokens: s.tokens },
                envelope: None,
                antivirus: None,
            },
            clues: s.clues.iter().take(REPLY_CLUES).map(ClueReply::from).collect(),
            elapsed_ms,
            ham_cutoff,
            spam_cutoff,
            store_error: s.store_error,
        }
    }

    /// The [`Score`] again, as far as the reply carries it (the mixer's
    /// inputs are not sent).
    pub fn score(&self) -> Score {
        let verdict = match self.verdict.as_str() {
            "spam" => Verdict::Spam,
            "ham" => Verdict::Ham,
            _ => Verdict::Unsure,
        };
        let c = &self.stages.content;
        Score {
            probability: self.probability,
            logit: self.logit,
            verdict,
            fisher_logit: c.fisher_logit,
            lr_logit: c.lr_logit,
            gram_logit: c.gram_logit,
            mix_inputs: [0.0, 0.0],
            clues: self.clues.iter().map(|c| Clue { token: c.token.clone(), prob: c.prob, spam: c.spam, ham: c.ham, weight: c.weight }).collect(),
            tokens: c.tokens,
            store_error: self.store_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_reply_round_trips_through_json() {
        let s = Score {
            probability: 0.97,
            logit: 3.5,
            verdict: Verdict::Spam,
            fisher_logit: 3.0,
            lr_logit: 0.25,
            gram_logit: -0.5,
            mix_inputs: [0.0, 0.0],
            clues: vec![Clue { token: "cheap".into(), prob: 0.99, spam: 12, ham: 0, weight: 0.5 }],
            tokens: 42,
            store_error: false,
        };
        let reply = CheckReply::new(&s, 1.5, 0.2, 0.9);
        let text = serde_json::to_string(&reply).unwrap();
        assert!(!text.contains("\"envelope\""), "no envelope stage without an envelope: {text}");
        let back: CheckReply = serde_json::from_str(&text).unwrap();
        assert_eq!(back, reply);
        let again = back.score();
        assert_eq!((again.verdict, again.probability, again.tokens, again.clues.len()), (Verdict::Spam, 0.97, 42, 1));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["stages"]["content"]["tokens"], 42);
        assert_eq!(v["clues"][0]["token"], "cheap");
        let old: CheckReply = serde_json::from_str(r#"{"verdict": "ham", "probability": 0.1}"#).unwrap();
        assert_eq!((old.spam_cutoff, old.clues.len()), (0.9, 0));
    }
}
