//! Opening a store: the directory lock, telling a store from a directory that lost its `STORE`,
//! creation, crash recovery of the packs, and the repair of a lost `STORE`.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use crate::chunk::{Chunker, ChunkerParams};
use crate::engine::space::Space;
use crate::engine::{Engine, Parts};
use crate::error::{Error, Result};
use crate::format::{META_FORMAT_VERSION, STORE_FORMAT_VERSION, StoreFile};
use crate::index::filter::ChunkFilter;
use crate::index::{MetaStore, RedbMeta, counter_keys as ck, state_keys as sk, write_with};
use crate::pack::local::LocalPacks;
use crate::pack::storage::PackStorage;
use crate::pack::{PackIds, Packs, RecoveryReport};
use crate::policy::Policy;
use crate::random::random_bytes;
use crate::vfs::Vfs;
use crate::write::Writer;

use super::Options;

const STORE_FILE: &str = "STORE";
const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "meta.redb";
/// The metadata of a store being created, renamed to `meta.redb` once complete.
const META_TMP: &str = "meta.redb.tmp";
const STORE_TMP: &str = "STORE.tmp";
const PACK_DIR: &str = "packs";
/// Logs of commits waiting for their upload (`PackDurability::LocalDisk`).
#[cfg(feature = "object-store")]
const OUTBOX_DIR: &str = "outbox";

/// An opened store's parts, for the façade.
pub(crate) struct Opened {
    pub(crate) engine: Engine,
    pub(crate) writer: Writer,
    pub(crate) recovery: RecoveryReport,
    pub(crate) is_new: bool,
}

/// What [`crate::Store::repair_store_file`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreFileRepair {
    /// `STORE` was missing, damaged or named another store; it was rewritten from the copy in
    /// the metadata.
    Rewritten,
    /// `STORE` already matched the copy in the metadata; nothing was written.
    Intact,
}

/// What the store directory holds, as far as open is concerned (see `classify`).
enum Layout {
    /// Nothing but what creation writes before `STORE`: open may create the store.
    Empty,
    /// `STORE`, but neither `meta.redb` nor any pack: a creation stopped after writing `STORE`.
    /// Nothing of it was ever acknowledged, so open may finish it.
    Interrupted(StoreFile),
    /// `STORE` and `meta.redb`: a store.
    Store(StoreFile),
}

/// Opens, creates or finishes creating the store in `dir`, recovering from a crash (see
/// `Store::open`).
pub(crate) fn open(dir: impl AsRef<Path>, options: Options) -> Result<Opened> {
    let dir = dir.as_ref().to_owned();
    options.chunker.validate()?;
    if options.pack_size_limit < 1 << 20 {
        return Err(Error::InvalidOptions(
            "pack_size_limit must be at least 1 MiB".into(),
        ));
    }
    if options.segment_window < 64 << 10 {
        return Err(Error::InvalidOptions(
            "segment_window must be at least 64 KiB".into(),
        ));
    }
    if !(1..=19).contains(&options.compression_level) {
        return Err(Error::InvalidOptions(
            "compression_level must be 1..=19".into(),
        ));
    }
    #[cfg(feature = "postgres")]
    if let Some(url) = options.postgres.clone() {
        return open_postgres(dir, options, &url);
    }
    let vfs = options.vfs.clone();
    if !vfs.exists(&dir) {
        if !options.create {
            return Err(Error::NoStore(dir));
        }
        create_dir_durably(vfs.as_ref(), &dir)?;
    }
    // The store directory itself is locked, not a name in it: an operator removing `LOCK`
    // (or any other file) cannot let a second process in. Everything below runs under it.
    let dir_lock = vfs
        .try_lock(&dir)
        .map_err(|e| Error::io("lock", &dir, e))?
        .ok_or_else(|| Error::Locked(dir.clone()))?;
    // Builds before the directory lock locked only `LOCK` (and, creating a store, wrote
    // `meta.redb` before `STORE`): taking it too keeps them out. An existing `LOCK` is taken
    // before the directory is read, so one of them halfway through creating a store is
    // `Locked`, not a store that lost its `STORE`; a missing one is created only once the
    // directory is known to be (or to become) a store.
    let lock_path = dir.join(LOCK_FILE);
    let take_file_lock = || {
        vfs.try_lock(&lock_path)
            .map_err(|e| Error::io("lock", &lock_path, e))?
            .ok_or_else(|| Error::Locked(dir.clone()))
    };
    let early_lock = if vfs.exists(&lock_path) {
        Some(take_file_lock()?)
    } else {
        None
    };
    if vfs.exists(&dir.join(NODE_FILE)) {
        return Err(Error::InvalidOptions(format!(
            "{} is a node directory of a store whose metadata is in PostgreSQL: open it with \
             the database's URL (`--meta`, Options::postgres)",
            dir.display()
        )));
    }
    let layout = classify(vfs.as_ref(), &dir)?;
    if !options.create && !matches!(layout, Layout::Store(_)) {
        return Err(Error::NoStore(dir));
    }
    let file_lock = match early_lock {
        Some(l) => l,
        None => take_file_lock()?,
    };
    let lock: Box<dyn Send + Sync + Debug> = Box::new((dir_lock, file_lock));
    let is_new = !matches!(layout, Layout::Store(_));
    let store_file = match layout {
        Layout::Store(f) => {
            // `meta.redb` may have been renamed into place by a creation that crashed before
            // syncing the directory: make it durable before acknowledging anything.
            vfs.sync_dir(&dir).map_err(|e| Error::io("sync", &dir, e))?;
            f
        }
        Layout::Interrupted(f) => {
            claim_bucket(&options, &f)?;
            create_metadata(vfs.as_ref(), &dir, &f, &options)?;
            f
        }
        Layout::Empty => {
            let f = StoreFile {
                version: STORE_FORMAT_VERSION,
                store_id: random_bytes("the store id")?,
            };
            // The bucket first: a refused location leaves no half-made store behind.
            claim_bucket(&options, &f)?;
            write_store_file(vfs.as_ref(), &dir, &f)?;
            create_metadata(vfs.as_ref(), &dir, &f, &options)?;
            f
        }
    };
    let meta_path = dir.join(META_FILE);
    if !vfs.exists(&meta_path) {
        return Err(Error::corrupted("meta.redb is missing"));
    }
    let meta = RedbMeta::open(vfs.as_ref(), &meta_path, false)?;
    let id = identity(meta.read()?.as_ref(), &meta_path.display().to_string())?;
    if id
        .store_file
        .as_deref()
        .is_some_and(|c| c != store_file.encode().as_slice())
    {
        return Err(Error::corrupted(format!(
            "STORE names another store than the copy of it in meta.redb (a STORE file from \
             another store?); if meta.redb is this store's, `lockerstore --store {} repair` \
             rewrites STORE from it",
            dir.display()
        )));
    }
    if id.store_file.is_none() {
        // A store created before the metadata kept a copy of STORE: keep one from now on,
        // so a lost STORE can be rebuilt (`repair_store_file`).
        write_with(&meta, |w| w.set_state(sk::STORE_FILE, &store_file.encode()))?;
    }
    // The packs' home first: a bucket's journal may bring the metadata up to date.
    let pack_dir = dir.join(PACK_DIR);
    let (storage, meta) = pack_storage(
        &options,
        &pack_dir,
        id.object_packs.as_deref(),
        &store_file,
        meta,
    )?;
    finish_open(
        Located {
            dir,
            lock,
            is_new,
            store_file,
            meta,
            storage,
            shared: false,
        },
        id,
        options,
    )
}

/// The node directory's file naming the store it belongs to (the 48 bytes of `STORE`), for
/// stores whose metadata is in PostgreSQL. Known to every build, so none mistakes a node
/// directory for a store that lost its `STORE`.
const NODE_FILE: &str = "NODE";
#[cfg(feature = "postgres")]
const NODE_TMP: &str = "NODE.tmp";

/// Opens (or creates) a store whose metadata is in PostgreSQL: `dir` is this node's own
/// directory (created when missing, locked while open), holding this node's open packs and
/// cache and a `NODE` file naming the store (docs/DESIGN.md section 15).
#[cfg(feature = "postgres")]
fn open_postgres(dir: std::path::PathBuf, options: Options, url: &str) -> Result<Opened> {
    use crate::index::postgres::PgMeta;
    let vfs = options.vfs.clone();
    if matches!(
        options.pack_durability,
        crate::store::PackDurability::LocalDisk
    ) {
        return Err(Error::InvalidOptions(
            "local-disk pack durability keeps commits on one node's disk: a store whose \
             metadata is in PostgreSQL needs bucket durability"
                .into(),
        ));
    }
    if !vfs.exists(&dir) {
        create_dir_durably(vfs.as_ref(), &dir)?;
    }
    let dir_lock = vfs
        .try_lock(&dir)
        .map_err(|e| Error::io("lock", &dir, e))?
        .ok_or_else(|| Error::Locked(dir.clone()))?;
    let timing = crate::index::postgres::Timing {
        garbage_grace: options.garbage_grace.unwrap_or(
            options
                .ingest_time_limit
                .saturating_mul(crate::engine::GRACE_LIMITS),
        ),
        lease_ttl: options.lease_ttl,
        statement_timeout: options.ingest_time_limit,
    };
    let (meta, _) = PgMeta::connect(url, options.meta_connections, options.create, timing)?;
    let place = meta.place().to_owned();
    let decode = |b: &[u8]| -> Result<StoreFile> {
        StoreFile::decode(b)?.map_err(|found| Error::UnsupportedVersion {
            path: place.clone().into(),
            found,
            supported: STORE_FORMAT_VERSION,
        })
    };
    let existing = meta.read()?.state(sk::STORE_FILE)?;
    let (store_file, is_new) = match existing {
        Some(b) => (decode(&b)?, false),
        None if options.create => {
            let f = StoreFile {
                version: STORE_FORMAT_VERSION,
                store_id: random_bytes("the store id")?,
            };
            // The bucket first: a refused location leaves no half-made store behind.
            claim_bucket(&options, &f)?;
            let seed = u64::from_le_bytes(random_bytes("the chunker seed")?);
            // One transaction; a node that lost a race to create the store uses the winner's.
            let created = write_with(&meta, |w| {
                if w.state(sk::STORE_FILE)?.is_some() {
                    return Ok(false);
                }
                initial_state(w, &f, seed, &options)?;
                Ok(true)
            })?;
            if created {
                (f, true)
            } else {
                let b = meta.read()?.state(sk::STORE_FILE)?.ok_or_else(|| {
                    Error::corrupted("the store's STORE copy vanished from the metadata")
                })?;
                (decode(&b)?, false)
            }
        }
        None => return Err(Error::NoStore(place.clone().into())),
    };
    // The node directory belongs to one store: another store's leftovers are never mixed in.
    let node = dir.join(NODE_FILE);
    if vfs.exists(&node) {
        let bytes = vfs.read(&node).map_err(|e| Error::io("read", &node, e))?;
        if bytes.as_slice() != store_file.encode().as_slice() {
            return Err(Error::InvalidOptions(format!(
                "{} belongs to another store than the one in {place}",
                dir.display()
            )));
        }
    } else {
        write_identity_file(vfs.as_ref(), &dir, &store_file, NODE_FILE, NODE_TMP)?;
    }
    let id = identity(meta.read()?.as_ref(), &place)?;
    let pack_dir = dir.join(PACK_DIR);
    vfs.create_dir_all(&pack_dir)
        .map_err(|e| Error::io("create", &pack_dir, e))?;
    let storage: Box<dyn PackStorage> = match &id.object_packs {
        #[cfg(feature = "object-store")]
        Some(kept) => {
            let location = crate::bucket::ObjectLocation::decode(kept)?;
            if let Some(asked) = &options.object_packs
                && asked.url != location.url
            {
                return Err(Error::InvalidOptions(format!(
                    "this store's packs live at {}, not at {}",
                    location.url, asked.url
                )));
            }
            let bucket = Arc::new(connect(&options, &location)?);
            bucket.claim(&store_file.encode(), false)?;
            Box::new(crate::pack::object::ObjectPacks::new(
                vfs.clone(),
                pack_dir,
                bucket,
                options.cache_bytes,
                options.read_span_bytes,
                options.deletion_grace,
                None,
            )?)
        }
        #[cfg(not(feature = "object-store"))]
        Some(_) => {
            return Err(Error::InvalidOptions(
                "this store's packs live in an object store: this build lacks the \
                 `object-store` feature"
                    .into(),
            ));
        }
        None => {
            #[cfg(feature = "object-store")]
            if let Some(asked) = &options.object_packs {
                return Err(Error::InvalidOptions(format!(
                    "this store's packs live in its node directory, not at {}",
                    asked.url
                )));
            }
            Box::new(LocalPacks::new(vfs.clone(), pack_dir))
        }
    };
    finish_open(
        Located {
            dir,
            lock: Box::new(dir_lock),
            is_new,
            store_file,
            meta: Box::new(meta),
            storage,
            shared: true,
        },
        id,
        options,
    )
}

/// Pack ids for a node of a shared store: reserved in blocks from `next_pack_id`, each block
/// in a transaction of its own, so no two nodes are ever given the same id.
fn reserve_pack_ids(meta: &dyn MetaStore, max_age: std::time::Duration) -> Result<PackIds> {
    let meta = meta.handle().ok_or_else(|| {
        Error::InvalidOptions("this metadata cannot be shared between processes".into())
    })?;
    Ok(PackIds::Shared {
        reserve: Box::new(move |n| {
            write_with(meta.as_ref(), |w| {
                let first = w.counter(ck::NEXT_PACK_ID)?;
                w.set_counter(ck::NEXT_PACK_ID, first + n)?;
                Ok(first)
            })
        }),
        max_age,
    })
}

/// The longest a put may take: limited only in a store other processes share.
fn ingest_time_limit(options: &Options, shared: bool) -> Option<std::time::Duration> {
    #[cfg(feature = "postgres")]
    if shared {
        return Some(options.ingest_time_limit);
    }
    let _ = (options, shared);
    None
}

/// Creates `dir` and makes its entry durable in its parent (it must survive a power cut too).
fn create_dir_durably(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    vfs.create_dir_all(dir)
        .map_err(|e| Error::io("create", dir, e))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    vfs.sync_dir(parent)
        .map_err(|e| Error::io("sync", parent, e))
}

/// The state rows and counters of a new store's metadata.
fn initial_state(
    w: &mut dyn crate::index::MetaWrite,
    store_file: &StoreFile,
    seed: u64,
    options: &Options,
) -> Result<()> {
    w.set_state(sk::FORMAT, &META_FORMAT_VERSION.to_le_bytes())?;
    w.set_state(sk::MODE, &[options.mode.to_byte()])?;
    w.set_state(sk::SEED, &seed.to_le_bytes())?;
    w.set_state(sk::CHUNKER, &options.chunker.encode())?;
    w.set_state(sk::STORE_FILE, &store_file.encode())?;
    #[cfg(feature = "object-store")]
    if let Some(location) = &options.object_packs {
        w.set_state(sk::OBJECT_PACKS, &location.encode())?;
    }
    w.set_counter(ck::NEXT_USER_NO, 1)
}

/// What open found: the store, its metadata and its packs' home.
struct Located {
    dir: std::path::PathBuf,
    lock: Box<dyn Send + Sync + Debug>,
    is_new: bool,
    store_file: StoreFile,
    meta: Box<dyn MetaStore>,
    storage: Box<dyn PackStorage>,
    /// Other processes write the same metadata (PostgreSQL).
    shared: bool,
}

/// The state rows that say what a store is, read and checked.
struct Identity {
    format: u32,
    seed: u64,
    params: ChunkerParams,
    /// The copy of `STORE` the metadata keeps (absent in stores made before it did).
    store_file: Option<Vec<u8>>,
    /// Where the packs live, when in an object store.
    object_packs: Option<Vec<u8>>,
}

fn identity(snap: &dyn crate::index::MetaRead, place: &str) -> Result<Identity> {
    let get = |key: &str| -> Result<Vec<u8>> {
        snap.state(key)?
            .ok_or_else(|| Error::corrupted(format!("metadata state {key} is missing")))
    };
    let format = get(sk::FORMAT)?;
    let format = u32::from_le_bytes(
        format
            .as_slice()
            .try_into()
            .map_err(|_| Error::corrupted("metadata format version"))?,
    );
    // Format 1 lacks rights holders and licences per holder; its data is format 2's with none.
    if format != META_FORMAT_VERSION && format != 1 {
        return Err(Error::UnsupportedVersion {
            path: place.into(),
            found: format,
            supported: META_FORMAT_VERSION,
        });
    }
    let seed = get(sk::SEED)?;
    let seed = u64::from_le_bytes(
        seed.as_slice()
            .try_into()
            .map_err(|_| Error::corrupted("metadata chunker seed"))?,
    );
    let params = ChunkerParams::decode(&get(sk::CHUNKER)?)?;
    Ok(Identity {
        format,
        seed,
        params,
        store_file: snap.state(sk::STORE_FILE)?,
        object_packs: snap.state(sk::OBJECT_PACKS)?,
    })
}

/// The rest of open, whatever holds the metadata: the format upgrade, the policy, the chunk
/// filter, the packs' recovery and the engine.
fn finish_open(at: Located, id: Identity, options: Options) -> Result<Opened> {
    let Located {
        dir,
        lock,
        is_new,
        store_file,
        meta,
        storage,
        shared,
    } = at;
    let vfs = options.vfs.clone();
    let pack_dir = dir.join(PACK_DIR);
    if id.format < META_FORMAT_VERSION {
        // Upgraded at once (and journaled, with packs in a bucket), so a build that knows only
        // format 1 refuses the store instead of ignoring its licences.
        write_with(meta.as_ref(), |w| {
            w.set_state(sk::FORMAT, &META_FORMAT_VERSION.to_le_bytes())
        })?;
    }
    let snap = meta.read()?;
    let (licences, policy_version) = crate::policy::stored(snap.as_ref())?;
    let rows = snap.packs()?;
    let snap_counters = (
        snap.counter(ck::LIVE_CHUNKS)?,
        snap.counter(ck::GARBAGE_CHUNKS)?,
    );
    let next_pack_id = snap.counter(ck::NEXT_PACK_ID)?;
    drop(snap);
    let store_tag = u64::from_le_bytes(store_file.store_id[..8].try_into().expect("8 bytes"));
    let filter = if shared {
        // Other nodes write entries this one never sees: every key needs a lookup.
        Arc::new(ChunkFilter::everything())
    } else {
        // The filter of stored chunk keys: watched before it is filled, so no key is missed.
        let filter = Arc::new(ChunkFilter::for_entries(
            snap_counters.0.saturating_add(snap_counters.1),
        ));
        meta.watch_chunks(filter.clone());
        meta.read()?.for_each_chunk(&mut |domain, id, _| {
            filter.insert(domain, &id);
            Ok(())
        })?;
        filter
    };
    let ids = if shared {
        reserve_pack_ids(
            meta.as_ref(),
            ingest_time_limit(&options, shared).unwrap_or_default(),
        )?
    } else {
        PackIds::Local
    };
    let (packs, recovery) = Packs::open(
        storage,
        store_tag,
        options.pack_size_limit,
        &rows,
        next_pack_id,
        ids,
    )?;
    let engine = Engine::new(Parts {
        space: Space::new(vfs.clone(), dir.clone(), pack_dir, options.min_free_space),
        dir,
        meta,
        filter,
        packs,
        chunker: Chunker {
            params: id.params,
            seed: id.seed,
        },
        policy: Policy::new(licences, policy_version),
        lock,
        ingest_time_limit: ingest_time_limit(&options, shared),
    });
    engine.space().restore_ballast()?;
    Ok(Opened {
        engine,
        writer: Writer::new(
            options.compression_level,
            options.segmenting,
            options.segment_window,
        ),
        recovery,
        is_new,
    })
}

/// A store being created on an object store claims its prefix first (section 13.1 of
/// DESIGN.md): nothing else lives there.
fn claim_bucket(options: &Options, store_file: &StoreFile) -> Result<()> {
    #[cfg(feature = "object-store")]
    if let Some(location) = &options.object_packs {
        return connect(options, location)?.claim(&store_file.encode(), true);
    }
    let _ = (options, store_file);
    Ok(())
}

/// A client for the bucket at `location` (or the test's, when one is given).
#[cfg(feature = "object-store")]
fn connect(
    options: &Options,
    location: &crate::bucket::ObjectLocation,
) -> Result<crate::bucket::Bucket> {
    #[cfg(feature = "test-support")]
    let client = options.object_client.clone();
    #[cfg(not(feature = "test-support"))]
    let client = {
        let _ = options;
        None
    };
    crate::bucket::Bucket::connect(location, client)
}

/// Where this store's packs live (the object store its metadata names, or `packs/`), and its
/// metadata: for packs in a bucket, journaled there (`index/journal.rs`), once the bucket's
/// journal is settled against it.
fn pack_storage(
    options: &Options,
    pack_dir: &Path,
    object_packs: Option<&[u8]>,
    store_file: &StoreFile,
    meta: RedbMeta,
) -> Result<(Box<dyn PackStorage>, Box<dyn MetaStore>)> {
    let vfs = options.vfs.clone();
    #[cfg(feature = "object-store")]
    {
        use crate::bucket::ObjectLocation;
        use crate::bucket::outbox::Outbox;
        use crate::index::journal::{Journal, JournaledMeta, Staging, drain_outbox, journal_seq};
        use crate::pack::object::ObjectPacks;
        use crate::store::PackDurability;
        let kept = object_packs.map(ObjectLocation::decode).transpose()?;
        if let (Some(asked), kept) = (&options.object_packs, &kept)
            && kept.as_ref().map(|k| &k.url) != Some(&asked.url)
        {
            return Err(Error::InvalidOptions(format!(
                "this store's packs live {}, not at {}",
                kept.as_ref().map_or_else(
                    || "in its packs/ directory".to_owned(),
                    |k| format!("at {}", k.url)
                ),
                asked.url
            )));
        }
        if let Some(location) = kept {
            let bucket = Arc::new(connect(options, &location)?);
            bucket.claim(&store_file.encode(), false)?;
            let meta: Arc<dyn MetaStore> = Arc::new(meta);
            let local = journal_seq(meta.read()?.as_ref())?;
            // What an earlier run's staged uploads left goes up first, in commit order.
            let outbox_dir = pack_dir
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join(OUTBOX_DIR);
            drain_outbox(
                vfs.as_ref(),
                &outbox_dir,
                pack_dir,
                &bucket,
                &store_file.store_id,
                local,
            )?;
            let outbox = match options.pack_durability {
                PackDurability::Bucket => None,
                PackDurability::LocalDisk => {
                    vfs.create_dir_all(&outbox_dir)
                        .map_err(|e| Error::io("create", &outbox_dir, e))?;
                    Some(Arc::new(Outbox::start(bucket.clone(), vfs.clone())))
                }
            };
            let staging = outbox.clone().map(|outbox| Staging {
                vfs: vfs.clone(),
                dir: outbox_dir.clone(),
                outbox,
            });
            let journal = Arc::new(Journal::new(bucket.clone(), store_file.store_id, staging));
            journal.reconcile(meta.as_ref(), local)?;
            let storage = ObjectPacks::new(
                vfs,
                pack_dir.to_owned(),
                bucket,
                options.cache_bytes,
                options.read_span_bytes,
                options.deletion_grace,
                outbox,
            )?;
            return Ok((
                Box::new(storage),
                Box::new(JournaledMeta::new(meta, journal)),
            ));
        }
    }
    #[cfg(not(feature = "object-store"))]
    let _ = store_file;
    #[cfg(not(feature = "object-store"))]
    if object_packs.is_some() {
        return Err(Error::InvalidOptions(
            "this store's packs live in an object store: this build lacks the `object-store` \
             feature"
                .into(),
        ));
    }
    Ok((
        Box::new(LocalPacks::new(vfs, pack_dir.to_owned())),
        Box::new(meta),
    ))
}

/// Recreates the metadata of the store in `options.object_packs`'s bucket in `dir` (see
/// `Store::rebuild`): replayed into `meta.redb.tmp`, then `STORE` written, then the rename
/// that makes it a store. A rebuild cut short leaves only what a new one may remove.
#[cfg(feature = "object-store")]
pub(crate) fn rebuild(
    dir: &Path,
    options: &Options,
) -> Result<crate::index::journal::RebuildReport> {
    use crate::index::journal::{Journal, replay};
    let location = options.object_packs.as_ref().ok_or_else(|| {
        Error::InvalidOptions(
            "a rebuild needs the bucket's location (Options::object_packs)".into(),
        )
    })?;
    let vfs = options.vfs.as_ref();
    if !vfs.exists(dir) {
        create_dir_durably(vfs, dir)?;
    }
    let _dir_lock = vfs
        .try_lock(dir)
        .map_err(|e| Error::io("lock", dir, e))?
        .ok_or_else(|| Error::Locked(dir.to_owned()))?;
    let lock_path = dir.join(LOCK_FILE);
    let _file_lock = vfs
        .try_lock(&lock_path)
        .map_err(|e| Error::io("lock", &lock_path, e))?
        .ok_or_else(|| Error::Locked(dir.to_owned()))?;
    let bucket = Arc::new(connect(options, location)?);
    let stored = bucket.store_file()?.ok_or_else(|| {
        Error::InvalidOptions(format!(
            "{} holds no store (it has no STORE object)",
            location.url
        ))
    })?;
    let store_file = match StoreFile::decode(&stored) {
        Ok(Ok(f)) => f,
        Ok(Err(found)) => {
            return Err(Error::UnsupportedVersion {
                path: format!("{}/STORE", location.url).into(),
                found,
                supported: STORE_FORMAT_VERSION,
            });
        }
        Err(e) => return Err(e),
    };
    let pack_dir = dir.join(PACK_DIR);
    for name in vfs.list_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let leftover = match name.as_str() {
            LOCK_FILE | STORE_TMP | META_TMP => true,
            STORE_FILE => vfs.read(&dir.join(STORE_FILE)).ok().as_deref() == Some(&stored[..]),
            PACK_DIR => vfs.list_dir(&pack_dir).is_ok_and(|n| n.is_empty()),
            _ => false,
        };
        if !leftover {
            return Err(Error::InvalidOptions(format!(
                "a rebuild needs an empty directory, and {} holds {name}",
                dir.display()
            )));
        }
    }
    vfs.create_dir_all(&pack_dir)
        .map_err(|e| Error::io("create", &pack_dir, e))?;
    let tmp = dir.join(META_TMP);
    if vfs.exists(&tmp) {
        vfs.remove_file(&tmp)
            .map_err(|e| Error::io("remove", &tmp, e))?;
    }
    let meta = RedbMeta::open(vfs, &tmp, true)?;
    let journal = Journal::new(bucket, store_file.store_id, None);
    let report = replay(&journal, &meta)?;
    write_with(&meta, |w| w.set_state(sk::OBJECT_PACKS, &location.encode()))?;
    drop(meta);
    vfs.sync_dir(dir).map_err(|e| Error::io("sync", dir, e))?;
    write_store_file(vfs, dir, &store_file)?;
    vfs.rename(&tmp, &dir.join(META_FILE))
        .map_err(|e| Error::io("rename", &tmp, e))?;
    vfs.sync_dir(dir).map_err(|e| Error::io("sync", dir, e))?;
    Ok(report)
}

/// Tells what `dir` holds. Creation writes `STORE` first and renames a complete
/// `meta.redb` into place last, so metadata or packs without a valid `STORE` are never what
/// a creation left: that is a damaged store, refused with `StoreFileLost`, never recreated.
fn classify(vfs: &dyn Vfs, dir: &Path) -> Result<Layout> {
    let names = vfs.list_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let data: Vec<String> = names
        .iter()
        .filter(|n| [META_FILE, META_TMP, PACK_DIR].contains(&n.as_str()))
        .cloned()
        .collect();
    let lost = |problem: String| Error::StoreFileLost {
        dir: dir.to_owned(),
        problem,
        present: data.clone(),
    };
    let store_path = dir.join(STORE_FILE);
    if !names.iter().any(|n| n == STORE_FILE) {
        if !data.is_empty() {
            return Err(lost("missing".into()));
        }
        if names.iter().any(|n| n != LOCK_FILE && n != STORE_TMP) {
            return Err(Error::NotAStore(dir.to_owned()));
        }
        return Ok(Layout::Empty);
    }
    let bytes = vfs
        .read(&store_path)
        .map_err(|e| Error::io("read", &store_path, e))?;
    let file = match StoreFile::decode(&bytes) {
        Ok(Ok(f)) => f,
        Ok(Err(found)) => {
            return Err(Error::UnsupportedVersion {
                path: store_path,
                found,
                supported: STORE_FORMAT_VERSION,
            });
        }
        Err(e) if !data.is_empty() => return Err(lost(format!("unreadable ({e})"))),
        Err(_) if !bytes.starts_with(&crate::format::STORE_MAGIC) => {
            return Err(Error::NotAStore(dir.to_owned()));
        }
        Err(e) => return Err(e),
    };
    if names.iter().any(|n| n == META_FILE) {
        return Ok(Layout::Store(file));
    }
    let pack_dir = dir.join(PACK_DIR);
    let packs = if names.iter().any(|n| n == PACK_DIR) {
        vfs.list_dir(&pack_dir)
            .map_err(|e| Error::io("list", &pack_dir, e))?
    } else {
        Vec::new()
    };
    if !packs.is_empty() {
        // Creation never writes into packs/: this store lost its metadata.
        return Err(Error::corrupted(format!(
            "meta.redb is missing, but packs/ holds {} files: the store's metadata is lost",
            packs.len()
        )));
    }
    Ok(Layout::Interrupted(file))
}

/// Creates the metadata of a new store whose `STORE` file is durable, as `meta.redb.tmp`,
/// and renames it to `meta.redb` once complete: the rename marks the creation finished.
fn create_metadata(
    vfs: &dyn Vfs,
    dir: &Path,
    store_file: &StoreFile,
    options: &Options,
) -> Result<()> {
    let pack_dir = dir.join(PACK_DIR);
    vfs.create_dir_all(&pack_dir)
        .map_err(|e| Error::io("create", &pack_dir, e))?;
    // packs/ must be a durable entry before meta.redb can name a finished store.
    vfs.sync_dir(dir).map_err(|e| Error::io("sync", dir, e))?;
    let tmp = dir.join(META_TMP);
    if vfs.exists(&tmp) {
        vfs.remove_file(&tmp)
            .map_err(|e| Error::io("remove", &tmp, e))?;
    }
    let seed = u64::from_le_bytes(random_bytes("the chunker seed")?);
    let meta = RedbMeta::open(vfs, &tmp, true)?;
    write_with(&meta, |w| initial_state(w, store_file, seed, options))?;
    drop(meta);
    let target = dir.join(META_FILE);
    vfs.rename(&tmp, &target)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    vfs.sync_dir(dir).map_err(|e| Error::io("sync", dir, e))
}

/// Rewrites `STORE` from the copy in the metadata (see `Store::repair_store_file`).
pub(crate) fn repair_store_file(
    dir: impl AsRef<Path>,
    options: Options,
) -> Result<StoreFileRepair> {
    let dir = dir.as_ref();
    let vfs = options.vfs.as_ref();
    if !vfs.exists(dir) {
        return Err(Error::NoStore(dir.to_owned()));
    }
    let _dir_lock = vfs
        .try_lock(dir)
        .map_err(|e| Error::io("lock", dir, e))?
        .ok_or_else(|| Error::Locked(dir.to_owned()))?;
    let meta_path = dir.join(META_FILE);
    if !vfs.exists(&meta_path) {
        return Err(Error::NoStore(dir.to_owned()));
    }
    let _file_lock = vfs
        .try_lock(&dir.join(LOCK_FILE))
        .map_err(|e| Error::io("lock", dir.join(LOCK_FILE), e))?
        .ok_or_else(|| Error::Locked(dir.to_owned()))?;
    let meta = RedbMeta::open(vfs, &meta_path, false)?;
    let copy = meta.read()?.state(sk::STORE_FILE)?.ok_or_else(|| {
        Error::Metadata(format!(
            "{} holds no copy of the STORE file (the store was created by an earlier build \
             and never opened by this one), so STORE cannot be rebuilt from it",
            meta_path.display()
        ))
    })?;
    drop(meta);
    let file = match StoreFile::decode(&copy)? {
        Ok(f) => f,
        Err(found) => {
            return Err(Error::UnsupportedVersion {
                path: meta_path,
                found,
                supported: STORE_FORMAT_VERSION,
            });
        }
    };
    let store_path = dir.join(STORE_FILE);
    if vfs.exists(&store_path) {
        let bytes = vfs
            .read(&store_path)
            .map_err(|e| Error::io("read", &store_path, e))?;
        if bytes == file.encode() {
            return Ok(StoreFileRepair::Intact);
        }
        if let Ok(Err(found)) = StoreFile::decode(&bytes) {
            return Err(Error::UnsupportedVersion {
                path: store_path,
                found,
                supported: STORE_FORMAT_VERSION,
            });
        }
    }
    write_store_file(vfs, dir, &file)?;
    Ok(StoreFileRepair::Rewritten)
}

/// Writes `STORE` atomically and durably: `STORE.tmp` (truncated, written, fdatasynced), renamed
/// to `STORE`, then the directory fsynced.
fn write_store_file(vfs: &dyn Vfs, dir: &Path, file: &StoreFile) -> Result<()> {
    write_identity_file(vfs, dir, file, STORE_FILE, STORE_TMP)
}

/// Writes the 48 bytes of `file` as `dir/name` through `dir/tmp`, durably.
fn write_identity_file(
    vfs: &dyn Vfs,
    dir: &Path,
    file: &StoreFile,
    name: &str,
    tmp: &str,
) -> Result<()> {
    let tmp = dir.join(tmp);
    let target = dir.join(name);
    let f = vfs
        .open_rw(&tmp, true)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.set_len(0)
        .and_then(|()| f.write_all_at(&file.encode(), 0))
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(f);
    vfs.rename(&tmp, &target)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    vfs.sync_dir(dir).map_err(|e| Error::io("sync", dir, e))
}
