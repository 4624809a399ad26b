//! The Redis store end to end, against a real `redis-server` (Debian's
//! `redis-server`; the test fails, saying so, without it) started on a free
//! loopback port per test: the same model as redb message for message,
//! dumps that move a model redb -> Redis -> redb, two `hamlet serve` hosts
//! on one Redis, concurrent learns, and Redis restarting under a host.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");
const TOKEN: &str = "t0ken";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A unique temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!("hamlet-redis-{}-{}-{name}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed when the test ends, also on failure.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server of its own on `port` (no persistence), ready.
fn redis_server(port: u16) -> Proc {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): apt-get install -y redis-server (scripts/test.sh does)"));
    let p = Proc(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "redis-server never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

fn hamlet(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN).arg("--db").arg(db).args(args).env_remove("HAMLET_DB").env_remove("HAMLET_CONFIG").output().unwrap();
    assert!(out.status.success(), "hamlet --db {db} {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A message of `words` pseudo-random words, distinct per `i`.
fn message(i: u64, words: usize, spammy: bool) -> String {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut body = String::from(if spammy { "cheap pills offer winner " } else { "meeting minutes agenda project " });
    for _ in 0..words {
        for _ in 0..6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.push((b'a' + (x % 26) as u8) as char);
        }
        body.push(' ');
    }
    format!("From: s{i}@example.net\r\nTo: u@example.org\r\nSubject: note {i}\r\nMessage-ID: <{i}.redis@example.net>\r\n\r\n{body}\r\n")
}

fn write_messages(dir: &Path, range: std::ops::Range<u64>, spammy: bool) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    range
        .map(|i| {
            let p = dir.join(format!("{i}.eml"));
            std::fs::write(&p, message(i, 40, spammy)).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect()
}

fn sorted(s: String) -> Vec<String> {
    let mut l: Vec<String> = s.lines().map(String::from).collect();
    l.sort();
    l
}

/// `db init`, then train `spam` and `ham` into `db`.
fn init_and_train(db: &str, spam: &[String], ham: &[String]) {
    hamlet(db, &["db", "init"]);
    let mut a = vec!["train", "--spam"];
    a.extend(spam.iter().map(String::as_str));
    hamlet(db, &a);
    let mut a = vec!["train", "--ham"];
    a.extend(ham.iter().map(String::as_str));
    hamlet(db, &a);
}

/// Trained with the same messages, Redis and redb hold the same model
/// (dumps equal) and print the same scores; a dump moves the model
/// redb -> Redis -> redb unchanged.
#[test]
fn redis_and_redb_hold_the_same_model() {
    let port = free_port();
    let _redis = redis_server(port);
    let url = format!("redis://127.0.0.1:{port}/0");
    let dir = TempDir::new("same");
    let redb = dir.join("m.redb").to_string_lossy().into_owned();
    let spam = write_messages(&dir.join("spam"), 0..150, true);
    let ham = write_messages(&dir.join("ham"), 1000..1150, false);
    let probe = write_messages(&dir.join("probe"), 5000..5060, true);
    for db in [&redb, &url] {
        init_and_train(db, &spam, &ham);
    }
    let dump_redb = hamlet(&redb, &["db", "dump", "--journal"]);
    assert_eq!(sorted(hamlet(&url, &["db", "dump", "--journal"])), sorted(dump_redb.clone()), "the same model");
    let mut a = vec!["check"];
    a.extend(probe.iter().map(String::as_str));
    assert_eq!(hamlet(&url, &a), hamlet(&redb, &a), "the same scores");
    // Learning the same messages again changes nothing on either.
    let mut a = vec!["train", "--spam"];
    a.extend(spam.iter().take(20).map(String::as_str));
    assert!(hamlet(&url, &a).contains("20 already learned"));
    // redb -> Redis (another database number) -> redb.
    let url2 = format!("redis://127.0.0.1:{port}/1");
    let dump_file = dir.join("m.dump");
    std::fs::write(&dump_file, &dump_redb).unwrap();
    hamlet(&url2, &["db", "init", "--empty"]);
    hamlet(&url2, &["db", "load", dump_file.to_str().unwrap()]);
    let back = dir.join("back.redb").to_string_lossy().into_owned();
    std::fs::write(&dump_file, hamlet(&url2, &["db", "dump", "--journal"])).unwrap();
    hamlet(&back, &["db", "init", "--empty"]);
    hamlet(&back, &["db", "load", dump_file.to_str().unwrap()]);
    assert_eq!(sorted(hamlet(&back, &["db", "dump", "--journal"])), sorted(dump_redb), "redb -> Redis -> redb");
    let stats = hamlet(&url, &["db", "stats"]);
    assert!(stats.contains("per token"), "{stats}");
}

struct Host {
    _p: Proc,
    addr: String,
}

/// `hamlet <args>` in the background, quiet, with no configuration from
/// the environment.
fn spawn(args: &[&str]) -> Proc {
    Proc(
        Command::new(BIN).args(args).env_remove("HAMLET_DB").env_remove("HAMLET_CONFIG").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap(),
    )
}

fn serve(db: &str, extra: &[&str]) -> Host {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--db", db, "serve", "--http", &addr, "--learn-token", TOKEN];
    args.extend_from_slice(extra);
    let mut p = spawn(&args);
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        if let Some(st) = p.0.try_wait().unwrap() {
            panic!("hamlet serve exited with {st}");
        }
        assert!(start.elapsed() < Duration::from_secs(15), "hamlet serve never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    Host { _p: p, addr }
}

/// One HTTP/1.1 request with the learn token: (status, body).
fn http(addr: &str, path: &str, body: &str, headers: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line: {out:?}"));
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn probability(addr: &str, msg: &str, headers: &str) -> f64 {
    let (status, body) = http(addr, "/v1/check", msg, headers);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["probability"].as_f64().unwrap()
}

fn spam_messages(db: &str) -> u64 {
    let stats = hamlet(db, &["db", "stats"]);
    let line = stats.lines().find(|l| l.starts_with("spam")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Two hosts, one model: a learn through A is in B's next check; 1,000
/// concurrent learns through each host add exactly 2,000 messages; the
/// same message learned through both at once counts once; per-user
/// models are seen from both.
#[test]
fn two_hosts_share_one_model() {
    let port = free_port();
    let _redis = redis_server(port);
    let url = format!("redis://127.0.0.1:{port}");
    hamlet(&url, &["db", "init"]);
    let users = TempDir::new("users");
    let cfg = users.join("hamlet.toml");
    std::fs::write(&cfg, format!("users_dir = {:?}\n", users.0.to_str().unwrap())).unwrap();
    let a = serve(&url, &["--config", cfg.to_str().unwrap()]);
    let b = serve(&url, &["--config", cfg.to_str().unwrap()]);
    let m = message(77, 40, true);
    let before = probability(&b.addr, &m, "");
    for i in 0..5 {
        assert_eq!(http(&a.addr, "/v1/learn/spam", &message(77 + i * 1000, 40, true), "").0, 200);
    }
    let after = probability(&b.addr, &m, "");
    assert!(after > before, "B sees A's learns: {before} -> {after}");

    let start = spam_messages(&url);
    let threads: Vec<_> = [a.addr.clone(), b.addr.clone()]
        .into_iter()
        .enumerate()
        .flat_map(|(h, addr)| {
            (0..4).map(move |t| {
                let addr = addr.clone();
                std::thread::spawn(move || {
                    for i in 0..250u64 {
                        let n = 100_000 + (h as u64) * 10_000 + t * 1_000 + i;
                        let (status, body) = http(&addr, "/v1/learn/spam", &message(n, 20, true), "");
                        assert_eq!(status, 200, "{body}");
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(spam_messages(&url), start + 2_000, "no learn lost");

    // The same message through both hosts at once: learned once.
    let same = message(424_242, 30, true);
    let (s1, s2) = (same.clone(), same.clone());
    let (aa, ba) = (a.addr.clone(), b.addr.clone());
    let t1 = std::thread::spawn(move || http(&aa, "/v1/learn/spam", &s1, "").0);
    let t2 = std::thread::spawn(move || http(&ba, "/v1/learn/spam", &s2, "").0);
    let codes = [t1.join().unwrap(), t2.join().unwrap()];
    assert!(codes.contains(&200) && codes.iter().all(|c| [200, 208].contains(c)), "{codes:?}");
    assert_eq!(spam_messages(&url), start + 2_001, "learned once");

    // A user's model, learned through A, used by B.
    let user = "X-Hamlet-User: alice@example.org\r\n";
    let mine = message(9_999, 40, false);
    let shared_only = probability(&b.addr, &mine, user);
    for i in 1..4 {
        let (status, body) = http(&a.addr, "/v1/learn/spam", &message(9_999 + i, 40, false), user);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(http(&a.addr, "/v1/learn/spam", &mine, user).0, 200);
    assert!(probability(&b.addr, &mine, user) > shared_only, "B uses alice's model learned through A");
}

/// Redis stops under a host and comes back: the host neither crashes nor
/// hangs, answers within its budget, and learns again without a restart.
#[test]
fn a_host_outlives_a_redis_restart() {
    let port = free_port();
    let redis = redis_server(port);
    let url = format!("redis://127.0.0.1:{port}");
    hamlet(&url, &["db", "init"]);
    let a = serve(&url, &[]);
    assert_eq!(http(&a.addr, "/v1/learn/spam", &message(1, 30, true), "").0, 200);
    // Redis hung (stopped, its socket still open): the check answers within
    // the reply timeout, unsure, flagged; nothing waits for Redis forever.
    let pid = redis.0.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let t = Instant::now();
    let (status, body) = http(&a.addr, "/v1/check", &message(3, 30, true), "");
    let took = t.elapsed();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert_eq!(status, 200, "a check with Redis hung still answers: {body}");
    assert!(body.contains("\"verdict\":\"unsure\"") && body.contains("\"store_error\":true"), "no opinion, flagged: {body}");
    assert!(took < Duration::from_secs(6), "within the reply timeout (2 s, one retry): {took:?}");
    // Redis gone: a learn is refused as temporary (503), a check still
    // answers at once, and the rspamd-style reply names STORE_ERROR.
    drop(redis);
    let t = Instant::now();
    let (status, body) = http(&a.addr, "/v1/learn/spam", &message(2, 30, true), "");
    assert_eq!(status, 503, "a learn with Redis down: try later: {body}");
    let (status, body) = http(&a.addr, "/v1/check", &message(3, 30, true), "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"store_error\":true"), "{body}");
    let (status, body) = http(&a.addr, "/checkv2", &message(3, 30, true), "");
    assert!(status == 200 && body.contains("STORE_ERROR"), "{status} {body}");
    assert!(t.elapsed() < Duration::from_secs(3), "Redis refusing connections costs no wait: {:?}", t.elapsed());
    let _redis = redis_server(port);
    let (status, body) = http(&a.addr, "/v1/learn/spam", &message(4, 30, true), "");
    assert_eq!(status, 200, "learning again once Redis is back: {body}");
    assert_eq!(http(&a.addr, "/v1/check", &message(4, 30, true), "").0, 200);
}

/// A real 3-master Redis Cluster (`redis-cli --cluster create`): the same
/// model as on redb after the same training, per-user models spread over
/// the masters by their hash tags.
#[test]
fn a_redis_cluster_holds_the_same_model() {
    let dir = TempDir::new("cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _nodes: Vec<Proc> = ports
        .iter()
        .map(|p| {
            let d = dir.join(&p.to_string());
            std::fs::create_dir_all(&d).unwrap();
            let child = Command::new("redis-server")
                .current_dir(&d)
                .args(["--port", &p.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): apt-get install -y redis-server"));
            let start = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
                assert!(start.elapsed() < Duration::from_secs(10), "redis-server never listened on {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
            Proc(child)
        })
        .collect();
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): apt-get install -y redis-tools"));
    assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
    // Wait until every node agrees the cluster is up.
    let start = Instant::now();
    while !ports.iter().all(|p| {
        let o = Command::new("redis-cli").args(["-p", &p.to_string(), "cluster", "info"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok")
    }) {
        assert!(start.elapsed() < Duration::from_secs(20), "the cluster never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("redis+cluster://{}", nodes.join(","));
    let redb = dir.join("m.redb").to_string_lossy().into_owned();
    let spam = write_messages(&dir.join("spam"), 0..60, true);
    let ham = write_messages(&dir.join("ham"), 1000..1060, false);
    for db in [&redb, &url] {
        init_and_train(db, &spam, &ham);
    }
    assert_eq!(sorted(hamlet(&url, &["db", "dump", "--journal"])), sorted(hamlet(&redb, &["db", "dump", "--journal"])));
    let mut a = vec!["check"];
    a.extend(spam.iter().take(5).map(String::as_str));
    assert_eq!(hamlet(&url, &a), hamlet(&redb, &a));
    // Per-user models through a host on the cluster; their keys sit on
    // the slot of their own hash tag.
    let cfg = dir.join("hamlet.toml");
    std::fs::write(&cfg, format!("users_dir = {:?}\n", dir.0.to_str().unwrap())).unwrap();
    let host = serve(&url, &["--config", cfg.to_str().unwrap()]);
    let mut masters = std::collections::BTreeSet::new();
    for u in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let h = format!("X-Hamlet-User: {u}@example.org\r\n");
        assert_eq!(http(&host.addr, "/v1/learn/spam", &message(70_000 + u.len() as u64, 20, true), &h).0, 200);
        let key = format!("hamlet:{{u:{u}@example.org}}:meta");
        for p in &ports {
            let o = Command::new("redis-cli").args(["-p", &p.to_string(), "exists", &key]).output().unwrap();
            if String::from_utf8_lossy(&o.stdout).trim() == "1" {
                masters.insert(*p);
            }
        }
    }
    assert!(masters.len() >= 2, "six users' models all on one master: {masters:?}");
}

/// `hamlet serve --policy` on `db` with greylisting on (delay 1 s): its
/// policy address.
fn serve_policy(db: &str, dir: &Path) -> (Proc, String) {
    let policy = format!("127.0.0.1:{}", free_port());
    let cfg = dir.join(format!("policy-{}.toml", free_port()));
    std::fs::write(
        &cfg,
        format!(
            "http = \"127.0.0.1:{}\"\nlog = \"warn\"\n[envelope]\nmy_names = [\"mx.corp.example\"]\n\
             [envelope.greylist]\nenabled = true\ndelay_s = 1\nauto_whitelist = 0\n",
            free_port()
        ),
    )
    .unwrap();
    let p = spawn(&["--db", db, "serve", "--config", cfg.to_str().unwrap(), "--policy", &policy]);
    let start = Instant::now();
    while std::net::TcpStream::connect(&policy).is_err() {
        assert!(start.elapsed() < Duration::from_secs(15), "the policy service never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, policy)
}

/// One policy request (Postfix's RCPT stage) on a new connection: the action.
fn policy_ask(addr: &str, client: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address={client}\n\
         client_name=mail.sender.example\nreverse_client_name=mail.sender.example\nhelo_name=mail.sender.example\n\
         sender=frank@sender.example\nrecipient=erin@corp.example\nsasl_username=\n\n"
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().strip_prefix("action=").unwrap_or(&line).to_string()
}

/// Two MX hosts' policy services on one Redis: a triplet first seen (and
/// deferred) at A passes at B after the delay; with Redis gone, both fail
/// open (no greylisting) instead of deferring or refusing mail.
#[test]
fn greylisting_is_shared_between_hosts() {
    let port = free_port();
    let redis = redis_server(port);
    let url = format!("redis://127.0.0.1:{port}");
    let dir = TempDir::new("grey");
    hamlet(&url, &["db", "init"]);
    let (_a, pa) = serve_policy(&url, &dir.0);
    let (_b, pb) = serve_policy(&url, &dir.0);
    assert!(policy_ask(&pa, "198.51.100.23").starts_with("DEFER_IF_PERMIT"), "first attempt, at A");
    assert!(policy_ask(&pb, "198.51.100.23").starts_with("DEFER_IF_PERMIT"), "too early, at B");
    std::thread::sleep(Duration::from_millis(1200));
    let pass = policy_ask(&pb, "198.51.100.23");
    assert!(pass.starts_with("PREPEND X-Greylist: delayed"), "the retry passes at B: {pass}");
    assert_eq!(policy_ask(&pa, "198.51.100.23"), "DUNNO", "and A knows the triplet now");
    // The longest TTL of the records (their keys hold NUL bytes, which
    // redis-cli prints escaped: asked inside Redis).
    let script = "local m = -3 for _, k in ipairs(redis.call('KEYS', 'hamlet:grey:*')) do m = math.max(m, redis.call('TTL', k)) end return m";
    let t = Command::new("redis-cli").args(["-p", &port.to_string(), "eval", script, "0"]).output().unwrap();
    let t: i64 = String::from_utf8_lossy(&t.stdout).trim().parse().unwrap();
    assert!(t > 30 * 86_400, "a passed triplet lives max_age (35 days): ttl {t}");
    drop(redis);
    let t = Instant::now();
    assert_eq!(policy_ask(&pa, "203.0.113.9"), "DUNNO", "Redis gone: fail open, as for DNS");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
