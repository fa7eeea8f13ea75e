//! The pack-storage seam: where pack bytes live and how a record's bytes come back.
//!
//! [`Packs`](super::Packs) keeps the pool of packs writers take, their lengths and the rules of
//! the commit protocol (append, sync, then the metadata; cut an uncommitted tail; never touch a
//! committed byte). A [`PackStorage`] only stores bytes under pack ids. The first implementation
//! is [`LocalPacks`](super::local::LocalPacks): one file per pack in the store's `packs/`
//! directory, appended in place and read through memory maps. The second, for the object-store
//! issue, keeps packs in an S3-compatible bucket; the contract below is written for both.
//!
//! - **Ids and names.** A pack id is never reused within a store (open starts past the largest
//!   id it sees, in the metadata, its `next_pack_id` counter, or the storage). Local files are `packs/<id as 16 lower-case
//!   hex>.pack`; objects will be named the same under the store's prefix. Because a name is
//!   never written twice, a create-only PUT is safe even on a bucket that ignores conditional
//!   writes (SERVICE.md: Garage), and the metadata, not the storage, says where a chunk lives.
//! - **Writing and the durability point.** Records are appended to a pack through a
//!   [`PackWriter`]; [`PackWriter::sync`] is the durability point: once it returns, every byte
//!   appended survives a crash, and only then does the engine commit metadata that points at
//!   them. Locally that is `fdatasync` of the pack file. An object store has no append: there
//!   a writer stages the unsealed pack on local disk (its `sync` is the staging file's
//!   `fdatasync`), and sealing uploads the whole pack as one immutable object, written once,
//!   after which the staged copy may go. Until the upload, reads of that pack come from the
//!   staged copy.
//! - **Cutting tails.** Bytes past a pack's committed length belong to an ingest in flight or to
//!   a crashed one. [`PackWriter::truncate`] and [`PackStorage::truncate`] cut them; nothing
//!   below the committed length is ever cut or rewritten. Objects are immutable, so an object
//!   store only ever holds sealed packs, whose every byte was committed before the upload.
//! - **Reading.** [`PackStorage::read`] returns a [`Window`]: bytes of a pack from some offset
//!   on, covering at least a record, never past the pack's committed length (bytes past it may
//!   still be cut and rewritten). Locally: a map of the committed prefix from offset 0, shared
//!   by all readers. From an object store: the whole object, or for a large one a span of it
//!   fetched by a ranged GET, through a bounded local cache, so a sequential read issues about
//!   one GET per span, not one per chunk (TARGETS.md). The caller verifies every record it
//!   reads.
//! - **Listing for recovery and rebuild.** [`PackStorage::list`] names every pack present with
//!   its length. Open removes what no committed metadata knows and cuts uncommitted tails;
//!   packs are self-describing (header, then records each naming its domain, chunk id, codec and
//!   lengths), so a node can rebuild its chunk index from a listing and one read of each pack.
//! - **Deletion.** [`PackStorage::delete`] is called only for packs no committed metadata points
//!   at (GC after its commit, recovery, dropping damage). Locally a reader that still maps the
//!   pack keeps reading it. An object store does not delete at once: another node may have
//!   looked an entry up before the commit that dropped it and still read the old pack, so the
//!   object waits out a grace period longer than the longest upload in flight (kopia's
//!   `SafetyFull`, rustic's two-phase prune).

use std::fmt::Debug;
use std::sync::Arc;

use crate::error::Result;
use crate::ids::PackId;
use crate::vfs::Mapped;

/// Where pack bytes live; see the module docs for the contract.
pub(crate) trait PackStorage: Send + Sync + Debug {
    /// Where pack `id` is (or would be) stored, for messages: a path, an object key.
    fn location(&self, id: PackId) -> String;

    /// Every pack present, with its length in bytes.
    fn list(&self) -> Result<Vec<(PackId, u64)>>;

    /// The length of one pack as stored; `None` when it is not there.
    fn len(&self, id: PackId) -> Result<Option<u64>>;

    /// Creates pack `id` (which must not exist) holding `header`, durably.
    fn create(&self, id: PackId, header: &[u8]) -> Result<Box<dyn PackWriter>>;

    /// A writer appending to an existing, unsealed pack.
    fn reopen(&self, id: PackId) -> Result<Box<dyn PackWriter>>;

    /// Cuts pack `id` to `len` bytes, durably (an uncommitted tail found at open).
    fn truncate(&self, id: PackId, len: u64) -> Result<()>;

    /// Bytes of pack `id` covering at least the range `start..end` (a record) and never past
    /// the pack's committed length, which `committed` reads from the metadata (asked only when
    /// the storage has to fetch: a cached read costs no metadata lookup). `Corrupted` when the
    /// pack is missing or shorter than `end`.
    fn read(
        &self,
        id: PackId,
        start: u64,
        end: u64,
        committed: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Window>;

    /// Removes the packs `ids` (no committed metadata points at them), durably. A pack already
    /// gone is no error.
    fn delete(&self, ids: &[PackId]) -> Result<()>;

    /// At open, for a pack listed with `listed` bytes that committed metadata names with
    /// `committed` bytes: mends what the storage can from copies of its own and returns the
    /// pack's length as stored now, and whether it mended anything. Local packs have one copy:
    /// nothing to mend.
    fn recover_committed(&self, _id: PackId, listed: u64, _committed: u64) -> Result<(u64, bool)> {
        Ok((listed, false))
    }

    /// After a read of pack `id` failed verification: drops a copy that is not the durable
    /// one (a cache's) so the next read fetches the durable one; `true` when it did.
    fn refresh(&self, _id: PackId) -> bool {
        false
    }

    /// Whether a pack takes no more records once synced (an object store, whose objects are
    /// written once): the pool then never hands it out again.
    fn seals_on_sync(&self) -> bool {
        false
    }

    /// One past the largest pack id the storage holds under any name, also of packs being
    /// deleted that `list` no longer names (an object store's grace period): new ids start
    /// past it.
    fn first_free_id(&self) -> u64 {
        0
    }

    /// Where the packs live and what the storage caches, for `stats`.
    fn describe(&self) -> StorageFacts;
}

/// Bytes of a pack from offset `base` on: the whole pack (`base` 0) or a span of it.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub(crate) map: Arc<dyn Mapped>,
    pub(crate) base: u64,
}

impl Window {
    /// The bytes, the first of them at offset `base` of the pack.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// Whether the window holds the pack's offsets `start..end`.
    pub(crate) fn covers(&self, start: u64, end: u64) -> bool {
        start >= self.base && end <= self.base + self.bytes().len() as u64
    }
}

/// What a pack storage tells `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StorageFacts {
    /// Where the packs live: a directory, a bucket URL.
    pub(crate) location: String,
    /// Bytes of cached copies, for storage that caches.
    pub(crate) cache_bytes: Option<u64>,
    /// The cache's limit.
    pub(crate) cache_limit: Option<u64>,
    /// Bytes written and acknowledged but not yet uploaded (`PackDurability::LocalDisk`).
    pub(crate) upload_backlog: Option<u64>,
}

/// Appends to one pack. Held by one writer at a time (the pool hands a pack to one job).
pub(crate) trait PackWriter: Send + Sync + Debug {
    /// Writes `parts` one after the other at `offset` (the pack's current end).
    fn write_at(&self, offset: u64, parts: &[&[u8]]) -> Result<()>;

    /// Makes every byte written so far durable: the point after which metadata may point at
    /// them.
    fn sync(&self) -> Result<()>;

    /// Cuts the pack to `len` bytes (an uncommitted tail of a failed job).
    fn truncate(&self, len: u64) -> Result<()>;
}
