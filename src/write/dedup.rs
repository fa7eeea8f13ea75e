//! A put's dedup stage: each chunk of the upload is either found already stored in the track's
//! domain (then pinned until the commit, so GC and migration leave its entry) or written as a
//! new record.
//!
//! Chunks the chunk-key filter rules out are certainly new and are written at once. The others
//! wait, up to [`REGION_BYTES`] of them, and are looked up together: one metadata round trip per
//! region of the upload where the metadata is remote (PostgreSQL, whose stores have no filter),
//! not one per chunk. A region holds at most that many bytes of plain chunks in memory.

use std::collections::{HashMap, HashSet};

use crate::engine::Engine;
use crate::error::Result;
use crate::format::{ChunkEntry, ChunkRef, RecordHeader};
use crate::ids::{ChunkId, Domain};
use crate::pack::codec;
use crate::pack::session::Session;

/// Most bytes of chunks waiting for one batched lookup.
pub(crate) const REGION_BYTES: usize = 8 << 20;

/// What the stage found and wrote, for the commit.
pub(crate) struct Dedup<'e, 's, 'p> {
    engine: &'e Engine,
    compression_level: i32,
    session: &'s mut Session<'p>,
    /// Entries found and pinned (the caller unpins them when the put ends).
    pub(crate) pinned: &'s mut Vec<(Domain, ChunkId)>,
    /// The track's chunks, in order.
    pub(crate) refs: Vec<ChunkRef>,
    /// Records this put wrote.
    pub(crate) written: HashMap<ChunkId, ChunkEntry>,
    /// Chunks found already stored.
    existing: HashSet<ChunkId>,
    /// Plain bytes of the records written.
    pub(crate) new_bytes: u64,
    /// Chunks waiting for the region's lookup, and their ids.
    waiting: Vec<(Vec<u8>, ChunkId)>,
    waiting_ids: HashSet<ChunkId>,
    waiting_bytes: usize,
}

impl<'e, 's, 'p> Dedup<'e, 's, 'p> {
    pub(crate) fn new(
        engine: &'e Engine,
        compression_level: i32,
        session: &'s mut Session<'p>,
        pinned: &'s mut Vec<(Domain, ChunkId)>,
    ) -> Self {
        Dedup {
            engine,
            compression_level,
            session,
            pinned,
            refs: Vec::new(),
            written: HashMap::new(),
            existing: HashSet::new(),
            new_bytes: 0,
            waiting: Vec::new(),
            waiting_ids: HashSet::new(),
            waiting_bytes: 0,
        }
    }

    /// The next chunk of the upload, in `domain`.
    pub(crate) fn chunk(&mut self, domain: Domain, plain: &[u8], id: ChunkId) -> Result<()> {
        self.refs.push(ChunkRef {
            id,
            len: plain.len() as u32,
        });
        if self.written.contains_key(&id)
            || self.existing.contains(&id)
            || self.waiting_ids.contains(&id)
        {
            return Ok(());
        }
        // Content the filter has never seen in this domain is certainly new: no lookup.
        if !self.engine.filter().may_contain(domain, &id) {
            return self.store(domain, plain, id);
        }
        self.waiting.push((plain.to_vec(), id));
        self.waiting_ids.insert(id);
        self.waiting_bytes += plain.len();
        if self.waiting_bytes >= REGION_BYTES {
            self.flush(domain)?;
        }
        Ok(())
    }

    /// Looks the waiting chunks up, in one batch, and writes those not found. Called when a
    /// region is full and once after the last chunk.
    pub(crate) fn flush(&mut self, domain: Domain) -> Result<()> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let waiting = std::mem::take(&mut self.waiting);
        self.waiting_ids.clear();
        self.waiting_bytes = 0;
        let ids: Vec<ChunkId> = waiting.iter().map(|(_, id)| *id).collect();
        // A hit is pinned, so GC and migration leave the entry in place until our commit.
        let hits = self
            .engine
            .pins()
            .lookup_and_pin(self.engine.meta(), domain, &ids)?;
        // Every pin is recorded before anything can fail, so the put's end releases them all.
        for (id, hit) in ids.iter().zip(&hits) {
            if *hit {
                self.pinned.push((domain, *id));
                self.existing.insert(*id);
            }
        }
        for ((plain, id), hit) in waiting.into_iter().zip(hits) {
            if !hit {
                self.store(domain, &plain, id)?;
            }
        }
        Ok(())
    }

    /// Writes a new record of the chunk.
    fn store(&mut self, domain: Domain, plain: &[u8], id: ChunkId) -> Result<()> {
        let (codec, stored) = codec::encode(plain, self.compression_level);
        let header = RecordHeader {
            codec,
            domain,
            id,
            plain_len: plain.len() as u32,
            stored_len: stored.len() as u32,
        };
        let (pack, offset) = self.session.append(&header, &stored)?;
        self.written.insert(
            id,
            ChunkEntry {
                pack,
                offset,
                stored_len: header.stored_len,
                plain_len: header.plain_len,
                codec,
                refcount: 0,
            },
        );
        self.new_bytes += plain.len() as u64;
        Ok(())
    }
}
