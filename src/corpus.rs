//! A deterministic synthetic locker corpus for the demo, tests and benchmarks.
//!
//! A catalogue of recordings (MPEG-1 Layer III frame streams of incompressible pseudo-random
//! payload, 3-10 MB by default) grouped in albums with a shared cover image, owned by many users
//! with a Zipf-like popularity, so popular tracks are held by many users. Each user's copy carries
//! its own tags, as taggers write them in practice: ID3v2.3 or ID3v2.4, different text frames and
//! comments, the album cover embedded or not, padding of different sizes, an ID3v1 trailer or not.
//! Same seed, same bytes.

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpusSpec {
    /// Seed of everything.
    pub seed: u64,
    /// Number of users.
    pub users: usize,
    /// Distinct recordings in the catalogue.
    pub recordings: usize,
    /// Recordings per album (they share a cover image).
    pub album_size: usize,
    /// Tracks each user holds.
    pub tracks_per_user: usize,
    /// Smallest audio payload, bytes.
    pub min_audio: usize,
    /// Largest audio payload, bytes.
    pub max_audio: usize,
}

impl Default for CorpusSpec {
    /// The demo's corpus: 24 users, 30 recordings of 3-6 MB, 8 tracks each (about 850 MB
    /// logical).
    fn default() -> Self {
        CorpusSpec {
            seed: 0x10c4e7,
            users: 24,
            recordings: 30,
            album_size: 10,
            tracks_per_user: 8,
            min_audio: 3_000_000,
            max_audio: 6_000_000,
        }
    }
}

/// One upload: which user stores which recording under which key, with which tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// User id.
    pub user: String,
    /// Track key.
    pub key: String,
    /// Index of the recording in the catalogue.
    pub recording: usize,
    tags: TagStyle,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct TagStyle {
    id3v2_version: u8,
    comment: String,
    with_cover: bool,
    padding: usize,
    id3v1: bool,
}

/// A generated corpus: the catalogue's audio in memory, the uploads as recipes.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The spec it was made from.
    pub spec: CorpusSpec,
    audio: Vec<Vec<u8>>,
    covers: Vec<Vec<u8>>,
    /// Every upload, user by user.
    pub uploads: Vec<Upload>,
}

/// SplitMix64: a small, fixed, well-distributed generator for reproducible test data.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }
}

/// `n` pseudo-random bytes derived from `seed` and `label` (BLAKE3 in XOF mode: fast and
/// incompressible, like encoded audio).
pub fn noise(seed: u64, label: &str, n: usize) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(label.as_bytes());
    let mut out = vec![0u8; n];
    h.finalize_xof().fill(&mut out);
    out
}

/// An MPEG-1 Layer III, 128 kbit/s, 44.1 kHz frame stream of about `len` bytes: 4-byte frame
/// headers and pseudo-random frame bodies.
fn mp3_audio(seed: u64, label: &str, len: usize) -> Vec<u8> {
    const FRAME: usize = 417;
    let frames = len.div_ceil(FRAME);
    let mut out = noise(seed, label, frames * FRAME);
    for f in 0..frames {
        out[f * FRAME..f * FRAME + 4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    }
    out
}

fn syncsafe(n: usize) -> [u8; 4] {
    [
        ((n >> 21) & 0x7f) as u8,
        ((n >> 14) & 0x7f) as u8,
        ((n >> 7) & 0x7f) as u8,
        (n & 0x7f) as u8,
    ]
}

fn id3_frame(version: u8, id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(10 + body.len());
    f.extend_from_slice(id);
    if version == 4 {
        f.extend_from_slice(&syncsafe(body.len()));
    } else {
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(body);
    f
}

fn text_frame(version: u8, id: &[u8; 4], text: &str) -> Vec<u8> {
    let mut body = vec![if version == 4 { 3 } else { 0 }];
    body.extend_from_slice(text.as_bytes());
    id3_frame(version, id, &body)
}

impl Corpus {
    /// Generates the catalogue and the upload recipes.
    pub fn generate(spec: CorpusSpec) -> Corpus {
        assert!(spec.users > 0 && spec.recordings > 0 && spec.album_size > 0);
        assert!(spec.min_audio > 0 && spec.min_audio <= spec.max_audio);
        let mut rng = SplitMix::new(spec.seed);
        let audio: Vec<Vec<u8>> = (0..spec.recordings)
            .map(|r| {
                let len = rng.range(spec.min_audio, spec.max_audio + 1);
                mp3_audio(spec.seed, &format!("recording {r}"), len)
            })
            .collect();
        let albums = spec.recordings.div_ceil(spec.album_size);
        let covers: Vec<Vec<u8>> = (0..albums)
            .map(|a| {
                let mut c = noise(spec.seed, &format!("cover {a}"), rng.range(20_000, 200_000));
                c[..4].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
                c
            })
            .collect();
        // Zipf-like popularity: weight of recording r is 1 / (r + 1).
        let weights: Vec<f64> = (0..spec.recordings)
            .map(|r| 1.0 / (r as f64 + 1.0))
            .collect();
        let total: f64 = weights.iter().sum();
        let per_user = spec.tracks_per_user.min(spec.recordings);
        let mut uploads = Vec::new();
        for u in 0..spec.users {
            let user = format!("user{u:03}");
            let mut chosen: Vec<usize> = Vec::new();
            while chosen.len() < per_user {
                let mut x = (rng.next_u64() as f64 / u64::MAX as f64) * total;
                let mut r = 0;
                while r + 1 < spec.recordings && x >= weights[r] {
                    x -= weights[r];
                    r += 1;
                }
                if !chosen.contains(&r) {
                    chosen.push(r);
                }
            }
            for r in chosen {
                let album = r / spec.album_size;
                let tags = TagStyle {
                    id3v2_version: if rng.next_u64().is_multiple_of(2) {
                        3
                    } else {
                        4
                    },
                    comment: format!("ripped by {user} on rig {}", rng.next_u64() % 1000),
                    with_cover: !rng.next_u64().is_multiple_of(3),
                    padding: [0, 256, 1024, 2048, 4096][rng.range(0, 5)],
                    id3v1: rng.next_u64().is_multiple_of(2),
                };
                uploads.push(Upload {
                    key: format!(
                        "Artist {}/Album {album}/{:02} Track {r}.mp3",
                        album % 7,
                        r % spec.album_size + 1
                    ),
                    user: user.clone(),
                    recording: r,
                    tags,
                });
            }
        }
        Corpus {
            spec,
            audio,
            covers,
            uploads,
        }
    }

    /// The bytes of upload `i`: ID3v2 tag, audio, optional ID3v1.
    pub fn bytes(&self, i: usize) -> Vec<u8> {
        let up = &self.uploads[i];
        let t = &up.tags;
        let v = t.id3v2_version;
        let album = up.recording / self.spec.album_size;
        let mut frames = Vec::new();
        frames.extend(text_frame(v, b"TIT2", &format!("Track {}", up.recording)));
        frames.extend(text_frame(v, b"TPE1", &format!("Artist {}", album % 7)));
        frames.extend(text_frame(v, b"TALB", &format!("Album {album}")));
        frames.extend(text_frame(
            v,
            b"TRCK",
            &format!("{}", up.recording % self.spec.album_size + 1),
        ));
        let mut comm = vec![0u8, b'e', b'n', b'g', 0];
        comm.extend_from_slice(t.comment.as_bytes());
        frames.extend(id3_frame(v, b"COMM", &comm));
        if t.with_cover {
            let mut apic = vec![0u8];
            apic.extend_from_slice(b"image/jpeg\0");
            apic.push(3); // front cover
            apic.push(0); // empty description
            apic.extend_from_slice(&self.covers[album]);
            frames.extend(id3_frame(v, b"APIC", &apic));
        }
        frames.extend(std::iter::repeat_n(0u8, t.padding));
        let audio = &self.audio[up.recording];
        let mut out = Vec::with_capacity(10 + frames.len() + audio.len() + 128);
        out.extend_from_slice(b"ID3");
        out.extend_from_slice(&[v, 0, 0]);
        out.extend_from_slice(&syncsafe(frames.len()));
        out.extend_from_slice(&frames);
        out.extend_from_slice(audio);
        if t.id3v1 {
            let mut tag = [0u8; 128];
            tag[..3].copy_from_slice(b"TAG");
            let title = format!("Track {}", up.recording);
            tag[3..3 + title.len()].copy_from_slice(title.as_bytes());
            out.extend_from_slice(&tag);
        }
        out
    }

    /// The audio payload of recording `r`.
    pub fn audio(&self, r: usize) -> &[u8] {
        &self.audio[r]
    }

    /// The ideal single-master physical size of the corpus: each distinct audio payload once,
    /// each distinct embedded picture once, and every copy's other tag bytes (no record
    /// overhead, no compression).
    pub fn ideal_bytes(&self) -> u64 {
        let mut recordings = std::collections::BTreeSet::new();
        let mut covers = std::collections::BTreeSet::new();
        let mut tags = 0u64;
        for (i, up) in self.uploads.iter().enumerate() {
            let album = up.recording / self.spec.album_size;
            recordings.insert(up.recording);
            let picture = if up.tags.with_cover {
                covers.insert(album);
                self.covers[album].len()
            } else {
                0
            };
            let len = self.bytes(i).len();
            tags += (len - self.audio[up.recording].len() - picture) as u64;
        }
        recordings
            .iter()
            .map(|&r| self.audio[r].len() as u64)
            .sum::<u64>()
            + covers
                .iter()
                .map(|&a| self.covers[a].len() as u64)
                .sum::<u64>()
            + tags
    }

    /// Total bytes of all uploads.
    pub fn logical_bytes(&self) -> u64 {
        (0..self.uploads.len())
            .map(|i| self.bytes(i).len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> CorpusSpec {
        CorpusSpec {
            seed: 1,
            users: 5,
            recordings: 6,
            album_size: 3,
            tracks_per_user: 3,
            min_audio: 10_000,
            max_audio: 20_000,
        }
    }

    #[test]
    fn deterministic_and_shaped_like_tagged_mp3s() {
        let a = Corpus::generate(small());
        let b = Corpus::generate(small());
        assert_eq!(a.uploads, b.uploads);
        assert_eq!(a.uploads.len(), 15);
        for i in 0..a.uploads.len() {
            let bytes = a.bytes(i);
            assert_eq!(bytes, b.bytes(i));
            assert_eq!(&bytes[..3], b"ID3");
            let audio = a.audio(a.uploads[i].recording);
            let at = bytes
                .windows(audio.len())
                .position(|w| w == audio)
                .expect("audio payload present");
            assert!(at > 10);
        }
        let other = Corpus::generate(CorpusSpec { seed: 2, ..small() });
        assert_ne!(other.bytes(0), a.bytes(0));
    }

    #[test]
    fn popular_recordings_are_shared_by_several_users() {
        let c = Corpus::generate(CorpusSpec {
            users: 20,
            ..small()
        });
        let holders = c.uploads.iter().filter(|u| u.recording == 0).count();
        assert!(holders >= 5, "{holders}");
    }
}
