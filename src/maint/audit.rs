//! The audit: proves, from metadata alone, that the physical layout is the one the licence
//! policy asks for, for the store and for every rights holder, and names the tracks that break
//! it.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::engine::Engine;
use crate::error::Result;
use crate::ids::{ChunkId, Domain, PackId, UserNo};
use crate::index::MetaRead;
use crate::maint::migrate::{pending, target};
use crate::names::RightsHolder;
use crate::policy::{Decider, LicencePolicy, LicenseMode, TrackOwner};

/// Which physical records break the policy's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// The policy's default mode.
    pub mode: LicenseMode,
    /// True when the layout matches the policy, for every holder.
    pub conforming: bool,
    /// Live records referenced by tracks of more than one user (must be 0 where no licence
    /// says shared; expected where one does).
    pub shared_records_across_users: u64,
    /// Tracks whose chunks are not yet in the domain the policy asks for.
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
    /// The verdict per rights holder (tracks without one under `None`), by holder.
    pub holders: Vec<HolderAudit>,
    /// Every live physical record with its domain and the users referencing it, when asked for.
    pub records: Vec<RecordOwnership>,
}

/// The audit of one rights holder's tracks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HolderAudit {
    /// The holder; `None` for the tracks with no known holder.
    pub holder: Option<RightsHolder>,
    /// The mode the policy gives its tracks now.
    pub mode: LicenseMode,
    /// Its tracks.
    pub tracks: u64,
    /// Tracks not yet in the domain its licence asks for.
    pub pending_tracks: u64,
    /// Tracks that break its licence: pending, or referencing a record that breaks the layout
    /// (misplaced, unshareable, foreign or aliased).
    pub breaking_tracks: u64,
    /// True when no track breaks it.
    pub conforming: bool,
    /// Up to [`MAX_LISTED`] breaking tracks, as (user, key).
    pub examples: Vec<(String, String)>,
}

/// Breaking tracks listed per holder.
pub const MAX_LISTED: usize = 100;

/// One live physical record and who references it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordOwnership {
    /// The chunk.
    pub chunk: ChunkId,
    /// Its copy domain.
    pub domain: Domain,
    /// Pack and offset of the record.
    pub pack: PackId,
    /// Offset in the pack.
    pub offset: u64,
    /// Users whose tracks reference it.
    pub users: Vec<String>,
}

/// Audits the physical layout against the current policy. With `records`, the report lists
/// every live record with its domain and the users referencing it.
pub(crate) fn audit(engine: &Engine, records: bool) -> Result<AuditReport> {
    let snap = engine.meta().read()?;
    check_layout(snap.as_ref(), &engine.fresh_policy()?.current(), records)
}

pub(crate) fn check_layout(
    snap: &dyn MetaRead,
    decider: &Decider,
    list: bool,
) -> Result<AuditReport> {
    let policy: &dyn LicencePolicy = decider;
    // Who references each record: users, and the owners (user and holder) the policy judges.
    let mut owners_of: HashMap<(Domain, ChunkId), HashSet<TrackOwner>> = HashMap::new();
    let mut pending_tracks = 0;
    // Names play no part here: the raw scan, so a damaged name does not stop a read-only report.
    snap.for_each_track_raw(&mut |no, _key, t| {
        if pending(policy, no, &t) {
            pending_tracks += 1;
        }
        let owner = TrackOwner {
            user: no,
            holder: t.holder.clone(),
        };
        for c in &t.chunks {
            let set = owners_of.entry((t.domain, c.id)).or_default();
            if !set.contains(&owner) {
                set.insert(owner.clone());
            }
        }
        Ok(())
    })?;
    let mut live_by_id: HashMap<ChunkId, u64> = HashMap::new();
    let mut locations: HashSet<(PackId, u64)> = HashSet::new();
    let (mut across, mut foreign, mut shared_records, mut user_records, mut aliased) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut misplaced, mut unshareable) = (0u64, 0u64);
    let mut records = Vec::new();
    let mut names: HashMap<UserNo, String> = HashMap::new();
    // Records that break the layout: the tracks referencing them break their licence.
    let mut broken: HashSet<(Domain, ChunkId)> = HashSet::new();
    let mut entries = Vec::new();
    snap.for_each_chunk(&mut |d, id, e| {
        if e.refcount > 0 {
            entries.push((d, id, e));
        }
        Ok(())
    })?;
    for (d, id, e) in entries {
        *live_by_id.entry(id).or_default() += 1;
        let mut bad = false;
        if !locations.insert((e.pack, e.offset)) {
            aliased += 1;
            bad = true;
        }
        let owners = owners_of.remove(&(d, id)).unwrap_or_default();
        let users: HashSet<UserNo> = owners.iter().map(|o| o.user).collect();
        if users.len() > 1 {
            across += 1;
        }
        // The policy's verdict: every track referencing the record wants it in its domain, and
        // they may all share it.
        if owners.is_empty() || owners.iter().any(|o| policy.domain(o) != d) {
            misplaced += 1;
            bad = true;
        }
        // Pairwise `may_share` is "one domain": checked in one pass, not over every pair (a
        // shared record may have millions of owners).
        let mut domains = owners.iter().map(|o| policy.domain(o));
        let first = domains.next();
        if domains.any(|d| Some(d) != first) {
            unshareable += 1;
            bad = true;
        }
        match d {
            Domain::Shared => shared_records += 1,
            Domain::User(owner) => {
                user_records += 1;
                if users.iter().any(|u| *u != owner) {
                    foreign += 1;
                    bad = true;
                }
            }
        }
        if bad {
            broken.insert((d, id));
        }
        if list {
            let mut us = Vec::new();
            for u in users {
                us.push(user_name(snap, &mut names, u)?);
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
    // Per holder: a second scan finds the tracks that are pending or read a broken record.
    let mut holders: BTreeMap<Option<RightsHolder>, HolderAudit> = BTreeMap::new();
    let mut breaking: Vec<(UserNo, String, Option<RightsHolder>)> = Vec::new();
    snap.for_each_track_raw(&mut |no, key, t| {
        let h = holders
            .entry(t.holder.clone())
            .or_insert_with(|| HolderAudit {
                holder: t.holder.clone(),
                mode: decider.mode_of(t.holder.as_ref()),
                tracks: 0,
                pending_tracks: 0,
                breaking_tracks: 0,
                conforming: true,
                examples: Vec::new(),
            });
        h.tracks += 1;
        let is_pending = t.domain != target(policy, no, &t);
        if is_pending {
            h.pending_tracks += 1;
        }
        if is_pending || t.chunks.iter().any(|c| broken.contains(&(t.domain, c.id))) {
            h.breaking_tracks += 1;
            h.conforming = false;
            if h.examples.len() < MAX_LISTED {
                // Named after the scan (a placeholder keeps the order).
                h.examples.push((String::new(), key.to_owned()));
                breaking.push((no, key.to_owned(), t.holder.clone()));
            }
        }
        Ok(())
    })?;
    // Fill in the user names of the examples, in the order they were listed.
    let mut filled: HashMap<Option<RightsHolder>, usize> = HashMap::new();
    for (no, _key, holder) in breaking {
        let name = user_name(snap, &mut names, no)?;
        let i = filled.entry(holder.clone()).or_default();
        if let Some(h) = holders.get_mut(&holder) {
            h.examples[*i].0 = name;
        }
        *i += 1;
    }
    // Asked of the policy, not of the mode: with no track pending and every live record in a
    // domain its tracks' policy wants and may share, the layout is the policy's (per-user
    // copies: no record across users, none shared; single master: no duplicate, no user record).
    let conforming =
        pending_tracks == 0 && foreign == 0 && aliased == 0 && misplaced == 0 && unshareable == 0;
    Ok(AuditReport {
        mode: decider.licences().default,
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
        holders: holders.into_values().collect(),
        records,
    })
}

/// A user's name for a report, looked up once.
fn user_name(
    snap: &dyn MetaRead,
    names: &mut HashMap<UserNo, String>,
    u: UserNo,
) -> Result<String> {
    if let Some(n) = names.get(&u) {
        return Ok(n.clone());
    }
    let n = snap
        .user_name(u)?
        .map_or_else(|| format!("#{}", u.0), |n| n.to_string());
    names.insert(u, n.clone());
    Ok(n)
}
