//! What stands between hamlet and redb's failure modes: a check that a file
//! about to be opened is a redb database at all, a guard that turns a panic
//! inside redb (it panics on some damaged pages) into [`Error::Corrupt`],
//! and the tests of which errors mean "the file handle is broken, reopen
//! it" or "the file is damaged". The token store and the greylist store
//! both open their files through here.

use crate::{Error, Result};
use std::cell::Cell;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

/// The first bytes of every redb file (redb's `MAGICNUMBER`).
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// The smallest file redb ever writes: its header, then at least one
/// region of pages. Anything shorter lost its end.
const MIN_BYTES: u64 = 4096;

/// Refuses a file that exists but is not a redb database: zero-length,
/// another format, or cut short. redb turns a zero-length file into a new,
/// empty database; hamlet must not (a database emptied by accident would
/// score everything 0.5 without a word). A missing file is fine: the
/// caller creates it.
pub fn validate_file(path: &Path) -> Result<()> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::NotADatabase { path: path.to_path_buf(), what: "a directory".into() });
    }
    let len = meta.len();
    if len == 0 {
        return Err(Error::NotADatabase { path: path.to_path_buf(), what: "a zero-length file".into() });
    }
    let mut head = [0u8; MAGIC.len()];
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    if n < MAGIC.len() || head != MAGIC {
        return Err(Error::NotADatabase { path: path.to_path_buf(), what: format!("{len} bytes that are not a redb file") });
    }
    if len < MIN_BYTES {
        return Err(Error::NotADatabase { path: path.to_path_buf(), what: format!("a redb file cut short: {len} bytes") });
    }
    Ok(())
}

thread_local! {
    /// Set while this thread runs inside [`guard`]: the panic hook stays
    /// quiet, since the panic becomes an error that is reported.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` (redb calls on the file at `path`), turning a panic into
/// [`Error::Corrupt`] and redb's own "corrupted" errors likewise.
pub fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    quiet_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(path, e)),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            let first = what.lines().next().unwrap_or("").chars().take(160).collect::<String>();
            Err(Error::Corrupt { path: path.to_path_buf(), detail: format!("the database library failed reading it: {first}") })
        }
    }
}

/// redb's `Corrupted`, and reads past the end of the file, as
/// [`Error::Corrupt`], with the file named.
pub fn classify(path: &Path, e: Error) -> Error {
    match e {
        Error::Storage { source: redb::Error::Corrupted(m), .. } => Error::Corrupt { path: path.to_path_buf(), detail: m },
        // A read past the end of the file: a damaged page pointer (redb
        // checks the file's length against its layout when it opens it).
        Error::Storage { source: redb::Error::Io(io), .. } if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::Corrupt { path: path.to_path_buf(), detail: format!("a page lies past the end of the file: {io}") }
        }
        e => e,
    }
}

/// Installs, once, a panic hook that says nothing for panics [`guard`]
/// catches and passes every other one to the hook that was there.
fn quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(|g| g.get()) == 0 {
                previous(info);
            }
        }));
    });
}

/// True when `e` says the file handle failed (an I/O error, or redb's
/// refusal to go on after one): closing and reopening the file may cure it.
pub fn is_io_fault(e: &Error) -> bool {
    // Not `Error::Io`: that is a file other than the database (a dump's
    // output), or an open that failed, which the caller handles.
    match e {
        Error::Storage { source, .. } => matches!(source, redb::Error::Io(_) | redb::Error::PreviousIo),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hamlet-safe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn validate_refuses_empty_foreign_and_short_files() {
        let msg = |p: &Path| validate_file(p).unwrap_err().to_string();
        assert!(msg(&temp("empty", b"")).contains("zero-length"));
        assert!(msg(&temp("foreign", b"SQLite format 3\0 and more bytes")).contains("not a redb file"));
        assert!(msg(&temp("tiny", b"re")).contains("not a redb file"));
        let mut short = MAGIC.to_vec();
        short.resize(1000, 0);
        assert!(msg(&temp("short", &short)).contains("cut short"));
        for p in ["empty", "foreign", "short"] {
            assert!(msg(&temp(p, b"")).contains("nothing was changed"));
        }
        assert!(validate_file(Path::new("/nonexistent/hamlet.redb")).is_ok());
    }

    #[test]
    fn guard_turns_panics_into_corrupt_errors() {
        let r: Result<()> = guard(Path::new("x.redb"), || panic!("index out of bounds"));
        match r {
            Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("index out of bounds")),
            other => panic!("{other:?}"),
        }
        assert_eq!(guard(Path::new("x.redb"), || Ok(5)).unwrap(), 5);
    }
}
