//! Upload avoidance with proof of ownership.
//!
//! A client that holds a track offers its audio fingerprint and payload length. The server
//! answers with a challenge: a fresh random nonce and several random byte ranges of the payload.
//! The client answers with BLAKE3 keyed by the nonce over those ranges' bytes, concatenated in
//! order. On a correct answer, in single-master mode, for a recording the store holds, the track
//! is linked into the user's locker from the client's own tag bytes and the stored payload: the
//! payload is never uploaded.
//!
//! A bare hash is never proof: the fingerprint only selects what to challenge. A proof links
//! exactly what was proven: the holder's track record is read once, the expected answer is
//! computed from that record's chunks and the link is put from the same record's chunks (every
//! chunk verified against its id), so a concurrent replace, delete or GC of the holder's track
//! can make a proof refuse, never link other bytes (docs/DESIGN.md 11.3).
//!
//! Every refusal (wrong bytes, wrong nonce, expired or reused challenge, unknown recording,
//! per-user-copy mode, the holder's track gone meanwhile) has the same shape,
//! [`ProofOutcome::Refused`], and returns no earlier than [`REFUSAL_FLOOR`] after `prove` was
//! called, so its timing does not tell whether the store holds the recording. A challenge does
//! no lookup at all: its shape and cost depend only on the claimed length.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{TrackAudio, TrackRecord};
use crate::ids::{AudioFingerprint, UserNo};
use crate::names::{TrackKey, UserId};
use crate::policy::{LicencePolicy, TrackOwner};
use crate::random::random_bytes;
use crate::read::TrackReader;
use crate::segment;
use crate::write::{PutOutcome, Writer};

/// Ranges per challenge.
const RANGES: usize = 8;
/// Bytes per range (less for a short payload).
const RANGE_LEN: u64 = 4096;
/// How long a challenge stays answerable.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Most challenges outstanding at once; older ones are dropped first.
const MAX_PENDING: usize = 65_536;

/// Every `prove` that does not link returns no earlier than this after it was called, so a
/// refusal takes the same time whether or not the store holds the recording. Chosen from
/// measurement (docs/PERFORMANCE.md, "Refusal timing"): a refusal's own work is 0.3-0.5 ms
/// from the page cache and 5.3-6.4 ms (p10-p90) when the holder's chunks and the metadata come
/// from a cold page cache; the floor covers both with room. A refusal whose work takes longer
/// (a slower disk, a loaded machine) still shows it. It is a sleep: it holds the calling
/// thread, not a core.
pub const REFUSAL_FLOOR: Duration = Duration::from_millis(10);

/// What a client claims to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnershipClaim {
    /// BLAKE3 of the audio payload.
    pub audio_fingerprint: AudioFingerprint,
    /// Bytes of audio payload.
    pub audio_len: u64,
}

/// A challenge: answer with [`ClientTrack::answer`] before it expires. Single use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Identifies the challenge when answering.
    pub id: u64,
    /// Fresh random key of the keyed hash.
    pub nonce: [u8; 32],
    /// Byte ranges `[start, end)` of the audio payload to hash, in order.
    pub ranges: Vec<(u64, u64)>,
}

/// The result of a proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProofOutcome {
    /// The track was stored in the user's locker without uploading its payload. The
    /// [`PutOutcome`]'s new-chunk figures are operator-facing, as for any put.
    Linked(PutOutcome),
    /// Nothing was linked. Deliberately carries no reason.
    Refused,
}

#[derive(Debug)]
pub(crate) struct Pending {
    user: UserId,
    key: TrackKey,
    claim: OwnershipClaim,
    nonce: [u8; 32],
    ranges: Vec<(u64, u64)>,
    issued: Instant,
}

/// The proofs of ownership in progress: the outstanding challenges.
#[derive(Debug, Default)]
pub(crate) struct Proofs {
    pending: Mutex<HashMap<u64, Pending>>,
}

/// Random ranges over a payload of `len` bytes: `RANGES` ranges of up to `RANGE_LEN` bytes.
fn pick_ranges(len: u64) -> Result<Vec<(u64, u64)>> {
    let span = RANGE_LEN.min(len.max(1));
    let mut ranges = Vec::with_capacity(RANGES);
    for _ in 0..RANGES {
        let r = u64::from_le_bytes(random_bytes::<8>("a challenge")?);
        let start = if len > span { r % (len - span + 1) } else { 0 };
        ranges.push((start, start + span.min(len)));
    }
    ranges.sort_unstable();
    Ok(ranges)
}

fn keyed(nonce: &[u8; 32]) -> blake3::Hasher {
    blake3::Hasher::new_keyed(nonce)
}

/// The moment before which a refusal may not return.
#[derive(Clone, Copy, Debug)]
struct Floor {
    start: Instant,
}

impl Floor {
    fn from(start: Instant) -> Floor {
        Floor { start }
    }

    /// How long to wait at `now` so the refusal returns no earlier than the floor.
    fn remaining(&self, now: Instant) -> Duration {
        REFUSAL_FLOOR.saturating_sub(now.saturating_duration_since(self.start))
    }

    fn wait(&self) {
        let rest = self.remaining(Instant::now());
        if !rest.is_zero() {
            std::thread::sleep(rest);
        }
    }
}

impl Proofs {
    /// Starts a proof (see `Store::challenge`): looks nothing up.
    pub(crate) fn challenge(
        &self,
        user: &UserId,
        key: &TrackKey,
        claim: &OwnershipClaim,
    ) -> Result<Challenge> {
        let challenge = Challenge {
            id: u64::from_le_bytes(random_bytes::<8>("a challenge")?),
            nonce: random_bytes::<32>("a challenge")?,
            ranges: pick_ranges(claim.audio_len)?,
        };
        let mut pending = self.pending.lock().expect("challenge lock");
        let now = Instant::now();
        pending.retain(|_, p| now.duration_since(p.issued) < CHALLENGE_TTL);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.issued)
                .map(|(k, _)| *k)
        {
            pending.remove(&oldest);
        }
        pending.insert(
            challenge.id,
            Pending {
                user: user.clone(),
                key: key.clone(),
                claim: *claim,
                nonce: challenge.nonce,
                ranges: challenge.ranges.clone(),
                issued: now,
            },
        );
        Ok(challenge)
    }

    /// Checks an answer and links the proven track (see `Store::prove`): every outcome but
    /// `Linked` waits out the refusal floor.
    pub(crate) fn prove(
        &self,
        engine: &Arc<Engine>,
        writer: &Writer,
        challenge_id: u64,
        response: [u8; 32],
        head: &[u8],
        tail: &[u8],
    ) -> Result<ProofOutcome> {
        let floor = Floor::from(Instant::now());
        let result = self.prove_unfloored(engine, writer, challenge_id, response, head, tail);
        if !matches!(result, Ok(ProofOutcome::Linked(_))) {
            floor.wait();
        }
        result
    }

    fn prove_unfloored(
        &self,
        engine: &Arc<Engine>,
        writer: &Writer,
        challenge_id: u64,
        response: [u8; 32],
        head: &[u8],
        tail: &[u8],
    ) -> Result<ProofOutcome> {
        let Some(p) = self
            .pending
            .lock()
            .expect("challenge lock")
            .remove(&challenge_id)
        else {
            return Ok(ProofOutcome::Refused);
        };
        let fresh = p.issued.elapsed() < CHALLENGE_TTL;
        // The prover's number: committed, or reserved for as long as the proof runs (the link's
        // put uses the same reservation).
        let prover = crate::write::reserve_user_no(engine, writer, &p.user)?;
        let prover = prover.no();
        // A holder is looked for only where the policy lets some uploads be avoided, and used
        // only where it lets the prover's track share the holder's records.
        // Any failure finding or reading it refuses like everything else: its error would name
        // the holder.
        let holder = if fresh && engine.fresh_policy()?.current().avoids_any_upload() {
            holder(engine, &p.claim, prover).unwrap_or(None)
        } else {
            None
        };
        let Some((mut payload, holder)) = holder else {
            decoy_work(engine, &p);
            return Ok(ProofOutcome::Refused);
        };
        let Ok(expected) = payload.answer(&p.nonce, &p.ranges) else {
            return Ok(ProofOutcome::Refused);
        };
        // `blake3::Hash` equality is constant-time.
        if blake3::Hash::from_bytes(response) != blake3::Hash::from_bytes(expected) {
            return Ok(ProofOutcome::Refused);
        }
        // Link from the same record: the put reads the payload from its chunks (verified), so a
        // dedup hit pins and revives exactly those chunks, and a chunk freed meanwhile is
        // written again from the verified bytes already read (docs/DESIGN.md 11.3).
        payload.rewind();
        let upload = std::io::Cursor::new(head)
            .chain(&mut payload)
            .chain(std::io::Cursor::new(tail));
        // Only if the policy still lets the two tracks share as the ingest registers: a change of
        // policy since the check above refuses instead of linking a copy the new one forbids.
        // The prover's rights holder is the one its own bytes (the head and tail it sent) name.
        let allowed = |policy: &dyn LicencePolicy, owner: &TrackOwner| {
            policy.avoids_uploads(owner) && policy.may_share(owner, &holder)
        };
        let options = crate::write::PutOptions::default();
        match crate::write::put_if(engine, writer, allowed, &p.user, &p.key, upload, &options) {
            Ok(Some(out)) => Ok(ProofOutcome::Linked(out)),
            Ok(None) => Ok(ProofOutcome::Refused),
            Err(_) if payload.failed => Ok(ProofOutcome::Refused),
            Err(e) => Err(e),
        }
    }
}

/// The work of the real path without a payload: the challenged bytes, and verifying the
/// chunk each range falls in (one average chunk per range).
fn decoy_work(engine: &Engine, p: &Pending) {
    let mut h = keyed(&p.nonce);
    let total: u64 = p.ranges.iter().map(|(s, e)| e - s).sum();
    h.update(&vec![0u8; total as usize]);
    let chunk = vec![0u8; engine.chunker().params.avg as usize];
    for _ in &p.ranges {
        std::hint::black_box(blake3::hash(&chunk));
    }
    std::hint::black_box(h.finalize());
}

/// Tracks of one recording looked at for a source of upload avoidance: a recording with more
/// per-user copies ahead of (lower user numbers than) its first shared copy is refused.
const MAX_SOURCES_LOOKED_AT: usize = 256;

/// A track holding the claimed recording whose records the policy lets user `prover` share,
/// read once: a reader of exactly its record's payload, and its owner. `None` when no track
/// qualifies (none holds the fingerprint, the first one's payload length differs from the
/// claim, or the policy keeps its records from the prover). The prover's track is taken to
/// have the holder's rights holder here (the same recording); the put that links it checks
/// again with the one the prover's own tags name.
fn holder(
    engine: &Arc<Engine>,
    claim: &OwnershipClaim,
    prover: UserNo,
) -> Result<Option<(PayloadReader, TrackOwner)>> {
    let snap = engine.meta().read()?;
    let policy = engine.fresh_policy()?.current();
    // Only a track in the shared domain, which the policy keeps shared, can be a source: the
    // first such one among the recording's tracks. Tracks kept as per-user copies are skipped
    // without a trace, so the outcome never depends on whether some user keeps one
    // (invariant 7), within the bound (DESIGN 11.2).
    let mut source = None;
    for (no, key) in snap.recording_holders(&claim.audio_fingerprint, MAX_SOURCES_LOOKED_AT)? {
        let Some(track) = snap.track(no, &key)? else {
            continue;
        };
        let owner = TrackOwner {
            user: no,
            holder: track.holder.clone(),
        };
        if track.domain == crate::ids::Domain::Shared && policy.domain(&owner) == track.domain {
            source = Some((no, key, track, owner));
            break;
        }
    }
    let Some((no, key, track, owner)) = source else {
        return Ok(None);
    };
    let prover = TrackOwner {
        user: prover,
        holder: track.holder.clone(),
    };
    if !policy.avoids_uploads(&prover) || !policy.may_share(&owner, &prover) {
        return Ok(None);
    }
    let Some(audio) = track.audio.clone() else {
        return Ok(None);
    };
    if audio.fingerprint != claim.audio_fingerprint.0 || audio.len() != claim.audio_len {
        return Ok(None);
    }
    let Some(user) = snap.user_name(no)? else {
        return Ok(None);
    };
    drop(snap);
    Ok(Some((
        PayloadReader::new(engine, &user, &key, track, audio),
        owner,
    )))
}

/// Reads the audio payload (its audio ranges, concatenated) of one track record read once, and
/// nothing else: every chunk is verified against its id, and a sequential read is checked
/// against the record's audio fingerprint before it reports the end.
struct PayloadReader {
    track: TrackReader,
    ranges: Vec<(u64, u64)>,
    fingerprint: [u8; 32],
    pos: u64,
    len: u64,
    /// Hash of the payload read in order since the last rewind.
    hasher: blake3::Hasher,
    /// Set when a read failed: the put failed because of the holder's side, not the store.
    failed: bool,
}

impl PayloadReader {
    fn new(
        engine: &Arc<Engine>,
        user: &UserId,
        key: &TrackKey,
        record: TrackRecord,
        audio: TrackAudio,
    ) -> Self {
        PayloadReader {
            track: crate::read::open_record(engine, user, key, record),
            len: audio.len(),
            ranges: audio.ranges,
            fingerprint: audio.fingerprint,
            pos: 0,
            hasher: blake3::Hasher::new(),
            failed: false,
        }
    }

    fn rewind(&mut self) {
        self.pos = 0;
        self.hasher = blake3::Hasher::new();
    }

    /// BLAKE3 keyed by `nonce` over the payload's bytes in `ranges` (each wholly inside it).
    fn answer(&mut self, nonce: &[u8; 32], ranges: &[(u64, u64)]) -> Result<[u8; 32]> {
        let mut h = keyed(nonce);
        let mut buf = Vec::new();
        for (s, e) in ranges {
            buf.resize((e - s) as usize, 0);
            self.read_at(*s, &mut buf)?;
            h.update(&buf);
        }
        Ok(*h.finalize().as_bytes())
    }

    /// Maps a payload offset to a track offset and the bytes left in that range.
    fn locate(&self, mut at: u64) -> Option<(u64, u64)> {
        for (s, e) in &self.ranges {
            if at < e - s {
                return Some((s + at, e - s - at));
            }
            at -= e - s;
        }
        None
    }

    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let (off, left) = self
                .locate(at + done as u64)
                .ok_or_else(|| Error::corrupted("challenge range past the payload"))?;
            let n = (buf.len() - done).min(left as usize);
            self.track
                .seek(SeekFrom::Start(off))
                .and_then(|_| self.track.read_exact(&mut buf[done..done + n]))
                .map_err(Error::from_io)?;
            done += n;
        }
        Ok(())
    }

    fn read_next(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.len {
            if *self.hasher.finalize().as_bytes() != self.fingerprint {
                return Err(std::io::Error::other(
                    "the payload does not match its audio fingerprint",
                ));
            }
            return Ok(0);
        }
        let (off, left) = self
            .locate(self.pos)
            .ok_or_else(|| std::io::Error::other("payload offset past its ranges"))?;
        let n = buf.len().min(left as usize);
        self.track.seek(SeekFrom::Start(off))?;
        self.track.read_exact(&mut buf[..n])?;
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Read for PayloadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.read_next(buf);
        self.failed |= r.is_err();
        r
    }
}

/// The client side: a track the client holds, split into its own tag bytes and the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTrack {
    /// What to claim.
    pub claim: OwnershipClaim,
    /// Bytes before the audio payload.
    pub head: Vec<u8>,
    /// Bytes after it.
    pub tail: Vec<u8>,
    payload: Vec<u8>,
}

impl ClientTrack {
    /// Splits a whole file the client holds. `None` when its format is not recognised or its
    /// payload is not one contiguous range (then it must be uploaded).
    pub fn from_file_bytes(bytes: &[u8]) -> Option<ClientTrack> {
        let seg = segment::segment(bytes);
        let fp = segment::audio_fingerprint(bytes, &seg)?;
        let mut audio = seg.audio();
        let r = audio.next()?;
        if audio.next().is_some() {
            return None;
        }
        let (s, e) = (r.start as usize, r.end as usize);
        Some(ClientTrack {
            claim: OwnershipClaim {
                audio_fingerprint: AudioFingerprint(fp),
                audio_len: (e - s) as u64,
            },
            head: bytes[..s].to_vec(),
            tail: bytes[e..].to_vec(),
            payload: bytes[s..e].to_vec(),
        })
    }

    /// The answer to a challenge: BLAKE3 keyed by the nonce over the challenged ranges.
    pub fn answer(&self, challenge: &Challenge) -> [u8; 32] {
        let mut h = keyed(&challenge.nonce);
        for (s, e) in &challenge.ranges {
            let (s, e) = (*s as usize, *e as usize);
            match self.payload.get(s..e) {
                Some(b) => h.update(b),
                None => h.update(&vec![0u8; e.saturating_sub(s)]),
            };
        }
        *h.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_waits_out_the_rest_of_the_floor_and_no_more() {
        let start = Instant::now();
        let floor = Floor::from(start);
        assert_eq!(floor.remaining(start), REFUSAL_FLOOR);
        let third = REFUSAL_FLOOR / 3;
        assert_eq!(floor.remaining(start + third), REFUSAL_FLOOR - third);
        assert_eq!(floor.remaining(start + REFUSAL_FLOOR), Duration::ZERO);
        assert_eq!(floor.remaining(start + REFUSAL_FLOOR * 2), Duration::ZERO);
        // A clock read before the start (another thread's `now`) waits the whole floor.
        assert_eq!(Floor::from(start + third).remaining(start), REFUSAL_FLOOR);
    }
}
