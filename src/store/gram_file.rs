//! A read-only copy of the byte 4-gram weights beside the database
//! (`<db>.grams`), mapped into memory instead of read from redb.
//!
//! Why: the weights are one 1 MiB value in redb, and redb reads a value
//! into a fresh zeroed buffer of its page size (2 MiB for this one): 512
//! page faults, a memset and a copy. That was 0.9 ms of a one-shot
//! `hamlet check`'s 2.5 ms on a tiny message (history: docs/tuning.md).
//! Mapped from the OS page cache, the same weights cost a few
//! dozen faults (the kernel maps 16 cached pages per fault) and no copy.
//!
//! The file is a cache, never the truth. redb holds the weights; every
//! write of them draws a new random `grams_id` into `meta`, and the file's
//! header must carry the same id, or it is ignored (stale, from another
//! database, or cut short) and the weights are read from redb as before.
//! The store that wrote the weights writes the file when it is closed: one
//! file write per process (a `train` run, a service's lifetime), none per
//! transaction. It writes a temporary file, syncs it, and renames it over
//! the old one, so a reader maps a whole old file or a whole new one, and
//! a file in use is never changed under its mapping (only replaced).
//!
//! Layout: `hamlet4g` (8 bytes), the id (u64 little-endian), then
//! [`GRAM_DIM`] weights as f32 little-endian, exactly [`FILE_BYTES`].

use super::GRAM_DIM;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"hamlet4g";
const HEADER: usize = 16;
/// The file's exact size.
pub const FILE_BYTES: usize = HEADER + GRAM_DIM * 4;

/// `<db>.grams`, beside the database file.
pub fn path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".grams");
    PathBuf::from(p)
}

/// A fresh random id for a write of the weights (never 0, which means
/// "none").
pub fn fresh_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState's keys come from the OS's random source once per thread
    // and change on every call; the clock and pid only add to them.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// The file at `path`, mapped read-only, if it holds the weights with `id`.
pub struct Mapped {
    ptr: std::ptr::NonNull<libc::c_void>,
}

impl Mapped {
    /// `None` when the file is missing, unreadable, of another size, or
    /// not the weights with `id`: the caller reads redb instead.
    pub fn open(path: &Path, id: u64) -> Option<Mapped> {
        let file = std::fs::File::open(path).ok()?;
        if file.metadata().ok()?.len() != FILE_BYTES as u64 {
            return None;
        }
        // SAFETY: a read-only private mapping of a whole file of
        // FILE_BYTES, checked just above; the pointer is checked below.
        // hamlet never changes or truncates this file in place (it renames
        // a new one over it), so the mapped bytes stay valid and unchanged
        // until `Drop` unmaps them. (Another program truncating the file
        // while it is mapped would make reads fault, as with any mmap.)
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), FILE_BYTES, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let m = Mapped { ptr: std::ptr::NonNull::new(ptr)? };
        let b = m.all();
        (&b[..8] == MAGIC && b[8..HEADER] == id.to_le_bytes()).then_some(m)
    }

    /// The weights, f32 little-endian, [`GRAM_DIM`] of them.
    pub fn weights(&self) -> &[u8] {
        &self.all()[HEADER..]
    }

    fn all(&self) -> &[u8] {
        // SAFETY: `ptr` maps FILE_BYTES readable bytes for as long as
        // `self` lives (see `open`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), FILE_BYTES) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no slice of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr(), FILE_BYTES);
        }
    }
}

/// Writes the weights `w` (missing slots are zero) with `id` to `path`:
/// a temporary file beside it, synced, then renamed over it.
pub fn write(path: &Path, id: u64, w: &[f32]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(FILE_BYTES);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&super::weight_bytes(&w[..w.len().min(GRAM_DIM)]));
    buf.resize(FILE_BYTES, 0);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::stored_weight as weight;

    #[test]
    fn written_file_maps_back_only_with_its_id() {
        let dir = std::env::temp_dir().join(format!("hamlet-gramfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = path_for(&dir.join("m.redb"));
        assert!(p.ends_with("m.redb.grams"));
        assert!(Mapped::open(&p, 7).is_none(), "no file yet");
        let mut w = vec![0.0f32; 10];
        w[3] = 1.5;
        w[9] = -0.25;
        write(&p, 7, &w).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), FILE_BYTES as u64);
        let m = Mapped::open(&p, 7).expect("maps with its id");
        assert_eq!(m.weights().len(), GRAM_DIM * 4);
        assert_eq!((weight(m.weights(), 3), weight(m.weights(), 9)), (1.5, -0.25));
        assert_eq!(weight(m.weights(), GRAM_DIM - 1), 0.0, "missing slots are zero");
        assert!(Mapped::open(&p, 8).is_none(), "another id: stale");
        // Replaced while mapped: the old mapping keeps the old weights.
        w[3] = 2.0;
        write(&p, 8, &w).unwrap();
        assert_eq!(weight(m.weights(), 3), 1.5);
        assert_eq!(weight(Mapped::open(&p, 8).unwrap().weights(), 3), 2.0);
        // Cut short: ignored.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(FILE_BYTES as u64 - 4).unwrap();
        assert!(Mapped::open(&p, 8).is_none());
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("m.redb.grams")], "no temporary file left");
        drop(m);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ids_differ() {
        let a: std::collections::HashSet<u64> = (0..100).map(|_| fresh_id()).collect();
        assert_eq!(a.len(), 100);
        assert!(!a.contains(&0));
    }
}
