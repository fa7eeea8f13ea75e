//! How a store is opened: the options of `Store::open`.

use std::sync::Arc;

use crate::chunk::ChunkerParams;
use crate::policy::LicenseMode;
use crate::vfs::{StdVfs, Vfs};

/// How to open a store.
#[derive(Clone, Debug)]
pub struct Options {
    /// Create the store if the directory does not hold one (it must be empty or missing). Never
    /// applies to a directory holding a store's files without its `STORE` file: that is refused.
    pub create: bool,
    /// License mode of a newly created store. An existing store keeps its own.
    pub mode: LicenseMode,
    /// Chunker sizes of a newly created store. An existing store keeps its own.
    pub chunker: ChunkerParams,
    /// Packs are sealed once they reach this many bytes.
    pub pack_size_limit: u64,
    /// zstd level for chunks the probe finds compressible.
    pub compression_level: i32,
    /// A put is refused with `DiskFull` before it writes anything when the file system has less
    /// free space than this, so a filling disk fails puts cleanly instead of failing a metadata
    /// commit halfway (which would poison the store until it is reopened).
    pub min_free_space: u64,
    /// Cut tags, pictures and audio apart before chunking (format-aware chunking).
    pub segmenting: bool,
    /// Bytes of an upload buffered for the segmenter; larger uploads are chunked plain.
    pub segment_window: usize,
    /// The I/O seam; [`StdVfs`] unless a test injects faults.
    pub vfs: Arc<dyn Vfs>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create: true,
            mode: LicenseMode::PerUserCopy,
            chunker: ChunkerParams::default(),
            pack_size_limit: 64 << 20,
            compression_level: 3,
            min_free_space: 16 << 20,
            segmenting: true,
            segment_window: 32 << 20,
            vfs: Arc::new(StdVfs),
        }
    }
}
