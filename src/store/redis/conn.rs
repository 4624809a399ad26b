//! Where the Redis store connects, and its connections.
//!
//! `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS),
//! `redis+unix:///path/redis.sock` and
//! `redis+cluster://[user:password@]host:port[,host:port…]` (or
//! `rediss+cluster://`). The password may also come from a file (the
//! `redis_password_file` setting), so it need not sit in hamlet.toml; it is
//! never printed: [`Target::display`] shows the URL without it.
//!
//! Connections are blocking (the store's trait is: the engine runs on
//! blocking threads) and pooled: a caller takes an idle one or opens a new
//! one within the connect timeout, and gives it back after a clean reply.
//! A connection that failed (reset, timed out) is dropped, so after Redis
//! comes back the next call simply connects again.
//!
//! A check's pipeline of `HMGET`s goes over connections of our own to a
//! single server by TCP or Unix socket (see [`super::resp`]); TLS and
//! clusters go through the client crate.

use super::resp::Replies;
use crate::{Error, Result};
use redis::ConnectionLike;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Timeouts for every Redis call.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Opening a connection.
    pub connect: Duration,
    /// One reply (a check's read, a learn's commit).
    pub reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { connect: Duration::from_millis(1000), reply: Duration::from_millis(2000) }
    }
}

enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    fn like(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => &mut **c,
        }
    }

    fn set_timeout(&self, d: Duration) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => {
                c.set_read_timeout(Some(d))?;
                c.set_write_timeout(Some(d))
            }
            Conn::Cluster(c) => {
                c.set_read_timeout(Some(d))?;
                c.set_write_timeout(Some(d))
            }
        }
    }
}

/// A Redis server or cluster and a pool of connections to it.
pub struct Target {
    client: Client,
    shown: String,
    timeouts: Timeouts,
    idle: Mutex<Vec<Conn>>,
    /// Where a check's pipeline connects itself (a single server, no TLS).
    raw: Option<RawAddr>,
    raw_idle: Mutex<Vec<Raw>>,
}

/// A single server's address and what to say first.
struct RawAddr {
    addr: RawPlace,
    /// `AUTH` and `SELECT`, packed, and how many replies they get.
    hello: (Vec<u8>, usize),
}

enum RawPlace {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
}

enum RawStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl RawStream {
    /// Both timeouts of the socket.
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        match self {
            RawStream::Tcp(s) => s.set_read_timeout(Some(d)).and_then(|()| s.set_write_timeout(Some(d))),
            RawStream::Unix(s) => s.set_read_timeout(Some(d)).and_then(|()| s.set_write_timeout(Some(d))),
        }
    }
}

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.read(buf),
            RawStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for RawStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            RawStream::Tcp(s) => s.write(buf),
            RawStream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection that reads its replies itself ([`Replies`]).
struct Raw {
    stream: RawStream,
}

impl Raw {
    fn connect(at: &RawAddr, timeouts: Timeouts) -> std::io::Result<Raw> {
        let stream = match &at.addr {
            RawPlace::Tcp(host, port) => {
                let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address"));
                let mut found = None;
                for a in std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))? {
                    match std::net::TcpStream::connect_timeout(&a, timeouts.connect) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = found.ok_or(last)?;
                s.set_nodelay(true)?;
                RawStream::Tcp(s)
            }
            RawPlace::Unix(path) => RawStream::Unix(std::os::unix::net::UnixStream::connect(path)?),
        };
        let mut raw = Raw { stream };
        if at.hello.1 > 0 {
            let r = raw.exchange(&at.hello.0, at.hello.1, timeouts.connect)?;
            if let Some(e) = r.error() {
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("Redis refused the connection: {e}")));
            }
        }
        Ok(raw)
    }

    /// Sends `packed` and reads `n` replies, all within `budget`.
    fn exchange(&mut self, packed: &[u8], n: usize, budget: Duration) -> std::io::Result<Replies> {
        let deadline = Instant::now() + budget;
        let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or(std::io::ErrorKind::TimedOut);
        self.stream.set_timeout(left()?)?;
        self.stream.write_all(packed)?;
        let mut r = Replies::default();
        r.buffer().reserve(16 << 10);
        let mut at = 0;
        while r.len() < n {
            match r.parse_next(at) {
                Ok(Some(end)) => at = end,
                Ok(None) => {
                    let buf = r.buffer();
                    let len = buf.len();
                    buf.resize(len + (16 << 10), 0);
                    let got = self.stream.set_timeout(left()?).and_then(|()| self.stream.read(&mut buf[len..]));
                    buf.truncate(len + *got.as_ref().unwrap_or(&0));
                    if got? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
        }
        if at != r.buffer().len() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "more replies than commands"));
        }
        Ok(r)
    }
}

/// The packed `AUTH` and `SELECT` a new connection to `info` sends first.
fn hello(info: &redis::RedisConnectionInfo) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    let mut pack = |args: &[&[u8]]| {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        n += 1;
    };
    if let Some(p) = info.password() {
        match info.username() {
            Some(u) => pack(&[b"AUTH", u.as_bytes(), p.as_bytes()]),
            None => pack(&[b"AUTH", p.as_bytes()]),
        }
    }
    if info.db() != 0 {
        pack(&[b"SELECT", info.db().to_string().as_bytes()]);
    }
    (out, n)
}

/// Whether `db` names a Redis database rather than a file.
pub fn is_redis_url(db: &str) -> bool {
    ["redis://", "rediss://", "redis+unix://", "redis+cluster://", "rediss+cluster://"].iter().any(|p| db.starts_with(p))
}

/// `url` without its password, to show.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    match auth {
        Some(a) => {
            let user = a.split_once(':').map_or(a, |(u, _)| u);
            if user.is_empty() { format!("{scheme}://***@{host}") } else { format!("{scheme}://{user}:***@{host}") }
        }
        None => url.to_string(),
    }
}

fn redis_error(shown: &str, e: redis::RedisError) -> Error {
    Error::Redis { target: shown.to_string(), source: e }
}

impl Target {
    /// Parses `url` (see the module documentation); `password`, when given,
    /// overrides one in the URL. Nothing is connected yet.
    pub fn new(url: &str, password: Option<&str>, timeouts: Timeouts) -> Result<Target> {
        let shown = without_password(url);
        let bad = |why: String| Error::Invalid(format!("{shown}: {why}"));
        let info = |u: &str| -> Result<redis::ConnectionInfo> {
            let info = redis::IntoConnectionInfo::into_connection_info(u).map_err(|e| bad(e.to_string()))?;
            Ok(match password {
                Some(p) => {
                    let r = info.redis_settings().clone().set_password(p);
                    info.set_redis_settings(r)
                }
                None => info,
            })
        };
        let client = if let Some(rest) =
            url.strip_prefix("redis+cluster://").map(|r| ("redis", r)).or_else(|| url.strip_prefix("rediss+cluster://").map(|r| ("rediss", r)))
        {
            let (scheme, rest) = rest;
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((a, h)) => (format!("{a}@"), h),
                None => (String::new(), rest),
            };
            let hosts = hosts.trim_end_matches('/');
            if hosts.is_empty() {
                return Err(bad("no cluster nodes given".into()));
            }
            let nodes = hosts.split(',').map(|h| info(&format!("{scheme}://{auth}{h}"))).collect::<Result<Vec<_>>>()?;
            let c = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(timeouts.connect)
                .response_timeout(timeouts.reply)
                .retries(2)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            Client::Cluster(c)
        } else {
            Client::Single(redis::Client::open(info(url)?).map_err(|e| bad(e.to_string()))?)
        };
        let raw = match &client {
            Client::Single(c) => {
                let i = c.get_connection_info();
                let addr = match i.addr() {
                    redis::ConnectionAddr::Tcp(h, p) => Some(RawPlace::Tcp(h.clone(), *p)),
                    redis::ConnectionAddr::Unix(p) => Some(RawPlace::Unix(p.clone())),
                    _ => None,
                };
                addr.map(|addr| RawAddr { addr, hello: hello(i.redis_settings()) })
            }
            Client::Cluster(_) => None,
        };
        Ok(Target { client, shown, timeouts, idle: Mutex::new(Vec::new()), raw, raw_idle: Mutex::new(Vec::new()) })
    }

    /// The URL without its password.
    pub fn display(&self) -> &str {
        &self.shown
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    fn connect(&self) -> redis::RedisResult<Conn> {
        let con = match &self.client {
            Client::Single(c) => Conn::Single(c.get_connection_with_timeout(self.timeouts.connect)?),
            Client::Cluster(c) => Conn::Cluster(Box::new(c.get_connection()?)),
        };
        con.set_timeout(self.timeouts.reply)?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection. A connection that fails is dropped
    /// (the next call opens a new one); one taken from the pool that turns
    /// out to be dead before a reply (Redis restarted since) is replaced and
    /// `f` tried once more when `retry` says it is safe to (a read).
    pub fn with<T>(&self, retry: bool, f: impl FnMut(&mut dyn ConnectionLike) -> redis::RedisResult<T>) -> Result<T> {
        self.with_timeout(retry, None, f)
    }

    /// Sends `n` commands packed in `packed` in one write and reads their
    /// `n` replies within the reply timeout (all of them, not each). A
    /// single server by TCP or Unix socket only (`None` otherwise: run the
    /// commands another way). A pooled connection found dead (Redis
    /// restarted since) is replaced once; none is after a timeout.
    pub fn pipeline(&self, packed: &[u8], n: usize) -> Option<Result<Replies>> {
        let at = self.raw.as_ref()?;
        let pooled = self.raw_idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let fresh = || Raw::connect(at, self.timeouts);
        let run = |mut con: Raw| -> std::io::Result<Replies> {
            let r = con.exchange(packed, n, self.timeouts.reply)?;
            let mut idle = self.raw_idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < 64 {
                idle.push(con);
            }
            Ok(r)
        };
        let got = match pooled {
            Some(con) => match run(con) {
                Err(e) if !matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => fresh().and_then(run),
                other => other,
            },
            None => fresh().and_then(run),
        };
        Some(match got {
            Ok(r) => match r.error() {
                Some(e) => Err(redis_error(
                    &self.shown,
                    redis::RedisError::from((
                        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                        "Redis answered an error",
                        e.to_string(),
                    )),
                )),
                None => Ok(r),
            },
            Err(e) => Err(redis_error(&self.shown, e.into())),
        })
    }

    /// [`Target::with`], waiting up to `reply` (instead of the configured
    /// reply timeout) for this call's answer: a big commit (bulk training,
    /// `db load`) that Redis takes longer over.
    pub fn with_timeout<T>(
        &self,
        retry: bool,
        reply: Option<Duration>,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T> {
        self.with_conn(retry, reply, &mut |con: &mut Conn| f(con.like()))
    }

    fn with_conn<T>(&self, retry: bool, reply: Option<Duration>, f: &mut dyn FnMut(&mut Conn) -> redis::RedisResult<T>) -> Result<T> {
        let mut f = |con: &mut Conn| -> redis::RedisResult<T> {
            if let Some(d) = reply {
                con.set_timeout(d)?;
            }
            let v = f(con);
            if reply.is_some() {
                con.set_timeout(self.timeouts.reply)?;
            }
            v
        };
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let from_pool = pooled.is_some();
        let mut con = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| redis_error(&self.shown, e))?,
        };
        match f(&mut con) {
            Ok(v) => {
                self.give_back(con);
                Ok(v)
            }
            // Not after a timeout: Redis is slow, not restarted, and the
            // caller's time is spent.
            Err(e) if from_pool && retry && !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error()) => {
                drop(con);
                let mut con = self.connect().map_err(|e| redis_error(&self.shown, e))?;
                let v = f(&mut con).map_err(|e| redis_error(&self.shown, e))?;
                self.give_back(con);
                Ok(v)
            }
            Err(e) => {
                if !(e.is_connection_dropped() || e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error()) {
                    // A reply that was an error (a script's): the connection is fine.
                    self.give_back(con);
                }
                Err(redis_error(&self.shown, e))
            }
        }
    }

    fn give_back(&self, con: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < 64 {
            idle.push(con);
        }
    }

    /// Drops every pooled connection (a test that restarts Redis, or after
    /// a failure seen elsewhere).
    pub fn drop_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.raw_idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(without_password("redis://:s3cret@127.0.0.1:6379/2"), "redis://***@127.0.0.1:6379/2");
        assert_eq!(without_password("rediss://bob:s3cret@h:6380"), "rediss://bob:***@h:6380");
        assert_eq!(without_password("redis+cluster://a:1,b:2"), "redis+cluster://a:1,b:2");
        assert!(is_redis_url("redis+cluster://a:1") && is_redis_url("rediss://h") && !is_redis_url("/var/lib/hamlet/redis://x"));
    }

    #[test]
    fn bad_urls_are_refused_clearly() {
        let e = Target::new("redis+cluster://", None, Timeouts::default()).err().unwrap().to_string();
        assert!(e.contains("no cluster nodes"), "{e}");
        assert!(Target::new("redis://127.0.0.1:6379/notanumber", None, Timeouts::default()).is_err());
    }
}
