//! `hamlet imap-train` against a real Dovecot (Debian's `dovecot-imapd`;
//! `scripts/test.sh` installs it and creates the `vmail` user): first run,
//! re-run, Junk→INBOX (relearn), Junk→Trash (no ham learn), a UIDVALIDITY
//! reset, an interrupted run resumed, learning through `hamlet serve`, and
//! clear errors.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");
const PASSWORD: &str = "s3cret-imap";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A throw-away Dovecot on a free loopback port, user `tester`.
struct Dovecot {
    dir: PathBuf,
    port: u16,
    /// Implicit-TLS port, when started with TLS.
    imaps: Option<u16>,
}

impl Dovecot {
    fn start(name: &str) -> Dovecot {
        Dovecot::start_with(name, false)
    }

    /// With `tls`: a private CA (`ca.pem`) signs a certificate for
    /// 127.0.0.1; STARTTLS on the IMAP port, implicit TLS on another.
    fn start_with(name: &str, tls: bool) -> Dovecot {
        assert!(Path::new("/usr/sbin/dovecot").exists(), "dovecot is not installed: run scripts/test.sh, or `apt-get install -y dovecot-imapd`");
        let vmail = Command::new("id").args(["-u", "vmail"]).output().unwrap();
        assert!(
            vmail.status.success(),
            "no vmail user for Dovecot's mail processes: run scripts/test.sh, or \
             `useradd --system --no-create-home --shell /usr/sbin/nologin vmail`"
        );
        let dir = std::env::temp_dir().join(format!("hamlet-imap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in ["", ".Junk", ".Trash", ".Archive"] {
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(dir.join("mail/tester").join(f).join(sub)).unwrap();
            }
        }
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let port = free_port();
        let d = dir.to_str().unwrap();
        let imaps = tls.then(free_port);
        let ssl = if tls {
            make_certificates(&dir);
            format!("ssl = required\nssl_cert = <{d}/server.pem\nssl_key = <{d}/server.key\n")
        } else {
            "ssl = no\n".to_string()
        };
        let conf = format!(
            "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {d}/run\nstate_dir = {d}/run/state\nlog_path = {d}/dovecot.log\n\
             {ssl}disable_plaintext_auth = no\nauth_mechanisms = plain login\nmail_location = maildir:{d}/mail/%u\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/users\n}}\n\
             userdb {{\n  driver = static\n  args = uid=vmail gid=vmail home={d}/mail/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {}\n    ssl = yes\n  }}\n}}\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n  mailbox Junk {{\n    special_use = \\Junk\n  }}\n  mailbox Trash {{\n    special_use = \\Trash\n  }}\n}}\n",
            imaps.unwrap_or(0)
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        std::fs::write(dir.join("users"), format!("tester:{{PLAIN}}{PASSWORD}::::::\n")).unwrap();
        Dovecot { dir, port, imaps }
    }

    /// Puts messages into a folder's maildir (before the server starts, or
    /// between runs: Dovecot picks new files up).
    fn seed(&self, folder: &str, messages: &[String]) {
        let sub = if folder == "INBOX" { String::new() } else { format!(".{folder}") };
        // Delivered as an MDA would: written in tmp/, renamed into new/.
        let folder = self.dir.join("mail/tester").join(sub);
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        for m in messages {
            // Unique base names: maildir identifies a message by them.
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("{}.M{n}P{}.test", 1_700_000_000 + n, std::process::id());
            std::fs::write(folder.join("tmp").join(&name), m).unwrap();
            std::fs::rename(folder.join("tmp").join(&name), folder.join("new").join(&name)).unwrap();
        }
    }

    fn run(&self) {
        let chown = Command::new("chown").args(["-R", "vmail:vmail"]).arg(self.dir.join("mail")).status().unwrap();
        assert!(chown.success());
        let conf = self.dir.join("dovecot.conf");
        // Dovecot daemonizes; its child keeps any pipe open, so no capture.
        let status = Command::new("/usr/sbin/dovecot")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "dovecot failed to start; log: {}", std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default());
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dovecot never listened; log: {}", std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default());
    }

    /// Runs IMAP commands as tester; returns everything the server said.
    fn imap(&self, commands: &[&str]) -> String {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut all = String::new();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut cmds = vec![format!("LOGIN tester {PASSWORD}")];
        cmds.extend(commands.iter().map(|c| c.to_string()));
        cmds.push("LOGOUT".into());
        for (i, c) in cmds.iter().enumerate() {
            let tag = format!("t{i}");
            write!(w, "{tag} {c}\r\n").unwrap();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 {
                    return all;
                }
                all.push_str(&line);
                if line.starts_with(&format!("{tag} ")) {
                    assert!(line.starts_with(&format!("{tag} OK")), "{c}: {line}");
                    break;
                }
            }
        }
        all
    }

    /// A hamlet.toml with one account for tester.
    fn config(&self, extra_top: &str, extra_account: &str) -> PathBuf {
        let path = self.dir.join("hamlet.toml");
        let text = format!(
            "{extra_top}\n[imap]\nbatch = 5\nstate = \"{}\"\n\n[[imap.account]]\nname = \"tester\"\nhost = \"127.0.0.1\"\nport = {}\n\
             tls = \"plain\"\nuser = \"tester\"\npassword_file = \"{}\"\nspam_folders = [\"Junk\"]\nham_folders = [\"INBOX\"]\n\
             ignore_folders = [\"Trash\"]\n{extra_account}\n",
            self.dir.join("imap-state.redb").display(),
            self.port,
            self.dir.join("password").display()
        );
        std::fs::write(self.dir.join("password"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("run/master.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            for _ in 0..50 {
                if !self.dir.join("run/master.pid").exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throw-away CA and a server certificate for 127.0.0.1 it signed.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl is not installed: apt-get install -y openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=hamlet test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Made-up mail, distinct per index.
fn message(spam: bool, i: usize) -> String {
    if spam {
        format!(
            "From: <deals{i}@promo.example.com>\nTo: <tester@example.net>\nSubject: cheap pills offer {i}\nMessage-ID: <s{i}@promo.example.com>\n\n\
             Buy cheap pills now, claim your free prize {i}. Limited offer, click here.\n"
        )
    } else {
        format!(
            "From: <friend{i}@club.example.org>\nTo: <tester@example.net>\nSubject: club meeting {i}\nMessage-ID: <h{i}@club.example.org>\n\n\
             Hello, the club meets on Thursday {i}. Bring the minutes and the rota.\n"
        )
    }
}

fn hamlet(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--db").arg(db).args(args).output().unwrap()
}

fn train(db: &Path, cfg: &Path, extra: &[&str]) -> String {
    let mut args = vec!["imap-train", "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = hamlet(db, &args);
    assert!(out.status.success(), "imap-train failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (spam, ham) messages learned, from `hamlet db stats`.
fn learned(db: &Path) -> (u64, u64) {
    let out = String::from_utf8_lossy(&hamlet(db, &["db", "stats"]).stdout).into_owned();
    let count = |class: &str| -> u64 {
        out.lines().find(|l| l.starts_with(class)).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()).unwrap()
    };
    (count("spam"), count("ham"))
}

fn empty_db(dir: &Path) -> PathBuf {
    let db = dir.join("h.redb");
    assert!(hamlet(&db, &["db", "init", "--empty"]).status.success());
    db
}

#[test]
fn learns_once_relearns_moves_and_survives_uidvalidity_reset() {
    let d = Dovecot::start("main");
    d.seed("Junk", &(0..6).map(|i| message(true, i)).collect::<Vec<_>>());
    d.seed("INBOX", &(0..6).map(|i| message(false, i)).collect::<Vec<_>>());
    d.run();
    let db = empty_db(&d.dir);
    let cfg = d.config("", "");

    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/Junk: fetched 6, learned 6, relearned 0, skipped 0"), "{out}");
    assert!(out.contains("tester/INBOX: fetched 6, learned 6, relearned 0, skipped 0"), "{out}");
    assert_eq!(learned(&db), (6, 6));

    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/Junk: fetched 0,") && out.contains("tester/INBOX: fetched 0,"), "re-run reads nothing: {out}");
    assert_eq!(learned(&db), (6, 6));

    // The user rescues a message from Junk: relearned as ham.
    d.imap(&["SELECT Junk", "UID MOVE 1 INBOX"]);
    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/INBOX: fetched 1, learned 0, relearned 1, skipped 0"), "{out}");
    assert_eq!(learned(&db), (5, 7));

    // A message deleted from Junk (moved to Trash) is not learned as ham.
    d.imap(&["SELECT Junk", "UID MOVE 2 Trash"]);
    let out = train(&db, &cfg, &[]);
    assert!(!out.contains("Trash"), "{out}");
    assert_eq!(learned(&db), (5, 7));

    // New mail arrives in Junk: only it is read.
    d.seed("Junk", &[message(true, 100)]);
    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/Junk: fetched 1, learned 1"), "{out}");
    assert_eq!(learned(&db), (6, 7));

    // INBOX's UIDVALIDITY changes (a rebuilt mail store): read afresh,
    // nothing learned twice.
    let inbox = d.dir.join("mail/tester");
    let uidlist = std::fs::read_to_string(inbox.join("dovecot-uidlist")).unwrap();
    let (first, rest) = uidlist.split_once('\n').unwrap();
    let first: Vec<String> = first
        .split(' ')
        .map(|f| if let Some(v) = f.strip_prefix('V') { format!("V{}", v.parse::<u64>().unwrap() + 12345) } else { f.to_string() })
        .collect();
    std::fs::write(inbox.join("dovecot-uidlist"), format!("{}\n{rest}", first.join(" "))).unwrap();
    for f in std::fs::read_dir(&inbox).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("dovecot.index") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/INBOX: fetched 7, learned 0, relearned 0, skipped 7 (UIDVALIDITY changed: read afresh)"), "{out}");
    assert_eq!(learned(&db), (6, 7));
}

#[test]
fn interrupted_run_resumes_and_flags() {
    let d = Dovecot::start("resume");
    d.seed("Junk", &(0..12).map(|i| message(true, i)).collect::<Vec<_>>());
    d.run();
    let db = empty_db(&d.dir);
    let cfg = d.config("", "after = \"flag\"\n");
    let out = train(&db, &cfg, &["--max-messages", "7"]);
    assert!(out.contains("tester/Junk: fetched 7, learned 7"), "{out}");
    assert_eq!(learned(&db).0, 7);
    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/Junk: fetched 5, learned 5"), "resumes after the 7th: {out}");
    assert_eq!(learned(&db).0, 12);
    let flags = d.imap(&["SELECT Junk", "UID FETCH 1:* (FLAGS)"]);
    let flagged = flags.lines().filter(|l| l.contains(" FETCH ") && l.contains("$HamletLearned")).count();
    assert_eq!(flagged, 12, "{flags}");
}

#[test]
fn learns_through_serve_into_a_per_user_model() {
    let d = Dovecot::start("serve");
    d.seed("Junk", &(0..3).map(|i| message(true, i)).collect::<Vec<_>>());
    d.run();
    let db = empty_db(&d.dir);
    let http = format!("127.0.0.1:{}", free_port());
    let users = d.dir.join("users-models");
    let top = format!("http = \"{http}\"\nlearn_token = \"tok\"\nusers_dir = \"{}\"\n", users.display());
    let cfg = d.config(&top, "model = \"user\"\nmodel_user = \"alice\"\n");
    let mut serve = Command::new(BIN)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if TcpStream::connect(&http).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = hamlet(&db, &["imap-train", "--config", cfg.to_str().unwrap()]);
    let _ = serve.kill();
    let _ = serve.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("learning through its HTTP API"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("tester/Junk: fetched 3, learned 3"));
    assert!(users.join("alice.redb").exists(), "learned into alice's model");
    assert_eq!(learned(&db), (0, 0), "the shared model learned nothing");
}

#[test]
fn clear_errors() {
    let d = Dovecot::start("errors");
    d.run();
    let db = empty_db(&d.dir);
    let cfg = d.config("", "");
    std::fs::write(d.dir.join("password"), "wrong\n").unwrap();
    let out = hamlet(&db, &["imap-train", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(err.contains("login as tester failed"), "{err}");
    assert!(!err.contains("wrong"), "the password is never shown: {err}");
    std::fs::write(d.dir.join("password"), format!("{PASSWORD}\n")).unwrap();
    let cfg = d.config("", "sent_folders = [\"Sent Items\"]\n");
    let out = hamlet(&db, &["imap-train", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Sent Items") && err.contains("cannot open the folder"), "{err}");
    let closed = free_port();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&format!("port = {}", d.port), &format!("port = {closed}"));
    std::fs::write(&cfg, text).unwrap();
    let err = String::from_utf8_lossy(&hamlet(&db, &["imap-train", "--config", cfg.to_str().unwrap()]).stderr).into_owned();
    assert!(err.contains("cannot connect to 127.0.0.1"), "{err}");
}

/// `--watch`: new Junk mail wakes the job through IDLE (well before the
/// poll interval) and is learned; SIGTERM stops it cleanly.
#[test]
fn watch_learns_new_mail_through_idle() {
    let d = Dovecot::start("watch");
    d.seed("Junk", &[message(true, 0)]);
    d.run();
    let db = empty_db(&d.dir);
    let cfg = d.config("log = \"hamlet=info\"\n", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("batch = 5\n", "batch = 5\npoll_s = 600\n");
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(BIN)
        .arg("--db")
        .arg(&db)
        .args(["imap-train", "--watch", "--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(line.clone());
            line.clear();
        }
    });
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            if line.contains(what) {
                return line;
            }
        }
        panic!("watch never logged {what:?}");
    };
    let first = wait_for("imap pass");
    assert!(first.contains("fetched=1") && first.contains("learned=1"), "{first}");
    std::thread::sleep(Duration::from_secs(1));
    d.seed("Junk", &[message(true, 1), message(true, 2)]);
    let second = wait_for("imap pass");
    assert!(second.contains("fetched=2") && second.contains("learned=2"), "IDLE woke the job: {second}");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM: clean exit");
    assert_eq!(learned(&db), (3, 0));
}

/// Implicit TLS and STARTTLS against a server whose certificate a private CA
/// signed: trusted with `ca_file`, refused (a clear TLS error) without it.
#[test]
fn tls_and_starttls() {
    let d = Dovecot::start_with("tls", true);
    d.seed("Junk", &[message(true, 0), message(true, 1)]);
    d.run();
    let db = empty_db(&d.dir);
    let ca = d.dir.join("ca.pem");
    let imaps = d.imaps.unwrap();
    let cfg = d.config("", &format!("ca_file = \"{}\"\n", ca.display()));
    let text = std::fs::read_to_string(&cfg).unwrap();
    let implicit = text.replace("tls = \"plain\"", "tls = \"implicit\"").replace(&format!("port = {}", d.port), &format!("port = {imaps}"));
    std::fs::write(&cfg, &implicit).unwrap();
    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/Junk: fetched 2, learned 2"), "implicit TLS: {out}");
    let starttls = text.replace("tls = \"plain\"", "tls = \"starttls\"");
    std::fs::write(&cfg, &starttls).unwrap();
    d.seed("Junk", &[message(true, 2)]);
    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/Junk: fetched 1, learned 1"), "STARTTLS: {out}");
    // Without the CA the certificate is not trusted.
    std::fs::write(&cfg, implicit.replace(&format!("ca_file = \"{}\"\n", ca.display()), "")).unwrap();
    let out = hamlet(&db, &["imap-train", "--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(err.contains("TLS with 127.0.0.1") && err.contains("handshake failed"), "{err}");
}

/// `after = "delete"` removes exactly the learned messages.
#[test]
fn delete_after_learning() {
    let d = Dovecot::start("delete");
    d.seed("Junk", &(0..3).map(|i| message(true, i)).collect::<Vec<_>>());
    d.run();
    let db = empty_db(&d.dir);
    let cfg = d.config("", "after = \"delete\"\n");
    let out = train(&db, &cfg, &[]);
    assert!(out.contains("tester/Junk: fetched 3, learned 3"), "{out}");
    let status = d.imap(&["STATUS Junk (MESSAGES)"]);
    assert!(status.contains("(MESSAGES 0)"), "{status}");
    d.seed("Junk", &[message(true, 9)]);
    assert!(train(&db, &cfg, &[]).contains("tester/Junk: fetched 1, learned 1"));
    assert_eq!(learned(&db).0, 4);
}
