//! Slow and greedy clients against a real `hamlet serve` on loopback: the
//! attacks of a slowloris kind (connections that send nothing, drip a byte
//! at a time, or hold back the last byte of a large body) on every
//! listener, at the default caps. Each test measures that a real client is
//! still answered within two seconds while the attack goes on, and that
//! the server's memory stays within its body budget.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");

/// What a real client must get while the attack goes on.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

const HAM: &str =
    "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: lunch\r\nMessage-ID: <1@example.org>\r\n\r\nShall we meet for lunch on Friday?\r\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    http: String,
    spamd: String,
    policy: String,
    _dir: PathBuf,
}

impl Server {
    /// `hamlet serve` with HTTP, SPAMD and the policy service, default caps,
    /// a 3-second request time limit, and `extra` config lines.
    fn start(name: &str, extra: &str) -> Server {
        Server::start_limited(name, extra, None)
    }

    /// Like [`Server::start`], with the open-file limit (soft and hard) at `files`.
    fn start_with_files(name: &str, files: u64) -> Server {
        Server::start_limited(name, "", Some(files))
    }

    fn start_limited(name: &str, extra: &str, files: Option<u64>) -> Server {
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("hamlet-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (http, spamd, policy) =
            (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        let cfg = dir.join("hamlet.toml");
        std::fs::write(
            &cfg,
            format!(
                "http = \"{http}\"\nspamd = \"{spamd}\"\npolicy = \"{policy}\"\ndb = \"{}\"\nlog = \"warn\"\ntimeout_s = 3\n{extra}\n",
                dir.join("h.redb").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["--config", cfg.to_str().unwrap(), "serve"]).stderr(Stdio::null());
        if let Some(files) = files {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit { rlim_cur: files, rlim_max: files };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        for _ in 0..200 {
            if [&http, &spamd, &policy].iter().all(|a| TcpStream::connect(a).is_ok()) {
                return Server { child, http, spamd, policy, _dir: dir };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("hamlet serve never listened");
    }

    /// The server's peak resident memory so far (VmHWM), in MB.
    fn peak_mb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// `n` connections to `addr`, each sent `prefix`; half of them then drip
/// one byte of `drip` a second until `stop` (a thread does it).
struct Attack {
    stop: Arc<AtomicBool>,
    dripper: Option<std::thread::JoinHandle<()>>,
}

impl Attack {
    fn start(addr: &str, n: usize, prefix: &[u8], drip: &'static [u8]) -> Attack {
        let mut conns = Vec::new();
        for _ in 0..n {
            let mut c = TcpStream::connect(addr).unwrap();
            if !prefix.is_empty() {
                let _ = c.write_all(prefix);
            }
            conns.push(c);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let dripper = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                for c in conns.iter_mut().step_by(2) {
                    let _ = c.write_all(&[drip[i % drip.len()]]);
                }
                i += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Attack { stop, dripper: Some(dripper) }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.dripper.take() {
            let _ = d.join();
        }
    }
}

/// A Postfix 3.7 RCPT-stage request.
fn policy_request() -> String {
    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=198.51.100.23\n\
     client_name=mail.other.example\nreverse_client_name=mail.other.example\nhelo_name=mail.other.example\n\
     sender=frank@other.example\nrecipient=erin@corp.example\ninstance=1.2.3\n\n"
        .to_string()
}

/// Sends one policy request on a new connection; the time to its answer.
fn policy_call(addr: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(policy_request().as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).map_err(|e| format!("no answer after {:?}: {e}", t.elapsed()))?;
    if !line.starts_with("action=") {
        return Err(format!("answer {line:?}"));
    }
    Ok(t.elapsed())
}

/// One HTTP/1.1 request on a new connection (closed after): status, time.
fn http_call(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, Duration), String> {
    let t = Instant::now();
    let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    c.write_all(head.as_bytes()).and_then(|()| c.write_all(body)).map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).map_err(|e| format!("no answer after {:?}: {e}", t.elapsed()))?;
    let status = String::from_utf8_lossy(&reply).split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    Ok((status, t.elapsed()))
}

/// One SPAMD CHECK on a new connection: the reply's first line, and the time.
fn spamd_check(addr: &str) -> Result<(String, Duration), String> {
    let t = Instant::now();
    let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("CHECK SPAMC/1.5\r\nContent-length: {}\r\n\r\n{HAM}", HAM.len());
    c.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).map_err(|e| format!("no answer after {:?}: {e}", t.elapsed()))?;
    Ok((line.trim().to_string(), t.elapsed()))
}

/// 600 connections to the policy service (512 slots): 300 drip a request
/// a byte a second, 300 send nothing. Postfix's requests are answered at
/// once, three times over a few seconds of the attack.
#[test]
fn policy_answers_postfix_while_600_slow_clients_connect() {
    let mut s = Server::start("policy", "");
    let attack = Attack::start(&s.policy, 600, b"", b"request=smtpd_access_policy\n");
    for round in 0..3 {
        let took = policy_call(&s.policy).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(took < ANSWER_WITHIN, "round {round}: answered after {took:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(attack);
    assert!(s.alive());
}

/// 600 HTTP connections (512 slots) that send half a request head, half of
/// them dripping more of it: `/healthz` and a check are answered at once.
#[test]
fn http_answers_while_600_clients_send_slow_heads() {
    let mut s = Server::start("http-heads", "");
    let attack = Attack::start(&s.http, 600, b"POST /v1/check HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n");
    for round in 0..3 {
        let (status, took) = http_call(&s.http, "GET", "/healthz", b"").unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(status, 200, "round {round}");
        assert!(took < ANSWER_WITHIN, "round {round}: healthz answered after {took:?}");
        let (status, took) = http_call(&s.http, "POST", "/v1/check", HAM.as_bytes()).unwrap();
        assert_eq!(status, 200);
        assert!(took < ANSWER_WITHIN, "round {round}: check answered after {took:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(attack);
    assert!(s.alive());
}

/// With only 256 open files (below the caps), 300 half-sent HTTP requests
/// run the server out of descriptors: the longest waiting ones are closed
/// to make room, and `/healthz` is answered at once.
#[test]
fn http_answers_when_slow_clients_use_every_file_descriptor() {
    let mut s = Server::start_with_files("http-files", 256);
    let attack = Attack::start(&s.http, 300, b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc", b"x");
    for round in 0..3 {
        let (status, took) = http_call(&s.http, "GET", "/healthz", b"").unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(status, 200, "round {round}");
        assert!(took < ANSWER_WITHIN, "round {round}: healthz answered after {took:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(attack);
    assert!(s.alive());
}

/// A request that declares 1,000 bytes and sends 131 gets 408 once its
/// body deadline (timeout_s = 3) passes, not silence; one that declares
/// more than max_body_bytes gets 413 before sending any of it.
#[test]
fn http_short_and_oversize_bodies_are_answered() {
    let s = Server::start("http-body", "max_body_bytes = 100000\ninflight_body_bytes = 1000000");
    let t = Instant::now();
    let mut c = TcpStream::connect(&s.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.write_all(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n").unwrap();
    c.write_all(&[b'a'; 131]).unwrap();
    let mut reply = String::new();
    BufReader::new(&c).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(t.elapsed() >= Duration::from_secs(3) && t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());

    let t = Instant::now();
    let mut c = TcpStream::connect(&s.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply:?}");
    assert!(reply.contains("\"status\":413"), "the JSON error shape: {reply:?}");
    assert!(t.elapsed() < ANSWER_WITHIN);
}

/// Sends `n` requests of `size` declared bytes, each all but its last
/// byte, on `n` connections at once (threads); returns the connections.
fn hold_bodies(addr: &str, n: usize, head: impl Fn(usize) -> String, size: usize) -> Vec<TcpStream> {
    let chunk = vec![b'x'; 1 << 20];
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (addr, head, chunk) = (addr.to_string(), head(size), chunk.clone());
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(&addr).ok()?;
                c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                c.write_all(head.as_bytes()).ok()?;
                let mut left = size - 1;
                while left > 0 {
                    let k = left.min(chunk.len());
                    // A connection the server closed to make room fails here.
                    c.write_all(&chunk[..k]).ok()?;
                    left -= k;
                }
                Some(c)
            })
        })
        .collect();
    threads.into_iter().filter_map(|t| t.join().unwrap()).collect()
}

/// 60 HTTP connections each send 19 MB of a 19 MB body but its last byte
/// (1.1 GB in all): the server's memory stays near its 256 MB budget, and
/// a check is answered at once afterwards.
#[test]
fn http_bodies_held_back_stay_within_the_budget() {
    let mut s = Server::start("http-memory", "");
    let size = 19 << 20;
    let held = hold_bodies(&s.http, 60, |n| format!("POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n"), size);
    let peak = s.peak_mb();
    assert!(peak < 500, "peak memory {peak} MB with 60 bodies of 19 MB held back (budget 256 MB)");
    let (status, took) = http_call(&s.http, "POST", "/v1/check", HAM.as_bytes()).unwrap();
    assert_eq!(status, 200);
    assert!(took < ANSWER_WITHIN, "check answered after {took:?}");
    drop(held);
    assert!(s.alive());
}

/// The same against SPAMD: 60 connections hold most of a 19 MB body; a
/// small CHECK is answered at once.
#[test]
fn spamd_bodies_held_back_do_not_block_a_check() {
    let mut s = Server::start("spamd-memory", "");
    let size = 19 << 20;
    let held = hold_bodies(&s.spamd, 60, |n| format!("CHECK SPAMC/1.5\r\nContent-length: {n}\r\n\r\n"), size);
    let peak = s.peak_mb();
    assert!(peak < 500, "peak memory {peak} MB with 60 bodies of 19 MB held back");
    let (line, took) = spamd_check(&s.spamd).unwrap();
    assert!(line.starts_with("SPAMD/") && line.ends_with(" 0 EX_OK"), "{line:?}");
    assert!(took < ANSWER_WITHIN, "CHECK answered after {took:?}");
    drop(held);
    assert!(s.alive());
}
