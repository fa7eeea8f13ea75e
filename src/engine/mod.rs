//! The engine: the state every subsystem shares, each part behind its own methods.
//!
//! [`Engine`] owns the metadata ([`crate::index`]), the packs ([`crate::pack`]), the chunker,
//! the pins, the licence policy, the free-space guard and the maintenance lock. The write path,
//! the read path, maintenance and ownership proofs are functions over it; the store's façade
//! (`crate::store`) opens it and calls them. Nothing outside this module touches its fields.

pub(crate) mod pins;
pub(crate) mod space;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::chunk::Chunker;
use crate::error::{Error, Result};
use crate::format::TrackRecord;
use crate::ids::UserNo;
use crate::index::filter::ChunkFilter;
use crate::index::{MetaRead, MetaStore};
use crate::names::{TrackKey, UserId};
use crate::pack::Packs;
use crate::policy::Policy;

use pins::Pins;
use space::Space;

/// The parts an engine is made of, as `Store::open` assembles them.
pub(crate) struct Parts {
    pub(crate) dir: PathBuf,
    pub(crate) meta: Box<dyn MetaStore>,
    pub(crate) filter: Arc<ChunkFilter>,
    pub(crate) packs: Packs,
    pub(crate) chunker: Chunker,
    pub(crate) policy: Policy,
    pub(crate) space: Space,
    /// The store's locks; released when the engine is dropped.
    pub(crate) lock: Box<dyn Send + Sync + Debug>,
    /// In a store other processes share: the longest a put may take.
    pub(crate) ingest_time_limit: Option<std::time::Duration>,
}

#[derive(Debug)]
pub(crate) struct Engine {
    dir: PathBuf,
    meta: Box<dyn MetaStore>,
    /// Keys of the stored chunk entries, so lookups of certainly new content skip the metadata.
    filter: Arc<ChunkFilter>,
    packs: Packs,
    chunker: Chunker,
    pins: Pins,
    policy: Policy,
    space: Space,
    /// Serialises the maintenance jobs that move records (migration, GC) with each other.
    maintenance: Mutex<()>,
    /// In a store other processes share: the longest a put may take.
    ingest_time_limit: Option<std::time::Duration>,
    _lock: Box<dyn Send + Sync + Debug>,
}

/// Ingest time limits an entry stays garbage, or an unknown pack object stays, before GC may
/// remove it in a store other processes share: a put checks its limit L inside its commit's
/// transaction, whose statements each time out after L, so it commits within about 2L of its
/// start or never; the third L is margin (docs/DESIGN.md 15.3).
pub(crate) const GRACE_LIMITS: u32 = 3;

/// The right to run a maintenance job: the in-process mutex, and the store-wide lease when
/// other processes share the metadata.
pub(crate) struct Maintenance<'a> {
    lease: Option<Box<dyn crate::index::Lease>>,
    _guard: MutexGuard<'a, ()>,
}

impl Maintenance<'_> {
    /// `Err(LeaseLost)` once the store-wide lease is lost: the job stops at its next step
    /// (its commits are fenced by the lease anyway).
    pub(crate) fn check(&self) -> Result<()> {
        self.lease.as_ref().map_or(Ok(()), |l| l.check())
    }
}

impl Engine {
    pub(crate) fn new(p: Parts) -> Engine {
        Engine {
            dir: p.dir,
            meta: p.meta,
            filter: p.filter,
            packs: p.packs,
            chunker: p.chunker,
            pins: Pins::default(),
            policy: p.policy,
            space: p.space,
            maintenance: Mutex::new(()),
            ingest_time_limit: p.ingest_time_limit,
            _lock: p.lock,
        }
    }

    /// The store directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The metadata.
    pub(crate) fn meta(&self) -> &dyn MetaStore {
        self.meta.as_ref()
    }

    /// The filter of stored chunk keys.
    pub(crate) fn filter(&self) -> &ChunkFilter {
        &self.filter
    }

    pub(crate) fn packs(&self) -> &Packs {
        &self.packs
    }

    pub(crate) fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    pub(crate) fn pins(&self) -> &Pins {
        &self.pins
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The policy, first brought up to date with the stored one where other processes share
    /// the metadata (a licence set on another node); the same as `policy` otherwise.
    pub(crate) fn fresh_policy(&self) -> Result<&Policy> {
        if self.meta.shared() {
            let stored = self
                .meta
                .state_now(crate::index::state_keys::POLICY_VERSION)?
                .map(|v| v.try_into().map(u64::from_le_bytes))
                .transpose()
                .map_err(|_| Error::corrupted("metadata policy version"))?
                .unwrap_or(0);
            if stored != self.policy.version() {
                let (licences, version) = crate::policy::stored(self.meta.read()?.as_ref())?;
                self.policy.adopt(licences, version);
            }
        }
        Ok(&self.policy)
    }

    pub(crate) fn space(&self) -> &Space {
        &self.space
    }

    /// Excludes every other maintenance job (GC or migration) while held: in this process, and
    /// in every process sharing the metadata (its lease, waited for while another holds it).
    pub(crate) fn maintenance(&self) -> Result<Maintenance<'_>> {
        let guard = self.maintenance.lock().expect("maintenance lock");
        let holder = format!("{} (pid {})", self.dir.display(), std::process::id());
        Ok(Maintenance {
            lease: self.meta.maintenance_lease(&holder)?,
            _guard: guard,
        })
    }

    /// In a store other processes share, the longest a put may take (`None`: no limit).
    /// (Checked by the put before its commit.)
    pub(crate) fn ingest_time_limit(&self) -> Option<std::time::Duration> {
        self.ingest_time_limit
    }

    /// The committed record of a track.
    pub(crate) fn track_record(&self, user: &UserId, key: &TrackKey) -> Result<TrackRecord> {
        let snap = self.meta.read()?;
        user_track(snap.as_ref(), user, key).map(|(_, t)| t)
    }
}

/// A user's row and track `key` in a snapshot or transaction; `UnknownUser` if the user has no
/// row, `TrackNotFound` if it has no such track.
pub(crate) fn user_track(
    snap: &dyn MetaRead,
    user: &UserId,
    key: &TrackKey,
) -> Result<(crate::format::UserRow, TrackRecord)> {
    let row = snap
        .user(user)?
        .ok_or_else(|| Error::UnknownUser(user.to_string()))?;
    let track = snap
        .track(UserNo(row.no), key)?
        .ok_or_else(|| Error::TrackNotFound {
            user: user.to_string(),
            key: key.to_string(),
        })?;
    Ok((row, track))
}

/// A user's number in a snapshot; `UnknownUser` if the user has no row.
pub(crate) fn user_no(snap: &dyn MetaRead, user: &UserId) -> Result<UserNo> {
    snap.user(user)?
        .map(|r| UserNo(r.no))
        .ok_or_else(|| Error::UnknownUser(user.to_string()))
}
