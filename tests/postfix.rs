//! End to end with the real Postfix (Debian's `postfix`) and `swaks` as the
//! SMTP client: Postfix's `check_policy_service` asks `hamlet serve
//! --policy`; a new triplet is greylisted (450 4.2.0), accepted after the
//! delay, and a bad HELO is rejected (554 5.5.2). swaks's XCLIENT stands in
//! for a remote client address. And the milter: Postfix's `smtpd_milters`
//! hands each message to `hamlet serve --milter`, which rejects spam
//! during the SMTP dialogue and adds its headers to the rest.
//! `scripts/test.sh` installs both.

mod common;

use common::serve::free_port;
use common::unbound::unbound;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");

struct Stack {
    dir: PathBuf,
    smtp: u16,
    http: u16,
    hamlet: Child,
}

impl Stack {
    /// hamlet's log and Postfix's, for a failing assertion's message.
    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_else(|e| format!("({f}: {e})"));
        format!("hamlet.log:\n{}\nmaillog:\n{}", read("hamlet.log"), read("maillog"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(self.dir.join("conf")).arg("stop").stderr(Stdio::null()).status();
        let _ = Command::new("kill").arg(self.hamlet.id().to_string()).status();
        let _ = self.hamlet.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness(file: &str) -> String {
    let shared = std::env::var("HAMLET_SHARED").unwrap_or_else(|_| "../shared".into());
    let path = Path::new(&shared).join("reference/harness").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (the shared harness configs; set HAMLET_SHARED)", path.display()))
}

fn start() -> Stack {
    start_with(None)
}

/// Postfix and `hamlet serve`: with the policy service (`milter` `None`) or
/// the milter (rejects from 0.99; the starter model, ungated; Postfix holds what it
/// accepts, so the test can read the headers hamlet added) with this more
/// of hamlet.toml.
fn start_with(milter_config: Option<&str>) -> Stack {
    let milter = milter_config.is_some();
    for (bin, pkg) in [("/usr/sbin/postfix", "postfix"), ("/usr/bin/swaks", "swaks")] {
        assert!(Path::new(bin).exists(), "{pkg} is not installed: run scripts/test.sh, or `apt-get install -y {pkg}`");
    }
    // One directory per stack: the tests run in parallel.
    static STACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hamlet-postfix-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["conf", "spool", "data"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    assert!(Command::new("chmod").arg("755").arg(&dir).status().unwrap().success());
    assert!(Command::new("chown").arg("postfix").arg(dir.join("data")).status().unwrap().success());
    let (smtp, policy, http) = (free_port(), free_port(), free_port());
    let d = dir.to_str().unwrap();
    // Postfix's own HELO checks off: the HELO verdict is hamlet's. With the
    // milter, no policy service.
    let mut main = harness("postfix-main.cf")
        .replace("@DIR@", d)
        .replace("@POLICY_PORT@", &policy.to_string())
        .lines()
        .map(|l| if l.starts_with("smtpd_helo_restrictions") { "smtpd_helo_restrictions =" } else { l })
        .map(|l| if milter && l.starts_with("smtpd_recipient_restrictions") { "smtpd_recipient_restrictions = reject_non_fqdn_recipient" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    if milter {
        // Every accepted message held, so the test can read what hamlet
        // did to it (which of its actions applies: a unit test).
        main += &format!(
            "\nsmtpd_milters = inet:127.0.0.1:{policy}\nmilter_default_action = accept\nsmtpd_end_of_data_restrictions = check_client_access static:HOLD\n"
        );
    }
    std::fs::write(dir.join("conf/main.cf"), main + "\n").unwrap();
    std::fs::write(dir.join("conf/master.cf"), harness("postfix-master.cf").replace("@SMTP_PORT@", &smtp.to_string())).unwrap();
    let extra = match milter_config {
        // cold_start = 0: the starter model decides at once (a fresh
        // install's gate would keep it below the spam cutoff; tests/cli.rs).
        Some(more) => format!("max_body_bytes = 65536\ninflight_body_bytes = 1048576\nmilter_reject_at = 0.99\ncold_start = 0\n{more}"),
        None => "[envelope.greylist]\nenabled = true\ndelay_s = 2\n".to_string(),
    };
    std::fs::write(dir.join("hamlet.toml"), format!("log = \"info\"\nhttp = \"127.0.0.1:{http}\"\n{extra}")).unwrap();
    let db = dir.join("h.redb");
    let init: &[&str] = if milter { &["db", "init"] } else { &["db", "init", "--empty"] };
    assert!(Command::new(BIN).arg("--db").arg(&db).args(init).stdout(Stdio::null()).status().unwrap().success());
    let listen = format!("127.0.0.1:{policy}");
    let hamlet = Command::new(BIN)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--config", dir.join("hamlet.toml").to_str().unwrap(), if milter { "--milter" } else { "--policy" }, &listen])
        .stderr(std::fs::File::create(dir.join("hamlet.log")).unwrap())
        .spawn()
        .unwrap();
    let mut stack = Stack { dir, smtp, http, hamlet };
    let out = Command::new("postfix").arg("-c").arg(stack.dir.join("conf")).arg("start").output().unwrap();
    assert!(out.status.success(), "postfix start: {}", String::from_utf8_lossy(&out.stderr));
    for _ in 0..100 {
        // Ready when Postfix listens and this hamlet serves its port: a
        // port another process took since free_port() would accept too.
        if let Some(status) = stack.hamlet.try_wait().unwrap() {
            panic!("hamlet serve exited ({status}) before the first transaction\n{}", stack.logs());
        }
        if std::net::TcpStream::connect(("127.0.0.1", stack.smtp)).is_ok() && (milter || policy_answers(policy)) {
            return stack;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("postfix or hamlet never listened\n{}", stack.logs());
}

/// Whether hamlet's policy service on `port` answers a request as Postfix
/// would send it at CONNECT (which it answers `DUNNO` without checks).
fn policy_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    if c.write_all(b"request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address=127.0.0.1\n\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 14];
    c.read_exact(&mut reply).is_ok() && &reply == b"action=DUNNO\n\n"
}

/// One SMTP transaction through swaks; its transcript.
fn swaks(stack: &Stack, helo: &str, from: &str, client: &str) -> String {
    swaks_as(stack, helo, from, client, "mail.other.example")
}

/// [`swaks`] from a client of this name.
fn swaks_as(stack: &Stack, helo: &str, from: &str, client: &str, name: &str) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", stack.smtp), "--helo", helo, "--from", from, "--to", "erin@corp.example"])
        .args(["--xclient-addr", client, "--xclient-name", name, "--timeout", "20"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn postfix_greylists_then_accepts_and_rejects_a_bad_helo() {
    let s = start();
    let first = swaks(&s, "mail.sender.example", "frank@sender.example", "198.51.100.23");
    assert!(first.contains("450 4.2.0 <erin@corp.example>: Recipient address rejected: Greylisted"), "{first}\n{}", s.logs());
    std::thread::sleep(Duration::from_millis(2200));
    let retry = swaks(&s, "mail.sender.example", "frank@sender.example", "198.51.100.23");
    assert!(retry.contains("250 2.0.0 Ok: queued"), "after the delay: {retry}\n{}", s.logs());
    let bad = swaks(&s, "bad_helo!", "frank@sender.example", "198.51.100.24");
    assert!(bad.contains("554 5.5.2") && bad.contains("HELO_INVALID"), "{bad}\n{}", s.logs());
}

/// One message through swaks (`--data FILE`); its transcript.
fn swaks_data(stack: &Stack, data: &Path) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", stack.smtp), "--helo", "mail.sender.example", "--from", "frank@sender.example"])
        .args(["--to", "erin@corp.example", "--timeout", "20", "--data"])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The queued message of a transcript that says `queued as ID`.
fn queued(stack: &Stack, transcript: &str) -> String {
    let id = transcript.split("queued as ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_else(|| panic!("not queued: {transcript}"));
    let out = Command::new("postcat").arg("-c").arg(stack.dir.join("conf")).args(["-h", "-q", id]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn postfix_milter_rejects_spam_and_marks_ham() {
    let corpora = std::env::var("HAMLET_CORPORA").unwrap_or_else(|_| "target/corpora".into());
    let spam_dir = Path::new(&corpora).join("spamassassin/spam");
    let mut spams: Vec<PathBuf> = std::fs::read_dir(&spam_dir)
        .unwrap_or_else(|e| panic!("{}: {e}: unpack the corpora (scripts/test.sh does)", spam_dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    spams.sort();
    let s = start_with(Some(""));
    // Ham, with a forged verdict from outside: accepted, the forged field
    // gone, hamlet's fields added.
    let ham = std::fs::read_to_string("corpus/messages/01-plain.eml").unwrap().replacen("Subject:", "X-Spam-Flag: YES\r\nSubject:", 1);
    let ham_file = s.dir.join("ham.eml");
    std::fs::write(&ham_file, ham).unwrap();
    let t = swaks_data(&s, &ham_file);
    assert!(t.contains("250 2.0.0 Ok: queued"), "{t}");
    let held = queued(&s, &t);
    assert!(held.contains("X-Spam-Checker-Version: hamlet"), "hamlet's headers: {held}");
    assert!(held.contains("X-Spam-Flag: NO") && !held.contains("X-Spam-Flag: YES"), "the forged flag is replaced: {held}");
    assert!(held.contains("X-Spam-Status: No") && held.contains("tests=HAMLET_"), "{held}");
    // Over max_body_bytes: accepted unscored, and said so; the forged
    // flag still goes.
    let big = std::fs::read_to_string(&ham_file).unwrap() + &"the tomato beds will be rotated next spring\r\n".repeat(2000);
    let big_file = s.dir.join("big.eml");
    std::fs::write(&big_file, big).unwrap();
    let t = swaks_data(&s, &big_file);
    let held = queued(&s, &t);
    assert!(held.contains("X-Spam-Status: unscored (too big)") && !held.contains("X-Spam-Flag: YES"), "{held}");
    // Spam the starter model knows: refused during the dialogue.
    let spam = swaks_data(&s, &spams[0]);
    assert!(spam.contains("550 5.7.1 message refused as spam (hamlet"), "{spam}");
    // hamlet gone: Postfix's milter_default_action takes the mail anyway.
    let mut s = s;
    let _ = s.hamlet.kill();
    let _ = s.hamlet.wait();
    let after = swaks_data(&s, &ham_file);
    assert!(after.contains("250 2.0.0 Ok: queued"), "mail is never lost to a stopped milter: {after}");
}

/// The envelope at its SMTP stage through the milter alone (no policy
/// service): a client on the DNS list is refused when it connects, a new
/// triplet is greylisted at RCPT (450) and accepted after the delay, with
/// hamlet's trace fields.
#[test]
fn postfix_milter_greylists_and_refuses_a_listed_client() {
    let u = unbound("postfix-milter");
    let more = format!(
        "[envelope]\nmy_names = [\"mx.corp.example\"]\n[envelope.greylist]\nenabled = true\ndelay_s = 2\n[envelope.spf]\nenabled = true\n\
         [[envelope.dnsbl]]\nzone = \"bl.test\"\naction = \"reject\"\n[envelope.dns]\nnameservers = [\"127.0.0.1:{}\"]\n",
        u.port
    );
    let s = start_with(Some(&more));
    let listed = swaks_as(&s, "mail.example.test", "alice@example.test", "127.0.0.2", "listed.example");
    // Postfix asks the milter again after XCLIENT, and answers a refused
    // connection its own way.
    assert!(listed.contains("554 mx.corp.example ESMTP not accepting connections"), "{listed}");
    let first = swaks_as(&s, "mail.example.test", "alice@example.test", "192.0.2.55", "mail.example.test");
    assert!(first.contains("450 4.2.0 Greylisted"), "{first}");
    std::thread::sleep(Duration::from_millis(2200));
    let retry = swaks_as(&s, "mail.example.test", "alice@example.test", "192.0.2.55", "mail.example.test");
    assert!(retry.contains("250 2.0.0 Ok: queued"), "after the delay: {retry}\n{}", s.logs());
    let held = queued(&s, &retry);
    for field in
        ["X-Greylist: delayed", "Received-SPF: pass", "Authentication-Results: mx.corp.example;", "spf=pass smtp.mailfrom=alice@example.test"]
    {
        assert!(held.contains(field), "{field} in {held}");
    }
}

/// 200 SMTP sessions at once through Postfix and the milter: every
/// message is scored once and held once, none lost.
#[test]
fn postfix_milter_takes_200_sessions_at_once() {
    let s = start_with(Some("milter_max_connections = 256\n"));
    let out = Command::new("smtp-source")
        .args(["-s", "200", "-m", "200", "-l", "3000", "-M", "mail.sender.example", "-f", "frank@sender.example", "-t", "erin@corp.example"])
        .arg(format!("127.0.0.1:{}", s.smtp))
        .output()
        .unwrap();
    assert!(out.status.success(), "smtp-source: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let held = || -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut dirs = vec![s.dir.join("spool/hold")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() { dirs.push(e.path()) } else { files.push(e.path()) }
            }
        }
        files
    };
    // Postfix's cleanup files each message a moment after the SMTP reply.
    for _ in 0..100 {
        if held().len() >= 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let files = held();
    assert_eq!(files.len(), 200, "every message accepted and held once");
    for f in files.iter().take(20) {
        let id = f.file_name().unwrap().to_string_lossy().into_owned();
        let out = Command::new("postcat").arg("-c").arg(s.dir.join("conf")).args(["-h", "-q", &id]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let log = std::fs::read_to_string(s.dir.join("maillog")).unwrap_or_default();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("warning") || l.contains("milter")).take(20).collect();
        assert_eq!(text.matches("X-Spam-Checker-Version: hamlet").count(), 1, "scored once: {text}\nPostfix's warnings:\n{}", warnings.join("\n"));
    }
    let (_, m) = common::serve::http(s.http, "GET", "/metrics", "", b"");
    assert!(m.contains("hamlet_milter_total{stage=\"eom\",result=\"add_headers\"} 200"), "{m}");
}
