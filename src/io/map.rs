//! Read-only memory maps of pack files: the crate's only `unsafe` code.

use std::fmt::Debug;
use std::fs::File;
use std::io;

/// Bytes of a file mapped (or, in tests, held) in memory.
pub trait Mapped: Send + Sync + Debug {
    /// The mapped bytes.
    fn bytes(&self) -> &[u8];
}

#[derive(Debug)]
pub(crate) struct FileMap(memmap2::Mmap);

impl FileMap {
    pub(crate) fn new(file: &File, len: u64) -> io::Result<FileMap> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("pack too large to map"))?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty range",
            ));
        }
        if (file.metadata()?.len() as usize) < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than the range to map",
            ));
        }
        // SAFETY: memmap2 requires that the mapped bytes are not modified or truncated by anyone
        // while the map lives, or reads become undefined (and a truncation raises SIGBUS). Pack
        // files guarantee it for the range mapped here:
        // - packs are append-only: no byte below a pack's committed length is ever written again;
        // - a pack file found shorter than its committed length (damaged from outside) is mapped
        //   only as far as it goes, and nothing in the store shortens it further;
        // - `Packs::map_covering` maps exactly the committed length as the metadata states it,
        //   never the uncommitted tail an ingest may still be writing or cutting off;
        // - a pack is only ever truncated to its committed length (a failed put's tail, or the
        //   recovery on open), never below it, so no mapped page goes away;
        // - a pack is deleted (GC) only by unlinking it, which keeps existing maps valid;
        // - the store's directory is locked against other processes (`Vfs::try_lock`).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        Ok(FileMap(map))
    }
}

impl Mapped for FileMap {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}
