//! The metadata seam: the tables the engine keeps (state, counters, users, tracks, chunk
//! entries, packs, recordings; docs/DESIGN.md 2.5) behind [`MetaStore`], [`MetaRead`] and
//! [`MetaWrite`], with typed ids (`UserId`, `TrackKey`, `AudioFingerprint`, `ChunkId`, `Domain`,
//! `PackId`, `UserNo`). redb (`redb_meta.rs`) is the implementation today; PostgreSQL (a remote
//! server: round trips cost, many writers) is to sit beside it. A backend stores the row
//! encodings of `format.rs` as given; `state` and `counters` keys are the constants below.
//!
//! What a backend guarantees:
//! - **Snapshots.** Everything read through one `read()` comes from one committed state, for as
//!   long as the snapshot is held (the reader, verify, migration and GC plan from one). Reads
//!   inside `write` see the transaction's own changes.
//! - **Atomic, durable commits.** `write(f)` runs `f` in one transaction. If `f` returns `Ok`,
//!   the transaction commits atomically and durably (it survives a crash once `write` returns
//!   `Ok`) or `write` fails; on any `Err` none of it is ever visible.
//! - **Serialised writes.** Write transactions behave as if run one at a time: the engine reads
//!   refcounts, counters, user and pack rows and writes them back changed, and inserts an entry
//!   only where its key is absent ([`MetaWrite::insert_chunk_if_absent`]).
//! - **Closures may run again.** After a failure `f` may run again in a fresh transaction that
//!   has none of the earlier run's changes: the group commit (`group.rs`) retries each request
//!   of a failed batch alone. So a commit that failed but may have reached the disk must make
//!   later writes fail (redb latches it: `Poisoned`), never let a retry apply a change twice.
//! - **Names.** A stored user id or track key that fails validation reads as `Corrupted`
//!   ([`stored_user_id`], [`stored_track_key`]). The unchecked `_raw` scans serve verify
//!   (which lists a bad stored name as damage) and the read-only reports that never look at a
//!   name (stats' per-user figures, what-if, audit).
//! - **`watch_chunks`.** From the call on, every chunk key this store writes (`put_chunk`,
//!   `insert_chunk_if_absent`) goes into the filter before the transaction that writes it
//!   commits, so the filter has no false negatives for this store's writes (`filter.rs`).
//!
//! PostgreSQL (`postgres.rs`, feature `postgres`) keeps the same contract with a remote,
//! shared server (docs/DESIGN.md section 15): `read()` is a `REPEATABLE READ, READ ONLY`
//! transaction held for the snapshot's life; `write(f)` a `SERIALIZABLE` one, `f` run again on a
//! serialisation failure, a `COMMIT` without an answer poisoning the handle; `chunks` and
//! `prefetch_chunks` one round trip for many keys. Other processes write it too (`shared`), so
//! the in-process pins, filter and maintenance mutex are complemented by the methods below
//! `shared`: a lease for maintenance, a grace period before GC removes garbage, and touches of
//! garbage entries an ingest found.

pub(crate) mod filter;
pub(crate) mod group;
#[cfg(feature = "object-store")]
pub(crate) mod journal;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
mod redb_meta;
pub(crate) mod refs;

pub(crate) use redb_meta::RedbMeta;

use crate::error::{Error, Result};
use crate::format::{ChunkEntry, PackRow, QuotaRow, TrackRecord, UserRow};
use crate::ids::{AudioFingerprint, ChunkId, Domain, PackId, UserNo};
use crate::names::{TrackKey, UserId};

/// Keys of the `state` table (small values, written rarely).
pub(crate) mod state_keys {
    /// u32 LE: metadata schema version (`META_FORMAT_VERSION`).
    pub const FORMAT: &str = "format";
    /// u8: the license mode (the licence policy's default).
    pub const MODE: &str = "mode";
    /// The licence policy's entries per rights holder (`Licences::encode_entries`). Absent: none.
    pub const LICENCES: &str = "licences";
    /// u64 LE: the stored policy's version, bumped by every change of `mode` or `licences`, so
    /// nodes sharing the metadata notice one another's changes. Absent: 0.
    pub const POLICY_VERSION: &str = "policy_version";
    /// Where other processes share the metadata: GC's marks of the pack-id bound, up to 64
    /// pairs of u64 LE (the value of `next_pack_id`, then the Unix time in seconds it was
    /// read at), oldest first (`maint::gc`'s sweep of unknown packs). Absent: none.
    pub const PACK_ID_MARKS: &str = "pack_id_marks";
    /// u64 LE: the per-store FastCDC gear seed.
    pub const SEED: &str = "chunker_seed";
    /// 3 x u32 LE: FastCDC min, avg, max chunk sizes.
    pub const CHUNKER: &str = "chunker_sizes";
    /// The 48 bytes of the store's `STORE` file, so a lost one can be rewritten.
    pub const STORE_FILE: &str = "store_file";
    /// Where the packs live when not in `packs/`: an object store's location as `key=value`
    /// lines (`ObjectLocation::encode`). Absent: local packs.
    pub const OBJECT_PACKS: &str = "object_packs";
    /// u64 LE: the number of the last commit journaled in the bucket (`journal.rs`). Absent: 0.
    #[cfg(feature = "object-store")]
    pub const JOURNAL_SEQ: &str = "journal_seq";
}

/// Keys of the `counters` table: store-wide totals kept exact by every commit.
pub(crate) mod counter_keys {
    pub const NEXT_USER_NO: &str = "next_user_no";
    /// One past the largest pack id any commit registered: ids are never reused, also after
    /// GC deleted the newest packs (an object store may keep a deleted pack's object for a
    /// grace period, and other nodes may read it meanwhile).
    pub const NEXT_PACK_ID: &str = "next_pack_id";
    pub const LOGICAL_BYTES: &str = "logical_bytes";
    pub const TRACKS: &str = "tracks";
    pub const USERS: &str = "users_with_tracks";
    pub const LIVE_BYTES: &str = "live_bytes";
    pub const LIVE_CHUNKS: &str = "live_chunks";
    pub const GARBAGE_BYTES: &str = "garbage_bytes";
    pub const GARBAGE_CHUNKS: &str = "garbage_chunks";
    /// Distinct audio fingerprints held by at least one track.
    pub const RECORDINGS: &str = "recordings";
}

/// A user id read back from the metadata: one that fails validation is corruption.
pub(crate) fn stored_user_id(s: &str) -> Result<UserId> {
    UserId::new(s).map_err(|_| Error::corrupted(format!("stored user id {s:?} is invalid")))
}

/// A track key read back from the metadata: one that fails validation is corruption.
pub(crate) fn stored_track_key(s: &str) -> Result<TrackKey> {
    TrackKey::new(s).map_err(|_| Error::corrupted(format!("stored key {s:?} is invalid")))
}

/// Reads within one consistent snapshot.
///
/// Names come back typed; a stored name that fails validation is `Corrupted` (see
/// [`stored_user_id`], [`stored_track_key`]). The `_raw` scans return names as stored, unchecked,
/// for verify, which lists a bad stored name as damage instead of stopping at it, and for the
/// read-only reports that never look at a name.
pub(crate) trait MetaRead {
    fn state(&self, key: &str) -> Result<Option<Vec<u8>>>;
    fn counter(&self, key: &str) -> Result<u64>;
    fn user(&self, id: &UserId) -> Result<Option<UserRow>>;
    fn user_name(&self, no: UserNo) -> Result<Option<UserId>>;
    /// Every user row, with its name as stored.
    fn users_raw(&self) -> Result<Vec<(String, UserRow)>>;
    fn track(&self, user: UserNo, key: &TrackKey) -> Result<Option<TrackRecord>>;
    fn tracks_of(&self, user: UserNo) -> Result<Vec<(TrackKey, TrackRecord)>>;
    /// Every track, ordered by user number then key, with its key as stored.
    fn for_each_track_raw(
        &self,
        f: &mut dyn FnMut(UserNo, &str, TrackRecord) -> Result<()>,
    ) -> Result<()>;
    fn chunk(&self, domain: Domain, id: &ChunkId) -> Result<Option<ChunkEntry>>;
    fn for_each_chunk(
        &self,
        f: &mut dyn FnMut(Domain, ChunkId, ChunkEntry) -> Result<()>,
    ) -> Result<()>;
    fn pack(&self, id: PackId) -> Result<Option<PackRow>>;
    fn packs(&self) -> Result<Vec<(PackId, PackRow)>>;
    /// The user's quota row; `None`: no limits and no exempt tracks.
    fn quota(&self, user: UserNo) -> Result<Option<QuotaRow>>;
    /// Whether the user's track `key` was stored exempt from the quota.
    fn quota_exempt(&self, user: UserNo, key: &TrackKey) -> Result<bool>;
    /// Up to `limit` tracks holding the recording with this audio fingerprint, ordered by user
    /// number then key.
    fn recording_holders(
        &self,
        fp: &AudioFingerprint,
        limit: usize,
    ) -> Result<Vec<(UserNo, TrackKey)>>;

    /// Every row, each as the journal change that writes it (a checkpoint's content), except
    /// the node-local state keys (`journal::node_local`).
    #[cfg(feature = "object-store")]
    fn dump(&self, f: &mut dyn FnMut(journal::MetaOp) -> Result<()>) -> Result<()>;

    /// Every track, ordered by user number then key.
    fn for_each_track(
        &self,
        f: &mut dyn FnMut(UserNo, &TrackKey, TrackRecord) -> Result<()>,
    ) -> Result<()> {
        self.for_each_track_raw(&mut |no, key, t| f(no, &stored_track_key(key)?, t))
    }

    /// The entries of several keys, in the order asked; one round trip for a remote backend.
    fn chunks(&self, keys: &[(Domain, ChunkId)]) -> Result<Vec<Option<ChunkEntry>>> {
        keys.iter().map(|(d, id)| self.chunk(*d, id)).collect()
    }
}

/// Changes inside one atomic commit.
pub(crate) trait MetaWrite: MetaRead {
    fn set_state(&mut self, key: &str, value: &[u8]) -> Result<()>;
    fn set_counter(&mut self, key: &str, value: u64) -> Result<()>;
    fn put_user(&mut self, id: &UserId, row: &UserRow) -> Result<()>;
    fn put_user_name(&mut self, no: UserNo, id: &UserId) -> Result<()>;
    fn put_track(&mut self, user: UserNo, key: &TrackKey, track: &TrackRecord) -> Result<()>;
    fn remove_track(&mut self, user: UserNo, key: &TrackKey) -> Result<()>;
    fn put_chunk(&mut self, domain: Domain, id: &ChunkId, entry: &ChunkEntry) -> Result<()>;
    fn remove_chunk(&mut self, domain: Domain, id: &ChunkId) -> Result<()>;
    fn put_pack(&mut self, id: PackId, row: &PackRow) -> Result<()>;
    fn remove_pack(&mut self, id: PackId) -> Result<()>;
    fn put_quota(&mut self, user: UserNo, row: &QuotaRow) -> Result<()>;
    fn set_quota_exempt(&mut self, user: UserNo, key: &TrackKey, exempt: bool) -> Result<()>;
    fn put_recording(&mut self, fp: &AudioFingerprint, user: UserNo, key: &TrackKey) -> Result<()>;
    fn remove_recording(
        &mut self,
        fp: &AudioFingerprint,
        user: UserNo,
        key: &TrackKey,
    ) -> Result<()>;

    /// Reads the entries of `keys` ahead, where a round trip costs (a remote database), so the
    /// `chunk` calls that follow are answered locally. Nothing to do for a local database.
    fn prefetch_chunks(&self, _keys: &[(Domain, ChunkId)]) -> Result<()> {
        Ok(())
    }

    /// Whether the garbage entry `(domain, id)` may be removed: no ingest of another process can
    /// still reference it, because it has been garbage, untouched, for longer than the grace
    /// period. Always `true` when only this process writes the metadata (its own ingests are
    /// covered by the pins).
    fn garbage_settled(&self, _domain: Domain, _id: &ChunkId) -> Result<bool> {
        Ok(true)
    }

    /// Adds `delta` (which may be negative) to a counter; an underflow is corruption.
    fn add_counter(&mut self, key: &str, delta: i64) -> Result<()> {
        let v = self.counter(key)?;
        let new = v
            .checked_add_signed(delta)
            .ok_or_else(|| Error::corrupted(format!("counter {key} would underflow")))?;
        self.set_counter(key, new)
    }

    /// Writes `entry` under the key unless the key has an entry already; returns that entry
    /// then, and writes nothing. The engine's one conditional write (a record identical to
    /// one a concurrent writer committed first becomes an orphan): a backend whose
    /// transactions are not serialisable makes it atomic on its own.
    fn insert_chunk_if_absent(
        &mut self,
        domain: Domain,
        id: &ChunkId,
        entry: &ChunkEntry,
    ) -> Result<Option<ChunkEntry>> {
        if let Some(existing) = self.chunk(domain, id)? {
            return Ok(Some(existing));
        }
        self.put_chunk(domain, id, entry)?;
        Ok(None)
    }
}

/// A store-wide lease held by this process (`MetaStore::maintenance_lease`); given up when
/// dropped.
pub(crate) trait Lease: Send {
    /// `Err(LeaseLost)` when the lease expired or was taken over.
    fn check(&self) -> Result<()>;
}

/// A metadata store.
pub(crate) trait MetaStore: Send + Sync + std::fmt::Debug {
    /// A read-only snapshot: one committed state (module docs).
    fn read(&self) -> Result<Box<dyn MetaRead>>;
    /// Runs `f` in one write transaction and commits it atomically and durably if `f` returns
    /// `Ok`; on `Err` nothing is changed. Write transactions are serialised, and `f` may run
    /// again after a failure (module docs).
    fn write(&self, f: &mut dyn FnMut(&mut dyn MetaWrite) -> Result<()>) -> Result<()>;
    /// From now on, adds the key of every chunk entry written to `filter` before the transaction
    /// that writes it commits.
    fn watch_chunks(&self, filter: std::sync::Arc<crate::index::filter::ChunkFilter>);
    /// Whether other processes write this metadata too (PostgreSQL shared by nodes): then the
    /// in-process pins, chunk filter, user-number reservations and maintenance mutex do not
    /// cover their work, and the methods below do (docs/DESIGN.md section 15).
    fn shared(&self) -> bool {
        false
    }
    /// Takes the store-wide maintenance lease for `holder`, waiting while another process
    /// holds a live one; `None` when only this process writes the metadata. While the lease
    /// is held, this thread's write transactions commit only if it is still this holder's
    /// (they fail with `LeaseLost` otherwise), and dropping it gives it up.
    fn maintenance_lease(&self, _holder: &str) -> Result<Option<Box<dyn Lease>>> {
        Ok(None)
    }
    /// Marks the garbage entry `(domain, id)` as about to be referenced again by an ingest of
    /// this process, so GC in another process leaves it for another grace period. `false`:
    /// the entry is gone (GC removed it since it was read).
    fn touch_garbage(&self, _domain: Domain, _id: &ChunkId) -> Result<bool> {
        Ok(true)
    }
    /// The entries of `keys` in the latest committed state, read together (one consistent
    /// state): for a lookup that needs no snapshot beyond it. A remote database answers in one
    /// round trip, without opening a snapshot transaction.
    fn chunks_now(&self, keys: &[(Domain, ChunkId)]) -> Result<Vec<Option<ChunkEntry>>> {
        self.read()?.chunks(keys)
    }
    /// A state row in the latest committed state, read alone (as `chunks_now`).
    fn state_now(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read()?.state(key)
    }
    /// Another handle on the same metadata, for a part of the engine that writes on its own
    /// (pack id reservations); `None` for metadata that only one handle may hold (redb).
    fn handle(&self) -> Option<Box<dyn MetaStore>> {
        None
    }
    /// Writes a checkpoint of the journal this metadata keeps in a bucket and returns its
    /// commit number; `None`: this metadata keeps no journal (`journal.rs`).
    fn checkpoint(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// Runs `f` in a write transaction and returns its value.
pub(crate) fn write_with<R>(
    meta: &dyn MetaStore,
    mut f: impl FnMut(&mut dyn MetaWrite) -> Result<R>,
) -> Result<R> {
    let mut out = None;
    meta.write(&mut |w| {
        out = Some(f(w)?);
        Ok(())
    })?;
    Ok(out.expect("write succeeded, so the closure ran"))
}
