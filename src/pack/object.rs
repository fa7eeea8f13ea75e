//! Packs in an object store (S3 and compatibles, through the `object_store` crate): the second
//! [`PackStorage`], behind the `object-store` feature.
//!
//! The bucket holds sealed packs only, one immutable object per pack, `<prefix>/packs/<id as 16
//! lower-case hex>.pack`, written once with a create-only PUT. A local directory (the store's
//! `packs/`, the same files as a local store's) serves twice:
//!
//! - **Staging.** An ingest appends to a local file as on a local store. [`PackWriter::sync`],
//!   the durability point, fsyncs it and PUTs the whole file as the pack's object; only then
//!   does the engine commit metadata that points into it. The pack is then sealed
//!   ([`PackStorage::seals_on_sync`]): it takes no more records, so an object never changes. A
//!   pack is therefore what one job appended before its commit: one upload's new chunks (a
//!   track), or what one GC or migration step copied.
//! - **Cache.** The staged file of an uploaded pack stays as the cached copy; a pack not cached
//!   is fetched whole (one GET) into a temporary file, fsynced and renamed into place, then read
//!   through the same maps as a local pack. The cache keeps at most `cache_bytes` of uploaded
//!   packs, dropping the least recently read; a dropped file is unlinked, so readers that map
//!   it keep their bytes.
//!
//! Names are never reused by a running store, so a create-only PUT is correct even on a
//! server that ignores it, and the metadata, not the bucket, says where a chunk lives. Every
//! byte read from the bucket is verified by the reader like any pack byte; a cached copy that
//! fails verification is dropped and read again from the object. A prefix holds one store: its
//! `STORE` object, written create-only at creation and checked at every open, keeps a second
//! store (or one re-created after losing its metadata) from taking, and deleting, its packs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::bucket::outbox::Outbox;
use crate::bucket::{Bucket, Put, Written};
use crate::error::{Error, Result};
use crate::format::{pack_name, parse_pack_name};
use crate::ids::PackId;
use crate::vfs::Vfs;

use super::local::LocalPacks;
use super::storage::{PackStorage, PackWriter, StorageFacts, Window};

/// The packs' objects in the bucket: `packs/<id as 16 lower-case hex>.pack`.
#[derive(Debug)]
struct Remote {
    bucket: Arc<Bucket>,
}

impl Remote {
    fn key(id: PackId) -> String {
        format!("packs/{}", pack_name(id))
    }

    /// Writes pack `id` once. An object already there under this never-reused name is this
    /// pack's own earlier PUT (a retried sync) when its length matches; anything else is
    /// damage.
    fn put_once(&self, id: PackId, bytes: Bytes) -> Result<()> {
        let len = bytes.len() as u64;
        match self.bucket.put(&Self::key(id), bytes, Put::Create)? {
            Written::Written => Ok(()),
            Written::Exists => match self.head(id)? {
                Some(l) if l == len => Ok(()),
                other => Err(Error::corrupted_at(
                    format!(
                        "pack object {} exists with {other:?} bytes, not the {len} being \
                         written (names are never reused)",
                        Self::key(id)
                    ),
                    id,
                    0,
                )),
            },
        }
    }

    fn head(&self, id: PackId) -> Result<Option<u64>> {
        self.bucket.head(&Self::key(id))
    }

    fn get(&self, id: PackId) -> Result<Option<Bytes>> {
        self.bucket.get(&Self::key(id))
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        Ok(self
            .bucket
            .list("packs")?
            .into_iter()
            .filter_map(|(name, len)| Some((parse_pack_name(&name)?, len)))
            .collect())
    }

    fn delete(&self, id: PackId) -> Result<()> {
        self.bucket.delete(&Self::key(id))
    }

    /// `trash/<id>.pack`: pack `id` is deleted, its object to go once the grace period has
    /// passed since the marker was written (its last-modified time).
    fn trash_key(id: PackId) -> String {
        format!("trash/{}", pack_name(id))
    }

    /// A marker's body: the Unix time now, in decimal, for people.
    fn marker_body() -> Bytes {
        let when = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Bytes::from(format!("{when}\n"))
    }

    /// Marks pack `id` deleted; a marker already there keeps its (earlier) time.
    fn mark_deleted(&self, id: PackId) -> Result<()> {
        self.bucket
            .put(&Self::trash_key(id), Self::marker_body(), Put::Create)
            .map(|_| ())
    }

    /// The deletion markers, with their times.
    fn trash(&self) -> Result<Vec<(PackId, std::time::SystemTime)>> {
        Ok(self
            .bucket
            .list_with_times("trash")?
            .into_iter()
            .filter_map(|(name, _, when)| Some((parse_pack_name(&name)?, when)))
            .collect())
    }

    /// Deletes the objects whose markers are older than `grace`, then the markers.
    fn sweep(&self, trash: &[(PackId, std::time::SystemTime)], grace: Duration) -> Result<()> {
        let now = std::time::SystemTime::now();
        for &(id, when) in trash {
            if now.duration_since(when).is_ok_and(|age| age >= grace) {
                self.delete(id)?;
                self.bucket.delete(&Self::trash_key(id))?;
            }
        }
        Ok(())
    }
}

/// A cached piece of an uploaded pack: the whole object (`packs/<id>.pack`) or a span of it
/// starting at a record (`packs/<id>.pack.<start as 16 hex>.span`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Piece {
    pack: PackId,
    span: Option<u64>,
}

impl Piece {
    fn whole(pack: PackId) -> Piece {
        Piece { pack, span: None }
    }
    fn span(pack: PackId, start: u64) -> Piece {
        Piece {
            pack,
            span: Some(start),
        }
    }
}

fn span_name(pack: PackId, start: u64) -> String {
    format!("{}.{start:016x}.span", pack_name(pack))
}

/// A cached span: the pack's bytes `start..end`, and the pack's committed length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    end: u64,
    committed: u64,
}

/// Which pieces of uploaded packs have a local copy, and how recently each was read.
#[derive(Debug, Default)]
struct Cache {
    /// Piece -> (bytes, tick of its last use).
    entries: HashMap<Piece, (u64, u64)>,
    /// The cached spans of each pack, by start.
    spans: HashMap<PackId, BTreeMap<u64, Span>>,
    bytes: u64,
    tick: u64,
    /// The ranges of packs readers are between finding a piece for and mapping it: pieces
    /// holding them are never dropped meanwhile (the whole pack, or a span overlapping one).
    pinned: HashMap<PackId, Vec<(u64, u64)>>,
    /// Packs synced but not yet uploaded (`PackDurability::LocalDisk`): their staged files are
    /// the only copies, never dropped.
    held: HashSet<PackId>,
    /// Held packs deleted meanwhile: deleted once uploaded.
    doomed: HashSet<PackId>,
}

impl Cache {
    fn touch(&mut self, piece: Piece, len: u64) {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.entry(piece).or_insert_with(|| (len, 0));
        if e.1 == 0 {
            self.bytes += len;
        } else if e.0 != len {
            // The piece's file was replaced by a longer (or shorter) one: a span fetched again
            // to reach a record longer than the span size.
            self.bytes = self.bytes - e.0 + len;
            e.0 = len;
        }
        e.1 = tick;
    }

    fn add_span(&mut self, pack: PackId, start: u64, span: Span) {
        self.spans.entry(pack).or_default().insert(start, span);
        self.touch(Piece::span(pack, start), span.end - start);
    }

    /// The cached span of `pack` holding `start..end`, as (its start, the span).
    fn covering(&self, pack: PackId, start: u64, end: u64) -> Option<(u64, Span)> {
        let (&s, &span) = self.spans.get(&pack)?.range(..=start).next_back()?;
        (span.end >= end).then_some((s, span))
    }

    fn has_span_at(&self, pack: PackId, start: u64) -> bool {
        self.spans
            .get(&pack)
            .is_some_and(|m| m.contains_key(&start))
    }

    fn pin(&mut self, id: PackId, start: u64, end: u64) {
        self.pinned.entry(id).or_default().push((start, end));
    }

    fn unpin(&mut self, id: PackId, start: u64, end: u64) {
        if let Some(pins) = self.pinned.get_mut(&id) {
            if let Some(at) = pins.iter().position(|&p| p == (start, end)) {
                pins.swap_remove(at);
            }
            if pins.is_empty() {
                self.pinned.remove(&id);
            }
        }
    }

    fn hold(&mut self, id: PackId) {
        self.held.insert(id);
    }

    /// The pack is uploaded; returns whether it was deleted meanwhile (then its local copy and,
    /// without a grace period, its object are the caller's to delete).
    fn release(&mut self, id: PackId) -> bool {
        self.held.remove(&id);
        self.doomed.remove(&id)
    }

    /// Marks a held pack deleted (again: no change); `false` when it is not held.
    fn doom_if_held(&mut self, id: PackId) -> bool {
        if !self.held.contains(&id) {
            return false;
        }
        self.doomed.insert(id);
        true
    }

    /// Whether a reader's pin holds `piece` (of `len` bytes), or it is a pack not uploaded yet.
    fn is_pinned(&self, piece: Piece, len: u64) -> bool {
        if piece.span.is_none() && self.held.contains(&piece.pack) {
            return true;
        }
        let Some(pins) = self.pinned.get(&piece.pack) else {
            return false;
        };
        match piece.span {
            None => true,
            Some(s) => pins.iter().any(|&(a, b)| a < s + len && b > s),
        }
    }

    fn forget(&mut self, piece: Piece) {
        if let Some((len, _)) = self.entries.remove(&piece) {
            self.bytes -= len;
        }
        if let Some(start) = piece.span
            && let Some(m) = self.spans.get_mut(&piece.pack)
        {
            m.remove(&start);
            if m.is_empty() {
                self.spans.remove(&piece.pack);
            }
        }
    }

    /// Forgets every piece of `pack`; returns them (their files are the caller's to remove).
    fn forget_pack(&mut self, pack: PackId) -> Vec<Piece> {
        let mut pieces: Vec<Piece> = self
            .spans
            .get(&pack)
            .map(|m| m.keys().map(|&s| Piece::span(pack, s)).collect())
            .unwrap_or_default();
        pieces.push(Piece::whole(pack));
        for p in &pieces {
            self.forget(*p);
        }
        pieces
    }

    /// The least recently used pieces to drop so the rest fit in `limit` bytes, never `keep`
    /// (the piece being read: the cache may exceed its limit by that one) nor a pinned pack's.
    fn over(&mut self, limit: u64, keep: Option<Piece>) -> Vec<Piece> {
        let mut by_age: Vec<(u64, Piece, u64)> = self
            .entries
            .iter()
            .map(|(p, (len, tick))| (*tick, *p, *len))
            .collect();
        by_age.sort_unstable();
        let mut out = Vec::new();
        let mut bytes = self.bytes;
        for (_, piece, len) in by_age {
            if bytes <= limit {
                break;
            }
            if Some(piece) == keep || self.is_pinned(piece, len) {
                continue;
            }
            bytes -= len;
            out.push(piece);
        }
        for p in &out {
            self.forget(*p);
        }
        out
    }
}

/// The local directory's copies of uploaded packs (whole or spans) and their bound.
#[derive(Debug)]
struct Shelf {
    local: LocalPacks,
    cache: Mutex<Cache>,
    limit: u64,
}

impl Shelf {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts pack `id`'s whole copy (`len` bytes) as just used, then drops the least recently
    /// used others past the limit.
    fn keep(&self, id: PackId, len: u64) -> Result<()> {
        let drop = {
            let mut cache = self.cache();
            cache.touch(Piece::whole(id), len);
            cache.over(self.limit, Some(Piece::whole(id)))
        };
        self.remove(&drop)
    }

    /// Records a cached span, then drops the least recently used others past the limit.
    fn keep_span(&self, id: PackId, start: u64, span: Span) -> Result<()> {
        let drop = {
            let mut cache = self.cache();
            cache.add_span(id, start, span);
            cache.over(self.limit, Some(Piece::span(id, start)))
        };
        self.remove(&drop)
    }

    /// Removes the files of pieces already forgotten by the cache.
    fn remove(&self, pieces: &[Piece]) -> Result<()> {
        for p in pieces {
            match p.span {
                None => self.local.delete(&[p.pack])?,
                Some(start) => self.local.remove_piece(&span_name(p.pack, start))?,
            }
        }
        Ok(())
    }
}

/// Fetches into the shelf: whole objects and spans, one fetch per piece at a time.
#[derive(Debug)]
struct Fetcher {
    shelf: Arc<Shelf>,
    remote: Arc<Remote>,
    /// One fetch per piece at a time: readers of a piece being fetched wait for it.
    fetching: Mutex<HashMap<Piece, Arc<Mutex<()>>>>,
    /// Names the temporary file of each fetch.
    fetches: AtomicU64,
    /// Bytes of a span (`Options::read_span_bytes`); packs up to twice that are fetched whole.
    span: u64,
}

impl Fetcher {
    /// Runs `fetch` for `piece` unless `present` says it is there, one at a time per piece;
    /// the others wait for it and find it.
    fn gated(
        &self,
        piece: Piece,
        present: impl Fn() -> Result<bool>,
        fetch: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let gate = self
            .fetching
            .lock()
            .expect("fetching lock")
            .entry(piece)
            .or_default()
            .clone();
        let result = {
            let _one = gate.lock().unwrap_or_else(|p| p.into_inner());
            if present()? { Ok(()) } else { fetch() }
        };
        let mut fetching = self.fetching.lock().expect("fetching lock");
        if Arc::strong_count(&gate) == 2 {
            fetching.remove(&piece);
        }
        result
    }

    /// Fetches pack `id` whole into the local directory, unless it is there: a temporary file
    /// of this fetch's own, fsynced, renamed into place, so a cached file is always a whole
    /// object.
    fn whole(&self, id: PackId) -> Result<()> {
        self.gated(
            Piece::whole(id),
            || Ok(self.shelf.local.len(id)?.is_some()),
            || {
                let bytes = self
                    .remote
                    .get(id)?
                    .ok_or_else(|| Error::corrupted_at("pack object is missing", id, 0))?;
                let n = self.fetches.fetch_add(1, Ordering::Relaxed);
                self.shelf
                    .local
                    .write_piece(&pack_name(id), &format!("{n}"), &bytes)?;
                self.shelf.keep(id, bytes.len() as u64)
            },
        )
    }

    /// Fetches a span of pack `id` from `start` (a record's start) with one ranged GET: at
    /// least to `end`, else `span` bytes, never past `committed`; cut back to the last whole
    /// record so the next span starts at one. Returns where the span ends.
    fn span(&self, id: PackId, start: u64, end: u64, committed: u64) -> Result<u64> {
        self.gated(
            Piece::span(id, start),
            || Ok(self.shelf.cache().covering(id, start, end).is_some()),
            || {
                let want = start.saturating_add(self.span).min(committed).max(end);
                let bytes = self
                    .remote
                    .bucket
                    .get_range(&Remote::key(id), start..want)?
                    .ok_or_else(|| Error::corrupted_at("pack object is missing", id, start))?;
                if (bytes.len() as u64) < want - start {
                    return Err(Error::corrupted_at(
                        format!("pack object ends before {want}"),
                        id,
                        start,
                    ));
                }
                // Whole records only, so the next span starts at a record. Bytes that do not
                // walk as records (damage) are kept whole: reading them reports it.
                let mut cut = 0usize;
                while let Some(len) = crate::format::record_len_at(&bytes, cut) {
                    let next = cut.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                    if next > bytes.len() {
                        break;
                    }
                    cut = next;
                }
                if want == committed || (cut as u64) < end - start {
                    cut = bytes.len();
                }
                let n = self.fetches.fetch_add(1, Ordering::Relaxed);
                self.shelf.local.write_piece(
                    &span_name(id, start),
                    &format!("{n}"),
                    &bytes[..cut],
                )?;
                let span_end = start + cut as u64;
                self.shelf.keep_span(
                    id,
                    start,
                    Span {
                        end: span_end,
                        committed,
                    },
                )?;
                Ok(())
            },
        )?;
        // Fetched now, or found cached (fetched by another reader); if dropped again since
        // (the reader's pin keeps it, a read-ahead has none), the caller fetches again.
        Ok(self
            .shelf
            .cache()
            .covering(id, start, end)
            .map_or(end, |(_, s)| s.end))
    }
}

/// Packs in a bucket, staged and cached in a local directory; see the module docs.
#[derive(Debug)]
pub(crate) struct ObjectPacks {
    shelf: Arc<Shelf>,
    fetcher: Arc<Fetcher>,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    remote: Arc<Remote>,
    /// Packs known to be in the bucket (uploaded by this process, or listed at open).
    uploaded: Arc<Mutex<HashSet<PackId>>>,
    /// Lengths of the local files found at open, for `recover_committed`.
    copies: Mutex<HashMap<PackId, u64>>,
    /// Spans being read ahead.
    ahead: Arc<Mutex<HashSet<(PackId, u64)>>>,
    /// Their threads, joined on drop: they write into the directory, which the store's lock
    /// guards only while the store is open.
    ahead_threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// How long a deleted pack's object stays (`Options::deletion_grace`); zero: no marker,
    /// deleted at once.
    grace: Duration,
    /// One past the largest id in the bucket, deleted packs' included (`first_free_id`).
    first_free: AtomicU64,
    /// When the deletion markers were last swept.
    swept: Mutex<Option<std::time::Instant>>,
    /// With `PackDurability::LocalDisk`: the uploads behind the writers.
    outbox: Option<Arc<Outbox>>,
}

/// Most spans read ahead at once.
const MAX_READ_AHEAD: usize = 2;

impl ObjectPacks {
    /// Packs in `bucket` (whose prefix this store has claimed); `dir` holds staged and cached
    /// packs and spans; `cache_limit` bounds the cache, `span` is the bytes of a ranged read.
    pub(crate) fn new(
        vfs: Arc<dyn Vfs>,
        dir: PathBuf,
        bucket: Arc<Bucket>,
        cache_limit: u64,
        span: u64,
        grace: Duration,
        outbox: Option<Arc<Outbox>>,
    ) -> Result<ObjectPacks> {
        let remote = Arc::new(Remote { bucket });
        let shelf = Arc::new(Shelf {
            local: LocalPacks::new(vfs.clone(), dir.clone()),
            cache: Mutex::default(),
            limit: cache_limit,
        });
        Ok(ObjectPacks {
            fetcher: Arc::new(Fetcher {
                shelf: shelf.clone(),
                remote: remote.clone(),
                fetching: Mutex::default(),
                fetches: AtomicU64::new(0),
                span,
            }),
            shelf,
            vfs,
            dir,
            remote,
            uploaded: Arc::default(),
            copies: Mutex::default(),
            ahead: Arc::default(),
            ahead_threads: Mutex::default(),
            grace,
            first_free: AtomicU64::new(0),
            swept: Mutex::default(),
            outbox,
        })
    }

    /// Reads the span of pack `id` from `start` on in the background, unless it is cached,
    /// being read, or past `committed`, or too many are being read already.
    fn read_ahead(&self, id: PackId, start: u64, committed: u64) {
        if start >= committed || self.shelf.cache().has_span_at(id, start) {
            return;
        }
        let mut threads = self.ahead_threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        {
            let mut ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner());
            if ahead.len() >= MAX_READ_AHEAD || !ahead.insert((id, start)) {
                return;
            }
        }
        let (fetcher, ahead) = (self.fetcher.clone(), self.ahead.clone());
        let end = (start + crate::format::RECORD_HEADER_LEN as u64).min(committed);
        let handle = std::thread::Builder::new()
            .name("lockerstore-read-ahead".into())
            .spawn(move || {
                // A failure here costs nothing: the reader fetches the span itself.
                let _ = fetcher.span(id, start, end, committed);
                ahead
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(id, start));
            });
        match handle {
            Ok(h) => threads.push(h),
            Err(_) => {
                self.ahead
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(id, start));
            }
        }
    }

    /// Maps the cached piece of pack `id` holding `start..end`, if one is cached: the whole
    /// pack, or a span (then reading ahead of it).
    fn cached(
        &self,
        id: PackId,
        start: u64,
        end: u64,
        committed: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Option<(Window, Piece)>> {
        // The whole pack first: a mapped one costs no system call (every record read of a
        // cached pack comes here). No file (never fetched, evicted, or only spans of it are
        // cached) is not an error here: spans, or a fetch by the caller.
        match self.shelf.local.read(id, start, end, committed) {
            Ok(w) => return Ok(Some((w, Piece::whole(id)))),
            Err(_) if self.shelf.local.len(id)?.is_none() => {}
            Err(e) => return Err(e),
        }
        let Some((s, span)) = self.shelf.cache().covering(id, start, end) else {
            return Ok(None);
        };
        match self.shelf.local.map_piece(&span_name(id, s))? {
            Some(map) => {
                self.read_ahead(id, span.end, span.committed);
                Ok(Some((Window { map, base: s }, Piece::span(id, s))))
            }
            None => {
                self.shelf.cache().forget(Piece::span(id, s));
                Ok(None)
            }
        }
    }
}

impl ObjectPacks {
    /// Sweeps the deletion markers if the last sweep is a tenth of the grace period (at most a
    /// minute) ago: a store that runs GC now and then deletes expired objects without
    /// reopening.
    fn sweep_now_and_then(&self) -> Result<()> {
        if self.grace.is_zero() {
            return Ok(());
        }
        let every = (self.grace / 10).min(Duration::from_secs(60));
        {
            let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
            if swept.is_some_and(|t| t.elapsed() < every) {
                return Ok(());
            }
            *swept = Some(std::time::Instant::now());
        }
        self.remote.sweep(&self.remote.trash()?, self.grace)
    }
}

impl Drop for ObjectPacks {
    fn drop(&mut self) {
        let threads =
            std::mem::take(&mut *self.ahead_threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl PackStorage for ObjectPacks {
    fn location(&self, id: PackId) -> String {
        format!(
            "{}/packs/{}",
            self.remote.bucket.url().trim_end_matches('/'),
            pack_name(id)
        )
    }

    fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let mut remote = self.remote.list()?;
        let trash = self.remote.trash()?;
        let first_free = remote
            .iter()
            .map(|p| p.0.0 + 1)
            .chain(trash.iter().map(|t| t.0.0 + 1))
            .max()
            .unwrap_or(0);
        self.first_free.fetch_max(first_free, Ordering::Relaxed);
        // Deleted packs whose objects wait out the grace period are not packs any more.
        let trashed: HashSet<PackId> = trash.iter().map(|t| t.0).collect();
        remote.retain(|p| !trashed.contains(&p.0));
        self.remote.sweep(&trash, self.grace)?;
        *self.swept.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        let local = self.shelf.local.list()?;
        let in_bucket: HashMap<PackId, u64> = remote.iter().copied().collect();
        let mut out = remote.clone();
        {
            let mut cache = self.shelf.cache();
            let mut copies = self.copies.lock().expect("copies lock");
            for (id, len) in local {
                copies.insert(id, len);
                match in_bucket.get(&id) {
                    // A cached copy.
                    Some(&l) if l == len => cache.touch(Piece::whole(id), len),
                    // A copy that is not the object (damage of one of them): which one is whole
                    // is decided with the committed length (`recover_committed`).
                    Some(_) => {}
                    // Staged and never uploaded (no committed metadata points into it), or a
                    // committed pack whose object is gone (`recover_committed` re-uploads it).
                    None => out.push((id, len)),
                }
            }
        }
        *self.uploaded.lock().expect("uploaded lock") = in_bucket.keys().copied().collect();
        // Leftovers of fetches cut short, and spans (not kept across opens).
        if let Ok(names) = self.vfs.list_dir(&self.dir) {
            for n in names
                .iter()
                .filter(|n| n.ends_with(".part") || n.ends_with(".span"))
            {
                let _ = self.vfs.remove_file(&self.dir.join(n));
            }
        }
        let over = self.shelf.cache().over(self.shelf.limit, None);
        self.shelf.remove(&over)?;
        Ok(out)
    }

    fn len(&self, id: PackId) -> Result<Option<u64>> {
        match self.remote.head(id)? {
            Some(l) => Ok(Some(l)),
            None => self.shelf.local.len(id),
        }
    }

    fn create(&self, id: PackId, header: &[u8]) -> Result<Box<dyn PackWriter>> {
        Ok(Box::new(ObjectWriter {
            id,
            staged: self.shelf.local.create(id, header)?,
            path: self.dir.join(pack_name(id)),
            vfs: self.vfs.clone(),
            remote: self.remote.clone(),
            shelf: self.shelf.clone(),
            uploaded_set: self.uploaded.clone(),
            sealed: AtomicBool::new(false),
            outbox: self.outbox.clone(),
        }))
    }

    fn reopen(&self, id: PackId) -> Result<Box<dyn PackWriter>> {
        Err(Error::corrupted_at(
            "an unsealed pack in a store whose packs live in an object store (every committed \
             pack there is sealed)",
            id,
            0,
        ))
    }

    fn truncate(&self, id: PackId, len: u64) -> Result<()> {
        if self.uploaded.lock().expect("uploaded lock").contains(&id) {
            // Objects are immutable and were whole when committed; reads never go past the
            // committed length, so bytes past it (which the protocol never writes) stay unread.
            return Ok(());
        }
        self.shelf.local.truncate(id, len)
    }

    fn read(
        &self,
        id: PackId,
        start: u64,
        end: u64,
        committed: &mut dyn FnMut() -> Result<u64>,
    ) -> Result<Window> {
        // Pinned while it goes from "found" to "mapped": eviction skips the pieces holding the
        // range meanwhile.
        self.shelf.cache().pin(id, start, end);
        let result = (|| {
            // An eviction decided before the pin may still remove a piece once: fetched again
            // then, under the pin, which no later eviction passes.
            for _ in 0..3 {
                if let Some(found) = self.cached(id, start, end, committed)? {
                    return Ok(found);
                }
                let committed = committed()?;
                if end > committed {
                    return Err(Error::corrupted_at(
                        format!("record end {end} past the pack's committed length {committed}"),
                        id,
                        committed,
                    ));
                }
                if committed <= 2 * self.fetcher.span || (start == 0 && end == committed) {
                    self.fetcher.whole(id)?;
                } else {
                    let span_end = self.fetcher.span(id, start, end, committed)?;
                    self.read_ahead(id, span_end, committed);
                }
            }
            Err(Error::corrupted_at(
                "a fetched piece of the pack vanished from the cache three times",
                id,
                start,
            ))
        })();
        let mut cache = self.shelf.cache();
        cache.unpin(id, start, end);
        match result {
            Ok((window, piece)) => {
                if let Some(&(len, _)) = cache.entries.get(&piece) {
                    cache.touch(piece, len);
                }
                Ok(window)
            }
            Err(e) => Err(e),
        }
    }

    fn delete(&self, ids: &[PackId]) -> Result<()> {
        let mut local = Vec::new();
        for &id in ids {
            match &self.outbox {
                // Uploads run behind the writer: the deletion (its marker) goes behind them too,
                // after the log of the commit that stopped naming the pack, so the bucket never
                // names a pack it lacks.
                Some(outbox) => {
                    if self.grace.is_zero() {
                        outbox.push_delete(Remote::key(id));
                    } else {
                        outbox.push_write(Remote::trash_key(id), Remote::marker_body());
                    }
                }
                None if self.grace.is_zero() => self.remote.delete(id)?,
                None => self.remote.mark_deleted(id)?,
            }
            // A pack still waiting for its upload keeps its staged file (the only copy) until
            // the upload, which then drops it.
            if self.shelf.cache().doom_if_held(id) {
                continue;
            }
            let pieces = self.shelf.cache().forget_pack(id);
            self.shelf.remove(&pieces)?;
            self.uploaded.lock().expect("uploaded lock").remove(&id);
            local.push(id);
        }
        self.shelf.local.delete(&local)?;
        // Housekeeping: a sweep that cannot run now (the bucket unreachable) runs at a later
        // deletion or open; the deletion itself is done.
        if self.outbox.is_none() {
            let _ = self.sweep_now_and_then();
        }
        Ok(())
    }

    fn first_free_id(&self) -> u64 {
        self.first_free.load(Ordering::Relaxed)
    }

    fn seals_on_sync(&self) -> bool {
        true
    }

    fn recover_committed(&self, id: PackId, listed: u64, committed: u64) -> Result<(u64, bool)> {
        let local = self.copies.lock().expect("copies lock").get(&id).copied();
        let remote = self.uploaded.lock().expect("uploaded lock").contains(&id);
        let remote_len = if remote { self.remote.head(id)? } else { None };
        match (remote_len, local) {
            (Some(r), Some(l)) if r != l && r == committed => {
                // The cached copy is damaged: dropped, fetched again when read.
                self.shelf.local.delete(&[id])?;
                Ok((r, false))
            }
            (Some(r), Some(l)) if r != l && l >= committed => {
                // The object is damaged and the cached copy whole: the one overwrite.
                self.upload_local(id, committed, Put::Overwrite)?;
                Ok((committed, true))
            }
            (None, Some(l)) if l >= committed => {
                // Committed, but its object is gone (lost from the bucket): put back from the
                // cached copy, so the bucket again holds every committed byte.
                self.upload_local(id, committed, Put::Create)?;
                Ok((committed, true))
            }
            _ => Ok((listed, false)),
        }
    }

    fn refresh(&self, id: PackId) -> bool {
        if !self.uploaded.lock().expect("uploaded lock").contains(&id) {
            return false;
        }
        let pieces = self.shelf.cache().forget_pack(id);
        self.shelf.remove(&pieces).is_ok()
    }

    fn describe(&self) -> StorageFacts {
        StorageFacts {
            location: self.remote.bucket.url().to_owned(),
            cache_bytes: Some(self.shelf.cache().bytes),
            cache_limit: Some(self.shelf.limit),
            upload_backlog: self.outbox.as_ref().map(|o| o.backlog().1),
        }
    }
}

impl ObjectPacks {
    /// PUTs the first `len` bytes of the local copy of pack `id`.
    fn upload_local(&self, id: PackId, len: u64, mode: Put) -> Result<()> {
        let path = self.dir.join(pack_name(id));
        let mut bytes = self
            .vfs
            .read(&path)
            .map_err(|e| Error::io("read", &path, e))?;
        bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        self.remote
            .bucket
            .put(&Remote::key(id), Bytes::from(bytes), mode)?;
        self.uploaded.lock().expect("uploaded lock").insert(id);
        self.shelf.keep(id, len)
    }
}

/// A staged pack, uploaded whole by its first sync.
#[derive(Debug)]
struct ObjectWriter {
    id: PackId,
    staged: Box<dyn PackWriter>,
    path: PathBuf,
    vfs: Arc<dyn Vfs>,
    remote: Arc<Remote>,
    shelf: Arc<Shelf>,
    uploaded_set: Arc<Mutex<HashSet<PackId>>>,
    sealed: AtomicBool,
    /// With `PackDurability::LocalDisk`: the uploads behind the writer.
    outbox: Option<Arc<Outbox>>,
}

impl PackWriter for ObjectWriter {
    fn write_at(&self, offset: u64, parts: &[&[u8]]) -> Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Err(Error::corrupted_at(
                "write to a pack already uploaded (objects are immutable)",
                self.id,
                offset,
            ));
        }
        self.staged.write_at(offset, parts)
    }

    fn sync(&self) -> Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Ok(());
        }
        // The staged copy becomes the cached one: synced first, so a power loss cannot leave
        // a cached file that differs from its object.
        self.staged.sync()?;
        if let Some(outbox) = &self.outbox {
            // Durable on local disk now: sealed, kept out of the cache's reach until its
            // upload, which the outbox does behind the writer, before the commit's log.
            let len = self
                .vfs
                .open_rw(&self.path, false)
                .and_then(|f| f.len())
                .map_err(|e| Error::io("stat", &self.path, e))?;
            self.sealed.store(true, Ordering::Release);
            self.shelf.cache().hold(self.id);
            self.shelf.keep(self.id, len)?;
            let (id, uploaded, shelf) = (self.id, self.uploaded_set.clone(), self.shelf.clone());
            outbox.push(
                Remote::key(id),
                self.path.clone(),
                len,
                Some(Box::new(move || {
                    if shelf.cache().release(id) {
                        // Deleted while it waited: its local copy goes now; the object goes by
                        // the deletion queued behind the log that stopped naming it.
                        let pieces = shelf.cache().forget_pack(id);
                        let _ = shelf.remove(&pieces);
                    } else {
                        uploaded.lock().expect("uploaded lock").insert(id);
                    }
                })),
            );
            return Ok(());
        }
        let bytes = self
            .vfs
            .read(&self.path)
            .map_err(|e| Error::io("read", &self.path, e))?;
        let len = bytes.len() as u64;
        self.remote.put_once(self.id, Bytes::from(bytes))?;
        self.sealed.store(true, Ordering::Release);
        self.uploaded_set
            .lock()
            .expect("uploaded lock")
            .insert(self.id);
        // The staged file is now the cached copy, within the cache's bound.
        self.shelf.keep(self.id, len)
    }

    fn truncate(&self, len: u64) -> Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Err(Error::corrupted_at(
                "truncate of a pack already uploaded",
                self.id,
                len,
            ));
        }
        self.staged.truncate(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_drops_the_least_recently_used_first() {
        let w = |n| Piece::whole(PackId(n));
        let mut c = Cache::default();
        c.touch(w(1), 10);
        c.touch(w(2), 10);
        c.touch(w(3), 10);
        c.touch(w(1), 10);
        assert_eq!(c.bytes, 30);
        assert_eq!(c.over(25, None), [w(2)]);
        assert_eq!(c.over(5, Some(w(3))), [w(1)]);
        assert_eq!(c.bytes, 10, "the kept pack stays over the limit");
        assert_eq!(c.over(5, None), [w(3)]);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn spans_are_found_by_the_range_they_hold_and_go_with_their_pack() {
        let mut c = Cache::default();
        let p = PackId(7);
        c.add_span(
            p,
            100,
            Span {
                end: 200,
                committed: 500,
            },
        );
        c.add_span(
            p,
            200,
            Span {
                end: 300,
                committed: 500,
            },
        );
        assert_eq!(c.covering(p, 100, 200).map(|(s, _)| s), Some(100));
        assert_eq!(c.covering(p, 150, 180).map(|(s, _)| s), Some(100));
        assert_eq!(c.covering(p, 250, 300).map(|(s, _)| s), Some(200));
        assert_eq!(c.covering(p, 190, 210), None, "no one span holds it");
        assert_eq!(c.covering(p, 50, 60), None);
        assert_eq!(c.covering(PackId(8), 150, 160), None);
        assert_eq!(c.bytes, 200);
        // A pinned range's pieces are never dropped; unpinned, the oldest go first.
        c.pin(p, 120, 130);
        assert_eq!(
            c.over(0, None),
            [Piece::span(p, 200)],
            "the other span goes"
        );
        c.add_span(
            p,
            200,
            Span {
                end: 300,
                committed: 500,
            },
        );
        c.unpin(p, 120, 130);
        assert_eq!(c.over(150, None), [Piece::span(p, 100)]);
        assert!(c.has_span_at(p, 200) && !c.has_span_at(p, 100));
        let gone = c.forget_pack(p);
        assert!(gone.contains(&Piece::span(p, 200)) && gone.contains(&Piece::whole(p)));
        assert_eq!(c.bytes, 0);
        assert!(c.spans.is_empty());
    }
}
