//! The licence policy: which copy domain a track's chunks belong to, and whether two tracks may
//! share a physical record.
//!
//! Ingest, migration, what-if, audit and upload avoidance ask the policy; none of them compares
//! modes. Today the policy is a store-wide [`LicenseMode`]; per-rights-holder scopes (a label's
//! tracks shared, others per user) will be a second implementation of [`LicencePolicy`], deciding
//! from the [`TrackOwner`] (which will then carry the rights holder).
//!
//! [`Policy`] holds the store's current policy and the ingests in flight. Each change of policy
//! starts a new *generation*; an ingest registers under the generation current when it starts,
//! so once the policy changed no ingest starts under the old one, and migration can wait for
//! those that did (`Snapshot::earlier_ingests`). That works for any number of policies and
//! changes, not only for two modes.

pub(crate) mod quota;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use crate::error::Result;
use crate::ids::{Domain, UserNo};

/// What the policy is told about a track when it decides for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TrackOwner {
    /// The user whose locker holds the track.
    pub(crate) user: UserNo,
}

/// Decides where a track's chunks live.
pub(crate) trait LicencePolicy: fmt::Debug {
    /// The copy domain the chunks of `track` belong in.
    fn domain(&self, track: TrackOwner) -> Domain;

    /// Whether tracks `a` and `b` may reference the same physical record (and upload
    /// avoidance may link one from the other): exactly when their chunks belong in one domain.
    fn may_share(&self, a: TrackOwner, b: TrackOwner) -> bool {
        self.domain(a) == self.domain(b)
    }

    /// Whether upload avoidance may link `track` from another track's records: only where the
    /// policy stores its content once for several users (invariant 7; in a user's own domain
    /// nothing may depend on what others hold).
    fn avoids_uploads(&self, track: TrackOwner) -> bool {
        !matches!(self.domain(track), Domain::User(_))
    }
}

impl LicencePolicy for LicenseMode {
    fn domain(&self, track: TrackOwner) -> Domain {
        self.domain_for(track.user)
    }
}

/// The store's current policy and the ingests in flight under each generation of it.
#[derive(Debug)]
pub(crate) struct Policy {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    mode: LicenseMode,
    /// Bumped by every change of policy.
    generation: u64,
    /// Ingests in flight by the generation they started under (entries with 0 removed).
    in_flight: BTreeMap<u64, u64>,
}

/// The policy at one moment (`Policy::snapshot`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub(crate) mode: LicenseMode,
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
    mode: LicenseMode,
}

impl Ingest<'_> {
    /// The policy the ingest runs under.
    pub(crate) fn policy(&self) -> &dyn LicencePolicy {
        &self.mode
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
    pub(crate) fn new(mode: LicenseMode) -> Policy {
        Policy {
            state: Mutex::new(State {
                mode,
                generation: 0,
                in_flight: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("policy lock")
    }

    /// The current mode.
    pub(crate) fn mode(&self) -> LicenseMode {
        self.lock().mode
    }

    /// The current policy.
    pub(crate) fn current(&self) -> impl LicencePolicy + use<> {
        self.lock().mode
    }

    /// Registers an ingest under the current policy.
    pub(crate) fn begin_ingest(&self) -> Ingest<'_> {
        let mut st = self.lock();
        let generation = st.generation;
        *st.in_flight.entry(generation).or_default() += 1;
        Ingest {
            policy: self,
            generation,
            mode: st.mode,
        }
    }

    /// Changes the mode: `persist` makes the change durable, under the policy's lock, so no
    /// ingest starts under the old mode once this returns `Ok`. On `Err` nothing changes.
    pub(crate) fn set_mode(
        &self,
        mode: LicenseMode,
        persist: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut st = self.lock();
        persist()?;
        st.mode = mode;
        st.generation += 1;
        Ok(())
    }

    /// The current policy, its generation and the ingests begun under earlier ones, read
    /// together.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        Snapshot {
            mode: st.mode,
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
            "per-user-copy" => Ok(LicenseMode::PerUserCopy),
            "single-master" => Ok(LicenseMode::SingleMaster),
            other => Err(format!(
                "unknown mode {other:?}: expected per-user-copy or single-master"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingests_of_earlier_generations_are_counted_until_they_end() {
        let p = Policy::new(LicenseMode::PerUserCopy);
        let a = p.begin_ingest();
        assert_eq!(
            a.policy().domain(TrackOwner { user: UserNo(3) }),
            Domain::User(UserNo(3))
        );
        assert_eq!(p.snapshot().earlier_ingests, 0);
        p.set_mode(LicenseMode::SingleMaster, || Ok(())).unwrap();
        let b = p.begin_ingest();
        assert_eq!(
            b.policy().domain(TrackOwner { user: UserNo(3) }),
            Domain::Shared
        );
        assert_eq!(p.snapshot().earlier_ingests, 1);
        p.set_mode(LicenseMode::PerUserCopy, || Ok(())).unwrap();
        assert_eq!(p.snapshot().earlier_ingests, 2);
        drop(a);
        assert_eq!(p.snapshot().earlier_ingests, 1);
        drop(b);
        assert_eq!(p.snapshot().earlier_ingests, 0);
        // A failed persist changes nothing.
        let err = p.set_mode(LicenseMode::SingleMaster, || {
            Err(crate::error::Error::Metadata("no".into()))
        });
        assert!(err.is_err());
        assert_eq!(p.mode(), LicenseMode::PerUserCopy);
    }

    #[test]
    fn the_modes_decide_domains_and_sharing() {
        let (a, b) = (
            TrackOwner { user: UserNo(1) },
            TrackOwner { user: UserNo(2) },
        );
        let per = LicenseMode::PerUserCopy;
        assert_eq!(per.domain(a), Domain::User(UserNo(1)));
        assert!(!per.may_share(a, b));
        assert!(per.may_share(a, a));
        let single = LicenseMode::SingleMaster;
        assert_eq!(single.domain(b), Domain::Shared);
        assert!(single.may_share(a, b));
        assert!(single.avoids_uploads(a));
        assert!(!per.avoids_uploads(a));
    }
}
