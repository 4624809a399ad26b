//! A raw RFC 822 message's two parts: the header section and the body,
//! split at the first empty line. One definition for every reader of raw
//! messages (the digest, the SPAMD header rewrite, the rspamd reply). A
//! leaf: no other module of the crate is imported.

/// Where the header section ends: the offset of the blank line that ends
/// it, or `None` when the message has no blank line (it is all header).
pub fn header_end(raw: &[u8]) -> Option<usize> {
    let mut start = 0;
    while start < raw.len() {
        let end = memchr::memchr(b'\n', &raw[start..]).map_or(raw.len(), |i| start + i + 1);
        let line = &raw[start..end];
        if line == b"\n" || line == b"\r\n" {
            return Some(start);
        }
        start = end;
    }
    None
}

/// Splits at the first empty line: (header section, body). The empty line
/// belongs to neither; a message without one is all header.
pub fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    match header_end(raw) {
        Some(at) => {
            let blank = if raw[at..].starts_with(b"\r\n") { 2 } else { 1 };
            (&raw[..at], &raw[at + blank..])
        }
        None => (raw, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_empty_line() {
        assert_eq!(split(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore"), (&b"A: 1\r\nB: 2\r\n"[..], &b"body\r\n\r\nmore"[..]));
        assert_eq!(split(b"A: 1\n\nbody"), (&b"A: 1\n"[..], &b"body"[..]));
        assert_eq!(split(b"\r\nbody"), (&b""[..], &b"body"[..]));
        assert_eq!(split(b"A: 1\r\nno blank line"), (&b"A: 1\r\nno blank line"[..], &b""[..]));
        assert_eq!(split(b""), (&b""[..], &b""[..]));
        assert_eq!(header_end(b"A: 1\n\nx"), Some(5));
        assert_eq!(header_end(b"A: 1\n"), None);
    }
}
