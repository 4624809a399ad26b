//! Envelope-level checks, run on the SMTP envelope before any content is
//! scored: HELO and RFC 5321 strictness ([`helo`]), DNS block- and
//! allowlists ([`dnsbl`]), SPF ([`spf`]) and greylisting ([`greylist`]).
//! DKIM and DMARC need the message, so they run at the content stage
//! ([`dkim`]) and report through the same outcome model.
//!
//! A check yields named [`Outcome`]s (`HELO_NOT_FQDN`, `GREYLIST_DEFER`),
//! each with the action its rule is configured for: reject, defer,
//! score-only or off. The admin tightens rules one at a time, as the seed
//! says: old legitimate servers fail pedantic checks, so the defaults
//! reject only what no legitimate server does (an unparseable HELO, our own
//! name in it, a malformed address) and score the rest. Every outcome also
//! has a synthetic token (`env:helo=bare`) for the content classifier to
//! learn its weight from.

pub mod antivirus;
pub mod dkim;
pub mod dnsbl;
pub mod greylist;
pub mod helo;
pub mod received;
pub mod spf;

use crate::Result;
use greylist::{GreyStore, Greylist, GreylistConfig, Signals, Verdict};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What one SMTP transaction looks like from outside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    pub client_ip: Option<IpAddr>,
    /// The verified reverse DNS name; `None` when there is none.
    pub client_name: Option<String>,
    pub helo: String,
    /// Empty for the null sender `<>`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub sasl_user: Option<String>,
    /// Which of the fields were given at all. Postfix always sends them; an
    /// HTTP client may leave some out (locally submitted mail has no HELO),
    /// and a check whose input was not given is skipped, not failed.
    pub known: Known,
}

/// See [`Envelope::known`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    pub helo: bool,
    pub mail_from: bool,
    pub client_name: bool,
}

impl Known {
    pub const ALL: Known = Known { helo: true, mail_from: true, client_name: true };
}

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Reject,
    Defer,
    /// Recorded (and learned from as a token), nothing else.
    Score,
    Off,
}

impl RuleAction {
    /// As hamlet.toml and the API spell it: `reject`, `defer`, `score`, `off`.
    pub fn name(self) -> &'static str {
        match self {
            RuleAction::Reject => "reject",
            RuleAction::Defer => "defer",
            RuleAction::Score => "score",
            RuleAction::Off => "off",
        }
    }
}

/// One check's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `HELO_NOT_FQDN`, `GREYLIST_DEFER`, ...
    pub rule: &'static str,
    /// The synthetic token for the content stage.
    pub token: String,
    /// For the SMTP reply and the log.
    pub detail: String,
    pub action: RuleAction,
}

/// The envelope verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Continue,
    /// 4xx, with the reply text.
    Defer(String),
    /// 5xx, with the reply text.
    Reject(String),
}

/// `[envelope]` in hamlet.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvelopeConfig {
    /// Our own host names: a client greeting with one is forging.
    pub my_names: Vec<String>,
    /// Our own addresses.
    pub my_addresses: Vec<IpAddr>,
    /// Rule name → action, overriding the defaults (see [`default_action`]).
    pub rules: BTreeMap<String, RuleAction>,
    pub greylist: GreylistConfig,
    /// Greylisting state (default: beside the token database,
    /// `<db stem>.greylist.redb`; with the model on Redis, on that Redis
    /// unless a file is named here).
    pub greylist_db: Option<std::path::PathBuf>,
    /// The resolver for DNS lists, its time limits.
    pub dns: dnsbl::DnsConfig,
    /// `[[envelope.dnsbl]]`: block- and allowlist zones.
    pub dnsbl: Vec<dnsbl::Zone>,
    /// `[envelope.spf]`.
    pub spf: DnsCheck,
    /// `[envelope.dkim]`: DKIM and DMARC at the content stage.
    pub dkim: DnsCheck,
}

/// `[envelope.spf]`, `[envelope.dkim]`: a DNS-based check, on or off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsCheck {
    /// Off by default: it needs a working resolver, which a test box or an
    /// offline host may not have.
    pub enabled: bool,
}

/// The rule names and their default actions.
pub const RULES: &[(&str, RuleAction)] = &[
    ("HELO_MISSING", RuleAction::Reject),
    ("HELO_INVALID", RuleAction::Reject),
    ("HELO_OURS", RuleAction::Reject),
    // Common on small, old, legitimate servers: scored until the admin says otherwise.
    ("HELO_NOT_FQDN", RuleAction::Score),
    ("HELO_BARE_ADDRESS", RuleAction::Score),
    ("HELO_LITERAL_MISMATCH", RuleAction::Score),
    ("MAIL_FROM_INVALID", RuleAction::Reject),
    ("RCPT_TO_INVALID", RuleAction::Reject),
    // A bounce goes to one address; a null sender to many is spam's trick.
    ("NULL_SENDER_MULTI_RCPT", RuleAction::Score),
    ("CLIENT_NO_RDNS", RuleAction::Score),
    ("GREYLIST_DEFER", RuleAction::Defer),
    // SPF results are all recorded, so their tokens learn their weight. A
    // fail is only scored by default: mail forwarded without SRS fails SPF
    // through no fault of its sender. Set SPF_FAIL = "reject" to honour
    // "-all" strictly (what postfix-policyd-spf does by default).
    ("SPF_PASS", RuleAction::Score),
    ("SPF_FAIL", RuleAction::Score),
    ("SPF_SOFTFAIL", RuleAction::Score),
    ("SPF_NEUTRAL", RuleAction::Score),
    ("SPF_NONE", RuleAction::Score),
    ("SPF_TEMPERROR", RuleAction::Score),
    ("SPF_PERMERROR", RuleAction::Score),
    // DKIM and DMARC (content stage): scored, their tokens learned. A
    // DMARC fail under p=reject may be set to reject by the admin.
    ("DKIM_PASS", RuleAction::Score),
    ("DKIM_PASS_DOMAIN", RuleAction::Score),
    ("DKIM_FAIL", RuleAction::Score),
    ("DKIM_NONE", RuleAction::Score),
    ("DKIM_TEMPERROR", RuleAction::Score),
    ("DMARC_PASS", RuleAction::Score),
    ("DMARC_NONE", RuleAction::Score),
    ("DMARC_ERROR", RuleAction::Score),
    ("DMARC_FAIL", RuleAction::Score),
    ("DMARC_FAIL_QUARANTINE", RuleAction::Score),
    ("DMARC_FAIL_REJECT", RuleAction::Score),
];

/// Seconds since the epoch: the envelope checks' clock.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A rule's default action.
pub fn default_action(rule: &str) -> RuleAction {
    RULES.iter().find(|(r, _)| *r == rule).map_or(RuleAction::Score, |(_, a)| *a)
}

impl EnvelopeConfig {
    pub fn action(&self, rule: &str) -> RuleAction {
        self.rules.get(rule).copied().unwrap_or_else(|| default_action(rule))
    }

    pub fn check(&self) -> Result<()> {
        for r in self.rules.keys() {
            if !RULES.iter().any(|(k, _)| k == r) {
                let known: Vec<&str> = RULES.iter().map(|(k, _)| *k).collect();
                return Err(crate::Error::Invalid(format!("[envelope.rules]: unknown rule {r:?} (known: {})", known.join(", "))));
            }
        }
        for c in &self.greylist.whitelist_clients {
            crate::net::Cidr::parse(c)?;
        }
        Ok(())
    }
}

/// The result of checking an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub decision: Decision,
    /// Greylisting's verdict for the (first) recipient, when it ran.
    pub greylist: Option<Verdict>,
    /// The SPF result, when SPF ran.
    pub spf: Option<spf::Spf>,
    /// DKIM's and DMARC's results, when they ran.
    pub auth: Option<dkim::AuthReport>,
    /// The antivirus scan's answer, when it ran.
    pub antivirus: Option<antivirus::Scan>,
}

/// The answers of the envelope's DNS checks, gathered (concurrently,
/// within the DNS budget) before the synchronous part of the check.
#[derive(Debug, Clone, Default)]
pub struct Lookups {
    pub dnsbl: Vec<dnsbl::Listing>,
    pub spf: Option<spf::Spf>,
}

impl Report {
    /// A report with nothing in it (for a request without an envelope).
    pub fn empty() -> Report {
        Report { outcomes: Vec::new(), decision: Decision::Continue, greylist: None, spf: None, auth: None, antivirus: None }
    }

    /// Adds the antivirus scan (making a report for a request without an
    /// envelope), its outcome and the decision updated.
    pub fn with_antivirus(report: Option<Report>, av: &antivirus::Antivirus, scan: antivirus::Scan) -> Report {
        let mut r = report.unwrap_or_else(Report::empty);
        if let Some(o) = av.outcome(&scan) {
            r.outcomes.push(o);
            r.decision = decide(&r.outcomes);
        }
        r.antivirus = Some(scan);
        r
    }

    /// The virus the antivirus found in the message, if any.
    pub fn virus(&self) -> Option<&str> {
        self.antivirus.as_ref().and_then(antivirus::Scan::virus)
    }

    /// The `Authentication-Results` field value (RFC 8601) for what SPF,
    /// DKIM and DMARC found, under `authserv_id` (this host's name); `None`
    /// when none of them ran. Methods after the first start a folded line.
    pub fn authentication_results(&self, authserv_id: &str, env: &Envelope) -> Option<String> {
        // A property value is a token or an address: nothing that would end
        // it, start a comment, or fold the field.
        let value = |s: &str| {
            let v: String = s.chars().filter(|c| c.is_ascii_graphic() && !matches!(c, ';' | '(' | ')' | '"' | '\\')).take(200).collect();
            if v.is_empty() { "unknown".to_string() } else { v }
        };
        let mut parts = Vec::new();
        if let Some(s) = &self.spf {
            let property = match s.identity {
                spf::Identity::MailFrom => format!("smtp.mailfrom={}", value(&env.mail_from)),
                spf::Identity::Helo => format!("smtp.helo={}", value(&env.helo)),
            };
            parts.push(format!("spf={} {property}", s.verdict.as_str()));
        }
        if let Some(a) = &self.auth {
            if a.dkim.is_empty() {
                parts.push("dkim=none".to_string());
            }
            for (result, domain) in &a.dkim {
                parts.push(if domain.is_empty() { format!("dkim={result}") } else { format!("dkim={result} header.d={}", value(domain)) });
            }
            if let Some((result, policy, domain)) = &a.dmarc {
                parts.push(format!("dmarc={result} (p={policy}) header.from={}", value(domain)));
            }
        }
        if parts.is_empty() {
            return None;
        }
        Some(format!("{};\n\t{}", value(authserv_id), parts.join(";\n\t")))
    }

    /// The synthetic tokens of every outcome that is not off.
    pub fn tokens(&self) -> Vec<String> {
        self.outcomes.iter().filter(|o| o.action != RuleAction::Off && !o.token.is_empty()).map(|o| o.token.clone()).collect()
    }
}

/// Runs the checks.
pub struct Checker<G: GreyStore> {
    pub config: EnvelopeConfig,
    greylist: Option<Greylist<G>>,
    dnsbl: Option<dnsbl::Dnsbl>,
    spf: Option<spf::SpfChecker>,
    auth: Option<dkim::AuthChecker>,
}

impl<G: GreyStore> Checker<G> {
    /// `store`: greylisting state, used when greylisting is enabled.
    pub fn new(config: EnvelopeConfig, store: Option<G>) -> Result<Checker<G>> {
        config.check()?;
        let greylist = match store {
            Some(s) if config.greylist.enabled => Some(Greylist::new(config.greylist.clone(), s)?),
            _ => None,
        };
        let (mut dnsbl, mut spf, mut auth) = (None, None, None);
        if !config.dnsbl.is_empty() || config.spf.enabled || config.dkim.enabled {
            let resolver = dnsbl::resolver(&config.dns)?;
            if !config.dnsbl.is_empty() {
                dnsbl = Some(dnsbl::Dnsbl::with_resolver(resolver.clone(), &config.dns, config.dnsbl.clone()));
            }
            let budget = std::time::Duration::from_millis(config.dns.budget_ms.max(1));
            if config.dkim.enabled {
                auth = Some(dkim::AuthChecker::new(resolver.clone(), budget));
            }
            if config.spf.enabled {
                let host = config.my_names.first().map_or("", String::as_str);
                spf = Some(spf::SpfChecker::new(resolver, host, budget));
            }
        }
        Ok(Checker { config, greylist, dnsbl, spf, auth })
    }

    /// DKIM and DMARC for a message (`None` when they are off). `env`
    /// and `spf`: the envelope and its SPF result, when the request had them.
    pub async fn authenticate(&self, raw: &[u8], env: Option<&Envelope>, spf: Option<&spf::Spf>) -> Option<dkim::AuthReport> {
        let a = self.auth.as_ref()?;
        let from = env.filter(|e| e.known.mail_from).map(|e| e.mail_from.as_str());
        Some(a.check(raw, from, spf).await)
    }

    /// Adds DKIM/DMARC findings to a report (making one for a request
    /// without an envelope), its decision updated.
    pub fn add_auth(&self, report: Option<Report>, auth: dkim::AuthReport) -> Report {
        let mut r = report.unwrap_or_else(Report::empty);
        for (rule, token, detail) in auth.findings() {
            r.outcomes.push(self.outcome(rule, token, detail));
        }
        r.decision = decide(&r.outcomes);
        r.auth = Some(auth);
        r
    }

    /// The DNS work for an envelope's client: list lookups and SPF, at
    /// once (none without a client address). Async: run it before
    /// [`Checker::check_with`].
    pub async fn lookups(&self, env: &Envelope) -> Lookups {
        let Some(ip) = env.client_ip else { return Lookups::default() };
        let (dnsbl, spf) = tokio::join!(self.lookup_lists(ip), self.lookup_spf(env));
        Lookups { dnsbl, spf }
    }

    /// The DNS lists' answers for a client address (the SMTP connect
    /// stage has only that).
    pub async fn lookup_lists(&self, ip: IpAddr) -> Vec<dnsbl::Listing> {
        match &self.dnsbl {
            Some(d) => d.check(ip).await,
            None => Vec::new(),
        }
    }

    /// SPF for an envelope: it needs the client address and the HELO or
    /// the sender; an authenticated or local client is ours, not some
    /// domain's, and is not checked.
    pub async fn lookup_spf(&self, env: &Envelope) -> Option<spf::Spf> {
        let (Some(s), Some(ip)) = (&self.spf, env.client_ip) else { return None };
        if self.trusted(env) || !(env.known.helo || env.known.mail_from) {
            return None;
        }
        let helo = if env.known.helo { env.helo.as_str() } else { "" };
        let from = if env.known.mail_from { env.mail_from.as_str() } else { "" };
        if helo.is_empty() && from.is_empty() { None } else { Some(s.check(ip, helo, from).await) }
    }

    /// An authenticated user's client, or software on this host.
    fn trusted(&self, env: &Envelope) -> bool {
        env.sasl_user.as_deref().is_some_and(|u| !u.is_empty())
            || env.client_ip.is_some_and(|ip| ip.is_loopback() || self.config.my_addresses.contains(&ip))
    }

    fn outcome(&self, rule: &'static str, token: impl Into<String>, detail: impl Into<String>) -> Outcome {
        Outcome { rule, token: token.into(), detail: detail.into(), action: self.config.action(rule) }
    }

    /// Checks an envelope at time `now` (seconds since the epoch; tests
    /// pass their own clock). Greylisting runs only for a recipient, and
    /// only when nothing else rejects.
    pub fn check(&self, env: &Envelope, now: u64) -> Result<Report> {
        self.check_with(env, &Lookups::default(), now)
    }

    /// [`Checker::check`] with the DNS list answers ([`Checker::lookups`]).
    pub fn check_with(&self, env: &Envelope, lookups: &Lookups, now: u64) -> Result<Report> {
        let mut outcomes = Vec::new();
        // An authenticated user's mail client, or software on this host,
        // greets however it likes ("HELO My PC", our own name): that is no
        // sign of spam.
        let trusted = self.trusted(env);
        let helo_problem = if env.known.helo && !trusted {
            helo::check_helo(&env.helo, env.client_ip, &self.config.my_names, &self.config.my_addresses)
        } else {
            None
        };
        if let Some(p) = helo_problem {
            outcomes.push(self.outcome(p.rule(), p.token(), format!("HELO {:?}", truncate(&env.helo))));
        }
        if env.known.mail_from && !env.mail_from.is_empty() && !helo::valid_address(&env.mail_from) {
            outcomes.push(self.outcome("MAIL_FROM_INVALID", "env:from=invalid", format!("sender <{}>", truncate(&env.mail_from))));
        }
        for r in &env.rcpt_to {
            if !helo::valid_address(r) {
                outcomes.push(self.outcome("RCPT_TO_INVALID", "env:rcpt=invalid", format!("recipient <{}>", truncate(r))));
                break;
            }
        }
        if env.known.mail_from && env.mail_from.is_empty() && env.rcpt_to.len() > 1 {
            outcomes.push(self.outcome("NULL_SENDER_MULTI_RCPT", "env:from=null-multi", format!("null sender to {} recipients", env.rcpt_to.len())));
        }
        if env.known.client_name && env.client_ip.is_some() && env.client_name.is_none() {
            outcomes.push(self.outcome("CLIENT_NO_RDNS", "env:rdns=none", "client has no verified reverse DNS name"));
        }
        let ip = env.client_ip.map_or_else(String::new, |i| i.to_string());
        let mut listed = false;
        let mut allowed = false;
        for l in lookups.dnsbl.iter().filter(|l| l.action != RuleAction::Off) {
            let (rule, token, detail) = match (&l.answer, l.allow) {
                (dnsbl::Answer::Listed(codes), allow) => {
                    let codes: Vec<String> = codes.iter().map(|(a, m)| m.as_ref().map_or_else(|| a.to_string(), |m| format!("{a} {m}"))).collect();
                    if allow {
                        allowed = true;
                        ("DNSWL_LISTED", format!("env:dnswl={}", l.zone), format!("{ip} in {} ({})", l.zone, codes.join(", ")))
                    } else {
                        listed = true;
                        ("DNSBL_LISTED", format!("env:dnsbl={}", l.zone), format!("{ip} listed in {} ({})", l.zone, codes.join(", ")))
                    }
                }
                (dnsbl::Answer::NotListed, _) => continue,
                // No token: a passing DNS hiccup says nothing of the mail.
                (dnsbl::Answer::Failed(e), _) => ("DNSBL_ERROR", String::new(), format!("{}: {e}", l.zone)),
            };
            // A listing acts as its zone says; a DNS failure never refuses mail.
            let action = if rule == "DNSBL_LISTED" { l.action } else { RuleAction::Score };
            outcomes.push(Outcome { rule, token, detail, action });
        }
        if let Some(s) = &lookups.spf {
            let mut detail = format!("SPF {} for {} {}", s.verdict.as_str(), s.identity.as_str(), s.domain);
            if let Some(e) = &s.explanation {
                detail = format!("{detail}: {}", truncate(e));
            }
            outcomes.push(self.outcome(s.verdict.rule(), format!("env:spf={}", s.verdict.as_str()), detail));
        }
        let spf_pass = lookups.spf.as_ref().is_some_and(|s| s.verdict == spf::Verdict::Pass);
        let rejected = outcomes.iter().any(|o| o.action == RuleAction::Reject);
        let mut grey = None;
        if let (Some(g), Some(ip), Some(rcpt), false, false) = (&self.greylist, env.client_ip, env.rcpt_to.first(), rejected, allowed) {
            let signals = Signals { spf_pass, dnsbl_listed: listed };
            // Greylisting state out of reach (Redis down): the mail goes on
            // without greylisting, as it does when DNS fails.
            match g.check(ip, env.client_name.as_deref(), &env.mail_from, rcpt, env.sasl_user.as_deref(), signals, now) {
                Ok(v) => {
                    if let Verdict::Defer { retry_in } = v {
                        outcomes.push(self.outcome("GREYLIST_DEFER", "env:greylist=defer", format!("greylisted, retry in {retry_in} s")));
                    }
                    grey = Some(v);
                }
                Err(e) => tracing::warn!(error = %e, "greylisting state unavailable: not greylisting this delivery"),
            }
        }
        let decision = decide(&outcomes);
        Ok(Report { outcomes, decision, greylist: grey, spf: lookups.spf.clone(), auth: None, antivirus: None })
    }

    /// Drops stale greylisting records.
    pub fn expire(&self, now: u64) -> Result<u64> {
        self.greylist.as_ref().map_or(Ok(0), |g| g.expire(now))
    }
}

/// The first rejecting outcome rejects; else the first deferring one defers.
fn decide(outcomes: &[Outcome]) -> Decision {
    if let Some(o) = outcomes.iter().find(|o| o.action == RuleAction::Reject) {
        Decision::Reject(reply_text(o))
    } else if let Some(o) = outcomes.iter().find(|o| o.action == RuleAction::Defer) {
        Decision::Defer(reply_text(o))
    } else {
        Decision::Continue
    }
}

/// The SMTP reply text for an outcome, with the enhanced status code
/// Postfix would use for it.
fn reply_text(o: &Outcome) -> String {
    match o.rule {
        "GREYLIST_DEFER" => "4.2.0 Greylisted: please retry later".to_string(),
        "HELO_MISSING" | "HELO_INVALID" | "HELO_NOT_FQDN" | "HELO_BARE_ADDRESS" => format!("5.5.2 {}: Helo command rejected ({})", o.detail, o.rule),
        "MAIL_FROM_INVALID" | "RCPT_TO_INVALID" => format!("5.1.7 {}: bad address syntax ({})", o.detail, o.rule),
        "DNSBL_LISTED" if o.action == RuleAction::Defer => format!("4.7.1 Service unavailable; client {}", o.detail),
        "DNSBL_LISTED" => format!("5.7.1 Service unavailable; client {}", o.detail),
        // RFC 7372's codes for SPF.
        "SPF_FAIL" | "SPF_SOFTFAIL" => format!("5.7.23 {}", o.detail),
        "SPF_TEMPERROR" => format!("4.7.24 {}", o.detail),
        "SPF_PERMERROR" => format!("5.7.24 {}", o.detail),
        "DMARC_FAIL" | "DMARC_FAIL_QUARANTINE" | "DMARC_FAIL_REJECT" => format!("5.7.1 {}", o.detail),
        "AV_VIRUS" => format!("5.7.1 {}", o.detail),
        "AV_ERROR" => "4.7.1 message not scanned for viruses, try again later".to_string(),
        _ => format!("5.7.1 {} ({})", o.detail, o.rule),
    }
    .replace(['\r', '\n'], " ")
}

fn truncate(s: &str) -> String {
    s.chars().take(100).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::greylist::MemoryGreyStore;
    use super::*;

    fn env(helo: &str, from: &str, rcpts: &[&str]) -> Envelope {
        Envelope {
            client_ip: Some("198.51.100.23".parse().unwrap()),
            client_name: Some("mail.sender.example".into()),
            helo: helo.into(),
            mail_from: from.into(),
            rcpt_to: rcpts.iter().map(|s| s.to_string()).collect(),
            sasl_user: None,
            known: Known::ALL,
        }
    }

    #[test]
    fn decisions_follow_rule_actions() {
        let c = Checker::<MemoryGreyStore>::new(EnvelopeConfig::default(), None).unwrap();
        let r = c.check(&env("mail.sender.example", "a@sender.example", &["b@corp.example"]), 0).unwrap();
        assert_eq!((r.decision, r.outcomes.len()), (Decision::Continue, 0));
        let r = c.check(&env("localhost", "a@sender.example", &["b@corp.example"]), 0).unwrap();
        assert_eq!(r.decision, Decision::Continue, "a bare HELO only scores by default");
        assert_eq!(r.tokens(), vec!["env:helo=bare".to_string()]);
        let r = c.check(&env("bad_helo!", "a@sender.example", &["b@corp.example"]), 0).unwrap();
        assert!(matches!(r.decision, Decision::Reject(ref t) if t.starts_with("5.5.2")), "{r:?}");
        let r = c.check(&env("mail.sender.example", "", &["b@corp.example", "c@corp.example"]), 0).unwrap();
        assert_eq!(r.outcomes[0].rule, "NULL_SENDER_MULTI_RCPT");

        let strict = EnvelopeConfig { rules: [("HELO_NOT_FQDN".to_string(), RuleAction::Reject)].into(), ..Default::default() };
        let c = Checker::<MemoryGreyStore>::new(strict, None).unwrap();
        assert!(matches!(c.check(&env("localhost", "a@s.example", &["b@corp.example"]), 0).unwrap().decision, Decision::Reject(_)));
        let off = EnvelopeConfig { rules: [("HELO_NOT_FQDN".to_string(), RuleAction::Off)].into(), ..Default::default() };
        let c = Checker::<MemoryGreyStore>::new(off, None).unwrap();
        assert!(c.check(&env("localhost", "a@s.example", &["b@corp.example"]), 0).unwrap().tokens().is_empty());
        // Authenticated and local clients greet as they like; a missing HELO
        // field (HTTP) is not a missing HELO.
        let c = Checker::<MemoryGreyStore>::new(EnvelopeConfig::default(), None).unwrap();
        let mut e = env("My PC", "a@s.example", &["b@corp.example"]);
        e.sasl_user = Some("alice".into());
        assert_eq!(c.check(&e, 0).unwrap().decision, Decision::Continue);
        let mut e = env("", "", &["b@corp.example", "c@corp.example"]);
        e.known = Known { helo: false, mail_from: false, client_name: false };
        assert!(c.check(&e, 0).unwrap().outcomes.is_empty());
        let bad = EnvelopeConfig { rules: [("NO_SUCH_RULE".to_string(), RuleAction::Off)].into(), ..Default::default() };
        assert!(Checker::<MemoryGreyStore>::new(bad, None).is_err());
    }

    #[test]
    fn authentication_results_name_each_method() {
        let e = env("mail.sender.example", "frank@sender.example", &["b@corp.example"]);
        let mut r = Report::empty();
        assert_eq!(r.authentication_results("mx.corp.example", &e), None, "nothing ran");
        r.spf = Some(spf::Spf { verdict: spf::Verdict::Pass, identity: spf::Identity::MailFrom, domain: "sender.example".into(), explanation: None });
        r.auth = Some(dkim::AuthReport { dkim: vec![("pass", "sender.example".into())], dmarc: Some(("pass", "reject", "sender.example".into())) });
        assert_eq!(
            r.authentication_results("mx.corp.example", &e).unwrap(),
            "mx.corp.example;\n\tspf=pass smtp.mailfrom=frank@sender.example;\n\tdkim=pass header.d=sender.example;\n\tdmarc=pass (p=reject) header.from=sender.example"
        );
        let forged = env("x; dkim=pass (", "", &[]);
        r.spf = Some(spf::Spf { verdict: spf::Verdict::Fail, identity: spf::Identity::Helo, domain: "x".into(), explanation: None });
        r.auth = Some(dkim::AuthReport::default());
        assert_eq!(r.authentication_results("mx", &forged).unwrap(), "mx;\n\tspf=fail smtp.helo=xdkim=pass;\n\tdkim=none");
    }

    #[test]
    fn greylisting_runs_last_and_not_for_rejected_mail() {
        let mut cfg = EnvelopeConfig::default();
        cfg.greylist.enabled = true;
        let c = Checker::new(cfg, Some(MemoryGreyStore::default())).unwrap();
        let e = env("mail.sender.example", "a@sender.example", &["b@corp.example"]);
        let r = c.check(&e, 1000).unwrap();
        assert_eq!(r.decision, Decision::Defer("4.2.0 Greylisted: please retry later".into()));
        assert_eq!(c.check(&e, 1300).unwrap().decision, Decision::Continue);
        let r = c.check(&env("bad_helo!", "x@y.example", &["b@corp.example"]), 1000).unwrap();
        assert!(r.greylist.is_none(), "rejected mail is not greylisted");
    }
}
