//! The `hamlet` binary end to end: every test gets its own temporary folder
//! (database, messages, dumps), removed when the test ends.
//!
//! The messages are synthetic and written here: ~20 "spammy" and ~20 "hammy"
//! ones with disjoint vocabularies, laid out as a maildir, an mbox file, an MH
//! folder and a TREC index.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");
/// No single command of these tests should come near this.
const TIMEOUT: Duration = Duration::from_secs(60);
const N: usize = 20;

// ---------------------------------------------------------------------------
// Scaffolding
// ---------------------------------------------------------------------------

/// A unique temporary folder, removed on drop (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!("hamlet-cli-test-{}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst), name));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn db(&self) -> PathBuf {
        self.0.join("db/hamlet.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run of the binary did.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl Out {
    fn describe(&self) -> String {
        format!("`{}` exited with {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------", self.what, self.code, self.stdout, self.stderr)
    }
    /// Asserts exit code `want` and returns self for chaining.
    fn code(self, want: i32) -> Out {
        assert_eq!(self.code, Some(want), "unexpected exit status\n{}", self.describe());
        assert_no_panic(&self);
        self
    }
    fn ok(self) -> Out {
        self.code(0)
    }
    /// Asserts the binary's error convention: exit 3, exactly one stderr line
    /// starting with `hamlet: `, no panic text.
    fn error(self) -> Out {
        let s = self.code(3);
        let lines: Vec<&str> = s.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected exactly one line on stderr\n{}", s.describe());
        assert!(lines[0].starts_with("hamlet: "), "stderr line must start with `hamlet: `\n{}", s.describe());
        s
    }
}

fn assert_no_panic(o: &Out) {
    for text in [&o.stdout, &o.stderr] {
        assert!(!text.contains("panicked") && !text.contains("RUST_BACKTRACE"), "panic text in output\n{}", o.describe());
    }
}

fn command(dir: &TempDir, db: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    if let Some(db) = db {
        c.arg("--db").arg(db);
    }
    c.args(args);
    // Never touch the real user's database, whatever the environment says.
    c.env_remove("HAMLET_DB");
    c.env_remove("HAMLET_CONFIG");
    c.env("HOME", dir.path());
    c.env("XDG_DATA_HOME", dir.path().join("xdg"));
    c
}

fn describe_cmd(db: Option<&Path>, args: &[&str]) -> String {
    let mut s = String::from("hamlet");
    if let Some(db) = db {
        s.push_str(&format!(" --db {}", db.display()));
    }
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Kills the child if the test bails out while it runs.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for a spawned child, with a timeout, collecting its output.
fn finish(mut child: Child, what: String, timeout: Duration) -> Out {
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = so.read_to_end(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        s
    });
    let mut guard = KillOnDrop(Some(child));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = guard.0.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            drop(guard);
            panic!("`{what}` did not finish within {timeout:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&to.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&te.join().unwrap()).into_owned();
    Out { code: status.code(), stdout, stderr, what }
}

/// Runs `hamlet [--db DB] ARGS` with `stdin` (none: /dev/null).
fn run_in(dir: &TempDir, db: Option<&Path>, args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut c = command(dir, db, args);
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let writer = stdin.map(|data| {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        })
    });
    let out = finish(child, describe_cmd(db, args), TIMEOUT);
    if let Some(w) = writer {
        w.join().unwrap();
    }
    out
}

fn run(dir: &TempDir, args: &[&str]) -> Out {
    run_in(dir, Some(&dir.db()), args, None)
}

fn run_stdin(dir: &TempDir, args: &[&str], stdin: &[u8]) -> Out {
    run_in(dir, Some(&dir.db()), args, Some(stdin))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// `db stats` as (spam, ham, tokens, journal); spam and ham are the weighted
/// totals (`spam  <messages> messages (<weighted> weighted)`), the last
/// number on their lines.
fn stats(dir: &TempDir) -> (u64, u64, u64, u64) {
    let o = run(dir, &["db", "stats"]).ok();
    let get = |key: &str| -> u64 {
        o.stdout
            .lines()
            .find_map(|l| {
                let mut it = l.split_whitespace();
                (it.next() == Some(key)).then(|| it.filter_map(|v| v.trim_start_matches('(').parse().ok()).next_back()).flatten()
            })
            .unwrap_or_else(|| panic!("no `{key} <number>` line in db stats\n{}", o.describe()))
    };
    (get("spam"), get("ham"), get("tokens"), get("journal"))
}

/// Messages learned per class, from the journal (`db dump --journal`), after
/// checking that `db stats` agrees with it: its journal count is the number
/// of `j` lines, and its per-class totals are the sum of the journal entries'
/// weights (1 per message, or more for a message learned with extra weight).
fn messages(dir: &TempDir) -> (u64, u64) {
    let d = dump(dir, &dir.db());
    let (mut s, mut h, mut ws, mut wh) = (0u64, 0u64, 0u64, 0u64);
    for l in d.lines().filter(|l| l.starts_with("j ")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() >= 4, "journal line {l:?}: expected `j <digest> <class> <day> [<weight>]`");
        let w: u64 = f.get(4).map_or(1, |x| x.parse().unwrap_or_else(|_| panic!("bad journal weight in {l:?}")));
        assert!(w >= 1, "journal weight 0 in {l:?}");
        match f[2] {
            "spam" => (s, ws) = (s + 1, ws + w),
            "ham" => (h, wh) = (h + 1, wh + w),
            other => panic!("bad journal class {other:?} in {l:?}"),
        }
    }
    let (ts, th, _, j) = stats(dir);
    assert_eq!(j, s + h, "`db stats` journal count differs from the `j` lines of `db dump --journal`");
    assert_eq!((ts, th), (ws, wh), "`db stats` spam/ham totals differ from the per-class sums of the journal weights\n{d}");
    (s, h)
}

fn dump(dir: &TempDir, db: &Path) -> String {
    run_in(dir, Some(db), &["db", "dump", "--journal"], None).ok().stdout
}

/// The outcome summary of a `train` run: "20 learned", "1 already learned"...
fn train_summary(o: &Out) -> (usize, String) {
    let line = o.stdout.lines().next().unwrap_or_else(|| panic!("train printed nothing\n{}", o.describe()));
    // "<n> messages in <t>s (<r>/s): <summary>"
    let (head, summary) = line.split_once(": ").unwrap_or_else(|| panic!("unexpected train summary line {line:?}\n{}", o.describe()));
    let n: usize = head.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no message count in {line:?}"));
    assert!(head.contains(" messages in "), "unexpected train summary line {line:?}");
    (n, summary.to_string())
}

fn train(dir: &TempDir, args: &[&str], want_n: usize, want_summary: &str) {
    let o = run(dir, args).ok();
    let (n, summary) = train_summary(&o);
    assert_eq!((n, summary.as_str()), (want_n, want_summary), "train outcome (messages, summary) is wrong\n{}", o.describe());
}

// ---------------------------------------------------------------------------
// Synthetic messages
// ---------------------------------------------------------------------------

const SPAM_WORDS: &[&str] = &[
    "viagra",
    "cheap",
    "pills",
    "winner",
    "lottery",
    "casino",
    "bonus",
    "discount",
    "pharmacy",
    "replica",
    "watches",
    "prize",
    "credit",
    "mortgage",
    "refinance",
    "investment",
    "guaranteed",
    "offer",
    "unclaimed",
    "jackpot",
    "millionaire",
    "rolex",
    "exclusive",
    "miracle",
];
const HAM_WORDS: &[&str] = &[
    "meeting",
    "agenda",
    "minutes",
    "project",
    "deadline",
    "review",
    "quarterly",
    "budget",
    "schedule",
    "colleague",
    "lunch",
    "report",
    "draft",
    "committee",
    "conference",
    "presentation",
    "thesis",
    "seminar",
    "kernel",
    "compiler",
    "patch",
    "repository",
    "benchmark",
    "lecture",
];

fn pick(words: &[&str], i: usize, k: usize) -> Vec<String> {
    (0..k).map(|j| words[(i * 7 + j * 5) % words.len()].to_string()).collect()
}

fn spam_msg(i: usize) -> String {
    let w = pick(SPAM_WORDS, i, 10);
    format!(
        "From: \"Best Deals\" <offers{i}@cheap-deals.example>\r\n\
         To: lucky.customer@example.org\r\n\
         Subject: {} {} {} now\r\n\
         Message-ID: <{i}.promo@cheap-deals.example>\r\n\
         Date: Mon, 1 Jul 2024 10:{:02}:00 +0000\r\n\
         X-Mailer: MassMailer Pro 9\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         {} {} {} {}!\r\n\
         {} {} {} {} {} {}\r\n\
         Visit http://www.cheap-deals.example/buy/{i} today.\r\n",
        w[0],
        w[1],
        w[2],
        i % 60,
        w[3],
        w[4],
        w[5],
        w[6],
        w[7],
        w[8],
        w[9],
        w[0],
        w[1],
        w[2]
    )
}

fn ham_msg(i: usize) -> String {
    let w = pick(HAM_WORDS, i, 10);
    format!(
        "From: Alice Example <alice@university.example>\r\n\
         To: Bob Example <bob@university.example>\r\n\
         Subject: {} {} {}\r\n\
         Message-ID: <{i}.note@mail.university.example>\r\n\
         Date: Tue, 2 Jul 2024 09:{:02}:00 +0200\r\n\
         User-Agent: Thunderbird 115\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Hi Bob,\r\n\
         {} {} {} {} {} {}.\r\n\
         {} {} {}.\r\n\
         Alice\r\n",
        w[0],
        w[1],
        w[2],
        i % 60,
        w[3],
        w[4],
        w[5],
        w[6],
        w[7],
        w[8],
        w[9],
        w[0],
        w[1]
    )
}

/// A fresh spammy / hammy message that was never trained (index beyond N).
fn new_spam() -> String {
    spam_msg(N + 3)
}
fn new_ham() -> String {
    ham_msg(N + 3)
}

fn write(p: &Path, data: &str) {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

/// A maildir of the N spam messages, split between new/ and cur/ (plus a
/// tmp/ file, which must be ignored).
fn make_maildir(dir: &TempDir) -> PathBuf {
    let md = dir.join("spam-maildir");
    for i in 0..N {
        let sub = if i % 2 == 0 { "cur" } else { "new" };
        write(&md.join(sub).join(format!("1720000{i:03}.M{i}P1.host:2,S")), &spam_msg(i));
    }
    write(&md.join("tmp/1720000999.partial"), "Subject: half-delivered\r\n\r\nnot a message yet");
    md
}

/// An mboxrd file of the N ham messages; one body has a `>From ` line that
/// must not split the mailbox.
fn make_mbox(dir: &TempDir) -> PathBuf {
    let p = dir.join("ham.mbox");
    let mut out = String::new();
    for i in 0..N {
        out.push_str(&format!("From alice@university.example Tue Jul  2 09:{:02}:00 2024\n", i % 60));
        let mut m = ham_msg(i).replace("\r\n", "\n");
        if i == 3 {
            m.push_str(">From the minutes of last week: nothing new.\n");
        }
        out.push_str(&m);
        out.push('\n');
    }
    write(&p, &out);
    p
}

/// An MH folder of the N ham messages (numeric names, plus MH's hidden
/// `.mh_sequences`, which is not a message).
fn make_mh(dir: &TempDir) -> PathBuf {
    let d = dir.join("ham-mh");
    for i in 0..N {
        write(&d.join(format!("{}", i + 1)), &ham_msg(i));
    }
    write(&d.join(".mh_sequences"), "unseen: 1-20\n");
    d
}

/// A TREC index labelling N spam and N ham messages (alternating), paths
/// relative to the index's folder.
fn make_index(dir: &TempDir) -> PathBuf {
    let mut idx = String::new();
    for i in 0..N {
        write(&dir.join(&format!("trec/data/spam{i}.eml")), &spam_msg(i));
        write(&dir.join(&format!("trec/data/ham{i}.eml")), &ham_msg(i));
        idx.push_str(&format!("spam data/spam{i}.eml\nham data/ham{i}.eml\n"));
    }
    let p = dir.join("trec/index");
    write(&p, &idx);
    p
}

/// A database trained on the index (N spam, N ham).
fn trained(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    run(&dir, &["db", "init", "--empty"]).ok();
    let idx = make_index(&dir);
    train(&dir, &["train", s(&idx)], 2 * N, &format!("{} learned", 2 * N));
    dir
}

/// Parses "<verdict> <p>" into (verdict, p), checking p is a number in [0, 1].
fn verdict_line(line: &str, o: &Out) -> (String, f64) {
    let mut it = line.split(' ');
    let (Some(v), Some(p), None) = (it.next(), it.next(), it.next()) else {
        panic!("expected `<verdict> <probability>`, got {line:?}\n{}", o.describe());
    };
    assert!(["spam", "ham", "unsure"].contains(&v), "bad verdict {v:?} in {line:?}\n{}", o.describe());
    let p: f64 = p.parse().unwrap_or_else(|_| panic!("bad probability in {line:?}\n{}", o.describe()));
    assert!((0.0..=1.0).contains(&p), "probability out of [0,1] in {line:?}");
    (v.to_string(), p)
}

fn starter_totals() -> (u64, u64, u64) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/starter.dump")).unwrap();
    let mut totals = (0, 0);
    let mut tokens = 0;
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("totals ") {
            let v: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap()).collect();
            totals = (v[0], v[1]);
        } else if l.starts_with("t ") {
            tokens += 1;
        }
    }
    (totals.0, totals.1, tokens)
}

// ---------------------------------------------------------------------------
// Database life cycle
// ---------------------------------------------------------------------------

#[test]
fn init_empty_then_stats_shows_zero() {
    let dir = TempDir::new("init");
    let o = run(&dir, &["db", "init", "--empty"]).ok();
    assert!(o.stdout.contains("(0 spam, 0 ham messages, empty)"), "init --empty output\n{}", o.describe());
    assert!(dir.db().exists(), "db init did not create {}", dir.db().display());
    assert_eq!(stats(&dir), (0, 0, 0, 0), "a new empty database has no messages, tokens or journal");
    let o = run(&dir, &["db", "stats"]).ok();
    assert!(o.stdout.contains("4-grams   weight 0.100 in the combined score (starts at 0.1;"), "nothing learned, nothing moved\n{}", o.describe());
    // A second init must refuse, not clobber.
    let o = run(&dir, &["db", "init", "--empty"]).error();
    assert!(o.stderr.contains("already exists"), "{}", o.describe());
}

#[test]
fn new_database_gets_the_starter_model() {
    let (spam, ham, tokens) = starter_totals();
    // Explicit `db init`.
    let dir = TempDir::new("starter");
    let o = run(&dir, &["db", "init"]).ok();
    assert!(o.stdout.contains("from the starter model"), "{}", o.describe());
    let (s, h, t, _) = stats(&dir);
    assert_eq!((s, h, t), (spam, ham, tokens), "db init must load models/starter.dump (totals, token lines)");
    // Implicitly, on first use (check of a message from stdin).
    let dir2 = TempDir::new("starter-implicit");
    let o = run_stdin(&dir2, &["check"], new_ham().as_bytes());
    assert!(matches!(o.code, Some(0..=2)), "check on a new database must succeed\n{}", o.describe());
    assert_no_panic(&o);
    assert!(dir2.db().exists(), "check did not create the database");
    let (s, h, t, _) = stats(&dir2);
    assert_eq!((s, h, t), (spam, ham, tokens), "a database created on first use holds the starter model");
    // Stats of a database that does not exist: an error, and no database created.
    let dir3 = TempDir::new("nodb");
    let o = run(&dir3, &["db", "stats"]).error();
    assert!(o.stderr.contains("no database"), "{}", o.describe());
    assert!(!dir3.db().exists(), "db stats must not create a database");
}

#[test]
fn a_fresh_install_calls_nothing_spam_until_it_learns_mail_of_its_own() {
    let dir = TempDir::new("cold-start");
    run(&dir, &["db", "init"]).ok();
    let o = run(&dir, &["db", "stats"]).ok();
    assert!(o.stdout.contains("of those came with the starter model"), "{}", o.describe());
    // HTML-only spam the starter model knows.
    let spam = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/messages/02-html-only.eml")).unwrap();
    // The starter model alone, ungated, calls it spam...
    let open = dir.join("open.toml");
    write(&open, "cold_start = 0\n");
    let o = run_stdin(&dir, &["--config", s(&open), "check"], spam.as_bytes()).code(0);
    let (_, ungated) = verdict_line(o.stdout.trim_end(), &o);
    // ...but a fresh install does not take its word for it: unsure, still
    // leaning spam, and --clues says why and what opens the gate.
    let o = run_stdin(&dir, &["check", "--clues"], spam.as_bytes()).code(2);
    let (v, p) = verdict_line(o.stdout.lines().next().unwrap_or(""), &o);
    assert_eq!(v, "unsure", "{}", o.describe());
    assert!(p > 0.5 && p < ungated && p < 0.9, "gated {p}, ungated {ungated}\n{}", o.describe());
    assert!(o.stdout.contains("cold start: 0 spam and 0 ham learned here"), "{}", o.describe());
    // Ham is not held back.
    run_stdin(&dir, &["check"], new_ham().as_bytes()).code(1);
    // Local mail of both classes opens it: its spam is called spam, and
    // the note is gone.
    let idx = make_index(&dir);
    train(&dir, &["train", s(&idx)], 2 * N, &format!("{} learned", 2 * N));
    let o = run_stdin(&dir, &["check", "--clues"], new_spam().as_bytes()).code(0);
    assert!(!o.stdout.contains("cold start"), "{}", o.describe());
    // A bad value is refused.
    let bad = dir.join("bad.toml");
    write(&bad, "cold_start = -1\n");
    let o = run_stdin(&dir, &["--config", s(&bad), "check"], spam.as_bytes()).error();
    assert!(o.stderr.contains("cold_start"), "{}", o.describe());
}

// ---------------------------------------------------------------------------
// Training from each kind of source
// ---------------------------------------------------------------------------

#[test]
fn train_from_maildir_mbox_mh_and_index() {
    // maildir (new/ + cur/, tmp/ ignored) as spam
    let dir = TempDir::new("sources");
    run(&dir, &["db", "init", "--empty"]).ok();
    let md = make_maildir(&dir);
    train(&dir, &["train", "--spam", s(&md)], N, &format!("{N} learned"));
    assert_eq!(messages(&dir), (N as u64, 0), "maildir: {N} spam, 0 ham (tmp/ ignored)");
    // mbox as ham: the `>From ` line must not split a message.
    let mbox = make_mbox(&dir);
    train(&dir, &["train", "--ham", s(&mbox)], N, &format!("{N} learned"));
    assert_eq!(messages(&dir), (N as u64, N as u64), "after maildir + mbox");

    // MH folder (numeric names; `.mh_sequences` is not a message).
    let dir = TempDir::new("sources-mh");
    run(&dir, &["db", "init", "--empty"]).ok();
    let mh = make_mh(&dir);
    train(&dir, &["train", "--ham", s(&mh)], N, &format!("{N} learned"));
    assert_eq!(messages(&dir), (0, N as u64), "MH folder: {N} ham (.mh_sequences ignored)");
    // Training the MH folder again is a no-op.
    train(&dir, &["train", "--ham", s(&mh)], N, &format!("{N} already learned"));

    // TREC index: labels come from the index, no --spam/--ham needed.
    let dir = TempDir::new("sources-index");
    run(&dir, &["db", "init", "--empty"]).ok();
    let idx = make_index(&dir);
    train(&dir, &["train", s(&idx)], 2 * N, &format!("{} learned", 2 * N));
    assert_eq!(messages(&dir), (N as u64, N as u64), "index: {N} spam and {N} ham");
    let tok = stats(&dir).2;
    assert!(tok > 50, "training 40 messages should store many tokens, got {tok}");
}

#[test]
fn mbox_split_matches_message_count() {
    // The mbox messages, learned one file each, must be the same messages
    // (same bytes after mboxrd unescaping) as the mbox entries: learning the
    // files after the mbox reports them all as already learned.
    let dir = TempDir::new("mbox-vs-files");
    run(&dir, &["db", "init", "--empty"]).ok();
    let mbox = make_mbox(&dir);
    train(&dir, &["train", "--ham", s(&mbox)], N, &format!("{N} learned"));
    let mut files = Vec::new();
    for i in 0..N {
        let mut m = ham_msg(i).replace("\r\n", "\n");
        if i == 3 {
            m.push_str("From the minutes of last week: nothing new.\n");
        }
        m.push('\n');
        let p = dir.join(&format!("single/{i}.eml"));
        write(&p, &m);
        files.push(p);
    }
    let mut args = vec!["train", "--ham"];
    args.extend(files.iter().map(|p| s(p)));
    train(&dir, &args, N, &format!("{N} already learned"));
}

#[test]
fn train_needs_a_label() {
    let dir = TempDir::new("nolabel");
    run(&dir, &["db", "init", "--empty"]).ok();
    let p = dir.join("m.eml");
    write(&p, &spam_msg(0));
    let o = run(&dir, &["train", s(&p)]).error();
    assert!(o.stderr.contains("--spam or --ham"), "{}", o.describe());
    assert_eq!(stats(&dir), (0, 0, 0, 0), "nothing may be learned");
    // --spam and --ham together: a usage error (clap, exit 2).
    let o = run(&dir, &["train", "--spam", "--ham", s(&p)]);
    assert_eq!(o.code, Some(2), "conflicting flags are a usage error\n{}", o.describe());
    assert_no_panic(&o);
}

/// A TREC index labels each message: `--spam` or `--ham` beside one is an
/// error that learns nothing, never a silent relabelling of the index.
#[test]
fn train_with_an_index_refuses_a_class_flag() {
    let dir = TempDir::new("index-flag");
    run(&dir, &["db", "init", "--empty"]).ok();
    let idx = make_index(&dir);
    for flag in ["--spam", "--ham"] {
        let o = run(&dir, &["train", flag, s(&idx)]).error();
        assert!(o.stderr.contains("TREC index labels each message"), "{}", o.describe());
        assert_eq!(stats(&dir), (0, 0, 0, 0), "{flag} with an index must learn nothing");
    }
    // Without a flag the index's own labels hold; --untrain needs none.
    train(&dir, &["train", s(&idx)], 2 * N, &format!("{} learned", 2 * N));
    assert_eq!(messages(&dir), (N as u64, N as u64));
    train(&dir, &["train", "--untrain", s(&idx)], 2 * N, &format!("{} unlearned", 2 * N));
}

/// Messages without a blank line or any identity header are identified by
/// their content: two different ones are two messages, not one relearned.
#[test]
fn headerless_messages_are_told_apart_by_content() {
    let dir = TempDir::new("headerless");
    run(&dir, &["db", "init", "--empty"]).ok();
    let a = dir.join("a.txt");
    let b = dir.join("b.txt");
    write(&a, "cheap viagra pills casino winner\nclick here now\n");
    write(&b, "meeting notes for the quarterly budget review\nsee you tomorrow\n");
    train(&dir, &["train", "--spam", s(&a)], 1, "1 learned");
    train(&dir, &["train", "--ham", s(&b)], 1, "1 learned");
    assert_eq!(messages(&dir), (1, 1), "two messages, one of each class");
    train(&dir, &["train", "--spam", s(&a)], 1, "1 already learned");
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

#[test]
fn check_stdin_verdicts_and_exit_codes() {
    let dir = trained("check-stdin");
    let o = run_stdin(&dir, &["check"], new_spam().as_bytes());
    assert_eq!(o.stdout.lines().count(), 1, "one line without --clues\n{}", o.describe());
    let (v, p) = verdict_line(o.stdout.trim_end_matches('\n'), &o);
    assert_eq!(v, "spam", "a message in the spam vocabulary\n{}", o.describe());
    assert!(p >= 0.9, "spam probability {p}");
    let o = o.code(0);
    assert!(o.stdout.ends_with('\n'));

    let o = run_stdin(&dir, &["check"], new_ham().as_bytes());
    let (v, p) = verdict_line(o.stdout.trim_end_matches('\n'), &o);
    assert_eq!(v, "ham", "a message in the ham vocabulary\n{}", o.describe());
    assert!(p < 0.2, "ham probability {p}");
    o.code(1);
}

#[test]
fn config_cutoffs_and_database_hold_for_check_and_train() {
    let dir = trained("config-cutoffs");
    let ham = new_ham();
    let o = run_stdin(&dir, &["check"], ham.as_bytes()).code(1);
    assert_eq!(verdict_line(o.stdout.trim_end(), &o).0, "ham", "{}", o.describe());
    // Cutoffs no probability can fall outside: every message is unsure.
    let wide = dir.join("wide.toml");
    write(&wide, "ham_cutoff = 0.0\nspam_cutoff = 1.0\n");
    let o = run_stdin(&dir, &["--config", s(&wide), "check"], ham.as_bytes()).code(2);
    assert_eq!(verdict_line(o.stdout.trim_end(), &o).0, "unsure", "{}", o.describe());
    // A spam cutoff of 0: every message is spam, in bulk mode too.
    let zero = dir.join("zero.toml");
    write(&zero, "ham_cutoff = 0.0\nspam_cutoff = 0.0\n");
    let o = run_stdin(&dir, &["check", "--config", s(&zero)], ham.as_bytes()).code(0);
    assert_eq!(verdict_line(o.stdout.trim_end(), &o).0, "spam", "{}", o.describe());
    let file = dir.join("ham.eml");
    write(&file, &ham);
    let o = run(&dir, &["--config", s(&zero), "check", "--no-filename", s(&file)]).ok();
    assert_eq!(verdict_line(o.stdout.trim_end(), &o).0, "spam", "{}", o.describe());
    // Bad cutoffs are refused, not ignored.
    let bad = dir.join("bad.toml");
    write(&bad, "ham_cutoff = 0.9\nspam_cutoff = 0.2\n");
    let o = run_stdin(&dir, &["--config", s(&bad), "check"], ham.as_bytes()).error();
    assert!(o.stderr.contains("cutoffs"), "{}", o.describe());
    // The config's database is the one `train` and `db stats` use when no
    // --db is given.
    let other = dir.join("other/hamlet.redb");
    let cfg = dir.join("db.toml");
    write(&cfg, &format!("db = {:?}\n", s(&other)));
    let msg = dir.join("one.eml");
    write(&msg, &spam_msg(0));
    run_in(&dir, None, &["--config", s(&cfg), "train", "--spam", s(&msg)], None).ok();
    let o = run_in(&dir, None, &["--config", s(&cfg), "db", "stats"], None).ok();
    assert!(o.stdout.contains(s(&other)), "{}", o.describe());
}

#[test]
fn check_unsure_exit_code() {
    // An empty model has no evidence at all: 0.5, unsure, exit 2.
    let dir = TempDir::new("unsure");
    run(&dir, &["db", "init", "--empty"]).ok();
    let o = run_stdin(&dir, &["check"], new_spam().as_bytes()).code(2);
    let (v, p) = verdict_line(o.stdout.trim_end(), &o);
    assert_eq!((v.as_str(), p), ("unsure", 0.5), "{}", o.describe());
}

#[test]
fn check_bulk_in_input_order() {
    let dir = trained("check-bulk");
    // 12 files, spam and ham interleaved irregularly, more files than threads.
    let mut files: Vec<(PathBuf, &str)> = Vec::new();
    for i in 0..12 {
        let spam = i % 3 != 1;
        let p = dir.join(&format!("bulk/m{:02}-{}.eml", 11 - i, if spam { "s" } else { "h" }));
        write(&p, &if spam { spam_msg(N + i) } else { ham_msg(N + i) });
        files.push((p, if spam { "spam" } else { "ham" }));
    }
    for threads in [None, Some("1"), Some("3")] {
        let mut args = vec!["check"];
        if let Some(t) = threads {
            args.extend(["--threads", t]);
        }
        args.extend(files.iter().map(|(p, _)| s(p)));
        // Bulk mode exits 0 whatever the verdicts.
        let o = run(&dir, &args).ok();
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(lines.len(), files.len(), "one line per file\n{}", o.describe());
        let mut bare = Vec::new();
        for ((p, want), line) in files.iter().zip(&lines) {
            let prefix = format!("{} ", p.display());
            let rest = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("line {line:?} should start with the file {prefix:?} (input order)\n{}", o.describe()));
            let (v, _) = verdict_line(rest, &o);
            assert_eq!(&v, want, "verdict for {}\n{}", p.display(), o.describe());
            bare.push(rest.to_string());
        }
        // --no-filename: the same lines without the file.
        let mut args2 = vec!["check", "--no-filename"];
        if let Some(t) = threads {
            args2.extend(["--threads", t]);
        }
        args2.extend(files.iter().map(|(p, _)| s(p)));
        let o2 = run(&dir, &args2).ok();
        let lines2: Vec<&str> = o2.stdout.lines().collect();
        assert_eq!(lines2, bare, "--no-filename must print `<verdict> <p>` in input order\n{}", o2.describe());
    }
    // A bulk probability is the same as checking the message from stdin.
    let o = run(&dir, &["check", "--no-filename", s(&files[0].0)]).ok();
    let raw = std::fs::read(&files[0].0).unwrap();
    let o2 = run_stdin(&dir, &["check"], &raw);
    assert_eq!(o.stdout, o2.stdout, "bulk and stdin scores of the same message differ");
}

#[test]
fn check_bulk_with_a_missing_file() {
    let dir = trained("check-missing");
    let good = dir.join("good.eml");
    write(&good, &new_spam());
    let missing = dir.join("no/such/file.eml");
    let o = run(&dir, &["check", s(&good), s(&missing)]).error();
    assert!(o.stderr.contains("no/such/file.eml"), "error should name the file\n{}", o.describe());
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the readable file is still reported\n{}", o.describe());
    assert!(lines[0].starts_with(&format!("{} spam ", good.display())), "{}", o.describe());
}

#[test]
fn check_clues() {
    let dir = trained("clues");
    let o = run_stdin(&dir, &["check", "--clues"], new_spam().as_bytes()).code(0);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines.len() > 1, "--clues must print clue lines after the verdict\n{}", o.describe());
    let (v, _) = verdict_line(lines[0], &o);
    assert_eq!(v, "spam");
    for l in &lines[1..] {
        // "  <f(w)> <spam> <ham> <weight> <token>"
        assert!(l.starts_with("  "), "clue lines are indented: {l:?}");
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() >= 5, "clue line has f(w), counts, weight, token: {l:?}");
        let prob: f64 = f[0].parse().unwrap_or_else(|_| panic!("bad f(w) in {l:?}"));
        assert!((0.0..=1.0).contains(&prob), "{l:?}");
        f[1].parse::<u32>().unwrap_or_else(|_| panic!("bad spam count in {l:?}"));
        f[2].parse::<u32>().unwrap_or_else(|_| panic!("bad ham count in {l:?}"));
        f[3].parse::<f64>().unwrap_or_else(|_| panic!("bad weight in {l:?}"));
    }
    assert!(
        lines[1..].iter().any(|l| SPAM_WORDS.iter().any(|w| l.ends_with(&format!(" {w}")))),
        "a spam-vocabulary word should be among the clues\n{}",
        o.describe()
    );
    // Bulk mode: clue lines follow each file's line.
    let f = dir.join("c.eml");
    write(&f, &new_ham());
    let o = run(&dir, &["check", "--clues", s(&f)]).ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines.len() > 1 && lines[0].starts_with(s(&f)), "{}", o.describe());
    assert!(lines[1..].iter().all(|l| l.starts_with("  ")), "{}", o.describe());
}

// ---------------------------------------------------------------------------
// The training journal
// ---------------------------------------------------------------------------

#[test]
fn journal_learned_already_relearned_unlearned() {
    let dir = TempDir::new("journal");
    run(&dir, &["db", "init", "--empty"]).ok();
    let f = dir.join("m.eml");
    write(&f, &spam_msg(5));
    let f = s(&f);
    train(&dir, &["train", "--spam", f], 1, "1 learned");
    assert_eq!(messages(&dir), (1, 0), "one spam message learned");
    let once = stats(&dir);
    let dump_once = dump(&dir, &dir.db());
    train(&dir, &["train", "--spam", f], 1, "1 already learned");
    assert_eq!(stats(&dir), once, "learning again must change nothing");
    assert!(dump(&dir, &dir.db()) == dump_once, "learning again must change nothing in the dump");
    train(&dir, &["train", "--ham", f], 1, "1 relearned");
    assert_eq!(messages(&dir), (0, 1), "relearn moves the message to ham");
    assert_eq!(stats(&dir).2, once.2, "relearn keeps the same tokens");
    let d = dump(&dir, &dir.db());
    assert!(
        d.lines().filter(|l| l.starts_with("t ")).all(|l| l.split(' ').nth(1) == Some("0")),
        "after relearning the only message as ham no token may keep a spam count\n{d}"
    );
    train(&dir, &["train", "--untrain", f], 1, "1 unlearned");
    assert_eq!(stats(&dir), (0, 0, 0, 0), "unlearning the only message leaves nothing");
    train(&dir, &["train", "--untrain", f], 1, "1 not learned");
    // Mixed batch: the summary lists each outcome.
    let g = dir.join("g.eml");
    write(&g, &spam_msg(6));
    train(&dir, &["train", "--spam", f], 1, "1 learned");
    train(&dir, &["train", "--spam", f, s(&g)], 2, "1 learned, 1 already learned");
}

// ---------------------------------------------------------------------------
// dump / load / expire
// ---------------------------------------------------------------------------

#[test]
fn dump_then_load_into_empty_db_is_identical() {
    let dir = trained("dump");
    let d1 = dump(&dir, &dir.db());
    assert!(d1.starts_with("# hamlet dump\n"), "dump header\n{d1}");
    assert!(d1.lines().any(|l| l.starts_with("totals ")), "dump has a totals line\n{d1}");
    assert_eq!(d1.lines().filter(|l| l.starts_with("j ")).count(), 2 * N, "--journal lists every message");
    let file = dir.join("model.dump");
    write(&file, &d1);
    // From a file.
    let db2 = dir.join("db2/h.redb");
    run_in(&dir, Some(&db2), &["db", "init", "--empty"], None).ok();
    let o = run_in(&dir, Some(&db2), &["db", "load", s(&file)], None).ok();
    let n_tokens = d1.lines().filter(|l| l.starts_with("t ")).count();
    let n_grams = d1.lines().filter(|l| l.starts_with("g ")).count();
    assert!(n_grams > 0, "the dump holds the byte 4-gram weights\n{d1}");
    assert_eq!(o.stdout.trim(), format!("loaded {n_tokens} tokens, {n_grams} 4-gram weights, {} journal entries", 2 * N), "{}", o.describe());
    let d2 = dump(&dir, &db2);
    assert!(d1 == d2, "dump of the loaded database differs:\n{}", first_diff(&d1, &d2));
    // From stdin.
    let db3 = dir.join("db3/h.redb");
    run_in(&dir, Some(&db3), &["db", "init", "--empty"], None).ok();
    run_in(&dir, Some(&db3), &["db", "load", "-"], Some(d1.as_bytes())).ok();
    let d3 = dump(&dir, &db3);
    assert!(d1 == d3, "dump of the database loaded from stdin differs:\n{}", first_diff(&d1, &d3));
    // The loaded model scores like the original (same numbers).
    let a = run_stdin(&dir, &["check"], new_spam().as_bytes());
    let b = run_in(&dir, Some(&db2), &["check"], Some(new_spam().as_bytes()));
    assert_eq!(a.stdout, b.stdout, "a loaded copy must score identically");
    // Its journal came along: learning a trained message again is a no-op.
    let m = dir.join("trec/data/spam0.eml");
    let o = run_in(&dir, Some(&db2), &["train", "--spam", s(&m)], None).ok();
    assert_eq!(train_summary(&o).1, "1 already learned", "{}", o.describe());
}

fn first_diff(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}: {x:?} vs {y:?}", i + 1);
        }
    }
    format!("{} vs {} lines", a.lines().count(), b.lines().count())
}

#[test]
fn expire_runs_and_drops_old_tokens() {
    let dir = trained("expire");
    let before = stats(&dir);
    let o = run(&dir, &["db", "expire"]).ok();
    assert_eq!(
        o.stdout.trim(),
        format!("examined {} tokens, removed 0; removed 0 journal entries older than 180 days", before.2),
        "freshly trained tokens must survive expire\n{}",
        o.describe()
    );
    assert_eq!(stats(&dir), before);
    // Tokens last seen long ago (loaded from a dump) are dropped; recent ones stay.
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    let old = format!(
        "# hamlet dump\nschema 3\ntokenizer 2\ntotals 0 0\nbias 0\n\
         t 3 4 100 0 zz-ancient-token\n\
         t 1 0 {} 0 zz-hapax-40-days\n\
         t 1 0 {} 0 zz-hapax-5-days\n\
         t 5 0 {} 0 zz-common-100-days\n\
         j {} spam {} 1\n\
         j {} ham {} 1\n",
        today - 40,
        today - 5,
        today - 100,
        "ab".repeat(32),
        today - 181,
        "cd".repeat(32),
        today - 179
    );
    let f = dir.join("old.dump");
    write(&f, &old);
    run(&dir, &["db", "load", s(&f)]).ok();
    let o = run(&dir, &["db", "expire", "--batch", "7"]).ok();
    assert_eq!(
        o.stdout.trim(),
        format!("examined {} tokens, removed 2; removed 1 journal entries older than 180 days", before.2 + 4),
        "expire must drop the 1970 token, the 40-day hapax (defaults 180 / 30 days) and the 181-day journal entry\n{}",
        o.describe()
    );
    let d = dump(&dir, &dir.db());
    assert!(!d.contains("zz-ancient-token") && !d.contains("zz-hapax-40-days"), "expired tokens still in dump");
    assert!(d.contains("zz-hapax-5-days") && d.contains("zz-common-100-days"), "young tokens were expired");
    assert!(!d.contains(&"ab".repeat(32)) && d.contains(&"cd".repeat(32)), "the journal entry of 181 days ago must go, the one of 179 stay");
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[test]
fn nonexistent_file_is_a_one_line_error() {
    let dir = TempDir::new("nofile");
    run(&dir, &["db", "init", "--empty"]).ok();
    let missing = dir.join("does-not-exist.eml");
    for args in [
        vec!["train", "--spam", s(&missing)],
        vec!["train", "--untrain", s(&missing)],
        vec!["check", s(&missing)],
        vec!["db", "load", s(&missing)],
        vec!["eval", s(&missing)],
    ] {
        let o = run(&dir, &args).error();
        assert!(o.stderr.contains("does-not-exist.eml"), "the error should name the file\n{}", o.describe());
    }
    assert_eq!(stats(&dir), (0, 0, 0, 0), "failed commands changed the database");
}

#[test]
fn database_in_use_is_reported() {
    let dir = TempDir::new("inuse");
    run(&dir, &["db", "init", "--empty"]).ok();
    // The holder opens the database, then blocks reading its stdin.
    let mut c = command(&dir, Some(&dir.db()), &["check"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut holder = KillOnDrop(Some(c.spawn().unwrap()));
    let holder_stdin = holder.0.as_mut().unwrap().stdin.take().unwrap();
    // The holder may not have opened the database yet on the first try;
    // retry while the second command still gets in, within limits.
    let mut attempts = Vec::new();
    let start = Instant::now();
    let o = loop {
        std::thread::sleep(Duration::from_millis(200));
        assert!(holder.0.as_mut().unwrap().try_wait().unwrap().is_none(), "the holder `hamlet check` exited before its stdin was closed");
        // A writer: `db stats` reads, and read-only opens share the file.
        let o = run(&dir, &["db", "expire"]);
        if o.code != Some(0) {
            break o;
        }
        attempts.push(o.describe());
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a second process kept opening the database while `hamlet check` held it:\n{}",
            attempts.join("\n")
        );
    };
    let o = o.error();
    assert!(o.stderr.contains("in use"), "the error should say the database is in use\n{}", o.describe());
    // A write is refused too, and changes nothing.
    let f = dir.join("m.eml");
    write(&f, &spam_msg(0));
    let o = run(&dir, &["train", "--spam", s(&f)]).error();
    assert!(o.stderr.contains("in use"), "{}", o.describe());
    // Release the holder: it reads an empty message and finishes normally.
    drop(holder_stdin);
    let child = holder.0.take().unwrap();
    let o = finish(child, "hamlet check (holder)".into(), TIMEOUT);
    assert_eq!(o.code, Some(2), "the holder scores an empty message as unsure\n{}", o.describe());
    assert_no_panic(&o);
    assert_eq!(stats(&dir), (0, 0, 0, 0), "the refused train must not have learned anything");
}

#[test]
fn db_stats_shares_the_database_with_a_reader() {
    let dir = TempDir::new("shared");
    run(&dir, &["db", "init", "--empty"]).ok();
    let mut c = command(&dir, Some(&dir.db()), &["check"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut holder = KillOnDrop(Some(c.spawn().unwrap()));
    let holder_stdin = holder.0.as_mut().unwrap().stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stats(&dir), (0, 0, 0, 0));
    drop(holder_stdin);
    let o = finish(holder.0.take().unwrap(), "hamlet check (holder)".into(), TIMEOUT);
    assert_eq!(o.code, Some(2), "{}", o.describe());
}

#[test]
fn garbage_dump_loads_nothing() {
    let dir = trained("garbage");
    let before = stats(&dir);
    let dump_before = dump(&dir, &dir.db());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // Good lines first: a bad line anywhere must load nothing.
        (
            "bad-line.dump",
            b"# hamlet dump\nschema 3\ntokenizer 2\ntotals 5 5\nt 1 2 3 0.5 goodtoken\nthis is not a dump\n".to_vec(),
            "bad-line.dump:6",
        ),
        ("bad-number.dump", b"t 1 2 3 0.5 goodtoken\nt x 2 3 0.5 badtoken\n".to_vec(), "bad-number.dump:2"),
        ("wrong-schema.dump", b"schema 999\nt 1 2 3 0.5 goodtoken\n".to_vec(), "schema"),
        ("binary.dump", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "binary.dump"),
        ("mail.dump", spam_msg(1).into_bytes(), "mail.dump:1"),
    ];
    for (name, data, want) in cases {
        let f = dir.join(name);
        std::fs::write(&f, &data).unwrap();
        let o = run(&dir, &["db", "load", s(&f)]).error();
        assert!(o.stderr.contains(want), "the error should mention {want:?}\n{}", o.describe());
        assert_eq!(stats(&dir), before, "a failed load of {name} changed the stats");
    }
    let dump_after = dump(&dir, &dir.db());
    assert!(dump_before == dump_after, "a failed load changed the database: {}", first_diff(&dump_before, &dump_after));
}

// ---------------------------------------------------------------------------
// A message that once crashed the tokenizer
// ---------------------------------------------------------------------------

/// A Message-ID whose domain has a multi-byte character across byte 80.
fn hostile_msg() -> String {
    format!("Message-ID: <abc@{}>\r\nSubject: cheap pills\r\n\r\nviagra cheap pills\r\n", "\u{20ac}".repeat(30))
}

#[test]
fn hostile_message_in_every_mode() {
    // Each mode is tried and every failure is reported together.
    let dir = trained("hostile");
    let bad = dir.join("bad.eml");
    write(&bad, &hostile_msg());
    let mut failures = Vec::new();
    let panicked = |o: &Out| o.stdout.contains("panicked") || o.stderr.contains("panicked");
    // stdin
    let o = run_stdin(&dir, &["check"], hostile_msg().as_bytes());
    if !matches!(o.code, Some(0..=2)) || panicked(&o) {
        failures.push(format!("check from stdin must give a verdict (exit 0-2), without panic text\n{}", o.describe()));
    }
    // bulk, the bad file alone in its thread's chunk: no line may go missing
    let g1 = dir.join("g1.eml");
    let g2 = dir.join("g2.eml");
    write(&g1, &new_spam());
    write(&g2, &new_ham());
    let o = run(&dir, &["check", "--threads", "3", s(&g1), s(&bad), s(&g2)]);
    let names: Vec<&str> = o.stdout.lines().map(|l| l.split(' ').next().unwrap_or("")).collect();
    if o.code != Some(0) || panicked(&o) || names != [s(&g1), s(&bad), s(&g2)] {
        failures.push(format!("bulk check must exit 0 and print one line per file, in order, without panic text\n{}", o.describe()));
    }
    // train
    let o = run(&dir, &["train", "--spam", s(&bad)]);
    if o.code != Some(0) || panicked(&o) || !o.stdout.contains(": 1 learned") {
        failures.push(format!("train must learn the message\n{}", o.describe()));
    }
    assert!(failures.is_empty(), "{} of 3 modes failed:\n\n{}", failures.len(), failures.join("\n\n"));
}
