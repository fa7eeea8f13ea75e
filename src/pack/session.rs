//! A pack session: the packs one job appends to, from the first record to the metadata commit
//! that makes them count.
//!
//! Ingest, migration's expand and GC all write the same way: take a pack (an idle one, or a new
//! one), append records, fsync every pack appended to, commit metadata that records the packs'
//! new committed lengths (their [`Appended`] ends), and only then hand the packs back; or, on
//! any failure, abandon them, which cuts the uncommitted tails (or retires a pack whose tail may
//! already be durable). A session does exactly that, once, for all three. Dropping a session
//! that was neither committed nor abandoned abandons it, so a panicking job leaves no pack
//! taken.

use crate::error::Result;
use crate::format::RecordHeader;
use crate::ids::PackId;

use super::{ActivePack, Packs};

/// Where a session's appends to one pack end, for the commit that makes them count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Appended {
    pub(crate) pack: PackId,
    /// The pack's length once the commit lands: its new committed length.
    pub(crate) committed_len: u64,
    /// The pack reached the size limit: the commit seals it.
    pub(crate) sealed: bool,
}

/// Which packs a session writes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Idle unsealed packs first, then new ones (ingest, expand).
    Pool,
    /// New packs only (GC, whose candidates may be idle packs).
    Fresh,
}

/// The packs one job appends to; see the module docs.
#[derive(Debug)]
pub(crate) struct Session<'p> {
    packs: &'p Packs,
    source: Source,
    /// The pack appends go to.
    current: Option<ActivePack>,
    /// Packs that reached the size limit during the session.
    full: Vec<ActivePack>,
}

impl<'p> Session<'p> {
    pub(crate) fn new(packs: &'p Packs, source: Source) -> Session<'p> {
        Session {
            packs,
            source,
            current: None,
            full: Vec::new(),
        }
    }

    /// Appends one record; returns the pack and offset it went to.
    pub(crate) fn append(&mut self, header: &RecordHeader, stored: &[u8]) -> Result<(PackId, u64)> {
        let pack = match &mut self.current {
            Some(p) => p,
            None => {
                let p = match self.source {
                    Source::Pool => self.packs.take()?,
                    Source::Fresh => self.packs.create_new()?,
                };
                self.current.insert(p)
            }
        };
        let offset = self.packs.append(pack, header, stored)?;
        let id = pack.id;
        if self.packs.is_full(pack) {
            self.full.extend(self.current.take());
        }
        Ok((id, offset))
    }

    fn held(&self) -> impl Iterator<Item = &ActivePack> {
        self.full.iter().chain(self.current.iter())
    }

    /// Makes everything appended durable: every pack appended to is fsynced.
    pub(crate) fn sync(&mut self) -> Result<()> {
        let packs = self.packs;
        for p in self.full.iter_mut().chain(self.current.iter_mut()) {
            if p.touched {
                packs.sync(p)?;
            }
        }
        Ok(())
    }

    /// Where the appends end in each pack appended to: what the commit records.
    pub(crate) fn appended(&self) -> Vec<Appended> {
        self.held()
            .filter(|p| p.touched)
            .map(|p| Appended {
                pack: p.id,
                committed_len: p.len,
                sealed: self.packs.is_full(p),
            })
            .collect()
    }

    /// After the commit that recorded `appended()`: the appends count, the full packs go back
    /// to the pool (sealed), and the session goes on with its current pack.
    pub(crate) fn checkpoint(&mut self) {
        for p in self.full.drain(..) {
            self.packs.committed(p);
        }
        match self.current.take() {
            // Sealed by its sync (an object store): the next append takes another pack.
            Some(p) if self.packs.is_full(&p) => self.packs.committed(p),
            Some(mut p) => {
                p.mark_committed();
                self.current = Some(p);
            }
            None => {}
        }
    }

    /// After the commit that recorded `appended()`: every pack goes back to the pool.
    pub(crate) fn commit(mut self) {
        for p in self.take_all() {
            self.packs.committed(p);
        }
    }

    /// The job failed: every pack goes back with its uncommitted tail cut (or is retired when
    /// the tail may be durable already; the next open cuts it).
    pub(crate) fn abandon(mut self) {
        self.abandon_all();
    }

    /// The job failed in a way known to have committed nothing (its metadata transaction
    /// returned an error before committing: a refused quota), so even tails that went to fsync
    /// are cut and the packs go back to the pool instead of being retired.
    pub(crate) fn abandon_uncommitted(mut self) {
        for p in self.full.iter_mut().chain(self.current.iter_mut()) {
            p.tail_at_risk = false;
        }
        self.abandon_all();
    }

    fn take_all(&mut self) -> Vec<ActivePack> {
        let mut all = std::mem::take(&mut self.full);
        all.extend(self.current.take());
        all
    }

    fn abandon_all(&mut self) {
        for p in self.take_all() {
            self.packs.abandon(p);
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.abandon_all();
    }
}
