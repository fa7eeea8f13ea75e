//! Errors.
//!
//! Policy:
//! - Bad input from the caller (ids, keys, options, ranges, a failing upload reader) has its own
//!   variants; it never changes the store.
//! - Corruption of stored bytes (`Corrupted`, `ChecksumMismatch`) is never reported as `Io`, and
//!   corrupt bytes are never returned as data.
//! - `Io` carries the operation and the path. A full disk is `DiskFull`, so a caller can tell it
//!   apart and retry later; the store stays usable.
//! - A failed pack write or fsync fails the operation with `Io`/`DiskFull`; the packs it wrote to
//!   are cut back or retired, and the store stays usable. A put is refused with `DiskFull`
//!   before writing anything when free space falls below `Options::min_free_space`. A delete,
//!   GC or `drop_damaged_tracks` first makes room for its metadata commit (releasing the
//!   ballast, `src/space.rs`) or is refused with `DiskFull` before writing anything.
//! - A failed write or fsync inside the metadata database fails the operation with
//!   `Io`/`DiskFull` and leaves the database refusing further work (redb's `PreviousIo`): every
//!   later call returns `Poisoned` until the store is reopened, which recovers from disk with
//!   nothing committed lost. If it was the commit's own fsync that failed, the operation's
//!   outcome is unknown until then: after reopening it is wholly there or wholly absent.

use std::io;
use std::path::PathBuf;

use crate::ids::{ChunkId, PackId};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the engine returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A user id was empty, too long, not UTF-8 or held a NUL or control character.
    #[error("invalid user id: {0}")]
    InvalidUserId(&'static str),
    /// A track key was empty, too long, not UTF-8 or held a NUL or control character.
    #[error("invalid track key: {0}")]
    InvalidKey(&'static str),
    /// A rights-holder name was empty, too long, not UTF-8, held a NUL or control character or
    /// began or ended with whitespace.
    #[error("invalid rights holder: {0}")]
    InvalidRightsHolder(&'static str),
    /// The user has never stored anything here.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The user has no track under this key.
    #[error("user {user:?} has no track {key:?}")]
    TrackNotFound {
        /// The user.
        user: String,
        /// The key asked for.
        key: String,
    },
    /// The track was deleted or replaced while a reader was reading it.
    #[error("track {key:?} of user {user:?} was deleted or replaced while being read")]
    TrackChanged {
        /// The user.
        user: String,
        /// The key.
        key: String,
    },
    /// A migration that copies data would not fit in the free disk space; nothing was changed.
    #[error("not enough free space: migration must write {needed} bytes, {available} are free")]
    InsufficientSpace {
        /// Bytes the migration would write (what-if figure plus pack overhead).
        needed: u64,
        /// Bytes free on the store's file system.
        available: u64,
    },
    /// A put would take the user's counted tracks past their quota ([`crate::Quota`]); nothing
    /// was stored.
    #[error("user {user} is over quota: {needed} {what} needed, {limit} allowed")]
    QuotaExceeded {
        /// The user.
        user: String,
        /// `"bytes"` or `"tracks"`.
        what: &'static str,
        /// The user's limit.
        limit: u64,
        /// What the user's counted tracks would hold after the put.
        needed: u64,
    },
    /// The options given to [`crate::Store::open`] are not usable.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A byte range outside the track, or with start after end.
    #[error("invalid range {start}..={end} for a track of {len} bytes")]
    InvalidRange {
        /// First byte asked for.
        start: u64,
        /// Last byte asked for (inclusive).
        end: u64,
        /// Track length.
        len: u64,
    },
    /// The reader supplying an upload failed; nothing was committed.
    #[error("upload reader failed after {read} bytes were chunked: {source}")]
    Upload {
        /// Bytes of the upload cut into chunks before the failure (the reader may have delivered
        /// up to one maximum chunk more).
        read: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// The directory exists, is not empty and is not a lockerstore store.
    #[error("{0} is not a lockerstore store")]
    NotAStore(PathBuf),
    /// The directory holds a store's files (metadata or packs) but its `STORE` file is missing
    /// or unreadable, so open cannot tell which store it is; nothing was changed. A creation
    /// never leaves this behind (it writes `STORE` first), so it is damage or an operator's
    /// mistake. [`crate::Store::repair_store_file`] (`lockerstore --store DIR repair`) rewrites
    /// `STORE` from the copy the metadata keeps.
    #[error(
        "{dir} holds a store's files ({}) but its STORE file is {problem}; nothing was changed. \
         If this is the store, `lockerstore --store {dir} repair` (Store::repair_store_file) \
         rewrites STORE from the copy kept in meta.redb",
        present.join(", ")
    )]
    StoreFileLost {
        /// The store directory.
        dir: PathBuf,
        /// What is wrong with `STORE`: "missing", or "unreadable (...)".
        problem: String,
        /// The store's files found in the directory (`meta.redb`, `meta.redb.tmp`, `packs`).
        present: Vec<String>,
    },
    /// The store does not exist and `Options::create` is false.
    #[error("no store at {0}")]
    NoStore(PathBuf),
    /// A file was written by a newer (or unknown) format version.
    #[error("{path}: format version {found} is not supported (this build reads up to {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in it.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },
    /// Another process holds the store open.
    #[error("store {0} is locked by another process")]
    Locked(PathBuf),
    /// The file system is full. Raised by a pack write or the free-space reserve, the operation
    /// was rolled back and the store stays usable; raised inside the metadata database, the
    /// store is poisoned until reopened (see the module docs).
    #[error("disk full while trying to {op} {path}")]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
    },
    /// An I/O error other than a full disk.
    #[error("I/O error while trying to {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A chunk's bytes do not hash to its id.
    #[error(
        "checksum mismatch in pack {pack} at offset {offset}: expected chunk {expected}, got {got}"
    )]
    ChecksumMismatch {
        /// Pack holding the record.
        pack: PackId,
        /// Offset of the record in the pack.
        offset: u64,
        /// The id the metadata expects.
        expected: ChunkId,
        /// The BLAKE3 of the bytes found.
        got: ChunkId,
    },
    /// Stored bytes are damaged or inconsistent (a record header, a metadata value, a missing
    /// pack, a track whose bytes do not hash to its fingerprint).
    #[error("corrupted store: {what}{}", location.as_ref().map(|(p, o)| format!(" (pack {p}, offset {o})")).unwrap_or_default())]
    Corrupted {
        /// What is wrong.
        what: String,
        /// Pack and offset, when the damage is in a pack.
        location: Option<(PackId, u64)>,
    },
    /// This node's metadata is older than the journal in the store's bucket (a restored backup
    /// or a copy of the node's disk): opening it would undo acknowledged commits. Rebuild the
    /// metadata from the bucket instead (`Store::rebuild`).
    #[error(
        "this store's metadata is at journal entry {local}, but {url} holds entry {bucket}: the \
         metadata is older than the bucket's; move it away and rebuild from the bucket"
    )]
    StaleMetadata {
        /// The last commit this metadata holds.
        local: u64,
        /// The newest journal entry in the bucket.
        bucket: u64,
        /// The bucket.
        url: String,
    },
    /// An earlier durability failure left the in-process state unknown; reopen the store.
    #[error("store is poisoned by an earlier failure; reopen it: {0}")]
    Poisoned(String),
    /// The metadata database failed in a way that is not corruption or plain I/O.
    #[error("metadata database error: {0}")]
    Metadata(String),
    /// A put in a store other nodes share took longer than `Options::ingest_time_limit`; it
    /// stored nothing. Upload it again.
    #[error("the upload took {secs} s, longer than the ingest time limit of {limit} s")]
    IngestTooSlow {
        /// How long it took.
        secs: u64,
        /// The limit.
        limit: u64,
    },
    /// Another node changed the licence policy while this put ran, and the new policy wants
    /// the track in another copy domain; the put stored nothing. Upload it again.
    #[error("the licence policy changed while the upload ran; upload it again")]
    PolicyChanged,
    /// Another node changed entries this put relied on (a migration moved them) while it ran;
    /// the put stored nothing. Upload it again.
    #[error("another node changed the store under this upload; upload it again: {0}")]
    ConcurrentChange(String),
    /// A maintenance job (GC, migration) lost the store-wide lease it runs under: it expired
    /// (the job stalled longer than the lease lasts) or another node took it over. Nothing of
    /// the job's current step was committed; what it committed before stays.
    #[error("maintenance lease lost: {0}")]
    LeaseLost(String),
    /// The PostgreSQL database that holds the metadata failed or refused a statement
    /// (connection, credentials, the server); `code` is its SQLSTATE when it sent one.
    #[error("metadata database: {operation}: {message}")]
    Database {
        /// What was being done.
        operation: String,
        /// The server's SQLSTATE (`40001` a serialisation failure, `28P01` bad credentials).
        code: Option<String>,
        /// The client's message.
        message: String,
    },
    /// The object store that holds the packs failed (network, credentials, the server).
    #[error("object store: {operation} {key}: {message}")]
    ObjectStore {
        /// What was being done (`put`, `get`, `list`, ...).
        operation: String,
        /// On which object.
        key: String,
        /// The client's message.
        message: String,
    },
}

impl Error {
    /// Wraps an OS error with what was being done and where; a full disk becomes `DiskFull`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            Error::DiskFull { op, path }
        } else {
            Error::Io { op, path, source }
        }
    }

    pub(crate) fn corrupted(what: impl Into<String>) -> Error {
        Error::Corrupted {
            what: what.into(),
            location: None,
        }
    }

    pub(crate) fn corrupted_at(what: impl Into<String>, pack: PackId, offset: u64) -> Error {
        Error::Corrupted {
            what: what.into(),
            location: Some((pack, offset)),
        }
    }

    /// True for errors that mean stored bytes are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupted { .. } | Error::ChecksumMismatch { .. } | Error::StoreFileLost { .. }
        )
    }

    /// True for errors caused by the caller's input; the store was not changed.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidUserId(_)
                | Error::InvalidKey(_)
                | Error::InvalidRightsHolder(_)
                | Error::UnknownUser(_)
                | Error::TrackNotFound { .. }
                | Error::InvalidOptions(_)
                | Error::InvalidRange { .. }
                | Error::Upload { .. }
                | Error::QuotaExceeded { .. }
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::from(redb::Error::from(e))
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Error {
        match e {
            redb::Error::Corrupted(what) => Error::corrupted(format!("metadata: {what}")),
            redb::Error::Io(source) => {
                // A read past the end (the backend marks it) and redb's "not a redb database"
                // (InvalidData, raised by redb itself, never by the OS) are damage to the file.
                if let Some(past) = source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<crate::vfs::ReadPastEnd>())
                {
                    return Error::corrupted(format!("meta.redb: {past}"));
                }
                if source.kind() == io::ErrorKind::InvalidData && source.raw_os_error().is_none() {
                    return Error::corrupted(format!("meta.redb: {source}"));
                }
                Error::io("access", "meta.redb", source)
            }
            redb::Error::PreviousIo => Error::Poisoned("an earlier metadata write failed".into()),
            other => Error::Metadata(other.to_string()),
        }
    }
}

impl Error {
    /// Unwraps an engine error carried in an `io::Error` (as `TrackReader` returns them);
    /// other I/O errors become `Error::Io`.
    pub fn from_io(e: io::Error) -> Error {
        if e.get_ref().is_some_and(|r| r.is::<Error>()) {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        Error::io("read", "track", e)
    }

    pub(crate) fn into_io(self) -> io::Error {
        let kind = if self.is_corruption() {
            io::ErrorKind::InvalidData
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(kind, self)
    }
}
