//! Byte-exact encodings of everything the store writes. docs/DESIGN.md documents each layout;
//! every integer is little-endian. Decoders never trust their input: they check lengths, magics,
//! versions and ranges and return `Corrupted` instead of panicking.

// The items are public only through `lockerstore::fuzzing`; docs/DESIGN.md is their documentation.
#![allow(missing_docs)]

use crate::error::{Error, Result};
use crate::ids::{ChunkId, Domain, Fingerprint, PackId};
use crate::names::RightsHolder;

/// Version of the `STORE` file.
pub const STORE_FORMAT_VERSION: u32 = 1;
/// Version of the metadata schema (state `format`). 2 added rights holders to track records
/// and licences per holder (state `licences`); a store of version 1 is upgraded when opened.
pub const META_FORMAT_VERSION: u32 = 2;
/// Version of pack files.
pub const PACK_FORMAT_VERSION: u32 = 1;
/// Version byte of track records.
pub const TRACK_FORMAT_VERSION: u8 = 1;

pub const STORE_MAGIC: [u8; 8] = *b"LKSTORE\0";
pub const STORE_FILE_LEN: usize = 48;

pub const PACK_MAGIC: [u8; 8] = *b"LKSPACK\0";
pub const PACK_HEADER_LEN: usize = 32;

pub const RECORD_MAGIC: [u8; 4] = *b"LKCR";
pub const RECORD_HEADER_LEN: usize = 64;
/// Largest chunk the engine writes or accepts in a record.
pub const MAX_CHUNK_LEN: u32 = 16 << 20;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn arr32_at(b: &[u8], at: usize) -> [u8; 32] {
    b[at..at + 32].try_into().expect("32 bytes")
}

/// The `STORE` file: identifies a directory as a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFile {
    pub version: u32,
    pub store_id: [u8; 16],
}

impl StoreFile {
    pub fn encode(&self) -> [u8; STORE_FILE_LEN] {
        let mut b = [0u8; STORE_FILE_LEN];
        b[0..8].copy_from_slice(&STORE_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(STORE_FILE_LEN as u32).to_le_bytes());
        b[16..32].copy_from_slice(&self.store_id);
        let check = blake3::hash(&b[0..32]);
        b[32..48].copy_from_slice(&check.as_bytes()[..16]);
        b
    }

    /// Decodes the file; `Ok(Err(found))` for a version newer than this build reads.
    pub fn decode(b: &[u8]) -> Result<std::result::Result<StoreFile, u32>> {
        if b.len() < 16 || b[0..8] != STORE_MAGIC {
            return Err(Error::corrupted("STORE file: bad magic"));
        }
        let version = u32_at(b, 8);
        if version > STORE_FORMAT_VERSION || version == 0 {
            return Ok(Err(version));
        }
        if b.len() != STORE_FILE_LEN || u32_at(b, 12) as usize != STORE_FILE_LEN {
            return Err(Error::corrupted("STORE file: bad length"));
        }
        if blake3::hash(&b[0..32]).as_bytes()[..16] != b[32..48] {
            return Err(Error::corrupted("STORE file: checksum mismatch"));
        }
        Ok(Ok(StoreFile {
            version,
            store_id: b[16..32].try_into().expect("16 bytes"),
        }))
    }
}

/// The header at the start of every pack file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackHeader {
    pub pack: PackId,
    /// First 8 bytes of the store id: a pack from another store is rejected.
    pub store_tag: u64,
}

impl PackHeader {
    pub fn encode(&self) -> [u8; PACK_HEADER_LEN] {
        let mut b = [0u8; PACK_HEADER_LEN];
        b[0..8].copy_from_slice(&PACK_MAGIC);
        b[8..12].copy_from_slice(&PACK_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(PACK_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.pack.0.to_le_bytes());
        b[24..32].copy_from_slice(&self.store_tag.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<PackHeader> {
        if b.len() < PACK_HEADER_LEN || b[0..8] != PACK_MAGIC {
            return Err(Error::corrupted("pack header: bad magic"));
        }
        let version = u32_at(b, 8);
        if version != PACK_FORMAT_VERSION {
            return Err(Error::corrupted(format!(
                "pack header: unsupported version {version}"
            )));
        }
        if u32_at(b, 12) as usize != PACK_HEADER_LEN {
            return Err(Error::corrupted("pack header: bad header length"));
        }
        Ok(PackHeader {
            pack: PackId(u64_at(b, 16)),
            store_tag: u64_at(b, 24),
        })
    }
}

/// How a chunk's bytes are stored in its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as they are.
    Raw,
    /// zstd frame.
    Zstd,
}

impl Codec {
    pub fn to_byte(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        }
    }
    pub fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// The fixed header before every chunk's stored bytes in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub codec: Codec,
    pub domain: Domain,
    pub id: ChunkId,
    pub plain_len: u32,
    pub stored_len: u32,
}

impl RecordHeader {
    /// The record's total size on disk.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))] // only the fuzz targets call it
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }

    fn check(head: &[u8], codec: Codec, stored: &[u8]) -> [u8; 8] {
        let mut h = blake3::Hasher::new();
        h.update(&head[0..56]);
        // A raw payload is covered by the chunk id itself; a compressed one gets its own check
        // so damage is found without decompressing.
        if codec != Codec::Raw {
            h.update(stored);
        }
        h.finalize().as_bytes()[..8].try_into().expect("8 bytes")
    }

    /// Encodes the header for a record whose stored bytes are `stored`.
    pub fn encode(&self, stored: &[u8]) -> [u8; RECORD_HEADER_LEN] {
        debug_assert_eq!(stored.len(), self.stored_len as usize);
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4] = self.codec.to_byte();
        b[8..16].copy_from_slice(&self.domain.to_u64().to_le_bytes());
        b[16..48].copy_from_slice(&self.id.0);
        b[48..52].copy_from_slice(&self.plain_len.to_le_bytes());
        b[52..56].copy_from_slice(&self.stored_len.to_le_bytes());
        let check = Self::check(&b, self.codec, stored);
        b[56..64].copy_from_slice(&check);
        b
    }

    /// Decodes and checks the record starting at offset `at` of the pack, in `pack_bytes`, which
    /// hold the pack's bytes from offset `base` on (0: the whole pack; a span of it read from an
    /// object store otherwise); returns the header and the stored bytes. Errors name the pack
    /// and offset.
    pub fn decode(
        pack: PackId,
        pack_bytes: &[u8],
        base: u64,
        at: u64,
    ) -> Result<(RecordHeader, &[u8])> {
        let bad = |what: &str| Error::corrupted_at(format!("chunk record: {what}"), pack, at);
        let start = at
            .checked_sub(base)
            .and_then(|rel| usize::try_from(rel).ok())
            .ok_or_else(|| bad("offset out of range"))?;
        let head = pack_bytes
            .get(start..)
            .and_then(|b| b.get(..RECORD_HEADER_LEN))
            .ok_or_else(|| bad("header past the end of the pack"))?;
        if head[0..4] != RECORD_MAGIC {
            return Err(bad("bad magic"));
        }
        let codec = Codec::from_byte(head[4]).ok_or_else(|| bad("unknown codec"))?;
        if head[5..8] != [0, 0, 0] {
            return Err(bad("reserved bytes set"));
        }
        let domain = Domain::from_u64(u64_at(head, 8)).ok_or_else(|| bad("unknown domain"))?;
        let plain_len = u32_at(head, 48);
        let stored_len = u32_at(head, 52);
        if plain_len > MAX_CHUNK_LEN || stored_len > MAX_CHUNK_LEN {
            return Err(bad("length too large"));
        }
        if codec == Codec::Raw && plain_len != stored_len {
            return Err(bad("raw record with differing lengths"));
        }
        let body_start = start + RECORD_HEADER_LEN;
        let stored = pack_bytes
            .get(body_start..body_start + stored_len as usize)
            .ok_or_else(|| bad("payload past the end of the pack"))?;
        if Self::check(head, codec, stored)[..] != head[56..64] {
            return Err(bad("header checksum mismatch"));
        }
        Ok((
            RecordHeader {
                codec,
                domain,
                id: ChunkId(arr32_at(head, 16)),
                plain_len,
                stored_len,
            },
            stored,
        ))
    }
}

/// The length of the record whose header starts at `bytes[at..]` (header and stored bytes), from
/// its magic and stored length alone, unchecked: for finding where records end in a span of a
/// pack before reading them (every record read is fully checked by `RecordHeader::decode`).
/// `None` when the bytes there do not start a record or the header is cut off.
#[cfg(feature = "object-store")]
pub fn record_len_at(bytes: &[u8], at: usize) -> Option<u64> {
    let head = bytes.get(at..)?.get(..RECORD_HEADER_LEN)?;
    if head[0..4] != RECORD_MAGIC {
        return None;
    }
    let stored_len = u32_at(head, 52);
    (stored_len <= MAX_CHUNK_LEN).then_some(RECORD_HEADER_LEN as u64 + u64::from(stored_len))
}

/// Where a chunk record lives and how many track references it has: the value of the chunk index
/// `(domain, chunk id) -> ChunkEntry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    pub pack: PackId,
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
    pub codec: Codec,
    /// Number of references from committed tracks (a chunk used twice by one track counts twice).
    /// Zero means garbage, kept until GC so a dedup hit can revive it.
    pub refcount: u64,
}

pub const CHUNK_ENTRY_LEN: usize = 40;

impl ChunkEntry {
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }

    pub fn encode(&self) -> [u8; CHUNK_ENTRY_LEN] {
        let mut b = [0u8; CHUNK_ENTRY_LEN];
        b[0..8].copy_from_slice(&self.pack.0.to_le_bytes());
        b[8..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.stored_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.plain_len.to_le_bytes());
        b[24] = self.codec.to_byte();
        b[32..40].copy_from_slice(&self.refcount.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; CHUNK_ENTRY_LEN]) -> Result<ChunkEntry> {
        let codec = Codec::from_byte(b[24])
            .ok_or_else(|| Error::corrupted("chunk entry: unknown codec"))?;
        if b[25..32].iter().any(|&x| x != 0) {
            return Err(Error::corrupted("chunk entry: reserved bytes set"));
        }
        Ok(ChunkEntry {
            pack: PackId(u64_at(b, 0)),
            offset: u64_at(b, 8),
            stored_len: u32_at(b, 16),
            plain_len: u32_at(b, 20),
            codec,
            refcount: u64_at(b, 32),
        })
    }
}

/// One chunk reference of a track: the id and its plain length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// The audio payload of a track, as the segmenter found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackAudio {
    /// Container format code (1 MP3, 2 FLAC, 3 MP4, 4 Ogg Vorbis, 5 Ogg Opus).
    pub format: u8,
    /// BLAKE3 of the audio payload bytes, concatenated in file order.
    pub fingerprint: [u8; 32],
    /// The payload's byte ranges `[start, end)` in the track, ordered and disjoint.
    pub ranges: Vec<(u64, u64)>,
}

impl TrackAudio {
    /// Payload length.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// True when there are no payload bytes (never stored).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))] // only the fuzz targets call it
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the store keeps per track: the value of `tracks[(user no, key)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackRecord {
    /// The copy domain all of the track's chunks live in.
    pub domain: Domain,
    pub len: u64,
    pub fingerprint: Fingerprint,
    /// Seconds since the Unix epoch when the track was stored.
    pub stored_at: u64,
    /// The audio payload, when the segmenter recognised the format.
    pub audio: Option<TrackAudio>,
    /// The track's rights holder, when known (metadata format 2).
    pub holder: Option<RightsHolder>,
    pub chunks: Vec<ChunkRef>,
}

const TRACK_FIXED_LEN: usize = 64;
const TRACK_REF_LEN: usize = 36;
/// Flag bit: an audio section follows the fixed part.
const TRACK_FLAG_AUDIO: u8 = 1;
/// Flag bit: a rights holder follows the audio section (metadata format 2).
const TRACK_FLAG_HOLDER: u8 = 2;
const TRACK_AUDIO_FIXED_LEN: usize = 40;
const TRACK_RANGE_LEN: usize = 16;
/// Most payload ranges a track may list (MP4 files with many `mdat` boxes).
pub const MAX_AUDIO_RANGES: usize = 4096;

impl TrackRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(TRACK_FIXED_LEN + self.chunks.len() * TRACK_REF_LEN);
        b.push(TRACK_FORMAT_VERSION);
        let mut flags = 0;
        if self.audio.is_some() {
            flags |= TRACK_FLAG_AUDIO;
        }
        if self.holder.is_some() {
            flags |= TRACK_FLAG_HOLDER;
        }
        b.push(flags);
        b.extend_from_slice(&[0u8; 2]);
        b.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.domain.to_u64().to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.stored_at.to_le_bytes());
        b.extend_from_slice(&self.fingerprint.0);
        if let Some(a) = &self.audio {
            b.push(a.format);
            b.extend_from_slice(&[0u8; 3]);
            b.extend_from_slice(&(a.ranges.len() as u32).to_le_bytes());
            b.extend_from_slice(&a.fingerprint);
            for (s, e) in &a.ranges {
                b.extend_from_slice(&s.to_le_bytes());
                b.extend_from_slice(&e.to_le_bytes());
            }
        }
        if let Some(h) = &self.holder {
            b.extend_from_slice(&(h.as_str().len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_str().as_bytes());
        }
        for c in &self.chunks {
            b.extend_from_slice(&c.id.0);
            b.extend_from_slice(&c.len.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<TrackRecord> {
        let bad = |what: &str| Error::corrupted(format!("track record: {what}"));
        if b.len() < TRACK_FIXED_LEN {
            return Err(bad("too short"));
        }
        if b[0] != TRACK_FORMAT_VERSION {
            return Err(bad("unsupported version"));
        }
        if b[1] & !(TRACK_FLAG_AUDIO | TRACK_FLAG_HOLDER) != 0 || b[2..4] != [0, 0] {
            return Err(bad("unknown flags"));
        }
        let count = u32_at(b, 4) as usize;
        let domain = Domain::from_u64(u64_at(b, 8)).ok_or_else(|| bad("unknown domain"))?;
        let len = u64_at(b, 16);
        let stored_at = u64_at(b, 24);
        let fingerprint = Fingerprint(arr32_at(b, 32));
        let mut at = TRACK_FIXED_LEN;
        let audio = if b[1] & TRACK_FLAG_AUDIO != 0 {
            let head = b
                .get(at..at + TRACK_AUDIO_FIXED_LEN)
                .ok_or_else(|| bad("audio section truncated"))?;
            if !(1..=5).contains(&head[0]) || head[1..4] != [0, 0, 0] {
                return Err(bad("unknown audio format"));
            }
            let n = u32_at(head, 4) as usize;
            if n == 0 || n > MAX_AUDIO_RANGES {
                return Err(bad("audio range count out of bounds"));
            }
            let fp = arr32_at(head, 8);
            at += TRACK_AUDIO_FIXED_LEN;
            let mut ranges = Vec::with_capacity(n);
            let mut prev_end = 0u64;
            for _ in 0..n {
                let r = b
                    .get(at..at + TRACK_RANGE_LEN)
                    .ok_or_else(|| bad("audio ranges truncated"))?;
                let (s, e) = (u64_at(r, 0), u64_at(r, 8));
                if s < prev_end || e <= s || e > len {
                    return Err(bad("audio ranges out of order or out of the track"));
                }
                prev_end = e;
                ranges.push((s, e));
                at += TRACK_RANGE_LEN;
            }
            Some(TrackAudio {
                format: head[0],
                fingerprint: fp,
                ranges,
            })
        } else {
            None
        };
        let holder = if b[1] & TRACK_FLAG_HOLDER != 0 {
            let n = b
                .get(at..at + 2)
                .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])))
                .ok_or_else(|| bad("rights holder truncated"))?;
            let name = b
                .get(at + 2..at + 2 + n)
                .ok_or_else(|| bad("rights holder truncated"))?;
            at += 2 + n;
            Some(RightsHolder::from_bytes(name).map_err(|_| bad("invalid rights holder"))?)
        } else {
            None
        };
        if b.len() != at + count * TRACK_REF_LEN {
            return Err(bad("length does not match the chunk count"));
        }
        let refs_start = at;
        let mut chunks = Vec::with_capacity(count);
        let mut total = 0u64;
        for i in 0..count {
            let at = refs_start + i * TRACK_REF_LEN;
            let r = ChunkRef {
                id: ChunkId(arr32_at(b, at)),
                len: u32_at(b, at + 32),
            };
            if r.len == 0 || r.len > MAX_CHUNK_LEN {
                return Err(bad("chunk length out of range"));
            }
            total += u64::from(r.len);
            chunks.push(r);
        }
        if total != len {
            return Err(bad("chunk lengths do not add up to the track length"));
        }
        Ok(TrackRecord {
            domain,
            len,
            fingerprint,
            stored_at,
            audio,
            holder,
            chunks,
        })
    }
}

/// State of a pack file, the value of `packs[pack id]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackRow {
    /// Sealed packs take no more records.
    pub sealed: bool,
    /// Bytes of the file covered by committed metadata; anything after is a torn or abandoned
    /// tail and is cut off on open.
    pub committed_len: u64,
    /// Bytes of records in the pack that no track needs (refcount zero, or lost a race with an
    /// identical record committed first).
    pub dead_bytes: u64,
}

pub const PACK_ROW_LEN: usize = 32;

impl PackRow {
    pub fn encode(&self) -> [u8; PACK_ROW_LEN] {
        let mut b = [0u8; PACK_ROW_LEN];
        b[0] = u8::from(self.sealed);
        b[8..16].copy_from_slice(&self.committed_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.dead_bytes.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; PACK_ROW_LEN]) -> Result<PackRow> {
        if b[0] > 1 || b[1..8].iter().any(|&x| x != 0) || b[24..32].iter().any(|&x| x != 0) {
            return Err(Error::corrupted("pack row: unknown flags"));
        }
        Ok(PackRow {
            sealed: b[0] == 1,
            committed_len: u64_at(b, 8),
            dead_bytes: u64_at(b, 16),
        })
    }
}

/// Per-user row, the value of `users[user id]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UserRow {
    pub no: u64,
    pub logical_bytes: u64,
    pub tracks: u64,
}

pub const USER_ROW_LEN: usize = 24;

impl UserRow {
    pub fn encode(&self) -> [u8; USER_ROW_LEN] {
        let mut b = [0u8; USER_ROW_LEN];
        b[0..8].copy_from_slice(&self.no.to_le_bytes());
        b[8..16].copy_from_slice(&self.logical_bytes.to_le_bytes());
        b[16..24].copy_from_slice(&self.tracks.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; USER_ROW_LEN]) -> UserRow {
        UserRow {
            no: u64_at(b, 0),
            logical_bytes: u64_at(b, 8),
            tracks: u64_at(b, 16),
        }
    }
}

/// A user's quota and the usage exempt from it, the value of `quotas[user number]`. A user
/// without a row has no limits and no exempt tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaRow {
    /// Most logical bytes the user's counted tracks may hold; `u64::MAX`: no limit.
    pub max_bytes: u64,
    /// Most counted tracks; `u64::MAX`: no limit.
    pub max_tracks: u64,
    /// Logical bytes of the user's quota-exempt tracks (included in `UserRow::logical_bytes`).
    pub exempt_bytes: u64,
    /// Number of the user's quota-exempt tracks (included in `UserRow::tracks`).
    pub exempt_tracks: u64,
}

pub const QUOTA_ROW_LEN: usize = 32;

impl Default for QuotaRow {
    fn default() -> Self {
        QuotaRow {
            max_bytes: u64::MAX,
            max_tracks: u64::MAX,
            exempt_bytes: 0,
            exempt_tracks: 0,
        }
    }
}

impl QuotaRow {
    pub fn encode(&self) -> [u8; QUOTA_ROW_LEN] {
        let mut b = [0u8; QUOTA_ROW_LEN];
        b[0..8].copy_from_slice(&self.max_bytes.to_le_bytes());
        b[8..16].copy_from_slice(&self.max_tracks.to_le_bytes());
        b[16..24].copy_from_slice(&self.exempt_bytes.to_le_bytes());
        b[24..32].copy_from_slice(&self.exempt_tracks.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; QUOTA_ROW_LEN]) -> QuotaRow {
        QuotaRow {
            max_bytes: u64_at(b, 0),
            max_tracks: u64_at(b, 8),
            exempt_bytes: u64_at(b, 16),
            exempt_tracks: u64_at(b, 24),
        }
    }
}

/// Parses a pack file name (`<16 hex digits>.pack`).
pub fn parse_pack_name(name: &str) -> Option<PackId> {
    let hex = name.strip_suffix(".pack")?;
    // Names are written in lower case only; any other spelling is not ours.
    if hex.len() != 16 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(PackId)
}

pub fn pack_name(id: PackId) -> String {
    format!("{id}.pack")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserNo;

    #[test]
    fn record_round_trip_and_damage_is_detected() {
        let plain = b"hello chunk".to_vec();
        let h = RecordHeader {
            codec: Codec::Raw,
            domain: Domain::User(UserNo(3)),
            id: ChunkId::of(&plain),
            plain_len: plain.len() as u32,
            stored_len: plain.len() as u32,
        };
        let mut pack = vec![0u8; 7];
        pack.extend_from_slice(&h.encode(&plain));
        pack.extend_from_slice(&plain);
        let (got, stored) = RecordHeader::decode(PackId(1), &pack, 0, 7).unwrap();
        // The same record in a span of the pack that starts at offset 5.
        let (in_span, _) = RecordHeader::decode(PackId(1), &pack[5..], 5, 7).unwrap();
        assert_eq!(in_span, got);
        assert!(RecordHeader::decode(PackId(1), &pack[5..], 8, 7).is_err());
        assert_eq!(got, h);
        assert_eq!(stored, &plain[..]);
        for i in 7..7 + RECORD_HEADER_LEN {
            let mut bad = pack.clone();
            bad[i] ^= 0x40;
            assert!(
                RecordHeader::decode(PackId(1), &bad, 0, 7).is_err(),
                "flip at {i} not caught"
            );
        }
        assert!(RecordHeader::decode(PackId(1), &pack[..pack.len() - 1], 0, 7).is_err());
        assert!(RecordHeader::decode(PackId(1), &pack, 0, u64::MAX).is_err());
    }

    #[test]
    fn track_record_round_trip_and_rejects_inconsistent_lengths() {
        let t = TrackRecord {
            domain: Domain::Shared,
            len: 30,
            fingerprint: Fingerprint::of(b"x"),
            stored_at: 1_700_000_000,
            audio: None,
            holder: None,
            chunks: vec![
                ChunkRef {
                    id: ChunkId::of(b"a"),
                    len: 10,
                },
                ChunkRef {
                    id: ChunkId::of(b"b"),
                    len: 20,
                },
            ],
        };
        let enc = t.encode();
        assert_eq!(TrackRecord::decode(&enc).unwrap(), t);
        let with_audio = TrackRecord {
            audio: Some(TrackAudio {
                format: 1,
                fingerprint: [7; 32],
                ranges: vec![(3, 20), (22, 30)],
            }),
            ..t.clone()
        };
        let enc_audio = with_audio.encode();
        assert_eq!(TrackRecord::decode(&enc_audio).unwrap(), with_audio);
        let with_holder = TrackRecord {
            holder: Some(RightsHolder::new("Warp Records").unwrap()),
            ..with_audio.clone()
        };
        let enc_holder = with_holder.encode();
        assert_eq!(TrackRecord::decode(&enc_holder).unwrap(), with_holder);
        // A record without a holder is byte for byte what format 1 wrote.
        assert_eq!(enc_audio[1], TRACK_FLAG_AUDIO);
        let mut bad_holder = enc_holder.clone();
        bad_holder[TRACK_FIXED_LEN + TRACK_AUDIO_FIXED_LEN + 2 * TRACK_RANGE_LEN + 2] = b' ';
        assert!(TrackRecord::decode(&bad_holder).is_err());
        let mut long_holder = enc_holder.clone();
        long_holder[TRACK_FIXED_LEN + TRACK_AUDIO_FIXED_LEN + 2 * TRACK_RANGE_LEN] = 200;
        assert!(TrackRecord::decode(&long_holder).is_err());
        let mut past_end = with_audio.clone();
        past_end.audio.as_mut().unwrap().ranges[1].1 = 31;
        assert!(TrackRecord::decode(&past_end.encode()).is_err());
        let mut overlapping = with_audio;
        overlapping.audio.as_mut().unwrap().ranges[1].0 = 19;
        assert!(TrackRecord::decode(&overlapping.encode()).is_err());
        let mut bad = enc.clone();
        bad[16] = 31; // length no longer matches the chunks
        assert!(TrackRecord::decode(&bad).is_err());
        assert!(TrackRecord::decode(&enc[..enc.len() - 1]).is_err());
    }

    #[test]
    fn store_file_versions() {
        let f = StoreFile {
            version: STORE_FORMAT_VERSION,
            store_id: [9; 16],
        };
        let enc = f.encode();
        assert_eq!(StoreFile::decode(&enc).unwrap(), Ok(f));
        let mut newer = enc;
        newer[8..12].copy_from_slice(&(STORE_FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            StoreFile::decode(&newer).unwrap(),
            Err(STORE_FORMAT_VERSION + 1)
        );
        let mut damaged = enc;
        damaged[20] ^= 1;
        assert!(StoreFile::decode(&damaged).is_err());
    }

    #[test]
    fn pack_names() {
        assert_eq!(pack_name(PackId(255)), "00000000000000ff.pack");
        assert_eq!(parse_pack_name("00000000000000ff.pack"), Some(PackId(255)));
        assert_eq!(parse_pack_name("ff.pack"), None);
        assert_eq!(parse_pack_name("00000000000000fg.pack"), None);
        assert_eq!(parse_pack_name("00000000000000FF.pack"), None);
    }
}
