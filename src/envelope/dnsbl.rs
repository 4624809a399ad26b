//! DNS blocklists and allowlists (RFC 5782): is the client's address
//! listed in a zone? IPv4 is asked as its reversed octets
//! (`2.0.0.127.zone`), IPv6 as its 32 reversed nibbles. All zones are asked
//! at once; each lookup has its own time limit and all of them together a
//! budget, so mail is never held past it. A DNS failure fails open: the
//! outcome is recorded (and logged), nothing is refused for it. Answers are
//! cached by their TTL (hickory's cache, positive and negative).

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// One `[[envelope.dnsbl]]` zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// `zen.spamhaus.org`, `list.dnswl.org`, ...
    pub zone: String,
    /// An allowlist (DNSWL): a listing is good news.
    #[serde(default)]
    pub allow: bool,
    /// What a listing does: reject, defer, score (default) or off.
    #[serde(default = "default_action")]
    pub action: super::RuleAction,
    /// Return codes and their meanings (`"127.0.0.2" = "SBL"`); when given,
    /// other codes do not count as listings (some zones answer 127.255.255.x
    /// for "you are over your query quota").
    #[serde(default)]
    pub codes: BTreeMap<Ipv4Addr, String>,
}

fn default_action() -> super::RuleAction {
    super::RuleAction::Score
}

/// `[envelope.dns]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers (`IP` or `IP:PORT`); empty: the system's (/etc/resolv.conf).
    pub nameservers: Vec<String>,
    /// Time limit per lookup.
    pub timeout_ms: u64,
    /// Time limit for all lookups of one check together.
    pub budget_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { nameservers: Vec::new(), timeout_ms: 1500, budget_ms: 3000 }
    }
}

/// What a zone said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Listed, with the return codes (and their meanings, where known).
    Listed(Vec<(Ipv4Addr, Option<String>)>),
    NotListed,
    /// No answer in time, or a DNS error: fails open.
    Failed(String),
}

/// One zone's answer for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub zone: String,
    pub allow: bool,
    pub action: super::RuleAction,
    pub answer: Answer,
}

/// The query name for `ip` in `zone`.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.{zone}.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => query_name(IpAddr::V4(v4), zone),
            None => {
                let mut s = String::with_capacity(64 + zone.len());
                for b in a.octets().iter().rev() {
                    s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
                }
                s.push_str(zone);
                s.push('.');
                s
            }
        },
    }
}

/// Answers that mean "your query was refused", not "listed": Spamhaus's
/// 127.255.255.0/24 (public resolver, over quota) for any zone, and
/// DNSWL's 127.0.0.255 for allowlists. Counting them would reject, or
/// trust, every client.
fn is_error_code(a: Ipv4Addr, allow: bool) -> bool {
    let o = a.octets();
    (o[1] == 255 && o[2] == 255) || (allow && a == Ipv4Addr::new(127, 0, 0, 255))
}

/// The lookups, over one resolver.
pub struct Dnsbl {
    resolver: TokioResolver,
    zones: Vec<Zone>,
    timeout: Duration,
    budget: Duration,
}

/// The resolver for the envelope's DNS work (lists and SPF share it, and
/// its cache): the configured name servers, else the system's, one
/// attempt per lookup with the configured time limit.
pub fn resolver(config: &DnsConfig) -> crate::Result<TokioResolver> {
    let bad = |m: String| crate::Error::Invalid(format!("[envelope.dns]: {m}"));
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_millis(config.timeout_ms.max(1));
    opts.attempts = 1;
    opts.cache_size = 4096;
    let builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| bad(format!("cannot read the system's DNS configuration: {e}")))?
    } else {
        let mut servers = Vec::new();
        for ns in &config.nameservers {
            let addr: SocketAddr = ns
                .parse()
                .or_else(|_| ns.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| bad(format!("name server {ns:?} is not IP or IP:PORT")))?;
            let mut s = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut s.connections {
                c.port = addr.port();
            }
            servers.push(s);
        }
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), Default::default())
    };
    builder.with_options(opts).build().map_err(|e| bad(e.to_string()))
}

impl Dnsbl {
    pub fn new(config: &DnsConfig, zones: Vec<Zone>) -> crate::Result<Dnsbl> {
        Ok(Dnsbl::with_resolver(resolver(config)?, config, zones))
    }

    /// Over a resolver shared with other checks.
    pub fn with_resolver(resolver: TokioResolver, config: &DnsConfig, zones: Vec<Zone>) -> Dnsbl {
        // Each lookup within the budget too, so answers that came in time
        // are kept even when another zone is slow.
        let budget = Duration::from_millis(config.budget_ms.max(1));
        Dnsbl { resolver, zones, timeout: Duration::from_millis(config.timeout_ms.max(1)).min(budget), budget }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    async fn ask(&self, ip: IpAddr, zone: &Zone) -> Answer {
        let name = query_name(ip, &zone.zone);
        match tokio::time::timeout(self.timeout, self.resolver.ipv4_lookup(name.as_str())).await {
            Err(_) => Answer::Failed("timed out".into()),
            Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => Answer::NotListed,
            Ok(Err(e)) => Answer::Failed(e.to_string()),
            Ok(Ok(lookup)) => {
                let codes: Vec<(Ipv4Addr, Option<String>)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        hickory_resolver::proto::rr::RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    // RFC 5782: answers are in 127.0.0.0/8; with a code table,
                    // only known codes count.
                    .filter(|a| {
                        a.octets()[0] == 127 && (if zone.codes.is_empty() { !is_error_code(*a, zone.allow) } else { zone.codes.contains_key(a) })
                    })
                    .map(|a| (a, zone.codes.get(&a).cloned()))
                    .collect();
                if codes.is_empty() { Answer::NotListed } else { Answer::Listed(codes) }
            }
        }
    }

    /// Asks every zone about `ip`, concurrently, within the budget; a zone
    /// that has not answered by then is `Failed`.
    pub async fn check(&self, ip: IpAddr) -> Vec<Listing> {
        let asks = self.zones.iter().map(|z| async move { (z, self.ask(ip, z).await) });
        let all = futures_util::future::join_all(asks);
        let answers: Vec<(&Zone, Answer)> = match tokio::time::timeout(self.budget + Duration::from_millis(200), all).await {
            Ok(a) => a,
            Err(_) => self.zones.iter().map(|z| (z, Answer::Failed("over the DNS budget".into()))).collect(),
        };
        answers
            .into_iter()
            .map(|(z, answer)| {
                if let Answer::Failed(e) = &answer {
                    tracing::warn!(zone = %z.zone, ip = %ip, error = %e, "DNSBL lookup failed; failing open");
                }
                Listing { zone: z.zone.clone(), allow: z.allow, action: z.action, answer }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        assert!(is_error_code("127.255.255.254".parse().unwrap(), false));
        assert!(is_error_code("127.0.0.255".parse().unwrap(), true));
        assert!(!is_error_code("127.0.0.255".parse().unwrap(), false));
        assert!(!is_error_code("127.0.0.2".parse().unwrap(), false));
        assert_eq!(query_name("127.0.0.2".parse().unwrap(), "bl.test"), "2.0.0.127.bl.test.");
        assert_eq!(query_name("192.0.2.99".parse().unwrap(), "bl.test."), "99.2.0.192.bl.test.");
        assert_eq!(query_name("::ffff:127.0.0.2".parse().unwrap(), "bl.test"), "2.0.0.127.bl.test.");
        // RFC 5782 section 2.4's example.
        assert_eq!(
            query_name("2001:db8:1:2:3:4:567:89ab".parse().unwrap(), "ugly.example.com"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com."
        );
    }
}
