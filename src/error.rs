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
    /// A file given as a database is not one (zero-length, foreign,
    /// truncated); it was left as it is.
    NotADatabase { path: PathBuf, what: String },
    /// The database file is damaged: redb found an inconsistency or
    /// panicked reading it.
    Corrupt { path: PathBuf, detail: String },
    /// A writer stopped without closing the database (a crash, a full
    /// disk) and the repair needs write access this process does not have.
    NeedsRepair { path: PathBuf, source: Option<Box<Error>> },
    /// redb reported an error; `path` is the database file when it is known.
    Storage { path: Option<PathBuf>, source: redb::Error },
    /// A lock guarding in-memory state was poisoned by a panic.
    Poisoned(&'static str),
    /// A listening socket could not be bound.
    Bind { what: &'static str, addr: String, source: std::io::Error },
    /// An IMAP account failed (connecting, logging in, a folder).
    Imap { account: String, source: Box<Error> },
    /// The system failed us outside a file: a connection to a server, a runtime.
    System { what: String, source: std::io::Error },
    /// A dump file or index file could not be parsed.
    Parse { what: String, line: usize, message: String },
    /// A caller asked for something that makes no sense (bad flag combination...).
    Invalid(String),
    /// A server we talk to (an IMAP server, `hamlet serve`) refused or
    /// answered badly.
    Remote(String),
    /// Learning for a user without a model would create one past the
    /// configured caps (`users_max`, `users_max_bytes`).
    UsersFull { user: String, why: String },
    /// A Redis server (the Redis store) failed or could not be reached;
    /// `target` is its URL without the password.
    Redis { target: String, source: redis::RedisError },
    /// A bug or a task that died: a worker thread panicked, a server task failed.
    Internal(String),
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
            Error::NotADatabase { path, what } => write!(
                f,
                "{} is not a hamlet database ({what}); nothing was changed: move it aside (a missing database is created anew) \
                 or give the right file with --db",
                path.display()
            ),
            Error::Corrupt { path, detail } => write!(
                f,
                "database {} is corrupt ({detail}); nothing was changed: `hamlet db recover NEW.redb` copies what is readable \
                 into a new database (then use that one), or restore a backup",
                path.display()
            ),
            Error::NeedsRepair { path, source: Some(e) } => write!(
                f,
                "database {} was not closed cleanly (a crash or a full disk) and its repair failed: {e}; \
                 free space or give write access, then run `hamlet db stats` once",
                path.display()
            ),
            Error::NeedsRepair { path, source: None } => write!(
                f,
                "database {} was not closed cleanly (a crash or a full disk) and needs a repair, which needs write access: \
                 run `hamlet db stats` once as a user who can write it",
                path.display()
            ),
            Error::Storage { path: Some(p), source } => write!(f, "database error: {}: {source}", p.display()),
            Error::Storage { path: None, source } => write!(f, "database error: {source}"),
            Error::Poisoned(what) => write!(f, "internal error: the {what} lock was poisoned by an earlier panic"),
            Error::Bind { what, addr, source } => write!(f, "cannot listen for {what} on {addr}: {source}"),
            Error::Imap { account, source } => write!(f, "account {account}: {source}"),
            Error::System { what, source } => write!(f, "{what}: {source}"),
            Error::Parse { what, line, message } => write!(f, "{what}:{line}: {message}"),
            Error::Invalid(m) | Error::Remote(m) => f.write_str(m),
            Error::UsersFull { user, why } => {
                write!(f, "no model for user {user:?}: {why}; existing users still learn (raise the cap in hamlet.toml, or remove unused models)")
            }
            Error::Redis { target, source } => write!(f, "redis {target}: {source}"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Bind { source, .. } | Error::System { source, .. } => Some(source),
            Error::Storage { source, .. } => Some(source),
            Error::Redis { source, .. } => Some(source),
            Error::Imap { source, .. } => Some(&**source),
            Error::NeedsRepair { source: Some(source), .. } => Some(&**source),
            _ => None,
        }
    }
}

impl Error {
    /// The store could not be reached (Redis down or too slow): a check
    /// goes on without the model's opinion, a learn is refused (503).
    pub fn is_store_unavailable(&self) -> bool {
        matches!(self, Error::Redis { source, .. } if source.is_io_error() || source.is_timeout() || source.is_connection_dropped() || source.is_connection_refusal() || source.is_unrecoverable_error() || source.is_cluster_error())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// A redb error on the database at `path`.
    pub fn storage(path: impl Into<PathBuf>, source: impl Into<redb::Error>) -> Error {
        Error::Storage { path: Some(path.into()), source: source.into() }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error { Error::Storage { path: None, source: e.into() } }
        }
    )*};
}
from_redb!(redb::Error, redb::StorageError, redb::TableError, redb::TransactionError, redb::CommitError, redb::DatabaseError);
