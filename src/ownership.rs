//! Upload avoidance with proof of ownership.
//!
//! A client that holds a track offers its audio fingerprint and payload length. The server
//! answers with a challenge: a fresh random nonce and several random byte ranges of the payload.
//! The client answers with BLAKE3 keyed by the nonce over those ranges' bytes, concatenated in
//! order. On a correct answer, in single-master mode, for a recording the store holds, the track
//! is linked into the user's locker from the client's own tag bytes and the stored payload: the
//! payload is never uploaded.
//!
//! A bare hash is never proof: the fingerprint only selects what to challenge. Every refusal
//! (wrong bytes, wrong nonce, expired or reused challenge, unknown recording, per-user-copy mode)
//! has the same shape, [`ProofOutcome::Refused`], and a challenge has the same shape whether or
//! not the store holds the recording, so nothing reveals whether another user holds it. Both
//! paths do comparable work: without a real payload, the server hashes as many zero bytes plus
//! one average chunk per range (what verifying the real chunks costs); the real path reads from
//! the page cache or the disk, so its timing is close to, not exactly, the other's.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ids::{AudioFingerprint, LicenseMode, TrackKey, UserId, UserNo};
use crate::segment;
use crate::store::{PutOutcome, Store};

/// Ranges per challenge.
const RANGES: usize = 8;
/// Bytes per range (less for a short payload).
const RANGE_LEN: u64 = 4096;
/// How long a challenge stays answerable.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Most challenges outstanding at once; older ones are dropped first.
const MAX_PENDING: usize = 65_536;

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
    /// The track was stored in the user's locker without uploading its payload.
    Linked(PutOutcome),
    /// Nothing was linked. Deliberately carries no reason.
    Refused,
}

/// A track to link from: its user, key and audio payload ranges.
type Holder = (UserId, TrackKey, Vec<(u64, u64)>);

#[derive(Debug)]
pub(crate) struct Pending {
    user: UserId,
    key: TrackKey,
    claim: OwnershipClaim,
    nonce: [u8; 32],
    ranges: Vec<(u64, u64)>,
    issued: Instant,
    /// A track that holds the recording, if the store had one when challenged.
    holder: Option<(UserNo, String)>,
}

/// Outstanding challenges.
#[derive(Debug, Default)]
pub(crate) struct Challenges {
    pending: HashMap<u64, Pending>,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        op: "gather randomness for",
        path: "a challenge".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

/// Random ranges over a payload of `len` bytes: `RANGES` ranges of up to `RANGE_LEN` bytes.
fn pick_ranges(len: u64) -> Result<Vec<(u64, u64)>> {
    let span = RANGE_LEN.min(len.max(1));
    let mut ranges = Vec::with_capacity(RANGES);
    for _ in 0..RANGES {
        let r = u64::from_le_bytes(random::<8>()?);
        let start = if len > span { r % (len - span + 1) } else { 0 };
        ranges.push((start, start + span.min(len)));
    }
    ranges.sort_unstable();
    Ok(ranges)
}

fn keyed(nonce: &[u8; 32]) -> blake3::Hasher {
    blake3::Hasher::new_keyed(nonce)
}

impl Store {
    /// Starts a proof of ownership for `user`'s track `key`. The challenge looks the same
    /// whether or not the store holds the recording and in either mode.
    pub fn challenge(
        &self,
        user: &UserId,
        key: &TrackKey,
        claim: &OwnershipClaim,
    ) -> Result<Challenge> {
        // The same lookup in every case, so the answer time does not depend on the mode.
        let holder = self
            .inner
            .meta
            .read()?
            .recording_holders(&claim.audio_fingerprint.0, 1)?
            .into_iter()
            .next();
        let holder = holder.filter(|_| self.mode() == LicenseMode::SingleMaster);
        let challenge = Challenge {
            id: u64::from_le_bytes(random::<8>()?),
            nonce: random::<32>()?,
            ranges: pick_ranges(claim.audio_len)?,
        };
        let mut c = self.inner.challenges.lock().expect("challenge lock");
        let now = Instant::now();
        c.pending
            .retain(|_, p| now.duration_since(p.issued) < CHALLENGE_TTL);
        if c.pending.len() >= MAX_PENDING
            && let Some(oldest) = c
                .pending
                .iter()
                .min_by_key(|(_, p)| p.issued)
                .map(|(k, _)| *k)
        {
            c.pending.remove(&oldest);
        }
        c.pending.insert(
            challenge.id,
            Pending {
                user: user.clone(),
                key: key.clone(),
                claim: *claim,
                nonce: challenge.nonce,
                ranges: challenge.ranges.clone(),
                issued: now,
                holder,
            },
        );
        Ok(challenge)
    }

    /// Checks the answer to a challenge and, if it proves possession, stores `head ‖ payload ‖
    /// tail` as the user's track (the client's own bytes before and after the audio payload).
    /// Every refusal looks the same.
    pub fn prove(
        &self,
        challenge_id: u64,
        response: [u8; 32],
        head: &[u8],
        tail: &[u8],
    ) -> Result<ProofOutcome> {
        let Some(p) = self
            .inner
            .challenges
            .lock()
            .expect("challenge lock")
            .pending
            .remove(&challenge_id)
        else {
            return Ok(ProofOutcome::Refused);
        };
        let fresh = p.issued.elapsed() < CHALLENGE_TTL;
        // Any failure reading the holder's track refuses like everything else: its error would
        // name the holder.
        let expected = match self.expected_answer(&p) {
            Ok(e) => e,
            Err(_) => return Ok(ProofOutcome::Refused),
        };
        let matches = blake3::Hash::from_bytes(response) == blake3::Hash::from_bytes(expected.0);
        let Some(holder) = expected.1 else {
            return Ok(ProofOutcome::Refused);
        };
        if !(fresh && matches) || self.mode() != LicenseMode::SingleMaster {
            return Ok(ProofOutcome::Refused);
        }
        // Link: the payload comes from the holder's stored track, never from the client.
        let reader = PayloadReader::open(self, &holder.0, &holder.1, &holder.2)?;
        let upload = std::io::Cursor::new(head)
            .chain(reader)
            .chain(std::io::Cursor::new(tail));
        let out = self.put(&p.user, &p.key, upload)?;
        Ok(ProofOutcome::Linked(out))
    }

    /// The answer the server expects, and the holder track to link from when the challenge was
    /// real. Without a holder, hashes as many zero bytes, so both paths cost the same.
    fn expected_answer(&self, p: &Pending) -> Result<([u8; 32], Option<Holder>)> {
        let mut h = keyed(&p.nonce);
        let total: u64 = p.ranges.iter().map(|(s, e)| e - s).sum();
        let real = match &p.holder {
            Some((no, key)) => self.holder_payload(*no, key, &p.claim)?,
            None => None,
        };
        match real {
            Some((user, key, audio)) => {
                let mut r = PayloadReader::open(self, &user, &key, &audio)?;
                let mut buf = Vec::new();
                for (s, e) in &p.ranges {
                    buf.resize((e - s) as usize, 0);
                    r.read_at(*s, &mut buf)?;
                    h.update(&buf);
                }
                Ok((*h.finalize().as_bytes(), Some((user, key, audio))))
            }
            None => {
                // The work of the real path: the challenged bytes, and verifying the chunk each
                // range falls in (one average chunk per range).
                h.update(&vec![0u8; total as usize]);
                let chunk = vec![0u8; self.inner.chunker.params.avg as usize];
                for _ in &p.ranges {
                    std::hint::black_box(blake3::hash(&chunk));
                }
                let _ = h.finalize();
                // A value no client can produce without the nonce and the (absent) payload.
                Ok((random::<32>()?, None))
            }
        }
    }

    /// The holder's ids and payload ranges, if it still holds the claimed recording.
    fn holder_payload(
        &self,
        no: UserNo,
        key: &str,
        claim: &OwnershipClaim,
    ) -> Result<Option<Holder>> {
        let snap = self.inner.meta.read()?;
        let Some(name) = snap.user_name(no)? else {
            return Ok(None);
        };
        let Some(t) = snap.track(no, key)? else {
            return Ok(None);
        };
        let Some(a) = t.audio else { return Ok(None) };
        if a.fingerprint != claim.audio_fingerprint.0 || a.len() != claim.audio_len {
            return Ok(None);
        }
        let (Ok(user), Ok(key)) = (UserId::new(&name), TrackKey::new(key)) else {
            return Ok(None);
        };
        Ok(Some((user, key, a.ranges)))
    }
}

/// Reads a stored track's audio payload (its audio ranges, concatenated).
struct PayloadReader {
    track: crate::reader::TrackReader,
    ranges: Vec<(u64, u64)>,
    pos: u64,
    len: u64,
}

impl PayloadReader {
    fn open(store: &Store, user: &UserId, key: &TrackKey, ranges: &[(u64, u64)]) -> Result<Self> {
        Ok(PayloadReader {
            track: store.open_track(user, key)?,
            ranges: ranges.to_vec(),
            pos: 0,
            len: ranges.iter().map(|(s, e)| e - s).sum(),
        })
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
}

impl Read for PayloadReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let (off, left) = self.locate(self.pos).expect("pos < len");
        let n = buf.len().min(left as usize);
        self.track.seek(SeekFrom::Start(off))?;
        self.track.read_exact(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
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
