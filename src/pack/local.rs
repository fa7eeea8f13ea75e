//! Packs as local files: `packs/<id>.pack`, appended in place, read through memory maps. The
//! first [`PackStorage`]; every file operation goes through the [`Vfs`] seam.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::format::{PACK_HEADER_LEN, pack_name, parse_pack_name};
use crate::ids::PackId;
use crate::vfs::{Mapped, Vfs, VfsFile};

use super::storage::{PackStorage, PackWriter, StorageFacts, Window};

/// Pack files in one directory.
#[derive(Debug)]
pub(crate) struct LocalPacks {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    /// Maps of committed prefixes, shared by all readers.
    maps: RwLock<HashMap<PackId, Arc<dyn Mapped>>>,
}

/// An open pack file.
#[derive(Debug)]
struct LocalWriter {
    file: Arc<dyn VfsFile>,
    path: PathBuf,
}

impl LocalPacks {
    pub(crate) fn new(vfs: Arc<dyn Vfs>, dir: PathBuf) -> LocalPacks {
        LocalPacks {
            vfs,
            dir,
            maps: RwLock::new(HashMap::new()),
        }
    }

    fn path(&self, id: PackId) -> PathBuf {
        self.dir.join(pack_name(id))
    }

    fn sync_dir(&self) -> Result<()> {
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync", &self.dir, e))
    }
}

impl PackStorage for LocalPacks {
    fn location(&self, id: PackId) -> String {
        self.path(id).display().to_string()
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let names = self
            .vfs
            .list_dir(&self.dir)
            .map_err(|e| Error::io("list", &self.dir, e))?;
        let mut out = Vec::new();
        for name in names {
            let Some(id) = parse_pack_name(&name) else {
                continue;
            };
            let path = self.dir.join(&name);
            let file = self
                .vfs
                .open_rw(&path, false)
                .map_err(|e| Error::io("open", &path, e))?;
            out.push((id, file.len().map_err(|e| Error::io("stat", &path, e))?));
        }
        Ok(out)
    }

    fn len(&self, id: PackId) -> Result<Option<u64>> {
        let path = self.path(id);
        match self.vfs.open_rw(&path, false) {
            Ok(f) => f.len().map(Some).map_err(|e| Error::io("stat", &path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", &path, e)),
        }
    }

    fn create(&self, id: PackId, header: &[u8]) -> Result<Box<dyn PackWriter>> {
        let path = self.path(id);
        let file = self
            .vfs
            .create_new(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        let written = file
            .write_all_at(header, 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| self.vfs.sync_dir(&self.dir));
        if let Err(e) = written {
            // Never registered: nothing refers to it. If removal fails too, open cleans it up.
            let _ = self.vfs.remove_file(&path);
            return Err(Error::io("write", &path, e));
        }
        Ok(Box::new(LocalWriter { file, path }))
    }

    fn reopen(&self, id: PackId) -> Result<Box<dyn PackWriter>> {
        let path = self.path(id);
        let file = self
            .vfs
            .open_rw(&path, false)
            .map_err(|e| Error::io("open", &path, e))?;
        Ok(Box::new(LocalWriter { file, path }))
    }

    fn truncate(&self, id: PackId, len: u64) -> Result<()> {
        let path = self.path(id);
        let file = self
            .vfs
            .open_rw(&path, false)
            .map_err(|e| Error::io("open", &path, e))?;
        file.set_len(len)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("truncate", &path, e))
    }

    fn read(
        &self,
        id: PackId,
        _start: u64,
        end: u64,
        committed: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Window> {
        self.map_pack(id, end, committed)
            .map(|map| Window { map, base: 0 })
    }

    fn delete(&self, ids: &[PackId]) -> Result<()> {
        for &id in ids {
            self.maps.write().expect("map cache lock").remove(&id);
            let path = self.path(id);
            match self.vfs.remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(|e| Error::io("remove", &path, e))?,
            }
        }
        self.sync_dir()
    }

    fn describe(&self) -> StorageFacts {
        StorageFacts {
            location: self.dir.display().to_string(),
            ..StorageFacts::default()
        }
    }
}

impl PackWriter for LocalWriter {
    fn write_at(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        // Positional writes of each part rather than one of a concatenated copy: no chunk is
        // copied before it reaches the page cache. A tear between them is an uncommitted tail
        // like any.
        let mut at = offset;
        for part in parts {
            self.file
                .write_all_at(part, at)
                .map_err(|e| Error::io("write", &self.path, e))?;
            at += part.len() as u64;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("sync", &self.path, e))
    }

    fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| Error::io("truncate", &self.path, e))
    }
}

impl LocalPacks {
    /// A map of pack `id`'s committed prefix, at least `end` bytes (see `PackStorage::read`).
    fn map_pack(
        &self,
        id: PackId,
        end: u64,
        committed: &mut dyn FnMut() -> Result<u64>,
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
        let committed = committed()?;
        if committed < end {
            return Err(Error::corrupted_at(
                format!("record end {end} past the pack's committed length {committed}"),
                id,
                committed,
            ));
        }
        if file_len < end {
            return Err(Error::corrupted_at(
                format!(
                    "record end {end} past the end of the pack file, which is {file_len} bytes \
                     but committed {committed} (truncated)"
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
        // - `committed` is the committed length as the metadata states it, never the uncommitted
        //   tail an ingest may still be writing or cutting off; a pack file found shorter than
        //   that (damaged from outside) is mapped only as far as it goes, and nothing in the
        //   store shortens it further;
        // - a pack is only ever truncated to its committed length (a failed put's tail, the
        //   recovery on open), never below it, so no mapped page goes away;
        // - a pack is deleted (GC, dropping damage) only by unlinking it, which keeps maps valid;
        // - the store directory is locked against other processes (`Vfs::try_lock`), so no other
        //   lockerstore writes it; other programs writing into a store are outside the contract.
        #[allow(unsafe_code)]
        let map = unsafe { self.vfs.map(&path, committed.min(file_len)) }
            .map_err(|e| Error::io("map", &path, e))?;
        self.maps
            .write()
            .expect("map cache lock")
            .insert(id, map.clone());
        Ok(map)
    }

    #[cfg(feature = "object-store")]
    /// Writes `bytes` as the file `name` in the directory, whole and durable (a temporary file,
    /// fsynced, then renamed): a cached span of an object (`pack/object.rs`). Such a file is
    /// written once and never changed; it goes only by unlinking.
    /// `tag` makes the temporary file's name (`<name>.<tag>.part`) this writer's own.
    pub(crate) fn write_piece(&self, name: &str, tag: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.{tag}.part"));
        let written = self
            .vfs
            .create_new(&tmp)
            .and_then(|file| {
                file.write_all_at(bytes, 0)?;
                file.sync_data()
            })
            .and_then(|()| self.vfs.rename(&tmp, &path));
        if let Err(e) = written {
            let _ = self.vfs.remove_file(&tmp);
            return Err(Error::io("cache", &path, e));
        }
        Ok(())
    }

    #[cfg(feature = "object-store")]
    /// Maps the whole file `name` written by `write_piece`; `None` when it is gone.
    pub(crate) fn map_piece(&self, name: &str) -> Result<Option<Arc<dyn Mapped>>> {
        let path = self.dir.join(name);
        let len = match self.vfs.open_rw(&path, false) {
            Ok(f) => f.len().map_err(|e| Error::io("stat", &path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        // SAFETY: a piece is written whole under a temporary name, fsynced and renamed into
        // place (`write_piece`); nothing writes or truncates it afterwards, and it goes only by
        // unlinking, which keeps maps valid. The store directory is locked against other
        // processes.
        #[allow(unsafe_code)]
        let map = unsafe { self.vfs.map(&path, len) }.map_err(|e| Error::io("map", &path, e))?;
        Ok(Some(map))
    }

    #[cfg(feature = "object-store")]
    /// Removes the file `name` written by `write_piece`; one already gone is no error.
    pub(crate) fn remove_piece(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        match self.vfs.remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove", &path, e))
            }
            _ => Ok(()),
        }
    }
}
