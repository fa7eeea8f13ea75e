//! Migration: bringing the physical layout in line with the licence policy, both ways, online.
//! (What it would do is predicted by `whatif`; `audit` proves the layout.)
//!
//! A track's record names the copy domain all its chunks live in; the licence policy
//! (`crate::policy`) says, from the track's user and rights holder, which domain they belong in.
//! A track whose domain is not the one the policy gives it is *pending*.
//! Migration has no cursor of its own: it repeats rounds until no track is pending, each round
//! made of independent atomic commits, so a crash at any point leaves a consistent store and
//! running it again finishes the job.
//!
//! - Collapse (tracks the policy wants in the shared domain), one user per commit: every chunk
//!   of the user's pending tracks moves its references to the shared entry; where the shared
//!   domain has no copy yet, the user's entry is *promoted* when all its references move (the
//!   shared entry takes over its record, no byte is written), and *copied* into the shared
//!   domain when other tracks of the user (of a holder without a shared licence) still need
//!   it. The copies are written and fsynced before the commit. User entries that lost their
//!   references become garbage for GC.
//! - Expand (tracks the policy wants in their user's own domain), a batch of tracks per commit: every chunk a user needs and
//!   does not own yet is copied record for record (stored bytes as they are, verified first) into
//!   a pack, the packs are fsynced, then one commit creates the user entries and moves the
//!   references. Shared entries that lost their references become garbage for GC.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{ChunkEntry, RecordHeader, TrackRecord};
use crate::ids::{ChunkId, Domain, UserNo};
use crate::index::refs::{Accounting, add_ref, drop_ref, insert_entry};
use crate::index::write_with;
use crate::maint::whatif::predict;
use crate::names::TrackKey;
use crate::pack::session::{Session, Source};
use crate::policy::{LicencePolicy, LicenseMode, TrackOwner};
use crate::read::fetch;

/// Progress of a migration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationProgress {
    /// Tracks moved so far.
    pub tracks_done: u64,
    /// Tracks pending when the current round started.
    pub tracks_total: u64,
    /// Logical bytes of the tracks moved so far.
    pub bytes_done: u64,
    /// Logical bytes of the tracks pending when the current round started.
    pub bytes_total: u64,
    /// Bytes of records copied so far.
    pub bytes_written: u64,
}

/// What a migration did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// The policy's default mode when the migration finished (the layout then matches the
    /// whole policy: the default and every entry per rights holder).
    pub mode: Option<LicenseMode>,
    /// Tracks moved to their new domain.
    pub tracks_migrated: u64,
    /// Records handed from a user's domain to the shared domain without copying.
    pub records_promoted: u64,
    /// Records copied into a user's domain.
    pub records_copied: u64,
    /// Bytes of the copied records.
    pub bytes_written: u64,
    /// Rounds (a round re-reads the pending tracks; later rounds catch ingests that started
    /// under the old mode).
    pub rounds: u64,
}

/// Consecutive rounds without progress (2 ms apart) before migration gives up.
const MAX_IDLE_ROUNDS: u32 = 30_000;

/// The domain the policy wants `user`'s track `t` in.
pub(crate) fn target(policy: &dyn LicencePolicy, user: UserNo, t: &TrackRecord) -> Domain {
    policy.domain(&TrackOwner {
        user,
        holder: t.holder.clone(),
    })
}

/// Whether a track is not yet where the policy wants it.
pub(crate) fn pending(policy: &dyn LicencePolicy, user: UserNo, t: &TrackRecord) -> bool {
    t.domain != target(policy, user, t)
}

/// How many times each chunk occurs in a track.
fn multiplicity(t: &TrackRecord) -> BTreeMap<ChunkId, u64> {
    let mut m = BTreeMap::new();
    for c in &t.chunks {
        *m.entry(c.id).or_default() += 1;
    }
    m
}

/// Brings the physical layout in line with the current mode, online: ingests, reads and
/// deletes go on meanwhile, from any thread. Crash-safe and resumable; a store already in
/// line is left alone. Before copying data (expanding to per-user copies) it checks the
/// free disk space against the what-if figure and refuses with `InsufficientSpace`.
pub(crate) fn migrate(
    engine: &Engine,
    progress: &mut dyn FnMut(&MigrationProgress),
) -> Result<MigrationReport> {
    let maintenance = engine.maintenance()?;
    let mut report = MigrationReport::default();
    let mut prog = MigrationProgress::default();
    let mut busy_rounds = 0u32;
    loop {
        maintenance.check()?;
        // The policy, with the ingests that began under an earlier one, read together and before
        // the snapshot: such an ingest that finishes after this committed before the snapshot,
        // so the snapshot shows its track.
        let now = engine.fresh_policy()?.snapshot();
        let decider = &now.policy;
        let policy: &dyn LicencePolicy = decider;
        let snap = engine.meta().read()?;
        let mut todo: Vec<(UserNo, TrackKey, TrackRecord)> = Vec::new();
        snap.for_each_track(&mut |no, key, t| {
            if pending(policy, no, &t) {
                todo.push((no, key.clone(), t));
            }
            Ok(())
        })?;
        if todo.is_empty() {
            // Ingests that started under an earlier policy may still commit pending tracks.
            if now.earlier_ingests == 0
                && engine.fresh_policy()?.snapshot().generation == now.generation
            {
                report.mode = Some(decider.licences().default);
                return Ok(report);
            }
            drop(snap);
            busy_rounds += 1;
            if busy_rounds > MAX_IDLE_ROUNDS {
                return Err(Error::Metadata(
                    "migration made no progress: ingests under the old mode do not finish".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        // Tracks bound for the shared domain are collapsed (references moved, records
        // promoted: nothing written); tracks bound for a user's own domain are expanded (their
        // records copied), which needs room first.
        let (to_shared, to_user): (Vec<_>, Vec<_>) = todo
            .into_iter()
            .partition(|(no, _, t)| target(policy, *no, t) == Domain::Shared);
        // Copies are written by expansion, and by collapse where a user's other tracks keep
        // the record: room for them first.
        {
            let w = predict(snap.as_ref(), decider, engine.packs().size_limit())?;
            let needed = w.bytes_to_write + w.pack_overhead_bytes;
            let available = engine.space().free_space()?;
            if needed > available {
                return Err(Error::InsufficientSpace { needed, available });
            }
        }
        drop(snap);
        report.rounds += 1;
        let all = to_shared.iter().chain(&to_user);
        prog.tracks_total = prog.tracks_done + (to_shared.len() + to_user.len()) as u64;
        prog.bytes_total = prog.bytes_done + all.map(|t| t.2.len).sum::<u64>();
        progress(&prog);
        let mut moved = 0;
        if !to_shared.is_empty() {
            moved += collapse(engine, policy, to_shared, &mut report, &mut prog, progress)?;
        }
        if !to_user.is_empty() {
            moved += expand(engine, to_user, &mut report, &mut prog, progress)?;
        }
        if moved > 0 {
            busy_rounds = 0;
        } else {
            // Everything left is held by ingests in flight (pinned entries); they finish soon.
            busy_rounds += 1;
            if busy_rounds > MAX_IDLE_ROUNDS {
                return Err(Error::Metadata(
                    "migration made no progress: entries stay pinned by ingests".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Collapses each user's pending tracks in one commit (after the copies it needs, if any).
/// Returns the tracks moved.
fn collapse(
    engine: &Engine,
    policy: &dyn LicencePolicy,
    todo: Vec<(UserNo, TrackKey, TrackRecord)>,
    report: &mut MigrationReport,
    prog: &mut MigrationProgress,
    progress: &mut dyn FnMut(&MigrationProgress),
) -> Result<u64> {
    let users: BTreeSet<UserNo> = todo.iter().map(|t| t.0).collect();
    let mut moved = 0;
    for no in users {
        let mut session = Session::new(engine.packs(), Source::Pool);
        let result = collapse_user(engine, policy, no, &mut session);
        match result {
            Ok(outcome) => {
                session.commit();
                if let Some(c) = outcome {
                    moved += c.tracks;
                    report.tracks_migrated += c.tracks;
                    report.records_promoted += c.promoted;
                    report.records_copied += c.copied;
                    report.bytes_written += c.written;
                    prog.tracks_done += c.tracks;
                    prog.bytes_done += c.bytes;
                    prog.bytes_written += c.written;
                    progress(prog);
                }
            }
            Err(e) => {
                session.abandon();
                return Err(e);
            }
        }
    }
    Ok(moved)
}

/// What one user's collapse did.
struct Collapsed {
    tracks: u64,
    bytes: u64,
    promoted: u64,
    copied: u64,
    written: u64,
}

/// Collapses user `no`'s tracks bound for the shared domain. `None`: an ingest got in the way
/// (it pinned an entry promotion would remove, or referenced one the plan meant to promote);
/// the next round tries again, and copies made meanwhile stay as garbage a later round or GC
/// uses up.
fn collapse_user(
    engine: &Engine,
    policy: &dyn LicencePolicy,
    no: UserNo,
    session: &mut Session<'_>,
) -> Result<Option<Collapsed>> {
    let user_domain = Domain::User(no);
    let bound =
        |t: &TrackRecord| t.domain == user_domain && target(policy, no, t) == Domain::Shared;
    let counts_of = |tracks: &[(TrackKey, TrackRecord)]| {
        let mut counts: BTreeMap<ChunkId, u64> = BTreeMap::new();
        for (_, t) in tracks.iter().filter(|(_, t)| bound(t)) {
            for (id, k) in multiplicity(t) {
                *counts.entry(id).or_default() += k;
            }
        }
        counts
    };
    // 1. Copies, planned on a snapshot: where the shared domain lacks the chunk and the user's
    //    entry keeps references the move leaves (tracks of holders without a shared licence)
    //    or is pinned by an ingest (promotion would remove it). Migration and GC are
    //    serialised, so the entries read here stay until the commit.
    let snap = engine.meta().read()?;
    let counts = counts_of(&snap.tracks_of(no)?);
    let pinned: HashSet<ChunkId> = {
        let pins = engine.pins().hold();
        counts
            .keys()
            .filter(|id| pins.contains(user_domain, id))
            .copied()
            .collect()
    };
    let mut copies: HashMap<ChunkId, ChunkEntry> = HashMap::new();
    for (id, k) in &counts {
        if snap.chunk(Domain::Shared, id)?.is_some() {
            continue;
        }
        let ue = snap
            .chunk(user_domain, id)?
            .ok_or_else(|| Error::corrupted(format!("chunk {id} missing from the index")))?;
        if ue.refcount > *k || pinned.contains(id) {
            let (head, stored) = fetch::record_verified(engine, &ue, id)?;
            let header = RecordHeader {
                domain: Domain::Shared,
                ..head
            };
            let (pack, offset) = session.append(&header, &stored)?;
            copies.insert(
                *id,
                ChunkEntry {
                    pack,
                    offset,
                    refcount: 0,
                    ..ue
                },
            );
        }
    }
    drop(snap);
    session.sync()?;
    let appended = session.appended();
    // 2. One commit, pins held from the check through the commit, so no ingest pins an entry
    //    promotion removes.
    let pins = engine.pins().hold();
    let outcome = write_with(engine.meta(), |w| {
        let mut acc = Accounting::default();
        acc.record_appends(&appended);
        for (id, entry) in &copies {
            insert_entry(w, Domain::Shared, id, *entry, &mut acc)?;
        }
        let tracks: Vec<(TrackKey, TrackRecord)> = w
            .tracks_of(no)?
            .into_iter()
            .filter(|(_, t)| bound(t))
            .collect();
        let counts = counts_of(&tracks);
        // Decided for every chunk before any reference moves, so giving up leaves only the
        // copies (as garbage).
        let mut promote: HashSet<ChunkId> = HashSet::new();
        for (id, k) in &counts {
            let ue = w
                .chunk(user_domain, id)?
                .ok_or_else(|| Error::corrupted(format!("chunk {id} missing from the index")))?;
            if ue.refcount < *k {
                return Err(Error::corrupted(format!(
                    "chunk {id} of user number {}: refcount {} but {k} references",
                    no.0, ue.refcount
                )));
            }
            if w.chunk(Domain::Shared, id)?.is_some() {
                continue;
            }
            if ue.refcount == *k && !pins.contains(user_domain, id) {
                promote.insert(*id);
            } else {
                acc.apply(w)?;
                return Ok(None);
            }
        }
        for (id, k) in &counts {
            if promote.contains(id) {
                // The shared entry takes over the record and all its references; the bytes
                // stay where they are and stay live.
                let ue = w.chunk(user_domain, id)?.expect("checked above");
                w.put_chunk(Domain::Shared, id, &ue)?;
                w.remove_chunk(user_domain, id)?;
            } else {
                for _ in 0..*k {
                    add_ref(w, Domain::Shared, id, &mut acc)?;
                    drop_ref(w, user_domain, id, &mut acc)?;
                }
            }
        }
        let mut bytes = 0;
        for (key, t) in &tracks {
            let moved = TrackRecord {
                domain: Domain::Shared,
                ..t.clone()
            };
            w.put_track(no, key, &moved)?;
            bytes += t.len;
        }
        acc.apply(w)?;
        Ok(Some((tracks.len() as u64, bytes, promote.len() as u64)))
    });
    drop(pins);
    let written: u64 = copies.values().map(|e| e.record_len()).sum();
    Ok(outcome?.map(|(tracks, bytes, promoted)| Collapsed {
        tracks,
        bytes,
        promoted,
        copied: copies.len() as u64,
        written,
    }))
}

/// Bytes of copies gathered before one expand commit.
const EXPAND_BATCH_BYTES: u64 = 64 << 20;

/// Expands pending tracks in batches: copy, fsync, commit. Returns the tracks moved.
fn expand(
    engine: &Engine,
    todo: Vec<(UserNo, TrackKey, TrackRecord)>,
    report: &mut MigrationReport,
    prog: &mut MigrationProgress,
    progress: &mut dyn FnMut(&MigrationProgress),
) -> Result<u64> {
    let mut moved = 0;
    let mut batch: Vec<(UserNo, TrackKey, TrackRecord)> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut iter = todo.into_iter().peekable();
    while let Some(item) = iter.next() {
        batch_bytes += item.2.len;
        batch.push(item);
        if batch_bytes >= EXPAND_BATCH_BYTES || iter.peek().is_none() {
            moved += expand_batch(engine, std::mem::take(&mut batch), report, prog)?;
            batch_bytes = 0;
            progress(prog);
        }
    }
    Ok(moved)
}

fn expand_batch(
    engine: &Engine,
    batch: Vec<(UserNo, TrackKey, TrackRecord)>,
    report: &mut MigrationReport,
    prog: &mut MigrationProgress,
) -> Result<u64> {
    let mut session = Session::new(engine.packs(), Source::Pool);
    let result = expand_batch_inner(engine, &batch, report, prog, &mut session);
    if result.is_ok() {
        session.commit();
    } else {
        session.abandon();
    }
    result
}

fn expand_batch_inner(
    engine: &Engine,
    batch: &[(UserNo, TrackKey, TrackRecord)],
    report: &mut MigrationReport,
    prog: &mut MigrationProgress,
    session: &mut Session<'_>,
) -> Result<u64> {
    // 1. Copy every record a user needs and does not own. Migration and GC are serialised, so
    //    an entry seen here is still there at the commit below.
    let mut copies: HashMap<(Domain, ChunkId), ChunkEntry> = HashMap::new();
    let snap = engine.meta().read()?;
    for (no, _, t) in batch {
        let dest = Domain::User(*no);
        // The user's own entries, looked up in one batch per track.
        let keys: Vec<(Domain, ChunkId)> = t.chunks.iter().map(|c| (dest, c.id)).collect();
        let owned = snap.chunks(&keys)?;
        for (c, owned) in t.chunks.iter().zip(owned) {
            if copies.contains_key(&(dest, c.id)) || owned.is_some() {
                continue;
            }
            let src = snap.chunk(t.domain, &c.id)?.ok_or_else(|| {
                Error::corrupted(format!("chunk {} missing from the index", c.id))
            })?;
            let (head, stored) = fetch::record_verified(engine, &src, &c.id)?;
            let header = RecordHeader {
                domain: dest,
                ..head
            };
            let (pack, offset) = session.append(&header, &stored)?;
            copies.insert(
                (dest, c.id),
                ChunkEntry {
                    pack,
                    offset,
                    refcount: 0,
                    ..src
                },
            );
        }
    }
    drop(snap);
    session.sync()?;
    // 2. One commit: new entries, references moved, tracks retargeted. A track changed since
    //    it was planned is skipped (the next round sees it); its copies stay as garbage.
    let appended = session.appended();
    let (n, bytes) = write_with(engine.meta(), |w| {
        let mut acc = Accounting::default();
        acc.record_appends(&appended);
        for ((domain, id), entry) in &copies {
            insert_entry(w, *domain, id, *entry, &mut acc)?;
        }
        let (mut n, mut bytes) = (0u64, 0u64);
        for (no, key, planned) in batch {
            if w.track(*no, key)?.as_ref() != Some(planned) {
                continue;
            }
            let dest = Domain::User(*no);
            for c in &planned.chunks {
                add_ref(w, dest, &c.id, &mut acc)?;
                drop_ref(w, planned.domain, &c.id, &mut acc)?;
            }
            let moved = TrackRecord {
                domain: dest,
                ..planned.clone()
            };
            w.put_track(*no, key, &moved)?;
            n += 1;
            bytes += planned.len;
        }
        acc.apply(w)?;
        Ok((n, bytes))
    })?;
    let written: u64 = copies.values().map(|e| e.record_len()).sum();
    report.tracks_migrated += n;
    report.records_copied += copies.len() as u64;
    report.bytes_written += written;
    prog.tracks_done += n;
    prog.bytes_done += bytes;
    prog.bytes_written += written;
    Ok(n)
}
