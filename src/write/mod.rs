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

mod dedup;
pub(crate) mod delete;
pub(crate) mod holder;
pub(crate) mod upload;

use std::cell::OnceCell;
use std::collections::HashMap;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Mutex;

use crate::chunk::pipeline::Cores;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{ChunkEntry, TrackAudio, TrackRecord, UserRow};
use crate::ids::{ChunkId, Domain, Fingerprint, UserNo};
use crate::index::group::{GroupCommit, Request};
use crate::index::refs::{
    Accounting, add_recording, add_ref, drop_refs, grant_exemption, insert_entry,
    release_exemption, remove_recording,
};
use crate::index::{MetaWrite, counter_keys as ck, write_with};
use crate::names::{RightsHolder, TrackKey, UserId};
use crate::pack::session::{Appended, Session, Source};
use crate::policy::quota::{Quota, QuotaUsage};
use crate::policy::{LicencePolicy, TrackOwner};
use crate::write::upload::chunk_upload;
use dedup::Dedup;

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

/// How to store one track ([`crate::Store::put_with`]).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PutOptions {
    quota_exempt: bool,
    expected_len: Option<u64>,
    rights_holder: Option<RightsHolder>,
}

impl PutOptions {
    /// Store the track exempt from the user's quota (bought music): it is counted in the user's
    /// logical bytes and tracks, but not against their limits. Default: counted.
    #[must_use]
    pub fn quota_exempt(mut self, exempt: bool) -> Self {
        self.quota_exempt = exempt;
        self
    }

    /// The upload's length when the caller knows it beforehand (an HTTP `Content-Length`, a
    /// resumable upload's declared length): the upload's buffer is sized once instead of grown
    /// as bytes arrive (a reader of unknown length costs a copy of the buffer per doubling). A
    /// hint only, capped at the segmenter's window: an upload of another length is stored
    /// exactly as it is. Default: unknown.
    #[must_use]
    pub fn expected_len(mut self, len: u64) -> Self {
        self.expected_len = Some(len);
        self
    }

    /// The track's rights holder (its label), which decides under which licence it is stored.
    /// Default: the one the upload's tags name (see the crate's `tags` feature and
    /// docs/DESIGN.md 14.1 for the precedence), else unknown (the policy's default applies).
    #[must_use]
    pub fn rights_holder(mut self, holder: RightsHolder) -> Self {
        self.rights_holder = Some(holder);
        self
    }
}

/// The write path's own state: the group commit, the user numbers reserved by puts in flight,
/// the cores ingest may use, and how uploads are cut and compressed.
#[derive(Debug)]
pub(crate) struct Writer {
    group_commit: GroupCommit<PutCommit>,
    user_nos: Mutex<UserNos>,
    /// Threads doing ingest work, so an upload's helper only takes idle cores.
    cores: Cores,
    compression_level: i32,
    segmenting: bool,
    segment_window: usize,
}

impl Writer {
    pub(crate) fn new(compression_level: i32, segmenting: bool, segment_window: usize) -> Writer {
        Writer {
            group_commit: GroupCommit::default(),
            user_nos: Mutex::new(UserNos::default()),
            cores: Cores::of_machine(),
            compression_level,
            segmenting,
            segment_window,
        }
    }
}

/// Entries pinned by one ingest.
struct Pinned<'a> {
    engine: &'a Engine,
    pinned: Vec<(Domain, ChunkId)>,
}

/// Unpins even if the put panics, so GC and migration are never blocked by a dead ingest.
impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.engine.pins().unpin(&self.pinned);
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
    appended: Vec<Appended>,
    /// Stored exempt from the user's quota.
    quota_exempt: bool,
    /// Where other processes share the metadata: the stored policy version the put decided
    /// its domain under, and its owner, to check that domain against the stored policy.
    decided_under: Option<(u64, TrackOwner)>,
    /// Where other processes share the metadata: the moment past which the put may not
    /// commit (its start plus the ingest time limit).
    deadline: Option<(std::time::Instant, std::time::Duration)>,
}

impl Request for PutCommit {
    /// Whether the put replaced a track.
    type Output = bool;

    /// Applies the put inside a write transaction.
    fn apply(&self, w: &mut dyn MetaWrite) -> Result<bool> {
        let (domain, user, user_no, key, track) = (
            self.domain,
            &self.user,
            self.user_no,
            &self.key,
            &self.track,
        );
        if let Some((started, limit)) = self.deadline {
            // In the transaction, so GC's grace (which counts on it) holds however long the
            // commit waited in the queue or was retried.
            if started.elapsed() > limit {
                return Err(Error::IngestTooSlow {
                    secs: started.elapsed().as_secs(),
                    limit: limit.as_secs(),
                });
            }
        }
        if let Some((version, owner)) = &self.decided_under {
            check_policy(w, *version, owner, domain)?;
        }
        let keys: Vec<(Domain, ChunkId)> = self
            .written
            .keys()
            .chain(track.chunks.iter().map(|c| &c.id))
            .map(|id| (domain, *id))
            .collect();
        w.prefetch_chunks(&keys)?;
        if self.decided_under.is_some() {
            // Another node's migration may have moved an entry this put found (a collapse
            // promotes a user's entries into the shared domain): the put must be redone.
            for c in &track.chunks {
                if !self.written.contains_key(&c.id) && w.chunk(domain, &c.id)?.is_none() {
                    return Err(Error::ConcurrentChange(format!(
                        "chunk {} this upload found was moved by another node",
                        c.id
                    )));
                }
            }
        }
        let mut acc = Accounting::default();
        acc.record_appends(&self.appended);
        // New records: insert, unless an identical record was committed meanwhile by a
        // concurrent ingest, in which case ours is an orphan and theirs is used.
        for (id, entry) in &self.written {
            insert_entry(w, domain, id, *entry, &mut acc)?;
        }
        for c in &track.chunks {
            add_ref(w, domain, &c.id, &mut acc)?;
        }
        let mut row = user_row(w, user, user_no)?;
        let usage = |w: &dyn MetaWrite, row: &UserRow| {
            QuotaUsage::of(
                &w.quota(user_no)?.unwrap_or_default(),
                row.logical_bytes,
                row.tracks,
            )
        };
        let before = usage(w, &row)?;
        let old = w.track(user_no, key)?;
        if let Some(old) = &old {
            drop_refs(w, old, &mut acc)?;
            remove_recording(w, old, user_no, key, &mut acc)?;
            release_exemption(w, user_no, key, old.len)?;
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
        add_recording(w, track, user_no, key, &mut acc)?;
        w.put_track(user_no, key, track)?;
        w.put_user(user, &row)?;
        if self.quota_exempt {
            grant_exemption(w, user_no, key, track.len)?;
        } else {
            // In the transaction that links the track: concurrent puts see each other's usage.
            usage(w, &row)?.check_growth(&before, user)?;
        }
        acc.apply(w)?;
        Ok(old.is_some())
    }
}

/// Fails with `PolicyChanged` when another process changed the stored policy since the put
/// decided its domain under version `version`, and the stored policy now wants `owner`'s
/// track elsewhere: such a track must not be linked (a licence that ended must not get a new
/// shared track), and the entries it found may be migration's to move.
fn check_policy(w: &dyn MetaWrite, version: u64, owner: &TrackOwner, domain: Domain) -> Result<()> {
    // Compared even when the version is the same: a licence that ended by the clock changes
    // the decision without a new version.
    let _ = version;
    let (licences, _) = crate::policy::stored(w)?;
    let now = std::sync::Arc::new(licences).at(crate::policy::unix_now());
    if now.domain(owner) != domain {
        return Err(Error::PolicyChanged);
    }
    Ok(())
}

/// `user`'s row, numbered `user_no`: the committed one, or, for a user without one, a new row
/// (no tracks) written in this transaction with its reserved number, so a put or a quota that
/// fails leaves no user behind.
fn user_row(w: &mut dyn MetaWrite, user: &UserId, user_no: UserNo) -> Result<UserRow> {
    match w.user(user)? {
        Some(row) if row.no == user_no.0 => Ok(row),
        Some(row) => Err(Error::corrupted(format!(
            "user {user} has number {} but the put was given {}",
            row.no, user_no.0
        ))),
        None => {
            if let Some(other) = w.user_name(user_no)? {
                return Err(Error::corrupted(format!(
                    "user number {} reserved for {user} belongs to {other:?}",
                    user_no.0
                )));
            }
            let next = w.counter(ck::NEXT_USER_NO)?;
            w.set_counter(ck::NEXT_USER_NO, next.max(user_no.0 + 1))?;
            w.put_user_name(user_no, user)?;
            let row = UserRow {
                no: user_no.0,
                logical_bytes: 0,
                tracks: 0,
            };
            w.put_user(user, &row)?;
            Ok(row)
        }
    }
}

/// Sets `user`'s limits (see `Store::set_quota`), creating the user if unknown.
pub(crate) fn set_quota(
    engine: &Engine,
    writer: &Writer,
    user: &UserId,
    quota: Quota,
) -> Result<()> {
    engine.space().room_for_metadata()?;
    let reserved = reserve_user_no(engine, writer, user)?;
    write_with(engine.meta(), |w| {
        user_row(w, user, reserved.no)?;
        let row = w.quota(reserved.no)?.unwrap_or_default();
        w.put_quota(reserved.no, &quota.into_row(row))
    })
}

/// Stores `user`'s track `key` (see `Store::put`).
pub(crate) fn put(
    engine: &Engine,
    writer: &Writer,
    user: &UserId,
    key: &TrackKey,
    reader: impl Read,
    options: &PutOptions,
) -> Result<PutOutcome> {
    put_if(engine, writer, |_, _| true, user, key, reader, options)
        .map(|out| out.expect("a put allowed under every policy always runs"))
}

/// A put that runs only if `allowed` accepts the policy the ingest registers under, for the
/// track's owner (its user, and its rights holder as the put's options or the upload's tags
/// name it): `Ok(None)`, with nothing written, otherwise. Upload avoidance must never link a
/// track under a policy that forbids it, even if the policy changed since it checked.
pub(crate) fn put_if(
    engine: &Engine,
    writer: &Writer,
    allowed: impl FnOnce(&dyn LicencePolicy, &TrackOwner) -> bool,
    user: &UserId,
    key: &TrackKey,
    reader: impl Read,
    options: &PutOptions,
) -> Result<Option<PutOutcome>> {
    let space = engine.space();
    if space.free_space()? < space.min_free_space() {
        return Err(Error::DiskFull {
            op: "reserve free space for",
            path: engine.dir().to_owned(),
        });
    }
    let reserved = reserve_user_no(engine, writer, user)?;
    // Ends with the put, even if it panics, so migration never waits for it forever.
    let ingest = engine.fresh_policy()?.begin_ingest();
    let mut pinned = Pinned {
        engine,
        pinned: Vec::new(),
    };
    let mut session = Session::new(engine.packs(), Source::Pool);
    let result = put_inner(
        engine,
        writer,
        (user, reserved.no, key),
        &ingest,
        allowed,
        reader,
        options,
        &mut session,
        &mut pinned,
    );
    match result {
        Ok(outcome) => {
            session.commit();
            Ok(outcome)
        }
        // Refused inside the commit's transaction, which therefore never committed.
        Err(
            e @ (Error::QuotaExceeded { .. }
            | Error::PolicyChanged
            | Error::ConcurrentChange(_)
            | Error::IngestTooSlow { .. }),
        ) => {
            session.abandon_uncommitted();
            Err(e)
        }
        Err(e) => {
            session.abandon();
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn put_inner(
    engine: &Engine,
    writer: &Writer,
    (user, user_no, key): (&UserId, UserNo, &TrackKey),
    ingest: &crate::policy::Ingest<'_>,
    allowed: impl FnOnce(&dyn LicencePolicy, &TrackOwner) -> bool,
    reader: impl Read,
    options: &PutOptions,
    session: &mut Session<'_>,
    pinned: &mut Pinned<'_>,
) -> Result<Option<PutOutcome>> {
    let started = std::time::Instant::now();
    let (policy, ingest_version) = (ingest.policy(), ingest.version());
    // The track's owner and copy domain, decided from the window before the first chunk.
    let decided: OnceCell<(TrackOwner, Domain)> = OnceCell::new();
    let mut allowed = Some(allowed);
    let mut decide = |window: &[u8]| -> Result<bool> {
        let holder = options
            .rights_holder
            .clone()
            .or_else(|| crate::tags::rights_holder(window));
        let owner = TrackOwner {
            user: user_no,
            holder,
        };
        if !allowed.take().is_some_and(|f| f(policy, &owner)) {
            return Ok(false);
        }
        let domain = policy.domain(&owner);
        Ok(decided.set((owner, domain)).is_ok())
    };
    let mut dedup = Dedup::new(
        engine,
        writer.compression_level,
        session,
        &mut pinned.pinned,
    );
    let mut each = |plain: &[u8], id: ChunkId| -> Result<()> {
        let domain = decided
            .get()
            .map(|d| d.1)
            .expect("the upload decides its domain before its first chunk");
        dedup.chunk(domain, plain, id)
    };
    let upload = chunk_upload(
        engine.chunker(),
        &writer.cores,
        writer.segmenting,
        writer.segment_window,
        options.expected_len,
        reader,
        &mut decide,
        &mut each,
    )?;
    let Some(upload) = upload else {
        return Ok(None);
    };
    let (owner, domain) = decided
        .into_inner()
        .expect("an upload that ran decided its domain");
    dedup.flush(domain)?;
    let Dedup {
        refs,
        written,
        new_bytes,
        ..
    } = dedup;
    session.sync()?;
    if let Some(limit) = engine.ingest_time_limit()
        && started.elapsed() > limit
    {
        // GC on another node may have removed an entry this put found, once it was garbage
        // for twice this long: it must not commit.
        return Err(Error::IngestTooSlow {
            secs: started.elapsed().as_secs(),
            limit: limit.as_secs(),
        });
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
            format: upload.format.code(),
            fingerprint: a.fingerprint,
            ranges: a.ranges,
        }),
        holder: owner.holder.clone(),
        chunks: refs,
    };
    let new_chunks = written.len() as u64;
    let (len, fingerprint, chunks) = (track.len, track.fingerprint, track.chunks.len() as u64);
    let replaced = writer.group_commit.commit(
        engine.meta(),
        PutCommit {
            user: user.clone(),
            user_no,
            key: key.clone(),
            domain,
            written,
            track,
            appended: session.appended(),
            quota_exempt: options.quota_exempt,
            decided_under: engine
                .meta()
                .shared()
                .then(|| (ingest_version, owner.clone())),
            deadline: engine.ingest_time_limit().map(|limit| (started, limit)),
        },
    )?;
    Ok(Some(PutOutcome {
        len,
        fingerprint,
        chunks,
        new_chunks,
        new_bytes,
        replaced,
    }))
}

/// The user's number for a put: the committed one, or one reserved in memory until the
/// returned guard is dropped (the put's commit writes the row). Every put of a new user in
/// flight gets the same number.
pub(crate) fn reserve_user_no<'w>(
    engine: &Engine,
    writer: &'w Writer,
    user: &UserId,
) -> Result<ReservedUserNo<'w>> {
    if engine.meta().shared() {
        return Ok(ReservedUserNo {
            nos: &writer.user_nos,
            user: None,
            no: shared_user_no(engine, user)?,
        });
    }
    let mut nos = writer.user_nos.lock().expect("user numbers lock");
    if let Some((no, puts)) = nos.held.get_mut(user.as_str()) {
        *puts += 1;
        let no = UserNo(*no);
        return Ok(ReservedUserNo {
            nos: &writer.user_nos,
            user: Some(user.to_string()),
            no,
        });
    }
    // Read under the lock: a reservation is dropped only after its put's commit, so a user
    // without a reservation here either has a committed row in this snapshot or none at all.
    let snap = engine.meta().read()?;
    if let Some(row) = snap.user(user)? {
        return Ok(ReservedUserNo {
            nos: &writer.user_nos,
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
        nos: &writer.user_nos,
        user: Some(user.to_string()),
        no: UserNo(no),
    })
}

/// The user's number in a store other processes share: the committed one, or one given in a
/// transaction of its own that writes the user's row (no tracks). Reservations in memory
/// cannot work there: another node may give the same number to another user. A put that then
/// fails leaves the user's empty row behind, as `set_quota` does.
fn shared_user_no(engine: &Engine, user: &UserId) -> Result<UserNo> {
    if let Some(row) = engine.meta().read()?.user(user)? {
        return Ok(UserNo(row.no));
    }
    write_with(engine.meta(), |w| {
        if let Some(row) = w.user(user)? {
            return Ok(UserNo(row.no));
        }
        let no = w.counter(ck::NEXT_USER_NO)?.max(1);
        if no >= 1 << 56 {
            return Err(Error::corrupted("user number counter out of range"));
        }
        user_row(w, user, UserNo(no))?;
        Ok(UserNo(no))
    })
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
pub(crate) struct ReservedUserNo<'a> {
    nos: &'a std::sync::Mutex<UserNos>,
    /// Set when the number is a reservation.
    user: Option<String>,
    no: UserNo,
}

impl ReservedUserNo<'_> {
    pub(crate) fn no(&self) -> UserNo {
        self.no
    }
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
