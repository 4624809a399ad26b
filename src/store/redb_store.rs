//! The redb token store: one file, MVCC (readers never wait for the writer),
//! one write transaction per training batch, crash-safe commits.
//!
//! Layout (schema [`SCHEMA_VERSION`]):
//!
//! | table     | key                | value                                   |
//! |-----------|--------------------|-----------------------------------------|
//! | `tokens`  | token hash (u64)   | (spam u32, ham u32, last-seen day u32, weight f32, token `&str`) |
//! | `meta`    | name (`&str`)      | u64: `schema`, `tokenizer`, `spam`, `ham` (weighted totals), `msg_spam`, `msg_ham`, `created`, `grams_gen` (counts writes of the 4-gram weights), `grams_id` (random, names their `gram_file` copy); f64 bits: `bias`, `mix0`..`mix2` |
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

use super::{GRAM_DIM, Grams, JournalEntry, ModelState, ReadView, SCHEMA_VERSION, TokenRecord, TokenStore, Totals, WriteView};
use super::{gram_file, stored_weight};
use crate::digest::Digest;
use crate::hash::token_hash;
use crate::tokenize::TOKENIZER_VERSION;
use crate::{Class, Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Rec = (u32, u32, u32, f32, &'static str);

/// redb's page cache, bounded so a long-running service's memory stays flat
/// (redb's default is 1 GiB); 256 MiB holds a model trained on all three
/// shared corpora several times over.
const CACHE_BYTES: usize = 256 << 20;
/// The cache of a per-user model: users' models are small (their own
/// corrections), and a server keeps dozens open.
pub const USER_CACHE_BYTES: usize = 8 << 20;
const TOKENS: TableDefinition<u64, Rec> = TableDefinition::new("tokens");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const JOURNAL: TableDefinition<&[u8], (u8, u32, u8)> = TableDefinition::new("journal");
const GRAMS: TableDefinition<u32, &[u8]> = TableDefinition::new("grams");

/// See the module documentation.
pub struct RedbStore {
    db: Db,
    path: PathBuf,
    /// The 4-gram weights last read, and their `grams_gen`.
    grams: Mutex<Option<(u64, Grams)>>,
    /// The 4-gram weights this store committed last, and their `grams_id`,
    /// until written to the `gram_file` (when the store is dropped).
    unsaved: Mutex<Option<(u64, Grams)>>,
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
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let db = retry_open(path, wait, || Database::builder().set_cache_size(cache_bytes).create(path))?;
        let store = RedbStore { db: Db::ReadWrite(db), path: path.to_path_buf(), grams: Mutex::new(None), unsaved: Mutex::new(None) };
        store.check_schema(seed)?;
        Ok(store)
    }

    /// Opens an existing database read-only: it writes nothing to the file
    /// (opening for writing marks the file in use, a few writes), and any
    /// number of read-only openers share it, so concurrent `hamlet check`
    /// processes from a mail pipeline don't queue. Writes fail.
    pub fn open_read_only(path: &Path, wait: Duration) -> Result<RedbStore> {
        let db = retry_open(path, wait, || Database::builder().set_cache_size(CACHE_BYTES).open_read_only(path))?;
        let store = RedbStore { db: Db::ReadOnly(db), path: path.to_path_buf(), grams: Mutex::new(None), unsaved: Mutex::new(None) };
        store.check_schema(None)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the database holds no training at all (a new file).
    pub fn is_empty(&self) -> Result<bool> {
        let r = self.read()?;
        Ok(r.token_count()? == 0 && r.state()?.totals == Totals::default())
    }

    fn writable(&self) -> Result<&Database> {
        match &self.db {
            Db::ReadWrite(d) => Ok(d),
            Db::ReadOnly(_) => Err(Error::Invalid(format!("{} is open read-only", self.path.display()))),
        }
    }

    fn check_schema(&self, seed: Option<&super::dump::Parsed>) -> Result<()> {
        let txn = self.db.begin_read()?;
        match txn.open_table(META) {
            Ok(meta) => {
                let schema = meta.get("schema")?.map(|v| v.value());
                let tok = meta.get("tokenizer")?.map(|v| v.value());
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
            Err(redb::TableError::TableDoesNotExist(_)) => {
                drop(txn);
                let w = self.writable()?.begin_write()?;
                let grams = {
                    let mut view = self.write_view(&w)?;
                    view.meta.insert("schema", u64::from(SCHEMA_VERSION))?;
                    view.meta.insert("tokenizer", u64::from(TOKENIZER_VERSION))?;
                    view.meta.insert("created", u64::from(super::today()))?;
                    if let Some(seed) = seed {
                        super::dump::apply(&mut view, seed, "seed")?;
                    }
                    view.finish()?
                };
                w.commit()?;
                self.committed(grams);
                Ok(())
            }
            Err(e) => Err(e.into()),
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
fn retry_open<D>(path: &Path, wait: Duration, open: impl Fn() -> std::result::Result<D, redb::DatabaseError>) -> Result<D> {
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
        bias: f64::from_bits(get("bias")?),
        mix: [f64::from_bits(get("mix0")?), f64::from_bits(get("mix1")?), f64::from_bits(get("mix2")?)],
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

fn journal_entry(c: u8, day: u32, weight: u8) -> Option<JournalEntry> {
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
        read_state(&self.meta)
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        get_token(&self.tokens, token)
    }
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        get_many_hashed(&self.tokens, tokens, out)
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        journal_get(&self.journal, digest)
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        scan_table(&self.tokens, after, limit)
    }
    fn for_each_token(&self, f: &mut dyn FnMut(u64, &str, TokenRecord) -> Result<()>) -> Result<()> {
        // One range over the snapshot: its key is the token's hash, and no
        // text is copied out.
        for item in self.tokens.range::<u64>(..)? {
            let (k, v) = item?;
            let r = v.value();
            f(k.value(), r.4, from_rec(r))?;
        }
        Ok(())
    }
    fn token_count(&self) -> Result<u64> {
        Ok(self.tokens.len()?)
    }
    fn journal_count(&self) -> Result<u64> {
        Ok(self.journal.len()?)
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        journal_scan_table(&self.journal, after, limit)
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
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
    }
    fn gram_weights(&self) -> Result<Grams> {
        self.grams().cloned()
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
        read_state(&self.meta)
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        get_token(&self.tokens, token)
    }
    fn get_many(&self, tokens: &[(u64, &str)], out: &mut Vec<Option<TokenRecord>>) -> Result<()> {
        get_many_hashed(&self.tokens, tokens, out)
    }
    fn journal(&self, digest: &Digest) -> Result<Option<JournalEntry>> {
        journal_get(&self.journal, digest)
    }
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
        scan_table(&self.tokens, after, limit)
    }
    fn token_count(&self) -> Result<u64> {
        Ok(self.tokens.len()?)
    }
    fn journal_count(&self) -> Result<u64> {
        Ok(self.journal.len()?)
    }
    fn journal_scan(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, JournalEntry)>> {
        journal_scan_table(&self.journal, after, limit)
    }
    fn gram_sum(&self, slots: &[u32]) -> Result<f64> {
        match &self.changed {
            Some(w) => Ok(super::sum_slots(w, slots)),
            None => Ok(super::sum_slots(self.base()?, slots)),
        }
    }
    fn gram_weights(&self) -> Result<Grams> {
        match &self.changed {
            Some(w) => Ok(Arc::new(w.clone())),
            None => self.base().cloned(),
        }
    }
}

impl WriteView for RedbWrite<'_> {
    fn set_state(&mut self, s: ModelState) -> Result<()> {
        self.meta.insert("spam", s.totals.spam)?;
        self.meta.insert("ham", s.totals.ham)?;
        self.meta.insert("msg_spam", s.messages.spam)?;
        self.meta.insert("msg_ham", s.messages.ham)?;
        self.meta.insert("bias", s.bias.to_bits())?;
        for (k, v) in ["mix0", "mix1", "mix2"].iter().zip(s.mix) {
            self.meta.insert(*k, v.to_bits())?;
        }
        Ok(())
    }
    fn put(&mut self, token: &str, record: TokenRecord) -> Result<()> {
        self.tokens.insert(token_hash(token), (record.spam, record.ham, record.day, record.weight, token))?;
        Ok(())
    }
    fn remove(&mut self, token: &str) -> Result<()> {
        // Only this token's record: on a hash collision the key holds another's.
        let h = token_hash(token);
        let mine = self.tokens.get(h)?.is_some_and(|v| v.value().4 == token);
        if mine {
            self.tokens.remove(h)?;
        }
        Ok(())
    }
    fn set_journal(&mut self, digest: &Digest, entry: Option<JournalEntry>) -> Result<()> {
        match entry {
            Some(e) => {
                self.journal.insert(digest.0.as_slice(), (e.class.code() | if e.auto { AUTO_BIT } else { 0 }, e.day, e.weight))?;
            }
            None => {
                self.journal.remove(digest.0.as_slice())?;
            }
        }
        Ok(())
    }
    fn gram_add(&mut self, slots: &[u32], delta: f32) -> Result<()> {
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
    }
}

impl TokenStore for RedbStore {
    fn read(&self) -> Result<Box<dyn ReadView + '_>> {
        let txn = self.db.begin_read()?;
        Ok(Box::new(RedbRead {
            tokens: txn.open_table(TOKENS)?,
            meta: txn.open_table(META)?,
            journal: txn.open_table(JOURNAL)?,
            txn,
            grams_table: std::cell::OnceCell::new(),
            store: self,
            grams: std::cell::OnceCell::new(),
            summed_raw: std::cell::Cell::new(false),
        }))
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteView) -> Result<()>) -> Result<()> {
        let txn = self.writable()?.begin_write()?;
        let outcome = {
            let mut view = self.write_view(&txn)?;
            f(&mut view).and_then(|()| view.finish())
        };
        match outcome {
            Ok(grams) => {
                txn.commit()?;
                self.committed(grams);
                Ok(())
            }
            Err(e) => {
                txn.abort()?;
                Err(e)
            }
        }
    }

    fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for RedbStore {
    /// Writes the `gram_file` for the weights this store committed last.
    /// The database is still open (and locked against other writers) here,
    /// so they are still its current ones. A failure (a read-only folder)
    /// is ignored: the file is only a faster copy, and readers without it
    /// read redb.
    fn drop(&mut self) {
        if let Some((id, w)) = self.unsaved.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = gram_file::write(&gram_file::path_for(&self.path), id, &w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        let dir = std::env::temp_dir().join(format!("hamlet-redb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = RedbStore::open(&dir.join("t.redb"), Duration::ZERO).unwrap();
        super::super::conformance::run(&store);
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
