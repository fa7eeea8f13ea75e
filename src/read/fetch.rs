//! The one verified chunk fetch: the reader, GC, migration and verify all read records
//! through it. A record is found through the index (following a record that compaction moved),
//! mapped up to its pack's committed length, decoded, and checked against its chunk id before a
//! byte of it is used.

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{ChunkEntry, ChunkRef, RecordHeader};
use crate::ids::{ChunkId, Domain, PackId};
use crate::pack::codec;
use crate::pack::storage::Window;
use crate::vfs::Mapped;

/// A verified chunk's plain bytes: straight from the pack map for raw records, decoded otherwise.
/// Cheap to clone, so the fingerprint thread can hash the bytes the caller is copying.
#[derive(Clone)]
pub(crate) enum Plain {
    Mapped(Arc<dyn Mapped>, usize, usize),
    Owned(Arc<Vec<u8>>),
}

impl Plain {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Plain::Mapped(m, start, len) => &m.bytes()[*start..*start + *len],
            Plain::Owned(v) => v,
        }
    }
}

/// The committed length of a pack, from the latest metadata.
fn committed_len(engine: &Engine, pack: PackId) -> Result<u64> {
    engine
        .meta()
        .read()?
        .pack(pack)?
        .map(|r| r.committed_len)
        .ok_or_else(|| Error::corrupted_at("pack is not registered", pack, 0))
}

/// Loads, decodes and re-hashes one chunk record.
pub(crate) fn verify_chunk(engine: &Engine, domain: Domain, r: &ChunkRef) -> Result<()> {
    match load_chunk(engine, domain, r)? {
        Some(_) => Ok(()),
        None => Err(Error::corrupted(format!(
            "chunk {} missing from the index",
            r.id
        ))),
    }
}

/// Loads and verifies one chunk of a track in `domain`. `Ok(None)` when the index has no
/// such entry (any more): the track was deleted, replaced or migrated since its record was
/// read. A record moved by compaction is followed.
pub(crate) fn load_chunk(engine: &Engine, domain: Domain, r: &ChunkRef) -> Result<Option<Plain>> {
    let mut attempt = 0;
    loop {
        let Some(entry) = engine.meta().chunks_now(&[(domain, r.id)])?.pop().flatten() else {
            return Ok(None);
        };
        let map = match engine.packs().map_covering(
            entry.pack,
            entry.offset,
            entry.offset + entry.record_len(),
            || committed_len(engine, entry.pack),
        ) {
            Ok(m) => m,
            // Compaction moved the record and deleted its pack after we looked it up.
            Err(_) if attempt == 0 && engine.meta().read()?.pack(entry.pack)?.is_none() => {
                attempt += 1;
                continue;
            }
            // A damaged cache copy (its header): dropped, the object fetched again.
            Err(e) if attempt == 0 && e.is_corruption() && engine.packs().refresh(entry.pack) => {
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        match decode_verified(&map, &entry, r) {
            // A damaged cache copy of an object store's pack: dropped, the object fetched again.
            Err(e) if attempt == 0 && e.is_corruption() && engine.packs().refresh(entry.pack) => {
                attempt += 1;
                continue;
            }
            other => return other.map(Some),
        }
    }
}

fn decode_verified(window: &Window, entry: &ChunkEntry, r: &ChunkRef) -> Result<Plain> {
    let map = &window.map;
    let (head, stored) = RecordHeader::decode(entry.pack, map.bytes(), window.base, entry.offset)?;
    // The header's domain is the one the record was written for; a promoted record serves
    // another domain, so the entry, not the header, decides ownership.
    if head.id != r.id
        || head.plain_len != r.len
        || head.plain_len != entry.plain_len
        || head.stored_len != entry.stored_len
        || head.codec != entry.codec
    {
        return Err(Error::corrupted_at(
            "chunk record does not match the index",
            entry.pack,
            entry.offset,
        ));
    }
    let plain = codec::decode(head.codec, stored, head.plain_len, entry.pack, entry.offset)?;
    let got = ChunkId::of(&plain);
    if got != r.id {
        return Err(Error::ChecksumMismatch {
            pack: entry.pack,
            offset: entry.offset,
            expected: r.id,
            got,
        });
    }
    Ok(match plain {
        std::borrow::Cow::Borrowed(b) => {
            let start = b.as_ptr() as usize - map.bytes().as_ptr() as usize;
            Plain::Mapped(map.clone(), start, b.len())
        }
        std::borrow::Cow::Owned(v) => Plain::Owned(Arc::new(v)),
    })
}

/// Verified stored bytes of a record, for copying it elsewhere without decompressing:
/// the header and the stored bytes, after a full check of the plain bytes.
pub(crate) fn record_verified(
    engine: &Engine,
    entry: &ChunkEntry,
    id: &ChunkId,
) -> Result<(RecordHeader, Vec<u8>)> {
    let r = ChunkRef {
        id: *id,
        len: entry.plain_len,
    };
    let mut attempt = 0;
    let map = loop {
        let map = engine.packs().map_covering(
            entry.pack,
            entry.offset,
            entry.offset + entry.record_len(),
            || committed_len(engine, entry.pack),
        )?;
        match decode_verified(&map, entry, &r) {
            // A damaged cache copy: dropped, the object fetched again (as in `load_chunk`).
            Err(e) if attempt == 0 && e.is_corruption() && engine.packs().refresh(entry.pack) => {
                attempt += 1;
            }
            Err(e) => return Err(e),
            Ok(_) => break map,
        }
    };
    let (head, stored) = RecordHeader::decode(entry.pack, map.bytes(), map.base, entry.offset)?;
    Ok((head, stored.to_vec()))
}
