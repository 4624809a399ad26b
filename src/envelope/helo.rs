//! RFC 5321 strictness on the envelope: the HELO/EHLO name, MAIL FROM and
//! RCPT TO syntax, null-sender rules. Pure functions; nothing here touches
//! the network.
//!
//! Why these and not more: each is a check Postfix ships
//! (`reject_invalid_helo_hostname`, `reject_non_fqdn_helo_hostname`,
//! `reject_non_fqdn_sender`, ...) and that SpamAssassin scores
//! (`HELO_NO_DOMAIN`, `HELO_DYNAMIC_*`, `FORGED_*`), so admins know what
//! they do. Old legitimate servers do fail the pedantic ones (a bare
//! HELO name is common on small business servers), which is why each
//! outcome's action is configurable and the defaults only score those.

use std::net::IpAddr;

/// What is wrong with a HELO name, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeloProblem {
    /// Empty.
    Missing,
    /// Not a host name or address literal at all (`bad_helo!`).
    Invalid,
    /// A host name without a dot (`localhost`, `mail`).
    NotFqdn,
    /// An address literal that is not the client's address.
    LiteralMismatch,
    /// A bare IP address without brackets (RFC 5321 wants `[192.0.2.1]`).
    BareAddress,
    /// Our own host name or address: a forgery.
    Ours,
}

impl HeloProblem {
    /// The outcome's rule name.
    pub fn rule(self) -> &'static str {
        match self {
            HeloProblem::Missing => "HELO_MISSING",
            HeloProblem::Invalid => "HELO_INVALID",
            HeloProblem::NotFqdn => "HELO_NOT_FQDN",
            HeloProblem::LiteralMismatch => "HELO_LITERAL_MISMATCH",
            HeloProblem::BareAddress => "HELO_BARE_ADDRESS",
            HeloProblem::Ours => "HELO_OURS",
        }
    }

    /// The synthetic token the content stage learns from.
    pub fn token(self) -> &'static str {
        match self {
            HeloProblem::Missing => "env:helo=missing",
            HeloProblem::Invalid => "env:helo=invalid",
            HeloProblem::NotFqdn => "env:helo=bare",
            HeloProblem::LiteralMismatch => "env:helo=literal-mismatch",
            HeloProblem::BareAddress => "env:helo=bare-address",
            HeloProblem::Ours => "env:helo=ours",
        }
    }
}

/// A DNS host name: labels of letters, digits and hyphens (not at either
/// end), 1–63 bytes each, 253 in all; a trailing dot is allowed. Underscores
/// are tolerated: real mail servers use them and Postfix accepts them.
pub fn valid_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` → the address.
pub fn address_literal(s: &str) -> Option<IpAddr> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("ipv6:") => inner[5..].parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Judges a HELO name against the client address and our own names and
/// addresses. At most one problem: the most telling.
pub fn check_helo(helo: &str, client: Option<IpAddr>, our_names: &[String], our_addrs: &[IpAddr]) -> Option<HeloProblem> {
    let helo = helo.trim();
    if helo.is_empty() {
        return Some(HeloProblem::Missing);
    }
    if helo.starts_with('[') {
        let Some(ip) = address_literal(helo) else { return Some(HeloProblem::Invalid) };
        if our_addrs.contains(&ip) && client != Some(ip) {
            return Some(HeloProblem::Ours);
        }
        return match client {
            Some(c) if c != ip && unmap(c) != unmap(ip) => Some(HeloProblem::LiteralMismatch),
            _ => None,
        };
    }
    if let Ok(ip) = helo.parse::<IpAddr>() {
        if our_addrs.contains(&ip) && client != Some(ip) {
            return Some(HeloProblem::Ours);
        }
        return Some(HeloProblem::BareAddress);
    }
    if !valid_hostname(helo) {
        return Some(HeloProblem::Invalid);
    }
    let bare = helo.strip_suffix('.').unwrap_or(helo);
    if our_names.iter().any(|n| n.eq_ignore_ascii_case(bare)) {
        return Some(HeloProblem::Ours);
    }
    if !bare.contains('.') {
        return Some(HeloProblem::NotFqdn);
    }
    None
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether an envelope address as Postfix hands it over is plainly broken.
/// Deliberately lenient, since it feeds reject rules: Postfix passes the
/// local part unquoted (`"john doe"@x` arrives as `john doe@x`), real
/// carriers use `a..b@` and `a.@`, SMTPUTF8 brings UTF-8 domains, SRS and
/// VERP make long local parts, and `postmaster` needs no domain. Broken
/// means: no `@`, an empty side, control characters, or a domain that is
/// neither a host name (UTF-8 allowed) nor an address literal.
pub fn valid_address(addr: &str) -> bool {
    if addr.eq_ignore_ascii_case("postmaster") {
        return true;
    }
    let Some((local, domain)) = addr.rsplit_once('@') else { return false };
    if local.is_empty() || domain.is_empty() || domain.len() > 255 || addr.chars().any(char::is_control) {
        return false;
    }
    if domain.starts_with('[') {
        return address_literal(domain).is_some();
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    !domain.is_empty()
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn helo_names() {
        let ours = vec!["mx.corp.example".to_string()];
        let our_ips = vec![ip("203.0.113.5")];
        let c = Some(ip("198.51.100.23"));
        let check = |h: &str| check_helo(h, c, &ours, &our_ips);
        assert_eq!(check("mail.sender.example"), None);
        assert_eq!(check("mail.sender.example."), None);
        assert_eq!(check("mail_01.sender.example"), None, "underscores are tolerated");
        assert_eq!(check("[198.51.100.23]"), None);
        assert_eq!(check(""), Some(HeloProblem::Missing));
        assert_eq!(check("bad_helo!"), Some(HeloProblem::Invalid));
        assert_eq!(check("-x.example"), Some(HeloProblem::Invalid));
        assert_eq!(check("localhost"), Some(HeloProblem::NotFqdn));
        assert_eq!(check("[192.0.2.9]"), Some(HeloProblem::LiteralMismatch));
        assert_eq!(check("[not.an.ip]"), Some(HeloProblem::Invalid));
        assert_eq!(check("198.51.100.23"), Some(HeloProblem::BareAddress));
        assert_eq!(check("MX.corp.example"), Some(HeloProblem::Ours));
        assert_eq!(check("[203.0.113.5]"), Some(HeloProblem::Ours));
        assert_eq!(check_helo("[IPv6:2001:db8::1]", Some(ip("2001:db8::1")), &ours, &our_ips), None);
        assert_eq!(check_helo("[127.0.0.1]", Some(ip("::ffff:127.0.0.1")), &ours, &our_ips), None, "IPv4-mapped client");
    }

    #[test]
    fn addresses() {
        for ok in [
            "alice@sender.example",
            "a.b+c@x.example",
            "\"odd one\"@x.example",
            "john doe@x.example",
            "foo..bar@docomo.ne.jp",
            "foo.@ezweb.ne.jp",
            "u@bücher.example",
            "postmaster@[192.0.2.1]",
            "Postmaster",
            "alice@localhost",
            "SRS0=HHH=TT=example.org=very-long-local-part-beyond-sixty-four-bytes-for-sure@forwarder.example",
        ] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in ["", "alice", "alice@", "@x.example", "alice@x..example", "a\r\nb@x.example", "alice@-x.example", "a@[1.2.3]"] {
            assert!(!valid_address(bad), "{bad}");
        }
    }
}
