//! Reference counting and exact accounting inside a metadata write transaction.
//!
//! Every chunk entry is either live (refcount > 0: counted in `live_bytes`/`live_chunks`) or
//! garbage (refcount 0: counted in `garbage_chunks`, revivable by a dedup hit until GC removes
//! it). Every record in a pack that no live entry needs is dead: counted in `garbage_bytes` and in
//! its pack's `dead_bytes` until compaction deletes the pack. Dead records are the garbage
//! entries' records, records whose entry GC removed, and orphans (records that lost a race to
//! an identical one committed first). A new entry is inserted as garbage and made live by its
//! first reference, so every transition goes through `add_ref` and `drop_ref` and the counters
//! can never drift from a recount.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::format::{ChunkEntry, PackRow, TrackRecord, UserRow};
use crate::ids::{AudioFingerprint, ChunkId, Domain, PackId, UserNo};
use crate::index::{MetaWrite, counter_keys as ck};
use crate::names::{TrackKey, UserId};
use crate::pack::session::Appended;

/// Counter changes of one transaction, written once at the end.
#[derive(Debug, Default)]
pub(crate) struct Accounting {
    pub recordings: i64,
    pub logical_bytes: i64,
    pub tracks: i64,
    pub users: i64,
    pub live_bytes: i64,
    pub live_chunks: i64,
    pub garbage_bytes: i64,
    pub garbage_chunks: i64,
    /// Per pack: change of dead bytes, and a new committed length / sealed flag if any.
    pub packs: HashMap<PackId, PackDelta>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PackDelta {
    pub dead_bytes: i64,
    pub committed_len: Option<u64>,
    pub sealed: bool,
}

impl Accounting {
    fn make_garbage(&mut self, e: &ChunkEntry) {
        let n = e.record_len() as i64;
        self.live_bytes -= n;
        self.live_chunks -= 1;
        self.garbage_bytes += n;
        self.garbage_chunks += 1;
        self.packs.entry(e.pack).or_default().dead_bytes += n;
    }

    fn make_live(&mut self, e: &ChunkEntry) {
        let n = e.record_len() as i64;
        self.live_bytes += n;
        self.live_chunks += 1;
        self.garbage_bytes -= n;
        self.garbage_chunks -= 1;
        self.packs.entry(e.pack).or_default().dead_bytes -= n;
    }

    /// Records where a pack session's appends end (new committed lengths, packs sealed).
    pub(crate) fn record_appends(&mut self, appended: &[Appended]) {
        for a in appended {
            let d = self.packs.entry(a.pack).or_default();
            d.committed_len = Some(a.committed_len);
            d.sealed |= a.sealed;
        }
    }

    /// A record written to a pack that no entry will point at (an identical record was committed
    /// first): garbage from the start.
    pub(crate) fn orphan_record(&mut self, pack: PackId, record_len: u64) {
        self.garbage_bytes += record_len as i64;
        self.packs.entry(pack).or_default().dead_bytes += record_len as i64;
    }

    /// Writes the counters and pack rows.
    pub(crate) fn apply(&self, w: &mut dyn MetaWrite) -> Result<()> {
        for (key, delta) in [
            (ck::LOGICAL_BYTES, self.logical_bytes),
            (ck::TRACKS, self.tracks),
            (ck::USERS, self.users),
            (ck::LIVE_BYTES, self.live_bytes),
            (ck::LIVE_CHUNKS, self.live_chunks),
            (ck::GARBAGE_BYTES, self.garbage_bytes),
            (ck::GARBAGE_CHUNKS, self.garbage_chunks),
            (ck::RECORDINGS, self.recordings),
        ] {
            if delta != 0 {
                w.add_counter(key, delta)?;
            }
        }
        for (&id, d) in &self.packs {
            let existing = w.pack(id)?;
            if existing.is_none() && w.counter(ck::NEXT_PACK_ID)? <= id.0 {
                w.set_counter(ck::NEXT_PACK_ID, id.0 + 1)?;
            }
            let mut row = existing.unwrap_or(PackRow {
                sealed: false,
                committed_len: 0,
                dead_bytes: 0,
            });
            row.dead_bytes = row
                .dead_bytes
                .checked_add_signed(d.dead_bytes)
                .ok_or_else(|| Error::corrupted(format!("pack {id} dead bytes would underflow")))?;
            if let Some(len) = d.committed_len {
                row.committed_len = row.committed_len.max(len);
            }
            row.sealed |= d.sealed;
            if row.committed_len == 0 {
                return Err(Error::corrupted(format!(
                    "pack {id} is referenced but was never registered"
                )));
            }
            w.put_pack(id, &row)?;
        }
        Ok(())
    }
}

/// Inserts a new entry for a record just written (as garbage; the first `add_ref` makes it
/// live), unless the key has an entry already (an identical record a concurrent writer
/// committed first): then the new record is an orphan and the existing entry is used.
pub(crate) fn insert_entry(
    w: &mut dyn MetaWrite,
    domain: Domain,
    id: &ChunkId,
    entry: ChunkEntry,
    acc: &mut Accounting,
) -> Result<()> {
    debug_assert_eq!(entry.refcount, 0);
    acc.orphan_record(entry.pack, entry.record_len());
    if w.insert_chunk_if_absent(domain, id, &entry)?.is_none() {
        acc.garbage_chunks += 1;
    }
    Ok(())
}

fn existing(w: &dyn MetaWrite, domain: Domain, id: &ChunkId) -> Result<ChunkEntry> {
    w.chunk(domain, id)?
        .ok_or_else(|| Error::corrupted(format!("chunk {id} missing from the index")))
}

/// Adds one reference to an existing entry, reviving it if it was garbage.
pub(crate) fn add_ref(
    w: &mut dyn MetaWrite,
    domain: Domain,
    id: &ChunkId,
    acc: &mut Accounting,
) -> Result<()> {
    let mut e = existing(w, domain, id)?;
    if e.refcount == 0 {
        acc.make_live(&e);
    }
    e.refcount += 1;
    w.put_chunk(domain, id, &e)
}

/// Drops one reference from an entry; at zero it becomes garbage (kept until GC).
pub(crate) fn drop_ref(
    w: &mut dyn MetaWrite,
    domain: Domain,
    id: &ChunkId,
    acc: &mut Accounting,
) -> Result<()> {
    let mut e = existing(w, domain, id)?;
    if e.refcount == 0 {
        return Err(Error::corrupted(format!("chunk {id} refcount underflow")));
    }
    e.refcount -= 1;
    if e.refcount == 0 {
        acc.make_garbage(&e);
    }
    w.put_chunk(domain, id, &e)
}

/// Records that `user`'s track `key` holds its recording (if the segmenter found one).
pub(crate) fn add_recording(
    w: &mut dyn MetaWrite,
    t: &TrackRecord,
    user: UserNo,
    key: &TrackKey,
    acc: &mut Accounting,
) -> Result<()> {
    if let Some(a) = &t.audio {
        let fp = AudioFingerprint(a.fingerprint);
        if w.recording_holders(&fp, 1)?.is_empty() {
            acc.recordings += 1;
        }
        w.put_recording(&fp, user, key)?;
    }
    Ok(())
}

/// Forgets that `user`'s track `key` holds its recording.
pub(crate) fn remove_recording(
    w: &mut dyn MetaWrite,
    t: &TrackRecord,
    user: UserNo,
    key: &TrackKey,
    acc: &mut Accounting,
) -> Result<()> {
    if let Some(a) = &t.audio {
        let fp = AudioFingerprint(a.fingerprint);
        w.remove_recording(&fp, user, key)?;
        if w.recording_holders(&fp, 1)?.is_empty() {
            acc.recordings -= 1;
        }
    }
    Ok(())
}

/// Drops every reference a track holds.
pub(crate) fn drop_refs(
    w: &mut dyn MetaWrite,
    t: &TrackRecord,
    acc: &mut Accounting,
) -> Result<()> {
    for c in &t.chunks {
        drop_ref(w, t.domain, &c.id, acc)?;
    }
    Ok(())
}

/// Removes `user`'s committed track `key` (record `t`, user row `row`): drops its references,
/// its recording entry and the record, and takes its size and count off the user and the
/// store. The one way a committed track leaves the metadata (delete, dropping damaged tracks).
/// Drops the quota exemption of `user`'s track `key` of `len` bytes, if it has one.
pub(crate) fn release_exemption(
    w: &mut dyn MetaWrite,
    user: UserNo,
    key: &TrackKey,
    len: u64,
) -> Result<()> {
    if !w.quota_exempt(user, key)? {
        return Ok(());
    }
    let mut q = w.quota(user)?.unwrap_or_default();
    let under = || Error::corrupted(format!("user number {}: exempt usage underflow", user.0));
    q.exempt_bytes = q.exempt_bytes.checked_sub(len).ok_or_else(under)?;
    q.exempt_tracks = q.exempt_tracks.checked_sub(1).ok_or_else(under)?;
    w.put_quota(user, &q)?;
    w.set_quota_exempt(user, key, false)
}

/// Marks `user`'s track `key` of `len` bytes exempt from the quota.
pub(crate) fn grant_exemption(
    w: &mut dyn MetaWrite,
    user: UserNo,
    key: &TrackKey,
    len: u64,
) -> Result<()> {
    let mut q = w.quota(user)?.unwrap_or_default();
    q.exempt_bytes += len;
    q.exempt_tracks += 1;
    w.put_quota(user, &q)?;
    w.set_quota_exempt(user, key, true)
}

pub(crate) fn unlink_track(
    w: &mut dyn MetaWrite,
    user: &UserId,
    row: &UserRow,
    key: &TrackKey,
    t: &TrackRecord,
    acc: &mut Accounting,
) -> Result<()> {
    let no = UserNo(row.no);
    drop_refs(w, t, acc)?;
    remove_recording(w, t, no, key, acc)?;
    release_exemption(w, no, key, t.len)?;
    w.remove_track(no, key)?;
    let new_row = UserRow {
        no: row.no,
        logical_bytes: row.logical_bytes.checked_sub(t.len).ok_or_else(|| {
            Error::corrupted(format!("user {user}: logical bytes below a track's size"))
        })?,
        tracks: row
            .tracks
            .checked_sub(1)
            .ok_or_else(|| Error::corrupted(format!("user {user}: track count underflow")))?,
    };
    w.put_user(user, &new_row)?;
    acc.logical_bytes -= t.len as i64;
    acc.tracks -= 1;
    if new_row.tracks == 0 {
        acc.users -= 1;
    }
    Ok(())
}
