//! Where messages come from: a single file, a maildir, an MH (or any plain)
//! folder, an mbox file, or a TREC index (`spam|ham <path>` lines, paths
//! relative to the index's folder, labels from the index).

use crate::{Class, Error, Result};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where one message lives.
#[derive(Debug, Clone)]
pub enum Location {
    File(PathBuf),
    /// Bytes `start..end` of an mbox file (the `From ` line excluded).
    Mbox {
        path: PathBuf,
        start: u64,
        end: u64,
    },
}

/// One message to read, with its label if the source gives one.
#[derive(Debug, Clone)]
pub struct Entry {
    pub label: Option<Class>,
    pub location: Location,
}

impl Entry {
    /// A name for messages and progress output.
    pub fn name(&self) -> String {
        match &self.location {
            Location::File(p) => p.display().to_string(),
            Location::Mbox { path, start, .. } => format!("{}@{start}", path.display()),
        }
    }

    /// Reads the message (at most `max` bytes: the tokenizer never looks
    /// further than its own limit anyway).
    pub fn read(&self, max: usize) -> Result<Vec<u8>> {
        match &self.location {
            Location::File(p) => read_file(p, max),
            Location::Mbox { path, start, end } => {
                use std::io::{Seek, SeekFrom};
                let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
                f.seek(SeekFrom::Start(*start)).map_err(|e| Error::io(path, e))?;
                let len = (end - start).min(max as u64);
                let mut buf = Vec::with_capacity(len as usize);
                f.take(len).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
                Ok(unescape_mboxrd(&buf))
            }
        }
    }
}

/// Reads at most `max` bytes of a file.
pub fn read_file(p: &Path, max: usize) -> Result<Vec<u8>> {
    let f = fs::File::open(p).map_err(|e| Error::io(p, e))?;
    // Sized from the file's length (+1 to see the end without a regrowth):
    // read_to_end's doubling from empty was 1.2% of a bulk check.
    let hint = f.metadata().map_or(0, |m| m.len()).min(max as u64) as usize;
    let mut buf = Vec::with_capacity(hint + 1);
    f.take(max as u64).read_to_end(&mut buf).map_err(|e| Error::io(p, e))?;
    Ok(buf)
}

/// Lists the messages at `path`, whatever kind of source it is.
pub fn entries(path: &Path) -> Result<Vec<Entry>> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        if path.join("cur").is_dir() || path.join("new").is_dir() {
            let mut out = Vec::new();
            for sub in ["new", "cur"] {
                let d = path.join(sub);
                if d.is_dir() {
                    out.extend(files_in(&d)?);
                }
            }
            return Ok(out);
        }
        return files_in(path);
    }
    let mut head = [0u8; 512];
    let n = fs::File::open(path).and_then(|mut f| f.read(&mut head)).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(b"From ") {
        return mbox(path);
    }
    if looks_like_index(head) {
        return index(path);
    }
    Ok(vec![Entry { label: None, location: Location::File(path.to_path_buf()) }])
}

fn looks_like_index(head: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(head) else { return false };
    let Some(first) = text.lines().find(|l| !l.trim().is_empty()) else { return false };
    let mut parts = first.split_whitespace();
    matches!(parts.next().map(|s| s.to_ascii_lowercase()).as_deref(), Some("spam" | "ham")) && parts.next().is_some() && parts.next().is_none()
}

/// Reads a TREC index.
pub fn index(path: &Path) -> Result<Vec<Entry>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let (Some(label), Some(rel)) = (parts.next(), parts.next()) else { continue };
        let class = Class::parse(label).ok_or_else(|| Error::Parse {
            what: path.display().to_string(),
            line: i + 1,
            message: format!("label must be spam or ham, not {label:?}"),
        })?;
        let p = Path::new(rel);
        let p = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        out.push(Entry { label: Some(class), location: Location::File(p) });
    }
    Ok(out)
}

/// Regular, non-hidden files of a folder, in name order (numeric for MH).
fn files_in(dir: &Path) -> Result<Vec<Entry>> {
    let mut names: Vec<PathBuf> = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type().map_err(|er| Error::io(e.path(), er))?.is_file() {
            names.push(e.path());
        }
    }
    names.sort_by(|a, b| {
        let key = |p: &Path| {
            let n = p.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            (n.parse::<u64>().ok(), n)
        };
        let (ka, kb) = (key(a), key(b));
        match (ka.0, kb.0) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => ka.1.cmp(&kb.1),
        }
    });
    Ok(names.into_iter().map(|p| Entry { label: None, location: Location::File(p) }).collect())
}

/// Splits an mbox file at its `From ` lines.
fn mbox(path: &Path) -> Result<Vec<Entry>> {
    let data = fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut starts = Vec::new(); // offsets of "From " lines
    let mut i = 0usize;
    while i < data.len() {
        if data[i..].starts_with(b"From ") {
            starts.push(i);
        }
        match data[i..].iter().position(|&b| b == b'\n') {
            Some(p) => i += p + 1,
            None => break,
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let body_start = data[s..].iter().position(|&b| b == b'\n').map_or(data.len(), |p| s + p + 1);
        let end = starts.get(k + 1).copied().unwrap_or(data.len());
        if body_start < end {
            out.push(Entry { label: None, location: Location::Mbox { path: path.to_path_buf(), start: body_start as u64, end: end as u64 } });
        }
    }
    Ok(out)
}

/// A message as it would come out of an mbox: a message that starts with an
/// mbox `From ` line (a one-message mbox file, procmail's pipe, `hamlet
/// check < file`) loses that line and its mboxrd quoting, as
/// [`Entry::read`] does for a message read out of an mbox. So the same
/// message gives the same bytes (digest, tokens, 4-grams) whichever way it
/// arrives.
pub fn as_message(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.starts_with(b"From ") {
        return std::borrow::Cow::Borrowed(raw);
    }
    let rest = raw.iter().position(|&b| b == b'\n').map_or(&[][..], |i| &raw[i + 1..]);
    // Most messages quote no `From ` line: no copy (copying every message
    // of the spamassassin corpus, whose files start with a `From ` line,
    // was 2.8% of a bulk `check`).
    if !quotes_a_from_line(rest) {
        return std::borrow::Cow::Borrowed(rest);
    }
    std::borrow::Cow::Owned(unescape_mboxrd(rest))
}

/// Whether a line of `buf` is a quoted `From ` line ([`is_quoted_from`]).
/// Searched for as the text `From ` (memchr's substring search), then
/// checked for `>`s from the start of its line: splitting every message
/// into lines for this was 2.5% of bulk training.
fn quotes_a_from_line(buf: &[u8]) -> bool {
    memchr::memmem::find_iter(buf, b"From ").any(|i| {
        let gts = buf[..i].iter().rev().take_while(|&&b| b == b'>').count();
        gts > 0 && (gts == i || buf[i - gts - 1] == b'\n')
    })
}

/// A line `>From `, `>>From `, ...
fn is_quoted_from(line: &[u8]) -> bool {
    let gts = line.iter().take_while(|&&b| b == b'>').count();
    gts > 0 && line[gts..].starts_with(b"From ")
}

/// mboxrd: a line `>From ` (any number of `>`) loses one `>`.
fn unescape_mboxrd(buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    for line in buf.split_inclusive(|&b| b == b'\n') {
        if is_quoted_from(line) {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hamlet-mbox-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_message_with_a_from_line_reads_as_out_of_an_mbox() {
        let d = tmp("from-line");
        let p = d.join("one");
        let raw = b"From a@b Mon Jan 1\nSubject: one\n\n>>From here\nx\n";
        fs::write(&p, raw).unwrap();
        let e = entries(&p).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(as_message(raw).as_ref(), e[0].read(1 << 20).unwrap().as_slice());
        assert_eq!(as_message(b"Subject: x\n\n>From y\n").as_ref(), b"Subject: x\n\n>From y\n");
    }

    #[test]
    fn finds_quoted_from_lines_as_a_line_split_does() {
        let by_lines = |b: &[u8]| b.split(|&c| c == b'\n').any(is_quoted_from);
        for buf in [
            &b">From x"[..],
            b">>>From x\n",
            b"a\n>From x",
            b"a\n>>From \nb",
            b"From x\n",
            b"a>From x\n",
            b"a\n >From x\n",
            b"a\n>From\n",
            b">Fro\nm x",
            b"\n>\nFrom x",
            b"x>>From y\n>From z",
            b"",
            b">",
        ] {
            assert_eq!(quotes_a_from_line(buf), by_lines(buf), "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn mbox_split_and_unescape() {
        let d = tmp("mbox");
        let p = d.join("box");
        fs::write(&p, "From a@b Mon Jan 1\nSubject: one\n\n>From here\nx\nFrom c@d Tue\nSubject: two\n\ny\n").unwrap();
        let e = entries(&p).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].read(1 << 20).unwrap(), b"Subject: one\n\nFrom here\nx\n");
        assert_eq!(e[1].read(1 << 20).unwrap(), b"Subject: two\n\ny\n");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn maildir_index_and_plain() {
        let d = tmp("md");
        fs::create_dir_all(d.join("md/cur")).unwrap();
        fs::create_dir_all(d.join("md/new")).unwrap();
        fs::write(d.join("md/cur/1"), "Subject: a\n\nx").unwrap();
        fs::write(d.join("md/new/2"), "Subject: b\n\nx").unwrap();
        assert_eq!(entries(&d.join("md")).unwrap().len(), 2);
        fs::write(d.join("index"), "spam md/cur/1\nham md/new/2\n").unwrap();
        let e = entries(&d.join("index")).unwrap();
        assert_eq!(e[0].label, Some(Class::Spam));
        assert_eq!(e[1].label, Some(Class::Ham));
        assert!(e[1].read(100).unwrap().starts_with(b"Subject: b"));
        assert_eq!(entries(&d.join("md/cur/1")).unwrap().len(), 1);
        fs::remove_dir_all(d).unwrap();
    }
}
