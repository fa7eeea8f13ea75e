//! Moving between license modes: what-if, migration both ways, and the audit that proves the
//! layout.
//!
//! A track's record names the copy domain all its chunks live in; the licence policy
//! (`crate::policy`) says which domain they belong in. A track whose domain is not the one the
//! policy gives it is *pending*.
//! Migration has no cursor of its own: it repeats rounds until no track is pending, each round
//! made of independent atomic commits, so a crash at any point leaves a consistent store and
//! running it again finishes the job.
//!
//! - Collapse (tracks the policy wants in the shared domain), one user per commit: every chunk of the user's pending tracks
//!   moves its references to the shared entry; where the shared domain has no copy yet, the
//!   user's entry is *promoted*: the shared entry takes over its record, no byte is written.
//!   User entries that lost their references become garbage for GC.
//! - Expand (tracks the policy wants in their user's own domain), a batch of tracks per commit: every chunk a user needs and
//!   does not own yet is copied record for record (stored bytes as they are, verified first) into
//!   a pack, the packs are fsynced, then one commit creates the user entries and moves the
//!   references. Shared entries that lost their references become garbage for GC.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::engine::Engine;
use crate::engine::pins::Held;
use crate::error::{Error, Result};
use crate::format::{ChunkEntry, PACK_HEADER_LEN, RecordHeader, TrackRecord};
use crate::ids::{ChunkId, Domain, UserNo};
use crate::index::refs::{Accounting, add_ref, drop_ref, insert_entry};
use crate::index::{MetaRead, counter_keys as ck, write_with};
use crate::names::TrackKey;
use crate::pack::session::{Session, Source};
use crate::policy::{LicencePolicy, LicenseMode, TrackOwner};
use crate::read::fetch;

/// What migrating to a mode would do, computed from metadata alone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WhatIf {
    /// The mode the prediction is for.
    pub mode: LicenseMode,
    /// Live physical bytes (chunk records) after migration.
    pub physical_bytes: u64,
    /// Live chunk records after migration.
    pub chunks: u64,
    /// Bytes of chunk records migration must write (copies for per-user domains).
    pub bytes_to_write: u64,
    /// Chunk records it must write.
    pub records_to_write: u64,
    /// Pack headers of the new packs those records need.
    pub pack_overhead_bytes: u64,
    /// Live bytes that migration turns into garbage (reclaimed by the next GC).
    pub bytes_to_free: u64,
    /// Tracks that migration must move.
    pub pending_tracks: u64,
    /// Live physical bytes now, for comparison.
    pub physical_bytes_now: u64,
    /// Garbage bytes now (reclaimable by GC already).
    pub garbage_bytes_now: u64,
}

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
    /// The mode the layout now matches.
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

/// Which physical records break the current mode's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// The mode audited against.
    pub mode: LicenseMode,
    /// True when the layout matches the mode.
    pub conforming: bool,
    /// Live records referenced by tracks of more than one user (must be 0 in per-user-copy
    /// mode; expected in single-master mode).
    pub shared_records_across_users: u64,
    /// Tracks whose chunks are not yet in the domain the mode asks for.
    pub pending_tracks: u64,
    /// Extra live records of content already stored live in another record (must be 0 in
    /// single-master mode; expected in per-user-copy mode).
    pub duplicate_records: u64,
    /// Live records whose domain is a user other than every user referencing them (must be 0).
    pub foreign_records: u64,
    /// Physical records that more than one index entry points at (must be 0).
    pub aliased_records: u64,
    /// Live records in a domain the policy gives none of the tracks referencing them, or
    /// referenced by no track at all (must be 0).
    pub misplaced_records: u64,
    /// Live records referenced by tracks the policy does not let share a record (must be 0).
    pub unshareable_records: u64,
    /// Live records in the shared domain.
    pub shared_domain_records: u64,
    /// Live records in user domains.
    pub user_domain_records: u64,
    /// Every live physical record with its domain and the users referencing it, when asked for.
    pub records: Vec<RecordOwnership>,
}

/// One live physical record and who references it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordOwnership {
    /// The chunk.
    pub chunk: ChunkId,
    /// Its copy domain.
    pub domain: Domain,
    /// Pack and offset of the record.
    pub pack: crate::ids::PackId,
    /// Offset in the pack.
    pub offset: u64,
    /// Users whose tracks reference it.
    pub users: Vec<String>,
}

/// Consecutive rounds without progress (2 ms apart) before migration gives up.
const MAX_IDLE_ROUNDS: u32 = 30_000;

/// The domain the policy wants `user`'s track in.
fn target(policy: &dyn LicencePolicy, user: UserNo) -> Domain {
    policy.domain(TrackOwner { user })
}

/// Whether a track is not yet where the policy wants it.
fn pending(policy: &dyn LicencePolicy, user: UserNo, t: &TrackRecord) -> bool {
    t.domain != target(policy, user)
}

/// How many times each chunk occurs in a track.
fn multiplicity(t: &TrackRecord) -> BTreeMap<ChunkId, u64> {
    let mut m = BTreeMap::new();
    for c in &t.chunks {
        *m.entry(c.id).or_default() += 1;
    }
    m
}

/// Predicts, from metadata alone, what migrating to `mode` would do.
pub(crate) fn what_if(engine: &Engine, mode: LicenseMode) -> Result<WhatIf> {
    let snap = engine.meta().read()?;
    predict(snap.as_ref(), mode, engine.packs().size_limit())
}

/// Audits the physical layout against the current mode. With `records`, the report lists
/// every live record with its domain and the users referencing it.
pub(crate) fn audit(engine: &Engine, records: bool) -> Result<AuditReport> {
    let snap = engine.meta().read()?;
    check_layout(snap.as_ref(), engine.policy().mode(), records)
}

/// Brings the physical layout in line with the current mode, online: ingests, reads and
/// deletes go on meanwhile, from any thread. Crash-safe and resumable; a store already in
/// line is left alone. Before copying data (expanding to per-user copies) it checks the
/// free disk space against the what-if figure and refuses with `InsufficientSpace`.
pub(crate) fn migrate(
    engine: &Engine,
    progress: &mut dyn FnMut(&MigrationProgress),
) -> Result<MigrationReport> {
    let _maintenance = engine.maintenance();
    let mut report = MigrationReport::default();
    let mut prog = MigrationProgress::default();
    let mut busy_rounds = 0u32;
    loop {
        // The policy, with the ingests that began under an earlier one, read together and before
        // the snapshot: such an ingest that finishes after this committed before the snapshot,
        // so the snapshot shows its track.
        let now = engine.policy().snapshot();
        let mode = now.mode;
        let policy: &dyn LicencePolicy = &mode;
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
            if now.earlier_ingests == 0 && engine.policy().snapshot().generation == now.generation {
                report.mode = Some(mode);
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
            .partition(|(no, _, _)| target(policy, *no) == Domain::Shared);
        if !to_user.is_empty() {
            let w = predict(snap.as_ref(), mode, engine.packs().size_limit())?;
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
            moved += collapse(engine, to_shared, &mut report, &mut prog, progress)?;
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

fn predict(snap: &dyn MetaRead, mode: LicenseMode, pack_limit: u64) -> Result<WhatIf> {
    let policy: &dyn LicencePolicy = &mode;
    let mut needed: HashMap<(Domain, ChunkId), u64> = HashMap::new();
    let (mut write, mut records_to_write, mut revived, mut pending_tracks) =
        (0u64, 0u64, 0u64, 0u64);
    let mut failure = None;
    // Names play no part here: the raw scan, so a damaged name does not stop a read-only report.
    snap.for_each_track_raw(&mut |no, _key, t| {
        let dest = target(policy, no);
        if t.domain != dest {
            pending_tracks += 1;
        }
        for c in &t.chunks {
            if needed.contains_key(&(dest, c.id)) {
                continue;
            }
            let size = match snap.chunk(dest, &c.id)? {
                Some(e) => {
                    if e.refcount == 0 {
                        revived += e.record_len();
                    }
                    e.record_len()
                }
                None => {
                    let Some(src) = snap.chunk(t.domain, &c.id)? else {
                        failure = Some(c.id);
                        continue;
                    };
                    // Collapsing into the shared domain promotes the user's record; expanding
                    // into a user's domain copies it.
                    if dest != Domain::Shared {
                        write += src.record_len();
                        records_to_write += 1;
                    }
                    src.record_len()
                }
            };
            needed.insert((dest, c.id), size);
        }
        Ok(())
    })?;
    if let Some(id) = failure {
        return Err(Error::corrupted(format!(
            "chunk {id} missing from the index"
        )));
    }
    let physical: u64 = needed.values().sum();
    let now = snap.counter(ck::LIVE_BYTES)?;
    let usable = pack_limit.max(1);
    let new_packs = write.div_ceil(usable);
    Ok(WhatIf {
        mode,
        physical_bytes: physical,
        chunks: needed.len() as u64,
        bytes_to_write: write,
        records_to_write,
        pack_overhead_bytes: new_packs * PACK_HEADER_LEN as u64,
        bytes_to_free: (now + write + revived).saturating_sub(physical),
        pending_tracks,
        physical_bytes_now: now,
        garbage_bytes_now: snap.counter(ck::GARBAGE_BYTES)?,
    })
}

/// Collapses each user's pending tracks in one commit. Returns the tracks moved.
fn collapse(
    engine: &Engine,
    todo: Vec<(UserNo, TrackKey, TrackRecord)>,
    report: &mut MigrationReport,
    prog: &mut MigrationProgress,
    progress: &mut dyn FnMut(&MigrationProgress),
) -> Result<u64> {
    let users: Vec<UserNo> = todo
        .iter()
        .map(|t| t.0)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut moved = 0;
    for no in users {
        let user_domain = Domain::User(no);
        // Held from the pin check through the commit, so no ingest pins an entry we remove.
        let pins = engine.pins().hold();
        // Promotion deletes the user's entry: impossible while an ingest holds a pin on it. No
        // pin can appear while we hold the lock, so checking a snapshot first is enough, and a
        // blocked user costs no commit.
        if blocked_by_pins(engine, &pins, no)? {
            continue;
        }
        let outcome = write_with(engine.meta(), |w| {
            let tracks: Vec<(TrackKey, TrackRecord)> = w
                .tracks_of(no)?
                .into_iter()
                .filter(|(_, t)| t.domain == user_domain)
                .collect();
            let mut counts: BTreeMap<ChunkId, u64> = BTreeMap::new();
            for (_, t) in &tracks {
                for (id, k) in multiplicity(t) {
                    *counts.entry(id).or_default() += k;
                }
            }
            // The snapshot check above can miss an entry an ingest pinned and then committed a
            // reference to just before this transaction: check again, before any change, so
            // giving up leaves the transaction empty.
            for id in counts.keys() {
                if pins.contains(user_domain, id) && w.chunk(Domain::Shared, id)?.is_none() {
                    return Ok(None);
                }
            }
            let mut acc = Accounting::default();
            let mut promoted = 0u64;
            for (id, k) in &counts {
                let ue = w.chunk(user_domain, id)?.ok_or_else(|| {
                    Error::corrupted(format!("chunk {id} missing from the index"))
                })?;
                if ue.refcount != *k {
                    return Err(Error::corrupted(format!(
                        "chunk {id} of user number {}: refcount {} but {k} references",
                        no.0, ue.refcount
                    )));
                }
                if w.chunk(Domain::Shared, id)?.is_some() {
                    for _ in 0..*k {
                        add_ref(w, Domain::Shared, id, &mut acc)?;
                        drop_ref(w, user_domain, id, &mut acc)?;
                    }
                } else {
                    // The shared entry takes over the record and all its references; the bytes
                    // stay where they are and stay live.
                    w.put_chunk(Domain::Shared, id, &ue)?;
                    w.remove_chunk(user_domain, id)?;
                    promoted += 1;
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
            Ok(Some((tracks.len() as u64, bytes, promoted)))
        });
        drop(pins);
        if let Some((n, bytes, promoted)) = outcome? {
            moved += n;
            report.tracks_migrated += n;
            report.records_promoted += promoted;
            prog.tracks_done += n;
            prog.bytes_done += bytes;
            progress(prog);
        }
    }
    Ok(moved)
}

/// Whether collapsing user `no` would have to promote an entry an ingest has pinned.
fn blocked_by_pins(engine: &Engine, pins: &Held<'_>, no: UserNo) -> Result<bool> {
    let user_domain = Domain::User(no);
    if !pins.any_in(user_domain) {
        return Ok(false);
    }
    let snap = engine.meta().read()?;
    for (_, t) in snap.tracks_of(no)? {
        if t.domain != user_domain {
            continue;
        }
        for c in &t.chunks {
            if pins.contains(user_domain, &c.id) && snap.chunk(Domain::Shared, &c.id)?.is_none() {
                return Ok(true);
            }
        }
    }
    Ok(false)
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

fn check_layout(snap: &dyn MetaRead, mode: LicenseMode, list: bool) -> Result<AuditReport> {
    let policy: &dyn LicencePolicy = &mode;
    let mut users_of: HashMap<(Domain, ChunkId), HashSet<UserNo>> = HashMap::new();
    let mut pending_tracks = 0;
    // Names play no part here: the raw scan, so a damaged name does not stop a read-only report.
    snap.for_each_track_raw(&mut |no, _key, t| {
        if pending(policy, no, &t) {
            pending_tracks += 1;
        }
        for c in &t.chunks {
            users_of.entry((t.domain, c.id)).or_default().insert(no);
        }
        Ok(())
    })?;
    let mut live_by_id: HashMap<ChunkId, u64> = HashMap::new();
    let mut locations: HashSet<(crate::ids::PackId, u64)> = HashSet::new();
    let (mut across, mut foreign, mut shared_records, mut user_records, mut aliased) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut misplaced, mut unshareable) = (0u64, 0u64);
    let mut records = Vec::new();
    let mut names: HashMap<UserNo, String> = HashMap::new();
    let mut entries = Vec::new();
    snap.for_each_chunk(&mut |d, id, e| {
        if e.refcount > 0 {
            entries.push((d, id, e));
        }
        Ok(())
    })?;
    for (d, id, e) in entries {
        *live_by_id.entry(id).or_default() += 1;
        if !locations.insert((e.pack, e.offset)) {
            aliased += 1;
        }
        let users = users_of.remove(&(d, id)).unwrap_or_default();
        if users.len() > 1 {
            across += 1;
        }
        // The policy's verdict: every track referencing the record wants it in its domain, and
        // they may all share it.
        if users.is_empty() || users.iter().any(|u| target(policy, *u) != d) {
            misplaced += 1;
        }
        let owners: Vec<TrackOwner> = users.iter().map(|u| TrackOwner { user: *u }).collect();
        if owners
            .iter()
            .any(|a| owners.iter().any(|b| !policy.may_share(*a, *b)))
        {
            unshareable += 1;
        }
        match d {
            Domain::Shared => shared_records += 1,
            Domain::User(owner) => {
                user_records += 1;
                if users.iter().any(|u| *u != owner) {
                    foreign += 1;
                }
            }
        }
        if list {
            let mut us = Vec::new();
            for u in users {
                let name = match names.entry(u) {
                    std::collections::hash_map::Entry::Occupied(o) => o.get().clone(),
                    std::collections::hash_map::Entry::Vacant(v) => v
                        .insert(
                            snap.user_name(u)?
                                .map_or_else(|| format!("#{}", u.0), |n| n.to_string()),
                        )
                        .clone(),
                };
                us.push(name);
            }
            us.sort();
            records.push(RecordOwnership {
                chunk: id,
                domain: d,
                pack: e.pack,
                offset: e.offset,
                users: us,
            });
        }
    }
    let duplicate_records: u64 = live_by_id.values().map(|n| n - 1).sum();
    // Asked of the policy, not of the mode: with no track pending and every live record in a
    // domain its tracks' policy wants and may share, the layout is the policy's (per-user
    // copies: no record across users, none shared; single master: no duplicate, no user record).
    let conforming =
        pending_tracks == 0 && foreign == 0 && aliased == 0 && misplaced == 0 && unshareable == 0;
    Ok(AuditReport {
        mode,
        conforming,
        shared_records_across_users: across,
        pending_tracks,
        duplicate_records,
        foreign_records: foreign,
        aliased_records: aliased,
        misplaced_records: misplaced,
        unshareable_records: unshareable,
        shared_domain_records: shared_records,
        user_domain_records: user_records,
        records,
    })
}
