//! The redb token store: one file, MVCC (readers never wait for the writer),
//! one write transaction per training batch, crash-safe commits.
//!
//! Layout (schema [`SCHEMA_VERSION`]):
//!
//! | table     | key                | value                                   |
//! |-----------|--------------------|-----------------------------------------|
//! | `tokens`  | token hash (u64)   | (spam u32, ham u32, last-seen day u32, weight f32, token `&str`) |
//! | `meta`    | name (`&str`)      | u64: `schema`, `tokenizer`, `spam`, `ham` (weighted totals), `msg_spam`, `msg_ham`, `starter_spam`, `starter_ham` (of those, the starter model's), `created`, `grams_gen` (counts writes of the 4-gram weights), `grams_id` (random, names their `gram_file` copy); f64 bits: `bias`, `mix0`..`mix2` |
//! | `journal` | digest (32 bytes)  | (class u8 — bit 7 set: auto-learned, day u32, weight u8) |
//! | `grams`   | 0 (u32)            | all 2¹⁸ weights of the byte 4-gram regression, f32 little-endian (1 MiB) |
//!
//! The 4-gram weights are one value: a message's 4-grams touch nearly every
//! part of the vector, so a write rewrites it anyway, and one 1 MiB value
//! reads much faster than many small ones (256 chunks of 4 KiB made a
//! one-shot `hamlet check` 2.5 ms slower). The store keeps the last decoded
//! weights, tagged with the `grams_gen` counter in `meta` that every write
//! changing them bumps; a write leaves its new weights there, so a
//! service's snapshots after its own learns share one copy. A snapshot that
//! finds none sums its first message straight from redb's copy of the value
//! (a one-shot `hamlet check` never decodes it) and decodes the weights for
//! its second (bulk `check`). Both read a mapped copy of the weights beside
//! the database instead when it is current (`gram_file`: the `grams_id` in
//! `meta` names it), which a one-shot check reads 0.9 ms faster.
//!
//! Tokens are keyed by their 64-bit [`token_hash`], not their text: fixed
//! 8-byte keys make the B-tree smaller and a lookup a few integer compares
//! instead of memcmp over long shared prefixes (`rcvd:host:...`). The text
//! is kept in the value, for dumps and as a check: a lookup whose stored text
//! differs (a hash collision: about n²/2⁶⁵ for n tokens by chance, but the
//! hash is not keyed, so a sender can craft one) is a miss, the later
//! token's write replaces the earlier one's record, and a remove only
//! removes a record holding its own text.

use super::safe;
use super::{GRAM_DIM, Grams, JournalEntry, ModelState, ReadView, SCHEMA_VERSION, TokenRecord, TokenStore, Totals, WriteView};
use super::{gram_file, stored_weight};
use crate::digest::Digest;
use crate::hash::token_hash;
use crate::tokenize::TOKENIZER_VERSION;
use crate::{Class, Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

type Rec = (u32, u32, u32, f32, &'static str);

/// redb's page cache, bounded so a long-running service's memory stays flat
/// (redb's default is 1 GiB); 256 MiB holds a model trained on all three
/// shared corpora several times over.
const CACHE_BYTES: usize = 256 << 20;
/// The cache of a per-user model: users' models are small (their own
/// corrections), and a server keeps dozens open.
pub const USER_CACHE_BYTES: usize = 8 << 20;
pub(super) const TOKENS: TableDefinition<u64, Rec> = TableDefinition::new("tokens");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const JOURNAL: TableDefinition<&[u8], (u8, u32, u8)> = TableDefinition::new("journal");
pub(super) const GRAMS: TableDefinition<u32, &[u8]> = TableDefinition::new("grams");
/// Scratch space of [`RedbStore::health`]'s write probe; empty otherwise.
const PROBE: TableDefinition<u32, &[u8]> = TableDefinition::new("health_probe");

/// How long a reopen after an I/O error waits for read transactions on
/// the old handle (they hold the file's lock) to finish.
const REOPEN_WAIT: Duration = Duration::from_millis(1500);

/// See the module documentation.
///
/// After an I/O error (a full disk) redb refuses every later operation on
/// that handle ("Previous I/O error occurred"), so the store closes it and
/// opens the file again before the next operation, until that works; a
/// damaged file is remembered as such for [`RedbStore::health`].
pub struct RedbStore {
    /// `None` between dropping a failed handle and a successful reopen.
    db: RwLock<Option<Db>>,
    read_only: bool,
    cache_bytes: usize,
    /// Why the store is unhealthy, until a reopen (and, for writers, a
    /// write) succeeds.
    fault: Mutex<Option<Fault>>,
    path: PathBuf,
    /// The 4-gram weights last read, and their `grams_gen`.
    grams: Mutex<Option<(u64, Grams)>>,
    /// The 4-gram weights this store committed last, and their `grams_id`,
    /// until written to the `gram_file` (when the store is dropped).
    unsaved: Mutex<Option<(u64, Grams)>>,
}

/// What went wrong with the file, for [`RedbStore::health`].
#[derive(Clone, Debug)]
enum Fault {
    /// An I/O error: the handle is closed and reopened on the next use.
    Io(String),
    /// The file is damaged; reopening will not help.
    Corrupt(String),
}

/// What a write transaction did to the 4-gram weights.
struct NewGrams {
    generation: u64,
    id: u64,
    weights: Grams,
}

/// Opened for writing (exclusive: one process), or read-only (shared by
/// any number of read-only processes, excluded by a writer).
enum Db {
    ReadWrite(Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Db::ReadWrite(d) => d.begin_read(),
            Db::ReadOnly(d) => d.begin_read(),
        }
    }
}

/// Opens the file at `path` with redb, for writing (creating it) or not.
fn open_handle(path: &Path, wait: Duration, read_only: bool, cache_bytes: usize) -> Result<Db> {
    safe::guard(path, || {
        if read_only {
            retry_open(path, wait, || Database::builder().set_cache_size(cache_bytes).open_read_only(path)).map(Db::ReadOnly)
        } else {
            retry_open(path, wait, || Database::builder().set_cache_size(cache_bytes).create(path)).map(Db::ReadWrite)
        }
    })
}

fn from_rec(r: (u32, u32, u32, f32, &str)) -> TokenRecord {
    TokenRecord { spam: r.0, ham: r.1, day: r.2, weight: r.3 }
}

fn get_token<T: ReadableTable<u64, Rec>>(t: &T, token: &str) -> Result<Option<TokenRecord>> {
    get_hashed(t, token_hash(token), token)
}

/// [`get_token`] with the token's hash already known (a [`TokenSet`]'s).
///
/// [`TokenSet`]: crate::tokenize::TokenSet
fn get_hashed<T: ReadableTable<u64, Rec>>(t: &T, hash: u64, token: &str) -> Result<Option<TokenRecord>> {
    Ok(t.get(hash)?.and_then(|v| {
        let r = v.value();
        (r.4 == token).then(|| from_rec(r))
    }))
}

/// [`ReadView::get_many`] with the hashes the tokens come with, rather than
/// hashing each token again in [`get_token`].
fn get_many_hashed<T: ReadableTable<u64, Rec>>(t: &T, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
    for &(hash, token) in tokens {
        out.push(get_hashed(t, hash, token)?);
    }
    Ok(())
}

impl RedbStore {
    /// Opens the database at `path`, creating it (and its folder) if missing.
    ///
    /// While another process holds the file, retries for up to `wait`, then
    /// fails with [`Error::DatabaseInUse`].
    pub fn open(path: &Path, wait: Duration) -> Result<RedbStore> {
        RedbStore::open_seeded(path, wait, None)
    }

    /// [`RedbStore::open`], and if this call creates the database, `seed` (a
    /// parsed dump: the starter model) is loaded in the same transaction
    /// that creates its tables. Two processes racing to create it cannot
    /// both load the seed, and a crash cannot leave a new database without
    /// it.
    pub fn open_seeded(path: &Path, wait: Duration, seed: Option<&super::dump::Parsed>) -> Result<RedbStore> {
        RedbStore::create(path, wait, seed, CACHE_BYTES)
    }

    /// [`RedbStore::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, wait: Duration, cache_bytes: usize) -> Result<RedbStore> {
        RedbStore::create(path, wait, None, cache_bytes)
    }

    fn create(path: &Path, wait: Duration, seed: Option<&super::dump::Parsed>, cache_bytes: usize) -> Result<RedbStore> {
        safe::validate_file(path)?;
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = open_handle(path, wait, false, cache_bytes)?;
        let store = RedbStore::new(db, path, false, cache_bytes);
        store.check_schema(seed)?;
        Ok(store)
    }

    fn new(db: Db, path: &Path, read_only: bool, cache_bytes: usize) -> RedbStore {
        RedbStore {
            db: RwLock::new(Some(db)),
            read_only,
            cache_bytes,
            fault: Mutex::new(None),
            path: path.to_path_buf(),
            grams: Mutex::new(None),
            unsaved: Mutex::new(None),
        }
    }

    /// Opens an existing database read-only: it writes nothing to the file
    /// (opening for writing marks the file in use, a few writes), and any
    /// number of read-only openers share it, so concurrent `hamlet check`
    /// processes from a mail pipeline don't queue. Writes fail.
    ///
    /// A file a writer left without closing it (a crash, a full disk)
    /// needs a repair before redb reads it; it is opened for writing once
    /// to repair it, when this process may write it.
    pub fn open_read_only(path: &Path, wait: Duration) -> Result<RedbStore> {
        safe::validate_file(path)?;
        let db = match open_handle(path, wait, true, CACHE_BYTES) {
            Err(Error::NeedsRepair { .. }) => {
                let repaired = open_handle(path, wait, false, CACHE_BYTES).map_err(|e| match e {
                    e @ (Error::Corrupt { .. } | Error::DatabaseInUse { .. }) => e,
                    Error::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::PermissionDenied || source.raw_os_error() == Some(libc::EROFS) =>
                    {
                        Error::NeedsRepair { path: path.to_path_buf(), source: None }
                    }
                    e => Error::NeedsRepair { path: path.to_path_buf(), source: Some(Box::new(e)) },
                })?;
                drop_guarded(path, repaired);
                open_handle(path, wait, true, CACHE_BYTES)?
            }
            other => other?,
        };
        let store = RedbStore::new(db, path, true, CACHE_BYTES);
        store.check_schema(None)?;
        Ok(store)
    }

    /// Whether the store can serve: a damaged file, or one whose handle
    /// failed and cannot be reopened (or, for a writer, cannot commit a
    /// transaction yet: the disk is still full), is an error with the
    /// reason. After an I/O error this is what reopens the file when no
    /// request does.
    pub fn health(&self) -> Result<()> {
        match self.fault() {
            Some(Fault::Corrupt(detail)) => return Err(Error::Corrupt { path: self.path.clone(), detail }),
            Some(Fault::Io(_)) => {
                self.reopen()?;
                if !self.read_only {
                    self.probe_write()?;
                }
            }
            None => {}
        }
        let state = self.read()?.state();
        state.map(|_| ())
    }

    /// Commits as much new data as a learn does (every learn rewrites the
    /// 1 MiB of 4-gram weights), then removes it: whether the disk takes a
    /// learn again. Two commits, so the data really reaches the file (a
    /// value removed in the transaction that wrote it may never be
    /// written). Only while a fault is reported.
    fn probe_write(&self) -> Result<()> {
        for size in [GRAM_DIM * 4, 0] {
            let txn = self.begin_write()?;
            self.guarded(|| {
                if size > 0 {
                    txn.open_table(PROBE)?.insert(0, vec![0u8; size].as_slice())?;
                } else {
                    txn.delete_table(PROBE)?;
                }
                Ok(())
            })?;
            self.guarded(|| Ok(txn.commit()?))?;
        }
        Ok(())
    }

    fn fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs redb calls: a panic becomes [`Error::Corrupt`], and an error
    /// that breaks the handle or shows damage is remembered.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let r = safe::guard(&self.path, f);
        if let Err(e) = &r {
            self.note(e);
        }
        r
    }

    /// A redb error from outside [`RedbStore::guarded`], classified and
    /// remembered as it would be there.
    fn failed(&self, e: impl Into<Error>) -> Error {
        let e = safe::classify(&self.path, e.into());
        self.note(&e);
        e
    }

    fn note(&self, e: &Error) {
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            Error::Corrupt { detail, .. } => *fault = Some(Fault::Corrupt(detail.clone())),
            // Damage stays the reason even when I/O fails later.
            e if safe::is_io_fault(e) && !matches!(*fault, Some(Fault::Corrupt(_))) => *fault = Some(Fault::Io(e.to_string())),
            _ => {}
        }
    }

    /// Closes the handle and opens the file again. Read transactions on the
    /// old handle keep the file locked until they end; the open waits
    /// [`REOPEN_WAIT`] for them, and new ones wait for the reopen.
    fn reopen(&self) -> Result<()> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            drop_guarded(&self.path, old);
        }
        match open_handle(&self.path, REOPEN_WAIT, self.read_only, self.cache_bytes) {
            Ok(db) => {
                *slot = Some(db);
                let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
                if matches!(*fault, Some(Fault::Io(_))) {
                    *fault = None;
                }
                Ok(())
            }
            Err(e) => {
                let reason = match self.fault() {
                    Some(Fault::Io(was)) if matches!(e, Error::DatabaseInUse { .. }) => was,
                    _ => e.to_string(),
                };
                drop(slot);
                self.note(&e);
                if !matches!(e, Error::Corrupt { .. }) {
                    *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(Fault::Io(reason.clone()));
                }
                Err(Error::Storage {
                    path: Some(self.path.clone()),
                    source: redb::Error::Io(std::io::Error::other(format!("cannot reopen after an I/O error: {reason}"))),
                })
            }
        }
    }

    /// The handle, reopened first if an I/O error broke it.
    fn handle(&self) -> Result<std::sync::RwLockReadGuard<'_, Option<Db>>> {
        if let Some(Fault::Io(_)) = self.fault() {
            self.reopen()?;
        }
        Ok(self.db.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        let db = self.handle()?;
        self.guarded(|| match &*db {
            Some(d) => Ok(d.begin_read()?),
            None => Err(Error::Internal("database handle missing after a reopen".into())),
        })
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let db = self.handle()?;
        self.guarded(|| match &*db {
            Some(Db::ReadWrite(d)) => Ok(d.begin_write()?),
            Some(Db::ReadOnly(_)) => Err(Error::Invalid(format!("{} is open read-only", self.path.display()))),
            None => Err(Error::Internal("database handle missing after a reopen".into())),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the database holds no training at all (a new file).
    pub fn is_empty(&self) -> Result<bool> {
        let r = self.read()?;
        Ok(r.token_count()? == 0 && r.state()?.totals == Totals::default())
    }

    fn check_schema(&self, seed: Option<&super::dump::Parsed>) -> Result<()> {
        let txn = self.begin_read()?;
        match self.guarded(|| Ok(txn.open_table(META))) {
            Ok(Ok(meta)) => {
                let (schema, tok) = self.guarded(|| Ok((meta.get("schema")?.map(|v| v.value()), meta.get("tokenizer")?.map(|v| v.value()))))?;
                let want = (u64::from(SCHEMA_VERSION), u64::from(TOKENIZER_VERSION));
                if (schema, tok) != (Some(want.0), Some(want.1)) {
                    return Err(Error::SchemaMismatch {
                        path: self.path.clone(),
                        found: format!(
                            "schema {} / tokenizer {}",
                            schema.map_or("none".into(), |v| v.to_string()),
                            tok.map_or("none".into(), |v| v.to_string())
                        ),
                        expected: format!("schema {} / tokenizer {}", want.0, want.1),
                    });
                }
                Ok(())
            }
            Ok(Err(redb::TableError::TableDoesNotExist(_))) => {
                drop(txn);
                let w = self.begin_write()?;
                let grams = self.guarded(|| {
                    let mut view = self.write_view(&w)?;
                    view.meta.insert("schema", u64::from(SCHEMA_VERSION))?;
                    view.meta.insert("tokenizer", u64::from(TOKENIZER_VERSION))?;
                    view.meta.insert("created", u64::from(super::today()))?;
                    if let Some(seed) = seed {
                        super::dump::apply(&mut view, seed, "seed")?;
                    }
                    view.finish()
                })?;
                self.guarded(|| Ok(w.commit()?))?;
                self.committed(grams);
                Ok(())
            }
            Ok(Err(e)) => Err(self.failed(e)),
            Err(e) => Err(e),
        }
    }
}

impl RedbStore {
    fn write_view<'t>(&'t self, w: &'t redb::WriteTransaction) -> Result<RedbWrite<'t>> {
        Ok(RedbWrite {
            tokens: w.open_table(TOKENS)?,
            meta: w.open_table(META)?,
            journal: w.open_table(JOURNAL)?,
            txn: w,
            grams_table: std::cell::OnceCell::new(),
            store: self,
            base: std::cell::OnceCell::new(),
            changed: None,
        })
    }

    /// The 4-gram weights of the snapshot with `meta` and `table`: the
    /// remembered ones if they are its generation, else decoded from the
    /// stored bytes.
    fn grams_at<'t, M, T>(&self, meta: &M, table: impl FnOnce() -> Result<Option<&'t T>>) -> Result<Grams>
    where
        M: ReadableTable<&'static str, u64>,
        T: ReadableTable<u32, &'static [u8]> + 't,
    {
        let generation = grams_gen(meta)?;
        if let Some(w) = self.kept_grams(generation) {
            return Ok(w);
        }
        let w = self.with_stored_grams(meta, table, |bytes| (0..GRAM_DIM).map(|s| stored_weight(bytes, s)).collect())?;
        let w: Grams = Arc::new(w);
        self.remember_grams(Some((generation, w.clone())));
        Ok(w)
    }

    /// Calls `f` with the snapshot's stored 4-gram weights (f32
    /// little-endian; empty when none were ever written): the mapped
    /// `gram_file` when it holds this snapshot's `grams_id`, else redb's
    /// value. `table` opens the `grams` table only then: redb reads a
    /// table's root page when it opens it, and this table's root is the
    /// 2 MiB page of the weights.
    fn with_stored_grams<'t, M, T, R>(&self, meta: &M, table: impl FnOnce() -> Result<Option<&'t T>>, f: impl FnOnce(&[u8]) -> R) -> Result<R>
    where
        M: ReadableTable<&'static str, u64>,
        T: ReadableTable<u32, &'static [u8]> + 't,
    {
        let id = meta.get("grams_id")?.map_or(0, |v| v.value());
        if id != 0
            && let Some(m) = gram_file::Mapped::open(&gram_file::path_for(&self.path), id)
        {
            return Ok(f(m.weights()));
        }
        let Some(table) = table()? else { return Ok(f(&[])) };
        Ok(match table.get(0)? {
            Some(v) => f(v.value()),
            None => f(&[]),
        })
    }

    /// After a commit: remembers the weights it wrote, to share with later
    /// snapshots and to write to the `gram_file` when the store closes.
    fn committed(&self, grams: Option<NewGrams>) {
        if let Some(g) = grams {
            *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()) = Some((g.id, g.weights.clone()));
            self.remember_grams(Some((g.generation, g.weights)));
        }
    }

    /// The 4-gram weights of a transaction, decoded once into `cell`.
    fn grams_once<'c, 't, M, T>(
        &self,
        cell: &'c std::cell::OnceCell<Grams>,
        meta: &M,
        table: impl FnOnce() -> Result<Option<&'t T>>,
    ) -> Result<&'c Grams>
    where
        M: ReadableTable<&'static str, u64>,
        T: ReadableTable<u32, &'static [u8]> + 't,
    {
        if let Some(g) = cell.get() {
            return Ok(g);
        }
        let g = self.grams_at(meta, table)?;
        Ok(cell.get_or_init(|| g))
    }

    /// The decoded weights of generation `generation`, if they are at hand
    /// (generation 0: none ever written, all zero).
    fn kept_grams(&self, generation: u64) -> Option<Grams> {
        if generation == 0 {
            return Some(Arc::default());
        }
        match &*self.grams.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((g, w)) if *g == generation => Some(w.clone()),
            _ => None,
        }
    }

    /// Keeps `grams` as the last weights read, unless newer ones are kept.
    fn remember_grams(&self, grams: Option<(u64, Grams)>) {
        if let Some((generation, w)) = grams {
            let mut kept = self.grams.lock().unwrap_or_else(|p| p.into_inner());
            if kept.as_ref().is_none_or(|(g, _)| *g < generation) {
                *kept = Some((generation, w));
            }
        }
    }
}

fn grams_gen<T: ReadableTable<&'static str, u64>>(meta: &T) -> Result<u64> {
    Ok(meta.get("grams_gen")?.map(|v| v.value()).unwrap_or(0))
}

/// Opens with `open`, retrying for up to `wait` while another process holds
/// the file.
pub(super) fn retry_open<D>(path: &Path, wait: Duration, open: impl Fn() -> std::result::Result<D, redb::DatabaseError>) -> Result<D> {
    let start = Instant::now();
    loop {
        match open() {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                if start.elapsed() >= wait {
                    return Err(Error::DatabaseInUse { path: path.to_path_buf() });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(redb::DatabaseError::RepairAborted) => return Err(Error::NeedsRepair { path: path.to_path_buf(), source: None }),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => return Err(Error::io(path, e)),
            Err(e) => return Err(Error::storage(path, e)),
        }
    }
}

fn read_state<T: ReadableTable<&'static str, u64>>(meta: &T) -> Result<ModelState> {
    let get = |k: &str| -> Result<u64> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
    Ok(ModelState {
        totals: Totals { spam: get("spam")?, ham: get("ham")? },
        messages: Totals { spam: get("msg_spam")?, ham: get("msg_ham")? },
        starter: Totals { spam: get("starter_spam")?, ham: get("starter_ham")? },
        bias: f64::from_bits(get("bias")?),
        mix: [f64::from_bits(get("mix0")?), f64::from_bits(get("mix1")?), f64::from_bits(get("mix2")?), f64::from_bits(get("mix3")?)],
        last_pair: [f64::from_bits(get("pair0")?), f64::from_bits(get("pair1")?), f64::from_bits(get("pair2")?), f64::from_bits(get("pair3")?)],
    })
}

fn scan_table<T: ReadableTable<u64, Rec>>(t: &T, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
    let range = match after {
        Some(a) => t.range::<u64>((Bound::Excluded(token_hash(a)), Bound::Unbounded))?,
        None => t.range::<u64>(..)?,
    };
    let mut out = Vec::with_capacity(limit.min(4096));
    for item in range.take(limit) {
        let (_, v) = item?;
        let r = v.value();
        out.push((r.4.to_string(), from_rec(r)));
    }
    Ok(out)
}

/// Bit 7 of a journal entry's class byte: auto-learned. Files written
/// before it existed have it clear everywhere (all their entries read as
/// confirmed), so the schema stays as it was.
const AUTO_BIT: u8 = 0x80;

pub(super) fn journal_entry(c: u8, day: u32, weight: u8) -> Option<JournalEntry> {
    Class::from_code(c & !AUTO_BIT).map(|class| JournalEntry { class, day, weight, auto: c & AUTO_BIT != 0 })
}

fn journal_get<T: ReadableTable<&'static [u8], (u8, u32, u8)>>(t: &T, d: &Digest) -> Result<Option<JournalEntry>> {
    Ok(t.get(d.0.as_slice())?.and_then(|v| {
        let (c, day, weight) = v.value();
        journal_entry(c, day, weight)
    }))
}

fn journal_scan_table<T: ReadableTable<&'static [u8], (u8, u32, u8)>>(
    t: &T,
    after: Option<&Digest>,
    limit: usize,
) -> Result<Vec<(Digest, JournalEntry)>> {
    let range = match after {
        Some(a) => t.range::<&[u8]>((Bound::Excluded(a.0.as_slice()), Bound::Unbounded))?,
        None => t.range::<&[u8]>(..)?,
    };
    let mut out = Vec::new();
    for item in range {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item?;
        let (c, day, weight) = v.value();
        let (Ok(d), Some(e)) = (<[u8; 32]>::try_from(k.value()), journal_entry(c, day, weight)) else { continue };
        out.push((Digest(d), e));
    }
    Ok(out)
}

struct RedbRead<'s> {
    tokens: redb::ReadOnlyTable<u64, Rec>,
    meta: redb::ReadOnlyTable<&'static str, u64>,
    journal: redb::ReadOnlyTable<&'static [u8], (u8, u32, u8)>,
    txn: redb::ReadTransaction,
    /// Opened when first needed (see `with_stored_grams`).
    grams_table: std::cell::OnceCell<Option<redb::ReadOnlyTable<u32, &'static [u8]>>>,
    store: &'s RedbStore,
    grams: std::cell::OnceCell<Grams>,
    /// A message was summed straight from the stored bytes already.
    summed_raw: std::cell::Cell<bool>,
}

impl RedbRead<'_> {
    fn grams(&self) -> Result<&Grams> {
        self.store.grams_once(&self.grams, &self.meta, || self.grams_table())
    }

    /// The `grams` table (`None` in a database that has none).
    fn grams_table(&self) -> Result<Option<&redb::ReadOnlyTable<u32, &'static [u8]>>> {
        if let Some(t) = self.grams_table.get() {
            return Ok(t.as_ref());
        }
        let t = match self.txn.open_table(GRAMS) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(self.grams_table.get_or_init(|| t).as_ref())
    }

    /// The weights decoded already (here or in the store), if they are.
    fn decoded(&self) -> Result<Option<&Grams>> {
        if let Some(g) = self.grams.get() {
            return Ok(Some(g));
        }
        Ok(self.store.kept_grams(grams_gen(&self.meta)?).map(|w| self.grams.get_or_init(|| w)))
    }
}

impl ReadView for RedbRead<'_> {
    fn state(&self) -> Result<ModelState> {
        self.store.guarded(|| read_state(&self.meta))
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        self.store.guarded(|| get_token(&self.tokens, token))
    }
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        self.store.guarded(|| get_many_hashed(&self.tokens, tokens, out))
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        self.store.guarded(|| journal_get(&self.journal, digest))
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        self.store.guarded(|| scan_table(&self.tokens, after, limit))
    }
    fn for_each_token(&self, f: &mut dyn FnMut(u64, &str, TokenRecord) -> Result<()>) -> Result<()> {
        self.store.guarded(|| {
            // One range over the snapshot: its key is the token's hash, and no
            // text is copied out.
            for item in self.tokens.range::<u64>(..)? {
                let (k, v) = item?;
                let r = v.value();
                f(k.value(), r.4, from_rec(r))?;
            }
            Ok(())
        })
    }
    fn token_count(&self) -> Result<u64> {
        self.store.guarded(|| Ok(self.tokens.len()?))
    }
    fn journal_count(&self) -> Result<u64> {
        self.store.guarded(|| Ok(self.journal.len()?))
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        self.store.guarded(|| journal_scan_table(&self.journal, after, limit))
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        self.store.guarded(|| {
            if let Some(w) = self.decoded()? {
                return Ok(super::sum_slots(w, slots));
            }
            // The first message of this snapshot: straight from the bytes (a
            // one-shot `hamlet check` never needs the decoded vector); a second
            // one decodes them for every later message.
            if self.summed_raw.replace(true) {
                return Ok(super::sum_slots(self.grams()?, slots));
            }
            self.store.with_stored_grams(&self.meta, || self.grams_table(), |bytes| super::sum_weights(slots, |s| stored_weight(bytes, s as usize)))
        })
    }
    fn gram_weights(&self) -> Result<Grams> {
        self.store.guarded(|| self.grams().cloned())
    }
}

struct RedbWrite<'t> {
    tokens: redb::Table<'t, u64, Rec>,
    meta: redb::Table<'t, &'static str, u64>,
    journal: redb::Table<'t, &'static [u8], (u8, u32, u8)>,
    txn: &'t redb::WriteTransaction,
    /// Opened when first needed (see `with_stored_grams`).
    grams_table: std::cell::OnceCell<redb::Table<'t, u32, &'static [u8]>>,
    store: &'t RedbStore,
    /// The 4-gram weights as committed before this write.
    base: std::cell::OnceCell<Grams>,
    /// Once this write changes a 4-gram weight: all of them as changed so
    /// far (one 1 MiB copy per write transaction, then plain indexing).
    changed: Option<Vec<f32>>,
}

impl<'t> RedbWrite<'t> {
    fn base(&self) -> Result<&Grams> {
        self.store.grams_once(&self.base, &self.meta, || self.grams_table().map(Some))
    }

    fn grams_table(&self) -> Result<&redb::Table<'t, u32, &'static [u8]>> {
        if let Some(t) = self.grams_table.get() {
            return Ok(t);
        }
        let t = self.txn.open_table(GRAMS)?;
        Ok(self.grams_table.get_or_init(|| t))
    }

    /// Writes back the 4-gram weights if this write changed them, bumps
    /// their generation and draws them a new id. Returns them, to remember
    /// once committed.
    fn finish(mut self) -> Result<Option<NewGrams>> {
        let Some(w) = self.changed.take() else { return Ok(None) };
        let bytes = super::weight_bytes(&w);
        let mut table = match self.grams_table.take() {
            Some(t) => t,
            None => self.txn.open_table(GRAMS)?,
        };
        table.insert(0, bytes.as_slice())?;
        let generation = grams_gen(&self.meta)? + 1;
        let id = gram_file::fresh_id();
        self.meta.insert("grams_gen", generation)?;
        self.meta.insert("grams_id", id)?;
        Ok(Some(NewGrams { generation, id, weights: Arc::new(w) }))
    }
}

impl ReadView for RedbWrite<'_> {
    fn state(&self) -> Result<ModelState> {
        self.store.guarded(|| read_state(&self.meta))
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        self.store.guarded(|| get_token(&self.tokens, token))
    }
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        self.store.guarded(|| get_many_hashed(&self.tokens, tokens, out))
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        self.store.guarded(|| journal_get(&self.journal, digest))
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        self.store.guarded(|| scan_table(&self.tokens, after, limit))
    }
    fn token_count(&self) -> Result<u64> {
        self.store.guarded(|| Ok(self.tokens.len()?))
    }
    fn journal_count(&self) -> Result<u64> {
        self.store.guarded(|| Ok(self.journal.len()?))
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        self.store.guarded(|| journal_scan_table(&self.journal, after, limit))
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        self.store.guarded(|| match &self.changed {
            Some(w) => Ok(super::sum_slots(w, slots)),
            None => Ok(super::sum_slots(self.base()?, slots)),
        })
    }
    fn gram_weights(&self) -> Result<Grams> {
        self.store.guarded(|| match &self.changed {
            Some(w) => Ok(Arc::new(w.clone())),
            None => self.base().cloned(),
        })
    }
}

impl WriteView for RedbWrite<'_> {
    fn set_state(&mut self, s: ModelState) -> Result<()> {
        self.store.guarded(|| {
            self.meta.insert("spam", s.totals.spam)?;
            self.meta.insert("ham", s.totals.ham)?;
            self.meta.insert("msg_spam", s.messages.spam)?;
            self.meta.insert("msg_ham", s.messages.ham)?;
            self.meta.insert("starter_spam", s.starter.spam)?;
            self.meta.insert("starter_ham", s.starter.ham)?;
            self.meta.insert("bias", s.bias.to_bits())?;
            for (k, v) in ["mix0", "mix1", "mix2", "mix3", "pair0", "pair1", "pair2", "pair3"].iter().zip(s.mix.into_iter().chain(s.last_pair)) {
                self.meta.insert(*k, v.to_bits())?;
            }
            Ok(())
        })
    }
    fn put(&mut self, token: &str, record: TokenRecord) -> Result<()> {
        self.store.guarded(|| {
            self.tokens.insert(token_hash(token), (record.spam, record.ham, record.day, record.weight, token))?;
            Ok(())
        })
    }
    fn remove(&mut self, token: &str) -> Result<()> {
        self.store.guarded(|| {
            // Only this token's record: on a hash collision the key holds another's.
            let h = token_hash(token);
            let mine = self.tokens.get(h)?.is_some_and(|v| v.value().4 == token);
            if mine {
                self.tokens.remove(h)?;
            }
            Ok(())
        })
    }
    fn set_journal(&mut self, digest: &Digest, entry: Option<JournalEntry>) -> Result<()> {
        self.store.guarded(|| {
            match entry {
                Some(e) => {
                    self.journal.insert(digest.0.as_slice(), (e.class.code() | if e.auto { AUTO_BIT } else { 0 }, e.day, e.weight))?;
                }
                None => {
                    self.journal.remove(digest.0.as_slice())?;
                }
            }
            Ok(())
        })
    }
    fn gram_add(&mut self, slots: &[u32], delta: f32) -> Result<()> {
        self.store.guarded(|| {
            if self.changed.is_none() {
                let mut w = self.base()?.as_ref().clone();
                w.resize(GRAM_DIM, 0.0);
                self.changed = Some(w);
            }
            if let Some(w) = &mut self.changed {
                for &s in slots {
                    if let Some(x) = w.get_mut(s as usize) {
                        *x += delta;
                    }
                }
            }
            Ok(())
        })
    }
}

impl TokenStore for RedbStore {
    fn read(&self) -> Result<Box<dyn ReadView + '_>> {
        let txn = self.begin_read()?;
        let (tokens, meta, journal) = self.guarded(|| Ok((txn.open_table(TOKENS)?, txn.open_table(META)?, txn.open_table(JOURNAL)?)))?;
        Ok(Box::new(RedbRead {
            tokens,
            meta,
            journal,
            txn,
            grams_table: std::cell::OnceCell::new(),
            store: self,
            grams: std::cell::OnceCell::new(),
            summed_raw: std::cell::Cell::new(false),
        }))
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteView) -> Result<()>) -> Result<()> {
        let txn = self.begin_write()?;
        // The view's methods guard their own redb calls; `f` is the
        // caller's code, whose panics are not the file's.
        let outcome = self.guarded(|| self.write_view(&txn)).and_then(|mut view| {
            f(&mut view)?;
            self.guarded(|| view.finish())
        });
        match outcome {
            Ok(grams) => {
                self.guarded(|| Ok(txn.commit()?))?;
                self.committed(grams);
                Ok(())
            }
            Err(e) => {
                // A failed abort is remembered (an I/O error reopens the
                // file); the caller's error is the one to report.
                let _ = self.guarded(|| Ok(txn.abort()?));
                Err(e)
            }
        }
    }

    fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    fn health(&self) -> Result<()> {
        RedbStore::health(self)
    }
}

impl Drop for RedbStore {
    /// Writes the `gram_file` for the weights this store committed last.
    /// The database is still open (and locked against other writers) here,
    /// so they are still its current ones. A failure (a read-only folder)
    /// is ignored: the file is only a faster copy, and readers without it
    /// read redb.
    fn drop(&mut self) {
        let healthy = self.fault().is_none();
        if let Some((id, w)) = self.unsaved.get_mut().unwrap_or_else(|p| p.into_inner()).take()
            && healthy
        {
            let _ = gram_file::write(&gram_file::path_for(&self.path), id, &w);
        }
        if let Some(db) = self.db.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            drop_guarded(&self.path, db);
        }
    }
}

/// Closes a handle; redb may panic closing a damaged file, which is no
/// reason to take the process down.
fn drop_guarded(path: &Path, db: Db) {
    let _ = safe::guard(path, || {
        drop(db);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = std::env::temp_dir().join(format!("hamlet-redb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = RedbStore::open(&dir.join("t.redb"), Duration::ZERO).unwrap();
        super::super::conformance::run(&store, true);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_only_opens_share_and_refuse_writes() {
        let dir = std::env::temp_dir().join(format!("hamlet-redb-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("t.redb");
        drop(RedbStore::open(&path, Duration::ZERO).unwrap());
        let a = RedbStore::open_read_only(&path, Duration::ZERO).unwrap();
        let b = RedbStore::open_read_only(&path, Duration::ZERO).unwrap();
        assert_eq!(b.read().unwrap().token_count().unwrap(), 0);
        assert!(a.write(&mut |_| Ok(())).is_err());
        // A writer is excluded while readers hold it.
        assert!(matches!(RedbStore::open(&path, Duration::ZERO), Err(Error::DatabaseInUse { .. })));
        drop((a, b));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gram_file_written_on_close_and_read_only_when_current() {
        let dir = std::env::temp_dir().join(format!("hamlet-redb-gf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("t.redb");
        let file = gram_file::path_for(&path);
        let store = RedbStore::open(&path, Duration::ZERO).unwrap();
        store.write(&mut |w| w.gram_add(&[5, 70_000], 0.5)).unwrap();
        assert!(!file.exists(), "written when the store closes, not per transaction");
        drop(store);
        let header = std::fs::read(&file).unwrap();
        let id = u64::from_le_bytes(header[8..16].try_into().unwrap());
        let sum = |slots: &[u32]| {
            let s = RedbStore::open_read_only(&path, Duration::ZERO).unwrap();
            let first = s.read().unwrap().gram_sum(slots).unwrap();
            let decoded = super::super::sum_slots(&s.read().unwrap().gram_weights().unwrap(), slots);
            assert_eq!(first, decoded, "one-shot and decoded reads agree");
            first
        };
        assert_eq!(sum(&[5, 70_000, 6]), 1.0);
        // The file is what is read while its id is current...
        let mut other = vec![0.0f32; GRAM_DIM];
        other[6] = 3.0;
        gram_file::write(&file, id, &other).unwrap();
        assert_eq!(sum(&[5, 70_000, 6]), 3.0);
        // ...and ignored when not: redb's weights.
        gram_file::write(&file, id ^ 2, &other).unwrap();
        assert_eq!(sum(&[5, 70_000, 6]), 1.0);
        // A later write makes a new id and file.
        let store = RedbStore::open(&path, Duration::ZERO).unwrap();
        store.write(&mut |w| w.gram_add(&[6], 0.25)).unwrap();
        drop(store);
        assert_eq!(sum(&[5, 70_000, 6]), 1.25);
        assert_ne!(std::fs::read(&file).unwrap()[8..16], id.to_le_bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_zero_length_file_is_refused_and_left_empty() {
        let dir = std::env::temp_dir().join(format!("hamlet-redb-zero-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.redb");
        std::fs::write(&path, b"").unwrap();
        for r in [RedbStore::open(&path, Duration::ZERO), RedbStore::open_read_only(&path, Duration::ZERO)] {
            assert!(matches!(r, Err(Error::NotADatabase { .. })));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn health_is_ok_on_a_sound_store_and_after_a_reopen() {
        let dir = std::env::temp_dir().join(format!("hamlet-redb-health-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("t.redb");
        let store = RedbStore::open(&path, Duration::ZERO).unwrap();
        store.health().unwrap();
        store.write(&mut |w| w.put("a", TokenRecord { spam: 1, ham: 0, day: 1, weight: 0.0 })).unwrap();
        // As after an I/O error: the next operation reopens the file, and
        // health's probe write leaves nothing behind.
        *store.fault.lock().unwrap() = Some(Fault::Io("test".into()));
        store.health().unwrap();
        assert!(store.fault().is_none());
        assert_eq!(store.read().unwrap().get("a").unwrap().unwrap().spam, 1);
        let txn = store.begin_read().unwrap();
        assert!(matches!(txn.open_table(PROBE), Err(redb::TableError::TableDoesNotExist(_))), "the probe's table is removed");
        drop(txn);
        *store.fault.lock().unwrap() = Some(Fault::Corrupt("test".into()));
        assert!(matches!(store.health(), Err(Error::Corrupt { .. })));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn second_open_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("hamlet-redb-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("t.redb");
        let _a = RedbStore::open(&path, Duration::ZERO).unwrap();
        match RedbStore::open(&path, Duration::from_millis(50)) {
            Err(Error::DatabaseInUse { .. }) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened twice"),
        }
        drop(_a);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
