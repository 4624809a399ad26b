//! Where the database is and how it is opened: the default path, the
//! lock wait, the starter model every new database gets, and [`Db`]: a
//! redb file or a Redis model, whichever `--db` names.

use super::redis::{RedisStore, SHARED_LEVELS, Target};
use super::{ExpireStats, ReadView, RedbStore, TokenStore, WriteLimits, WriteView, parse};
use crate::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The starter model, loaded into every new database (see models/README.md).
const STARTER_MODEL: &str = include_str!("../../models/starter.dump");

/// The default database path.
pub fn default_db_path() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("hamlet/hamlet.redb");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/hamlet/hamlet.redb")
}

/// How long a command waits for a database another hamlet holds.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The starter model, parsed.
pub fn starter() -> Result<super::Parsed> {
    parse(&mut STARTER_MODEL.as_bytes(), "models/starter.dump")
}

/// Opens (or creates, with the starter model) the database.
pub fn open_db(path: &Path, starter_model: bool) -> Result<RedbStore> {
    if !starter_model || path.exists() {
        return RedbStore::open(path, LOCK_WAIT);
    }
    RedbStore::open_seeded(path, LOCK_WAIT, Some(&starter()?))
}

/// Opens the database read-only when it exists (a scorer never waits for a
/// writer), else creates it with the starter model.
pub fn open_db_read_only(path: &Path) -> Result<RedbStore> {
    if path.exists() { RedbStore::open_read_only(path, LOCK_WAIT) } else { open_db(path, true) }
}

/// Opens the shared model on Redis; a model created now gets the starter
/// model when `starter_model` is set (by the one host that created it).
pub fn open_redis(target: Arc<Target>, prefix: &str, starter_model: bool) -> Result<RedisStore> {
    let (store, created) = RedisStore::open(target, prefix, "main", SHARED_LEVELS)?;
    if created && starter_model {
        let seed = starter()?;
        store.write(&mut |w| super::apply(w, &seed, "models/starter.dump"))?;
    }
    Ok(store)
}

/// The token database: a redb file or a model on Redis.
pub enum Db {
    Redb(RedbStore),
    Redis(RedisStore),
}

impl Db {
    /// Where it is: the file, or the Redis URL (without password) and model.
    pub fn describe(&self) -> String {
        match self {
            Db::Redb(s) => s.path().display().to_string(),
            Db::Redis(s) => s.describe(),
        }
    }

    /// `"redb"` or `"redis"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Redb(_) => "redb",
            Db::Redis(_) => "redis",
        }
    }
}

impl TokenStore for Db {
    fn read(&self) -> Result<Box<dyn ReadView + '_>> {
        match self {
            Db::Redb(s) => s.read(),
            Db::Redis(s) => s.read(),
        }
    }
    fn write(&self, f: &mut dyn FnMut(&mut dyn WriteView) -> Result<()>) -> Result<()> {
        match self {
            Db::Redb(s) => s.write(f),
            Db::Redis(s) => s.write(f),
        }
    }
    fn size_bytes(&self) -> u64 {
        match self {
            Db::Redb(s) => s.size_bytes(),
            Db::Redis(s) => s.size_bytes(),
        }
    }
    fn health(&self) -> Result<()> {
        match self {
            Db::Redb(s) => TokenStore::health(s),
            Db::Redis(s) => s.health(),
        }
    }
    fn write_limits(&self) -> WriteLimits {
        match self {
            Db::Redb(s) => s.write_limits(),
            Db::Redis(s) => s.write_limits(),
        }
    }
    fn expire(&self, today: u32, max_age_days: u32, hapax_age_days: u32, batch: usize) -> Result<ExpireStats> {
        match self {
            Db::Redb(s) => TokenStore::expire(s, today, max_age_days, hapax_age_days, batch),
            Db::Redis(s) => TokenStore::expire(s, today, max_age_days, hapax_age_days, batch),
        }
    }
}
