//! Storage faults, end to end with the real binary: a full disk (a file
//! size limit on the process, lowered and raised while it runs), files that
//! are not databases, damaged databases (bit flips from a fixed seed), a
//! read-only filesystem, a closed stdout.
//!
//! The disk is "full" through RLIMIT_FSIZE with SIGXFSZ ignored, so writes
//! past the limit fail with EFBIG as they would with ENOSPC; `prlimit` on
//! the running server raises it again ("space freed"). The read-only test
//! mounts a tmpfs and needs root (or CAP_SYS_ADMIN): it fails, saying so,
//! without it.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");

/// A unique temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!("hamlet-storage-{}-{}-{name}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)));
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

/// Kills a server child when the test ends, also on failure.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hamlet(db: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--db").arg(db).args(args);
    c.env_remove("HAMLET_DB").env_remove("HAMLET_CONFIG");
    c
}

/// What a run did, for assertions and messages.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "`{}` exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.code,
            self.stdout.chars().take(2000).collect::<String>(),
            self.stderr
        )
    }
    /// Never a panic: no exit 101, no panic text.
    fn no_panic(self) -> Run {
        assert_ne!(self.code, Some(101), "panicked\n{}", self.describe());
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"), "panic text\n{}", self.describe());
        self
    }
    /// The error convention: exit 3, one `hamlet: ` line.
    fn error(self) -> Run {
        let r = self.no_panic();
        assert_eq!(r.code, Some(3), "{}", r.describe());
        let lines: Vec<&str> = r.stderr.lines().collect();
        assert!(lines.len() == 1 && lines[0].starts_with("hamlet: "), "one `hamlet: ` line expected\n{}", r.describe());
        r
    }
    fn ok(self) -> Run {
        let r = self.no_panic();
        assert_eq!(r.code, Some(0), "{}", r.describe());
        r
    }
}

fn run_cmd(mut c: Command, stdin: Option<&[u8]>) -> Run {
    let what = format!("{c:?}");
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        let _ = w.write_all(data);
    }
    let out: Output = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what,
    }
}

fn run(db: &Path, args: &[&str]) -> Run {
    run_cmd(hamlet(db, args), None)
}

/// A message made of `words` pseudo-random words (distinct per `i`), so
/// learning it adds that many new tokens.
fn message(i: u64, words: usize) -> String {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut body = String::new();
    for _ in 0..words {
        let mut w = String::new();
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.push((b'a' + (x % 26) as u8) as char);
        }
        body.push_str(&w);
        body.push(' ');
    }
    format!(
        "From: sender{i}@offers.example\r\nTo: someone@example.org\r\nSubject: offer number {i}\r\nMessage-ID: <{i}.storage@offers.example>\r\n\r\n{body}\r\n"
    )
}

/// A starter-model database (about 2 MiB) with a few messages learned on
/// top, so every table (tokens, meta, journal, grams) has content.
fn trained_db(dir: &TempDir) -> PathBuf {
    let db = dir.join("trained.redb");
    run(&db, &["db", "init"]).ok();
    let msgs = dir.join("seed-msgs");
    std::fs::create_dir_all(&msgs).unwrap();
    for i in 0..10 {
        std::fs::write(msgs.join(format!("{i}.eml")), message(1_000 + i, 50)).unwrap();
    }
    run(&db, &["train", "--spam", msgs.to_str().unwrap()]).ok();
    db
}

/// A command whose file size limit is `bytes` (soft; the hard limit stays,
/// so it can be raised again), with SIGXFSZ ignored: a write past the
/// limit fails with EFBIG, as one on a full disk fails with ENOSPC.
fn with_file_limit(mut c: Command, bytes: u64) -> Command {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = bytes.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    c
}

/// Sets the running process `pid`'s soft file size limit.
fn set_file_limit(pid: u32, bytes: u64) {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on valid pointers.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit (read) failed: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: bytes.min(old.rlim_max), rlim_max: old.rlim_max };
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit (set) failed: {}", std::io::Error::last_os_error());
}

fn serve(c: Command, extra: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut c = c;
    c.args(["serve", "--http", &addr, "--learn-token", TOKEN]).args(extra).stdout(Stdio::null()).stderr(Stdio::null());
    let child = c.spawn().unwrap();
    let mut server = Server { child, addr: addr.clone() };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return server;
        }
        if let Some(st) = server.child.try_wait().unwrap() {
            panic!("hamlet serve exited with {st} before listening");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("hamlet serve never listened on {}", server.addr);
}

/// The learn token the tests' servers run with.
const TOKEN: &str = "t0ken";

/// One HTTP/1.1 request, with the learn token: (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line: {out:?}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The one JSON error shape, with its message.
fn error_message(status: u16, body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    assert_eq!(v["error"]["status"], status, "{body}");
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("no message: {body}")).to_string()
}

// ---------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------

/// `hamlet serve` fills its disk while learning: the learn that does not
/// fit fails, /healthz says 503 with the reason while the disk stays full;
/// once space is back (the limit raised on the running process), health
/// comes back without a restart, learning works again, and every learn
/// acknowledged before is in the database.
#[test]
fn serve_recovers_from_a_full_disk_without_a_restart() {
    let dir = TempDir::new("full-serve");
    let db = dir.join("h.redb");
    run(&db, &["db", "init"]).ok();
    let server = serve(with_file_limit(hamlet(&db, &[]), libc::RLIM_INFINITY), &[]);
    let pid = server.child.id();
    // A new database's first write reserves room far beyond its data (a
    // 1.1 MB database with the starter model is 8.4 MB after one learn), so
    // the limit is set from the size after one learn: room for the file to
    // double once more, not twice.
    let first = message(0, 3000);
    let (status, body) = http(&server.addr, "POST", "/v1/learn/spam", &first);
    assert_eq!(status, 200, "the first learn, with no limit: {body}");
    set_file_limit(pid, std::fs::metadata(&db).unwrap().len() * 2 + (1 << 20));
    let mut acknowledged = vec![first];
    let mut failed = None;
    for i in 1..200 {
        let m = message(i, 3000);
        let (status, body) = http(&server.addr, "POST", "/v1/learn/spam", &m);
        if status == 200 {
            acknowledged.push(m);
        } else {
            failed = Some((status, body));
            break;
        }
    }
    let (status, body) = failed.expect("the file size limit never stopped a learn");
    assert_eq!(status, 500, "{body}");
    assert!(!acknowledged.is_empty(), "not one learn fitted before the limit");
    // The disk stays full: the limit at the file's current size.
    set_file_limit(pid, std::fs::metadata(&db).unwrap().len());
    for _ in 0..2 {
        let (status, body) = http(&server.addr, "GET", "/healthz", "");
        assert_eq!(status, 503, "healthz while the disk is full: {body}");
        let msg = error_message(503, &body);
        assert!(msg.contains("database") && msg.contains("File too large"), "the reason: {msg}");
    }
    // Space is back.
    set_file_limit(pid, libc::RLIM_INFINITY);
    let (status, body) = http(&server.addr, "GET", "/healthz", "");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#), "healthz after space came back");
    for i in 500..503 {
        let (status, body) = http(&server.addr, "POST", "/v1/learn/spam", &message(i, 3000));
        assert_eq!(status, 200, "learn after space came back: {body}");
    }
    for m in &acknowledged {
        let (status, body) = http(&server.addr, "POST", "/v1/learn/spam", m);
        assert_eq!(status, 208, "an acknowledged learn is missing: {body}");
    }
    let (status, _) = http(&server.addr, "GET", "/healthz", "");
    assert_eq!(status, 200);
}

/// `hamlet train` that fails on a full disk: a clear error, then `check`
/// scores (it repairs the file the failed writer left, instead of "Database
/// repair aborted"), and the next `train` learns everything.
#[test]
fn check_and_train_work_after_a_train_that_filled_the_disk() {
    let dir = TempDir::new("full-cli");
    let db = dir.join("h.redb");
    run(&db, &["db", "init"]).ok();
    let msgs = dir.join("msgs");
    std::fs::create_dir_all(&msgs).unwrap();
    for i in 0..30 {
        std::fs::write(msgs.join(format!("{i}.eml")), message(i, 3000)).unwrap();
    }
    let size = std::fs::metadata(&db).unwrap().len();
    let failed = run_cmd(with_file_limit(hamlet(&db, &["train", "--spam", msgs.to_str().unwrap()]), size + (1 << 20)), None).error();
    assert!(failed.stderr.contains("File too large"), "{}", failed.describe());
    let one = msgs.join("1.eml");
    let checked = run_cmd(hamlet(&db, &["check"]), Some(message(1, 3000).as_bytes())).no_panic();
    assert!(matches!(checked.code, Some(0..=2)), "check after the failed train\n{}", checked.describe());
    run(&db, &["check", one.to_str().unwrap()]).ok();
    let trained = run(&db, &["train", "--spam", msgs.to_str().unwrap()]).ok();
    assert!(trained.stdout.contains("30 messages"), "{}", trained.describe());
    run(&db, &["db", "stats"]).ok();
}

// ---------------------------------------------------------------------------
// Files that are not databases
// ---------------------------------------------------------------------------

/// A zero-length, foreign, tiny or cut-short file is refused by every
/// command that opens it, with one clear line, and left as it was.
#[test]
fn files_that_are_not_databases_are_refused_and_left_alone() {
    let dir = TempDir::new("not-db");
    let good = dir.join("good.redb");
    run(&good, &["db", "init"]).ok();
    let whole = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.redb", Vec::new(), "zero-length"),
        ("foreign.redb", b"SQLite format 3\0 this is some other program's file".to_vec(), "not a redb file"),
        ("tiny.redb", b"re".to_vec(), "not a redb file"),
        ("short.redb", whole[..2000].to_vec(), "cut short"),
    ];
    let msg = message(7, 20);
    for (name, bytes, what) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        for args in [
            &["check"][..],
            &["train", "--spam", "-"],
            &["db", "stats"],
            &["db", "dump"],
            &["db", "load", "-"],
            &["db", "recover", "/nonexistent/out.redb"],
        ] {
            let mut c = hamlet(&path, args);
            if args[0] == "train" {
                let m = dir.join("m.eml");
                std::fs::write(&m, &msg).unwrap();
                c = hamlet(&path, &["train", "--spam", m.to_str().unwrap()]);
            }
            let r = run_cmd(c, Some(msg.as_bytes())).error();
            assert!(r.stderr.contains("not a hamlet database") && r.stderr.contains(what), "{name}: {}", r.describe());
            assert!(r.stderr.contains("nothing was changed"), "{}", r.describe());
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was changed by {args:?}");
        }
    }
    // Cut short past the header: redb's own words, called damage, with the way out.
    let half = dir.join("half.redb");
    std::fs::write(&half, &whole[..whole.len() / 2]).unwrap();
    let r = run(&half, &["db", "stats"]).error();
    assert!(r.stderr.contains("corrupt") && r.stderr.contains("db recover"), "{}", r.describe());
}

/// `db stats` (and `check`, `db dump`) work on a database on a read-only
/// filesystem.
#[test]
fn db_stats_works_on_a_read_only_filesystem() {
    let dir = TempDir::new("ro");
    let db = trained_db(&dir);
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = |args: &[&str]| Command::new("mount").args(args).status().map(|s| s.success()).unwrap_or(false);
    assert!(
        mount(&["-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt.to_str().unwrap()]),
        "this test mounts a tmpfs to make a read-only filesystem: it needs root (CAP_SYS_ADMIN) and mount(8)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let ro = mnt.join("h.redb");
    std::fs::copy(&db, &ro).unwrap();
    assert!(mount(&["-o", "remount,ro", mnt.to_str().unwrap()]), "remounting the tmpfs read-only failed");
    let stats = run(&ro, &["db", "stats"]).ok();
    assert!(stats.stdout.contains("tokens"), "{}", stats.describe());
    run_cmd(hamlet(&ro, &["check"]), Some(message(1, 20).as_bytes())).no_panic();
    let dump = run(&ro, &["db", "dump"]).ok();
    assert!(dump.stdout.starts_with("# hamlet dump"), "{}", dump.describe());
}

// ---------------------------------------------------------------------------
// Damaged databases
// ---------------------------------------------------------------------------

/// xorshift64*: a fixed, dependency-free stream of flips.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `copy` with `flips` random bits flipped past the first 4 KiB (the header
/// page, whose damage redb reports at open, is covered by the other tests).
fn flipped(src: &[u8], rng: &mut Rng, flips: usize) -> Vec<u8> {
    let mut d = src.to_vec();
    for _ in 0..flips {
        let at = 4096 + rng.below(d.len() as u64 - 4096) as usize;
        d[at] ^= 1 << rng.below(8);
    }
    d
}

/// 30 copies of a trained database with bit flips: `db dump`, `train`,
/// `check` and `db recover` never panic; a failure is one line that calls
/// the file corrupt and names the recovery; `db recover` salvages a
/// database that works.
#[test]
fn damaged_databases_never_panic_and_recover_salvages_them() {
    let dir = TempDir::new("flips");
    let db = trained_db(&dir);
    let src = std::fs::read(&db).unwrap();
    let msg_path = dir.join("m.eml");
    std::fs::write(&msg_path, message(42, 40)).unwrap();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let work = dir.join("work.redb");
    let (mut corrupt_reports, mut recovered) = (0, 0);
    for copy in 0..30 {
        let bytes = flipped(&src, &mut rng, 12);
        for args in [&["db", "dump", "--journal"][..], &["train", "--spam", msg_path.to_str().unwrap()], &["check", msg_path.to_str().unwrap()]] {
            std::fs::write(&work, &bytes).unwrap();
            let r = run(&work, args).no_panic();
            if r.code != Some(0) {
                let r = r.error();
                if r.stderr.contains("is corrupt") {
                    assert!(r.stderr.contains("hamlet db recover"), "copy {copy}: {}", r.describe());
                    corrupt_reports += 1;
                }
            }
        }
        std::fs::write(&work, &bytes).unwrap();
        let out = dir.join(&format!("recovered-{copy}.redb"));
        let r = run(&work, &["db", "recover", out.to_str().unwrap()]).no_panic();
        assert_eq!(std::fs::read(&work).unwrap(), bytes, "copy {copy}: recover changed its source");
        if r.code == Some(0) {
            assert!(r.stdout.contains("kept") && r.stdout.contains("tokens"), "{}", r.describe());
            let stats = run(&out, &["db", "stats"]).ok();
            assert!(stats.stdout.contains("tokens"), "{}", stats.describe());
            run(&out, &["db", "dump"]).ok();
            run(&out, &["train", "--spam", msg_path.to_str().unwrap()]).ok();
            recovered += 1;
        } else {
            r.error();
        }
        let _ = std::fs::remove_file(&out);
    }
    assert!(corrupt_reports >= 5, "only {corrupt_reports} runs reported damage: the flips are too gentle to test anything");
    assert!(recovered >= 25, "db recover salvaged only {recovered} of 30 copies");
}

/// `hamlet serve` on a damaged database: when checks fail because of the
/// damage, /healthz says 503 and why, not "ok".
#[test]
fn healthz_reports_a_damaged_database() {
    let dir = TempDir::new("serve-corrupt");
    let db = trained_db(&dir);
    let src = std::fs::read(&db).unwrap();
    let work = dir.join("work.redb");
    let msg = message(42, 200);
    let mut rng = Rng(0xC0FF_EE00_1234_5678);
    let (mut served, mut tries, mut opened) = (0, 0, 0);
    for _ in 0..300 {
        tries += 1;
        let bytes = flipped(&src, &mut rng, 200);
        std::fs::write(&work, &bytes).unwrap();
        // A copy the service opens (its totals are readable) but whose
        // token records are damaged where this message looks.
        if run(&work, &["db", "stats"]).code != Some(0) {
            continue;
        }
        opened += 1;
        let r = run_cmd(hamlet(&work, &["check"]), Some(msg.as_bytes())).no_panic();
        if !r.stderr.contains("is corrupt") {
            continue;
        }
        let server = serve(hamlet(&work, &[]), &[]);
        let (status, body) = http(&server.addr, "POST", "/v1/check", &msg);
        assert_eq!(status, 500, "{body}");
        let (status, body) = http(&server.addr, "GET", "/healthz", "");
        assert_eq!(status, 503, "healthz on a database whose checks fail: {body}");
        let m = error_message(503, &body);
        assert!(m.contains("corrupt") && m.contains("db recover"), "{m}");
        served += 1;
        if served == 2 {
            return;
        }
    }
    panic!("{tries} damaged copies, {opened} opened, {served} failed a check: the test needs other flips");
}

// ---------------------------------------------------------------------------
// A closed stdout
// ---------------------------------------------------------------------------

/// `hamlet db stats | true` and friends: the reader is gone before hamlet
/// writes; hamlet ends quietly with exit 0.
#[test]
fn closed_stdout_ends_quietly() {
    let dir = TempDir::new("pipe");
    let db = trained_db(&dir);
    let msg_path = dir.join("m.eml");
    std::fs::write(&msg_path, message(3, 40)).unwrap();
    for args in
        [&["db", "stats"][..], &["db", "dump", "--journal"], &["check", msg_path.to_str().unwrap()], &["train", "--ham", msg_path.to_str().unwrap()]]
    {
        let mut c = hamlet(&db, args);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?} with a closed stdout: {stderr}");
        assert!(stderr.is_empty(), "{args:?} with a closed stdout said: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// The greylist database on a full disk
// ---------------------------------------------------------------------------

/// A Postfix 3.7 RCPT-stage policy request.
fn policy_request(client: &str, sender: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address={client}\n\
         client_name=mail.other.example\nreverse_client_name=mail.other.example\nhelo_name=mail.other.example\n\
         sender={sender}\nrecipient=erin@corp.example\nrecipient_count=0\ninstance=1.2.3\nsize=0\n\n"
    )
}

/// One request on a new connection: the action, or `None` when the
/// service closed the connection instead.
fn policy_ask(addr: &str, req: &str) -> Option<String> {
    use std::io::BufRead;
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    w.write_all(req.as_bytes()).ok()?;
    let mut line = String::new();
    if std::io::BufReader::new(s).read_line(&mut line).ok()? == 0 {
        return None;
    }
    Some(line.trim_end().trim_start_matches("action=").to_string())
}

/// Greylisting state writes fail while the disk is full; once there is
/// space again, the policy service greylists new triplets again on new
/// connections, without a restart.
#[test]
fn greylist_store_recovers_from_a_full_disk() {
    let dir = TempDir::new("full-grey");
    let db = dir.join("h.redb");
    run(&db, &["db", "init"]).ok();
    let cfg = dir.join("hamlet.toml");
    std::fs::write(
        &cfg,
        "log = \"warn\"\n[envelope]\nmy_names = [\"mx.corp.example\"]\n[envelope.greylist]\nenabled = true\ndelay_s = 60\nauto_whitelist = 0\n",
    )
    .unwrap();
    let policy = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let server = serve(with_file_limit(hamlet(&db, &["--config", cfg.to_str().unwrap()]), libc::RLIM_INFINITY), &["--policy", &policy]);
    let start = Instant::now();
    while std::net::TcpStream::connect(&policy).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the policy service never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let defer = "DEFER_IF_PERMIT 4.2.0 Greylisted: please retry later";
    assert_eq!(policy_ask(&policy, &policy_request("198.51.100.1", "a@one.example")).as_deref(), Some(defer));
    // The disk is full: no write fits at all.
    set_file_limit(server.child.id(), 1);
    for i in 0..3 {
        let r = policy_ask(&policy, &policy_request("198.51.100.2", &format!("b{i}@two.example")));
        assert_ne!(r.as_deref(), Some(defer), "a greylisting record was written on a full disk");
    }
    // Space is back: new triplets are greylisted again.
    set_file_limit(server.child.id(), libc::RLIM_INFINITY);
    for i in 0..3 {
        let r = policy_ask(&policy, &policy_request("203.0.113.9", &format!("c{i}@three.example")));
        assert_eq!(r.as_deref(), Some(defer), "after space came back (request {i})");
    }
    assert_eq!(policy_ask(&policy, &policy_request("198.51.100.1", "a@one.example")).as_deref(), Some(defer), "the first record is kept");
}
