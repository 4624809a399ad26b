//! The envelope a stored message arrived with, read back from its
//! Received: header fields, for measuring the envelope tokens on corpora
//! (`hamlet eval --envelope-tokens`). The hop that matters is the one a
//! policy service would have seen: the topmost Received whose client has a
//! public address (the ones above it are the recipient's own relays and
//! fetchers). Its HELO, verified reverse DNS name and address come from
//! the common trace formats:
//!
//! - Postfix, Sendmail: `from HELO (RDNS [IP])`, `from HELO (unknown [IP])`
//! - Exim: `from RDNS ([IP] helo=HELO)`, `from [IP] (helo=HELO)`
//! - qmail: `from unknown (HELO helo) (IP)`, `from RDNS (HELO helo) (IP)`
//!
//! Only the header is read; no DNS is asked (the answers of years ago are
//! not today's).

use super::{Envelope, Known};
use std::net::{IpAddr, Ipv4Addr};

/// The envelope of the first public hop, or `None` when no Received field
/// names one.
pub fn envelope(raw: &[u8]) -> Option<Envelope> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| raw.windows(2).position(|w| w == b"\n\n")).unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]);
    // Unfold, then take each Received field in order (topmost first).
    let mut fields: Vec<String> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .iter()
        .filter_map(|f| f.get(..9).filter(|n| n.eq_ignore_ascii_case("received:")).map(|_| f[9..].trim()))
        .filter_map(parse_hop)
        .find(|(ip, _, _)| is_public(*ip))
        .map(|(ip, helo, rdns)| Envelope {
            client_ip: Some(ip),
            client_name: rdns,
            helo,
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            sasl_user: None,
            known: Known { helo: true, mail_from: false, client_name: true },
        })
}

/// `(client address, HELO, verified rDNS name)` of one Received field.
fn parse_hop(v: &str) -> Option<(IpAddr, String, Option<String>)> {
    let rest = v.strip_prefix("from ").or_else(|| v.strip_prefix("FROM "))?;
    // The "from" clause ends at " by " (the receiving host).
    let clause = rest.split(" by ").next().unwrap_or(rest);
    let first = clause.split_whitespace().next()?.to_string();
    let ip = find_ip(clause)?;
    let lower = clause.to_ascii_lowercase();
    // An explicit HELO: Exim's helo=, qmail's (HELO x).
    let explicit = lower.find("helo=").map(|i| i + 5).or_else(|| lower.find("(helo ").map(|i| i + 6));
    let helo = match explicit {
        Some(i) => clause[i..].split(|c: char| c.is_whitespace() || c == ')').next().unwrap_or("").to_string(),
        None if first.starts_with('[') || first.starts_with('(') => String::new(),
        None => first.clone(),
    };
    // The rDNS name: Postfix/Sendmail put it in the parentheses before
    // [IP]; Exim and qmail put it first, before the parenthesis.
    let rdns = if explicit.is_some() {
        Some(first).filter(|f| !f.starts_with('[') && !f.starts_with('('))
    } else {
        lower.find('(').map(|i| clause[i + 1..].split(|c: char| c.is_whitespace() || c == '[' || c == ')').next().unwrap_or("").to_string())
    };
    let rdns = rdns.filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("unknown") && n.contains('.') && n.parse::<IpAddr>().is_err());
    Some((ip, helo, rdns))
}

/// The first IPv4 address in brackets or parentheses (`[192.0.2.1]`,
/// `(192.0.2.1)`), the trace formats' way of giving the client's address.
fn find_ip(s: &str) -> Option<IpAddr> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'[' || c == b'(' {
            let tail = &s[i + 1..];
            let end = tail.find([']', ')', ' ', ':']).unwrap_or(tail.len());
            let cand = tail[..end].trim_start_matches("IPv6:");
            if let Ok(a) = cand.parse::<Ipv4Addr>() {
                return Some(IpAddr::V4(a));
            }
        }
    }
    None
}

/// Not private, loopback, link-local, shared (CGN) or documentation space.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        IpAddr::V6(a) => !(a.is_loopback() || a.is_unspecified()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(v: &str) -> (String, String, Option<String>) {
        let (ip, helo, rdns) = parse_hop(v).unwrap();
        (ip.to_string(), helo, rdns)
    }

    #[test]
    fn trace_formats() {
        assert_eq!(
            hop("from mail.sender.example (mail.sender.example [198.51.100.7]) by mx.corp.example (Postfix) with ESMTP id 1"),
            ("198.51.100.7".into(), "mail.sender.example".into(), Some("mail.sender.example".into()))
        );
        assert_eq!(hop("from localhost (unknown [203.0.113.9]) by mx (Postfix)"), ("203.0.113.9".into(), "localhost".into(), None));
        assert_eq!(
            hop("from host.isp.example ([203.0.113.9] helo=PC01) by mx with esmtp (Exim 4.20)"),
            ("203.0.113.9".into(), "PC01".into(), Some("host.isp.example".into()))
        );
        assert_eq!(hop("from unknown (HELO bigdeals) (203.0.113.10) by mx.corp.example with SMTP"), ("203.0.113.10".into(), "bigdeals".into(), None));
    }

    #[test]
    fn first_public_hop() {
        let raw = b"Received: from localhost (localhost [127.0.0.1])\r\n\tby home (Postfix) with ESMTP\r\n\
            Received: from mx.example.org (mx.example.org [10.0.0.2]) by gw\r\n\
            Received: from dsl-7.isp.example (HELO my-pc) (198.51.100.77)\r\n  by mx.example.org with SMTP\r\n\
            Subject: hi\r\n\r\nbody\r\nReceived: from x ([203.0.113.1]) by y\r\n";
        let e = envelope(raw).unwrap();
        assert_eq!(
            (e.client_ip.unwrap().to_string(), e.helo.as_str(), e.client_name.as_deref()),
            ("198.51.100.77".into(), "my-pc", Some("dsl-7.isp.example"))
        );
        assert!(envelope(b"Subject: no trace\r\n\r\nbody").is_none());
        assert!(envelope(b"Received: from a (a [10.1.1.1]) by b\r\n\r\n").is_none(), "private hops only");
    }
}
