//! Verify: re-read and re-hash every chunk record, recount every reference and counter, re-hash
//! every track. Reports every problem found instead of stopping at the first.

use std::collections::HashMap;
use std::io::Read;

use crate::error::Result;
use crate::format::{PACK_HEADER_LEN, TrackRecord};
use crate::ids::{ChunkId, Domain, PackId, TrackKey, UserId, UserNo};
use crate::meta::counter_keys as ck;
use crate::store::Store;

/// What verify found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chunk records read and re-hashed.
    pub chunks_checked: u64,
    /// Tracks whose bytes were re-read and re-hashed.
    pub tracks_checked: u64,
    /// Plain bytes of the tracks re-read.
    pub bytes_checked: u64,
    /// Every problem, one line each. Empty means the store is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks the whole store. Returns `Err` only when the check itself cannot run (the metadata
    /// cannot be read at all); damage is listed in the report.
    pub fn verify(&self) -> Result<VerifyReport> {
        let inner = &self.inner;
        let mut report = VerifyReport::default();
        let snap = inner.meta.read()?;
        let mut problems = Vec::new();

        // 1. Tracks: references per chunk, per-user and global totals.
        let mut refs: HashMap<(Domain, ChunkId), u64> = HashMap::new();
        let mut per_user: HashMap<UserNo, (u64, u64)> = HashMap::new();
        let mut tracks: Vec<(UserNo, String, TrackRecord)> = Vec::new();
        let mut recordings: std::collections::HashSet<[u8; 32]> = Default::default();
        snap.for_each_track(&mut |no, key, t| {
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
            match inner.verify_chunk(domain, &r) {
                Ok(()) => report.chunks_checked += 1,
                Err(err) => problems.push(format!("chunk {id}: {err}")),
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
                let holders = snap.recording_holders(&a.fingerprint, usize::MAX)?;
                if !holders.iter().any(|(n, k)| n == no && k == key) {
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

        // 4. Users.
        for (name, row) in snap.users()? {
            let (logical, count) = per_user.remove(&UserNo(row.no)).unwrap_or((0, 0));
            if row.logical_bytes != logical || row.tracks != count {
                problems.push(format!(
                    "user {name:?}: row says {} bytes in {} tracks, recount {logical} in {count}",
                    row.logical_bytes, row.tracks
                ));
            }
            if snap.user_name(UserNo(row.no))?.as_deref() != Some(name.as_str()) {
                problems.push(format!("user {name:?}: number {} maps elsewhere", row.no));
            }
        }
        for (no, _) in per_user {
            problems.push(format!("tracks of unknown user number {}", no.0));
        }

        // 5. Packs: files exist and hold their committed bytes.
        for (id, row) in &packs {
            let path = inner.packs.path(*id);
            if let Err(e) = inner
                .packs
                .map_covering(*id, row.committed_len, || Ok(row.committed_len))
            {
                problems.push(format!("pack {id} ({}): {e}", path.display()));
            }
        }

        // 6. Tracks: bytes re-read and checked against the fingerprint.
        drop(snap);
        for (no, key, t) in tracks {
            let (Some(name), Ok(key)) = (inner.meta.read()?.user_name(no)?, TrackKey::new(&key))
            else {
                problems.push(format!("track {key:?} of user number {}: bad names", no.0));
                continue;
            };
            let user = match UserId::new(&name) {
                Ok(u) => u,
                Err(e) => {
                    problems.push(format!("user {name:?}: {e}"));
                    continue;
                }
            };
            let mut sink = std::io::sink();
            let outcome = self.open_track(&user, &key).and_then(|mut r| {
                std::io::copy(&mut r.by_ref(), &mut sink).map_err(crate::Error::from_io)
            });
            match outcome {
                Ok(n) if n == t.len => {
                    report.tracks_checked += 1;
                    report.bytes_checked += n;
                }
                Ok(n) => {
                    if self.inner.track_record(&user, &key).ok().as_ref() == Some(&t) {
                        problems.push(format!(
                            "track {user}/{key}: read {n} bytes, expected {}",
                            t.len
                        ));
                    }
                }
                // A track replaced or deleted since the snapshot is not a problem.
                Err(crate::Error::TrackNotFound { .. } | crate::Error::TrackChanged { .. }) => {}
                Err(e) => {
                    let current = self.inner.track_record(&user, &key).ok();
                    if current.as_ref() == Some(&t) {
                        problems.push(format!("track {user}/{key}: {e}"));
                    }
                }
            }
        }
        report.problems = problems;
        Ok(report)
    }
}
