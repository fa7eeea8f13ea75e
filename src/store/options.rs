//! How a store is opened: the options of `Store::open`, built from [`Options::default`] with
//! chained setters.

use std::sync::Arc;

use crate::chunk::ChunkerParams;
use crate::policy::LicenseMode;
use crate::vfs::{StdVfs, Vfs};

/// How to open a store: [`Options::default`], then the setters for what differs.
///
/// ```
/// use lockerstore::{LicenseMode, Options};
///
/// let options = Options::default()
///     .mode(LicenseMode::SingleMaster)
///     .pack_size_limit(16 << 20);
/// assert_eq!(options.get_mode(), LicenseMode::SingleMaster);
/// ```
///
/// Non-exhaustive, so that options can be added without breaking callers; the setters consume
/// and return the options, the getters are named `get_*` (as `std::process::Command`'s).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    pub(crate) create: bool,
    pub(crate) mode: LicenseMode,
    pub(crate) chunker: ChunkerParams,
    pub(crate) pack_size_limit: u64,
    pub(crate) compression_level: i32,
    pub(crate) min_free_space: u64,
    pub(crate) segmenting: bool,
    pub(crate) segment_window: usize,
    /// The I/O seam; [`StdVfs`] unless a test injects faults.
    pub(crate) vfs: Arc<dyn Vfs>,
    /// Where a new store's packs live: an object store, or (`None`) the store's `packs/`.
    #[cfg(feature = "object-store")]
    pub(crate) object_packs: Option<crate::bucket::ObjectLocation>,
    /// The metadata's PostgreSQL database (a libpq URL), shared by every node of the store;
    /// `None`: `meta.redb` in the store's directory.
    #[cfg(feature = "postgres")]
    pub(crate) postgres: Option<String>,
    /// Most connections to that database.
    #[cfg(feature = "postgres")]
    pub(crate) meta_connections: u32,
    /// The longest a put may take in a store other nodes share (`ingest_time_limit`).
    #[cfg(feature = "postgres")]
    pub(crate) ingest_time_limit: std::time::Duration,
    /// Overrides the garbage grace (twice `ingest_time_limit`) in tests.
    #[cfg(feature = "postgres")]
    pub(crate) garbage_grace: Option<std::time::Duration>,
    /// How long the maintenance lease lasts unless renewed (`lease_ttl`).
    #[cfg(feature = "postgres")]
    pub(crate) lease_ttl: std::time::Duration,
    /// Most bytes of cached pack copies, for packs in an object store.
    pub(crate) cache_bytes: u64,
    /// Bytes per ranged GET of a large object (`read_span_bytes`).
    pub(crate) read_span_bytes: u64,
    /// How long a deleted pack's object stays in the bucket (`deletion_grace`).
    pub(crate) deletion_grace: std::time::Duration,
    /// When a put into a bucket store is acknowledged (`pack_durability`).
    pub(crate) pack_durability: PackDurability,
    /// An object store client to use instead of the one the location describes (tests inject
    /// faults through it).
    #[cfg(all(feature = "object-store", feature = "test-support"))]
    pub(crate) object_client: Option<std::sync::Arc<dyn object_store::ObjectStore>>,
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
            #[cfg(feature = "object-store")]
            object_packs: None,
            #[cfg(feature = "postgres")]
            postgres: None,
            #[cfg(feature = "postgres")]
            meta_connections: 16,
            #[cfg(feature = "postgres")]
            ingest_time_limit: std::time::Duration::from_secs(3600),
            #[cfg(feature = "postgres")]
            garbage_grace: None,
            #[cfg(feature = "postgres")]
            lease_ttl: std::time::Duration::from_secs(30),
            cache_bytes: 1 << 30,
            read_span_bytes: 8 << 20,
            deletion_grace: std::time::Duration::from_secs(6 * 3600),
            pack_durability: PackDurability::Bucket,
            #[cfg(all(feature = "object-store", feature = "test-support"))]
            object_client: None,
        }
    }
}

impl Options {
    /// Create the store if the directory does not hold one (it must be empty or missing). Never
    /// applies to a directory holding a store's files without its `STORE` file: that is refused.
    /// Default: `true`.
    #[must_use]
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// License mode of a newly created store. An existing store keeps its own. Default:
    /// [`LicenseMode::PerUserCopy`].
    #[must_use]
    pub fn mode(mut self, mode: LicenseMode) -> Self {
        self.mode = mode;
        self
    }

    /// Chunker sizes of a newly created store. An existing store keeps its own. Default:
    /// [`ChunkerParams::default`].
    #[must_use]
    pub fn chunker(mut self, chunker: ChunkerParams) -> Self {
        self.chunker = chunker;
        self
    }

    /// Packs are sealed once they reach this many bytes (at least 1 MiB). Default: 64 MiB.
    #[must_use]
    pub fn pack_size_limit(mut self, bytes: u64) -> Self {
        self.pack_size_limit = bytes;
        self
    }

    /// zstd level (1 to 19) for chunks the probe finds compressible. Default: 3.
    #[must_use]
    pub fn compression_level(mut self, level: i32) -> Self {
        self.compression_level = level;
        self
    }

    /// A put is refused with `DiskFull` before it writes anything when the file system has less
    /// free space than this, so a filling disk fails puts cleanly instead of failing a metadata
    /// commit halfway (which would poison the store until it is reopened). Default: 16 MiB.
    #[must_use]
    pub fn min_free_space(mut self, bytes: u64) -> Self {
        self.min_free_space = bytes;
        self
    }

    /// Cut tags, pictures and audio apart before chunking (format-aware chunking). Default:
    /// `true`.
    #[must_use]
    pub fn segmenting(mut self, segmenting: bool) -> Self {
        self.segmenting = segmenting;
        self
    }

    /// Bytes of an upload buffered for the segmenter (at least 64 KiB); larger uploads are
    /// chunked plain. Default: 32 MiB.
    #[must_use]
    pub fn segment_window(mut self, bytes: usize) -> Self {
        self.segment_window = bytes;
        self
    }

    /// The I/O seam, for tests that inject faults; [`StdVfs`] by default.
    #[cfg(feature = "test-support")]
    #[must_use]
    pub fn vfs(mut self, vfs: Arc<dyn Vfs>) -> Self {
        self.vfs = vfs;
        self
    }

    /// Keep a new store's packs in an object store (feature `object-store`); the store's
    /// metadata remembers where, so later opens need not say it again (and may not say
    /// another place). Default: the store's own `packs/` directory.
    #[cfg(feature = "object-store")]
    #[must_use]
    pub fn object_packs(mut self, location: crate::bucket::ObjectLocation) -> Self {
        self.object_packs = Some(location);
        self
    }

    /// Keep the metadata in the PostgreSQL database at `url` (a libpq URL such as
    /// `postgres://user:password@127.0.0.1/locker`, feature `postgres`) instead of `meta.redb`.
    /// Many nodes open the same store this way, each with a directory of its own, which then
    /// holds only that node's open packs and cache (docs/DESIGN.md section 15). Creating such a
    /// store writes its schema (`ls_*` tables) into the database's first schema on the search
    /// path.
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        self.postgres = Some(url.into());
        self
    }

    /// Most connections this process keeps to the metadata's PostgreSQL database. Default: 16.
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn meta_connections(mut self, connections: u32) -> Self {
        self.meta_connections = connections.max(1);
        self
    }

    /// In a store whose metadata is in PostgreSQL: the longest a put may take, from its start
    /// to its commit; a slower one fails (`Error::IngestTooSlow`) and stores nothing. GC on
    /// any node removes a garbage entry only once it has been garbage, untouched, for twice
    /// this long, so no node's put in flight can lose an entry it deduplicated against
    /// (docs/DESIGN.md section 15). Default: one hour.
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn ingest_time_limit(mut self, limit: std::time::Duration) -> Self {
        self.ingest_time_limit = limit;
        self
    }

    /// How long an entry must have been garbage before GC may remove it, instead of twice the
    /// ingest time limit: for tests that check GC's accounting step by step, with no other
    /// node about. Breaks the protection of other nodes' puts in flight. Not a stable API.
    #[cfg(all(feature = "postgres", feature = "test-support"))]
    #[doc(hidden)]
    #[must_use]
    pub fn garbage_grace(mut self, grace: std::time::Duration) -> Self {
        self.garbage_grace = Some(grace);
        self
    }

    /// In a store whose metadata is in PostgreSQL: how long the maintenance lease (held by
    /// the one node running migration or GC) lasts unless its holder renews it, which it does
    /// every third of that; a node that dies is taken over after at most this long. Default:
    /// 30 seconds.
    #[cfg(feature = "postgres")]
    #[must_use]
    pub fn lease_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.lease_ttl = ttl.max(std::time::Duration::from_millis(300));
        self
    }

    /// Talk to this object store client instead of the one the store's location describes:
    /// for tests that inject faults into the bucket's requests, or run on a mock. Not a stable
    /// API.
    #[cfg(all(feature = "object-store", feature = "test-support"))]
    #[doc(hidden)]
    #[must_use]
    pub fn object_client(mut self, client: std::sync::Arc<dyn object_store::ObjectStore>) -> Self {
        self.object_client = Some(client);
        self
    }

    /// Most bytes of packs an object-store store keeps cached on local disk (the packs being
    /// written come on top). Default: 1 GiB.
    #[must_use]
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// For packs in an object store: bytes a read fetches from a pack not cached, from the
    /// record it needs on (one ranged GET, cut back to whole records), and again ahead of a
    /// sequential reader. Packs up to twice this size are fetched whole. Default: 8 MiB; at
    /// least 64 KiB.
    #[must_use]
    pub fn read_span_bytes(mut self, bytes: u64) -> Self {
        self.read_span_bytes = bytes.max(64 << 10);
        self
    }

    /// For packs in an object store: how long the object of a pack no metadata names any more
    /// (GC rewrote it, a migration emptied it, an upload never committed) stays in the bucket
    /// before it is deleted. It must be longer than any upload in flight and any read another
    /// process started before the change: another node may still read the old pack, or be
    /// about to commit metadata that points into its new one. Default: 6 hours. Zero deletes at
    /// once (one process on the bucket, and tests). Needs the machines' clocks to agree with
    /// the bucket's within a small part of it.
    #[must_use]
    pub fn deletion_grace(mut self, grace: std::time::Duration) -> Self {
        self.deletion_grace = grace;
        self
    }

    /// For packs in an object store: when a write is acknowledged (see [`PackDurability`]).
    /// Chosen per open, not kept in the store.
    #[must_use]
    pub fn pack_durability(mut self, durability: PackDurability) -> Self {
        self.pack_durability = durability;
        self
    }

    /// The license mode a newly created store gets.
    pub fn get_mode(&self) -> LicenseMode {
        self.mode
    }

    /// The chunker sizes a newly created store gets.
    pub fn get_chunker(&self) -> ChunkerParams {
        self.chunker
    }

    /// Bytes of an upload buffered for the segmenter.
    pub fn get_segment_window(&self) -> usize {
        self.segment_window
    }
}

/// When a write to a store whose packs live in an object store is acknowledged, and what a
/// crash or the loss of the node's disk can take. Local stores ignore it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackDurability {
    /// A put (delete, GC step, migration step) returns once its new packs and its metadata
    /// journal entry are in the bucket, then the node's metadata. Survives the loss of the
    /// node's disk: the bucket alone rebuilds every acknowledged write. Costs the PUTs' round
    /// trips in every write.
    #[default]
    Bucket,
    /// Returns once its packs and metadata are fsynced on the node's disk; a thread of the
    /// store's own uploads them behind, in commit order (`Stats::upload_backlog_bytes` shows
    /// what waits). Survives kill -9 and power loss like a local store, and the next open
    /// uploads what was left. Losing the node's disk loses the acknowledged writes not yet
    /// uploaded: a rebuild then gives the store as of the last uploaded commit (always a
    /// consistent state, never a mix). Dropping the store waits for the backlog while uploads
    /// make progress.
    LocalDisk,
}
