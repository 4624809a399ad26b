//! DKIM (RFC 6376, DomainKeys' heir) and DMARC (RFC 7489) at the content
//! stage: they need the message, so they run when a message is checked or
//! learned through the service (HTTP, SPAMD), not at the RCPT stage. mail-auth
//! verifies, over the envelope's resolver and within its DNS budget.
//!
//! Each result is an [`Outcome`](super::Outcome) with a token, like the
//! envelope's: `env:dkim=pass`, `env:dkim=fail`, `env:dkim=none`, and for a
//! valid signature its signing domain, `env:dkim-d=example.com`, so a
//! domain's reputation is learned like a word; `env:dmarc=pass`,
//! `env:dmarc=fail` (plus `env:dmarc=fail:reject` when the domain asks for
//! rejection), `env:dmarc=none`.
//!
//! DMARC aligns the From: domain with SPF (the envelope's result, when the
//! request carried one) and DKIM. Without an envelope, SPF counts as none
//! and only DKIM can align.

use super::spf::Spf;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfOutput, SpfResult};
use std::time::Duration;

/// What DKIM and DMARC said of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthReport {
    /// Per signature: result name and signing domain (`d=`).
    pub dkim: Vec<(&'static str, String)>,
    /// Result name, policy (`none`, `quarantine`, `reject`), From: domain.
    pub dmarc: Option<(&'static str, &'static str, String)>,
}

impl AuthReport {
    /// `(rule, token, detail)` for each finding; the first is the summary
    /// token for DKIM (`pass` if any signature passed).
    pub fn findings(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        let best = if self.dkim.is_empty() {
            "none"
        } else if self.dkim.iter().any(|(r, _)| *r == "pass") {
            "pass"
        } else if self.dkim.iter().any(|(r, _)| *r == "temperror") {
            "temperror"
        } else {
            "fail"
        };
        let rule = match best {
            "pass" => "DKIM_PASS",
            "none" => "DKIM_NONE",
            "temperror" => "DKIM_TEMPERROR",
            _ => "DKIM_FAIL",
        };
        let domains: Vec<String> = self.dkim.iter().map(|(r, d)| format!("{d} {r}")).collect();
        out.push((
            rule,
            format!("env:dkim={best}"),
            if domains.is_empty() { "no DKIM signature".into() } else { format!("DKIM {}", domains.join(", ")) },
        ));
        for (r, d) in &self.dkim {
            if *r == "pass" && !d.is_empty() {
                out.push(("DKIM_PASS_DOMAIN", format!("env:dkim-d={}", d.to_ascii_lowercase()), format!("valid signature by {d}")));
            }
        }
        if let Some((r, policy, domain)) = &self.dmarc {
            let rule = match *r {
                "pass" => "DMARC_PASS",
                "none" => "DMARC_NONE",
                "temperror" | "permerror" => "DMARC_ERROR",
                _ if *policy == "reject" => "DMARC_FAIL_REJECT",
                _ if *policy == "quarantine" => "DMARC_FAIL_QUARANTINE",
                _ => "DMARC_FAIL",
            };
            let token = if *r == "fail" && (*policy == "reject" || *policy == "quarantine") {
                format!("env:dmarc=fail:{policy}")
            } else {
                format!("env:dmarc={r}")
            };
            out.push((rule, token, format!("DMARC {r} for {domain} (p={policy})")));
        }
        out
    }
}

/// Verifies DKIM signatures and DMARC over one resolver.
pub struct AuthChecker {
    auth: MessageAuthenticator,
    budget: Duration,
}

impl AuthChecker {
    pub fn new(resolver: hickory_resolver::TokioResolver, budget: Duration) -> AuthChecker {
        AuthChecker { auth: MessageAuthenticator(resolver), budget }
    }

    /// Checks a message. `mail_from` and `spf`: the envelope's, when known.
    /// Over the budget, what is known by then is not kept: the report says
    /// temperror.
    pub async fn check(&self, raw: &[u8], mail_from: Option<&str>, spf: Option<&Spf>) -> AuthReport {
        let Some(msg) = AuthenticatedMessage::parse(raw) else { return AuthReport::default() };
        let work = async {
            let dkim = self.auth.verify_dkim(&msg).await;
            let from_domain = mail_from.and_then(|m| m.rsplit_once('@')).map_or("", |(_, d)| d).to_string();
            let spf_out = match spf {
                Some(s) => SpfOutput::new(s.domain.clone()).with_result(s.verdict.into()),
                None => SpfOutput::new(from_domain.clone()).with_result(SpfResult::None),
            };
            let dmarc = self.auth.verify_dmarc(DmarcParameters::new(&msg, &dkim, &from_domain, &spf_out)).await;
            let dkim_names: Vec<(&'static str, String)> =
                dkim.iter().map(|o| (dkim_name(o.result()), o.signature().map_or_else(String::new, |s| s.d.clone()))).collect();
            // A message without a DMARC-bearing From: domain says nothing.
            let dmarc = match dmarc.result() {
                DmarcResult::None if dmarc.domain().is_empty() => None,
                r => Some((dmarc_name(&r), policy_name(dmarc.policy()), dmarc.domain().to_string())),
            };
            AuthReport { dkim: dkim_names, dmarc }
        };
        match tokio::time::timeout(self.budget, work).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("DKIM/DMARC over the DNS budget; reporting temperror");
                AuthReport { dkim: vec![("temperror", String::new())], dmarc: None }
            }
        }
    }
}

fn dkim_name(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_name(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::None | Policy::Unspecified => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_and_tokens() {
        let r = AuthReport {
            dkim: vec![("fail", "a.example".into()), ("pass", "Mail.Example".into())],
            dmarc: Some(("pass", "reject", "mail.example".into())),
        };
        let f = r.findings();
        let tokens: Vec<&str> = f.iter().map(|(_, t, _)| t.as_str()).collect();
        assert_eq!(tokens, ["env:dkim=pass", "env:dkim-d=mail.example", "env:dmarc=pass"]);
        let r = AuthReport { dkim: vec![], dmarc: Some(("fail", "reject", "bank.example".into())) };
        let f = r.findings();
        assert_eq!((f[0].0, f[1].0, f[1].1.as_str()), ("DKIM_NONE", "DMARC_FAIL_REJECT", "env:dmarc=fail:reject"));
    }
}
