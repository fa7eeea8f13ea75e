//! Read-only memory maps of pack files: the `unsafe` behind [`super::Vfs::map`].

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
    /// Maps the first `len` bytes of `file`.
    ///
    /// # Safety
    /// Those bytes must be neither changed nor cut off while the map lives ([`super::Vfs::map`]).
    pub(crate) unsafe fn new(file: &File, len: u64) -> io::Result<FileMap> {
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
        // SAFETY: memmap2 requires that the mapped bytes are not modified or truncated while the
        // map lives; this function's caller guarantees exactly that.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
        Ok(FileMap(map))
    }
}

impl Mapped for FileMap {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}
