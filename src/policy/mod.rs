//! The licence policy: which copy domain a track's chunks belong to, and whether two tracks may
//! share a physical record.
//!
//! Ingest, migration, what-if, audit and upload avoidance ask the policy; none of them compares
//! modes. The policy is a set of [`Licences`]: a default [`LicenseMode`] (the store-wide mode)
//! and one entry per rights holder that has one, each `shared` or `per-user`, optionally until a
//! moment. A track's domain follows from its [`TrackOwner`]: the user, and the rights holder.
//!
//! What may be shared, and why (docs/DESIGN.md 14.2): every track whose licence says `shared`
//! keeps its chunks in the one `Shared` domain, whatever its holder, so identical bytes of two
//! licensed holders (the same cover art, a recording on two labels' releases) are stored once.
//! A licence lets the operator serve that holder's tracks from a server copy; it says nothing
//! about whose upload the copy came from. Every track whose licence says `per-user` keeps its
//! chunks in its user's own domain, so no record it reads is shared with another user, whatever
//! other holders' tracks hold the same bytes.
//!
//! [`Policy`] holds the store's current licences and the ingests in flight. Each change of
//! policy starts a new *generation*; an ingest registers under the generation current when it
//! starts, so once the policy changed no ingest starts under the old one, and migration can wait
//! for those that did (`Snapshot::earlier_ingests`). A licence that ends at a moment changes the
//! policy when that moment passes: the first look at the policy after it starts a generation.

pub(crate) mod quota;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::ids::{Domain, UserNo};
use crate::names::RightsHolder;

/// What the policy is told about a track when it decides for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TrackOwner {
    /// The user whose locker holds the track.
    pub(crate) user: UserNo,
    /// The track's rights holder, when known.
    pub(crate) holder: Option<RightsHolder>,
}

/// Decides where a track's chunks live.
pub(crate) trait LicencePolicy: fmt::Debug {
    /// The copy domain the chunks of `track` belong in.
    fn domain(&self, track: &TrackOwner) -> Domain;

    /// Whether tracks `a` and `b` may reference the same physical record (and upload
    /// avoidance may link one from the other): exactly when their chunks belong in one domain.
    fn may_share(&self, a: &TrackOwner, b: &TrackOwner) -> bool {
        self.domain(a) == self.domain(b)
    }

    /// Whether upload avoidance may link `track` from another track's records: only where the
    /// policy stores its content once for several users (invariant 7; in a user's own domain
    /// nothing may depend on what others hold).
    fn avoids_uploads(&self, track: &TrackOwner) -> bool {
        !matches!(self.domain(track), Domain::User(_))
    }
}

impl LicencePolicy for LicenseMode {
    fn domain(&self, track: &TrackOwner) -> Domain {
        self.domain_for(track.user)
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One rights holder's licence: where its tracks' chunks live, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Licence {
    /// `SingleMaster`: the holder's tracks share one copy of identical content;
    /// `PerUserCopy`: every user keeps their own copy.
    pub mode: LicenseMode,
    /// Seconds since the Unix epoch from which the entry no longer applies (the holder's tracks
    /// then follow the default); `None`: no end.
    pub until: Option<u64>,
}

impl Licence {
    /// An entry without end.
    pub fn new(mode: LicenseMode) -> Licence {
        Licence { mode, until: None }
    }

    /// The entry ends at `until` (seconds since the Unix epoch).
    #[must_use]
    pub fn until(mut self, until: u64) -> Licence {
        self.until = Some(until);
        self
    }

    /// Whether the entry applies at `at`.
    pub fn in_force(&self, at: u64) -> bool {
        self.until.is_none_or(|u| at < u)
    }
}

/// The store's licence policy: a default and the entries per rights holder
/// ([`crate::Store::licences`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Licences {
    /// Where tracks go whose holder has no entry in force, or is unknown (the store's mode).
    pub default: LicenseMode,
    /// The entries, by rights holder.
    pub entries: BTreeMap<RightsHolder, Licence>,
}

/// Version byte of the encoded entries (state `licences`, docs/DESIGN.md 14.1).
const LICENCES_VERSION: u8 = 1;
/// Most entries a policy may hold (a locker deals with a few thousand labels at most).
pub const MAX_LICENCES: usize = 100_000;

impl Licences {
    /// Where `holder`'s tracks go at `at`.
    pub fn mode_of(&self, holder: Option<&RightsHolder>, at: u64) -> LicenseMode {
        holder
            .and_then(|h| self.entries.get(h))
            .filter(|l| l.in_force(at))
            .map_or(self.default, |l| l.mode)
    }

    /// The earliest end of an entry after `at`.
    fn next_end(&self, at: u64) -> Option<u64> {
        self.entries
            .values()
            .filter_map(|l| l.until)
            .filter(|&u| u > at)
            .min()
    }

    /// The policy as it decides at `at`.
    pub(crate) fn at(self: &Arc<Self>, at: u64) -> Decider {
        Decider {
            licences: self.clone(),
            at,
        }
    }

    /// The entries, encoded for the state table (the default lives in state `mode`).
    pub(crate) fn encode_entries(&self) -> Vec<u8> {
        let mut b = vec![LICENCES_VERSION];
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (h, l) in &self.entries {
            b.extend_from_slice(&(h.as_str().len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_str().as_bytes());
            b.push(l.mode.to_byte());
            b.push(u8::from(l.until.is_some()));
            b.extend_from_slice(&l.until.unwrap_or(0).to_le_bytes());
        }
        b
    }

    /// Decodes [`Self::encode_entries`]; `None` (no state) is no entry.
    pub(crate) fn decode(default: LicenseMode, entries: Option<&[u8]>) -> Result<Licences> {
        let bad = |what: &str| Error::corrupted(format!("metadata licences: {what}"));
        let mut out = Licences {
            default,
            entries: BTreeMap::new(),
        };
        let Some(b) = entries else {
            return Ok(out);
        };
        if b.first() != Some(&LICENCES_VERSION) || b.len() < 5 {
            return Err(bad("unsupported version or truncated"));
        }
        let count = u32::from_le_bytes(b[1..5].try_into().expect("4 bytes")) as usize;
        if count > MAX_LICENCES {
            return Err(bad("too many entries"));
        }
        let mut at = 5;
        for _ in 0..count {
            let n = b
                .get(at..at + 2)
                .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])))
                .ok_or_else(|| bad("truncated"))?;
            let name = b.get(at + 2..at + 2 + n).ok_or_else(|| bad("truncated"))?;
            let holder = RightsHolder::from_bytes(name).map_err(|_| bad("invalid holder"))?;
            at += 2 + n;
            let rest = b.get(at..at + 10).ok_or_else(|| bad("truncated"))?;
            let mode = LicenseMode::from_byte(rest[0]).ok_or_else(|| bad("unknown mode"))?;
            let until = match rest[1] {
                0 => None,
                1 => Some(u64::from_le_bytes(rest[2..10].try_into().expect("8 bytes"))),
                _ => return Err(bad("unknown flags")),
            };
            at += 10;
            if out
                .entries
                .insert(holder, Licence { mode, until })
                .is_some()
            {
                return Err(bad("holder listed twice"));
            }
        }
        if at != b.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(out)
    }
}

/// The licences as they decide at one moment: the policy ingest, migration, what-if and audit
/// use.
#[derive(Clone, Debug)]
pub(crate) struct Decider {
    licences: Arc<Licences>,
    at: u64,
}

impl Decider {
    /// The licences decided from.
    pub(crate) fn licences(&self) -> &Licences {
        &self.licences
    }

    /// The mode `holder`'s tracks are in.
    pub(crate) fn mode_of(&self, holder: Option<&RightsHolder>) -> LicenseMode {
        self.licences.mode_of(holder, self.at)
    }

    /// Whether any track may have its upload avoided: the default or an entry in force stores
    /// content once for several users.
    pub(crate) fn avoids_any_upload(&self) -> bool {
        let l = &self.licences;
        l.default == LicenseMode::SingleMaster
            || l.entries
                .values()
                .any(|e| e.mode == LicenseMode::SingleMaster && e.in_force(self.at))
    }

    /// The same licences with `holder`'s entry replaced by `mode` (no end).
    pub(crate) fn with(&self, holder: &RightsHolder, mode: LicenseMode) -> Decider {
        let mut l = (*self.licences).clone();
        l.entries.insert(holder.clone(), Licence::new(mode));
        Decider {
            licences: Arc::new(l),
            at: self.at,
        }
    }

    /// The same licences with another default.
    pub(crate) fn with_default(&self, mode: LicenseMode) -> Decider {
        let mut l = (*self.licences).clone();
        l.default = mode;
        Decider {
            licences: Arc::new(l),
            at: self.at,
        }
    }
}

impl LicencePolicy for Decider {
    fn domain(&self, track: &TrackOwner) -> Domain {
        self.mode_of(track.holder.as_ref()).domain_for(track.user)
    }
}

/// The policy as stored in the metadata: the licences (the default mode and the entries) and
/// the stored version (`state_keys::POLICY_VERSION`, absent: 0).
pub(crate) fn stored(snap: &dyn crate::index::MetaRead) -> Result<(Licences, u64)> {
    use crate::index::state_keys as sk;
    let mode = snap
        .state(sk::MODE)?
        .filter(|m| m.len() == 1)
        .and_then(|m| LicenseMode::from_byte(m[0]))
        .ok_or_else(|| Error::corrupted("metadata license mode"))?;
    let licences = Licences::decode(mode, snap.state(sk::LICENCES)?.as_deref())?;
    let version = match snap.state(sk::POLICY_VERSION)? {
        None => 0,
        Some(v) => u64::from_le_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| Error::corrupted("metadata policy version"))?,
        ),
    };
    Ok((licences, version))
}

/// Writes `licences` as the stored policy, version `version`.
pub(crate) fn store(
    w: &mut dyn crate::index::MetaWrite,
    licences: &Licences,
    version: u64,
) -> Result<()> {
    use crate::index::state_keys as sk;
    if licences.entries.len() > MAX_LICENCES {
        return Err(Error::InvalidOptions(format!(
            "at most {MAX_LICENCES} licence entries"
        )));
    }
    w.set_state(sk::MODE, &[licences.default.to_byte()])?;
    w.set_state(sk::LICENCES, &licences.encode_entries())?;
    w.set_state(sk::POLICY_VERSION, &version.to_le_bytes())
}

/// The store's current policy and the ingests in flight under each generation of it.
#[derive(Debug)]
pub(crate) struct Policy {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    licences: Arc<Licences>,
    /// Bumped by every change of policy, and when an entry's end passes.
    generation: u64,
    /// The next end of an entry not yet passed.
    next_end: Option<u64>,
    /// Ingests in flight by the generation they started under (entries with 0 removed).
    in_flight: BTreeMap<u64, u64>,
    /// The stored policy's version (`state_keys::POLICY_VERSION`) these licences are.
    version: u64,
}

impl State {
    fn install(&mut self, next: Licences, version: u64) {
        self.next_end = next.next_end(unix_now());
        self.licences = Arc::new(next);
        self.generation += 1;
        self.version = version;
    }

    /// Starts a generation if an entry ended since the last look.
    fn refresh(&mut self, now: u64) {
        if self.next_end.is_some_and(|end| end <= now) {
            self.generation += 1;
            self.next_end = self.licences.next_end(now);
        }
    }
}

/// The policy at one moment (`Policy::snapshot`).
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// The policy as it decides now.
    pub(crate) policy: Decider,
    /// Changes when the policy does.
    pub(crate) generation: u64,
    /// Ingests in flight that began under an earlier generation: they may still commit tracks
    /// laid out by the old policy.
    pub(crate) earlier_ingests: u64,
}

/// An ingest registered with the policy, under the policy current when it started. Dropping it
/// ends the ingest (also when the put panics, so migration never waits for it forever).
#[derive(Debug)]
pub(crate) struct Ingest<'a> {
    policy: &'a Policy,
    generation: u64,
    decider: Decider,
    /// The stored policy's version the ingest runs under.
    version: u64,
}

impl Ingest<'_> {
    /// The policy the ingest runs under.
    pub(crate) fn policy(&self) -> &Decider {
        &self.decider
    }

    /// The stored version of that policy.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        let mut st = self.policy.lock();
        if let Some(n) = st.in_flight.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                st.in_flight.remove(&self.generation);
            }
        }
    }
}

impl Policy {
    /// The policy `licences`, stored as version `version`.
    pub(crate) fn new(licences: Licences, version: u64) -> Policy {
        let now = unix_now();
        let next_end = licences.next_end(now);
        Policy {
            state: Mutex::new(State {
                licences: Arc::new(licences),
                generation: 0,
                next_end,
                in_flight: BTreeMap::new(),
                version,
            }),
        }
    }

    /// The stored version these licences are.
    pub(crate) fn version(&self) -> u64 {
        self.lock().version
    }

    /// Takes the stored policy another process wrote (`version` differs from ours): a new
    /// generation.
    pub(crate) fn adopt(&self, licences: Licences, version: u64) {
        let mut st = self.lock();
        if st.version != version {
            st.install(licences, version);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        let mut st = self.state.lock().expect("policy lock");
        st.refresh(unix_now());
        st
    }

    /// The default mode.
    pub(crate) fn mode(&self) -> LicenseMode {
        self.lock().licences.default
    }

    /// The licences.
    pub(crate) fn licences(&self) -> Licences {
        (*self.lock().licences).clone()
    }

    /// The current policy.
    pub(crate) fn current(&self) -> Decider {
        self.lock().licences.at(unix_now())
    }

    /// Registers an ingest under the current policy.
    pub(crate) fn begin_ingest(&self) -> Ingest<'_> {
        let mut st = self.lock();
        let generation = st.generation;
        *st.in_flight.entry(generation).or_default() += 1;
        Ingest {
            policy: self,
            generation,
            decider: st.licences.at(unix_now()),
            version: st.version,
        }
    }

    /// Changes the licences: `persist` writes the new policy, durably, and returns it with its
    /// stored version (it reads the stored policy and changes that, so a change another process
    /// made meanwhile is kept). It runs under the policy's lock, so no ingest starts under the
    /// old policy once this returns `Ok`. On `Err` nothing changes.
    pub(crate) fn replace(
        &self,
        persist: impl FnOnce(&Licences) -> Result<(Licences, u64)>,
    ) -> Result<()> {
        let mut st = self.lock();
        let (next, version) = persist(&st.licences)?;
        st.install(next, version);
        Ok(())
    }

    /// The current policy, its generation and the ingests begun under earlier ones, read
    /// together.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        Snapshot {
            policy: st.licences.at(unix_now()),
            generation: st.generation,
            earlier_ingests: st.in_flight.range(..st.generation).map(|(_, n)| n).sum(),
        }
    }
}

/// The store-wide license mode: the first implementation of the licence policy.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum LicenseMode {
    /// No licence: every user's chunks live in that user's own domain.
    PerUserCopy,
    /// Licensed: identical content is stored once for everybody.
    SingleMaster,
}

impl LicenseMode {
    /// The domain a new chunk of `user` goes to under this mode.
    pub fn domain_for(self, user: UserNo) -> Domain {
        match self {
            LicenseMode::PerUserCopy => Domain::User(user),
            LicenseMode::SingleMaster => Domain::Shared,
        }
    }

    /// `"per-user-copy"` or `"single-master"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseMode::PerUserCopy => "per-user-copy",
            LicenseMode::SingleMaster => "single-master",
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            LicenseMode::PerUserCopy => 1,
            LicenseMode::SingleMaster => 2,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<LicenseMode> {
        match b {
            1 => Some(LicenseMode::PerUserCopy),
            2 => Some(LicenseMode::SingleMaster),
            _ => None,
        }
    }
}

impl fmt::Display for LicenseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LicenseMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "per-user-copy" | "per-user" => Ok(LicenseMode::PerUserCopy),
            "single-master" | "shared" => Ok(LicenseMode::SingleMaster),
            other => Err(format!(
                "unknown mode {other:?}: expected per-user-copy (or per-user) or single-master \
                 (or shared)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(user: u64, holder: Option<&str>) -> TrackOwner {
        TrackOwner {
            user: UserNo(user),
            holder: holder.map(|h| RightsHolder::new(h).unwrap()),
        }
    }

    fn licences(default: LicenseMode, entries: &[(&str, Licence)]) -> Licences {
        Licences {
            default,
            entries: entries
                .iter()
                .map(|(h, l)| (RightsHolder::new(h).unwrap(), *l))
                .collect(),
        }
    }

    fn with_default(l: &Licences, mode: LicenseMode) -> Licences {
        let mut next = l.clone();
        next.default = mode;
        next
    }

    #[test]
    fn ingests_of_earlier_generations_are_counted_until_they_end() {
        let p = Policy::new(licences(LicenseMode::PerUserCopy, &[]), 0);
        let a = p.begin_ingest();
        assert_eq!(a.policy().domain(&owner(3, None)), Domain::User(UserNo(3)));
        assert_eq!(p.snapshot().earlier_ingests, 0);
        p.replace(|l| Ok((with_default(l, LicenseMode::SingleMaster), 1)))
            .unwrap();
        let b = p.begin_ingest();
        assert_eq!(b.policy().domain(&owner(3, None)), Domain::Shared);
        assert_eq!(p.snapshot().earlier_ingests, 1);
        p.replace(|l| Ok((with_default(l, LicenseMode::PerUserCopy), 2)))
            .unwrap();
        assert_eq!(p.snapshot().earlier_ingests, 2);
        drop(a);
        assert_eq!(p.snapshot().earlier_ingests, 1);
        drop(b);
        assert_eq!(p.snapshot().earlier_ingests, 0);
        // A failed persist changes nothing.
        let err = p.replace(|_| Err(crate::error::Error::Metadata("no".into())));
        assert!(err.is_err());
        assert_eq!(p.mode(), LicenseMode::PerUserCopy);
        assert_eq!(p.version(), 2);
        // Another process's policy is adopted once, by its version.
        p.adopt(licences(LicenseMode::SingleMaster, &[]), 3);
        assert_eq!(p.mode(), LicenseMode::SingleMaster);
        let generation = p.snapshot().generation;
        p.adopt(licences(LicenseMode::PerUserCopy, &[]), 3);
        assert_eq!(
            p.mode(),
            LicenseMode::SingleMaster,
            "the same version: nothing new"
        );
        assert_eq!(p.snapshot().generation, generation);
    }

    #[test]
    fn the_modes_decide_domains_and_sharing() {
        let (a, b) = (owner(1, None), owner(2, None));
        let per = LicenseMode::PerUserCopy;
        assert_eq!(per.domain(&a), Domain::User(UserNo(1)));
        assert!(!per.may_share(&a, &b));
        assert!(per.may_share(&a, &a));
        let single = LicenseMode::SingleMaster;
        assert_eq!(single.domain(&b), Domain::Shared);
        assert!(single.may_share(&a, &b));
        assert!(single.avoids_uploads(&a));
        assert!(!per.avoids_uploads(&a));
    }

    #[test]
    fn each_holder_follows_its_entry_and_the_rest_the_default() {
        let l = Arc::new(licences(
            LicenseMode::PerUserCopy,
            &[
                ("EMI", Licence::new(LicenseMode::SingleMaster)),
                (
                    "Indie",
                    Licence::new(LicenseMode::SingleMaster).until(1_000),
                ),
            ],
        ));
        let before = l.at(999);
        assert_eq!(before.domain(&owner(1, Some("EMI"))), Domain::Shared);
        assert_eq!(before.domain(&owner(1, Some("Indie"))), Domain::Shared);
        assert_eq!(
            before.domain(&owner(1, Some("Sony"))),
            Domain::User(UserNo(1))
        );
        assert_eq!(before.domain(&owner(1, None)), Domain::User(UserNo(1)));
        // Two licensed holders share; an unlicensed one shares with nobody else.
        assert!(before.may_share(&owner(1, Some("EMI")), &owner(2, Some("Indie"))));
        assert!(!before.may_share(&owner(1, Some("EMI")), &owner(2, Some("Sony"))));
        assert!(!before.may_share(&owner(1, Some("Sony")), &owner(2, Some("Sony"))));
        // The entry's end is exclusive: from it on the default applies.
        let after = l.at(1_000);
        assert_eq!(
            after.domain(&owner(1, Some("Indie"))),
            Domain::User(UserNo(1))
        );
        assert_eq!(after.domain(&owner(1, Some("EMI"))), Domain::Shared);
        let flipped = after.with(&RightsHolder::new("EMI").unwrap(), LicenseMode::PerUserCopy);
        assert_eq!(
            flipped.domain(&owner(1, Some("EMI"))),
            Domain::User(UserNo(1))
        );
        assert_eq!(l.next_end(0), Some(1_000));
        assert_eq!(l.next_end(1_000), None);
    }

    #[test]
    fn an_entry_that_ends_starts_a_generation() {
        let now = unix_now();
        let p = Policy::new(
            licences(
                LicenseMode::PerUserCopy,
                &[(
                    "EMI",
                    Licence::new(LicenseMode::SingleMaster).until(now + 1),
                )],
            ),
            0,
        );
        let ingest = p.begin_ingest();
        let first = p.snapshot().generation;
        assert_eq!(
            ingest.policy().domain(&owner(1, Some("EMI"))),
            Domain::Shared
        );
        while unix_now() <= now + 1 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let snap = p.snapshot();
        assert_eq!(snap.generation, first + 1);
        assert_eq!(
            snap.earlier_ingests, 1,
            "the ingest began under the ended entry"
        );
        assert_eq!(
            snap.policy.domain(&owner(1, Some("EMI"))),
            Domain::User(UserNo(1))
        );
    }

    #[test]
    fn entries_round_trip_and_damage_is_refused() {
        let l = licences(
            LicenseMode::SingleMaster,
            &[
                ("EMI", Licence::new(LicenseMode::SingleMaster)),
                (
                    "Sony Music",
                    Licence::new(LicenseMode::PerUserCopy).until(42),
                ),
            ],
        );
        let enc = l.encode_entries();
        assert_eq!(
            Licences::decode(LicenseMode::SingleMaster, Some(&enc)).unwrap(),
            l
        );
        assert_eq!(
            Licences::decode(LicenseMode::PerUserCopy, None)
                .unwrap()
                .entries
                .len(),
            0
        );
        for cut in 0..enc.len() {
            assert!(Licences::decode(LicenseMode::SingleMaster, Some(&enc[..cut])).is_err());
        }
        let mut bad = enc.clone();
        bad[0] = 9;
        assert!(Licences::decode(LicenseMode::SingleMaster, Some(&bad)).is_err());
        let mut trailing = enc;
        trailing.push(0);
        assert!(Licences::decode(LicenseMode::SingleMaster, Some(&trailing)).is_err());
    }
}
