//! Garbage collection and compaction.
//!
//! 1. Garbage entries (refcount 0) that no in-flight ingest has pinned are removed from the
//!    index, a batch per commit. Their records stay in their packs as dead bytes.
//! 2. Packs whose live share fell below the threshold are rewritten: every record an entry still
//!    points at is copied (verified) into another pack, that pack is fsynced, one commit points
//!    the entries at the copies and drops the old pack's row, and only then is the old file
//!    deleted. A crash before the commit leaves copies past a committed length (cut on open);
//!    after it, a pack file without a row (deleted on open).
//!
//! On a full disk GC still frees space: it first makes room for its own commits (releasing the
//! ballast, see `space.rs`), deletes the candidates with nothing to copy before any other, and
//! rewrites a candidate only when the copy fits in the space beyond `Options::min_free_space`;
//! the others are skipped (`GcReport::packs_skipped_for_space`) and wait for a later run.
//!
//! Ingests and reads go on meanwhile: they wait at most for one commit (the pin lock is held
//! across step 1's commits), and a reader whose record moved follows it. GC and migration are
//! serialised with each other.

use std::collections::HashMap;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{ChunkEntry, PACK_HEADER_LEN, PackRow};
use crate::ids::{ChunkId, Domain, PackId};
use crate::index::refs::Accounting;
use crate::index::write_with;
use crate::pack::ActivePack;
use crate::pack::session::{Session, Source};
use crate::read::fetch;

/// The entries pointing into one pack, as listed from the index.
type PackEntries = Vec<(Domain, ChunkId, ChunkEntry)>;

/// In an object store, sealed packs smaller than this are merged by GC (two or more of them).
const SMALL_OBJECT: u64 = 1 << 20;
/// In an object store, GC fills each new pack with the records of several candidates up to
/// about this many bytes (one object, fetched whole by reads: `Options::read_span_bytes`).
const GROUP_BYTES: u64 = 16 << 20;

/// GC settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GcOptions {
    /// Rewrite a pack when the live share of its record bytes is below this (0.0 to 1.0).
    /// Packs with no live record are deleted whatever the threshold.
    pub threshold: f64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { threshold: 0.5 }
    }
}

/// Progress of a GC run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcProgress {
    /// `"entries"` while removing garbage entries, `"packs"` while compacting.
    pub phase: &'static str,
    /// Units done in this phase.
    pub done: u64,
    /// Units in this phase.
    pub total: u64,
}

/// What a GC run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Garbage entries removed from the index.
    pub entries_removed: u64,
    /// Garbage entries kept because an ingest in flight had pinned them.
    pub entries_pinned: u64,
    /// Packs deleted (rewritten or wholly dead).
    pub packs_deleted: u64,
    /// Of those, packs that still held entries (live, or garbage pinned by an ingest) whose
    /// records were copied first.
    pub packs_rewritten: u64,
    /// Bytes of records copied.
    pub bytes_copied: u64,
    /// Candidates left as they are because copying their live records would not fit in the free
    /// space beyond `Options::min_free_space`.
    pub packs_skipped_for_space: u64,
    /// Pack objects no metadata names, deleted: uploads of puts that died before their commit
    /// on a node sharing the store, once no put in flight can still commit them.
    pub unknown_packs_deleted: u64,
    /// Bytes of pack files before and after.
    pub pack_bytes_before: u64,
    /// Bytes of pack files after.
    pub pack_bytes_after: u64,
}

impl GcReport {
    /// Disk bytes given back.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.pack_bytes_before.saturating_sub(self.pack_bytes_after)
    }
}

const ENTRY_BATCH: usize = 4096;

/// Frees garbage and compacts packs; see the module docs for the protocol.
pub(crate) fn gc(
    engine: &Engine,
    options: GcOptions,
    progress: &mut dyn FnMut(&GcProgress),
) -> Result<GcReport> {
    if !(0.0..=1.0).contains(&options.threshold) {
        return Err(Error::InvalidOptions(
            "GC threshold must be in 0.0..=1.0".into(),
        ));
    }
    let maintenance = engine.maintenance()?;
    let mut report = GcReport::default();
    engine.space().room_for_metadata()?;
    let pack_bytes = |engine: &Engine| -> Result<u64> {
        Ok(engine
            .meta()
            .read()?
            .packs()?
            .iter()
            .map(|(_, r)| r.committed_len)
            .sum())
    };
    report.pack_bytes_before = pack_bytes(engine)?;

    // 1. Remove garbage entries.
    let mut garbage: Vec<(Domain, ChunkId)> = Vec::new();
    engine.meta().read()?.for_each_chunk(&mut |d, id, e| {
        if e.refcount == 0 {
            garbage.push((d, id));
        }
        Ok(())
    })?;
    let total = garbage.len() as u64;
    let mut done = 0;
    // Bytes of garbage records whose entries stay (pinned, or within the grace period): a pack
    // is not worth rewriting for them, as the copy would keep them.
    let mut kept: HashMap<PackId, u64> = HashMap::new();
    for batch in garbage.chunks(ENTRY_BATCH) {
        maintenance.check()?;
        let pins = engine.pins().hold();
        let (removed, pinned, held) = write_with(engine.meta(), |w| {
            let mut acc = Accounting::default();
            let (mut removed, mut pinned) = (0u64, 0u64);
            let mut held: Vec<(PackId, u64)> = Vec::new();
            // One round trip for the batch where the metadata is remote.
            w.chunks(batch)?;
            for (d, id) in batch {
                let Some(e) = w.chunk(*d, id)? else { continue };
                if e.refcount != 0 {
                    continue;
                }
                // Pinned by an ingest of this process, or perhaps still wanted by one of
                // another process sharing the metadata (garbage for less than the grace).
                if pins.contains(*d, id) || !w.garbage_settled(*d, id)? {
                    pinned += 1;
                    held.push((e.pack, e.record_len()));
                    continue;
                }
                w.remove_chunk(*d, id)?;
                acc.garbage_chunks -= 1;
                removed += 1;
            }
            acc.apply(w)?;
            Ok((removed, pinned, held))
        })?;
        drop(pins);
        for (pack, len) in held {
            *kept.entry(pack).or_default() += len;
        }
        report.entries_removed += removed;
        report.entries_pinned += pinned;
        done += batch.len() as u64;
        progress(&GcProgress {
            phase: "entries",
            done,
            total,
        });
    }

    // 2. Compact packs. Candidates are taken out of every writer's reach first (sealed, or
    //    taken from the idle pool); only then are their entries listed, so no entry pointing
    //    at a candidate can appear after the listing (migration, the other source of new
    //    entries, is serialised with GC).
    let rows = engine.meta().read()?.packs()?;
    let sparse = |pid: &PackId, row: &PackRow| {
        let records = row.committed_len.saturating_sub(PACK_HEADER_LEN as u64);
        let dead = row
            .dead_bytes
            .saturating_sub(kept.get(pid).copied().unwrap_or(0));
        let live = records.saturating_sub(dead);
        dead > 0 && (live == 0 || (live as f64) < options.threshold * records as f64)
    };
    // In an object store every commit seals its pack, so a put of little new content (a
    // retag) leaves a small object: two or more of them are merged, whatever their live share.
    let objects = engine.packs().seals_on_sync();
    let small = |row: &PackRow| objects && row.sealed && row.committed_len < SMALL_OBJECT;
    let small_count = rows
        .iter()
        .filter(|(p, r)| small(r) && !sparse(p, r))
        .count();
    let candidates: Vec<_> = rows
        .into_iter()
        .filter(|(p, row)| sparse(p, row) || (small(row) && small_count >= 2))
        .collect();
    let mut taken_packs: HashMap<PackId, ActivePack> = HashMap::new();
    let candidates: Vec<PackId> = candidates
        .into_iter()
        .filter_map(|(pid, row)| {
            if row.sealed {
                return Some(pid);
            }
            let p = engine.packs().take_idle(pid)?;
            taken_packs.insert(pid, p);
            Some(pid)
        })
        .collect();
    let mut by_pack: HashMap<PackId, PackEntries> = HashMap::new();
    let listed = engine.meta().read().and_then(|snap| {
        snap.for_each_chunk(&mut |d, id, e| {
            by_pack.entry(e.pack).or_default().push((d, id, e));
            Ok(())
        })
    });
    if let Err(e) = listed {
        give_back(engine, taken_packs.into_values());
        return Err(e);
    }
    // Candidates with nothing to copy first (they free space without needing any), then the
    // cheapest copies, so a nearly full disk gets the most room back for what it can afford.
    let copy_len = |pid: &PackId| -> u64 { by_pack.get(pid).map_or(0, |es| copy_len_of(es)) };
    let mut candidates = candidates;
    candidates.sort_by_key(|pid| (copy_len(pid), *pid));
    let total = candidates.len() as u64;
    // Candidates are compacted in groups, one sync and one commit each: one candidate per
    // group on local disk; in an object store, as many as fill about one object of
    // `GROUP_BYTES`, so small packs merge into one (a candidate with nothing to copy stays
    // alone: it is only deleted).
    let mut groups: Vec<Vec<PackId>> = Vec::new();
    let mut group_bytes = 0;
    for pid in candidates {
        let len = copy_len(&pid);
        let join = objects
            && len > 0
            && groups
                .last()
                .is_some_and(|g| copy_len(&g[0]) > 0 && group_bytes + len <= GROUP_BYTES);
        if join {
            groups.last_mut().expect("joined a group").push(pid);
            group_bytes += len;
        } else {
            groups.push(vec![pid]);
            group_bytes = len;
        }
    }
    // One session for the whole run, of new packs only, so it never writes into a candidate.
    let mut out = Session::new(engine.packs(), Source::Fresh);
    let mut done = 0u64;
    for group in groups {
        let taken: Vec<ActivePack> = group
            .iter()
            .filter_map(|pid| taken_packs.remove(pid))
            .collect();
        let entries: Vec<(PackId, PackEntries)> = group
            .iter()
            .map(|pid| (*pid, by_pack.remove(pid).unwrap_or_default()))
            .collect();
        let copy: u64 = entries.iter().map(|(_, es)| copy_len_of(es)).sum();
        if copy > 0 {
            let needed = copy + PACK_HEADER_LEN as u64;
            let spare = match engine.space().spare_space() {
                Ok(spare) => spare,
                Err(e) => {
                    out.abandon();
                    give_back(engine, taken.into_iter().chain(taken_packs.into_values()));
                    return Err(e);
                }
            };
            if spare < needed {
                // Untouched: unsealed candidates go back to the writers.
                give_back(engine, taken);
                report.packs_skipped_for_space += group.len() as u64;
                done += group.len() as u64;
                progress(&GcProgress {
                    phase: "packs",
                    done,
                    total,
                });
                continue;
            }
        }
        let outcome = compact_group(engine, &entries, &mut out, &mut report);
        // A candidate is never handed back to writers once its compaction started: its row
        // may be gone (commit done, delete failed) or its fate unknown (commit failed). An
        // unsealed candidate that survives is reused after the next open.
        for p in taken {
            engine.packs().forget(p);
        }
        match outcome {
            Ok(()) => {}
            Err(e) => {
                out.abandon();
                give_back(engine, taken_packs.into_values());
                return Err(e);
            }
        }
        done += group.len() as u64;
        progress(&GcProgress {
            phase: "packs",
            done,
            total,
        });
    }
    out.commit();
    if engine.meta().shared() && engine.packs().seals_on_sync() {
        maintenance.check()?;
        report.unknown_packs_deleted = sweep_unknown_packs(engine)?;
    }
    report.pack_bytes_after = pack_bytes(engine)?;
    engine.space().restore_ballast()?;
    Ok(report)
}

/// Most marks of the pack-id bound kept (`state_keys::PACK_ID_MARKS`).
const MAX_MARKS: usize = 64;

/// Deletes the pack objects no metadata names that no put in flight can still commit, in a
/// store other processes share (where open keeps them: `RecoveryReport::unknown_packs_kept`).
///
/// Every run records a mark: `next_pack_id` and the time. A node uses a pack id within the
/// ingest time limit L of reserving it (`PackIds::Shared`), and a put that uses it commits
/// soon after L of its start or never (`IngestTooSlow`). So an id below a mark at least 3L old
/// names a pack whose put has committed or died (the commit checks the limit in its
/// transaction, whose statements time out after L: so within about 2L; 3L is the margin): if
/// no metadata names it, nothing ever will.
/// The times are this node's clock: the nodes' clocks must agree to well within L.
fn sweep_unknown_packs(engine: &Engine) -> Result<u64> {
    use crate::index::counter_keys as ck;
    use crate::index::state_keys as sk;
    let Some(limit) = engine.ingest_time_limit() else {
        return Ok(0);
    };
    let now = crate::policy::unix_now();
    let marks = write_with(engine.meta(), |w| {
        let mut marks = decode_marks(w.state(sk::PACK_ID_MARKS)?.as_deref())?;
        marks.push((w.counter(ck::NEXT_PACK_ID)?, now));
        let excess = marks.len().saturating_sub(MAX_MARKS);
        marks.drain(..excess);
        let mut bytes = Vec::with_capacity(marks.len() * 16);
        for (id, at) in &marks {
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&at.to_le_bytes());
        }
        w.set_state(sk::PACK_ID_MARKS, &bytes)?;
        Ok(marks)
    })?;
    let settled = now.saturating_sub(
        limit
            .as_secs()
            .saturating_mul(u64::from(crate::engine::GRACE_LIMITS))
            .saturating_add(1),
    );
    let Some(bound) = marks
        .iter()
        .rev()
        .find(|(_, at)| *at <= settled)
        .map(|(id, _)| *id)
    else {
        return Ok(0);
    };
    let rows: std::collections::HashSet<PackId> = engine
        .meta()
        .read()?
        .packs()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let dead: Vec<PackId> = engine
        .packs()
        .stored_ids()?
        .into_iter()
        .filter(|id| id.0 < bound && !rows.contains(id))
        .collect();
    for id in &dead {
        engine.packs().delete(*id)?;
    }
    Ok(dead.len() as u64)
}

fn decode_marks(bytes: Option<&[u8]>) -> Result<Vec<(u64, u64)>> {
    let Some(b) = bytes else {
        return Ok(Vec::new());
    };
    if b.len() % 16 != 0 || b.len() / 16 > MAX_MARKS {
        return Err(Error::corrupted("metadata pack id marks"));
    }
    Ok(b.chunks_exact(16)
        .map(|c| {
            (
                u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
            )
        })
        .collect())
}

/// Hands packs GC took back to the writers (their uncommitted tails cut).
fn give_back(engine: &Engine, packs: impl IntoIterator<Item = ActivePack>) {
    for p in packs {
        engine.packs().abandon(p);
    }
}

fn copy_len_of(entries: &[(Domain, ChunkId, ChunkEntry)]) -> u64 {
    entries.iter().map(|(_, _, e)| e.record_len()).sum()
}

/// Compacts a group of candidates: copies every record an entry points at into `out`, syncs
/// it once, and in one commit points the entries at the copies and drops the candidates' rows;
/// then deletes the candidates.
fn compact_group(
    engine: &Engine,
    group: &[(PackId, PackEntries)],
    out: &mut Session<'_>,
    report: &mut GcReport,
) -> Result<()> {
    let result = (|| -> Result<()> {
        // (candidate, domain, chunk, entry before, entry after)
        let mut moved: Vec<(PackId, Domain, ChunkId, ChunkEntry, ChunkEntry)> = Vec::new();
        for (pid, entries) in group {
            for (d, id, e) in entries {
                let (head, stored) = fetch::record_verified(engine, e, id)?;
                let (pack, offset) = out.append(&head, &stored)?;
                moved.push((*pid, *d, *id, *e, ChunkEntry { pack, offset, ..*e }));
            }
        }
        out.sync()?;
        let appended = out.appended();
        write_with(engine.meta(), |w| {
            let mut acc = Accounting::default();
            acc.record_appends(&appended);
            for (pid, _) in group {
                let old = w
                    .pack(*pid)?
                    .ok_or_else(|| Error::corrupted(format!("pack {pid} vanished during GC")))?;
                let records = old.committed_len.saturating_sub(PACK_HEADER_LEN as u64);
                let mut live_moved = 0u64;
                for (_, d, id, was, now) in moved.iter().filter(|m| m.0 == *pid) {
                    let n = now.record_len();
                    match w.chunk(*d, id)? {
                        Some(cur) if cur.pack == *pid && cur.offset == was.offset => {
                            w.put_chunk(
                                *d,
                                id,
                                &ChunkEntry {
                                    refcount: cur.refcount,
                                    ..*now
                                },
                            )?;
                            if cur.refcount == 0 {
                                acc.orphan_record(now.pack, n);
                            } else {
                                live_moved += n;
                            }
                        }
                        _ => acc.orphan_record(now.pack, n),
                    }
                }
                // Every live byte of the old pack must have moved; anything else would be lost.
                if live_moved != records - old.dead_bytes.min(records) {
                    return Err(Error::corrupted(format!(
                        "pack {pid}: {} live bytes by its row, {live_moved} found in the index",
                        records - old.dead_bytes.min(records)
                    )));
                }
                acc.garbage_bytes -= old.dead_bytes as i64;
                w.remove_pack(*pid)?;
            }
            acc.apply(w)
        })?;
        report.bytes_copied += moved.iter().map(|m| m.4.record_len()).sum::<u64>();
        Ok(())
    })();
    result?;
    out.checkpoint();
    for (pid, entries) in group {
        if !entries.is_empty() {
            report.packs_rewritten += 1;
        }
        report.packs_deleted += 1;
        engine.packs().delete(*pid)?;
    }
    Ok(())
}
