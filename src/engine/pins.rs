//! Pins: chunk entries that in-flight ingests found and will reference at their commit.
//!
//! GC and migration never remove a pinned entry. They hold the pin lock ([`Pins::hold`]) from
//! their check through their commit, and an ingest holds it while it looks an entry up and pins
//! it ([`Pins::lookup_and_pin`]), so no entry is pinned between their check and their commit.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::ids::{ChunkId, Domain};
use crate::index::MetaStore;

#[derive(Debug, Default)]
pub(crate) struct Pins {
    counts: Mutex<HashMap<(Domain, ChunkId), u32>>,
}

/// The pin lock, held: no entry is pinned or unpinned meanwhile.
pub(crate) struct Held<'a>(MutexGuard<'a, HashMap<(Domain, ChunkId), u32>>);

impl Held<'_> {
    /// Whether an ingest has pinned `(domain, id)`.
    pub(crate) fn contains(&self, domain: Domain, id: &ChunkId) -> bool {
        self.0.contains_key(&(domain, *id))
    }
}

impl Pins {
    fn lock(&self) -> MutexGuard<'_, HashMap<(Domain, ChunkId), u32>> {
        self.counts.lock().expect("pins lock")
    }

    /// Looks each of `ids` up in `domain` in the latest committed state (in one batch) and pins
    /// those that exist until `unpin`; returns which exist. Atomic with respect to GC and
    /// migration (see the module docs).
    pub(crate) fn lookup_and_pin(
        &self,
        meta: &dyn MetaStore,
        domain: Domain,
        ids: &[ChunkId],
    ) -> Result<Vec<bool>> {
        let mut pins = self.lock();
        let keys: Vec<(Domain, ChunkId)> = ids.iter().map(|id| (domain, *id)).collect();
        let found = meta.chunks_now(&keys)?;
        let mut hits = Vec::with_capacity(ids.len());
        for (id, entry) in ids.iter().zip(found) {
            let hit = match entry {
                // A garbage entry another process's GC might remove: touched first, so it
                // waits another grace period (`false`: already removed, so no hit).
                Some(e) if e.refcount == 0 && meta.shared() => meta.touch_garbage(domain, id)?,
                found => found.is_some(),
            };
            if hit {
                *pins.entry((domain, *id)).or_default() += 1;
            }
            hits.push(hit);
        }
        Ok(hits)
    }

    /// Releases pins taken by `lookup_and_pin`.
    pub(crate) fn unpin(&self, keys: &[(Domain, ChunkId)]) {
        if keys.is_empty() {
            return;
        }
        let mut pins = self.lock();
        for k in keys {
            if let Some(n) = pins.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(k);
                }
            }
        }
    }

    /// Takes the pin lock for a check-then-commit of GC or migration.
    pub(crate) fn hold(&self) -> Held<'_> {
        Held(self.lock())
    }
}
