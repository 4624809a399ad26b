//! Replies to a pipeline of `HMGET`s, read straight off the socket.
//!
//! A check asks Redis for a few hundred buckets at once (one `HMGET` each).
//! Parsed by the client crate, every reply became a `Value` tree with one
//! heap allocation per field, and its parser plus those allocations were
//! about a quarter of hamlet's CPU per check on Redis (perf, bench/redis.sh).
//! Here all the replies land in one buffer and each field is a range into it.
//!
//! Only what `HMGET` (and a script returning the same shape) answers is
//! understood: an array of bulk strings or nils, and at top level a bulk
//! string, an integer, a simple string, a nil or an error. Anything else, or
//! sizes past the limits below, is a protocol error (the connection is then
//! dropped); no input makes the parser panic.

/// The most elements one array reply may declare.
const MAX_ELEMENTS: i64 = 1 << 20;
/// The longest bulk string accepted (a bucket's record is a few bytes).
const MAX_BULK: i64 = 64 << 20;

/// The replies of one pipeline: reply `r`'s fields are `items[replies[r]]`,
/// each a range of `data` (or `None`: nil).
#[derive(Debug, Default)]
pub struct Replies {
    data: Vec<u8>,
    items: Vec<Option<(u32, u32)>>,
    replies: Vec<(u32, u32)>,
    /// The first error reply, if any.
    error: Option<String>,
}

impl Replies {
    /// How many replies.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// The `k`th field of reply `reply` (`None`: nil, or no such field).
    pub fn get(&self, reply: usize, k: usize) -> Option<&[u8]> {
        let (from, to) = *self.replies.get(reply)?;
        let i = from as usize + k;
        if i >= to as usize {
            return None;
        }
        let (a, b) = self.items[i]?;
        Some(&self.data[a as usize..b as usize])
    }

    /// How many fields reply `reply` has.
    pub fn fields(&self, reply: usize) -> usize {
        self.replies.get(reply).map_or(0, |&(a, b)| (b - a) as usize)
    }

    /// The first error reply, if one of them was an error.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The same shape from replies the client crate parsed (a script's
    /// answer: an array of arrays).
    pub fn from_values(values: Vec<redis::Value>) -> Replies {
        let mut r = Replies::default();
        for v in values {
            let from = r.items.len() as u32;
            let one = |r: &mut Replies, v: &redis::Value| match v {
                redis::Value::BulkString(b) => {
                    let a = r.data.len() as u32;
                    r.data.extend_from_slice(b);
                    r.items.push(Some((a, r.data.len() as u32)));
                }
                redis::Value::SimpleString(s) => {
                    let a = r.data.len() as u32;
                    r.data.extend_from_slice(s.as_bytes());
                    r.items.push(Some((a, r.data.len() as u32)));
                }
                redis::Value::Int(n) => {
                    let a = r.data.len() as u32;
                    r.data.extend_from_slice(n.to_string().as_bytes());
                    r.items.push(Some((a, r.data.len() as u32)));
                }
                _ => r.items.push(None),
            };
            match &v {
                redis::Value::Array(a) | redis::Value::Set(a) => a.iter().for_each(|v| one(&mut r, v)),
                other => one(&mut r, other),
            }
            r.replies.push((from, r.items.len() as u32));
        }
        r
    }

    /// Starts a new read: empties everything but keeps the buffers.
    pub fn clear(&mut self) {
        self.data.clear();
        self.items.clear();
        self.replies.clear();
        self.error = None;
    }

    /// The buffer replies are read into (`parse_next` reads from its start).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Parses the reply that starts at `at` in the buffer. `Ok(Some(end))`:
    /// one more reply, ending at `end`; `Ok(None)`: the buffer does not hold
    /// all of it yet (read more and call again with the same `at`).
    pub fn parse_next(&mut self, at: usize) -> Result<Option<usize>, String> {
        let mark = self.items.len();
        match self.parse_top(at) {
            Ok(Some(end)) => {
                self.replies.push((mark as u32, self.items.len() as u32));
                Ok(Some(end))
            }
            other => {
                self.items.truncate(mark);
                other
            }
        }
    }

    fn parse_top(&mut self, at: usize) -> Result<Option<usize>, String> {
        if self.data.len() > u32::MAX as usize {
            return Err("replies past 4 GiB".into());
        }
        let Some((kind, n, mut pos)) = header(&self.data, at)? else { return Ok(None) };
        match kind {
            b'*' => {
                if n > MAX_ELEMENTS {
                    return Err(format!("an array of {n} elements"));
                }
                for _ in 0..n.max(0) {
                    let Some((kind, m, after)) = header(&self.data, pos)? else { return Ok(None) };
                    match kind {
                        b'$' => match self.bulk(m, after)? {
                            Some(end) => pos = end,
                            None => return Ok(None),
                        },
                        b':' | b'+' => {
                            self.items.push(Some(line_range(pos, after)));
                            pos = after;
                        }
                        other => return Err(format!("unexpected {:?} inside an array", other as char)),
                    }
                }
                Ok(Some(pos))
            }
            b'$' => self.bulk(n, pos),
            b':' | b'+' => {
                self.items.push(Some(line_range(at, pos)));
                Ok(Some(pos))
            }
            b'-' => {
                if self.error.is_none() {
                    let (a, b) = line_range(at, pos);
                    self.error = Some(String::from_utf8_lossy(&self.data[a as usize..b as usize]).into_owned());
                }
                Ok(Some(pos))
            }
            other => Err(format!("unexpected reply type {:?}", other as char)),
        }
    }

    /// A bulk string of `n` bytes whose text starts at `at` (`n` < 0: nil).
    fn bulk(&mut self, n: i64, at: usize) -> Result<Option<usize>, String> {
        if n < 0 {
            self.items.push(None);
            return Ok(Some(at));
        }
        if n > MAX_BULK {
            return Err(format!("a bulk string of {n} bytes"));
        }
        let end = at + n as usize;
        if self.data.len() < end + 2 {
            return Ok(None);
        }
        if &self.data[end..end + 2] != b"\r\n" {
            return Err("a bulk string without its CRLF".into());
        }
        self.items.push(Some((at as u32, end as u32)));
        Ok(Some(end + 2))
    }
}

/// The line that starts at `at`: its type byte, its number (0 when the type
/// carries text, not a number) and where the next line starts.
fn header(buf: &[u8], at: usize) -> Result<Option<(u8, i64, usize)>, String> {
    let Some(rest) = buf.get(at..) else { return Ok(None) };
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
        return if rest.len() > 64 << 10 { Err("a reply line past 64 KiB".into()) } else { Ok(None) };
    };
    if nl < 2 || rest[nl - 1] != b'\r' {
        return Err("a reply line without CRLF".into());
    }
    let kind = rest[0];
    let text = &rest[1..nl - 1];
    let n = match kind {
        b'*' | b'$' => {
            let s = std::str::from_utf8(text).map_err(|_| "a length that is not a number".to_string())?;
            s.parse::<i64>().map_err(|_| format!("a length that is not a number: {s:?}"))?
        }
        _ => 0,
    };
    Ok(Some((kind, n, at + nl + 1)))
}

/// The text of a `:`/`+`/`-` line that starts at `at` and whose next line
/// starts at `next`.
fn line_range(at: usize, next: usize) -> (u32, u32) {
    ((at + 1) as u32, (next - 2) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Replies, String> {
        let mut r = Replies::default();
        r.buffer().extend_from_slice(input);
        let mut at = 0;
        while at < input.len() {
            match r.parse_next(at)? {
                Some(end) => at = end,
                None => return Err("incomplete".into()),
            }
        }
        Ok(r)
    }

    #[test]
    fn hmget_replies_and_errors() {
        let r = parse_all(b"*3\r\n$3\r\nabc\r\n$-1\r\n$0\r\n\r\n*0\r\n:42\r\n-WRONGTYPE no\r\n+OK\r\n$2\r\n\r\n\r\n").unwrap();
        assert_eq!(r.len(), 6);
        assert_eq!((r.fields(0), r.get(0, 0), r.get(0, 1), r.get(0, 2), r.get(0, 3)), (3, Some(&b"abc"[..]), None, Some(&b""[..]), None));
        assert_eq!(r.fields(1), 0);
        assert_eq!(r.get(2, 0), Some(&b"42"[..]));
        assert_eq!(r.error(), Some("WRONGTYPE no"));
        assert_eq!((r.fields(3), r.get(4, 0)), (0, Some(&b"OK"[..])));
        assert_eq!(r.get(5, 0), Some(&b"\r\n"[..]), "a bulk string may hold CRLF");
    }

    #[test]
    fn a_reply_split_anywhere_waits_for_the_rest() {
        let whole = b"*2\r\n$5\r\nhello\r\n$-1\r\n*1\r\n$3\r\nabc\r\n";
        for cut in 0..whole.len() {
            let mut r = Replies::default();
            r.buffer().extend_from_slice(&whole[..cut]);
            let mut at = 0;
            while let Some(end) = r.parse_next(at).unwrap() {
                at = end;
            }
            let done = r.len();
            r.buffer().extend_from_slice(&whole[cut..]);
            while at < whole.len() {
                at = r.parse_next(at).unwrap().expect("complete now");
            }
            assert_eq!(r.len(), 2, "cut at {cut} (done before: {done})");
            assert_eq!((r.get(0, 0), r.get(0, 1), r.get(1, 0)), (Some(&b"hello"[..]), None, Some(&b"abc"[..])));
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [&b"*1\r\n*1\r\n:1\r\n"[..], b"$3\r\nabcd\r\n", b"*x\r\n", b"%1\r\n", b"$99999999999\r\n", b"*2000000\r\n", b"\n", b"$3\nabc\r\n"]
        {
            assert!(parse_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest::proptest! {
        /// Any bytes: an error, incomplete or replies, never a panic; and
        /// every range handed out lies inside the buffer.
        #[test]
        fn hostile_bytes_never_panic(input in proptest::collection::vec(proptest::prop_oneof![
            proptest::sample::select(b"*$:+-\r\n0123456789-".to_vec()),
            proptest::prelude::any::<u8>(),
        ], 0..200)) {
            let mut r = Replies::default();
            r.buffer().extend_from_slice(&input);
            let mut at = 0;
            while let Ok(Some(end)) = r.parse_next(at) {
                proptest::prop_assert!(end > at && end <= input.len());
                at = end;
            }
            for reply in 0..r.len() {
                for k in 0..r.fields(reply) + 1 {
                    let _ = r.get(reply, k);
                }
            }
        }
    }
}
