//! unbound (Debian's `unbound`; `scripts/test.sh` installs it) on a free
//! loopback port with the shared harness's zones: `bl.test` (RFC 5782's
//! 127.0.0.2 test point, 192.0.2.99 listed) and `example.test`'s SPF
//! record (`ip4:192.0.2.0/24 a:mail.example.test -all`).

#![allow(dead_code)]

use super::serve::free_port;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Unbound {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn unbound(name: &str) -> Unbound {
    assert!(Path::new("/usr/sbin/unbound").exists(), "unbound is not installed: run scripts/test.sh, or `apt-get install -y unbound`");
    let shared = std::env::var("HAMLET_SHARED").unwrap_or_else(|_| "../shared".into());
    let template = std::fs::read_to_string(Path::new(&shared).join("reference/harness/unbound.conf"))
        .expect("the shared harness's unbound.conf (set HAMLET_SHARED)");
    let dir = std::env::temp_dir().join(format!("hamlet-dns-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let conf = template.replace("@PORT@", &port.to_string()).replace("@DIR@", dir.to_str().unwrap());
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
    let mut child = Command::new("/usr/sbin/unbound")
        .arg("-d")
        .arg("-c")
        .arg(dir.join("unbound.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Unbound { child, port, dir };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("unbound never listened");
}
