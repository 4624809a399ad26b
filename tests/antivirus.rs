//! Antivirus with a real clamd (Debian's `clamav-daemon`; `scripts/test.sh`
//! installs it), started in the foreground on a loopback port with only a
//! signature database the test writes itself (`sigtool --md5` of a test
//! payload and of the EICAR test file; there is no network for freshclam).
//! A message with the payload as a base64 attachment, one with it inside a
//! zip attachment and a clean one go through HTTP (`/v1/check`, rspamd's
//! `checkv2`), SPAMD and the milter (miltertest); and clamd stopped, silent
//! or talking nonsense gives the configured failure action within the
//! budget.

mod common;

use common::base64;
use common::serve::{Served, free_port, http};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hamlet-av-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The test payload: harmless bytes the test's own signature names.
const PAYLOAD: &[u8] = b"hamlet antivirus test payload: not a virus, a signature the test makes\n";
/// The EICAR anti-virus test file.
const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

struct Clamd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn clamd() -> Clamd {
    for (bin, pkg) in [("/usr/sbin/clamd", "clamav-daemon"), ("/usr/bin/sigtool", "clamav")] {
        assert!(Path::new(bin).exists(), "{pkg} is not installed: run scripts/test.sh, or `apt-get install -y {pkg}`");
    }
    let dir = tmp("clamd");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let mut sigs = String::new();
    for (name, bytes) in [("payload.bin", PAYLOAD), ("eicar.com", EICAR)] {
        let f = dir.join(name);
        std::fs::write(&f, bytes).unwrap();
        let out = Command::new("sigtool").arg("--md5").arg(&f).output().unwrap();
        assert!(out.status.success(), "sigtool: {}", String::from_utf8_lossy(&out.stderr));
        sigs += &String::from_utf8_lossy(&out.stdout);
    }
    std::fs::write(dir.join("db/test.hdb"), sigs).unwrap();
    let port = free_port();
    let d = dir.display();
    std::fs::write(
        dir.join("clamd.conf"),
        format!(
            "Foreground yes\nDatabaseDirectory {d}/db\nTCPSocket {port}\nTCPAddr 127.0.0.1\nLogFile {d}/clamd.log\nPidFile {d}/clamd.pid\n\
             StreamMaxLength 10M\nUser root\n"
        ),
    )
    .unwrap();
    let mut child =
        Command::new("/usr/sbin/clamd").arg("-c").arg(dir.join("clamd.conf")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // clamd loads its database before it listens: a few seconds.
    for _ in 0..600 {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            let mut pong = String::new();
            if c.write_all(b"zPING\0").is_ok() && c.read_to_string(&mut pong).is_ok() && pong.starts_with("PONG") {
                return Clamd { child, port, dir };
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("clamd never answered PING: {}", std::fs::read_to_string(dir.join("clamd.log")).unwrap_or_default());
}

/// A message with `attachment` (base64) named `name`.
fn with_attachment(name: &str, ctype: &str, attachment: &[u8]) -> Vec<u8> {
    use std::fmt::Write as _;
    // MIME lines of 76 characters.
    let b64 = base64(attachment).as_bytes().chunks(76).map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>().join("\r\n");
    let mut m = String::new();
    let _ = write!(
        m,
        "From: Alice <alice@example.test>\r\nTo: erin@corp.example\r\nSubject: the file you asked for\r\nMessage-ID: <{name}@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n\
         Hi Erin,\r\nhere it is.\r\nAlice\r\n--b1\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b1--\r\n"
    );
    m.into_bytes()
}

/// The payload inside a zip file (made by Python's zipfile).
fn zipped(dir: &Path) -> Vec<u8> {
    let src = dir.join("payload.bin");
    std::fs::write(&src, PAYLOAD).unwrap();
    let zip = dir.join("payload.zip");
    let script = format!("import zipfile\nwith zipfile.ZipFile({:?}, 'w', zipfile.ZIP_DEFLATED) as z: z.write({:?}, 'payload.bin')\n", zip, src);
    let ok = Command::new("python3").arg("-c").arg(script).status().unwrap().success();
    assert!(ok, "python3 zipfile");
    std::fs::read(zip).unwrap()
}

const CLEAN: &[u8] =
    b"From: Alice <alice@example.test>\r\nTo: erin@corp.example\r\nSubject: the garden plan\r\nMessage-ID: <clean@example.test>\r\n\r\n\
    Hi Erin,\r\nthe tomato beds will be rotated next spring.\r\nAlice\r\n";

/// `hamlet serve` with HTTP, SPAMD and the milter, `[antivirus]` as given.
struct Server {
    served: Served,
    http: u16,
    spamd: u16,
    milter: u16,
}

fn server(name: &str, antivirus: &str) -> Server {
    let (http, spamd, milter) = (free_port(), free_port(), free_port());
    let toml = format!(
        "log = \"warn\"\nhttp = \"127.0.0.1:{http}\"\nspamd = \"127.0.0.1:{spamd}\"\nmilter = \"127.0.0.1:{milter}\"\nlearn_token = \"t0ken\"\n\
         [autolearn]\nenabled = true\n[antivirus]\n{antivirus}\n"
    );
    Server { served: Served::start(&format!("av-{name}"), &toml, &[http, spamd, milter]), http, spamd, milter }
}

fn check(s: &Server, msg: &[u8]) -> serde_json::Value {
    let (status, body) = http(s.http, "POST", "/v1/check", "", msg);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A SPAMD request; the whole reply.
fn spamd(s: &Server, command: &str, msg: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", s.spamd)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(format!("{command} SPAMC/1.5\r\nContent-length: {}\r\n\r\n", msg.len()).as_bytes()).unwrap();
    c.write_all(msg).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// A miltertest session that sends `msg` (headers, then its body from a
/// file) and runs `checks` after end of message.
fn milter(s: &Server, name: &str, msg: &[u8], checks: &str) {
    assert!(Path::new("/usr/bin/miltertest").exists(), "miltertest is not installed: run scripts/test.sh, or `apt-get install -y miltertest`");
    let text = String::from_utf8_lossy(msg);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body_file = s.served.dir.join(format!("{name}.body"));
    std::fs::write(&body_file, body).unwrap();
    let mut headers = String::new();
    for line in head.split("\r\n") {
        let (n, v) = line.split_once(": ").unwrap();
        headers += &format!("mt.header(conn, {n:?}, {v:?})\n");
    }
    let script = format!(
        r#"
        function check(ok, what) if not ok then error(what) end end
        local conn = mt.connect("inet:{port}@127.0.0.1", 20, 0.1)
        check(conn ~= nil, "connect")
        mt.conninfo(conn, "mail.example.test", "192.0.2.55")
        mt.helo(conn, "mail.example.test")
        mt.mailfrom(conn, "<alice@example.test>")
        mt.rcptto(conn, "<erin@corp.example>")
        {headers}
        mt.eoh(conn)
        mt.bodyfile(conn, {body:?})
        check(mt.eom(conn) == nil, "eom")
        {checks}
        mt.disconnect(conn)
        "#,
        port = s.milter,
        body = body_file.to_str().unwrap()
    );
    let file = s.served.dir.join(format!("{name}.lua"));
    std::fs::write(&file, script).unwrap();
    let out = Command::new("miltertest").arg("-s").arg(&file).output().unwrap();
    assert!(out.status.success(), "miltertest {name}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn infected_attachments_are_found_through_every_front_end() {
    let c = clamd();
    let s = server("clamd", &format!("clamd = \"tcp:127.0.0.1:{}\"\naction = \"reject\"", c.port));
    let attached = with_attachment("payload.bin", "application/octet-stream", PAYLOAD);
    let zip = with_attachment("payload.zip", "application/zip", &zipped(&s.served.dir));
    let eicar = with_attachment("eicar.com", "application/octet-stream", EICAR);
    for (what, msg) in [("base64 attachment", &attached), ("inside a zip", &zip), ("EICAR", &eicar)] {
        let v = check(&s, msg);
        assert_eq!(v["stages"]["antivirus"]["result"], "virus", "{what}: {v}");
        assert!(v["stages"]["antivirus"]["name"].as_str().unwrap().contains(".UNOFFICIAL"), "{what}: {v}");
        assert_eq!(v["stages"]["antivirus"]["action"], "reject", "{what}");
        assert_eq!(v["verdict"], "spam", "{what}: an infected message is never ham");
        assert_eq!(v["stages"]["envelope"]["decision"], "reject", "{what}");
    }
    let v = check(&s, CLEAN);
    assert_eq!((v["stages"]["antivirus"]["result"].as_str(), v["stages"]["antivirus"]["action"].as_str()), (Some("clean"), Some("none")), "{v}");
    assert_ne!(v["verdict"], "spam");

    // rspamd's checkv2: the symbol with the signature, the reject action.
    let (status, body) = http(s.http, "POST", "/checkv2", "", &zip);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["action"], "reject", "{v}");
    assert!(v["symbols"]["AV_VIRUS"]["options"][0].as_str().unwrap().starts_with("payload.bin"), "{v}");
    let (_, body) = http(s.http, "POST", "/checkv2", "", CLEAN);
    assert!(!body.contains("AV_VIRUS"), "{body}");

    // SPAMD: the header and the symbol.
    let r = spamd(&s, "HEADERS", &attached);
    assert!(r.contains("X-Virus-Status: Infected (payload.bin.UNOFFICIAL)") && r.contains("Spam: True"), "{r}");
    assert!(spamd(&s, "SYMBOLS", &zip).contains("AV_VIRUS"));
    assert!(spamd(&s, "HEADERS", CLEAN).contains("X-Virus-Status: Clean"));

    // The milter: refused at end of message with the signature's name.
    milter(&s, "infected", &attached, "check(mt.getreply(conn) == SMFIR_REPLYCODE, 'refused')");
    milter(&s, "clean", CLEAN, "check(mt.eom_check(conn, MT_HDRADD, 'X-Virus-Status', 'Clean'), 'X-Virus-Status: Clean')");

    // Never learned: an explicit learn says so; auto-learn leaves it alone.
    let (status, body) = http(s.http, "POST", "/v1/learn/spam", "Authorization: Bearer t0ken\r\n", &attached);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("virus found: payload.bin.UNOFFICIAL"), "{body}");
    let (_, dump) = http(s.http, "GET", "/metrics", "", b"");
    assert!(dump.contains("hamlet_antivirus_scans_total{result=\"virus\"}"), "{dump}");
    assert!(dump.contains("hamlet_learns_total{outcome=\"infected\"} 1"), "{dump}");
    assert!(!dump.contains("outcome=\"autolearned\""), "an infected message is never auto-learned: {dump}");
}

/// A listener that accepts and never answers, or answers nonsense.
fn fake_clamd(answer: Option<&'static [u8]>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut c in l.incoming().flatten() {
            if let Some(a) = answer {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(a);
            } else {
                held.push(c);
            }
        }
    });
    port
}

#[test]
fn clamd_down_silent_or_garbled_takes_the_failure_action_in_time() {
    let down = free_port();
    let silent = fake_clamd(None);
    let garbled = fake_clamd(Some(b"HELLO THERE\0"));
    for (name, port, on_error) in [("down", down, "fail_open"), ("silent", silent, "tempfail"), ("garbled", garbled, "fail_open")] {
        let s = server(name, &format!("clamd = \"tcp:127.0.0.1:{port}\"\ntimeout_ms = 700\non_error = \"{on_error}\""));
        let start = Instant::now();
        let v = check(&s, CLEAN);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "{name}: {took:?}");
        assert_eq!(v["stages"]["antivirus"]["result"], "error", "{name}: {v}");
        assert_eq!(v["stages"]["antivirus"]["action"], on_error, "{name}");
        if on_error == "tempfail" {
            assert_eq!(v["stages"]["envelope"]["decision"], "defer", "{name}: {v}");
            let r = spamd(&s, "CHECK", CLEAN);
            assert!(r.starts_with("SPAMD/") && r.contains(" 75 EX_TEMPFAIL"), "{name}: SPAMD EX_TEMPFAIL: {r}");
            milter(&s, name, CLEAN, "check(mt.getreply(conn) == SMFIR_REPLYCODE, 'deferred')");
        } else {
            assert_eq!(v["stages"]["envelope"]["decision"], "continue", "{name}: {v}");
            let r = spamd(&s, "HEADERS", CLEAN);
            assert!(r.contains("X-Virus-Status: Not scanned (error: "), "{name}: {r}");
        }
    }
}
