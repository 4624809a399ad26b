//! Where the database is and how it is opened: the default path, the
//! lock wait, and the starter model every new database gets.

use super::{RedbStore, parse};
use crate::Result;
use std::path::{Path, PathBuf};
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

/// Opens (or creates, with the starter model) the database.
pub fn open_db(path: &Path, starter: bool) -> Result<RedbStore> {
    if !starter || path.exists() {
        return RedbStore::open(path, LOCK_WAIT);
    }
    let seed = parse(&mut STARTER_MODEL.as_bytes(), "models/starter.dump")?;
    RedbStore::open_seeded(path, LOCK_WAIT, Some(&seed))
}

/// Opens the database read-only when it exists (a scorer never waits for a
/// writer), else creates it with the starter model.
pub fn open_db_read_only(path: &Path) -> Result<RedbStore> {
    if path.exists() { RedbStore::open_read_only(path, LOCK_WAIT) } else { open_db(path, true) }
}
