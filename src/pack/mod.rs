//! Pack files: append-only files of self-describing chunk records.
//!
//! An ingest takes an *active* pack for its exclusive use, appends records, syncs it, and hands it
//! back after its metadata commit. So every pack has at most one writer, and the bytes past a
//! pack's committed length belong to the one ingest in flight on it (or to a crashed one, and are
//! cut off on open). A pack that reaches the size limit is sealed and never written again.

pub(crate) mod codec;
pub(crate) mod session;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::{
    PACK_HEADER_LEN, PackHeader, PackRow, RecordHeader, pack_name, parse_pack_name,
};
use crate::ids::PackId;
use crate::vfs::{Mapped, Vfs, VfsFile};

/// A pack open for appending, owned by one ingest at a time.
#[derive(Debug)]
pub(crate) struct ActivePack {
    pub(crate) id: PackId,
    file: Arc<dyn VfsFile>,
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
}

/// The writers' packs: idle ones to take, and the ids of those taken (busy).
#[derive(Debug, Default)]
struct Pool {
    idle: Vec<ActivePack>,
    busy: HashSet<PackId>,
}

#[derive(Debug)]
pub(crate) struct Packs {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    store_tag: u64,
    size_limit: u64,
    next_id: AtomicU64,
    /// Unsealed packs writers may take, and the ones writers hold now.
    pool: Mutex<Pool>,
    maps: RwLock<HashMap<PackId, Arc<dyn Mapped>>>,
}

impl Packs {
    /// Brings the pack directory in line with the committed metadata: removes packs the metadata
    /// does not know (created by an ingest that never committed), cuts uncommitted tails, and
    /// collects the unsealed packs for reuse.
    pub(crate) fn open(
        vfs: Arc<dyn Vfs>,
        dir: PathBuf,
        store_tag: u64,
        size_limit: u64,
        rows: &[(PackId, PackRow)],
    ) -> Result<(Packs, RecoveryReport)> {
        let mut report = RecoveryReport::default();
        let rows: HashMap<PackId, PackRow> = rows.iter().copied().collect();
        let names = vfs.list_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        let mut max_id = rows.keys().map(|p| p.0).max().unwrap_or(0);
        let mut idle = Vec::new();
        let mut removed_any = false;
        for name in names {
            let path = dir.join(&name);
            let Some(id) = parse_pack_name(&name) else {
                continue;
            };
            max_id = max_id.max(id.0);
            let Some(row) = rows.get(&id) else {
                vfs.remove_file(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
                report.removed_packs += 1;
                removed_any = true;
                continue;
            };
            let file = vfs
                .open_rw(&path, false)
                .map_err(|e| Error::io("open", &path, e))?;
            let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
            if len > row.committed_len {
                file.set_len(row.committed_len)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| Error::io("truncate", &path, e))?;
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
                    file,
                    len: row.committed_len,
                    committed_len: row.committed_len,
                    touched: false,
                    tail_at_risk: false,
                });
            }
        }
        if removed_any {
            vfs.sync_dir(&dir).map_err(|e| Error::io("sync", &dir, e))?;
        }
        Ok((
            Packs {
                vfs,
                dir,
                store_tag,
                size_limit,
                next_id: AtomicU64::new(max_id + 1),
                pool: Mutex::new(Pool {
                    idle,
                    busy: HashSet::new(),
                }),
                maps: RwLock::new(HashMap::new()),
            },
            report,
        ))
    }

    pub(crate) fn path(&self, id: PackId) -> PathBuf {
        self.dir.join(pack_name(id))
    }

    pub(crate) fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// The length of a pack's file as it is on disk; `None` when the file is missing.
    pub(crate) fn file_len(&self, id: PackId) -> Result<Option<u64>> {
        let path = self.path(id);
        match self.vfs.open_rw(&path, false) {
            Ok(f) => f.len().map(Some).map_err(|e| Error::io("stat", &path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", &path, e)),
        }
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

    /// Deletes a pack file whose row is gone. Readers holding its map keep reading it. A file
    /// already gone (removed from outside, or by an earlier attempt) is what was wanted.
    pub(crate) fn delete(&self, id: PackId) -> Result<()> {
        self.maps.write().expect("map cache lock").remove(&id);
        let path = self.path(id);
        match self.vfs.remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(|e| Error::io("remove", &path, e))?,
        }
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync", &self.dir, e))
    }

    /// A new, empty active pack (never one from the pool).
    pub(crate) fn create_new(&self) -> Result<ActivePack> {
        let p = self.create()?;
        self.pool().busy.insert(p.id);
        Ok(p)
    }

    fn create(&self) -> Result<ActivePack> {
        let id = PackId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let path = self.path(id);
        let file = self
            .vfs
            .create_new(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        let header = PackHeader {
            pack: id,
            store_tag: self.store_tag,
        }
        .encode();
        let written = file
            .write_all_at(&header, 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| self.vfs.sync_dir(&self.dir));
        if let Err(e) = written {
            // Never registered: nothing refers to it. If removal fails too, open cleans it up.
            let _ = self.vfs.remove_file(&path);
            return Err(Error::io("write", &path, e));
        }
        Ok(ActivePack {
            id,
            file,
            len: PACK_HEADER_LEN as u64,
            committed_len: PACK_HEADER_LEN as u64,
            touched: false,
            tail_at_risk: false,
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
        // Two positional writes rather than one of a concatenated copy: no chunk is copied
        // before it reaches the page cache. A tear between them is an uncommitted tail like any.
        pack.file
            .write_all_at(&head, offset)
            .and_then(|()| pack.file.write_all_at(stored, offset + head.len() as u64))
            .map_err(|e| Error::io("write", self.path(pack.id), e))?;
        pack.len += (head.len() + stored.len()) as u64;
        Ok(offset)
    }

    /// True when the pack should take no more records.
    pub(crate) fn is_full(&self, pack: &ActivePack) -> bool {
        pack.len >= self.size_limit
    }

    /// Makes everything appended to the pack durable.
    pub(crate) fn sync(&self, pack: &mut ActivePack) -> Result<()> {
        pack.tail_at_risk = true;
        pack.file
            .sync_data()
            .map_err(|e| Error::io("sync", self.path(pack.id), e))
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
        if pack.file.set_len(pack.committed_len).is_ok() {
            pack.len = pack.committed_len;
            pack.touched = false;
            pool.idle.push(pack);
        }
    }

    /// A map of the pack that covers at least `end` bytes. On a cache miss the pack is mapped
    /// up to its committed length (`committed()`, read from the metadata), never further: bytes
    /// past it may still be cut and rewritten (see `map.rs`). A pack file shorter than its
    /// committed length (damaged from outside) is mapped as far as it goes, so the records it
    /// still holds stay readable; asking for bytes past its end is `Corrupted`.
    pub(crate) fn map_covering(
        &self,
        id: PackId,
        end: u64,
        committed: impl FnOnce() -> Result<u64>,
    ) -> Result<Arc<dyn Mapped>> {
        if let Some(m) = self.maps.read().expect("map cache lock").get(&id)
            && m.bytes().len() as u64 >= end
        {
            return Ok(m.clone());
        }
        let path = self.path(id);
        let file = self.vfs.open_rw(&path, false).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::corrupted_at("pack file is missing", id, 0)
            } else {
                Error::io("open", &path, e)
            }
        })?;
        let file_len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        drop(file);
        let len = committed()?;
        if len < end {
            return Err(Error::corrupted_at(
                format!("record end {end} past the pack's committed length {len}"),
                id,
                len,
            ));
        }
        if file_len < end {
            return Err(Error::corrupted_at(
                format!(
                    "record end {end} past the end of the pack file, which is {file_len} bytes \
                     but committed {len} (truncated)"
                ),
                id,
                file_len,
            ));
        }
        if file_len < PACK_HEADER_LEN as u64 {
            return Err(Error::corrupted_at("pack shorter than its header", id, 0));
        }
        // SAFETY: the mapped bytes never change or shrink while mapped:
        // - packs are append-only: no byte below a pack's committed length is ever written again;
        // - `len` is the committed length as the metadata states it, never the uncommitted tail
        //   an ingest may still be writing or cutting off; a pack file found shorter than that
        //   (damaged from outside) is mapped only as far as it goes, and nothing in the store
        //   shortens it further;
        // - a pack is only ever truncated to its committed length (a failed put's tail, the
        //   recovery on open), never below it, so no mapped page goes away;
        // - a pack is deleted (GC, dropping damage) only by unlinking it, which keeps maps valid;
        // - the store directory is locked against other processes (`Vfs::try_lock`), so no other
        //   lockerstore writes it; other programs writing into a store are outside the contract.
        #[allow(unsafe_code)]
        let map = unsafe { self.vfs.map(&path, len.min(file_len)) }
            .map_err(|e| Error::io("map", &path, e))?;
        if map.bytes().len() < PACK_HEADER_LEN {
            return Err(Error::corrupted_at("pack shorter than its header", id, 0));
        }
        let header = PackHeader::decode(map.bytes())
            .map_err(|e| Error::corrupted_at(e.to_string(), id, 0))?;
        if header.pack != id || header.store_tag != self.store_tag {
            return Err(Error::corrupted_at(
                "pack header names another pack or store",
                id,
                0,
            ));
        }
        self.maps
            .write()
            .expect("map cache lock")
            .insert(id, map.clone());
        Ok(map)
    }
}
