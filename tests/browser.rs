//! The web console in a real browser: `hamlet serve` with `[ui]` on, and
//! `tests/ui/console.py` driving Debian's Chromium through chromedriver
//! (python3-selenium): sign-in refused then accepted, status numbers
//! against `/v1/stats`, a check found in the history with its clues, a
//! learn by the button, CSRF refused, sign-out. Screenshots of each page go
//! to `target/ui-screenshots/` (docs/console-*.png are copies of them).

mod common;

use common::serve::{Served, free_port};
use hamlet::Class;
use hamlet::mailbox::{self, Location};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Messages of the evaluation folder: the first of the spamassassin
/// corpus's on-line order, enough for a ROC curve with a shape.
const EVAL_MESSAGES: usize = 400;

const PYTHON: &str = "/usr/bin/python3";

/// Fails (never skips) when a piece of the browser stack is missing.
fn require(program: &str, args: &[&str], install: &str) {
    let ok = Command::new(program).args(args).output().is_ok_and(|o| o.status.success());
    assert!(ok, "{program} is missing or broken: apt-get install -y {install} (scripts/test.sh does)");
}

#[test]
fn the_console_in_chromium() {
    require("chromium", &["--version"], "chromium");
    require("chromedriver", &["--version"], "chromium-driver");
    // Debian's interpreter: python3-selenium installs into it, not into
    // whatever python3 comes first on PATH.
    require(PYTHON, &["-c", "import selenium.webdriver"], "python3-selenium");
    let port = free_port();
    let token = "browser-test-token-0123456789";
    let eval_root = std::env::temp_dir().join(format!("hamlet-browser-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&eval_root);
    let folder = "spamassassin-400";
    eval_folder(&eval_root.join(folder));
    let toml = format!(
        "http = \"127.0.0.1:{port}\"\nlearn_token = \"{token}\"\n\n[ui]\nenabled = true\neval_root = {:?}\n",
        eval_root.display().to_string()
    );
    let served = Served::start("browser", &toml, &[port]);
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let spam = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/messages/02-html-only.eml");
    let out = Command::new(PYTHON)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/console.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(token)
        .arg(&spam)
        .arg(&shots)
        .arg(folder)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&eval_root);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the browser test failed\n--- its output:\n{stdout}\n--- its errors:\n{stderr}\n--- hamlet's log:\n{}",
        served.log()
    );
    for page in ["status", "history", "try", "eval", "phone"] {
        assert!(shots.join(format!("{page}.png")).is_file(), "no screenshot of {page}");
    }
}

/// Copies the first `EVAL_MESSAGES` of the shared spamassassin corpus into
/// `dir/spam` and `dir/ham` (the console reads only files under its root).
fn eval_folder(dir: &Path) {
    const HOW: &str = "run scripts/test.sh (it unpacks the shared corpora and sets HAMLET_CORPORA)";
    let corpora = PathBuf::from(std::env::var_os("HAMLET_CORPORA").unwrap_or_else(|| panic!("HAMLET_CORPORA is not set: {HOW}")));
    let index = corpora.join("spamassassin/index");
    let entries = mailbox::index(&index).unwrap_or_else(|e| panic!("{}: {e}: {HOW}", index.display()));
    for (i, e) in entries.iter().take(EVAL_MESSAGES).enumerate() {
        let Location::File(path) = &e.location else { panic!("{}: not a file", e.name()) };
        let class = if e.label == Some(Class::Spam) { "spam" } else { "ham" };
        let to = dir.join(class);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(path, to.join(format!("{i:04}.eml"))).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    }
}
