//! The library's error type: one enum, hand-written `Display`, each message a
//! single line that says what went wrong and, where there is one, the remedy.

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    Io { path: PathBuf, source: std::io::Error },
    /// The database file is locked by another process.
    DatabaseInUse { path: PathBuf },
    /// The database was written by another schema or tokenizer version.
    SchemaMismatch { path: PathBuf, found: String, expected: String },
    /// redb reported an error.
    Storage(String),
    /// A dump file or index file could not be parsed.
    Parse { what: String, line: usize, message: String },
    /// A caller asked for something that makes no sense (bad flag combination...).
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            Error::DatabaseInUse { path } => write!(
                f,
                "database {} is in use by another process (is `hamlet serve` running? \
                 stop it, or train and check through its HTTP API instead)",
                path.display()
            ),
            Error::SchemaMismatch { path, found, expected } => write!(
                f,
                "database {} has format {found}, this hamlet needs {expected}: \
                 `hamlet db dump` it with the hamlet that wrote it and `hamlet db load` the dump into a new database, or start a new one",
                path.display()
            ),
            Error::Storage(m) => write!(f, "database error: {m}"),
            Error::Parse { what, line, message } => write!(f, "{what}:{line}: {message}"),
            Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error { Error::Storage(e.to_string()) }
        }
    )*};
}
from_redb!(redb::Error, redb::StorageError, redb::TableError, redb::TransactionError, redb::CommitError, redb::DatabaseError);
