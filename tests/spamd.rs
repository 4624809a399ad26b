//! The SPAMD listener and `hamlet client` against the real `spamc` (Debian's
//! `spamc` package; `scripts/test.sh` installs it): every spamc mode, byte
//! exactness of the rewrite, TELL, malformed requests, the UNIX socket, and
//! the safe fallback with the service stopped or silent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");

fn spamc_path() -> &'static str {
    for p in ["/usr/bin/spamc", "/usr/local/bin/spamc"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("spamc is not installed: run scripts/test.sh, or `apt-get install -y spamc`");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hamlet-spamd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Made-up training mail: spam about pills and prizes, ham about the
/// allotment society. Enough for clear verdicts, nothing from any corpus.
fn synthetic(spam: bool, i: usize) -> String {
    let (from, subject, body) = if spam {
        (
            format!("deals{i}@promo-{i}.example.com"),
            format!("CHEAP pills and a FREE prize {i}"),
            "Buy cheap pills now!!! Limited offer, click here to claim your free prize money. Viagra, casino, \
             lottery winner, no prescription, act now, unsubscribe here.",
        )
    } else {
        (
            format!("member{i}@allotments.example.org"),
            format!("Allotment society minutes {i}"),
            "Hello all, the minutes of Tuesday's committee meeting are below. The compost bins arrive on \
             Saturday; please bring gloves. Water rota and seed swap details follow. Regards, Margaret",
        )
    };
    format!("From: <{from}>\nTo: <garden@example.net>\nSubject: {subject}\nMessage-ID: <{i}.{spam}@example>\n\n{body}\n")
}

const SPAM: &str = "From: <winner@prizes.example.com>\nTo: <garden@example.net>\nSubject: FREE prize, cheap pills\n\n\
    Claim your free prize money now! Cheap pills, casino, lottery winner. Click here, act now.\n";
const HAM_CRLF: &str = "From: <member99@allotments.example.org>\r\nTo: <garden@example.net>\r\nSubject: committee minutes\r\n\r\n\
    Hello all, the compost bins arrive on Saturday. Water rota and seed swap below. Regards, Margaret\r\n";

/// A running `hamlet serve` with a SPAMD listener, on a trained database.
struct Server {
    child: Child,
    http: String,
    spamd_port: u16,
    socket: Option<PathBuf>,
    _dir: PathBuf,
}

impl Server {
    fn start(name: &str, extra: &[&str], unix: bool) -> Server {
        let dir = tempdir(name);
        let db = dir.join("h.redb");
        let train = dir.join("train");
        for (class, spam) in [("spam", true), ("ham", false)] {
            let d = train.join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..30 {
                std::fs::write(d.join(format!("{i}.eml")), synthetic(spam, i)).unwrap();
            }
        }
        let run = |args: &[&str]| {
            let out = Command::new(BIN).arg("--db").arg(&db).args(args).output().unwrap();
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["db", "init", "--empty"]);
        run(&["train", "--spam", train.join("spam").to_str().unwrap()]);
        run(&["train", "--ham", train.join("ham").to_str().unwrap()]);
        let http = format!("127.0.0.1:{}", free_port());
        let spamd_port = free_port();
        let socket = unix.then(|| dir.join("spamd.sock"));
        let spamd = match &socket {
            Some(p) => p.to_str().unwrap().to_string(),
            None => format!("127.0.0.1:{spamd_port}"),
        };
        let mut child = Command::new(BIN)
            .arg("--db")
            .arg(&db)
            .args(["serve", "--http", &http, "--spamd", &spamd])
            .args(extra)
            .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let log = || std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
        // Up to 30 s: once, on a 2-core machine busy with builds, the
        // listeners were not up within 10 s (and, with its stderr
        // discarded, nothing said why; its log now goes into the panic).
        for _ in 0..600 {
            let up = match &socket {
                Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
                None => TcpStream::connect(("127.0.0.1", spamd_port)).is_ok(),
            };
            if up && TcpStream::connect(&http).is_ok() {
                return Server { child, http, spamd_port, socket, _dir: dir };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("hamlet serve exited before it listened ({status}): {}", log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("hamlet serve never listened on {spamd} and {http} in 30 s; its log: {}", log());
    }

    fn port(&self) -> String {
        self.spamd_port.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command with `input` on stdin.
fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(cmd).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn spamc(args: &[&str], input: &[u8]) -> Output {
    pipe(spamc_path(), args, input)
}

fn client(args: &[&str], input: &[u8]) -> Output {
    let mut all = vec!["client"];
    all.extend_from_slice(args);
    pipe(BIN, &all, input)
}

/// `hamlet client` learning over HTTP with the token `hamlet serve` made
/// beside its database.
fn client_learning(s: &Server, args: &[&str], input: &[u8]) -> Output {
    let token = std::fs::read_to_string(s._dir.join("h.learn-token")).expect("serve makes a learn token beside its database");
    let mut all = vec!["client"];
    all.extend_from_slice(args);
    let mut child = Command::new(BIN)
        .args(&all)
        .env("HAMLET_LEARN_TOKEN", token.trim())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The message with the lines hamlet adds taken out again: must be the
/// original, byte for byte.
fn strip_added(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in msg.split_inclusive(|&b| b == b'\n') {
        let added = line.starts_with(b"X-Spam-") || line.starts_with(b"X-Hamlet-");
        if added || (skipping && line.starts_with(b"\t")) {
            skipping = true;
            continue;
        }
        skipping = false;
        out.extend_from_slice(line);
    }
    out
}

/// `12.3/5.0` → 12.3
fn score_of(line: &str) -> f64 {
    line.trim().split('/').next().unwrap().parse().unwrap()
}

#[test]
fn real_spamc_every_mode() {
    let s = Server::start("modes", &["--spamd-allow-tell"], false);
    let p = s.port();
    let p = p.as_str();

    let ping = spamc(&["-p", p, "-K"], b"");
    assert!(ping.status.success(), "spamc -K: {ping:?}");

    let c = spamc(&["-p", p, "-c"], SPAM.as_bytes());
    assert_eq!(c.status.code(), Some(1), "spam: exit 1");
    assert!(score_of(&text(&c)) >= 5.0, "{}", text(&c));
    let c = spamc(&["-p", p, "-c"], HAM_CRLF.as_bytes());
    assert_eq!(c.status.code(), Some(0), "ham: exit 0");
    assert!(score_of(&text(&c)) < 5.0 && text(&c).ends_with("/5.0\n"), "{}", text(&c));

    // PROCESS: headers added, no other byte changed, line endings kept.
    let out = spamc(&["-p", p], SPAM.as_bytes());
    assert!(out.status.success());
    assert!(text(&out).contains("\nX-Spam-Flag: YES\n"), "{}", text(&out));
    assert!(text(&out).contains("\nX-Spam-Status: Yes, score="));
    assert_eq!(strip_added(&out.stdout), SPAM.as_bytes());
    let out = spamc(&["-p", p], HAM_CRLF.as_bytes());
    assert!(text(&out).contains("\r\nX-Spam-Flag: NO\r\nX-Spam-Score: "), "CRLF kept: {:?}", text(&out));
    assert_eq!(strip_added(&out.stdout), HAM_CRLF.as_bytes());
    assert_eq!(spamc(&["-p", p, "-E"], SPAM.as_bytes()).status.code(), Some(1), "-E: exit 1 on spam");
    let headers = spamc(&["-p", p, "--headers"], SPAM.as_bytes());
    assert_eq!(headers.stdout, out_of(&spamc(&["-p", p], SPAM.as_bytes())), "--headers gives the same message");

    let y = text(&spamc(&["-p", p, "-y"], SPAM.as_bytes()));
    assert!(y.starts_with("HAMLET_SPAM,BAYES_"), "{y}");
    assert!(!y.contains(' '), "{y}");
    let r = text(&spamc(&["-p", p, "-R"], SPAM.as_bytes()));
    assert!(r.lines().next().unwrap().ends_with("/5.0") && r.contains("Strongest clues"), "{r}");
    let r = text(&spamc(&["-p", p, "-r"], HAM_CRLF.as_bytes()));
    assert!(!r.contains("Strongest clues"), "-r: no report for ham: {r}");

    // TELL: learn, already learned, forget.
    let ham2 = "From: <x@allotments.example.org>\nSubject: seed swap\n\nThe seed swap is on Saturday.\n";
    let l = spamc(&["-p", p, "-L", "spam"], ham2.as_bytes());
    assert_eq!((l.status.code(), text(&l).as_str()), (Some(0), "Message successfully un/learned\n"));
    let l = spamc(&["-p", p, "-L", "spam"], ham2.as_bytes());
    assert_eq!(text(&l), "Message was already un/learned\n");
    let l = spamc(&["-p", p, "-L", "forget"], ham2.as_bytes());
    assert_eq!(text(&l), "Message successfully un/learned\n");
    let l = spamc(&["-p", p, "-L", "forget"], ham2.as_bytes());
    assert_eq!(text(&l), "Message was already un/learned\n");

    // The HTTP API saw the same engine.
    let stats = http_get(&s.http, "/v1/stats");
    assert!(stats.contains("\"spam\":30"), "{stats}");
}

fn out_of(o: &Output) -> Vec<u8> {
    o.stdout.clone()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn hamlet_client_matches_spamc() {
    let s = Server::start("client", &["--spamd-allow-tell"], false);
    let p = s.port();
    let p = p.as_str();
    for msg in [SPAM, HAM_CRLF] {
        for flags in [&[][..], &["-c"], &["-y"], &["-R"], &["-r"], &["-E"], &["--headers"]] {
            let mut args = vec!["-p", p];
            args.extend_from_slice(flags);
            let a = spamc(&args, msg.as_bytes());
            let b = client(&args, msg.as_bytes());
            assert_eq!(a.stdout, b.stdout, "{flags:?}: output differs from spamc's");
            assert_eq!(a.status.code(), b.status.code(), "{flags:?}: exit status differs from spamc's");
        }
    }
    let k = client(&["-p", p, "-K"], b"");
    assert!(k.status.success());
    // Learning, and zlib on the wire (Debian's spamc is built without it).
    let m = "From: <y@allotments.example.org>\nSubject: rota\n\nThe water rota for June.\n";
    assert_eq!(text(&client(&["-p", p, "-z", "-L", "ham"], m.as_bytes())), "Message successfully un/learned\n");
    assert_eq!(text(&client(&["-p", p, "-L", "ham"], m.as_bytes())), "Message was already un/learned\n");
    let z = client(&["-p", p, "-z", "-c"], SPAM.as_bytes());
    assert_eq!((z.status.code(), z.stdout), (Some(1), spamc(&["-p", p, "-c"], SPAM.as_bytes()).stdout));
    // Target from the environment.
    let mut child = Command::new(BIN)
        .args(["client", "-c"])
        .env("HAMLET_SPAMD", format!("127.0.0.1:{p}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(SPAM.as_bytes()).unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(1));
}

#[test]
fn hamlet_client_over_http() {
    let s = Server::start("http", &[], false);
    let c = client(&["--http", &s.http, "-c"], SPAM.as_bytes());
    assert_eq!(c.status.code(), Some(1), "{}", String::from_utf8_lossy(&c.stderr));
    assert_eq!(c.stdout, spamc(&["-p", &s.port(), "-c"], SPAM.as_bytes()).stdout, "same score both ways");
    let out = client(&["--http", &s.http], HAM_CRLF.as_bytes());
    assert!(text(&out).contains("\r\nX-Spam-Flag: NO\r\n"));
    assert_eq!(strip_added(&out.stdout), HAM_CRLF.as_bytes());
    let m = "From: <z@allotments.example.org>\nSubject: gloves\n\nBring gloves.\n";
    assert_eq!(text(&client_learning(&s, &["--http", &s.http, "-L", "ham"], m.as_bytes())), "Message successfully un/learned\n");
    assert_eq!(text(&client_learning(&s, &["--http", &s.http, "-L", "ham"], m.as_bytes())), "Message was already un/learned\n");
    assert!(client(&["--http", &s.http, "-K"], b"").status.success());
}

#[test]
fn unix_socket() {
    let s = Server::start("unix", &[], true);
    let sock = s.socket.as_ref().unwrap().to_str().unwrap();
    let a = spamc(&["-U", sock, "-c"], SPAM.as_bytes());
    assert_eq!(a.status.code(), Some(1));
    let b = client(&["-U", sock, "-c"], SPAM.as_bytes());
    assert_eq!(a.stdout, b.stdout);
}

/// A big message, for pass-through checks: every byte value, no line
/// structure to lean on.
fn awkward_message() -> Vec<u8> {
    let mut m = b"Subject: odd\r\nX-Bin: \x01\x02\xff\n\n".to_vec();
    for i in 0..200_000u32 {
        m.push((i.wrapping_mul(2654435761) >> 24) as u8);
    }
    m
}

#[test]
fn safe_fallback_is_byte_identical() {
    let port = free_port().to_string(); // nothing listens here
    let msg = awkward_message();
    for run in [spamc as fn(&[&str], &[u8]) -> Output, client] {
        let out = run(&["-p", &port, "-s", "1000000"], &msg);
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout == msg, "service down: the message comes back unchanged");
        let out = run(&["-p", &port, "-c"], SPAM.as_bytes());
        assert_eq!((out.status.code(), text(&out).as_str()), (Some(0), "0/0\n"));
    }
    let x = client(&["-p", &port, "-x"], SPAM.as_bytes());
    assert_eq!(x.status.code(), Some(69), "-x: EX_UNAVAILABLE");
    assert!(x.stdout.is_empty(), "-x writes no message");
    assert_eq!(client(&["-p", &port, "-x", "-X"], SPAM.as_bytes()).status.code(), Some(75), "-X: EX_TEMPFAIL");

    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = silent.local_addr().unwrap().port().to_string();
    let keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().take(3) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(4));
    });
    let out = spamc(&["-p", &sport, "-t", "1", "-s", "1000000"], &msg);
    assert!(out.stdout == msg, "spamc: silent server, message unchanged");
    let out = client(&["-p", &sport, "-t", "1", "-s", "1000000"], &msg);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == msg, "hamlet client: silent server, message unchanged");
    let out = client(&["-p", &sport, "-t", "1", "-x"], &msg);
    assert_eq!(out.status.code(), Some(75), "silent server with -x: EX_TEMPFAIL");
    drop(keep);

    // A config that cannot be read, and broken replies: still the message.
    let out = client(&["--config", "/nonexistent/hamlet.toml"], &msg);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == msg, "unreadable config: message unchanged");
    for bad in [
        &b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9.0 / 5.0\r\n\r\n"[..],
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 20\r\nSpam: True ; 9.0 / 5.0\r\n\r\nX-Spam-Flag: YES\n\nxx",
        b"SPAMD/1.1 0 EX_OK\r\nContent-length: 999999\r\nSpam: True ; 9.0 / 5.0\r\n\r\ntruncated",
        b"HTTP/1.1 500 Oops\r\n\r\n",
    ] {
        let fake = TcpListener::bind("127.0.0.1:0").unwrap();
        let fport = fake.local_addr().unwrap().port().to_string();
        let reply = bad.to_vec();
        let t = std::thread::spawn(move || {
            let (mut c, _) = fake.accept().unwrap();
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink);
            let _ = c.write_all(&reply);
        });
        let out = client(&["-p", &fport], SPAM.as_bytes());
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(text(&out), SPAM, "broken reply {:?}: message unchanged", String::from_utf8_lossy(bad));
        t.join().unwrap();
    }

    // Over -s: passed through without asking the (running) service.
    let s = Server::start("size", &[], false);
    let out = client(&["-p", &s.port(), "-s", "1000"], &msg);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == msg);
    let out = client(&["-p", &s.port(), "-s", "1000", "-c"], &msg);
    assert_eq!(text(&out), "0/0\n");
    for run in [spamc as fn(&[&str], &[u8]) -> Output, client] {
        let out = run(&["-p", &s.port(), "-s", "1000", "-x"], &msg);
        assert_eq!(out.status.code(), Some(0), "over -s is policy, not failure: passed through even with -x");
        assert!(out.stdout == msg);
    }
}

/// Sends raw bytes, half-closes, returns the whole reply.
fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_requests_get_status_lines_and_the_server_carries_on() {
    let s = Server::start("malformed", &[], false);
    let p = s.spamd_port;
    let check = format!("CHECK SPAMC/1.5\r\nContent-length: {}\r\n\r\n{SPAM}", SPAM.len());
    assert!(raw_exchange(p, check.as_bytes()).starts_with("SPAMD/1.1 0 EX_OK\r\nSpam: True ; "));
    let cases: [(&[u8], &str); 9] = [
        (b"FROB SPAMC/1.5\r\n\r\n", "SPAMD/1.1 76 "),
        (b"CHECK SPAMC/1.5\r\nContent-length: ten\r\n\r\nxx", "SPAMD/1.1 76 "),
        (b"CHECK SPAMC/1.5\r\n\r\nno length", "SPAMD/1.1 76 "),
        (b"CHECK SPAMC/1.5\r\nContent-length: 100\r\n\r\nshort", "SPAMD/1.1 76 "),
        (b"CHECK SPAMC/1.5\r\nContent-length: 999999999\r\n\r\n", "SPAMD/1.1 65 "),
        (b"CHECK SPAMC/1.5\r\nContent-length: 4\r\nCompress: zlib\r\n\r\njunk", "SPAMD/1.1 65 "),
        (b"TELL SPAMC/1.5\r\nMessage-class: spam\r\nSet: local\r\nContent-length: 4\r\n\r\nabcd", "SPAMD/1.1 69 "),
        (b"CHECK SPAMC/1.5\r\nContent-length: 4\r\nUser: ../../etc\r\n\r\nabcd", "SPAMD/1.1 67 "),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "SPAMD/1.1 76 "),
    ];
    for (req, want) in cases {
        let got = raw_exchange(p, req);
        assert!(got.starts_with(want), "{:?}: got {got:?}", String::from_utf8_lossy(req));
        assert_eq!(got.matches('\n').count(), 1, "an error is one status line: {got:?}");
    }
    // A line with no end, longer than any header may be.
    let long = format!("CHECK SPAMC/1.5\r\nX-Long: {}", "a".repeat(5000));
    assert!(raw_exchange(p, long.as_bytes()).starts_with("SPAMD/1.1 76 "));
    // A client that connects and goes away, and one that sends half a head.
    drop(TcpStream::connect(("127.0.0.1", p)).unwrap());
    assert!(raw_exchange(p, b"CHECK SPAMC/1.5\r\nContent-le").starts_with("SPAMD/1.1 76 "));
    // A compressed body is inflated.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(SPAM.as_bytes()).unwrap();
    let body = z.finish().unwrap();
    let mut req = format!("CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: {}\r\n\r\n", body.len()).into_bytes();
    req.extend_from_slice(&body);
    assert!(raw_exchange(p, &req).starts_with("SPAMD/1.1 0 EX_OK\r\nSpam: True ; "));
    // Still serving, unaffected.
    assert!(raw_exchange(p, check.as_bytes()).starts_with("SPAMD/1.1 0 EX_OK\r\nSpam: True ; "));
    assert_eq!(raw_exchange(p, b"PING SPAMC/1.5\r\n\r\n"), "SPAMD/1.5 0 PONG\r\n");
    let metrics = http_get(&s.http, "/metrics");
    assert!(metrics.contains("spamd CHECK"), "spamd requests are in /metrics");
}

#[test]
fn tell_only_from_allowed_networks() {
    let s = Server::start("tellfrom", &["--spamd-allow-tell", "--config", "/dev/null"], false);
    let l = spamc(&["-p", &s.port(), "-L", "spam"], SPAM.as_bytes());
    assert_eq!(text(&l), "Message successfully un/learned\n", "loopback is allowed by default");
    drop(s);
    let dir = tempdir("tellcfg");
    let cfg = dir.join("hamlet.toml");
    std::fs::write(&cfg, "spamd_allow_tell = true\nspamd_tell_from = [\"192.0.2.0/24\"]\n").unwrap();
    let s = Server::start("tellfrom2", &["--config", cfg.to_str().unwrap()], false);
    let req = format!("TELL SPAMC/1.5\r\nMessage-class: spam\r\nSet: local\r\nContent-length: {}\r\n\r\n{SPAM}", SPAM.len());
    assert!(raw_exchange(s.spamd_port, req.as_bytes()).starts_with("SPAMD/1.1 77 "), "not from 192.0.2.0/24: EX_NOPERM");
    assert_ne!(spamc(&["-p", &s.port(), "-L", "spam"], SPAM.as_bytes()).status.code(), Some(0));
}

#[test]
fn per_user_models() {
    let dir = tempdir("userscfg");
    let cfg = dir.join("hamlet.toml");
    let users = dir.join("users");
    std::fs::write(&cfg, format!("spamd_allow_tell = true\nusers_dir = {:?}\n", users.to_str().unwrap())).unwrap();
    let s = Server::start("users", &["--config", cfg.to_str().unwrap()], false);
    let p = s.port();
    // A newsletter the shared model has no opinion on; alice calls it spam.
    let news = "From: <news@weekly-digest.example.com>\nSubject: Your weekly digest\n\n\
        This week's digest: quarterly roundup, featured listings, digest archive, manage preferences.\n";
    let score = |user: &str| score_of(&text(&spamc(&["-p", &p, "-u", user, "-c"], news.as_bytes())));
    let (alice0, bob0) = (score("alice"), score("bob"));
    assert_eq!(alice0, bob0);
    let l = spamc(&["-p", &p, "-u", "alice", "-L", "spam"], news.as_bytes());
    assert_eq!(text(&l), "Message successfully un/learned\n");
    assert!(users.join("alice.redb").exists());
    let (alice1, bob1) = (score("alice"), score("bob"));
    assert!(alice1 > alice0, "alice's correction moves her score: {alice0} -> {alice1}");
    assert_eq!(bob1, bob0, "bob's score is untouched");
    assert_eq!(score("root"), bob0, "root (spamc's default user) is the shared model");
    // The same over HTTP, and learning is per user there too.
    let c = client(&["--http", &s.http, "-u", "alice", "-c"], news.as_bytes());
    assert_eq!(score_of(&text(&c)), alice1);
    assert_eq!(text(&client_learning(&s, &["--http", &s.http, "-u", "alice", "-L", "spam"], news.as_bytes())), "Message was already un/learned\n");
    assert_eq!(text(&client_learning(&s, &["--http", &s.http, "-u", "bob", "-L", "spam"], news.as_bytes())), "Message successfully un/learned\n");
    let stats = http_get(&s.http, "/v1/stats");
    assert!(stats.contains("\"spam\":30"), "the shared model learned nothing: {stats}");
}

/// Past `users_max` per-user models, TELL for a new user is refused with
/// 73 EX_CANTCREAT (and counted in /metrics); a user with a model still
/// learns.
#[test]
fn per_user_models_are_capped() {
    let dir = tempdir("userscapcfg");
    let cfg = dir.join("hamlet.toml");
    let users = dir.join("users");
    std::fs::write(&cfg, format!("spamd_allow_tell = true\nusers_dir = {:?}\nusers_max = 1\n", users.to_str().unwrap())).unwrap();
    let s = Server::start("userscap", &["--config", cfg.to_str().unwrap()], false);
    let p = s.port();
    let msg = synthetic(true, 3);
    let l = spamc(&["-p", &p, "-u", "alice", "-L", "spam"], msg.as_bytes());
    assert_eq!(text(&l), "Message successfully un/learned\n");
    let tell = format!("TELL SPAMC/1.5\r\nUser: bob\r\nMessage-class: spam\r\nSet: local\r\nContent-length: {}\r\n\r\n{msg}", msg.len());
    let reply = raw_exchange(p.parse().unwrap(), tell.as_bytes());
    assert!(reply.starts_with("SPAMD/") && reply.contains(" 73 EX_CANTCREAT ") && reply.contains("users_max"), "{reply}");
    assert!(!users.join("bob.redb").exists());
    let l = spamc(&["-p", &p, "-u", "alice", "-L", "ham"], msg.as_bytes());
    assert_eq!(text(&l), "Message successfully un/learned\n", "alice has a model and keeps learning");
    let metrics = http_get(&s.http, "/metrics");
    assert!(metrics.contains("hamlet_users_refused_total 1"), "{metrics}");
}
