//! `hamlet serve` with a hamlet.toml of the test's own, in a directory of
//! its own (its stderr in `serve.log`), stopped and removed when dropped;
//! and one HTTP/1.1 request to it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Served {
    child: Child,
    pub dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Served {
    /// Starts `hamlet serve --config` with `toml` on a new database in a
    /// new directory `hamlet-{name}-{pid}`, and waits until every one of
    /// `ports` accepts connections.
    pub fn start(name: &str, toml: &str, ports: &[u16]) -> Served {
        let dir = std::env::temp_dir().join(format!("hamlet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hamlet.toml"), toml).unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hamlet"))
            .arg("--db")
            .arg(dir.join("h.redb"))
            .args(["serve", "--config", dir.join("hamlet.toml").to_str().unwrap()])
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Served { child, dir };
        for _ in 0..200 {
            if ports.iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hamlet serve never listened: {}", s.log());
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port`; (status, body).
pub fn http(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n", body.len());
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}
