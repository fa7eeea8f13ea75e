//! What a store holds, read from the metadata: a track's facts, a user's tracks, the store-wide
//! and per-user accounting.

use crate::engine::{Engine, user_no};
use crate::error::{Error, Result};
use crate::format::TrackRecord;
use crate::ids::UserNo;
use crate::ids::{AudioFingerprint, Fingerprint};
use crate::index::counter_keys as ck;
use crate::names::{TrackKey, UserId};
use crate::policy::LicenseMode;
use crate::policy::quota::QuotaUsage;
use crate::segment::Format;

/// Facts about one stored track.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackInfo {
    /// The track's key.
    pub key: TrackKey,
    /// Length in bytes.
    pub size: u64,
    /// BLAKE3 of the bytes.
    pub fingerprint: Fingerprint,
    /// Number of chunks.
    pub chunks: u64,
    /// Seconds since the Unix epoch when it was stored.
    pub stored_at: u64,
    /// Container format the segmenter recognised (`"mp3"`, `"flac"`, `"mp4"`, `"ogg-vorbis"`,
    /// `"ogg-opus"`), or `"unknown"`.
    pub format: &'static str,
    /// BLAKE3 of the audio payload alone, when the format was recognised.
    pub audio_fingerprint: Option<AudioFingerprint>,
    /// Bytes of audio payload.
    pub audio_len: u64,
    /// The track's rights holder, when known.
    pub rights_holder: Option<crate::RightsHolder>,
}

/// Per-user accounting.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserStats {
    /// The user.
    pub user: String,
    /// Bytes the user uploaded and still holds (the quota basis).
    pub logical_bytes: u64,
    /// Tracks the user holds.
    pub tracks: u64,
    /// The user's limits, and how much of the above counts against them.
    pub quota: QuotaUsage,
}

/// Store-wide accounting, kept exact by every commit (verify recounts it).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The license mode.
    pub mode: LicenseMode,
    /// Users holding at least one track.
    pub users: u64,
    /// Tracks in all lockers.
    pub tracks: u64,
    /// Bytes users uploaded and hold.
    pub logical_bytes: u64,
    /// Bytes of chunk records (header and stored bytes) that committed tracks reference.
    pub physical_bytes: u64,
    /// Bytes of chunk records no track references (reclaimed by GC).
    pub garbage_bytes: u64,
    /// Live chunk records.
    pub chunks: u64,
    /// Distinct recordings (audio fingerprints) held by at least one track.
    pub recordings: u64,
    /// Garbage chunk entries: records no track references that a dedup hit can still revive
    /// (until GC removes them).
    pub garbage_chunks: u64,
    /// Pack files.
    pub packs: u64,
    /// Bytes of all pack files (live, garbage and pack headers).
    pub pack_bytes: u64,
    /// logical / physical (1.0 for an empty store).
    pub dedup_ratio: f64,
    /// RAM held by the in-memory filter of chunk keys (the only index kept in memory).
    pub filter_bytes: u64,
    /// Per-user figures, by user id.
    pub per_user: Vec<UserStats>,
    /// Where the packs live: the store's `packs/` directory, or an object store's URL.
    pub pack_location: String,
    /// Bytes of packs cached on local disk, when the packs live in an object store.
    pub cache_bytes: Option<u64>,
    /// The cache's limit (`Options::cache_bytes`), when the packs live in an object store.
    pub cache_limit: Option<u64>,
    /// Bytes of writes acknowledged on local disk and not yet uploaded, when the packs live in
    /// an object store with `PackDurability::LocalDisk`: what losing the node's disk would lose.
    pub upload_backlog_bytes: Option<u64>,
}

/// Facts about one track.
pub(crate) fn track_info(engine: &Engine, user: &UserId, key: &TrackKey) -> Result<TrackInfo> {
    let t = engine.track_record(user, key)?;
    Ok(info(key.clone(), &t))
}

/// The user's tracks, by key.
pub(crate) fn list(engine: &Engine, user: &UserId) -> Result<Vec<TrackInfo>> {
    let snap = engine.meta().read()?;
    let no = user_no(snap.as_ref(), user)?;
    Ok(snap
        .tracks_of(no)?
        .into_iter()
        .map(|(key, t)| info(key, &t))
        .collect())
}

/// Store-wide and per-user accounting.
pub(crate) fn stats(engine: &Engine) -> Result<Stats> {
    let snap = engine.meta().read()?;
    let c = |k| snap.counter(k);
    let packs = snap.packs()?;
    let logical_bytes = c(ck::LOGICAL_BYTES)?;
    let physical_bytes = c(ck::LIVE_BYTES)?;
    let mut per_user: Vec<UserStats> = snap
        // As stored: accounting reports a damaged name rather than failing on it.
        .users_raw()?
        .into_iter()
        .map(|(user, r)| {
            let q = snap.quota(UserNo(r.no))?.unwrap_or_default();
            Ok(UserStats {
                user,
                logical_bytes: r.logical_bytes,
                tracks: r.tracks,
                quota: QuotaUsage::of(&q, r.logical_bytes, r.tracks)?,
            })
        })
        .collect::<Result<_>>()?;
    per_user.retain(|u| u.tracks > 0);
    let facts = engine.packs().facts();
    Ok(Stats {
        mode: engine.fresh_policy()?.mode(),
        users: c(ck::USERS)?,
        tracks: c(ck::TRACKS)?,
        logical_bytes,
        physical_bytes,
        garbage_bytes: c(ck::GARBAGE_BYTES)?,
        chunks: c(ck::LIVE_CHUNKS)?,
        recordings: c(ck::RECORDINGS)?,
        garbage_chunks: c(ck::GARBAGE_CHUNKS)?,
        packs: packs.len() as u64,
        pack_bytes: packs.iter().map(|(_, r)| r.committed_len).sum(),
        dedup_ratio: if physical_bytes == 0 {
            1.0
        } else {
            logical_bytes as f64 / physical_bytes as f64
        },
        filter_bytes: engine.filter().bytes() as u64,
        per_user,
        pack_location: facts.location,
        cache_bytes: facts.cache_bytes,
        cache_limit: facts.cache_limit,
        upload_backlog_bytes: facts.upload_backlog,
    })
}

/// `user`'s limits and usage (see `Store::quota`).
pub(crate) fn quota(engine: &Engine, user: &UserId) -> Result<QuotaUsage> {
    let snap = engine.meta().read()?;
    let row = snap
        .user(user)?
        .ok_or_else(|| Error::UnknownUser(user.to_string()))?;
    let q = snap.quota(UserNo(row.no))?.unwrap_or_default();
    QuotaUsage::of(&q, row.logical_bytes, row.tracks)
}

/// A track's facts from its record.
pub(crate) fn info(key: TrackKey, t: &TrackRecord) -> TrackInfo {
    TrackInfo {
        key,
        size: t.len,
        fingerprint: t.fingerprint,
        chunks: t.chunks.len() as u64,
        stored_at: t.stored_at,
        format: Format::name_of_code(t.audio.as_ref().map_or(0, |a| a.format)),
        audio_fingerprint: t.audio.as_ref().map(|a| AudioFingerprint(a.fingerprint)),
        audio_len: t.audio.as_ref().map_or(0, |a| a.len()),
        rights_holder: t.holder.clone(),
    }
}
