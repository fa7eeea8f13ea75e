//! What a migration would do, from metadata alone: for the whole store under a policy
//! ([`WhatIf`]), and for every rights holder at once if its licence changed ([`HolderWhatIf`]).
//!
//! Migration decides each chunk id on its own: the records of one chunk id and the references
//! to them never meet another id's. So the prediction replays migration chunk id by chunk id on
//! a model of that id's entries and references (docs/DESIGN.md 14.4):
//! 1. *collapse*, users in ascending number: the references of a user's tracks bound for the
//!    shared domain move there; where the shared domain has no entry, the user's entry is
//!    promoted (no byte written) when all its references move, and copied otherwise;
//! 2. *expand*: a track bound for its user's domain references the user's entry (revived if it
//!    was garbage), or a copy of its current record.
//!
//! A licence change for one holder changes only the chunk ids its tracks reference, so the
//! what-if of every holder is the base prediction plus, for each id a holder's tracks touch, the
//! difference between replaying it with that holder's licence flipped and without. One scan of
//! the tracks builds the model; one pass over its chunk ids predicts every holder.
//!
//! Memory: one group of references per (chunk id, user, domain, holder), about 40 bytes each;
//! for a store of 10 million chunk references, a few hundred MB.

use std::collections::{BTreeMap, HashMap};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{ChunkEntry, PACK_HEADER_LEN};
use crate::ids::{ChunkId, Domain, UserNo};
use crate::index::{MetaRead, counter_keys as ck};
use crate::names::RightsHolder;
use crate::policy::{Decider, Licence, LicencePolicy, LicenseMode, TrackOwner};

/// What migrating to a policy would do, computed from metadata alone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WhatIf {
    /// The default mode the prediction is for (the entries per rights holder as they are).
    pub mode: LicenseMode,
    /// Live physical bytes (chunk records) after migration.
    pub physical_bytes: u64,
    /// Live chunk records after migration.
    pub chunks: u64,
    /// Bytes of chunk records migration must write (copies for per-user domains, and copies
    /// for the shared domain of records other tracks of their user still need).
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

/// What changing one rights holder's licence, then migrating, would do
/// ([`crate::Store::what_if_by_holder`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HolderWhatIf {
    /// The rights holder.
    pub holder: RightsHolder,
    /// Its entry in the policy, if it has one.
    pub licence: Option<Licence>,
    /// The mode its tracks are in under the current policy.
    pub mode_now: LicenseMode,
    /// The mode the prediction is for: the other one.
    pub mode_after: LicenseMode,
    /// Its tracks.
    pub tracks: u64,
    /// Their logical bytes.
    pub logical_bytes: u64,
    /// Live bytes of the records its tracks reference now (a record its tracks share with
    /// other holders' tracks counts in full for each).
    pub physical_bytes_now: u64,
    /// The store's live physical bytes after the change and a migration.
    pub physical_bytes_after: u64,
    /// The store's live physical bytes after a migration under the current policy (the
    /// baseline: equal to the store's live bytes now when nothing is pending).
    pub physical_bytes_baseline: u64,
    /// Bytes of records the migration would write.
    pub bytes_to_write: u64,
    /// Live bytes it would turn into garbage.
    pub bytes_to_free: u64,
    /// `physical_bytes_baseline - physical_bytes_after`: what the change saves (negative: what
    /// it costs).
    pub savings: i64,
}

/// The base prediction and the prediction per holder.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HolderWhatIfs {
    /// What a migration under the current policy would do (nothing when the layout conforms).
    pub baseline: WhatIf,
    /// Every rights holder with at least one track, by savings, largest first.
    pub holders: Vec<HolderWhatIf>,
    /// Tracks with no known rights holder: they follow the default.
    pub unassigned_tracks: u64,
    /// Their logical bytes.
    pub unassigned_bytes: u64,
}

/// One group of references to a chunk id: `count` references from tracks of `user` whose
/// records are in `domain` and whose holder is `holder` (an index into `Model::holders`,
/// `NONE` for none).
#[derive(Clone, Copy, Debug)]
struct Group {
    user: UserNo,
    domain: Domain,
    holder: u32,
    count: u64,
}

const NONE: u32 = u32::MAX;

/// Per holder: tracks, logical bytes.
#[derive(Clone, Copy, Debug, Default)]
struct HolderTracks {
    tracks: u64,
    logical: u64,
}

/// The references of every track, grouped by chunk id.
struct Model {
    holders: Vec<RightsHolder>,
    holder_tracks: Vec<HolderTracks>,
    unassigned: HolderTracks,
    chunks: HashMap<ChunkId, Vec<Group>>,
    pending: u64,
}

impl Model {
    fn build(snap: &dyn MetaRead, policy: &Decider) -> Result<Model> {
        let mut index: HashMap<RightsHolder, u32> = HashMap::new();
        let mut m = Model {
            holders: Vec::new(),
            holder_tracks: Vec::new(),
            unassigned: HolderTracks::default(),
            chunks: HashMap::new(),
            pending: 0,
        };
        // Names play no part here: the raw scan, so a damaged name does not stop a report.
        snap.for_each_track_raw(&mut |no, _key, t| {
            let holder = match &t.holder {
                None => NONE,
                Some(h) => *index.entry(h.clone()).or_insert_with(|| {
                    m.holders.push(h.clone());
                    m.holder_tracks.push(HolderTracks::default());
                    (m.holders.len() - 1) as u32
                }),
            };
            let counts = if holder == NONE {
                &mut m.unassigned
            } else {
                &mut m.holder_tracks[holder as usize]
            };
            counts.tracks += 1;
            counts.logical += t.len;
            let owner = TrackOwner {
                user: no,
                holder: t.holder.clone(),
            };
            if policy.domain(&owner) != t.domain {
                m.pending += 1;
            }
            let mut mult: BTreeMap<ChunkId, u64> = BTreeMap::new();
            for c in &t.chunks {
                *mult.entry(c.id).or_default() += 1;
            }
            for (id, count) in mult {
                let groups = m.chunks.entry(id).or_default();
                // Tracks come by user: a group of this user is the last one, if any.
                match groups.last_mut() {
                    Some(g) if g.user == no && g.domain == t.domain && g.holder == holder => {
                        g.count += count;
                    }
                    _ => groups.push(Group {
                        user: no,
                        domain: t.domain,
                        holder,
                        count,
                    }),
                }
            }
            Ok(())
        })?;
        Ok(m)
    }
}

/// What replaying migration does to one chunk id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Live bytes and records after.
    physical: u64,
    records: u64,
    /// Bytes and records written.
    written: u64,
    records_written: u64,
    /// Live bytes before.
    live_before: u64,
    /// Bytes of garbage records that become live again.
    revived: u64,
}

impl Outcome {
    fn add(&mut self, o: &Outcome) {
        self.physical += o.physical;
        self.records += o.records;
        self.written += o.written;
        self.records_written += o.records_written;
        self.live_before += o.live_before;
        self.revived += o.revived;
    }

    /// Bytes live before that are not after (a promoted record stays live).
    fn freed(&self) -> u64 {
        (self.live_before + self.written + self.revived).saturating_sub(self.physical)
    }
}

/// The entries of one chunk id, looked up once.
struct Entries<'a> {
    snap: &'a dyn MetaRead,
    id: ChunkId,
    found: Vec<(Domain, Option<ChunkEntry>)>,
}

impl Entries<'_> {
    fn get(&mut self, d: Domain) -> Result<Option<ChunkEntry>> {
        if let Some((_, e)) = self.found.iter().find(|(k, _)| *k == d) {
            return Ok(*e);
        }
        let e = self.snap.chunk(d, &self.id)?;
        self.found.push((d, e));
        Ok(e)
    }
}

/// A record in the replay: its length, references, and whether it was live before.
#[derive(Clone, Copy, Debug)]
struct Rec {
    len: u64,
    refs: u64,
    was_live: bool,
    /// Written by the migration.
    copy: bool,
}

/// Replays migration of one chunk id under `target` (the domain a group's tracks belong in).
fn replay(
    entries: &mut Entries<'_>,
    groups: &[Group],
    target: &dyn Fn(&Group) -> Domain,
) -> Result<Outcome> {
    let id = entries.id;
    let missing = || Error::corrupted(format!("chunk {id} missing from the index"));
    // Slots: domain -> record, starting from the index.
    let mut slots: Vec<(Domain, Option<Rec>)> = Vec::new();
    let mut domains: Vec<Domain> = groups.iter().map(|g| g.domain).collect();
    domains.extend(groups.iter().map(target));
    domains.sort_unstable_by_key(|d| d.to_u64());
    domains.dedup();
    let mut out = Outcome::default();
    for d in domains {
        let rec = entries.get(d)?.map(|e| Rec {
            len: e.record_len(),
            refs: e.refcount,
            was_live: e.refcount > 0,
            copy: false,
        });
        if let Some(r) = rec
            && r.was_live
        {
            out.live_before += r.len;
        }
        slots.push((d, rec));
    }
    let slot = |slots: &mut Vec<(Domain, Option<Rec>)>, d: Domain| -> usize {
        slots
            .iter()
            .position(|(k, _)| *k == d)
            .expect("every domain involved has a slot")
    };
    // 1. Collapse, users in ascending number.
    let mut moving: BTreeMap<UserNo, u64> = BTreeMap::new();
    for g in groups {
        if g.domain == Domain::User(g.user) && target(g) == Domain::Shared {
            *moving.entry(g.user).or_default() += g.count;
        }
    }
    for (user, k) in moving {
        let shared = slot(&mut slots, Domain::Shared);
        let us = slot(&mut slots, Domain::User(user));
        let mut ue = slots[us].1.ok_or_else(missing)?;
        if ue.refs < k {
            return Err(missing());
        }
        match &mut slots[shared].1 {
            Some(s) => {
                s.refs += k;
                ue.refs -= k;
                slots[us].1 = Some(ue);
            }
            None if ue.refs == k => {
                // Promoted: the record moves to the shared domain and stays live.
                slots[shared].1 = Some(ue);
                slots[us].1 = None;
            }
            None => {
                slots[shared].1 = Some(Rec {
                    len: ue.len,
                    refs: k,
                    was_live: false,
                    copy: true,
                });
                out.written += ue.len;
                out.records_written += 1;
                ue.refs -= k;
                slots[us].1 = Some(ue);
            }
        }
    }
    // 2. Expand.
    for g in groups {
        let dest = target(g);
        if dest == g.domain || dest == Domain::Shared {
            continue;
        }
        let src = slot(&mut slots, g.domain);
        let mut se = slots[src].1.ok_or_else(missing)?;
        let ds = slot(&mut slots, dest);
        match &mut slots[ds].1 {
            Some(d) => d.refs += g.count,
            None => {
                slots[ds].1 = Some(Rec {
                    len: se.len,
                    refs: g.count,
                    was_live: false,
                    copy: true,
                });
                out.written += se.len;
                out.records_written += 1;
            }
        }
        se.refs = se.refs.checked_sub(g.count).ok_or_else(missing)?;
        slots[src].1 = Some(se);
    }
    for (_, r) in &slots {
        if let Some(r) = r
            && r.refs > 0
        {
            out.physical += r.len;
            out.records += 1;
            if !r.was_live && !r.copy {
                out.revived += r.len;
            }
        }
    }
    Ok(out)
}

/// The target of a group under `policy`.
fn target_of<'a>(
    policy: &'a Decider,
    holders: &'a [RightsHolder],
) -> impl Fn(&Group) -> Domain + 'a {
    move |g: &Group| {
        let holder = (g.holder != NONE).then(|| &holders[g.holder as usize]);
        policy.mode_of(holder).domain_for(g.user)
    }
}

fn whatif(
    snap: &dyn MetaRead,
    mode: LicenseMode,
    o: &Outcome,
    pending: u64,
    pack_limit: u64,
) -> Result<WhatIf> {
    Ok(WhatIf {
        mode,
        physical_bytes: o.physical,
        chunks: o.records,
        bytes_to_write: o.written,
        records_to_write: o.records_written,
        pack_overhead_bytes: o.written.div_ceil(pack_limit.max(1)) * PACK_HEADER_LEN as u64,
        bytes_to_free: o.freed(),
        pending_tracks: pending,
        physical_bytes_now: snap.counter(ck::LIVE_BYTES)?,
        garbage_bytes_now: snap.counter(ck::GARBAGE_BYTES)?,
    })
}

/// Predicts what migrating under `policy` would do.
pub(crate) fn predict(snap: &dyn MetaRead, policy: &Decider, pack_limit: u64) -> Result<WhatIf> {
    let model = Model::build(snap, policy)?;
    let target = target_of(policy, &model.holders);
    let mut total = Outcome::default();
    for (id, groups) in &model.chunks {
        let mut entries = Entries {
            snap,
            id: *id,
            found: Vec::new(),
        };
        total.add(&replay(&mut entries, groups, &target)?);
    }
    whatif(
        snap,
        policy.licences().default,
        &total,
        model.pending,
        pack_limit,
    )
}

/// Predicts what migrating with the default mode `mode` would do.
pub(crate) fn what_if(engine: &Engine, mode: LicenseMode) -> Result<WhatIf> {
    let snap = engine.meta().read()?;
    let policy = engine.fresh_policy()?.current().with_default(mode);
    predict(snap.as_ref(), &policy, engine.packs().size_limit())
}

/// Predicts, for every rights holder at once, what flipping its licence would do.
pub(crate) fn what_if_by_holder(engine: &Engine) -> Result<HolderWhatIfs> {
    let snap = engine.meta().read()?;
    let policy = engine.fresh_policy()?.current();
    by_holder(snap.as_ref(), &policy, engine.packs().size_limit())
}

pub(crate) fn by_holder(
    snap: &dyn MetaRead,
    policy: &Decider,
    pack_limit: u64,
) -> Result<HolderWhatIfs> {
    let model = Model::build(snap, policy)?;
    let flipped: Vec<Decider> = model
        .holders
        .iter()
        .map(|h| {
            let other = match policy.mode_of(Some(h)) {
                LicenseMode::PerUserCopy => LicenseMode::SingleMaster,
                _ => LicenseMode::PerUserCopy,
            };
            policy.with(h, other)
        })
        .collect();
    let base_target = target_of(policy, &model.holders);
    let mut base = Outcome::default();
    // Per holder: the difference its flip makes, and the live bytes its tracks reference.
    let mut delta: Vec<(i128, i128, i128)> = vec![(0, 0, 0); model.holders.len()];
    let mut referenced = vec![0u64; model.holders.len()];
    let mut touched: Vec<u32> = Vec::new();
    for (id, groups) in &model.chunks {
        let mut entries = Entries {
            snap,
            id: *id,
            found: Vec::new(),
        };
        let b = replay(&mut entries, groups, &base_target)?;
        base.add(&b);
        touched.clear();
        touched.extend(groups.iter().map(|g| g.holder).filter(|&h| h != NONE));
        touched.sort_unstable();
        touched.dedup();
        for &h in &touched {
            let target = target_of(&flipped[h as usize], &model.holders);
            let f = replay(&mut entries, groups, &target)?;
            let d = &mut delta[h as usize];
            d.0 += i128::from(f.physical) - i128::from(b.physical);
            d.1 += i128::from(f.written) - i128::from(b.written);
            d.2 += i128::from(f.freed()) - i128::from(b.freed());
            // The records this holder's tracks reference now, each domain once.
            let mut seen: Vec<Domain> = Vec::new();
            for g in groups.iter().filter(|g| g.holder == h) {
                if !seen.contains(&g.domain) {
                    seen.push(g.domain);
                    if let Some(e) = entries.get(g.domain)? {
                        referenced[h as usize] += e.record_len();
                    }
                }
            }
        }
    }
    let baseline = whatif(
        snap,
        policy.licences().default,
        &base,
        model.pending,
        pack_limit,
    )?;
    let apply = |v: u64, d: i128| u64::try_from(i128::from(v) + d).unwrap_or(0);
    let mut holders: Vec<HolderWhatIf> = model
        .holders
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let d = delta[i];
            let after = apply(base.physical, d.0);
            HolderWhatIf {
                holder: h.clone(),
                licence: policy.licences().entries.get(h).copied(),
                mode_now: policy.mode_of(Some(h)),
                mode_after: flipped[i].mode_of(Some(h)),
                tracks: model.holder_tracks[i].tracks,
                logical_bytes: model.holder_tracks[i].logical,
                physical_bytes_now: referenced[i],
                physical_bytes_after: after,
                physical_bytes_baseline: base.physical,
                bytes_to_write: apply(base.written, d.1),
                bytes_to_free: apply(base.freed(), d.2),
                savings: i64::try_from(i128::from(base.physical) - i128::from(after))
                    .unwrap_or(i64::MAX),
            }
        })
        .collect();
    holders.sort_by(|a, b| b.savings.cmp(&a.savings).then(a.holder.cmp(&b.holder)));
    Ok(HolderWhatIfs {
        baseline,
        holders,
        unassigned_tracks: model.unassigned.tracks,
        unassigned_bytes: model.unassigned.logical,
    })
}
