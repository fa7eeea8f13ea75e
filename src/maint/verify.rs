//! Verify: re-read and re-hash every chunk record, recount every reference and counter, re-hash
//! every track. Reports every problem found instead of stopping at the first.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{PACK_HEADER_LEN, PackRow, TrackRecord};
use crate::ids::{AudioFingerprint, ChunkId, Domain, PackId, UserNo};
use crate::index::counter_keys as ck;
use crate::index::refs::{Accounting, unlink_track};
use crate::index::write_with;
use crate::names::{TrackKey, UserId};
use crate::read::fetch;

/// A track that cannot be read back exactly because stored bytes it needs are damaged or gone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedTrack {
    /// Its user.
    pub user: UserId,
    /// Its key.
    pub key: TrackKey,
    /// The first damage found reading it.
    pub problem: String,
}

/// What verify found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Chunk records read and re-hashed.
    pub chunks_checked: u64,
    /// Tracks whose bytes were re-read and re-hashed.
    pub tracks_checked: u64,
    /// Plain bytes of the tracks re-read.
    pub bytes_checked: u64,
    /// Every problem, one line each. Empty means the store is sound.
    pub problems: Vec<String>,
    /// The tracks that damage costs (each also has a line in `problems`), sorted by user and
    /// key. [`Store::drop_damaged_tracks`] removes them and keeps the rest.
    pub damaged_tracks: Vec<DamagedTrack>,
}

/// What [`Store::drop_damaged_tracks`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedDamage {
    /// The tracks removed, sorted by user and key.
    pub tracks: Vec<DamagedTrack>,
    /// Index entries of damaged chunk records removed (their bytes count as garbage until GC).
    pub chunk_entries_removed: u64,
    /// Packs shorter than their committed length whose row now ends where the file ends.
    pub packs_shortened: u64,
    /// Damaged packs that no entry needed any more, removed with their files.
    pub packs_removed: u64,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the whole store. Returns `Err` only when the check itself cannot run (the metadata
/// cannot be read at all); damage is listed in the report.
pub(crate) fn verify(engine: &Arc<Engine>) -> Result<VerifyReport> {
    check(engine).map(|(report, _)| report)
}

/// `verify`, and the chunk entries whose records failed as corruption.
fn check(engine: &Arc<Engine>) -> Result<(VerifyReport, HashSet<(Domain, ChunkId)>)> {
    let mut damaged_chunks = HashSet::new();
    let mut report = VerifyReport::default();
    let snap = engine.meta().read()?;
    let mut problems = Vec::new();

    // 1. Tracks: references per chunk, per-user and global totals.
    let mut refs: HashMap<(Domain, ChunkId), u64> = HashMap::new();
    let mut per_user: HashMap<UserNo, (u64, u64)> = HashMap::new();
    let mut tracks: Vec<(UserNo, String, TrackRecord)> = Vec::new();
    let mut recordings: std::collections::HashSet<[u8; 32]> = Default::default();
    // Keys as stored: a bad one is listed in 6, not a reason to stop.
    snap.for_each_track_raw(&mut |no, key, t| {
        if let Some(a) = &t.audio {
            recordings.insert(a.fingerprint);
        }
        for c in &t.chunks {
            *refs.entry((t.domain, c.id)).or_default() += 1;
        }
        let u = per_user.entry(no).or_default();
        u.0 += t.len;
        u.1 += 1;
        tracks.push((no, key.to_owned(), t));
        Ok(())
    })?;

    // 2. Chunk entries: each record re-read and re-hashed; refcounts and totals recounted.
    let packs: HashMap<PackId, _> = snap.packs()?.into_iter().collect();
    let (mut live_bytes, mut live_chunks, mut garbage_bytes, mut garbage_chunks) = (0, 0, 0, 0);
    let mut dead_per_pack: HashMap<PackId, u64> = HashMap::new();
    let mut entries = Vec::new();
    snap.for_each_chunk(&mut |d, id, e| {
        entries.push((d, id, e));
        Ok(())
    })?;
    for (domain, id, e) in entries {
        let want = refs.remove(&(domain, id)).unwrap_or(0);
        if want != e.refcount {
            problems.push(format!(
                "chunk {id} in {domain:?}: refcount {} but {want} references",
                e.refcount
            ));
        }
        if e.refcount > 0 {
            live_bytes += e.record_len();
            live_chunks += 1;
        } else {
            garbage_bytes += e.record_len();
            garbage_chunks += 1;
            *dead_per_pack.entry(e.pack).or_default() += e.record_len();
        }
        match packs.get(&e.pack) {
            None => problems.push(format!("chunk {id}: pack {} is not registered", e.pack)),
            Some(row)
                if e.offset < PACK_HEADER_LEN as u64
                    || e.offset + e.record_len() > row.committed_len =>
            {
                problems.push(format!(
                    "chunk {id}: record at {}+{} outside the committed length of pack {}",
                    e.offset,
                    e.record_len(),
                    e.pack
                ))
            }
            Some(_) => {}
        }
        let r = crate::format::ChunkRef {
            id,
            len: e.plain_len,
        };
        match fetch::verify_chunk(engine, domain, &r) {
            Ok(()) => report.chunks_checked += 1,
            Err(err) => {
                if err.is_corruption() {
                    damaged_chunks.insert((domain, id));
                }
                problems.push(format!("chunk {id}: {err}"));
            }
        }
    }
    for ((domain, id), n) in refs {
        problems.push(format!(
            "chunk {id} in {domain:?}: {n} references but no index entry"
        ));
    }

    // The recordings index lists every track that has an audio fingerprint.
    for (no, key, t) in &tracks {
        if let Some(a) = &t.audio {
            // A bad key is listed in 6.
            let Ok(k) = TrackKey::new(key) else { continue };
            let fp = AudioFingerprint(a.fingerprint);
            let holders = match snap.recording_holders(&fp, usize::MAX) {
                Ok(h) => h,
                // A holder's stored key is bad: damage to list.
                Err(e) if e.is_corruption() => {
                    problems.push(format!("track {key:?} of user number {}: {e}", no.0));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !holders.iter().any(|(n, h)| n == no && *h == k) {
                problems.push(format!(
                    "track {key:?} of user number {}: missing from the recordings index",
                    no.0
                ));
            }
        }
    }

    // 3. Counters.
    let counts = [
        (ck::RECORDINGS, recordings.len() as u64),
        (ck::LIVE_BYTES, live_bytes),
        (ck::LIVE_CHUNKS, live_chunks),
        (ck::TRACKS, tracks.len() as u64),
        (ck::LOGICAL_BYTES, per_user.values().map(|u| u.0).sum()),
        (ck::USERS, per_user.len() as u64),
    ];
    for (key, want) in counts {
        let got = snap.counter(key)?;
        if got != want {
            problems.push(format!("counter {key} is {got}, recount gives {want}"));
        }
    }
    // Garbage bytes also include dead records no entry points at (orphans, records of
    // entries GC removed), which only the pack rows know about: the garbage entries give a
    // lower bound, the pack rows the exact sum.
    let g = snap.counter(ck::GARBAGE_BYTES)?;
    let gc = snap.counter(ck::GARBAGE_CHUNKS)?;
    let dead_total: u64 = packs.values().map(|r| r.dead_bytes).sum();
    if g < garbage_bytes || g != dead_total {
        problems.push(format!(
            "garbage bytes {g} disagree with the garbage entries' {garbage_bytes} \
             or the pack rows' {dead_total}"
        ));
    }
    if gc != garbage_chunks {
        problems.push(format!(
            "counter {} is {gc}, recount gives {garbage_chunks}",
            ck::GARBAGE_CHUNKS
        ));
    }
    for (id, row) in &packs {
        let used = row.committed_len.saturating_sub(PACK_HEADER_LEN as u64);
        if row.dead_bytes > used {
            problems.push(format!(
                "pack {id}: {} dead bytes but only {used} bytes of records",
                row.dead_bytes
            ));
        }
    }
    for (id, row) in &packs {
        let dead = dead_per_pack.get(id).copied().unwrap_or(0);
        if row.dead_bytes < dead {
            problems.push(format!(
                "pack {id}: dead bytes {} below the garbage entries' {dead}",
                row.dead_bytes
            ));
        }
    }

    // 4. Users, and their quota-exempt usage recounted against their quota rows.
    let mut exempt: HashMap<UserNo, (u64, u64)> = HashMap::new();
    for (no, key, t) in &tracks {
        let Ok(key) = TrackKey::new(key) else {
            continue; // listed as a bad name in step 6
        };
        if snap.quota_exempt(*no, &key)? {
            let e = exempt.entry(*no).or_default();
            e.0 += t.len;
            e.1 += 1;
        }
    }
    for (name, row) in snap.users_raw()? {
        let (logical, count) = per_user.remove(&UserNo(row.no)).unwrap_or((0, 0));
        if row.logical_bytes != logical || row.tracks != count {
            problems.push(format!(
                "user {name:?}: row says {} bytes in {} tracks, recount {logical} in {count}",
                row.logical_bytes, row.tracks
            ));
        }
        match snap.user_name(UserNo(row.no)) {
            Ok(n) if n.as_ref().map(UserId::as_str) == Some(name.as_str()) => {}
            Ok(_) => problems.push(format!("user {name:?}: number {} maps elsewhere", row.no)),
            Err(e) if e.is_corruption() => problems.push(format!("user {name:?}: {e}")),
            Err(e) => return Err(e),
        }
        let q = snap.quota(UserNo(row.no))?.unwrap_or_default();
        let (bytes, count) = exempt.remove(&UserNo(row.no)).unwrap_or((0, 0));
        if (q.exempt_bytes, q.exempt_tracks) != (bytes, count) {
            problems.push(format!(
                "user {name:?}: quota row says {} exempt bytes in {} tracks, recount {bytes} in \
                 {count}",
                q.exempt_bytes, q.exempt_tracks
            ));
        }
    }
    for (no, _) in per_user {
        problems.push(format!("tracks of unknown user number {}", no.0));
    }

    // 5. Packs: files exist and hold their committed bytes.
    for (id, row) in &packs {
        let location = engine.packs().location(*id);
        if let Err(e) = engine
            .packs()
            .map_covering(*id, 0, row.committed_len, || Ok(row.committed_len))
        {
            problems.push(format!("pack {id} ({location}): {e}"));
        }
    }

    // 6. Tracks: bytes re-read and checked against the fingerprint.
    drop(snap);
    for (no, key, t) in tracks {
        let name = match engine.meta().read()?.user_name(no) {
            Ok(n) => n,
            Err(e) if e.is_corruption() => {
                problems.push(format!("track {key:?} of user number {}: {e}", no.0));
                continue;
            }
            Err(e) => return Err(e),
        };
        let (Some(user), Ok(key)) = (name, TrackKey::new(&key)) else {
            problems.push(format!("track {key:?} of user number {}: bad names", no.0));
            continue;
        };
        let mut sink = std::io::sink();
        let outcome = crate::read::open_track(engine, &user, &key).and_then(|mut r| {
            std::io::copy(&mut r.by_ref(), &mut sink).map_err(crate::Error::from_io)
        });
        match outcome {
            Ok(n) if n == t.len => {
                report.tracks_checked += 1;
                report.bytes_checked += n;
            }
            Ok(n) => {
                if engine.track_record(&user, &key).ok().as_ref() == Some(&t) {
                    problems.push(format!(
                        "track {user}/{key}: read {n} bytes, expected {}",
                        t.len
                    ));
                }
            }
            // A track replaced or deleted since the snapshot is not a problem.
            Err(crate::Error::TrackNotFound { .. } | crate::Error::TrackChanged { .. }) => {}
            Err(e) => {
                let current = engine.track_record(&user, &key).ok();
                if current.as_ref() == Some(&t) {
                    problems.push(format!("track {user}/{key}: {e}"));
                    if e.is_corruption() {
                        report.damaged_tracks.push(DamagedTrack {
                            user,
                            key,
                            problem: e.to_string(),
                        });
                    }
                }
            }
        }
    }
    report.problems = problems;
    report
        .damaged_tracks
        .sort_by(|a, b| (&a.user, &a.key).cmp(&(&b.user, &b.key)));
    Ok((report, damaged_chunks))
}

/// Removes the tracks damage has cost (the ones [`Store::verify`] lists in
/// `damaged_tracks`) and keeps everything else, so the store verifies clean again:
/// - each damaged track is unlinked as by [`Store::delete`], in one commit with the rest;
/// - index entries of damaged chunk records that no track references any more are removed
///   (their bytes are garbage, reclaimed by GC like any other);
/// - a pack shorter than its committed length gets a row that ends where the file ends
///   (sealed), or, when no entry points into it any more, loses its row and its file.
///
/// Nothing that reads back exactly is dropped. A track replaced or deleted meanwhile is left
/// alone. Re-reads every chunk and track, like `verify`.
pub(crate) fn drop_damaged_tracks(engine: &Arc<Engine>) -> Result<DroppedDamage> {
    let _maintenance = engine.maintenance()?;
    let mut out = DroppedDamage::default();

    // One verify pass: the damaged tracks, and the damaged records (every entry whose
    // record does not read back verified).
    let (report, damaged_chunks) = check(engine)?;
    // Damaged packs: short, missing, or with an unreadable header.
    let mut damaged_packs: HashMap<PackId, Option<u64>> = HashMap::new();
    for (pid, row) in engine.meta().read()?.packs()? {
        let file_len = engine.packs().stored_len(pid)?;
        let readable = match file_len {
            Some(n) if n >= PACK_HEADER_LEN as u64 => engine
                .packs()
                .map_covering(pid, 0, PACK_HEADER_LEN as u64, || Ok(row.committed_len))
                .is_ok(),
            _ => false,
        };
        if !readable || file_len.is_some_and(|n| n < row.committed_len) {
            // A damaged pack leaves the writers' reach before its row or file changes (open
            // pools what survives); one a put holds right now is left for a later run.
            if !engine.packs().retire(pid) {
                continue;
            }
            damaged_packs.insert(pid, file_len.filter(|_| readable));
        }
    }

    // Damaged tracks: the ones verify names.
    let mut tracks = Vec::new();
    for d in report.damaged_tracks {
        if let Ok(t) = engine.track_record(&d.user, &d.key) {
            tracks.push((d, t));
        }
    }
    if tracks.is_empty() && damaged_chunks.is_empty() && damaged_packs.is_empty() {
        return Ok(out);
    }

    engine.space().room_for_metadata()?;
    let mut remove_files = Vec::new();
    let pins = engine.pins().hold();
    let (dropped, removed, shortened) = write_with(engine.meta(), |w| {
        let mut acc = Accounting::default();
        let mut dropped = Vec::new();
        for (d, t) in &tracks {
            let Some(row) = w.user(&d.user)? else {
                continue;
            };
            let no = UserNo(row.no);
            // Only the record verify judged; a replacement is someone else's new track.
            if w.track(no, &d.key)?.as_ref() != Some(t) {
                continue;
            }
            unlink_track(w, &d.user, &row, &d.key, t, &mut acc)?;
            dropped.push(d.clone());
        }
        acc.apply(w)?;

        // Damaged entries nothing needs any more go, as GC's phase 1 would remove them.
        let mut acc = Accounting::default();
        let mut removed = 0u64;
        for (d, id) in &damaged_chunks {
            let Some(e) = w.chunk(*d, id)? else { continue };
            if e.refcount == 0 && !pins.contains(*d, id) {
                w.remove_chunk(*d, id)?;
                acc.garbage_chunks -= 1;
                removed += 1;
            }
        }
        acc.apply(w)?;

        // Damaged packs: end the row where the file ends once nothing points past it.
        let mut reach: HashMap<PackId, (u64, u64)> = HashMap::new();
        w.for_each_chunk(&mut |_, _, e| {
            if damaged_packs.contains_key(&e.pack) {
                let r = reach.entry(e.pack).or_default();
                r.0 += 1;
                r.1 = r.1.max(e.offset + e.record_len());
            }
            Ok(())
        })?;
        let mut shortened = (0u64, 0u64);
        remove_files.clear();
        for (pid, file_len) in &damaged_packs {
            let Some(row) = w.pack(*pid)? else { continue };
            let (n, end) = reach.get(pid).copied().unwrap_or((0, 0));
            let dead_all = row.committed_len.saturating_sub(PACK_HEADER_LEN as u64);
            if n == 0 {
                if row.dead_bytes != dead_all {
                    return Err(Error::corrupted(format!(
                        "pack {pid}: no entry left but {} of {dead_all} bytes dead",
                        row.dead_bytes
                    )));
                }
                w.add_counter(ck::GARBAGE_BYTES, -(row.dead_bytes as i64))?;
                w.remove_pack(*pid)?;
                remove_files.push(*pid);
                shortened.1 += 1;
            } else if let Some(len) = file_len.filter(|&len| len < row.committed_len) {
                if end > len {
                    continue; // still needed past the end (a pinned entry): left for later
                }
                let cut = row.committed_len - len;
                let dead = row.dead_bytes.checked_sub(cut).ok_or_else(|| {
                    Error::corrupted(format!(
                        "pack {pid}: {cut} bytes past the file's end but {} dead",
                        row.dead_bytes
                    ))
                })?;
                w.add_counter(ck::GARBAGE_BYTES, -(cut as i64))?;
                w.put_pack(
                    *pid,
                    &PackRow {
                        committed_len: len,
                        dead_bytes: dead,
                        sealed: true,
                    },
                )?;
                shortened.0 += 1;
            }
        }
        Ok((dropped, removed, shortened))
    })?;
    drop(pins);
    for pid in remove_files {
        engine.packs().delete(pid)?;
    }
    out.tracks = dropped;
    out.chunk_entries_removed = removed;
    out.packs_shortened = shortened.0;
    out.packs_removed = shortened.1;
    Ok(out)
}
