//! Ingest: reader -> FastCDC -> BLAKE3 -> dedup lookup -> compress-or-keep-raw -> pack -> fsync ->
//! one metadata commit.
//!
//! Protocol (docs/DESIGN.md analyses a crash at each step):
//! 1. the user's number: the committed one, or for a user without a row a number reserved in
//!    memory (`UserNos`); nothing is written for it until step 4;
//! 2. chunks new to the track's copy domain are appended to packs this ingest holds exclusively;
//! 3. every pack it appended to is fsynced;
//! 4. one metadata transaction inserts the user's row if it is new, the new chunk entries, adds
//!    the references, drops the
//!    references of a replaced track, records the packs' new committed lengths and updates the
//!    counters, and commits durably. Only then does `put` return `Ok`.
//!
//! If anything fails before the packs are synced, the appended tails are cut off again and nothing
//! is visible. If the fsync or the commit fails, the packs are retired instead (the commit may
//! have reached the disk); the next open cuts whatever no committed metadata covers.

pub(crate) mod upload;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::{ChunkEntry, ChunkRef, RecordHeader, TrackAudio, TrackRecord, UserRow};
use crate::ids::{ChunkId, Domain, TrackKey, UserId, UserNo};
use crate::index::refs::{
    Accounting, PackDelta, add_recording, add_ref, drop_refs, insert_entry, remove_recording,
};
use crate::index::{MetaWrite, counter_keys as ck};
use crate::pack::ActivePack;
use crate::pack::codec;
use crate::segment::Format;
use crate::store::{PutOutcome, Store};
use crate::write::upload::chunk_upload;

/// Packs held and entries pinned by one ingest.
struct Held<'a> {
    inner: &'a crate::store::Inner,
    current: Option<ActivePack>,
    full: Vec<ActivePack>,
    pinned: Vec<(Domain, ChunkId)>,
}

impl Held<'_> {
    fn take_all(&mut self) -> Vec<ActivePack> {
        let mut all = std::mem::take(&mut self.full);
        all.extend(self.current.take());
        all
    }
}

/// Unpins even if the put panics, so GC and migration are never blocked by a dead ingest.
impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.inner.unpin(&self.pinned);
    }
}

/// Everything one put changes in the metadata, owned, so a group commit can apply it on any
/// thread.
#[derive(Debug)]
pub(crate) struct PutCommit {
    user: UserId,
    user_no: UserNo,
    key: TrackKey,
    domain: Domain,
    written: HashMap<ChunkId, ChunkEntry>,
    track: TrackRecord,
    pack_deltas: HashMap<crate::ids::PackId, PackDelta>,
}

impl PutCommit {
    /// Applies the put inside a write transaction; returns whether it replaced a track.
    pub(crate) fn apply(&self, w: &mut dyn MetaWrite) -> Result<bool> {
        let (domain, user, user_no, key, track) = (
            self.domain,
            &self.user,
            self.user_no,
            &self.key,
            &self.track,
        );
        let mut acc = Accounting {
            packs: self.pack_deltas.clone(),
            ..Accounting::default()
        };
        // New records: insert, unless an identical record was committed meanwhile by a
        // concurrent ingest, in which case ours is an orphan and theirs is used.
        for (id, entry) in &self.written {
            if w.chunk(domain, id)?.is_some() {
                acc.orphan_record(entry.pack, entry.record_len());
            } else {
                insert_entry(w, domain, id, *entry, &mut acc)?;
            }
        }
        for c in &track.chunks {
            add_ref(w, domain, &c.id, &mut acc)?;
        }
        let mut row = match w.user(user.as_str())? {
            Some(row) if row.no == user_no.0 => row,
            Some(row) => {
                return Err(Error::corrupted(format!(
                    "user {user} has number {} but the put was given {}",
                    row.no, user_no.0
                )));
            }
            None => {
                // The user's first track: the row and its reserved number commit with it, so a
                // put that fails leaves no user behind.
                if let Some(other) = w.user_name(user_no)? {
                    return Err(Error::corrupted(format!(
                        "user number {} reserved for {user} belongs to {other:?}",
                        user_no.0
                    )));
                }
                let next = w.counter(ck::NEXT_USER_NO)?;
                w.set_counter(ck::NEXT_USER_NO, next.max(user_no.0 + 1))?;
                w.put_user_name(user_no, user.as_str())?;
                UserRow {
                    no: user_no.0,
                    logical_bytes: 0,
                    tracks: 0,
                }
            }
        };
        let old = w.track(user_no, key.as_str())?;
        if let Some(old) = &old {
            drop_refs(w, old, &mut acc)?;
            remove_recording(w, old, user_no, key.as_str(), &mut acc)?;
            row.logical_bytes = row.logical_bytes.checked_sub(old.len).ok_or_else(|| {
                Error::corrupted(format!("user {user}: logical bytes below a track's size"))
            })?;
            acc.logical_bytes -= old.len as i64;
        } else {
            row.tracks += 1;
            acc.tracks += 1;
            if row.tracks == 1 {
                acc.users += 1;
            }
        }
        row.logical_bytes += track.len;
        acc.logical_bytes += track.len as i64;
        add_recording(w, track, user_no, key.as_str(), &mut acc)?;
        w.put_track(user_no, key.as_str(), track)?;
        w.put_user(user.as_str(), &row)?;
        acc.apply(w)?;
        Ok(old.is_some())
    }
}

/// The on-disk code of a container format (see `TrackAudio::format`).
pub(crate) fn format_code(f: Format) -> u8 {
    match f {
        Format::Mp3 => 1,
        Format::Flac => 2,
        Format::Mp4 => 3,
        Format::OggVorbis => 4,
        Format::OggOpus => 5,
        Format::Unknown => 0,
    }
}

/// The name of a format code.
pub(crate) fn format_name(code: u8) -> &'static str {
    match code {
        1 => "mp3",
        2 => "flac",
        3 => "mp4",
        4 => "ogg-vorbis",
        5 => "ogg-opus",
        _ => "unknown",
    }
}

impl Store {
    /// Stores the bytes of `reader` as `user`'s track `key`, replacing any track under that key
    /// atomically. Memory use is bounded by the segmenter's window whatever the track's size.
    /// Returns once the track is durable. If it returns an error raised before the metadata
    /// commit (a failing reader, a full disk, a pack write or fsync error), nothing of it is
    /// visible, before or after a crash. If the commit itself fails (its fsync), the outcome is
    /// unknown, as for any database: the store is poisoned, and after reopening the track is
    /// either wholly there or wholly absent.
    ///
    /// In single-master mode the outcome's `new_chunks`/`new_bytes`, and the put's duration (a
    /// put of content already stored writes and syncs less), reveal whether another user holds
    /// the content: they are for the operator, never for the uploading client ([`PutOutcome`]).
    pub fn put(&self, user: &UserId, key: &TrackKey, reader: impl Read) -> Result<PutOutcome> {
        self.put_in(None, user, key, reader)
            .map(|out| out.expect("a put with no required mode always runs"))
    }

    /// A put that runs only under `mode`: `Ok(None)`, with nothing read or written, when the
    /// store's mode is another one at the moment the ingest registers (upload avoidance must
    /// never link a track under a mode that forbids it, even if the mode changed since it
    /// checked).
    pub(crate) fn put_if_mode(
        &self,
        mode: crate::ids::LicenseMode,
        user: &UserId,
        key: &TrackKey,
        reader: impl Read,
    ) -> Result<Option<PutOutcome>> {
        self.put_in(Some(mode), user, key, reader)
    }

    fn put_in(
        &self,
        required: Option<crate::ids::LicenseMode>,
        user: &UserId,
        key: &TrackKey,
        reader: impl Read,
    ) -> Result<Option<PutOutcome>> {
        if self.inner.free_space()? < self.inner.min_free_space {
            return Err(Error::DiskFull {
                op: "reserve free space for",
                path: self.inner.dir.clone(),
            });
        }
        let reserved = self.user_no_for_put(user)?;
        let user_no = reserved.no;
        let mode = self.inner.begin_ingest();
        // Ends the ingest even if the put panics, so migration never waits for it forever.
        struct Ending<'a>(&'a crate::store::Inner, crate::ids::LicenseMode);
        impl Drop for Ending<'_> {
            fn drop(&mut self) {
                self.0.end_ingest(self.1);
            }
        }
        let _ending = Ending(&self.inner, mode);
        if required.is_some_and(|m| m != mode) {
            return Ok(None);
        }
        self.put_under(user, user_no, key, mode, reader).map(Some)
    }

    fn put_under(
        &self,
        user: &UserId,
        user_no: UserNo,
        key: &TrackKey,
        mode: crate::ids::LicenseMode,
        reader: impl Read,
    ) -> Result<PutOutcome> {
        let domain = mode.domain_for(user_no);
        let mut held = Held {
            inner: &self.inner,
            current: None,
            full: Vec::new(),
            pinned: Vec::new(),
        };
        let result = self.put_inner(user, user_no, key, domain, reader, &mut held);
        let packs = &self.inner.packs;
        match result {
            Ok(outcome) => {
                for p in held.take_all() {
                    packs.committed(p);
                }
                Ok(outcome)
            }
            Err(e) => {
                for p in held.take_all() {
                    packs.abandon(p);
                }
                Err(e)
            }
        }
    }

    fn put_inner(
        &self,
        user: &UserId,
        user_no: UserNo,
        key: &TrackKey,
        domain: Domain,
        reader: impl Read,
        held: &mut Held<'_>,
    ) -> Result<PutOutcome> {
        let inner = &self.inner;
        let mut refs: Vec<ChunkRef> = Vec::new();
        // Chunks this ingest wrote, and chunks it found already stored in the domain.
        let mut written: HashMap<ChunkId, ChunkEntry> = HashMap::new();
        let mut existing: HashSet<ChunkId> = HashSet::new();
        let mut new_bytes = 0u64;
        let mut each = |plain: &[u8], id: ChunkId| -> Result<()> {
            refs.push(ChunkRef {
                id,
                len: plain.len() as u32,
            });
            if written.contains_key(&id) || existing.contains(&id) {
                return Ok(());
            }
            // A hit is pinned, so GC and migration leave the entry in place until our commit.
            // Content the filter has never seen in this domain is certainly new: no lookup.
            if inner.filter.may_contain(domain, &id) && inner.lookup_and_pin(domain, &id)? {
                held.pinned.push((domain, id));
                existing.insert(id);
                return Ok(());
            }
            let (codec, stored) = codec::encode(plain, inner.compression_level);
            let header = RecordHeader {
                codec,
                domain,
                id,
                plain_len: plain.len() as u32,
                stored_len: stored.len() as u32,
            };
            let pack = match &mut held.current {
                Some(p) => p,
                None => held.current.insert(inner.packs.take()?),
            };
            let offset = inner.packs.append(pack, &header, &stored)?;
            written.insert(
                id,
                ChunkEntry {
                    pack: pack.id,
                    offset,
                    stored_len: header.stored_len,
                    plain_len: header.plain_len,
                    codec,
                    refcount: 0,
                },
            );
            new_bytes += plain.len() as u64;
            if inner.packs.is_full(pack) {
                held.full.extend(held.current.take());
            }
            Ok(())
        };
        let upload = chunk_upload(
            &inner.chunker,
            &inner.cores,
            inner.segmenting,
            inner.segment_window,
            reader,
            &mut each,
        )?;
        for p in held.full.iter_mut().chain(held.current.iter_mut()) {
            if p.touched {
                inner.packs.sync(p)?;
            }
        }
        let track = TrackRecord {
            domain,
            len: upload.len,
            fingerprint: upload.fingerprint,
            stored_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            audio: upload.audio.map(|a| TrackAudio {
                format: format_code(upload.format),
                fingerprint: a.fingerprint,
                ranges: a.ranges,
            }),
            chunks: refs,
        };
        let mut pack_deltas: HashMap<_, PackDelta> = HashMap::new();
        for p in held.full.iter().chain(held.current.iter()) {
            if p.touched {
                pack_deltas.insert(
                    p.id,
                    PackDelta {
                        dead_bytes: 0,
                        committed_len: Some(p.len),
                        sealed: inner.packs.is_full(p),
                    },
                );
            }
        }
        let new_chunks = written.len() as u64;
        let (len, fingerprint, chunks) = (track.len, track.fingerprint, track.chunks.len() as u64);
        let replaced = inner.group_commit.commit(
            inner.meta.as_ref(),
            PutCommit {
                user: user.clone(),
                user_no,
                key: key.clone(),
                domain,
                written,
                track,
                pack_deltas,
            },
        )?;
        Ok(PutOutcome {
            len,
            fingerprint,
            chunks,
            new_chunks,
            new_bytes,
            replaced,
        })
    }

    /// The user's number for a put: the committed one, or one reserved in memory until the put
    /// ends (its commit writes the row). Every put of a new user in flight gets the same number.
    fn user_no_for_put(&self, user: &UserId) -> Result<ReservedUserNo<'_>> {
        let inner = &self.inner;
        let mut nos = inner.user_nos.lock().expect("user numbers lock");
        if let Some((no, puts)) = nos.held.get_mut(user.as_str()) {
            *puts += 1;
            let no = UserNo(*no);
            return Ok(ReservedUserNo {
                nos: &inner.user_nos,
                user: Some(user.to_string()),
                no,
            });
        }
        // Read under the lock: a reservation is dropped only after its put's commit, so a user
        // without a reservation here either has a committed row in this snapshot or none at all.
        let snap = inner.meta.read()?;
        if let Some(row) = snap.user(user.as_str())? {
            return Ok(ReservedUserNo {
                nos: &inner.user_nos,
                user: None,
                no: UserNo(row.no),
            });
        }
        let no = snap.counter(ck::NEXT_USER_NO)?.max(nos.next);
        if no == 0 || no >= 1 << 56 {
            return Err(Error::corrupted("user number counter out of range"));
        }
        nos.next = no + 1;
        nos.held.insert(user.to_string(), (no, 1));
        Ok(ReservedUserNo {
            nos: &inner.user_nos,
            user: Some(user.to_string()),
            no: UserNo(no),
        })
    }
}

/// User numbers handed to puts of users that have no committed row yet.
///
/// A number is reserved in memory when such a user's first put starts, shared by every put of
/// that user in flight, and written (row, `user_names`, `next_user_no`) by the first of them to
/// commit. A reservation never collides with a committed number: it is at least `next_user_no`
/// and at least one past every number this process reserved. A put that fails leaves a gap in
/// the numbers and nothing else: no committed row, track or chunk entry names an unreserved
/// number (records its abandoned tails hold are cut or are orphans, which no entry points at).
#[derive(Debug, Default)]
pub(crate) struct UserNos {
    /// One past the largest number reserved by this process (0 when none was).
    next: u64,
    /// Users without a committed row: their reserved number and the puts in flight using it.
    held: HashMap<String, (u64, u32)>,
}

/// A put's user number; for a user without a committed row, held until the put ends.
struct ReservedUserNo<'a> {
    nos: &'a std::sync::Mutex<UserNos>,
    /// Set when the number is a reservation.
    user: Option<String>,
    no: UserNo,
}

/// Releases the reservation even if the put panics. By then the put has committed (the row
/// exists) or failed (the number is simply never used).
impl Drop for ReservedUserNo<'_> {
    fn drop(&mut self) {
        let Some(user) = &self.user else { return };
        let mut nos = self.nos.lock().expect("user numbers lock");
        if let Some((_, puts)) = nos.held.get_mut(user) {
            *puts -= 1;
            if *puts == 0 {
                nos.held.remove(user);
            }
        }
    }
}
