//! Message digests: the key of the training journal.
//!
//! A message must keep its digest when a mail system adds headers to it
//! (Received, X-Spam-*, our own X-Hamlet-*) or converts its line endings (IMAP
//! and SPAMD use CRLF, a maildir LF), so that "learn it again" and "learn it as
//! the other class" find it. The digest is therefore SHA-256 over the headers
//! that identify a message (Message-ID, Date, From, Subject, unfolded and
//! trimmed) and the body with line endings normalized to LF and trailing
//! whitespace dropped.

use sha2::{Digest as _, Sha256};

/// A 32-byte message digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

const IDENTITY_HEADERS: [&str; 4] = ["message-id", "date", "from", "subject"];

/// Only this many leading bytes of a message are digested: the same bound
/// as the tokenizer's, so a path that reads a big message only that far (the
/// CLI) and one that has all of it (HTTP) agree on its digest.
pub const DIGEST_BYTES: usize = 1 << 20;

/// Computes the digest of a raw message.
pub fn digest(raw: &[u8]) -> Digest {
    let raw = &raw[..raw.len().min(DIGEST_BYTES)];
    let (headers, body) = crate::message::split(raw);
    let mut h = Sha256::new();
    h.update(b"hamlet-digest-v1\0");
    let identity = header_values(headers, &IDENTITY_HEADERS);
    let anonymous = identity.iter().all(Option::is_none);
    for v in identity {
        if let Some(v) = v {
            h.update(v.as_slice());
        }
        h.update(b"\0");
    }
    // Why: with none of the identity headers, the header section is all
    // that tells such messages apart (a text without a blank line is all
    // "header", its body empty), so it is digested too, less the headers a
    // mail system adds in transit. Messages with any identity header keep
    // exactly the digest they always had (journals and eval unchanged).
    if anonymous {
        h.update(b"content\0");
        update_content_headers(&mut h, headers);
    }
    // Body: CRLF -> LF, trailing whitespace trimmed.
    let mut end = body.len();
    while end > 0 && body[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    let body = &body[..end];
    // memchr finds the CRs: a loop over every byte was 3% of bulk training.
    let mut start = 0;
    for i in memchr::memchr_iter(b'\r', body) {
        if body.get(i + 1) == Some(&b'\n') {
            h.update(&body[start..i]);
            start = i + 1;
        }
    }
    h.update(&body[start..]);
    Digest(h.finalize().into())
}

/// Headers added on the way (by MTAs, delivery agents, spamd and hamlet
/// itself): left out of an anonymous message's digest, as for any other.
const TRANSIT_HEADERS: [&str; 7] = ["received", "return-path", "delivered-to", "x-original-to", "x-spam-", "x-hamlet-", "x-rspamd-"];

/// Feeds the header section of a message without identity headers to `h`:
/// every line, line endings normalized to LF, except the fields (and their
/// continuation lines) of [`TRANSIT_HEADERS`] (a trailing `-` there is a
/// name prefix).
fn update_content_headers(h: &mut Sha256, headers: &[u8]) {
    let mut skipping = false;
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if skipping {
                continue;
            }
        } else {
            let name = line.iter().position(|&b| b == b':').map(|c| &line[..c]);
            skipping = name.is_some_and(|n| {
                TRANSIT_HEADERS.iter().any(|t| match t.strip_suffix('-') {
                    Some(_) => n.len() >= t.len() && n[..t.len()].eq_ignore_ascii_case(t.as_bytes()),
                    None => n.eq_ignore_ascii_case(t.as_bytes()),
                })
            });
            if skipping {
                continue;
            }
        }
        h.update(line);
        h.update(b"\n");
    }
}

/// The first value of header `name` (lower-case), unfolded and trimmed.
pub fn header_value(headers: &[u8], name: &str) -> Option<Vec<u8>> {
    let [v] = header_values(headers, &[name]);
    v
}

/// The first value of each header of `names`, in one pass over the
/// headers (four passes, one per identity header, were 2% of a bulk
/// training's time).
pub fn header_values<const N: usize>(headers: &[u8], names: &[&str; N]) -> [Option<Vec<u8>>; N] {
    let mut out = [const { None }; N];
    let mut missing = N;
    let mut lines = headers.split(|&b| b == b'\n').peekable();
    while missing > 0 {
        let Some(line) = lines.next() else { break };
        let Some(colon) = memchr::memchr(b':', line) else { continue };
        let Some(k) = names.iter().position(|n| line[..colon].eq_ignore_ascii_case(n.as_bytes())) else { continue };
        if out[k].is_some() {
            continue;
        }
        let mut v: Vec<u8> = line[colon + 1..].to_vec();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                v.push(b' ');
                v.extend_from_slice(next);
                lines.next();
            } else {
                break;
            }
        }
        out[k] = Some(v.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(&b' '));
        missing -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hamlet-digest-v1\0` + `<1@x>\0\0\0hi\0` + `body`, by Python's hashlib.
    const PINNED: &str = "7eed1f81c058d0eab39ca5c64abf16010fd411332026dda1274bbe54d782c6db";

    #[test]
    fn stable_under_added_headers_and_line_endings() {
        let a = digest(b"Message-ID: <1@x>\nSubject: hi\n\nbody line\nmore\n");
        let b = digest(b"Received: from x\r\nX-Spam-Flag: YES\r\nMessage-ID: <1@x>\r\nSubject: hi\r\n\r\nbody line\r\nmore\r\n");
        assert_eq!(a, b);
    }

    #[test]
    fn differs_by_body_and_identity() {
        let a = digest(b"Subject: hi\n\nbody");
        assert_ne!(a, digest(b"Subject: hi\n\nbodx"));
        assert_ne!(a, digest(b"Subject: ho\n\nbody"));
    }

    #[test]
    fn only_the_leading_bytes_count() {
        let mut a = b"Subject: big\n\n".to_vec();
        a.resize(DIGEST_BYTES + 10, b'x');
        let mut b = a.clone();
        b.truncate(DIGEST_BYTES + 1);
        assert_eq!(digest(&a), digest(&b));
    }

    #[test]
    fn messages_without_identity_headers_differ_by_content() {
        // No blank line: all "header", no body.
        assert_ne!(digest(b"cheap pills here\nbuy now\n"), digest(b"meeting at noon\nsee you\n"));
        assert_ne!(digest(b"To: a@x\n\nsame"), digest(b"To: b@x\n\nsame"));
        // Still stable under transit headers and line endings.
        assert_eq!(
            digest(b"cheap pills here\nbuy now\n"),
            digest(b"Received: from x\r\n by y\r\nX-Spam-Flag: YES\r\ncheap pills here\r\nbuy now\r\n")
        );
    }

    #[test]
    fn identity_headers_keep_their_digest() {
        // The digest of a message with identity headers is the one stored in
        // existing journals: this pins it.
        assert_eq!(digest(b"Message-ID: <1@x>\nSubject: hi\n\nbody\n").hex(), PINNED);
    }

    #[test]
    fn folded_headers_unfold() {
        assert_eq!(digest(b"Subject: a\n b\n\nx"), digest(b"Subject: a b\n\nx"));
    }
}
