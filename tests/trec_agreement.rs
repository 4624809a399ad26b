//! `hamlet eval` (the TREC on-line protocol in-process) must print the same
//! figures as `../shared/tools/trec-run` driving the real command line
//! (`hamlet check --no-filename`, `hamlet train --spam|--ham`, one process per
//! message, a redb database started with `db init --empty`), on the first 300
//! messages of the spamassassin corpus. (`hamlet eval` ranks by the logit
//! where trec-run ranks by the printed probability; the two orders differ
//! only where a probability rounds to 1, which the default combination never
//! reaches.)
//!
//! Needs `$HAMLET_TREC_RUN` (the trec-run script) and `$HAMLET_CORPORA` (the
//! unpacked corpora); scripts/test.sh sets both. Missing either fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hamlet");
const LIMIT: usize = 300;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env_path(var: &str) -> PathBuf {
    const HOW: &str = "run scripts/test.sh, which unpacks the corpora into target/corpora and sets \
                       HAMLET_CORPORA and HAMLET_TREC_RUN (or set them by hand: \
                       ../shared/tools/unpack-corpora target/corpora; HAMLET_CORPORA=$PWD/target/corpora \
                       HAMLET_TREC_RUN=$PWD/../shared/tools/trec-run)";
    let v = std::env::var_os(var).unwrap_or_else(|| panic!("{var} is not set: {HOW}"));
    let p = PathBuf::from(v);
    assert!(p.exists(), "{var}={} does not exist: {HOW}", p.display());
    p.canonicalize().unwrap()
}

/// Quotes one argument for trec-run's `shlex.split`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn line<'a>(out: &'a str, prefix: &str, who: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{who} printed no `{prefix}...` line:\n{out}"))
}

/// Figures from a `hm%=.. sm%=.. lam%=.. sm%@hm0.1=..` line.
fn fields(l: &str) -> Vec<(String, String)> {
    l.split_whitespace().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

/// `<path> judge=<label> score=<s>` lines (`hamlet eval`'s add ` logit=<z>`).
fn results(p: &Path) -> Vec<(String, String, f64)> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            assert!(v.len() == 3 || (v.len() == 4 && v[3].starts_with("logit=")), "bad results line {l:?} in {}", p.display());
            let judge = v[1].strip_prefix("judge=").unwrap().to_string();
            let score: f64 = v[2].strip_prefix("score=").unwrap().parse().unwrap();
            (v[0].to_string(), judge, score)
        })
        .collect()
}

#[test]
fn eval_agrees_with_trec_run_over_the_cli() {
    let trec_run = env_path("HAMLET_TREC_RUN");
    let corpora = env_path("HAMLET_CORPORA");
    let full_index = corpora.join("spamassassin/index");
    assert!(full_index.is_file(), "{} missing: run scripts/test.sh", full_index.display());

    let dir = TempDir(std::env::temp_dir().join(format!("hamlet-trec-agreement-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();

    // The first LIMIT messages, with absolute paths.
    let base = full_index.parent().unwrap();
    let text = std::fs::read_to_string(&full_index).unwrap();
    let mut index = String::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()).take(LIMIT) {
        let (label, rel) = l.split_once(' ').expect("index line `label path`");
        let p = base.join(rel.trim());
        assert!(p.is_file(), "{} listed in the index is missing", p.display());
        index.push_str(&format!("{label} {}\n", p.display()));
    }
    assert_eq!(index.lines().count(), LIMIT);
    let index_path = dir.0.join("index");
    std::fs::write(&index_path, &index).unwrap();

    // trec-run over the command line, from an empty database.
    let db = dir.0.join("trec.redb");
    let init = Command::new(BIN).arg("--db").arg(&db).args(["db", "init", "--empty"]).env_remove("HAMLET_DB").output().unwrap();
    assert!(init.status.success(), "db init --empty failed: {}", String::from_utf8_lossy(&init.stderr));
    let (bin, dbs) = (sh_quote(BIN), sh_quote(db.to_str().unwrap()));
    let trec_results = dir.0.join("trec.results");
    let out = Command::new(&trec_run)
        .arg("--index")
        .arg(&index_path)
        .arg("--classify")
        .arg(format!("{bin} --db {dbs} check --no-filename {{}}"))
        .arg("--train-spam")
        .arg(format!("{bin} --db {dbs} train --spam {{}}"))
        .arg("--train-ham")
        .arg(format!("{bin} --db {dbs} train --ham {{}}"))
        .arg("--results")
        .arg(&trec_results)
        .arg("--quiet")
        .env_remove("HAMLET_DB")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", trec_run.display()));
    let trec_out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "trec-run failed ({}):\n{trec_out}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    eprintln!("trec-run:\n{trec_out}");

    // The in-process evaluation.
    let eval_results = dir.0.join("eval.results");
    let out = Command::new(BIN).arg("eval").arg(&index_path).arg("--results").arg(&eval_results).env_remove("HAMLET_DB").output().unwrap();
    let eval_out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "hamlet eval failed:\n{eval_out}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("hamlet eval:\n{eval_out}");

    // Every message got a score from `hamlet check`.
    let counts = line(&trec_out, "messages=", "trec-run");
    assert!(counts.ends_with(" unscored=0"), "trec-run could not read a score for some messages: {counts}");
    assert!(
        counts.starts_with(line(&eval_out, "messages=", "hamlet eval")),
        "message counts differ: trec-run `{counts}`, eval `{}`",
        line(&eval_out, "messages=", "hamlet eval")
    );

    // Per-message scores, for the diagnosis of any difference below.
    let t = results(&trec_results);
    let e = results(&eval_results);
    assert_eq!((t.len(), e.len()), (LIMIT, LIMIT), "both results files list every message");
    let mut diffs = Vec::new();
    for (i, (a, b)) in t.iter().zip(&e).enumerate() {
        assert_eq!(a.0, b.0, "results line {} names different messages", i + 1);
        assert_eq!(a.1, b.1, "results line {} has different labels", i + 1);
        // trec-run keeps 9 significant digits of the score it parsed.
        let same = a.2 == b.2 || (a.2 - b.2).abs() <= 1e-8 * a.2.abs().max(b.2.abs());
        if !same {
            diffs.push(format!("  #{:3} {} {}: trec-run {} vs eval {}", i + 1, a.1, a.0, a.2, b.2));
        }
    }
    let diff_report = if diffs.is_empty() {
        "per-message scores agree to 9 significant digits".to_string()
    } else {
        format!(
            "{} of {LIMIT} per-message scores differ, first ones:\n{}",
            diffs.len(),
            diffs.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
        )
    };

    // The figures must be identical.
    let (tl, el) = (line(&trec_out, "hm%=", "trec-run"), line(&eval_out, "hm%=", "hamlet eval"));
    assert_eq!(fields(tl), fields(el), "hm% / sm% / lam% / sm%@hm0.1 differ\ntrec-run: {tl}\neval:     {el}\n{diff_report}");
    let (tr, er) = (line(&trec_out, "1-ROCA%=", "trec-run"), line(&eval_out, "1-ROCA%=", "hamlet eval"));
    assert_eq!(tr, er, "1-ROCA% differs\n{diff_report}");
    assert!(diffs.is_empty(), "the figures agree but the scores behind them do not: {diff_report}");
}
