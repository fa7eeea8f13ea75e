//! The metadata journal: every metadata commit as a list of row changes ([`MetaOp`]), so a
//! store whose packs live in a bucket keeps there everything that rebuilds its metadata.
//!
//! The bucket's `meta/` folder holds two kinds of objects (docs/DESIGN.md 13.8 has the bytes):
//! - `meta/<seq as 16 lower-case hex>.log`: the changes of commit number `seq`, written by
//!   [`JournaledMeta::write`] inside the commit's transaction, after the closure ran and before
//!   the transaction commits. A commit whose journal object cannot be written fails.
//! - `meta/<seq>.ckpt`: every row of the metadata as of commit `seq` (a *checkpoint*), so the
//!   logs up to `seq` can go.
//!
//! The metadata keeps the number of its last journaled commit (`state["journal_seq"]`), in the
//! same transaction. The log is the commit point: a commit whose log is in the bucket happened,
//! even when the local transaction then failed or a crash cut it (its outcome was unknown, as
//! with a failed fsync of the commit itself). Open applies the logs past the metadata's number
//! (`Journal::reconcile`); rebuild replays the newest checkpoint and the logs after it, in
//! order (`replay`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::{
    CHUNK_ENTRY_LEN, ChunkEntry, PACK_ROW_LEN, PackRow, QUOTA_ROW_LEN, QuotaRow, TrackRecord,
    USER_ROW_LEN, UserRow,
};
use crate::ids::{AudioFingerprint, ChunkId, Domain, PackId, UserNo};

use super::{MetaRead, MetaStore, MetaWrite, state_keys as sk, stored_track_key, stored_user_id};
use crate::names::{TrackKey, UserId};

/// One row change, as stored: names as strings, rows in their `format.rs` encodings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MetaOp {
    SetState(String, Vec<u8>),
    SetCounter(String, u64),
    PutUser(String, [u8; USER_ROW_LEN]),
    PutUserName(u64, String),
    PutTrack(u64, String, Vec<u8>),
    RemoveTrack(u64, String),
    PutChunk(u64, [u8; 32], [u8; CHUNK_ENTRY_LEN]),
    RemoveChunk(u64, [u8; 32]),
    PutPack(u64, [u8; PACK_ROW_LEN]),
    RemovePack(u64),
    PutQuota(u64, [u8; QUOTA_ROW_LEN]),
    SetQuotaExempt(u64, String, bool),
    PutRecording([u8; 32], u64, String),
    RemoveRecording([u8; 32], u64, String),
}

/// State keys that are this node's own and never journaled or checkpointed: the journal's
/// position, and where the packs live (given again to `rebuild`).
pub(crate) fn node_local(key: &str) -> bool {
    key == sk::JOURNAL_SEQ || key == sk::OBJECT_PACKS
}

impl MetaOp {
    fn encode(&self, out: &mut Vec<u8>) {
        fn s(out: &mut Vec<u8>, v: &str) {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        fn n(out: &mut Vec<u8>, v: u64) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        match self {
            MetaOp::SetState(k, v) => {
                out.push(1);
                s(out, k);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            MetaOp::SetCounter(k, v) => {
                out.push(2);
                s(out, k);
                n(out, *v);
            }
            MetaOp::PutUser(id, row) => {
                out.push(3);
                s(out, id);
                out.extend_from_slice(row);
            }
            MetaOp::PutUserName(no, id) => {
                out.push(4);
                n(out, *no);
                s(out, id);
            }
            MetaOp::PutTrack(user, key, rec) => {
                out.push(5);
                n(out, *user);
                s(out, key);
                out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
                out.extend_from_slice(rec);
            }
            MetaOp::RemoveTrack(user, key) => {
                out.push(6);
                n(out, *user);
                s(out, key);
            }
            MetaOp::PutChunk(domain, id, entry) => {
                out.push(7);
                n(out, *domain);
                out.extend_from_slice(id);
                out.extend_from_slice(entry);
            }
            MetaOp::RemoveChunk(domain, id) => {
                out.push(8);
                n(out, *domain);
                out.extend_from_slice(id);
            }
            MetaOp::PutPack(id, row) => {
                out.push(9);
                n(out, *id);
                out.extend_from_slice(row);
            }
            MetaOp::RemovePack(id) => {
                out.push(10);
                n(out, *id);
            }
            MetaOp::PutQuota(user, row) => {
                out.push(11);
                n(out, *user);
                out.extend_from_slice(row);
            }
            MetaOp::SetQuotaExempt(user, key, exempt) => {
                out.push(12);
                n(out, *user);
                s(out, key);
                out.push(u8::from(*exempt));
            }
            MetaOp::PutRecording(fp, user, key) => {
                out.push(13);
                out.extend_from_slice(fp);
                n(out, *user);
                s(out, key);
            }
            MetaOp::RemoveRecording(fp, user, key) => {
                out.push(14);
                out.extend_from_slice(fp);
                n(out, *user);
                s(out, key);
            }
        }
    }

    /// Decodes one op from the front of `r`; damaged bytes are `Corrupted`, never a panic.
    fn decode(r: &mut Reader<'_>) -> Result<MetaOp> {
        Ok(match r.u8()? {
            1 => {
                let k = r.string()?;
                // The node's own keys are never journaled: an object that sets one is not ours.
                if node_local(&k) {
                    return Err(r.bad(&format!("a change of the node-local state key {k:?}")));
                }
                let len = r.u32()? as usize;
                MetaOp::SetState(k, r.take(len)?.to_vec())
            }
            2 => MetaOp::SetCounter(r.string()?, r.u64()?),
            3 => MetaOp::PutUser(r.string()?, r.array()?),
            4 => MetaOp::PutUserName(r.u64()?, r.string()?),
            5 => {
                let user = r.u64()?;
                let key = r.string()?;
                let len = r.u32()? as usize;
                MetaOp::PutTrack(user, key, r.take(len)?.to_vec())
            }
            6 => MetaOp::RemoveTrack(r.u64()?, r.string()?),
            7 => MetaOp::PutChunk(r.u64()?, r.array()?, r.array()?),
            8 => MetaOp::RemoveChunk(r.u64()?, r.array()?),
            9 => MetaOp::PutPack(r.u64()?, r.array()?),
            10 => MetaOp::RemovePack(r.u64()?),
            11 => MetaOp::PutQuota(r.u64()?, r.array()?),
            12 => {
                let user = r.u64()?;
                let key = r.string()?;
                let exempt = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.bad("a flag that is neither 0 nor 1")),
                };
                MetaOp::SetQuotaExempt(user, key, exempt)
            }
            13 => MetaOp::PutRecording(r.array()?, r.u64()?, r.string()?),
            14 => MetaOp::RemoveRecording(r.array()?, r.u64()?, r.string()?),
            tag => return Err(r.bad(&format!("unknown op tag {tag}"))),
        })
    }

    /// Applies the change to `w`, checking names and rows as a read of them would.
    pub(crate) fn apply(&self, w: &mut dyn MetaWrite) -> Result<()> {
        let user = |s: &str| stored_user_id(s);
        let key = |s: &str| stored_track_key(s);
        let domain =
            |d: u64| Domain::from_u64(d).ok_or_else(|| Error::corrupted("journal: unknown domain"));
        match self {
            MetaOp::SetState(k, v) => w.set_state(k, v),
            MetaOp::SetCounter(k, v) => w.set_counter(k, *v),
            MetaOp::PutUser(id, row) => w.put_user(&user(id)?, &UserRow::decode(row)),
            MetaOp::PutUserName(no, id) => w.put_user_name(UserNo(*no), &user(id)?),
            MetaOp::PutTrack(u, k, rec) => {
                w.put_track(UserNo(*u), &key(k)?, &TrackRecord::decode(rec)?)
            }
            MetaOp::RemoveTrack(u, k) => w.remove_track(UserNo(*u), &key(k)?),
            MetaOp::PutChunk(d, id, entry) => {
                w.put_chunk(domain(*d)?, &ChunkId(*id), &ChunkEntry::decode(entry)?)
            }
            MetaOp::RemoveChunk(d, id) => w.remove_chunk(domain(*d)?, &ChunkId(*id)),
            MetaOp::PutPack(id, row) => w.put_pack(PackId(*id), &PackRow::decode(row)?),
            MetaOp::RemovePack(id) => w.remove_pack(PackId(*id)),
            MetaOp::PutQuota(u, row) => w.put_quota(UserNo(*u), &QuotaRow::decode(row)),
            MetaOp::SetQuotaExempt(u, k, e) => w.set_quota_exempt(UserNo(*u), &key(k)?, *e),
            MetaOp::PutRecording(fp, u, k) => {
                w.put_recording(&AudioFingerprint(*fp), UserNo(*u), &key(k)?)
            }
            MetaOp::RemoveRecording(fp, u, k) => {
                w.remove_recording(&AudioFingerprint(*fp), UserNo(*u), &key(k)?)
            }
        }
    }
}

/// A bounds-checked cursor over an object's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn bad(&self, problem: &str) -> Error {
        Error::corrupted(format!(
            "journal object {}: {problem} at byte {}",
            self.what, self.at
        ))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() - self.at < n {
            return Err(self.bad("truncated"));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("a name that is not UTF-8"))
    }
}

/// What an object of the journal holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// One commit's changes.
    Log = 1,
    /// Every row as of a commit.
    Checkpoint = 2,
}

const MAGIC: [u8; 4] = *b"LSMJ";
/// Version of the journal objects' format (docs/DESIGN.md 13.8).
pub(crate) const JOURNAL_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 48;
const CHECK_LEN: usize = 32;

/// The bytes of a journal object: header, ops, BLAKE3 of all before.
pub(crate) fn encode_object(store_id: &[u8; 16], kind: Kind, seq: u64, ops: &[MetaOp]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + ops.len() * 64 + CHECK_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&JOURNAL_FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&[0; 7]);
    out.extend_from_slice(store_id);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(ops.len() as u64).to_le_bytes());
    for op in ops {
        op.encode(&mut out);
    }
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    out
}

/// Decodes a journal object, checking its checksum, store, kind and number.
pub(crate) fn decode_object(
    bytes: &[u8],
    what: &str,
    store_id: &[u8; 16],
    kind: Kind,
    seq: u64,
) -> Result<Vec<MetaOp>> {
    let bad = |problem: &str| Error::corrupted(format!("journal object {what}: {problem}"));
    if bytes.len() < HEADER_LEN + CHECK_LEN {
        return Err(bad("shorter than its header"));
    }
    let (body, check) = bytes.split_at(bytes.len() - CHECK_LEN);
    if blake3::hash(body).as_bytes() != check {
        return Err(bad("checksum mismatch"));
    }
    if body[0..4] != MAGIC {
        return Err(bad("not a journal object (bad magic)"));
    }
    let version = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes"));
    if version != JOURNAL_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: what.into(),
            found: version,
            supported: JOURNAL_FORMAT_VERSION,
        });
    }
    if body[8] != kind as u8 {
        return Err(bad("of another kind than its name says"));
    }
    if &body[16..32] != store_id {
        return Err(bad("of another store"));
    }
    if u64::from_le_bytes(body[32..40].try_into().expect("8 bytes")) != seq {
        return Err(bad("numbered otherwise than its name"));
    }
    let count = u64::from_le_bytes(body[40..48].try_into().expect("8 bytes"));
    let mut r = Reader {
        bytes: body,
        at: HEADER_LEN,
        what,
    };
    // Each op takes at least 9 bytes: a count beyond that is damage, not an allocation.
    let mut ops =
        Vec::with_capacity(usize::try_from(count.min((body.len() / 9) as u64)).unwrap_or(0));
    for _ in 0..count {
        ops.push(MetaOp::decode(&mut r)?);
    }
    if r.at != body.len() {
        return Err(bad("bytes after its last op"));
    }
    Ok(ops)
}

/// The name of a journal object within the prefix.
pub(crate) fn object_name(kind: Kind, seq: u64) -> String {
    match kind {
        Kind::Log => format!("meta/{seq:016x}.log"),
        Kind::Checkpoint => format!("meta/{seq:016x}.ckpt"),
    }
}

fn parse_name(name: &str) -> Option<(Kind, u64)> {
    let (num, ext) = name.split_once('.')?;
    let kind = match ext {
        "log" => Kind::Log,
        "ckpt" => Kind::Checkpoint,
        _ => return None,
    };
    if num.len() != 16
        || !num
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some((kind, u64::from_str_radix(num, 16).ok()?))
}

/// A `MetaWrite` that passes everything through and keeps a list of the changes.
pub(crate) struct Recorder<'a> {
    inner: &'a mut dyn MetaWrite,
    pub(crate) ops: Vec<MetaOp>,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(inner: &'a mut dyn MetaWrite) -> Recorder<'a> {
        Recorder {
            inner,
            ops: Vec::new(),
        }
    }
}

impl MetaRead for Recorder<'_> {
    fn state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.state(key)
    }
    fn counter(&self, key: &str) -> Result<u64> {
        self.inner.counter(key)
    }
    fn user(&self, id: &UserId) -> Result<Option<UserRow>> {
        self.inner.user(id)
    }
    fn user_name(&self, no: UserNo) -> Result<Option<UserId>> {
        self.inner.user_name(no)
    }
    fn users_raw(&self) -> Result<Vec<(String, UserRow)>> {
        self.inner.users_raw()
    }
    fn track(&self, user: UserNo, key: &TrackKey) -> Result<Option<TrackRecord>> {
        self.inner.track(user, key)
    }
    fn tracks_of(&self, user: UserNo) -> Result<Vec<(TrackKey, TrackRecord)>> {
        self.inner.tracks_of(user)
    }
    fn for_each_track_raw(
        &self,
        f: &mut dyn FnMut(UserNo, &str, TrackRecord) -> Result<()>,
    ) -> Result<()> {
        self.inner.for_each_track_raw(f)
    }
    fn chunk(&self, domain: Domain, id: &ChunkId) -> Result<Option<ChunkEntry>> {
        self.inner.chunk(domain, id)
    }
    fn chunks(&self, keys: &[(Domain, ChunkId)]) -> Result<Vec<Option<ChunkEntry>>> {
        self.inner.chunks(keys)
    }
    fn for_each_chunk(
        &self,
        f: &mut dyn FnMut(Domain, ChunkId, ChunkEntry) -> Result<()>,
    ) -> Result<()> {
        self.inner.for_each_chunk(f)
    }
    fn pack(&self, id: PackId) -> Result<Option<PackRow>> {
        self.inner.pack(id)
    }
    fn packs(&self) -> Result<Vec<(PackId, PackRow)>> {
        self.inner.packs()
    }
    fn quota(&self, user: UserNo) -> Result<Option<QuotaRow>> {
        self.inner.quota(user)
    }
    fn quota_exempt(&self, user: UserNo, key: &TrackKey) -> Result<bool> {
        self.inner.quota_exempt(user, key)
    }
    fn recording_holders(
        &self,
        fp: &AudioFingerprint,
        limit: usize,
    ) -> Result<Vec<(UserNo, TrackKey)>> {
        self.inner.recording_holders(fp, limit)
    }
    fn dump(&self, f: &mut dyn FnMut(MetaOp) -> Result<()>) -> Result<()> {
        self.inner.dump(f)
    }
}

impl MetaWrite for Recorder<'_> {
    fn set_state(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.set_state(key, value)?;
        if !node_local(key) {
            self.ops
                .push(MetaOp::SetState(key.to_owned(), value.to_vec()));
        }
        Ok(())
    }
    fn set_counter(&mut self, key: &str, value: u64) -> Result<()> {
        self.inner.set_counter(key, value)?;
        self.ops.push(MetaOp::SetCounter(key.to_owned(), value));
        Ok(())
    }
    fn put_user(&mut self, id: &UserId, row: &UserRow) -> Result<()> {
        self.inner.put_user(id, row)?;
        self.ops
            .push(MetaOp::PutUser(id.as_str().to_owned(), row.encode()));
        Ok(())
    }
    fn put_user_name(&mut self, no: UserNo, id: &UserId) -> Result<()> {
        self.inner.put_user_name(no, id)?;
        self.ops
            .push(MetaOp::PutUserName(no.0, id.as_str().to_owned()));
        Ok(())
    }
    fn put_track(&mut self, user: UserNo, key: &TrackKey, track: &TrackRecord) -> Result<()> {
        self.inner.put_track(user, key, track)?;
        self.ops.push(MetaOp::PutTrack(
            user.0,
            key.as_str().to_owned(),
            track.encode(),
        ));
        Ok(())
    }
    fn remove_track(&mut self, user: UserNo, key: &TrackKey) -> Result<()> {
        self.inner.remove_track(user, key)?;
        self.ops
            .push(MetaOp::RemoveTrack(user.0, key.as_str().to_owned()));
        Ok(())
    }
    fn put_chunk(&mut self, domain: Domain, id: &ChunkId, entry: &ChunkEntry) -> Result<()> {
        self.inner.put_chunk(domain, id, entry)?;
        self.ops
            .push(MetaOp::PutChunk(domain.to_u64(), id.0, entry.encode()));
        Ok(())
    }
    fn remove_chunk(&mut self, domain: Domain, id: &ChunkId) -> Result<()> {
        self.inner.remove_chunk(domain, id)?;
        self.ops.push(MetaOp::RemoveChunk(domain.to_u64(), id.0));
        Ok(())
    }
    fn put_pack(&mut self, id: PackId, row: &PackRow) -> Result<()> {
        self.inner.put_pack(id, row)?;
        self.ops.push(MetaOp::PutPack(id.0, row.encode()));
        Ok(())
    }
    fn remove_pack(&mut self, id: PackId) -> Result<()> {
        self.inner.remove_pack(id)?;
        self.ops.push(MetaOp::RemovePack(id.0));
        Ok(())
    }
    fn put_quota(&mut self, user: UserNo, row: &QuotaRow) -> Result<()> {
        self.inner.put_quota(user, row)?;
        self.ops.push(MetaOp::PutQuota(user.0, row.encode()));
        Ok(())
    }
    fn set_quota_exempt(&mut self, user: UserNo, key: &TrackKey, exempt: bool) -> Result<()> {
        self.inner.set_quota_exempt(user, key, exempt)?;
        self.ops.push(MetaOp::SetQuotaExempt(
            user.0,
            key.as_str().to_owned(),
            exempt,
        ));
        Ok(())
    }
    fn put_recording(&mut self, fp: &AudioFingerprint, user: UserNo, key: &TrackKey) -> Result<()> {
        self.inner.put_recording(fp, user, key)?;
        self.ops
            .push(MetaOp::PutRecording(fp.0, user.0, key.as_str().to_owned()));
        Ok(())
    }
    fn remove_recording(
        &mut self,
        fp: &AudioFingerprint,
        user: UserNo,
        key: &TrackKey,
    ) -> Result<()> {
        self.inner.remove_recording(fp, user, key)?;
        self.ops.push(MetaOp::RemoveRecording(
            fp.0,
            user.0,
            key.as_str().to_owned(),
        ));
        Ok(())
    }
    fn insert_chunk_if_absent(
        &mut self,
        domain: Domain,
        id: &ChunkId,
        entry: &ChunkEntry,
    ) -> Result<Option<ChunkEntry>> {
        let existing = self.inner.insert_chunk_if_absent(domain, id, entry)?;
        if existing.is_none() {
            self.ops
                .push(MetaOp::PutChunk(domain.to_u64(), id.0, entry.encode()));
        }
        Ok(existing)
    }
}

/// The number of the last journaled commit that `r` holds (0: none yet).
pub(crate) fn journal_seq(r: &dyn MetaRead) -> Result<u64> {
    match r.state(sk::JOURNAL_SEQ)? {
        None => Ok(0),
        Some(v) => Ok(u64::from_le_bytes(v.as_slice().try_into().map_err(
            |_| Error::corrupted("metadata state journal_seq is not 8 bytes"),
        )?)),
    }
}

/// Commits after which a checkpoint is written in the background.
pub(crate) const CHECKPOINT_EVERY: u64 = 1024;

/// What the bucket's `meta/` folder holds, by number.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) logs: BTreeMap<u64, u64>,
    pub(crate) checkpoints: BTreeMap<u64, u64>,
}

impl Listing {
    /// The newest checkpoint from which the logs after it reach `seq` without a gap.
    pub(crate) fn base_for(&self, seq: u64) -> Option<u64> {
        let &base = self.checkpoints.range(..=seq).next_back()?.0;
        ((base + 1)..=seq)
            .all(|n| self.logs.contains_key(&n))
            .then_some(base)
    }

    pub(crate) fn newest(&self) -> u64 {
        let l = self.logs.keys().next_back().copied().unwrap_or(0);
        let c = self.checkpoints.keys().next_back().copied().unwrap_or(0);
        l.max(c)
    }
}

#[cfg(feature = "object-store")]
pub use bucket_journal::RebuildReport;
#[cfg(feature = "object-store")]
pub(crate) use bucket_journal::{Journal, JournaledMeta, Staging, drain_outbox, replay};

#[cfg(feature = "object-store")]
mod bucket_journal {
    use super::*;
    use crate::bucket::outbox::{Outbox, Ticket};
    use crate::bucket::{Bucket, Put, Written};
    use crate::vfs::Vfs;
    use std::path::{Path, PathBuf};

    /// With `PackDurability::LocalDisk`: logs are written to `<store>/outbox/` and uploaded
    /// behind the commit, in order, by the outbox.
    #[derive(Debug)]
    pub(crate) struct Staging {
        pub(crate) vfs: Arc<dyn Vfs>,
        /// `<store>/outbox`.
        pub(crate) dir: PathBuf,
        pub(crate) outbox: Arc<Outbox>,
    }

    /// The journal's objects in the bucket, and whether this process may still add to them.
    #[derive(Debug)]
    pub(crate) struct Journal {
        bucket: Arc<Bucket>,
        store_id: [u8; 16],
        staging: Option<Staging>,
        /// The newest commit whose log is in the bucket (staged logs go up behind).
        in_bucket: Arc<AtomicU64>,
        /// Names each staged log file apart from an earlier attempt at the same number.
        attempts: AtomicU64,
        /// Set when a log was written for a commit that then failed, or its outcome is
        /// unknown: the next commit would take its number, so nothing is written until open
        /// has settled it.
        poisoned: AtomicBool,
        /// Commits since the last checkpoint this process wrote (or found at open).
        since_checkpoint: AtomicU64,
        /// One checkpoint at a time; the background one's thread, joined on drop.
        checkpointing: Mutex<Option<std::thread::JoinHandle<()>>>,
    }

    impl Journal {
        pub(crate) fn new(
            bucket: Arc<Bucket>,
            store_id: [u8; 16],
            staging: Option<Staging>,
        ) -> Journal {
            Journal {
                bucket,
                store_id,
                staging,
                in_bucket: Arc::default(),
                attempts: AtomicU64::new(0),
                poisoned: AtomicBool::new(false),
                since_checkpoint: AtomicU64::new(0),
                checkpointing: Mutex::new(None),
            }
        }

        /// Lists `meta/`.
        pub(crate) fn list(&self) -> Result<Listing> {
            let mut out = Listing::default();
            for (name, len) in self.bucket.list("meta")? {
                match parse_name(&name) {
                    Some((Kind::Log, seq)) => {
                        out.logs.insert(seq, len);
                    }
                    Some((Kind::Checkpoint, seq)) => {
                        out.checkpoints.insert(seq, len);
                    }
                    None => {}
                }
            }
            Ok(out)
        }

        fn read(&self, kind: Kind, seq: u64) -> Result<Vec<MetaOp>> {
            let name = object_name(kind, seq);
            let bytes = self.bucket.get(&name)?.ok_or_else(|| {
                Error::corrupted(format!(
                    "journal object {}/{name} is missing",
                    self.bucket.url()
                ))
            })?;
            decode_object(&bytes, &name, &self.store_id, kind, seq)
        }

        /// Writes commit `seq`'s log, create-only. When the PUT fails or finds an object, the
        /// object decides: ours (a PUT that landed though its answer was lost, or the client's
        /// own retry of one) is success; none is a failure that left nothing behind; anything
        /// else, or no answer at all, leaves the number's fate unknown: the journal is
        /// poisoned until open settles it.
        fn append(&self, seq: u64, ops: &[MetaOp]) -> Result<Option<Ticket>> {
            let name = object_name(Kind::Log, seq);
            let bytes = bytes::Bytes::from(encode_object(&self.store_id, Kind::Log, seq, ops));
            if let Some(staging) = &self.staging {
                return self.stage(staging, seq, &bytes).map(Some);
            }
            let failure = match self.bucket.put(&name, bytes.clone(), Put::Create) {
                Ok(Written::Written) => {
                    self.in_bucket.fetch_max(seq, Ordering::Relaxed);
                    return Ok(None);
                }
                Ok(Written::Exists) => None,
                Err(e) => Some(e),
            };
            let poison = |e: Error| {
                self.poisoned.store(true, Ordering::Release);
                Err(e)
            };
            match self.bucket.get(&name) {
                Ok(Some(found)) if found == bytes => {
                    self.in_bucket.fetch_max(seq, Ordering::Relaxed);
                    Ok(None)
                }
                Ok(Some(_)) => poison(Error::corrupted(format!(
                    "journal object {}/{name} was written by another process: two processes \
                     write this store's bucket (a copy of this node's disk?)",
                    self.bucket.url()
                ))),
                Ok(None) => Err(failure.unwrap_or_else(|| {
                    Error::corrupted(format!(
                        "journal object {}/{name} both exists and does not",
                        self.bucket.url()
                    ))
                })),
                Err(e) => poison(failure.unwrap_or(e)),
            }
        }

        /// Writes commit `seq`'s log durably to the outbox directory and queues its upload,
        /// held until the commit is known to have happened.
        fn stage(&self, staging: &Staging, seq: u64, bytes: &[u8]) -> Result<Ticket> {
            let n = self.attempts.fetch_add(1, Ordering::Relaxed);
            let path = staging.dir.join(format!("{seq:016x}.{n}.log"));
            let written = staging.vfs.create_new(&path).and_then(|f| {
                f.write_all_at(bytes, 0)?;
                f.sync_data()
            });
            if let Err(e) = written.and_then(|()| staging.vfs.sync_dir(&staging.dir)) {
                let _ = staging.vfs.remove_file(&path);
                return Err(Error::io("write", &path, e));
            }
            let in_bucket = self.in_bucket.clone();
            Ok(staging.outbox.push_held(
                object_name(Kind::Log, seq),
                path,
                bytes.len() as u64,
                Some(Box::new(move || {
                    in_bucket.fetch_max(seq, Ordering::Relaxed);
                })),
            ))
        }

        /// Settles the bucket's journal against metadata at commit `local` before anything
        /// is written. Logs past it are commits this metadata lacks: one whose log was
        /// written but whose local commit failed or was cut by a crash (its outcome was
        /// unknown until now), or more when this metadata is an older copy (a restored
        /// backup). They are applied, in order, so the metadata is the bucket's again; when
        /// they do not reach from `local` (a checkpoint past it, a gap), the metadata is too
        /// old for that: `StaleMetadata`. Then, when the bucket cannot rebuild the metadata
        /// (the first open, lost objects), a checkpoint is written, and what it makes
        /// useless is dropped. Returns the commit the metadata is at.
        pub(crate) fn reconcile(&self, meta: &dyn MetaStore, local: u64) -> Result<u64> {
            let listing = self.list()?;
            let newest = listing.newest();
            let missing = ((local + 1)..=newest).find(|n| !listing.logs.contains_key(n));
            if let Some(missing) = missing {
                return Err(Error::StaleMetadata {
                    local,
                    bucket: newest,
                    url: format!(
                        "{} (journal entry {missing} is not a log)",
                        self.bucket.url()
                    ),
                });
            }
            for seq in (local + 1)..=newest {
                let ops = self.read(Kind::Log, seq)?;
                meta.write(&mut |w| {
                    for op in &ops {
                        op.apply(w)?;
                    }
                    w.set_state(sk::JOURNAL_SEQ, &seq.to_le_bytes())
                })?;
            }
            let now = local.max(newest);
            self.in_bucket.store(now, Ordering::Relaxed);
            match listing.base_for(now) {
                Some(base) => {
                    self.since_checkpoint.store(now - base, Ordering::Relaxed);
                    self.prune(&listing, base)?;
                }
                None => {
                    self.checkpoint(meta)?;
                }
            }
            Ok(now)
        }

        /// Writes a checkpoint of `meta`'s current state, then deletes the logs and older
        /// checkpoints it covers. Returns its number.
        pub(crate) fn checkpoint(&self, meta: &dyn MetaStore) -> Result<u64> {
            let snap = meta.read()?;
            let seq = journal_seq(snap.as_ref())?;
            // A checkpoint may name packs only once they are in the bucket: with staged
            // uploads, it waits until the logs up to its number are there (and so their packs).
            if self.staging.is_some() {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while self.in_bucket.load(Ordering::Relaxed) < seq {
                    if std::time::Instant::now() > deadline {
                        return Err(Error::ObjectStore {
                            operation: "checkpoint".into(),
                            key: object_name(Kind::Checkpoint, seq),
                            message: "the uploads behind the writer did not reach it in 60 s"
                                .into(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            let mut ops = Vec::new();
            snap.dump(&mut |op| {
                ops.push(op);
                Ok(())
            })?;
            drop(snap);
            let bytes = encode_object(&self.store_id, Kind::Checkpoint, seq, &ops);
            drop(ops);
            // The same number is the same state: an existing checkpoint of it may be replaced.
            self.bucket.put(
                &object_name(Kind::Checkpoint, seq),
                bytes.into(),
                Put::Overwrite,
            )?;
            self.since_checkpoint.store(0, Ordering::Relaxed);
            self.prune(&self.list()?, seq)?;
            Ok(seq)
        }

        /// Deletes the logs up to checkpoint `base` and the checkpoints before it.
        fn prune(&self, listing: &Listing, base: u64) -> Result<()> {
            for &s in listing.logs.range(..=base).map(|(s, _)| s) {
                self.bucket.delete(&object_name(Kind::Log, s))?;
            }
            for &s in listing.checkpoints.range(..base).map(|(s, _)| s) {
                self.bucket.delete(&object_name(Kind::Checkpoint, s))?;
            }
            Ok(())
        }
    }

    impl Drop for JournaledMeta {
        /// Waits for a background checkpoint: it reads the metadata, which must be closed
        /// before the store can be opened again.
        fn drop(&mut self) {
            let t = self
                .journal
                .checkpointing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(t) = t {
                let _ = t.join();
            }
        }
    }

    /// A metadata store whose every commit is journaled in the bucket first.
    #[derive(Debug)]
    pub(crate) struct JournaledMeta {
        inner: Arc<dyn MetaStore>,
        journal: Arc<Journal>,
    }

    impl JournaledMeta {
        pub(crate) fn new(inner: Arc<dyn MetaStore>, journal: Arc<Journal>) -> JournaledMeta {
            JournaledMeta { inner, journal }
        }

        /// Starts a checkpoint on a thread of its own unless one is running.
        fn checkpoint_in_background(&self) {
            let mut slot = self
                .journal
                .checkpointing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|t| !t.is_finished()) {
                return;
            }
            if let Some(t) = slot.take() {
                let _ = t.join();
            }
            let (inner, journal) = (self.inner.clone(), self.journal.clone());
            // A failed checkpoint is tried again after another `CHECKPOINT_EVERY` commits; the
            // logs it would have replaced stay meanwhile, so nothing depends on it.
            *slot = std::thread::Builder::new()
                .name("lockerstore-checkpoint".into())
                .spawn(move || {
                    if journal.checkpoint(inner.as_ref()).is_err() {
                        // Tried again after as many commits, not after the next one.
                        journal.since_checkpoint.store(0, Ordering::Relaxed);
                    }
                })
                .ok();
        }
    }

    impl MetaStore for JournaledMeta {
        fn read(&self) -> Result<Box<dyn MetaRead>> {
            self.inner.read()
        }

        fn write(&self, f: &mut dyn FnMut(&mut dyn MetaWrite) -> Result<()>) -> Result<()> {
            if self.journal.poisoned.load(Ordering::Acquire) {
                return Err(Error::Poisoned(
                    "a commit failed after its journal object was written; reopen the store".into(),
                ));
            }
            let mut logged = false;
            let mut ticket: Option<Ticket> = None;
            let journal = &self.journal;
            let result = self.inner.write(&mut |w| {
                // A run again after a failure: the earlier run's staged log goes.
                if let Some(t) = ticket.take() {
                    t.cancel();
                }
                logged = false;
                let mut rec = Recorder::new(w);
                f(&mut rec)?;
                let ops = std::mem::take(&mut rec.ops);
                if ops.is_empty() {
                    return Ok(());
                }
                let seq = journal_seq(w)? + 1;
                w.set_state(sk::JOURNAL_SEQ, &seq.to_le_bytes())?;
                ticket = journal.append(seq, &ops)?;
                // The log is in the bucket (or staged): from here, a failure of the local
                // commit leaves its outcome unknown until open settles it (`reconcile`).
                logged = true;
                Ok(())
            });
            match (ticket, &result) {
                (Some(t), Ok(())) => t.ready(),
                (Some(t), Err(_)) => t.cancel(),
                (None, _) => {}
            }
            if result.is_err() && logged {
                self.journal.poisoned.store(true, Ordering::Release);
            }
            if result.is_ok()
                && logged
                && self
                    .journal
                    .since_checkpoint
                    .fetch_add(1, Ordering::Relaxed)
                    + 1
                    >= CHECKPOINT_EVERY
            {
                self.checkpoint_in_background();
            }
            result
        }

        fn watch_chunks(&self, filter: Arc<crate::index::filter::ChunkFilter>) {
            self.inner.watch_chunks(filter)
        }

        fn checkpoint(&self) -> Result<Option<u64>> {
            self.journal.checkpoint(self.inner.as_ref()).map(Some)
        }
    }

    /// Uploads what the last run with staged uploads left in `<store>/outbox` (its files are
    /// `<seq as 16 hex>.<attempt>.log`), in commit order, each log after the packs it
    /// registers (from their staged files in `packs_dir`, when the bucket lacks them); logs of
    /// commits past `local` (the metadata's `journal_seq`) never happened and are removed.
    /// Runs at open, before the journal is reconciled.
    pub(crate) fn drain_outbox(
        vfs: &dyn Vfs,
        outbox: &Path,
        packs_dir: &Path,
        bucket: &Bucket,
        store_id: &[u8; 16],
        local: u64,
    ) -> Result<()> {
        if !vfs.exists(outbox) {
            return Ok(());
        }
        let mut logs: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
        for name in vfs
            .list_dir(outbox)
            .map_err(|e| Error::io("list", outbox, e))?
        {
            let parsed = name.strip_suffix(".log").and_then(|stem| {
                let (seq, attempt) = stem.split_once('.')?;
                Some((
                    u64::from_str_radix(seq, 16).ok()?,
                    attempt.parse::<u64>().ok()?,
                ))
            });
            // A file this build does not write is left alone.
            if let Some((seq, attempt)) = parsed {
                logs.entry(seq).or_default().push((attempt, name));
            }
        }
        for (seq, mut files) in logs {
            files.sort();
            // Only the last attempt at a number can be the committed one.
            let (_, last) = files.pop().expect("a number has a file");
            for (_, stale) in files {
                let _ = vfs.remove_file(&outbox.join(stale));
            }
            let path = outbox.join(&last);
            if seq > local {
                vfs.remove_file(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
                continue;
            }
            let bytes = vfs.read(&path).map_err(|e| Error::io("read", &path, e))?;
            let name = object_name(Kind::Log, seq);
            for op in decode_object(&bytes, &name, store_id, Kind::Log, seq)? {
                let MetaOp::PutPack(id, _) = op else { continue };
                let key = format!("packs/{}", crate::format::pack_name(PackId(id)));
                if bucket.head(&key)?.is_some() {
                    continue;
                }
                let staged = packs_dir.join(crate::format::pack_name(PackId(id)));
                let pack = vfs.read(&staged).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::corrupted_at(
                            "a committed pack was never uploaded and its staged file is gone",
                            PackId(id),
                            0,
                        )
                    } else {
                        Error::io("read", &staged, e)
                    }
                })?;
                bucket.put(&key, bytes::Bytes::from(pack), Put::Create)?;
            }
            bucket.put(&name, bytes::Bytes::from(bytes), Put::Create)?;
            vfs.remove_file(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
        }
        Ok(())
    }

    /// What a rebuild from the bucket recreated ([`crate::Store::rebuild`]).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct RebuildReport {
        /// The commit number of the checkpoint it started from.
        pub checkpoint: u64,
        /// Journaled commits applied after it.
        pub logs: u64,
        /// The commit number the metadata is at now.
        pub commit: u64,
        /// Bytes of journal objects read.
        pub bytes: u64,
    }

    /// Recreates the metadata in the empty `meta` from the bucket's journal: the newest
    /// checkpoint, then every log after it in order. A missing or damaged object on that path
    /// is `Corrupted`: the metadata would lack acknowledged commits.
    pub(crate) fn replay(journal: &Journal, meta: &dyn MetaStore) -> Result<RebuildReport> {
        let listing = journal.list()?;
        let newest = listing.newest();
        let base = listing.base_for(newest).ok_or_else(|| {
            Error::corrupted(format!(
                "the journal in {} cannot be replayed: no checkpoint from which its logs reach \
                 commit {newest} without a gap",
                journal.bucket.url()
            ))
        })?;
        let mut report = RebuildReport {
            checkpoint: base,
            ..RebuildReport::default()
        };
        report.bytes += listing.checkpoints[&base];
        let ops = journal.read(Kind::Checkpoint, base)?;
        let apply = |ops: &[MetaOp], seq: u64| {
            meta.write(&mut |w| {
                for op in ops {
                    op.apply(w)?;
                }
                w.set_state(sk::JOURNAL_SEQ, &seq.to_le_bytes())
            })
        };
        apply(&ops, base)?;
        drop(ops);
        // Logs are small: applied in groups, one transaction (one fsync) each.
        let seqs: Vec<u64> = ((base + 1)..=newest).collect();
        for group in seqs.chunks(256) {
            let mut ops = Vec::new();
            for &s in group {
                ops.extend(journal.read(Kind::Log, s)?);
                report.bytes += listing.logs[&s];
                report.logs += 1;
            }
            apply(&ops, *group.last().expect("chunks are not empty"))?;
        }
        report.commit = newest;
        Ok(report)
    }
}

/// For the fuzz target `journal_object`: `data` is a log's op count (u16 LE) and op bytes; they
/// are framed as a log object of a fixed store with a valid checksum (so the fuzzer reaches the
/// op decoder) and decoded. Decoding never panics; what decodes encodes back to the same bytes;
/// what does not is `Corrupted`.
#[cfg(feature = "test-support")]
pub fn fuzz_check(data: &[u8]) {
    let id = [7u8; 16];
    let (count, ops) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, &[][..]),
    };
    let mut object = encode_object(&id, Kind::Log, 1, &[]);
    object.truncate(object.len() - CHECK_LEN);
    object[40..48].copy_from_slice(&count.to_le_bytes());
    object.extend_from_slice(ops);
    let check = blake3::hash(&object);
    object.extend_from_slice(check.as_bytes());
    match decode_object(&object, "fuzz", &id, Kind::Log, 1) {
        Ok(decoded) => assert_eq!(
            encode_object(&id, Kind::Log, 1, &decoded),
            object,
            "a decoded journal object encodes back to its bytes"
        ),
        Err(e) => assert!(matches!(e, Error::Corrupted { .. }), "{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "test-support")]
    fn the_fuzz_check_accepts_real_ops_and_refuses_junk() {
        let ops = every_op();
        let mut data = (ops.len() as u16).to_le_bytes().to_vec();
        for op in &ops {
            op.encode(&mut data);
        }
        fuzz_check(&data);
        fuzz_check(&[]);
        fuzz_check(&[5, 0, 99, 1, 2]);
        fuzz_check(&[0xff, 0xff]);
    }

    fn every_op() -> Vec<MetaOp> {
        vec![
            MetaOp::SetState("mode".into(), vec![1]),
            MetaOp::SetCounter("tracks".into(), 7),
            MetaOp::PutUser("alice".into(), [3; USER_ROW_LEN]),
            MetaOp::PutUserName(1, "alice".into()),
            MetaOp::PutTrack(1, "a/b.mp3".into(), vec![9; 100]),
            MetaOp::RemoveTrack(1, "a/b.mp3".into()),
            MetaOp::PutChunk(0, [4; 32], [5; CHUNK_ENTRY_LEN]),
            MetaOp::RemoveChunk(2, [4; 32]),
            MetaOp::PutPack(3, [6; PACK_ROW_LEN]),
            MetaOp::RemovePack(3),
            MetaOp::PutQuota(1, [7; QUOTA_ROW_LEN]),
            MetaOp::SetQuotaExempt(1, "k".into(), true),
            MetaOp::PutRecording([8; 32], 1, "k".into()),
            MetaOp::RemoveRecording([8; 32], 1, "k".into()),
        ]
    }

    #[test]
    fn objects_round_trip_and_damage_is_refused() {
        let id = [1; 16];
        let ops = every_op();
        let bytes = encode_object(&id, Kind::Log, 5, &ops);
        assert_eq!(decode_object(&bytes, "t", &id, Kind::Log, 5).unwrap(), ops);
        assert!(decode_object(&bytes, "t", &id, Kind::Log, 6).is_err());
        assert!(decode_object(&bytes, "t", &id, Kind::Checkpoint, 5).is_err());
        assert!(decode_object(&bytes, "t", &[2; 16], Kind::Log, 5).is_err());
        for cut in [0, 10, bytes.len() - 1] {
            assert!(matches!(
                decode_object(&bytes[..cut], "t", &id, Kind::Log, 5),
                Err(Error::Corrupted { .. })
            ));
        }
        for at in [0, 9, 40, 60, bytes.len() - 40] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(matches!(
                decode_object(&bad, "t", &id, Kind::Log, 5),
                Err(Error::Corrupted { .. })
            ));
        }
    }

    #[test]
    fn hostile_bodies_with_a_valid_checksum_are_refused_without_panicking() {
        let id = [1; 16];
        let mut body = encode_object(&id, Kind::Log, 1, &[]);
        body.truncate(body.len() - CHECK_LEN);
        for tail in [
            vec![99u8],                                // unknown tag
            vec![1, 0xff, 0xff],                       // a name longer than the object
            vec![12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], // a flag of 2
            vec![3, 2, 0, 0xff, 0xfe],                 // a name that is not UTF-8
        ] {
            let mut b = body.clone();
            b[40..48].copy_from_slice(&u64::MAX.to_le_bytes()); // a huge count
            b.extend_from_slice(&tail);
            let check = blake3::hash(&b);
            b.extend_from_slice(check.as_bytes());
            assert!(matches!(
                decode_object(&b, "t", &id, Kind::Log, 1),
                Err(Error::Corrupted { .. })
            ));
        }
    }

    #[test]
    fn an_object_that_sets_a_node_local_key_is_refused() {
        let id = [1; 16];
        for key in [sk::JOURNAL_SEQ, sk::OBJECT_PACKS] {
            let bytes = encode_object(
                &id,
                Kind::Log,
                3,
                &[MetaOp::SetState(key.into(), b"s3://elsewhere".to_vec())],
            );
            assert!(matches!(
                decode_object(&bytes, "t", &id, Kind::Log, 3),
                Err(Error::Corrupted { .. })
            ));
        }
    }

    #[test]
    fn names_parse_back_and_others_are_ignored() {
        let parse = |n: String| parse_name(n.strip_prefix("meta/").unwrap());
        assert_eq!(parse(object_name(Kind::Log, 42)), Some((Kind::Log, 42)));
        assert_eq!(
            parse(object_name(Kind::Checkpoint, u64::MAX)),
            Some((Kind::Checkpoint, u64::MAX))
        );
        for n in [
            "meta/x.log",
            "0000000000000001.tmp",
            "000000000000001G.log",
            "1.log",
        ] {
            assert_eq!(parse_name(n.trim_start_matches("meta/")), None, "{n}");
        }
    }

    #[test]
    fn a_base_needs_every_log_after_it() {
        let mut l = Listing::default();
        l.checkpoints.insert(3, 1);
        for s in [4, 5, 7] {
            l.logs.insert(s, 1);
        }
        assert_eq!(l.base_for(5), Some(3));
        assert_eq!(l.base_for(7), None, "6 is missing");
        assert_eq!(l.base_for(2), None, "no checkpoint at or before 2");
        assert_eq!(l.newest(), 7);
    }
}
