//! The redb token store: one file, MVCC (readers never wait for the writer),
//! one write transaction per training batch, crash-safe commits.
//!
//! Layout (schema [`SCHEMA_VERSION`]):
//!
//! | table     | key                | value                                   |
//! |-----------|--------------------|-----------------------------------------|
//! | `tokens`  | token (`&str`)     | (spam u32, ham u32, last-seen day u32, weight f32) |
//! | `meta`    | name (`&str`)      | u64: `schema`, `tokenizer`, `spam`, `ham` (weighted totals), `msg_spam`, `msg_ham`, `created`; f64 bits: `bias`, `mix0`..`mix2` |
//! | `journal` | digest (32 bytes)  | (class u8, day u32, weight u8)          |

use super::{JournalEntry, ModelState, ReadView, SCHEMA_VERSION, TokenRecord, TokenStore, Totals, WriteView};
use crate::digest::Digest;
use crate::tokenize::TOKENIZER_VERSION;
use crate::{Class, Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Rec = (u32, u32, u32, f32);
const TOKENS: TableDefinition<&str, Rec> = TableDefinition::new("tokens");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const JOURNAL: TableDefinition<&[u8], (u8, u32, u8)> = TableDefinition::new("journal");

/// See the module documentation.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

fn to_rec(r: TokenRecord) -> Rec {
    (r.spam, r.ham, r.day, r.weight)
}

fn from_rec(r: Rec) -> TokenRecord {
    TokenRecord { spam: r.0, ham: r.1, day: r.2, weight: r.3 }
}

impl RedbStore {
    /// Opens the database at `path`, creating it (and its folder) if missing.
    ///
    /// While another process holds the file, retries for up to `wait`, then
    /// fails with [`Error::DatabaseInUse`].
    pub fn open(path: &Path, wait: Duration) -> Result<RedbStore> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
        }
        let start = Instant::now();
        let db = loop {
            match Database::create(path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    if start.elapsed() >= wait {
                        return Err(Error::DatabaseInUse { path: path.to_path_buf() });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
                    return Err(Error::io(path, e));
                }
                Err(e) => return Err(Error::Storage(format!("{}: {e}", path.display()))),
            }
        };
        let store = RedbStore { db, path: path.to_path_buf() };
        store.check_schema()?;
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

    fn check_schema(&self) -> Result<()> {
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
                let w = self.db.begin_write()?;
                {
                    let mut meta = w.open_table(META)?;
                    meta.insert("schema", u64::from(SCHEMA_VERSION))?;
                    meta.insert("tokenizer", u64::from(TOKENIZER_VERSION))?;
                    meta.insert("created", u64::from(super::today()))?;
                    w.open_table(TOKENS)?;
                    w.open_table(JOURNAL)?;
                }
                w.commit()?;
                Ok(())
            }
            Err(e) => Err(e.into()),
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

fn scan_table<T: ReadableTable<&'static str, Rec>>(t: &T, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>> {
    let range = match after {
        Some(a) => t.range::<&str>((Bound::Excluded(a), Bound::Unbounded))?,
        None => t.range::<&str>(..)?,
    };
    let mut out = Vec::with_capacity(limit.min(4096));
    for item in range.take(limit) {
        let (k, v) = item?;
        out.push((k.value().to_string(), from_rec(v.value())));
    }
    Ok(out)
}

fn journal_get<T: ReadableTable<&'static [u8], (u8, u32, u8)>>(t: &T, d: &Digest) -> Result<Option<JournalEntry>> {
    Ok(t.get(d.0.as_slice())?.and_then(|v| {
        let (c, day, weight) = v.value();
        Class::from_code(c).map(|class| JournalEntry { class, day, weight })
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
        let (Ok(d), Some(class)) = (<[u8; 32]>::try_from(k.value()), Class::from_code(c)) else { continue };
        out.push((Digest(d), JournalEntry { class, day, weight }));
    }
    Ok(out)
}

struct RedbRead {
    tokens: redb::ReadOnlyTable<&'static str, Rec>,
    meta: redb::ReadOnlyTable<&'static str, u64>,
    journal: redb::ReadOnlyTable<&'static [u8], (u8, u32, u8)>,
}

impl ReadView for RedbRead {
    fn state(&self) -> Result<ModelState> {
        read_state(&self.meta)
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        Ok(self.tokens.get(token)?.map(|v| from_rec(v.value())))
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
}

struct RedbWrite<'t> {
    tokens: redb::Table<'t, &'static str, Rec>,
    meta: redb::Table<'t, &'static str, u64>,
    journal: redb::Table<'t, &'static [u8], (u8, u32, u8)>,
}

impl ReadView for RedbWrite<'_> {
    fn state(&self) -> Result<ModelState> {
        read_state(&self.meta)
    }
    fn get(&self, token: &str) -> Result<Option<TokenRecord>> {
        Ok(self.tokens.get(token)?.map(|v| from_rec(v.value())))
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
        self.tokens.insert(token, to_rec(record))?;
        Ok(())
    }
    fn remove(&mut self, token: &str) -> Result<()> {
        self.tokens.remove(token)?;
        Ok(())
    }
    fn set_journal(&mut self, digest: &Digest, entry: Option<JournalEntry>) -> Result<()> {
        match entry {
            Some(e) => {
                self.journal.insert(digest.0.as_slice(), (e.class.code(), e.day, e.weight))?;
            }
            None => {
                self.journal.remove(digest.0.as_slice())?;
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
        }))
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteView) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut view = RedbWrite {
                tokens: txn.open_table(TOKENS)?,
                meta: txn.open_table(META)?,
                journal: txn.open_table(JOURNAL)?,
            };
            f(&mut view)
        };
        match outcome {
            Ok(()) => {
                txn.commit()?;
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
