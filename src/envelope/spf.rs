//! SPF (RFC 7208): may this client send mail for the sender's domain?
//! The evaluation is mail-auth's `check_host()` over the same hickory
//! resolver as the DNS lists (its cache, its name servers, its per-lookup
//! time limit), inside the envelope's DNS budget: a check that runs out of
//! time is `temperror`, never a held connection.
//!
//! Which identities are checked (RFC 7208 section 2.3 and 2.4):
//! - a null sender `<>`: the HELO identity alone, as `postmaster@<helo>`;
//! - otherwise the HELO identity first, and when it gives a definite
//!   `fail` that is the answer (the client lied about who it is); else the
//!   MAIL FROM identity decides. This is what postfix-policyd-spf does.
//!
//! [`SpfChecker::check_host`] is the bare `check_host()` of one identity
//! (MAIL FROM, or HELO for `<>`): it is what the RFC 7208 test suite
//! (`tests/spf_suite.rs`) exercises, scenario by scenario, through a DNS
//! server that serves each scenario's zone data.

use mail_auth::MessageAuthenticator;
use mail_auth::spf::verify::SpfParameters;
use std::net::IpAddr;
use std::time::Duration;

/// An SPF result (RFC 7208 section 2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl Verdict {
    /// The RFC's name, as in Received-SPF and Authentication-Results.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::SoftFail => "softfail",
            Verdict::Neutral => "neutral",
            Verdict::None => "none",
            Verdict::TempError => "temperror",
            Verdict::PermError => "permerror",
        }
    }

    /// The envelope rule that reports it.
    pub fn rule(self) -> &'static str {
        match self {
            Verdict::Pass => "SPF_PASS",
            Verdict::Fail => "SPF_FAIL",
            Verdict::SoftFail => "SPF_SOFTFAIL",
            Verdict::Neutral => "SPF_NEUTRAL",
            Verdict::None => "SPF_NONE",
            Verdict::TempError => "SPF_TEMPERROR",
            Verdict::PermError => "SPF_PERMERROR",
        }
    }
}

impl From<mail_auth::SpfResult> for Verdict {
    fn from(r: mail_auth::SpfResult) -> Verdict {
        match r {
            mail_auth::SpfResult::Pass => Verdict::Pass,
            mail_auth::SpfResult::Fail => Verdict::Fail,
            mail_auth::SpfResult::SoftFail => Verdict::SoftFail,
            mail_auth::SpfResult::Neutral => Verdict::Neutral,
            mail_auth::SpfResult::None => Verdict::None,
            mail_auth::SpfResult::TempError => Verdict::TempError,
            mail_auth::SpfResult::PermError => Verdict::PermError,
        }
    }
}

impl From<Verdict> for mail_auth::SpfResult {
    fn from(v: Verdict) -> mail_auth::SpfResult {
        match v {
            Verdict::Pass => mail_auth::SpfResult::Pass,
            Verdict::Fail => mail_auth::SpfResult::Fail,
            Verdict::SoftFail => mail_auth::SpfResult::SoftFail,
            Verdict::Neutral => mail_auth::SpfResult::Neutral,
            Verdict::None => mail_auth::SpfResult::None,
            Verdict::TempError => mail_auth::SpfResult::TempError,
            Verdict::PermError => mail_auth::SpfResult::PermError,
        }
    }
}

/// Which identity gave the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Helo,
    MailFrom,
}

impl Identity {
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Helo => "helo",
            Identity::MailFrom => "mailfrom",
        }
    }
}

/// One SPF check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spf {
    pub verdict: Verdict,
    pub identity: Identity,
    /// The domain whose policy was evaluated.
    pub domain: String,
    /// The domain's `exp=` text, for a fail.
    pub explanation: Option<String>,
}

/// Runs SPF checks over one resolver.
pub struct SpfChecker {
    auth: MessageAuthenticator,
    /// Our host name (`%{r}` in explanations).
    host: String,
    budget: Duration,
}

impl SpfChecker {
    /// `resolver`: shared with the DNS lists; `host`: this MTA's name;
    /// `budget`: the most one check may take.
    pub fn new(resolver: hickory_resolver::TokioResolver, host: &str, budget: Duration) -> SpfChecker {
        SpfChecker { auth: MessageAuthenticator(resolver), host: if host.is_empty() { "unknown".into() } else { host.into() }, budget }
    }

    /// RFC 7208's `check_host()` for one identity: MAIL FROM, or the HELO
    /// name when the sender is null.
    pub async fn check_host(&self, ip: IpAddr, helo: &str, mail_from: &str) -> Spf {
        self.run(ip, helo, mail_from, if mail_from.is_empty() { Identity::Helo } else { Identity::MailFrom }).await
    }

    /// What mail-auth is lenient about, checked first (RFC 7208 section
    /// 4.3, 4.5 and 4.6): a malformed or single-label domain is `none`
    /// without a lookup; two SPF records, or any syntax error in the
    /// record, is `permerror`. The TXT answer lands in the resolver's
    /// cache, so mail-auth's own lookup of it costs nothing.
    async fn precheck(&self, domain: &str) -> Option<Verdict> {
        if !syntax::valid_domain(domain) {
            return Some(Verdict::None);
        }
        let Ok(lookup) = self.auth.0.txt_lookup(format!("{}.", domain.trim_end_matches('.'))).await else { return None };
        let records: Vec<Vec<u8>> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::TXT(t) => Some(t.txt_data.iter().flat_map(|d| d.iter().copied()).collect()),
                _ => None,
            })
            .filter(|r: &Vec<u8>| syntax::is_spf(r))
            .collect();
        match records.as_slice() {
            [] => None,
            [one] => syntax::check_record(one).err().map(|_| Verdict::PermError),
            _ => Some(Verdict::PermError),
        }
    }

    /// What the envelope stage runs: HELO first (a definite fail there is
    /// the answer), then MAIL FROM. A HELO that is not a domain name (an
    /// address literal, a bare word) gives `none` and no lookups.
    pub async fn check(&self, ip: IpAddr, helo: &str, mail_from: &str) -> Spf {
        let helo_result = if !helo.is_empty() && !helo.starts_with('[') { Some(self.run(ip, helo, "", Identity::Helo).await) } else { None };
        match helo_result {
            Some(h) if h.verdict == Verdict::Fail || mail_from.is_empty() => h,
            None if mail_from.is_empty() => Spf { verdict: Verdict::None, identity: Identity::Helo, domain: helo.to_string(), explanation: None },
            _ => self.run(ip, helo, mail_from, Identity::MailFrom).await,
        }
    }

    async fn run(&self, ip: IpAddr, helo: &str, mail_from: &str, identity: Identity) -> Spf {
        // An IPv4 client seen through an IPv6 socket is an IPv4 client.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (params, domain) = match identity {
            Identity::Helo => (SpfParameters::verify_ehlo(ip, helo, &self.host), helo),
            Identity::MailFrom => {
                (SpfParameters::verify_mail_from(ip, helo, &self.host, mail_from), mail_from.rsplit_once('@').map_or(helo, |(_, d)| d))
            }
        };
        let domain = domain.to_string();
        let work = async {
            if let Some(v) = self.precheck(&domain).await {
                return Spf { verdict: v, identity, domain: domain.clone(), explanation: None };
            }
            let out = self.auth.verify_spf(params).await;
            Spf { verdict: out.result().into(), identity, domain: out.domain().to_string(), explanation: out.explanation().map(str::to_string) }
        };
        match tokio::time::timeout(self.budget, work).await {
            Ok(spf) => spf,
            Err(_) => Spf { verdict: Verdict::TempError, identity, domain: String::new(), explanation: Some("over the DNS budget".into()) },
        }
    }
}

/// The Received-SPF header field's value (RFC 7208 section 9.1) for a
/// result, e.g. `pass (hamlet: domain of a@b.example designates 192.0.2.1
/// as permitted sender) client-ip=192.0.2.1; envelope-from="a@b.example";
/// helo=mx.b.example;`.
pub fn received_spf(spf: &Spf, ip: IpAddr, helo: &str, mail_from: &str) -> String {
    let who = if mail_from.is_empty() { format!("postmaster@{helo}") } else { mail_from.to_string() };
    let comment = match spf.verdict {
        Verdict::Pass => format!("domain of {who} designates {ip} as permitted sender"),
        Verdict::Fail => format!("domain of {who} does not designate {ip} as permitted sender"),
        Verdict::SoftFail => format!("domain of transitioning {who} does not designate {ip} as permitted sender"),
        Verdict::Neutral => format!("{ip} is neither permitted nor denied by domain of {who}"),
        Verdict::None => format!("domain of {who} does not designate permitted sender hosts"),
        Verdict::TempError => format!("error in processing during lookup of {who}"),
        Verdict::PermError => format!("permanent error in processing domain of {who}"),
    };
    let clean = |s: &str| s.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').take(200).collect::<String>();
    format!(
        "{} (hamlet: {}) client-ip={ip}; envelope-from=\"{}\"; helo={}; identity={};",
        spf.verdict.as_str(),
        clean(&comment),
        clean(mail_from),
        clean(helo).replace([' ', ';'], ""),
        spf.identity.as_str()
    )
}

/// RFC 7208's record grammar (section 12), checked strictly.
pub mod syntax {
    /// A record is SPF when it is `v=spf1` alone or followed by a space
    /// (section 4.5; `v=spf10` is not).
    pub fn is_spf(r: &[u8]) -> bool {
        r.len() >= 6 && r[..6].eq_ignore_ascii_case(b"v=spf1") && (r.len() == 6 || r[6] == b' ')
    }

    /// A domain check_host() may start from (section 4.3): labels of 1 to
    /// 63 characters, at least two of them, at most 253 characters, no
    /// address literal.
    pub fn valid_domain(d: &str) -> bool {
        let d = d.strip_suffix('.').unwrap_or(d);
        let labels: Vec<&str> = d.split('.').collect();
        d.len() <= 253 && labels.len() >= 2 && labels.iter().all(|l| !l.is_empty() && l.len() <= 63) && !d.starts_with('[')
    }

    /// Checks a whole record; the error names the first bad term.
    pub fn check_record(r: &[u8]) -> Result<(), String> {
        let r = std::str::from_utf8(r).map_err(|_| "not UTF-8".to_string())?;
        if !r.is_ascii() {
            return Err("non-ASCII character".into());
        }
        let mut seen_redirect = false;
        let mut seen_exp = false;
        // Terms are separated by one or more spaces (SP only).
        for term in r[6..].split(' ').filter(|t| !t.is_empty()) {
            let bad = || Err(format!("bad term {term:?}"));
            if let Some(m) = modifier(term) {
                let Ok((name, value)) = m else { return bad() };
                match name.to_ascii_lowercase().as_str() {
                    "redirect" | "exp" => {
                        let seen = if name.eq_ignore_ascii_case("redirect") { &mut seen_redirect } else { &mut seen_exp };
                        if *seen {
                            return Err(format!("second {name}="));
                        }
                        *seen = true;
                        if !domain_spec(value) {
                            return bad();
                        }
                    }
                    _ => {
                        if !macro_string(value, false) {
                            return bad();
                        }
                    }
                }
                continue;
            }
            let t = term.strip_prefix(['+', '-', '~', '?']).unwrap_or(term);
            let (mech, arg) = match t.find([':', '/']) {
                Some(i) => (&t[..i], &t[i..]),
                None => (t, ""),
            };
            let ok = match mech.to_ascii_lowercase().as_str() {
                "all" => arg.is_empty(),
                "include" | "exists" => arg.strip_prefix(':').is_some_and(domain_spec),
                "ptr" => arg.is_empty() || arg.strip_prefix(':').is_some_and(domain_spec),
                "a" | "mx" => {
                    let (spec, cidr) = split_cidr(arg);
                    (spec.is_empty() || spec.strip_prefix(':').is_some_and(domain_spec)) && dual_cidr(cidr)
                }
                "ip4" => arg.strip_prefix(':').is_some_and(|a| {
                    let (addr, cidr) = a.split_once('/').map_or((a, None), |(x, c)| (x, Some(c)));
                    addr.parse::<std::net::Ipv4Addr>().is_ok() && cidr.is_none_or(|c| cidr_len(c, 32))
                }),
                "ip6" => arg.strip_prefix(':').is_some_and(|a| {
                    let (addr, cidr) = a.split_once('/').map_or((a, None), |(x, c)| (x, Some(c)));
                    addr.parse::<std::net::Ipv6Addr>().is_ok() && cidr.is_none_or(|c| cidr_len(c, 128))
                }),
                _ => false,
            };
            if !ok {
                return bad();
            }
        }
        Ok(())
    }

    /// A `name=value` term (`a:foo=bar` is a mechanism with an odd
    /// domain, not a modifier). `Err` for a name outside RFC 7208's
    /// `ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`.
    fn modifier(term: &str) -> Option<Result<(&str, &str), ()>> {
        let (name, value) = term.split_once('=')?;
        if name.contains([':', '/']) {
            return None;
        }
        let valid = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        Some(if valid { Ok((name, value)) } else { Err(()) })
    }

    /// Splits `a`/`mx`'s argument into `:domain-spec` and the CIDR suffix
    /// (`/24`, `//64`, `/24//64`), taken from the end: a domain-spec may
    /// hold slashes itself (`a:foo:bar/baz.example.com`).
    fn split_cidr(arg: &str) -> (&str, &str) {
        fn strip<'a>(s: &'a str, sep: &str) -> Option<&'a str> {
            let t = s.trim_end_matches(|c: char| c.is_ascii_digit());
            if t.len() < s.len() { t.strip_suffix(sep) } else { None }
        }
        let mut head = arg;
        if let Some(h) = strip(head, "//") {
            head = h;
        }
        if let Some(h) = strip(head, "/") {
            head = h;
        }
        (head, &arg[head.len()..])
    }

    /// `[ "/" ip4-cidr ] [ "//" ip6-cidr ]`.
    fn dual_cidr(c: &str) -> bool {
        if c.is_empty() {
            return true;
        }
        let (v4, v6) = match c.find("//") {
            Some(i) => (&c[..i], Some(&c[i + 2..])),
            None => (c, None),
        };
        (v4.is_empty() || v4.strip_prefix('/').is_some_and(|n| cidr_len(n, 32))) && v6.is_none_or(|n| cidr_len(n, 128))
    }

    /// A prefix length: decimal without leading zeros, at most `max`.
    fn cidr_len(n: &str, max: u32) -> bool {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n == "0" || !n.starts_with('0')) && n.parse::<u32>().is_ok_and(|v| v <= max)
    }

    /// `domain-spec = macro-string domain-end`, `domain-end = ("."
    /// toplabel ["."]) / macro-expand`.
    fn domain_spec(s: &str) -> bool {
        if s.is_empty() || !macro_string(s, true) {
            return false;
        }
        // Ends in a macro expansion: nothing more can be told before expanding.
        if s.ends_with('}') || s.ends_with("%%") || s.ends_with("%_") || s.ends_with("%-") {
            return true;
        }
        let t = s.strip_suffix('.').unwrap_or(s);
        let Some((head, top)) = t.rsplit_once('.') else { return false };
        // No empty labels in the literal part (RFC 7208 section 7.4 leaves
        // them undefined; a permerror is one of the two answers it allows).
        if head.split('.').any(str::is_empty) && !head.contains('%') {
            return false;
        }
        toplabel(top)
    }

    /// A label of letters, digits and inner hyphens, not all digits.
    fn toplabel(l: &str) -> bool {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().any(|b| b.is_ascii_alphabetic())
    }

    /// Visible ASCII with `%` only in macro expansions; `c`, `r` and `t`
    /// only outside domain-specs (section 7.2).
    fn macro_string(s: &str, in_domain: bool) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' => match b.get(i + 1) {
                    Some(b'%' | b'_' | b'-') => i += 2,
                    Some(b'{') => {
                        let Some(end) = s[i..].find('}') else { return false };
                        let body = &s[i + 2..i + end];
                        let mut chars = body.chars();
                        let Some(letter) = chars.next().map(|c| c.to_ascii_lowercase()) else { return false };
                        let allowed = if in_domain { "sloipdhv" } else { "sloipdhvcrt" };
                        if !allowed.contains(letter) {
                            return false;
                        }
                        let rest = chars.as_str();
                        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                        let rest = &rest[digits..];
                        let rest = rest.strip_prefix(['r', 'R']).unwrap_or(rest);
                        if !rest.bytes().all(|c| matches!(c, b'.' | b'-' | b'+' | b',' | b'/' | b'_' | b'=')) {
                            return false;
                        }
                        i += end + 1;
                    }
                    _ => return false,
                },
                0x21..=0x7e => i += 1,
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_syntax() {
        use syntax::check_record as c;
        for ok in [
            "v=spf1",
            "v=spf1 -all ",
            "v=spf1 a mx/24 a:mail.example.com/24//64 mx//0 ip4:192.0.2.0/24 ip6:2001:db8::/32 ptr ?all",
            "v=spf1 include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d} redirect=%{d2}",
            "v=spf1 a:foo:bar/baz.example.com moo.cow-far_out=man:dog/cat exp=explain.%{d}",
        ] {
            assert_eq!(c(ok.as_bytes()), Ok(()), "{ok}");
        }
        for bad in [
            "v=spf1 a/33",
            "v=spf1 ip4:192.0.2.1/032",
            "v=spf1 ip6:::1/129",
            "v=spf1 ip4:1.2.3.4.5",
            "v=spf1 a:abc.123",
            "v=spf1 -all/8",
            "v=spf1 redirect=a.example redirect=b.example",
            "v=spf1 =novalue",
            "v=spf1 1up=foo",
            "v=spf1 exists:%{c}.example.com",
            "v=spf1 a:foo.example.com\0",
            "v=spf1 a:caf\u{e9}.example",
            "v=spf1 moo.cow/far_out=man:dog/cat",
            "v=spf1 frob",
        ] {
            assert!(c(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(syntax::is_spf(b"v=spf1 -all") && syntax::is_spf(b"V=SPF1") && !syntax::is_spf(b"v=spf10"));
        assert!(syntax::valid_domain("example.com") && !syntax::valid_domain("A2345678") && !syntax::valid_domain("a...example.com"));
    }

    #[test]
    fn received_spf_fields() {
        let spf = Spf { verdict: Verdict::Pass, identity: Identity::MailFrom, domain: "b.example".into(), explanation: None };
        let h = received_spf(&spf, "192.0.2.1".parse().unwrap(), "mx.b.example", "a@b.example");
        assert_eq!(
            h,
            "pass (hamlet: domain of a@b.example designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from=\"a@b.example\"; helo=mx.b.example; identity=mailfrom;"
        );
        let spf = Spf { verdict: Verdict::Fail, identity: Identity::Helo, domain: "x".into(), explanation: None };
        let h = received_spf(&spf, "192.0.2.1".parse().unwrap(), "evil\r\n; x", "");
        assert!(!h.contains('\r') && !h.contains('\n') && h.starts_with("fail "), "{h}");
    }
}
