//! Reading tracks back: `Read + Seek` over the chunk list, every chunk verified against its id.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

pub(crate) mod catalog;
pub(crate) mod fetch;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::TrackRecord;
use crate::ids::Fingerprint;
use crate::names::{TrackKey, UserId};

use catalog::{TrackInfo, info};
use fetch::{Plain, load_chunk};

/// Tracks at least this long, read in order and fast, have their fingerprint hashed on a second
/// thread; others on the reading thread.
const FINGERPRINT_THREAD_MIN: u64 = 1 << 20;

/// "Fast": the second chunk is asked for within this time of the first. A player streaming at
/// playback pace asks for a chunk every few seconds and keeps hashing on its own thread (no
/// thread parked per stream); a copy, a download or a verification moves to two threads.
const FINGERPRINT_THREAD_PACE: std::time::Duration = std::time::Duration::from_millis(20);

/// Chunks queued for the fingerprint thread: raw chunks as references into the pack map,
/// compressed ones as their decoded bytes. Deep enough that the reading thread rarely waits for
/// the fingerprint thread to wake up (on this VM a wake-up per chunk cost a third of the read
/// rate: 56 % of one-thread BLAKE3 with 4 queued, 71 % with 32).
const FINGERPRINT_QUEUE: usize = 32;

/// The whole-track hash of the chunks read so far in order.
enum Feed {
    Here(Box<blake3::Hasher>),
    /// A thread hashing the chunks sent to it, in order.
    Thread(
        crossbeam::channel::Sender<Plain>,
        std::thread::JoinHandle<blake3::Hash>,
    ),
}

impl Feed {
    fn new() -> Feed {
        Feed::Here(Box::default())
    }

    /// Moves the hashing, with what was hashed so far, to a thread of its own. `None` if no
    /// thread could be started (the hasher went with the failed start: the reader then relies
    /// on its per-chunk checks alone).
    fn into_thread(self) -> Option<Feed> {
        let Feed::Here(mut h) = self else {
            return Some(self);
        };
        let (tx, rx) = crossbeam::channel::bounded::<Plain>(FINGERPRINT_QUEUE);
        std::thread::Builder::new()
            .name("lockerstore-fingerprint".into())
            .spawn(move || {
                for p in rx {
                    h.update(p.bytes());
                }
                h.finalize()
            })
            .ok()
            .map(|handle| Feed::Thread(tx, handle))
    }

    fn update(&mut self, p: &Plain) {
        match self {
            Feed::Here(h) => {
                h.update(p.bytes());
            }
            Feed::Thread(tx, _) => {
                // A send fails only if the thread died; `finish` reports that.
                let _ = tx.send(p.clone());
            }
        }
    }

    fn finish(self) -> Result<blake3::Hash> {
        match self {
            Feed::Here(h) => Ok(h.finalize()),
            Feed::Thread(tx, handle) => {
                drop(tx);
                handle
                    .join()
                    .map_err(|_| Error::corrupted("the fingerprint thread panicked"))
            }
        }
    }
}

/// Reads one track. Implements `Read + Seek`; a seek costs a binary search, and the next read at
/// most one chunk decode. Every chunk is checked against its BLAKE3 id; a read that runs from the
/// start to the end also checks the whole track's fingerprint. Errors are `io::Error`s wrapping a
/// [`crate::Error`] (kind `InvalidData` for corruption); [`Error::from_io`] unwraps them.
pub struct TrackReader {
    engine: Arc<Engine>,
    user: UserId,
    info: TrackInfo,
    track: TrackRecord,
    /// Opened by user and key: a chunk gone from the index sends the reader back to the track's
    /// current record, and a migrated track (same chunks, other domain) is followed. Opened from
    /// a record (`open_record`): exactly that record's chunks in its domain, or
    /// `TrackChanged`.
    follow: bool,
    /// Cumulative end offset of each chunk.
    ends: Vec<u64>,
    pos: u64,
    current: Option<(usize, Plain)>,
    /// Hash of the chunks covering bytes 0..hashed, loaded in order; dropped when a chunk is
    /// loaded out of order.
    hasher: Option<Feed>,
    /// When chunk 0 was loaded in order: the pace that decides whether to hash on a thread.
    first_loaded: Option<std::time::Instant>,
    hashed: u64,
    /// Set once the fingerprint check failed: no byte of the track is returned after that.
    failed: bool,
}

impl std::fmt::Debug for TrackReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackReader")
            .field("info", &self.info)
            .field("pos", &self.pos)
            .finish()
    }
}

/// Opens `user`'s track `key` for reading (see `Store::open_track`).
pub(crate) fn open_track(
    engine: &Arc<Engine>,
    user: &UserId,
    key: &TrackKey,
) -> Result<TrackReader> {
    let track = engine.track_record(user, key)?;
    Ok(reader_of(engine, user, key, track, true))
}

/// A reader of exactly `track`, a record the caller read once (`user`'s track `key` at that
/// time): it never looks the track up again, so a concurrent replace, delete or migration
/// cannot change what it returns. Every chunk is still verified against its id, and a chunk
/// whose entry is gone from the record's domain (freed by GC, moved by a migration) is
/// `TrackChanged`, never other bytes.
pub(crate) fn open_record(
    engine: &Arc<Engine>,
    user: &UserId,
    key: &TrackKey,
    track: TrackRecord,
) -> TrackReader {
    reader_of(engine, user, key, track, false)
}

fn reader_of(
    engine: &Arc<Engine>,
    user: &UserId,
    key: &TrackKey,
    track: TrackRecord,
    follow: bool,
) -> TrackReader {
    let mut ends = Vec::with_capacity(track.chunks.len());
    let mut end = 0u64;
    for c in &track.chunks {
        end += u64::from(c.len);
        ends.push(end);
    }
    TrackReader {
        engine: engine.clone(),
        user: user.clone(),
        info: info(key.clone(), &track),
        track,
        follow,
        ends,
        pos: 0,
        current: None,
        hasher: Some(Feed::new()),
        first_loaded: None,
        hashed: 0,
        failed: false,
    }
}

/// Reads a whole track into memory, verified.
pub(crate) fn read_track(engine: &Arc<Engine>, user: &UserId, key: &TrackKey) -> Result<Vec<u8>> {
    let mut r = open_track(engine, user, key)?;
    let mut out = Vec::with_capacity(r.len() as usize);
    r.read_to_end(&mut out).map_err(Error::from_io)?;
    Ok(out)
}

impl TrackReader {
    /// The track's length.
    pub fn len(&self) -> u64 {
        self.track.len
    }

    /// True for an empty track.
    pub fn is_empty(&self) -> bool {
        self.track.len == 0
    }

    /// Facts about the track.
    pub fn info(&self) -> &TrackInfo {
        &self.info
    }

    /// The track's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.track.fingerprint
    }

    fn chunk_index(&self, pos: u64) -> usize {
        self.ends.partition_point(|&end| end <= pos)
    }

    /// Loads chunk `idx`. When its entry is gone, the track record is read again: a migrated
    /// track (same bytes, other domain) is followed; a deleted or replaced one is an error. A
    /// reader of a given record does not look again: the entry being gone is the error.
    fn load(&mut self, idx: usize) -> Result<Plain> {
        let r = self.track.chunks[idx];
        if let Some(p) = load_chunk(&self.engine, self.track.domain, &r)? {
            return Ok(p);
        }
        let changed = || Error::TrackChanged {
            user: self.user.to_string(),
            key: self.info.key.to_string(),
        };
        if !self.follow {
            return Err(changed());
        }
        let now = match self.engine.track_record(&self.user, &self.info.key) {
            Ok(t) => t,
            Err(Error::TrackNotFound { .. }) | Err(Error::UnknownUser(_)) => return Err(changed()),
            Err(e) => return Err(e),
        };
        if now.fingerprint != self.track.fingerprint || now.chunks != self.track.chunks {
            return Err(changed());
        }
        if now.domain == self.track.domain {
            return Err(Error::corrupted(format!(
                "chunk {} of track {} missing from the index",
                r.id, self.info.key
            )));
        }
        self.track.domain = now.domain;
        load_chunk(&self.engine, self.track.domain, &r)?
            .ok_or_else(|| Error::corrupted(format!("chunk {} missing from the index", r.id)))
    }

    fn check_fingerprint(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::corrupted(format!(
                "track {} failed its fingerprint check",
                self.info.key
            )));
        }
        if self.hashed == self.track.len
            && let Some(h) = self.hasher.take()
        {
            let got = Fingerprint::from(h.finish()?);
            if got != self.track.fingerprint {
                self.failed = true;
                return Err(Error::corrupted(format!(
                    "track {} bytes hash to {got}, expected {}",
                    self.info.key, self.track.fingerprint
                )));
            }
        }
        Ok(())
    }
}

impl Read for TrackReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(self.check_fingerprint().expect_err("failed").into_io());
        }
        if self.pos >= self.track.len || buf.is_empty() {
            if self.pos >= self.track.len {
                self.check_fingerprint().map_err(Error::into_io)?;
            }
            return Ok(0);
        }
        let idx = self.chunk_index(self.pos);
        let start = if idx == 0 { 0 } else { self.ends[idx - 1] };
        if self.current.as_ref().is_none_or(|(i, _)| *i != idx) {
            let plain = self.load(idx).map_err(Error::into_io)?;
            // Chunks loaded in order feed the whole-track fingerprint, a chunk at a time (BLAKE3
            // is fastest on large updates), on a second thread for a large track read fast; any
            // other order gives up the whole-track check (until chunk 0 is read again with
            // nothing hashed).
            if idx == 0 && self.hashed == 0 {
                self.hasher.get_or_insert_with(Feed::new);
                self.first_loaded = Some(std::time::Instant::now());
            }
            if idx == 1
                && self.hashed == start
                && self.track.len >= FINGERPRINT_THREAD_MIN
                && self
                    .first_loaded
                    .is_some_and(|t| t.elapsed() < FINGERPRINT_THREAD_PACE)
            {
                self.hasher = self.hasher.take().and_then(Feed::into_thread);
            }
            if self.hashed == start {
                if let Some(h) = &mut self.hasher {
                    h.update(&plain);
                    self.hashed = self.ends[idx];
                }
            } else {
                self.hasher = None;
            }
            if self.hashed == self.track.len {
                self.check_fingerprint().map_err(Error::into_io)?;
            }
            self.current = Some((idx, plain));
        }
        let (_, plain) = self.current.as_ref().expect("loaded above");
        let bytes = plain.bytes();
        let from = (self.pos - start) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for TrackReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.track.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_thread_hashes_what_the_reading_thread_would() {
        let chunks: Vec<Vec<u8>> = (0..9u8)
            .map(|i| vec![i; 300_000 + usize::from(i)])
            .collect();
        let mut here = Feed::new();
        let mut thread = Feed::new();
        let mut all = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if i == 2 {
                // Moves after two chunks, with what it hashed so far.
                thread = thread.into_thread().unwrap();
            }
            let p = Plain::Owned(Arc::new(c.clone()));
            here.update(&p);
            thread.update(&p);
            all.extend_from_slice(c);
        }
        assert!(matches!(here, Feed::Here(_)));
        assert!(matches!(thread, Feed::Thread(..)));
        let want = blake3::hash(&all);
        assert_eq!(here.finish().unwrap(), want);
        assert_eq!(thread.finish().unwrap(), want);
    }
}
