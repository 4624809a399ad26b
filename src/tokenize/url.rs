//! URL cracking: scheme, host and its parent domains, port, path pieces.
//!
//! Spam is about getting a click; the host a link points at is often the most
//! durable evidence in a spam run (the words change, the landing domain less so).

use super::{Sink, prefix};

/// At most this many URLs per message are cracked.
const MAX_URLS: usize = 64;

/// Finds `scheme://...` and `www.` URLs in plain text and cracks each.
pub(crate) fn find_in_text(text: &str, sink: &mut Sink) {
    let bytes = text.as_bytes();
    let mut found = 0;
    let mut i = 0;
    // Where the previous URL ended: a scheme cannot start before it.
    let mut floor = 0;
    while i < bytes.len() && found < MAX_URLS {
        // A URL shows as the ':' of its "://" or the 'w' of "www.": skip to
        // the next of those (ASCII, so always a char boundary). Stopping at
        // every letter that can start a scheme (h, f, w) stopped every few
        // bytes of English and was 3% of a bulk check.
        match bytes[i..].iter().position(|b| matches!(b, b':' | b'w' | b'W')) {
            Some(p) => i += p,
            None => break,
        }
        let start = if bytes[i] == b':' {
            // The scheme ends here (and must not start before the end of
            // the previous URL: `floor`, below).
            let back = |n: usize| i.checked_sub(n);
            if !bytes[i..].starts_with(b"://") {
                None
            } else if let Some(s) = back(5).filter(|&s| bytes[s..i].eq_ignore_ascii_case(b"https")) {
                Some(s)
            } else {
                [(4, &b"http"[..]), (3, &b"ftp"[..])]
                    .into_iter()
                    .find_map(|(n, scheme)| back(n).filter(|&s| bytes[s..i].eq_ignore_ascii_case(scheme)))
            }
        } else if starts_with_ci(&text[i..], "www.") && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            Some(i)
        } else {
            None
        };
        match start.filter(|&s| s >= floor) {
            Some(s) => {
                let end =
                    text[s..].find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']')).map_or(text.len(), |e| s + e);
                crack(&text[s..end], sink);
                found += 1;
                i = end.max(i + 1);
                floor = i;
            }
            None => i += 1,
        }
        while i < bytes.len() && !text.is_char_boundary(i) {
            i += 1;
        }
    }
}

fn starts_with_ci(s: &str, p: &str) -> bool {
    s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
}

/// Cracks one URL (or href target) into tokens.
pub(crate) fn crack(url: &str, sink: &mut Sink) {
    let url = url.trim().trim_end_matches(['.', ',', ';', ':', '!', '?']);
    let (scheme, rest) = match url.find("://") {
        Some(p) => (url[..p].to_ascii_lowercase(), &url[p + 3..]),
        None => match url.split_once(':') {
            Some((s, r)) if s.eq_ignore_ascii_case("mailto") => {
                sink.push(prefix::URL, "scheme:mailto");
                if let Some((_, d)) = r.split_once('@') {
                    let d = d.split(['?', '>']).next().unwrap_or("").to_ascii_lowercase();
                    domain_tokens(prefix::URL, "mailto:", &d, sink);
                }
                return;
            }
            _ => ("http".to_string(), url),
        },
    };
    if scheme.len() > 10 || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+') {
        return;
    }
    sink.push3(prefix::URL, "scheme:", &scheme);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let path = &rest[end..];
    // user:pass@host tricks ("http://www.bank.com@evil.example/")
    let host_port = match authority.rsplit_once('@') {
        Some((_, h)) => {
            sink.push(prefix::URL, "userinfo");
            h
        }
        None => authority,
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => (h, Some(p)),
        _ => (host_port, None),
    };
    let host = host.split_whitespace().next().unwrap_or("").trim_end_matches('.').to_ascii_lowercase();
    if let Some(p) = port {
        sink.push3(prefix::URL, "port:", p);
    }
    if host.is_empty() {
        return;
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') || host.starts_with('[') {
        sink.push(prefix::URL, "ip-host");
        sink.push3(prefix::URL, "host:", &host);
    } else if host.contains('%') {
        sink.push(prefix::URL, "encoded-host");
    } else {
        domain_tokens(prefix::URL, "host:", &host, sink);
    }
    if path.contains('%') {
        sink.push(prefix::URL, "escaped-path");
    }
    let mut pieces = 0;
    for piece in path.split(|c: char| !c.is_alphanumeric()) {
        let n = piece.chars().count();
        if (2..=20).contains(&n) {
            sink.push3(prefix::URL, "path:", &piece.to_lowercase());
            pieces += 1;
            if pieces >= 12 {
                break;
            }
        }
    }
}

/// `host` and each parent domain down to two labels: a.b.example.com gives
/// a.b.example.com, b.example.com, example.com.
pub(crate) fn domain_tokens(prefix: &str, prefix2: &str, host: &str, sink: &mut Sink) {
    let host = host.trim_matches('.');
    if host.is_empty() || host.len() > 253 {
        return;
    }
    sink.push3(prefix, prefix2, host);
    let mut rest = host;
    let mut n = 0;
    while let Some((_, parent)) = rest.split_once('.') {
        if !parent.contains('.') || n >= 6 {
            break;
        }
        sink.push3(prefix, prefix2, parent);
        rest = parent;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, Sink};
    use super::*;

    fn run(f: impl FnOnce(&mut Sink)) -> Vec<String> {
        let mut s = Sink::new(&Limits::default());
        f(&mut s);
        s.strings()
    }

    #[test]
    fn cracks_host_parents_and_path() {
        let t = run(|s| crack("https://a.b.example.com:8080/buy/now.php?id=7", s));
        for want in [
            "url:scheme:https",
            "url:host:a.b.example.com",
            "url:host:b.example.com",
            "url:host:example.com",
            "url:port:8080",
            "url:path:buy",
            "url:path:php",
        ] {
            assert!(t.iter().any(|x| x == want), "missing {want} in {t:?}");
        }
    }

    #[test]
    fn finds_urls_in_text() {
        let t = run(|s| find_in_text("see www.example.org/x and http://1.2.3.4/y.", s));
        assert!(t.iter().any(|x| x == "url:host:www.example.org"));
        assert!(t.iter().any(|x| x == "url:ip-host"));
    }

    #[test]
    fn finds_each_scheme_where_it_starts() {
        let hosts = |text: &str| -> Vec<String> {
            let mut h: Vec<String> = run(|s| find_in_text(text, s))
                .into_iter()
                .filter(|t| t.starts_with("url:scheme:") || t.starts_with("url:host:a") || t.starts_with("url:host:www"))
                .collect();
            h.sort();
            h
        };
        // The scheme's letters are found back from its "://", in any case,
        // glued to the word before or not.
        assert_eq!(hosts("xHTTPS://a1.org"), ["url:host:a1.org", "url:scheme:https"]);
        assert_eq!(hosts("sftp://a2.org"), ["url:host:a2.org", "url:scheme:ftp"]);
        assert_eq!(hosts("(http://a3.org)"), ["url:host:a3.org", "url:scheme:http"]);
        // Not a URL: no "//", an unknown scheme, "www." inside a word.
        assert!(hosts("http:/a4.org gopher://a5.org awww.a6.org").is_empty());
        // Inside a URL: not another one.
        assert_eq!(hosts("http://a7.org/www.a8.org/http://a9.org"), ["url:host:a7.org", "url:scheme:http"]);
        // Right after one: the next.
        assert_eq!(hosts("http://a7.org\"https://a8.org"), ["url:host:a7.org", "url:host:a8.org", "url:scheme:http", "url:scheme:https"]);
    }

    #[test]
    fn hostile_urls_do_not_panic() {
        run(|s| {
            crack("http://", s);
            crack("://", s);
            crack("http://@:/", s);
            crack("mailto:", s);
            find_in_text("httpé://ü www.", s);
        });
    }
}
