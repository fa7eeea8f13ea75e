//! Byte-level parsers of stored formats and the upload bounds, exposed for the fuzz targets and
//! the benchmarks (feature `test-support`). Not a stable API.

pub use crate::crafted::{Container, crafted};
pub use crate::format::{ChunkEntry, PackHeader, PackRow, RecordHeader, StoreFile, TrackRecord};
#[cfg(feature = "object-store")]
pub use crate::index::journal::fuzz_check as journal_check;
pub use crate::segment::MAX_REGIONS;
pub use crate::segment::fuzz_check as segment_check;
pub use crate::write::upload::fuzz_bounds_check as upload_bounds_check;

/// The chunk bound of any upload: `2 * len / min + 16`.
pub fn max_chunks(len: u64, min: u32) -> u64 {
    crate::chunk::max_chunks(len, min)
}

/// The compress-or-keep-raw decision, for the benchmarks: returns whether zstd was kept.
pub fn compress_decision(plain: &[u8], level: i32) -> bool {
    crate::pack::codec::encode(plain, level).0 == crate::format::Codec::Zstd
}

/// The rights holder an upload's tags name, for the benchmarks and fuzz targets.
pub fn rights_holder(upload: &[u8]) -> Option<String> {
    crate::tags::rights_holder(upload).map(|h| h.as_str().to_owned())
}
