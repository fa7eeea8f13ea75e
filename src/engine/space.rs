//! Free space: the one place the engine asks how much room the disk has, and the ballast file
//! that keeps room for the metadata commits which free space (deletes, GC) when the disk is full.
//!
//! A full disk cannot be fixed by deleting if the delete itself cannot commit: a redb commit that
//! hits `ENOSPC` poisons the store until it is reopened. So, as CockroachDB does, the store keeps
//! a *ballast*: a file `BALLAST` in the store directory, `Options::min_free_space / 4` bytes of
//! written zeros (a sparse file would reserve nothing). It is created at open when the disk has
//! room for it beyond `min_free_space`, released before a delete or GC commit when less than one
//! ballast is free, and re-created at the end of a GC run (and at the next open) once the disk has
//! room again. A store opened with `min_free_space == 0` keeps no ballast.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::vfs::Vfs;

/// Name of the ballast file in the store directory.
pub(crate) const BALLAST_FILE: &str = "BALLAST";

/// Below this much free space (ballast released or absent) a delete or GC commit is refused with
/// `DiskFull` before it starts, rather than risking a commit that fails halfway and poisons the
/// store. A commit of a few track deletions or of one GC batch touches far fewer pages.
pub(crate) const METADATA_FLOOR: u64 = 256 << 10;

/// The ballast is written in pieces of this size.
const WRITE_PIECE: usize = 1 << 20;

/// The store's free-space guard and its ballast.
#[derive(Debug)]
pub(crate) struct Space {
    vfs: Arc<dyn Vfs>,
    /// The store directory (the ballast lives there).
    dir: PathBuf,
    /// Where free space is measured: the pack directory, where the data goes.
    probe: PathBuf,
    min_free_space: u64,
}

impl Space {
    pub(crate) fn new(
        vfs: Arc<dyn Vfs>,
        dir: PathBuf,
        probe: PathBuf,
        min_free_space: u64,
    ) -> Space {
        Space {
            vfs,
            dir,
            probe,
            min_free_space,
        }
    }

    /// `Options::min_free_space`: a put is refused below it.
    pub(crate) fn min_free_space(&self) -> u64 {
        self.min_free_space
    }

    /// Bytes free on the store's file system ([`crate::vfs::Vfs::available_space`]).
    pub(crate) fn free_space(&self) -> Result<u64> {
        self.vfs
            .available_space(&self.probe)
            .map_err(|e| Error::io("statvfs", self.dir.clone(), e))
    }

    /// Free bytes a data write (a put, a GC copy) may use: what is free beyond
    /// `Options::min_free_space`.
    pub(crate) fn spare_space(&self) -> Result<u64> {
        Ok(self.free_space()?.saturating_sub(self.min_free_space))
    }

    /// Size of the ballast file.
    pub(crate) fn ballast_len(&self) -> u64 {
        self.min_free_space / 4
    }

    fn ballast_path(&self) -> PathBuf {
        self.dir.join(BALLAST_FILE)
    }

    /// Makes room for a commit that frees space (a delete, GC): when less than one ballast is
    /// free, the ballast is released first. Refuses with `DiskFull` (the store is unchanged and
    /// stays usable) when even then less than [`METADATA_FLOOR`] is free.
    pub(crate) fn room_for_metadata(&self) -> Result<()> {
        let mut free = self.free_space()?;
        let vfs = self.vfs.as_ref();
        let path = self.ballast_path();
        if free < self.ballast_len().max(METADATA_FLOOR) && vfs.exists(&path) {
            match vfs.remove_file(&path) {
                // A concurrent delete released it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(|e| Error::io("release", &path, e))?,
            }
            vfs.sync_dir(&self.dir)
                .map_err(|e| Error::io("sync", &self.dir, e))?;
            free = self.free_space()?;
        }
        if free < METADATA_FLOOR {
            return Err(Error::DiskFull {
                op: "keep room for a metadata commit in",
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Creates the ballast if it is missing (or of the wrong length, after a crash while it was
    /// written) and the disk has room for it beyond `min_free_space`. Returns whether a ballast
    /// is in place. A full disk is not an error here: the ballast waits for room.
    pub(crate) fn restore_ballast(&self) -> Result<bool> {
        let len = self.ballast_len();
        if len == 0 {
            return Ok(false);
        }
        let vfs = self.vfs.as_ref();
        let path = self.ballast_path();
        let found = if vfs.exists(&path) {
            vfs.open_rw(&path, false)
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        };
        match found {
            Ok(f) => {
                if f.len().map_err(|e| Error::io("stat", &path, e))? == len {
                    return Ok(true);
                }
                drop(f);
                match vfs.remove_file(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => other.map_err(|e| Error::io("remove", &path, e))?,
                }
            }
            // Missing, or released by a delete meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("open", &path, e)),
        }
        if self.free_space()? < self.min_free_space.saturating_add(len) {
            return Ok(false);
        }
        let written = (|| {
            let f = vfs.open_rw(&path, true)?;
            let zeros = vec![0u8; WRITE_PIECE];
            let mut at = 0u64;
            while at < len {
                let n = (len - at).min(WRITE_PIECE as u64) as usize;
                f.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            f.sync_data()?;
            vfs.sync_dir(&self.dir)
        })();
        match written {
            Ok(()) => Ok(true),
            Err(e) => {
                // A partial ballast is removed now, or replaced at the next open.
                let _ = vfs.remove_file(&path);
                let err = Error::io("write", &path, e);
                match err {
                    Error::DiskFull { .. } => Ok(false),
                    other => Err(other),
                }
            }
        }
    }
}
