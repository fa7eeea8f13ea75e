//! The store: opening and recovery, the license mode, listing, deleting and accounting.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::chunk::{Chunker, ChunkerParams};
use crate::error::{Error, Result};
use crate::format::{STORE_FORMAT_VERSION, StoreFile, TrackRecord};
use crate::ids::{
    AudioFingerprint, ChunkId, Domain, Fingerprint, LicenseMode, TrackKey, UserId, UserNo,
    random_bytes,
};
use crate::index::filter::ChunkFilter;
use crate::index::refs::{Accounting, unlink_track};
use crate::index::{
    MetaRead, MetaStore, RedbMeta, counter_keys as ck, state_keys as sk, write_with,
};
use crate::pack::{Packs, RecoveryReport};
use crate::vfs::Vfs;

const STORE_FILE: &str = "STORE";
const LOCK_FILE: &str = "LOCK";
const META_FILE: &str = "meta.redb";
/// The metadata of a store being created, renamed to `meta.redb` once complete.
const META_TMP: &str = "meta.redb.tmp";
const STORE_TMP: &str = "STORE.tmp";
const PACK_DIR: &str = "packs";

mod options;

pub use options::Options;

/// Facts about one stored track.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackInfo {
    /// The track's key.
    pub key: TrackKey,
    /// Length in bytes.
    pub size: u64,
    /// BLAKE3 of the bytes.
    pub fingerprint: Fingerprint,
    /// Number of chunks.
    pub chunks: u64,
    /// Seconds since the Unix epoch when it was stored.
    pub stored_at: u64,
    /// Container format the segmenter recognised (`"mp3"`, `"flac"`, `"mp4"`, `"ogg-vorbis"`,
    /// `"ogg-opus"`), or `"unknown"`.
    pub format: &'static str,
    /// BLAKE3 of the audio payload alone, when the format was recognised.
    pub audio_fingerprint: Option<AudioFingerprint>,
    /// Bytes of audio payload.
    pub audio_len: u64,
}

/// Per-user accounting.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserStats {
    /// The user.
    pub user: String,
    /// Bytes the user uploaded and still holds (the quota basis).
    pub logical_bytes: u64,
    /// Tracks the user holds.
    pub tracks: u64,
}

/// Store-wide accounting, kept exact by every commit (verify recounts it).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The license mode.
    pub mode: LicenseMode,
    /// Users holding at least one track.
    pub users: u64,
    /// Tracks in all lockers.
    pub tracks: u64,
    /// Bytes users uploaded and hold.
    pub logical_bytes: u64,
    /// Bytes of chunk records (header and stored bytes) that committed tracks reference.
    pub physical_bytes: u64,
    /// Bytes of chunk records no track references (reclaimed by GC).
    pub garbage_bytes: u64,
    /// Live chunk records.
    pub chunks: u64,
    /// Distinct recordings (audio fingerprints) held by at least one track.
    pub recordings: u64,
    /// Garbage chunk entries: records no track references that a dedup hit can still revive
    /// (until GC removes them).
    pub garbage_chunks: u64,
    /// Pack files.
    pub packs: u64,
    /// Bytes of all pack files (live, garbage and pack headers).
    pub pack_bytes: u64,
    /// logical / physical (1.0 for an empty store).
    pub dedup_ratio: f64,
    /// RAM held by the in-memory filter of chunk keys (the only index kept in memory).
    pub filter_bytes: u64,
    /// Per-user figures, by user id.
    pub per_user: Vec<UserStats>,
}

/// What a put did.
///
/// **Operator-facing.** `new_chunks` and `new_bytes` say how much of the track the store did not
/// hold yet in the track's copy domain. In single-master mode that domain is shared by all
/// users, so they tell whether *another* user holds the content (a dedup side channel): a server
/// must keep them, and anything derived from them, from its clients. In per-user-copy mode they
/// concern the user's own locker only.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOutcome {
    /// Track length.
    pub len: u64,
    /// BLAKE3 of the track.
    pub fingerprint: Fingerprint,
    /// Chunks in the track.
    pub chunks: u64,
    /// Chunks that were written (not found in the track's copy domain). Operator-facing: in
    /// single-master mode it reveals whether other users hold the content (see above).
    pub new_chunks: u64,
    /// Plain bytes of those chunks. Operator-facing, like `new_chunks`.
    pub new_bytes: u64,
    /// Whether the put replaced an earlier track under the same key.
    pub replaced: bool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) meta: Box<dyn MetaStore>,
    pub(crate) packs: Packs,
    pub(crate) chunker: Chunker,
    pub(crate) compression_level: i32,
    pub(crate) segmenting: bool,
    pub(crate) segment_window: usize,
    pub(crate) min_free_space: u64,
    /// Threads doing ingest work, so an upload's helper only takes idle cores.
    pub(crate) cores: crate::chunk::pipeline::Cores,
    /// Keys of the stored chunk entries, so lookups of certainly new content skip the metadata.
    pub(crate) filter: Arc<ChunkFilter>,
    /// Chunk entries that in-flight ingests found and will reference at commit. GC and
    /// migration never remove a pinned entry; they hold this lock from their check through
    /// their commit, and an ingest holds it while it looks an entry up and pins it.
    pub(crate) pins: Mutex<HashMap<(Domain, ChunkId), u32>>,
    /// Serialises the maintenance jobs (migration, GC) with each other.
    pub(crate) maintenance: Mutex<()>,
    /// Shares metadata commits (and their fsync) among concurrent puts.
    pub(crate) group_commit: crate::index::group::GroupCommit,
    /// User numbers reserved by puts of users without a committed row (see `ingest::UserNos`).
    pub(crate) user_nos: Mutex<crate::write::UserNos>,
    /// Outstanding proof-of-ownership challenges.
    pub(crate) challenges: Mutex<crate::ownership::Challenges>,
    /// Ingests in flight per license mode they started under (index `mode.to_byte() - 1`).
    /// Taken with the mode under one lock, so after `set_mode` no ingest starts under the old
    /// mode, and migration can wait for the ones that did.
    pub(crate) in_flight: Mutex<[u64; 2]>,
    mode: AtomicU8,
    _lock: Box<dyn Send + Sync + Debug>,
}

impl Inner {
    pub(crate) fn mode(&self) -> LicenseMode {
        LicenseMode::from_byte(self.mode.load(Ordering::Acquire)).expect("mode byte is valid")
    }

    /// Registers an ingest under the current mode; `end_ingest` must follow.
    pub(crate) fn begin_ingest(&self) -> LicenseMode {
        let mut n = self.in_flight.lock().expect("in-flight lock");
        let mode = self.mode();
        n[usize::from(mode.to_byte() - 1)] += 1;
        mode
    }

    pub(crate) fn end_ingest(&self, mode: LicenseMode) {
        let mut n = self.in_flight.lock().expect("in-flight lock");
        n[usize::from(mode.to_byte() - 1)] -= 1;
    }

    /// Ingests in flight that started under `mode`.
    pub(crate) fn ingests_under(&self, mode: LicenseMode) -> u64 {
        self.in_flight.lock().expect("in-flight lock")[usize::from(mode.to_byte() - 1)]
    }

    /// Looks `(domain, id)` up in the latest committed state and, if it exists, pins it until
    /// the returned guard's `unpin`. Atomic with respect to GC and migration (see `pins`).
    pub(crate) fn lookup_and_pin(&self, domain: Domain, id: &ChunkId) -> Result<bool> {
        let mut pins = self.pins.lock().expect("pins lock");
        let hit = self.meta.read()?.chunk(domain, id)?.is_some();
        if hit {
            *pins.entry((domain, *id)).or_default() += 1;
        }
        Ok(hit)
    }

    /// The committed record of a track.
    pub(crate) fn track_record(&self, user: &UserId, key: &TrackKey) -> Result<TrackRecord> {
        let snap = self.meta.read()?;
        let no = Store::user_no(snap.as_ref(), user)?;
        snap.track(no, key.as_str())?
            .ok_or_else(|| Error::TrackNotFound {
                user: user.to_string(),
                key: key.to_string(),
            })
    }

    pub(crate) fn unpin(&self, keys: &[(Domain, ChunkId)]) {
        if keys.is_empty() {
            return;
        }
        let mut pins = self.pins.lock().expect("pins lock");
        for k in keys {
            if let Some(n) = pins.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(k);
                }
            }
        }
    }
}

/// An open store. Cheap to clone; all clones share one store. `Send + Sync`: any number of
/// threads may ingest, read and delete at once.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    recovery: RecoveryReport,
    is_new: bool,
}

/// What [`Store::repair_store_file`] did.
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

impl Store {
    /// Opens the store in `dir`, creating it when `options.create` is set and the directory is
    /// missing or empty (or finishing a creation an earlier open began). Recovers from a crash:
    /// removes packs no commit refers to and cuts uncommitted pack tails. A second process
    /// opening the same store gets `Error::Locked`: the lock is on the directory itself, so
    /// removing the `LOCK` file does not release it. A directory holding a store's metadata or
    /// packs without a valid `STORE` file is refused with `Error::StoreFileLost` and left as it
    /// is, whatever `options.create` says (see [`Store::repair_store_file`]).
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
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
        let vfs = options.vfs.clone();
        if !vfs.exists(&dir) {
            if !options.create {
                return Err(Error::NoStore(dir));
            }
            vfs.create_dir_all(&dir)
                .map_err(|e| Error::io("create", &dir, e))?;
            // The new directory's own entry must survive a power cut too.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            vfs.sync_dir(parent)
                .map_err(|e| Error::io("sync", parent, e))?;
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
        let layout = Self::classify(vfs.as_ref(), &dir)?;
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
                Self::create_metadata(vfs.as_ref(), &dir, &f, &options)?;
                f
            }
            Layout::Empty => {
                let f = StoreFile {
                    version: STORE_FORMAT_VERSION,
                    store_id: random_bytes("the store id")?,
                };
                write_store_file(vfs.as_ref(), &dir, &f)?;
                Self::create_metadata(vfs.as_ref(), &dir, &f, &options)?;
                f
            }
        };
        let meta_path = dir.join(META_FILE);
        if !vfs.exists(&meta_path) {
            return Err(Error::corrupted("meta.redb is missing"));
        }
        let meta = RedbMeta::open(vfs.as_ref(), &meta_path, false)?;
        let snap = meta.read()?;
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
        if format != STORE_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: meta_path,
                found: format,
                supported: STORE_FORMAT_VERSION,
            });
        }
        let mode = get(sk::MODE)?;
        let mode = (mode.len() == 1)
            .then(|| LicenseMode::from_byte(mode[0]))
            .flatten()
            .ok_or_else(|| Error::corrupted("metadata license mode"))?;
        let seed = get(sk::SEED)?;
        let seed = u64::from_le_bytes(
            seed.as_slice()
                .try_into()
                .map_err(|_| Error::corrupted("metadata chunker seed"))?,
        );
        let params = ChunkerParams::decode(&get(sk::CHUNKER)?)?;
        let copy = snap.state(sk::STORE_FILE)?;
        if copy
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
        let rows = snap.packs()?;
        let snap_counters = (
            snap.counter(ck::LIVE_CHUNKS)?,
            snap.counter(ck::GARBAGE_CHUNKS)?,
        );
        drop(snap);
        if copy.is_none() {
            // A store created before the metadata kept a copy of STORE: keep one from now on,
            // so a lost STORE can be rebuilt (`repair_store_file`).
            write_with(&meta, |w| w.set_state(sk::STORE_FILE, &store_file.encode()))?;
        }
        let store_tag = u64::from_le_bytes(store_file.store_id[..8].try_into().expect("8 bytes"));
        // The filter of stored chunk keys: watched before it is filled, so no key is missed.
        let filter = Arc::new(ChunkFilter::for_entries(
            snap_counters.0.saturating_add(snap_counters.1),
        ));
        meta.watch_chunks(filter.clone());
        meta.read()?.for_each_chunk(&mut |domain, id, _| {
            filter.insert(domain, &id);
            Ok(())
        })?;
        let (packs, recovery) = Packs::open(
            vfs.clone(),
            dir.join(PACK_DIR),
            store_tag,
            options.pack_size_limit,
            &rows,
        )?;
        let store = Store {
            inner: Arc::new(Inner {
                dir,
                meta: Box::new(meta),
                packs,
                chunker: Chunker { params, seed },
                compression_level: options.compression_level,
                segmenting: options.segmenting,
                segment_window: options.segment_window,
                min_free_space: options.min_free_space,
                cores: crate::chunk::pipeline::Cores::of_machine(),
                filter,
                pins: Mutex::new(HashMap::new()),
                maintenance: Mutex::new(()),
                challenges: Mutex::new(Default::default()),
                user_nos: Mutex::new(Default::default()),
                group_commit: Default::default(),
                in_flight: Mutex::new([0, 0]),
                mode: AtomicU8::new(mode.to_byte()),
                _lock: lock,
            }),
            recovery,
            is_new,
        };
        store.inner.restore_ballast()?;
        Ok(store)
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
        write_with(&meta, |w| {
            w.set_state(sk::FORMAT, &STORE_FORMAT_VERSION.to_le_bytes())?;
            w.set_state(sk::MODE, &[options.mode.to_byte()])?;
            w.set_state(sk::SEED, &seed.to_le_bytes())?;
            w.set_state(sk::CHUNKER, &options.chunker.encode())?;
            w.set_state(sk::STORE_FILE, &store_file.encode())?;
            w.set_counter(ck::NEXT_USER_NO, 1)
        })?;
        drop(meta);
        let target = dir.join(META_FILE);
        vfs.rename(&tmp, &target)
            .map_err(|e| Error::io("rename", &tmp, e))?;
        vfs.sync_dir(dir).map_err(|e| Error::io("sync", dir, e))
    }

    /// Rewrites a store's `STORE` file from the copy its metadata keeps, for a store that lost
    /// it or has a damaged one (open refuses such a store with [`Error::StoreFileLost`]). Takes
    /// the store's lock, so no process may have the store open. Refuses, changing nothing, when
    /// `meta.redb` is missing or unreadable, holds no copy (the store was created by an earlier
    /// build and never opened by this one), or `STORE` was written by a newer version. Only
    /// `options.vfs` is used.
    pub fn repair_store_file(dir: impl AsRef<Path>, options: Options) -> Result<StoreFileRepair> {
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

    /// True when this open created the store, or finished a creation an earlier open began.
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// What recovery did when this store was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The chunker sizes this store was created with.
    pub fn chunker_params(&self) -> ChunkerParams {
        self.inner.chunker.params
    }

    /// The license mode.
    pub fn mode(&self) -> LicenseMode {
        self.inner.mode()
    }

    /// Sets the license mode, durably. New ingests follow it at once; existing data keeps its
    /// layout until migrated.
    pub fn set_mode(&self, mode: LicenseMode) -> Result<()> {
        // Under the in-flight lock, so no ingest reads the old mode after this returns.
        let _gate = self.inner.in_flight.lock().expect("in-flight lock");
        write_with(self.inner.meta.as_ref(), |w| {
            w.set_state(sk::MODE, &[mode.to_byte()])
        })?;
        self.inner.mode.store(mode.to_byte(), Ordering::Release);
        Ok(())
    }

    pub(crate) fn user_no(snap: &dyn MetaRead, user: &UserId) -> Result<UserNo> {
        snap.user(user.as_str())?
            .map(|r| UserNo(r.no))
            .ok_or_else(|| Error::UnknownUser(user.to_string()))
    }

    /// The committed record of a track.
    pub(crate) fn track_record(&self, user: &UserId, key: &TrackKey) -> Result<TrackRecord> {
        self.inner.track_record(user, key)
    }

    /// Facts about one track.
    pub fn track_info(&self, user: &UserId, key: &TrackKey) -> Result<TrackInfo> {
        let t = self.track_record(user, key)?;
        Ok(info(key.clone(), &t))
    }

    /// The user's tracks, by key.
    pub fn list(&self, user: &UserId) -> Result<Vec<TrackInfo>> {
        let snap = self.inner.meta.read()?;
        let no = Self::user_no(snap.as_ref(), user)?;
        snap.tracks_of(no)?
            .into_iter()
            .map(|(k, t)| {
                let key = TrackKey::new(&k)
                    .map_err(|_| Error::corrupted(format!("stored key {k:?} is invalid")))?;
                Ok(info(key, &t))
            })
            .collect()
    }

    /// Deletes a track. Its chunks lose a reference; records no track needs any more become
    /// garbage at once (in the accounting) and are reclaimed by GC.
    pub fn delete(&self, user: &UserId, key: &TrackKey) -> Result<()> {
        // Bad input first: deleting a track that is not there must not release the ballast.
        self.track_record(user, key)?;
        self.inner.room_for_metadata()?;
        write_with(self.inner.meta.as_ref(), |w| {
            let row = w
                .user(user.as_str())?
                .ok_or_else(|| Error::UnknownUser(user.to_string()))?;
            let no = UserNo(row.no);
            let old = w
                .track(no, key.as_str())?
                .ok_or_else(|| Error::TrackNotFound {
                    user: user.to_string(),
                    key: key.to_string(),
                })?;
            let mut acc = Accounting::default();
            unlink_track(w, user.as_str(), &row, key.as_str(), &old, &mut acc)?;
            acc.apply(w)
        })
    }

    /// Store-wide and per-user accounting.
    pub fn stats(&self) -> Result<Stats> {
        let snap = self.inner.meta.read()?;
        let c = |k| snap.counter(k);
        let packs = snap.packs()?;
        let logical_bytes = c(ck::LOGICAL_BYTES)?;
        let physical_bytes = c(ck::LIVE_BYTES)?;
        let mut per_user: Vec<UserStats> = snap
            .users()?
            .into_iter()
            .map(|(user, r)| UserStats {
                user,
                logical_bytes: r.logical_bytes,
                tracks: r.tracks,
            })
            .collect();
        per_user.retain(|u| u.tracks > 0);
        Ok(Stats {
            mode: self.mode(),
            users: c(ck::USERS)?,
            tracks: c(ck::TRACKS)?,
            logical_bytes,
            physical_bytes,
            garbage_bytes: c(ck::GARBAGE_BYTES)?,
            chunks: c(ck::LIVE_CHUNKS)?,
            recordings: c(ck::RECORDINGS)?,
            garbage_chunks: c(ck::GARBAGE_CHUNKS)?,
            packs: packs.len() as u64,
            pack_bytes: packs.iter().map(|(_, r)| r.committed_len).sum(),
            dedup_ratio: if physical_bytes == 0 {
                1.0
            } else {
                logical_bytes as f64 / physical_bytes as f64
            },
            filter_bytes: self.inner.filter.bytes() as u64,
            per_user,
        })
    }
}

pub(crate) fn info(key: TrackKey, t: &TrackRecord) -> TrackInfo {
    TrackInfo {
        key,
        size: t.len,
        fingerprint: t.fingerprint,
        chunks: t.chunks.len() as u64,
        stored_at: t.stored_at,
        format: crate::write::format_name(t.audio.as_ref().map_or(0, |a| a.format)),
        audio_fingerprint: t.audio.as_ref().map(|a| AudioFingerprint(a.fingerprint)),
        audio_len: t.audio.as_ref().map_or(0, |a| a.len()),
    }
}

/// Writes `STORE` atomically and durably: `STORE.tmp` (truncated, written, fdatasynced), renamed
/// to `STORE`, then the directory fsynced.
fn write_store_file(vfs: &dyn Vfs, dir: &Path, file: &StoreFile) -> Result<()> {
    let tmp = dir.join(STORE_TMP);
    let target = dir.join(STORE_FILE);
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
