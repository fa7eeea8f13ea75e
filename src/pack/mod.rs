//! Packs: append-only containers of self-describing chunk records, the pool of packs writers
//! take, and the seam to where their bytes live ([`storage::PackStorage`]; local files in
//! [`local`]).
//!
//! An ingest takes an *active* pack for its exclusive use, appends records, syncs it, and hands it
//! back after its metadata commit. So every pack has at most one writer, and the bytes past a
//! pack's committed length belong to the one ingest in flight on it (or to a crashed one, and are
//! cut off on open). A pack that reaches the size limit is sealed and never written again.

pub(crate) mod codec;
pub(crate) mod local;
#[cfg(feature = "object-store")]
pub(crate) mod object;
pub(crate) mod session;
pub(crate) mod storage;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::{PACK_HEADER_LEN, PackHeader, PackRow, RecordHeader};
use crate::ids::PackId;

use storage::{PackStorage, PackWriter, Window};

/// A pack open for appending, owned by one ingest at a time.
#[derive(Debug)]
pub(crate) struct ActivePack {
    pub(crate) id: PackId,
    writer: Box<dyn PackWriter>,
    /// Bytes written so far.
    pub(crate) len: u64,
    /// Bytes covered by committed metadata.
    pub(crate) committed_len: u64,
    /// Whether this ingest appended to it (so it must be synced and committed).
    pub(crate) touched: bool,
    /// Set once the tail was handed to fsync: from then on a failure (of the fsync, or of a
    /// commit that may or may not have reached the disk) must not cut the tail, because durable
    /// metadata may point into it. Such a pack is retired instead; open cuts what is uncommitted.
    pub(crate) tail_at_risk: bool,
    /// Synced to a storage that seals on sync: it takes no more records.
    sealed: bool,
}

impl ActivePack {
    /// Everything appended is covered by committed metadata now.
    pub(crate) fn mark_committed(&mut self) {
        self.committed_len = self.len;
        self.touched = false;
        self.tail_at_risk = false;
    }
}

/// What recovery did on open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Pack files no committed metadata refers to, removed.
    pub removed_packs: u64,
    /// Packs whose uncommitted tail was cut off.
    pub truncated_packs: u64,
    /// Bytes cut off those tails.
    pub truncated_bytes: u64,
    /// Packs shorter than their committed length (damage from outside the store). Left exactly
    /// as they are and given no new records; the records they still hold read as before, those
    /// past the end are `Corrupted`. `verify` names the tracks they cost and
    /// `Store::drop_damaged_tracks` lets them go.
    pub short_packs: u64,
    /// Packs put back where they are durable from another copy of the store's own (an object
    /// store's cached copy of a committed pack whose object was lost or damaged).
    pub mended_packs: u64,
    /// Pack objects no committed metadata refers to, left in place: in a store other nodes
    /// write (metadata in PostgreSQL), one may be another node's upload whose commit is still
    /// to come. GC deletes those that stay unknown past the deletion grace.
    pub unknown_packs_kept: u64,
}

/// Where new pack ids come from.
pub(crate) enum PackIds {
    /// Only this process writes the store: ids count up in memory, from past every id the
    /// metadata and the storage know.
    Local,
    /// Other processes write the same store: ids are reserved from the metadata, `n` at a
    /// time (`reserve` returns the first of `n` ids no one else will be given), and unknown
    /// packs in the storage may be theirs. A reserved id is used within `max_age` of its
    /// reservation or never (then a new block is reserved), so an id below what was reserved
    /// at some moment names a pack created within `max_age` after it (GC's sweep of unknown
    /// packs relies on it, `maint::gc`).
    Shared {
        reserve: Box<dyn Fn(u64) -> Result<u64> + Send + Sync>,
        max_age: std::time::Duration,
    },
}

impl std::fmt::Debug for PackIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PackIds::Local => "Local",
            PackIds::Shared { .. } => "Shared",
        })
    }
}

/// Pack ids reserved from shared metadata per reservation.
const ID_BLOCK: u64 = 16;

/// The writers' packs: idle ones to take, and the ids of those taken (busy).
#[derive(Debug, Default)]
struct Pool {
    idle: Vec<ActivePack>,
    busy: HashSet<PackId>,
}

#[derive(Debug)]
pub(crate) struct Packs {
    storage: Box<dyn PackStorage>,
    store_tag: u64,
    size_limit: u64,
    next_id: AtomicU64,
    ids: PackIds,
    /// For `PackIds::Shared`: the rest of the last reserved block, `next..end`, and when it
    /// was reserved.
    reserved: Mutex<(u64, u64, Option<std::time::Instant>)>,
    /// Unsealed packs writers may take, and the ones writers hold now.
    pool: Mutex<Pool>,
}

impl Packs {
    /// Brings the pack directory in line with the committed metadata: removes packs the metadata
    /// does not know (created by an ingest that never committed), cuts uncommitted tails, and
    /// collects the unsealed packs for reuse.
    /// `next_id` is the metadata's high-water mark (`next_pack_id`): new packs are numbered
    /// from past it and past every id present.
    pub(crate) fn open(
        storage: Box<dyn PackStorage>,
        store_tag: u64,
        size_limit: u64,
        rows: &[(PackId, PackRow)],
        next_id: u64,
        ids: PackIds,
    ) -> Result<(Packs, RecoveryReport)> {
        let mut report = RecoveryReport::default();
        let rows: HashMap<PackId, PackRow> = rows.iter().copied().collect();
        // Listed first: the listing is what tells the storage which ids it holds under any
        // name (`first_free_id`, e.g. packs deleted but not yet gone from a bucket).
        let present = storage.list()?;
        let mut max_id = rows
            .keys()
            .map(|p| p.0)
            .max()
            .unwrap_or(0)
            .max(next_id.saturating_sub(1))
            .max(storage.first_free_id().saturating_sub(1));
        let mut idle = Vec::new();
        let mut unknown = Vec::new();
        for (id, listed) in present {
            max_id = max_id.max(id.0);
            let Some(row) = rows.get(&id) else {
                unknown.push(id);
                continue;
            };
            // The storage's chance to mend a committed pack from a copy it holds (an object
            // store re-uploads a cached copy whose object is gone).
            let (len, mended) = storage.recover_committed(id, listed, row.committed_len)?;
            report.mended_packs += u64::from(mended);
            if len > row.committed_len {
                storage.truncate(id, row.committed_len)?;
                report.truncated_packs += 1;
                report.truncated_bytes += len - row.committed_len;
            }
            // A pack shorter than its committed length is damage; verify reports it and reads of
            // the records past its end fail. It takes no new records, and nothing of it is cut.
            if len < row.committed_len {
                report.short_packs += 1;
            }
            if !row.sealed && len >= row.committed_len {
                idle.push(ActivePack {
                    id,
                    writer: storage.reopen(id)?,
                    len: row.committed_len,
                    committed_len: row.committed_len,
                    touched: false,
                    tail_at_risk: false,
                    sealed: false,
                });
            }
        }
        if !unknown.is_empty() {
            if matches!(ids, PackIds::Shared { .. }) && storage.seals_on_sync() {
                // In a bucket other nodes write to: perhaps an upload whose commit is to come.
                report.unknown_packs_kept = unknown.len() as u64;
            } else {
                // Created by an ingest that never committed: nothing refers to them.
                storage.delete(&unknown)?;
                report.removed_packs = unknown.len() as u64;
            }
        }
        Ok((
            Packs {
                storage,
                store_tag,
                size_limit,
                next_id: AtomicU64::new(max_id + 1),
                ids,
                reserved: Mutex::new((0, 0, None)),
                pool: Mutex::new(Pool {
                    idle,
                    busy: HashSet::new(),
                }),
            },
            report,
        ))
    }

    /// The ids of the packs the storage holds (for packs in an object store: in the bucket).
    pub(crate) fn stored_ids(&self) -> Result<Vec<PackId>> {
        Ok(self.storage.list()?.into_iter().map(|(id, _)| id).collect())
    }

    /// Whether a synced pack takes no more records (packs in an object store).
    pub(crate) fn seals_on_sync(&self) -> bool {
        self.storage.seals_on_sync()
    }

    pub(crate) fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// Where pack `id` is stored, for messages (a path, an object key).
    pub(crate) fn location(&self, id: PackId) -> String {
        self.storage.location(id)
    }

    /// The length of a pack as stored; `None` when it is missing.
    pub(crate) fn stored_len(&self, id: PackId) -> Result<Option<u64>> {
        self.storage.len(id)
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().expect("pack pool lock")
    }

    /// Takes an idle active pack, or creates a new one. The caller hands it back with
    /// `committed`, `abandon` or `forget`.
    pub(crate) fn take(&self) -> Result<ActivePack> {
        let mut pool = self.pool();
        if let Some(p) = pool.idle.pop() {
            pool.busy.insert(p.id);
            return Ok(p);
        }
        drop(pool);
        self.create_new()
    }

    /// Takes a specific pack out of the idle pool (for compaction); `None` if an ingest holds it.
    pub(crate) fn take_idle(&self, id: PackId) -> Option<ActivePack> {
        let mut pool = self.pool();
        let at = pool.idle.iter().position(|p| p.id == id)?;
        let p = pool.idle.swap_remove(at);
        pool.busy.insert(id);
        Some(p)
    }

    /// Puts pack `id` out of every writer's reach for the rest of this process, so its row and
    /// file may change under no writer: `false` when a writer holds it now. (Open pools again
    /// what survives.)
    pub(crate) fn retire(&self, id: PackId) -> bool {
        let mut pool = self.pool();
        if pool.busy.contains(&id) {
            return false;
        }
        pool.idle.retain(|p| p.id != id);
        true
    }

    /// Drops a taken pack without handing it back to writers (its fate is settled at the next
    /// open).
    pub(crate) fn forget(&self, pack: ActivePack) {
        self.pool().busy.remove(&pack.id);
    }

    /// Deletes a pack whose row is gone. Readers holding its bytes keep reading them. A pack
    /// already gone (removed from outside, or by an earlier attempt) is what was wanted.
    pub(crate) fn delete(&self, id: PackId) -> Result<()> {
        self.storage.delete(&[id])
    }

    /// A new, empty active pack (never one from the pool).
    pub(crate) fn create_new(&self) -> Result<ActivePack> {
        let p = self.create()?;
        self.pool().busy.insert(p.id);
        Ok(p)
    }

    fn create(&self) -> Result<ActivePack> {
        let id = match &self.ids {
            PackIds::Local => PackId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            PackIds::Shared { reserve, max_age } => {
                let mut r = self.reserved.lock().expect("reserved pack ids lock");
                let stale = r.2.is_none_or(|at| at.elapsed() > *max_age);
                if r.0 == r.1 || stale {
                    let first = reserve(ID_BLOCK)?;
                    *r = (first, first + ID_BLOCK, Some(std::time::Instant::now()));
                }
                r.0 += 1;
                PackId(r.0 - 1)
            }
        };
        let header = PackHeader {
            pack: id,
            store_tag: self.store_tag,
        }
        .encode();
        Ok(ActivePack {
            id,
            writer: self.storage.create(id, &header)?,
            len: PACK_HEADER_LEN as u64,
            committed_len: PACK_HEADER_LEN as u64,
            touched: false,
            tail_at_risk: false,
            sealed: false,
        })
    }

    /// Appends one record; returns its offset.
    pub(crate) fn append(
        &self,
        pack: &mut ActivePack,
        header: &RecordHeader,
        stored: &[u8],
    ) -> Result<u64> {
        let offset = pack.len;
        let head = header.encode(stored);
        pack.touched = true;
        pack.writer.write_at(offset, &[&head, stored])?;
        pack.len += (head.len() + stored.len()) as u64;
        Ok(offset)
    }

    /// True when the pack should take no more records: it reached the size limit, or it was
    /// synced to a storage that seals on sync.
    pub(crate) fn is_full(&self, pack: &ActivePack) -> bool {
        pack.sealed || pack.len >= self.size_limit
    }

    /// The storage's facts of a pack it holds, after a failed verification of its bytes: `true`
    /// when it dropped a local copy and a read should try again (the durable copy lives
    /// elsewhere).
    pub(crate) fn refresh(&self, id: PackId) -> bool {
        self.storage.refresh(id)
    }

    /// Makes everything appended to the pack durable.
    pub(crate) fn sync(&self, pack: &mut ActivePack) -> Result<()> {
        pack.tail_at_risk = true;
        pack.writer.sync()?;
        pack.sealed = self.storage.seals_on_sync();
        Ok(())
    }

    /// Where the packs live and what the storage caches.
    pub(crate) fn facts(&self) -> storage::StorageFacts {
        self.storage.describe()
    }

    /// Returns a pack after its ingest committed.
    pub(crate) fn committed(&self, mut pack: ActivePack) {
        pack.mark_committed();
        let mut pool = self.pool();
        pool.busy.remove(&pack.id);
        if !self.is_full(&pack) {
            pool.idle.push(pack);
        }
    }

    /// Returns a pack after its ingest failed: the uncommitted tail is cut off. If that is not
    /// safe (`tail_at_risk`) or fails, the pack is retired from this process instead; open
    /// brings it in line with the committed metadata later.
    pub(crate) fn abandon(&self, mut pack: ActivePack) {
        let mut pool = self.pool();
        pool.busy.remove(&pack.id);
        if pack.tail_at_risk {
            return;
        }
        if pack.len == pack.committed_len {
            pack.touched = false;
            pool.idle.push(pack);
            return;
        }
        if pack.writer.truncate(pack.committed_len).is_ok() {
            pack.len = pack.committed_len;
            pack.touched = false;
            pool.idle.push(pack);
        }
    }

    /// Bytes of the pack covering at least `start..end` (a record), checked to be this
    /// store's pack `id` when they start at its header. The storage reads no further than the
    /// committed length (`committed()`, read from the metadata when needed): bytes past it may
    /// still be cut and rewritten. A pack shorter than its committed length (damaged from
    /// outside) still gives the records it holds; asking for bytes past its end is `Corrupted`.
    /// A window that starts past the header (a span of an object) is not checked here: each
    /// record in it is, as every record read is (its header checksum, its chunk id).
    pub(crate) fn map_covering(
        &self,
        id: PackId,
        start: u64,
        end: u64,
        mut committed: impl FnMut() -> Result<u64>,
    ) -> Result<Window> {
        let window = self.storage.read(id, start, end, &mut committed)?;
        if !window.covers(start, end) {
            return Err(Error::corrupted_at(
                format!("the pack's bytes end before {end}"),
                id,
                start,
            ));
        }
        if window.base == 0 {
            let map = window.bytes();
            if map.len() < PACK_HEADER_LEN {
                return Err(Error::corrupted_at("pack shorter than its header", id, 0));
            }
            let header =
                PackHeader::decode(map).map_err(|e| Error::corrupted_at(e.to_string(), id, 0))?;
            if header.pack != id || header.store_tag != self.store_tag {
                return Err(Error::corrupted_at(
                    "pack header names another pack or store",
                    id,
                    0,
                ));
            }
        }
        Ok(window)
    }
}
