//! Packs in an object store (S3 and compatibles, through the `object_store` crate): the second
//! [`PackStorage`], behind the `object-store` feature.
//!
//! The bucket holds sealed packs only, one immutable object per pack, `<prefix>/packs/<id as 16
//! lower-case hex>.pack`, written once with a create-only PUT. A local directory (the store's
//! `packs/`, the same files as a local store's) serves twice:
//!
//! - **Staging.** An ingest appends to a local file as on a local store. [`PackWriter::sync`],
//!   the durability point, fsyncs it and PUTs the whole file as the pack's object; only then
//!   does the engine commit metadata that points into it. The pack is then sealed
//!   ([`PackStorage::seals_on_sync`]): it takes no more records, so an object never changes. A
//!   pack is therefore what one job appended before its commit: one upload's new chunks (a
//!   track), or what one GC or migration step copied.
//! - **Cache.** The staged file of an uploaded pack stays as the cached copy; a pack not cached
//!   is fetched whole (one GET) into a temporary file, fsynced and renamed into place, then read
//!   through the same maps as a local pack. The cache keeps at most `cache_bytes` of uploaded
//!   packs, dropping the least recently read; a dropped file is unlinked, so readers that map
//!   it keep their bytes.
//!
//! Names are never reused by a running store, so a create-only PUT is correct even on a
//! server that ignores it, and the metadata, not the bucket, says where a chunk lives. Every
//! byte read from the bucket is verified by the reader like any pack byte; a cached copy that
//! fails verification is dropped and read again from the object. A prefix holds one store: its
//! `STORE` object, written create-only at creation and checked at every open, keeps a second
//! store (or one re-created after losing its metadata) from taking, and deleting, its packs.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::bucket::{Bucket, Put, Written};
use crate::error::{Error, Result};
use crate::format::{pack_name, parse_pack_name};
use crate::ids::PackId;
use crate::vfs::{Mapped, Vfs};

use super::local::LocalPacks;
use super::storage::{PackStorage, PackWriter, StorageFacts};

/// The packs' objects in the bucket: `packs/<id as 16 lower-case hex>.pack`.
#[derive(Debug)]
struct Remote {
    bucket: Arc<Bucket>,
}

impl Remote {
    fn key(id: PackId) -> String {
        format!("packs/{}", pack_name(id))
    }

    /// Writes pack `id` once. An object already there under this never-reused name is this
    /// pack's own earlier PUT (a retried sync) when its length matches; anything else is
    /// damage.
    fn put_once(&self, id: PackId, bytes: Bytes) -> Result<()> {
        let len = bytes.len() as u64;
        match self.bucket.put(&Self::key(id), bytes, Put::Create)? {
            Written::Written => Ok(()),
            Written::Exists => match self.head(id)? {
                Some(l) if l == len => Ok(()),
                other => Err(Error::corrupted_at(
                    format!(
                        "pack object {} exists with {other:?} bytes, not the {len} being \
                         written (names are never reused)",
                        Self::key(id)
                    ),
                    id,
                    0,
                )),
            },
        }
    }

    fn head(&self, id: PackId) -> Result<Option<u64>> {
        self.bucket.head(&Self::key(id))
    }

    fn get(&self, id: PackId) -> Result<Option<Bytes>> {
        self.bucket.get(&Self::key(id))
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        Ok(self
            .bucket
            .list("packs")?
            .into_iter()
            .filter_map(|(name, len)| Some((parse_pack_name(&name)?, len)))
            .collect())
    }

    fn delete(&self, id: PackId) -> Result<()> {
        self.bucket.delete(&Self::key(id))
    }
}

/// Which uploaded packs have a local copy, and how recently each was read.
#[derive(Debug, Default)]
struct Cache {
    /// Pack -> (bytes, tick of its last use).
    entries: HashMap<PackId, (u64, u64)>,
    bytes: u64,
    tick: u64,
    /// Packs a reader is between finding its file and mapping it: never dropped meanwhile.
    pinned: HashMap<PackId, usize>,
}

impl Cache {
    fn touch(&mut self, id: PackId, len: u64) {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.entry(id).or_insert_with(|| (len, 0));
        if e.1 == 0 {
            self.bytes += len;
        }
        e.1 = tick;
    }

    fn pin(&mut self, id: PackId) {
        *self.pinned.entry(id).or_insert(0) += 1;
    }

    fn unpin(&mut self, id: PackId) {
        if let Some(n) = self.pinned.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.pinned.remove(&id);
            }
        }
    }

    fn forget(&mut self, id: PackId) {
        if let Some((len, _)) = self.entries.remove(&id) {
            self.bytes -= len;
        }
    }

    /// The least recently used packs to drop so the rest fit in `limit` bytes, never `keep`
    /// (the pack being read: the cache may exceed its limit by that one pack).
    fn over(&mut self, limit: u64, keep: Option<PackId>) -> Vec<PackId> {
        let mut by_age: Vec<(u64, PackId, u64)> = self
            .entries
            .iter()
            .map(|(id, (len, tick))| (*tick, *id, *len))
            .collect();
        by_age.sort_unstable();
        let mut out = Vec::new();
        let mut bytes = self.bytes;
        for (_, id, len) in by_age {
            if bytes <= limit {
                break;
            }
            if Some(id) == keep || self.pinned.contains_key(&id) {
                continue;
            }
            bytes -= len;
            out.push(id);
        }
        for id in &out {
            self.forget(*id);
        }
        out
    }
}

/// The local directory's copies of uploaded packs and their bound.
#[derive(Debug)]
struct Shelf {
    local: LocalPacks,
    cache: Mutex<Cache>,
    limit: u64,
}

impl Shelf {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts pack `id`'s copy (`len` bytes) as just used, then drops the least recently used
    /// others past the limit.
    fn keep(&self, id: PackId, len: u64) -> Result<()> {
        let drop_ids = {
            let mut cache = self.cache();
            cache.touch(id, len);
            cache.over(self.limit, Some(id))
        };
        if drop_ids.is_empty() {
            return Ok(());
        }
        self.local.delete(&drop_ids)
    }
}

/// Packs in a bucket, staged and cached in a local directory; see the module docs.
#[derive(Debug)]
pub(crate) struct ObjectPacks {
    shelf: Arc<Shelf>,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    remote: Arc<Remote>,
    /// Packs known to be in the bucket (uploaded by this process, or listed at open).
    uploaded: Arc<Mutex<HashSet<PackId>>>,
    /// Lengths of the local files found at open, for `recover_committed`.
    copies: Mutex<HashMap<PackId, u64>>,
    /// One fetch per pack at a time: readers of a pack being fetched wait for it.
    fetching: Mutex<HashMap<PackId, Arc<Mutex<()>>>>,
    /// Names the temporary file of each fetch.
    fetches: std::sync::atomic::AtomicU64,
}

impl ObjectPacks {
    /// Packs in `bucket` (whose prefix this store has claimed); `dir` holds staged and cached
    /// packs.
    pub(crate) fn new(
        vfs: Arc<dyn Vfs>,
        dir: PathBuf,
        bucket: Arc<Bucket>,
        cache_limit: u64,
    ) -> Result<ObjectPacks> {
        let remote = Remote { bucket };
        Ok(ObjectPacks {
            shelf: Arc::new(Shelf {
                local: LocalPacks::new(vfs.clone(), dir.clone()),
                cache: Mutex::default(),
                limit: cache_limit,
            }),
            vfs,
            dir,
            remote: Arc::new(remote),
            uploaded: Arc::default(),
            copies: Mutex::default(),
            fetching: Mutex::default(),
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Fetches pack `id` whole into the local directory, unless it is there: a temporary file
    /// of this fetch's own, fsynced, renamed into place, so a cached file is always a whole
    /// object. One fetch per pack at a time; the others wait and find the file.
    fn fetch(&self, id: PackId) -> Result<()> {
        let gate = self
            .fetching
            .lock()
            .expect("fetching lock")
            .entry(id)
            .or_default()
            .clone();
        let result = {
            let _one = gate.lock().unwrap_or_else(|p| p.into_inner());
            if self.shelf.local.len(id)?.is_some() {
                Ok(())
            } else {
                self.fetch_now(id)
            }
        };
        let mut fetching = self.fetching.lock().expect("fetching lock");
        if Arc::strong_count(&gate) == 2 {
            fetching.remove(&id);
        }
        result
    }

    fn fetch_now(&self, id: PackId) -> Result<()> {
        let bytes = self
            .remote
            .get(id)?
            .ok_or_else(|| Error::corrupted_at("pack object is missing", id, 0))?;
        let path = self.dir.join(pack_name(id));
        let n = self.fetches.fetch_add(1, Ordering::Relaxed);
        let part = self.dir.join(format!("{}.{n}.part", pack_name(id)));
        let written = self
            .vfs
            .create_new(&part)
            .and_then(|file| {
                file.write_all_at(&bytes, 0)?;
                file.sync_data()
            })
            .and_then(|()| self.vfs.rename(&part, &path));
        if let Err(e) = written {
            let _ = self.vfs.remove_file(&part);
            return Err(Error::io("cache", &path, e));
        }
        self.shelf.keep(id, bytes.len() as u64)
    }
}

impl PackStorage for ObjectPacks {
    fn location(&self, id: PackId) -> String {
        format!(
            "{}/packs/{}",
            self.remote.bucket.url().trim_end_matches('/'),
            pack_name(id)
        )
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let remote = self.remote.list()?;
        let local = self.shelf.local.list()?;
        let in_bucket: HashMap<PackId, u64> = remote.iter().copied().collect();
        let mut out = remote.clone();
        {
            let mut cache = self.shelf.cache();
            let mut copies = self.copies.lock().expect("copies lock");
            for (id, len) in local {
                copies.insert(id, len);
                match in_bucket.get(&id) {
                    // A cached copy.
                    Some(&l) if l == len => cache.touch(id, len),
                    // A copy that is not the object (damage of one of them): which one is whole
                    // is decided with the committed length (`recover_committed`).
                    Some(_) => {}
                    // Staged and never uploaded (no committed metadata points into it), or a
                    // committed pack whose object is gone (`recover_committed` re-uploads it).
                    None => out.push((id, len)),
                }
            }
        }
        *self.uploaded.lock().expect("uploaded lock") = in_bucket.keys().copied().collect();
        // Leftovers of fetches cut short.
        if let Ok(names) = self.vfs.list_dir(&self.dir) {
            for n in names.iter().filter(|n| n.ends_with(".part")) {
                let _ = self.vfs.remove_file(&self.dir.join(n));
            }
        }
        let over = self.shelf.cache().over(self.shelf.limit, None);
        self.shelf.local.delete(&over)?;
        Ok(out)
    }

    fn len(&self, id: PackId) -> Result<Option<u64>> {
        match self.remote.head(id)? {
            Some(l) => Ok(Some(l)),
            None => self.shelf.local.len(id),
        }
    }

    fn create(&self, id: PackId, header: &[u8]) -> Result<Box<dyn PackWriter>> {
        Ok(Box::new(ObjectWriter {
            id,
            staged: self.shelf.local.create(id, header)?,
            path: self.dir.join(pack_name(id)),
            vfs: self.vfs.clone(),
            remote: self.remote.clone(),
            shelf: self.shelf.clone(),
            uploaded_set: self.uploaded.clone(),
            sealed: AtomicBool::new(false),
        }))
    }

    fn reopen(&self, id: PackId) -> Result<Box<dyn PackWriter>> {
        Err(Error::corrupted_at(
            "an unsealed pack in a store whose packs live in an object store (every committed \
             pack there is sealed)",
            id,
            0,
        ))
    }

    fn truncate(&self, id: PackId, len: u64) -> Result<()> {
        if self.uploaded.lock().expect("uploaded lock").contains(&id) {
            // Objects are immutable and were whole when committed; reads never go past the
            // committed length, so bytes past it (which the protocol never writes) stay unread.
            return Ok(());
        }
        self.shelf.local.truncate(id, len)
    }

    fn read(
        &self,
        id: PackId,
        end: u64,
        committed: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Arc<dyn Mapped>> {
        // Pinned while it goes from "found" to "mapped": eviction skips it meanwhile.
        self.shelf.cache().pin(id);
        let result = (|| {
            // An eviction decided before the pin may still remove the file once: fetched again
            // then, under the pin, which no later eviction passes.
            for attempt in 0..2 {
                if self.shelf.local.len(id)?.is_none() {
                    self.fetch(id)?;
                }
                match self.shelf.local.read(id, end, committed) {
                    Err(_) if attempt == 0 && self.shelf.local.len(id)?.is_none() => continue,
                    other => return other,
                }
            }
            unreachable!("the second attempt returns")
        })();
        let mut cache = self.shelf.cache();
        cache.unpin(id);
        if result.is_ok()
            && let Some(&(len, _)) = cache.entries.get(&id)
        {
            cache.touch(id, len);
        }
        result
    }

    fn delete(&self, ids: &[PackId]) -> Result<()> {
        for &id in ids {
            self.remote.delete(id)?;
            self.shelf.cache().forget(id);
            self.uploaded.lock().expect("uploaded lock").remove(&id);
        }
        self.shelf.local.delete(ids)
    }

    fn seals_on_sync(&self) -> bool {
        true
    }

    fn recover_committed(&self, id: PackId, listed: u64, committed: u64) -> Result<(u64, bool)> {
        let local = self.copies.lock().expect("copies lock").get(&id).copied();
        let remote = self.uploaded.lock().expect("uploaded lock").contains(&id);
        let remote_len = if remote { self.remote.head(id)? } else { None };
        match (remote_len, local) {
            (Some(r), Some(l)) if r != l && r == committed => {
                // The cached copy is damaged: dropped, fetched again when read.
                self.shelf.local.delete(&[id])?;
                Ok((r, false))
            }
            (Some(r), Some(l)) if r != l && l >= committed => {
                // The object is damaged and the cached copy whole: the one overwrite.
                self.upload_local(id, committed, Put::Overwrite)?;
                Ok((committed, true))
            }
            (None, Some(l)) if l >= committed => {
                // Committed, but its object is gone (lost from the bucket): put back from the
                // cached copy, so the bucket again holds every committed byte.
                self.upload_local(id, committed, Put::Create)?;
                Ok((committed, true))
            }
            _ => Ok((listed, false)),
        }
    }

    fn refresh(&self, id: PackId) -> bool {
        if !self.uploaded.lock().expect("uploaded lock").contains(&id) {
            return false;
        }
        self.shelf.cache().forget(id);
        self.shelf.local.delete(&[id]).is_ok()
    }

    fn describe(&self) -> StorageFacts {
        StorageFacts {
            location: self.remote.bucket.url().to_owned(),
            cache_bytes: Some(self.shelf.cache().bytes),
            cache_limit: Some(self.shelf.limit),
        }
    }
}

impl ObjectPacks {
    /// PUTs the first `len` bytes of the local copy of pack `id`.
    fn upload_local(&self, id: PackId, len: u64, mode: Put) -> Result<()> {
        let path = self.dir.join(pack_name(id));
        let mut bytes = self
            .vfs
            .read(&path)
            .map_err(|e| Error::io("read", &path, e))?;
        bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        self.remote
            .bucket
            .put(&Remote::key(id), Bytes::from(bytes), mode)?;
        self.uploaded.lock().expect("uploaded lock").insert(id);
        self.shelf.keep(id, len)
    }
}

/// A staged pack, uploaded whole by its first sync.
#[derive(Debug)]
struct ObjectWriter {
    id: PackId,
    staged: Box<dyn PackWriter>,
    path: PathBuf,
    vfs: Arc<dyn Vfs>,
    remote: Arc<Remote>,
    shelf: Arc<Shelf>,
    uploaded_set: Arc<Mutex<HashSet<PackId>>>,
    sealed: AtomicBool,
}

impl PackWriter for ObjectWriter {
    fn write_at(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Err(Error::corrupted_at(
                "write to a pack already uploaded (objects are immutable)",
                self.id,
                offset,
            ));
        }
        self.staged.write_at(offset, parts)
    }

    fn sync(&self) -> Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Ok(());
        }
        // The staged copy becomes the cached one: synced first, so a power loss cannot leave
        // a cached file that differs from its object.
        self.staged.sync()?;
        let bytes = self
            .vfs
            .read(&self.path)
            .map_err(|e| Error::io("read", &self.path, e))?;
        let len = bytes.len() as u64;
        self.remote.put_once(self.id, Bytes::from(bytes))?;
        self.sealed.store(true, Ordering::Release);
        self.uploaded_set
            .lock()
            .expect("uploaded lock")
            .insert(self.id);
        // The staged file is now the cached copy, within the cache's bound.
        self.shelf.keep(self.id, len)
    }

    fn truncate(&self, len: u64) -> Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Err(Error::corrupted_at(
                "truncate of a pack already uploaded",
                self.id,
                len,
            ));
        }
        self.staged.truncate(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_drops_the_least_recently_used_first() {
        let mut c = Cache::default();
        c.touch(PackId(1), 10);
        c.touch(PackId(2), 10);
        c.touch(PackId(3), 10);
        c.touch(PackId(1), 10);
        assert_eq!(c.bytes, 30);
        assert_eq!(c.over(25, None), [PackId(2)]);
        assert_eq!(c.over(5, Some(PackId(3))), [PackId(1)]);
        assert_eq!(c.bytes, 10, "the kept pack stays over the limit");
        assert_eq!(c.over(5, None), [PackId(3)]);
        assert_eq!(c.bytes, 0);
    }
}
