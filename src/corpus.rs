//! A deterministic synthetic locker corpus for the demo, tests and benchmarks.
//!
//! A catalogue of recordings (incompressible pseudo-random payloads in MP3 frame streams, FLAC
//! frames or an MP4 `mdat`, by recording) grouped in albums with a shared cover image, owned by
//! many users with a Zipf-like popularity, so popular tracks are held by many users. Each user's
//! copy carries its own tags, as taggers write them in practice: MP3 with ID3v2.3 or ID3v2.4,
//! different text frames and comments, the album cover embedded or not, padding of different
//! sizes, APEv2 and ID3v1 trailers or not; FLAC with its own VORBIS_COMMENT, a PICTURE block or
//! not, a PADDING block of different sizes; MP4 with `moov` (tags, `covr`) before or after
//! `mdat`. Same seed, same bytes.

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
    ape: bool,
    moov_first: bool,
}

/// The container of a recording: every copy of it uses the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    Mp3,
    Flac,
    M4a,
}

fn container(r: usize) -> Container {
    match r % 3 {
        0 => Container::Mp3,
        1 => Container::Flac,
        _ => Container::M4a,
    }
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

/// A 28-bit ID3v2 "syncsafe" size: four bytes of seven bits each, most significant first.
pub(crate) fn syncsafe(n: usize) -> [u8; 4] {
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
                let label = format!("recording {r}");
                match container(r) {
                    Container::Mp3 => mp3_audio(spec.seed, &label, len),
                    Container::Flac => {
                        // FLAC frames start with the frame sync 0xFFF8.
                        let mut a = noise(spec.seed, &label, len);
                        a[..2].copy_from_slice(&[0xFF, 0xF8]);
                        a
                    }
                    Container::M4a => noise(spec.seed, &label, len),
                }
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
                    ape: rng.next_u64().is_multiple_of(3),
                    moov_first: rng.next_u64().is_multiple_of(2),
                };
                uploads.push(Upload {
                    key: format!(
                        "Artist {}/Album {album}/{:02} Track {r}.{}",
                        album % 7,
                        r % spec.album_size + 1,
                        match container(r) {
                            Container::Mp3 => "mp3",
                            Container::Flac => "flac",
                            Container::M4a => "m4a",
                        }
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

    /// The bytes of upload `i`: the recording's payload in its container with this copy's tags.
    pub fn bytes(&self, i: usize) -> Vec<u8> {
        match container(self.uploads[i].recording) {
            Container::Mp3 => self.mp3_bytes(i),
            Container::Flac => self.flac_bytes(i),
            Container::M4a => self.m4a_bytes(i),
        }
    }

    /// FLAC: marker, STREAMINFO, VORBIS_COMMENT, optional PICTURE, optional PADDING, frames.
    fn flac_bytes(&self, i: usize) -> Vec<u8> {
        let up = &self.uploads[i];
        let t = &up.tags;
        let album = up.recording / self.spec.album_size;
        let mut blocks: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut info = noise(self.spec.seed, &format!("streaminfo {}", up.recording), 34);
        info[..4].copy_from_slice(&[0x10, 0x00, 0x10, 0x00]);
        blocks.push((0, info));
        let mut vc = Vec::new();
        let vendor = b"reference libFLAC 1.4.2";
        vc.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        vc.extend_from_slice(vendor);
        let comments = [
            format!("TITLE=Track {}", up.recording),
            format!("ALBUM=Album {album}"),
            format!("COMMENT={}", t.comment),
        ];
        vc.extend_from_slice(&(comments.len() as u32).to_le_bytes());
        for c in &comments {
            vc.extend_from_slice(&(c.len() as u32).to_le_bytes());
            vc.extend_from_slice(c.as_bytes());
        }
        blocks.push((4, vc));
        if t.with_cover {
            let cover = &self.covers[album];
            let mut pic = Vec::new();
            pic.extend_from_slice(&3u32.to_be_bytes());
            pic.extend_from_slice(&10u32.to_be_bytes());
            pic.extend_from_slice(b"image/jpeg");
            pic.extend_from_slice(&0u32.to_be_bytes());
            for v in [500u32, 500, 24, 0] {
                pic.extend_from_slice(&v.to_be_bytes());
            }
            pic.extend_from_slice(&(cover.len() as u32).to_be_bytes());
            pic.extend_from_slice(cover);
            blocks.push((6, pic));
        }
        if t.padding > 0 {
            blocks.push((1, vec![0u8; t.padding]));
        }
        let mut out = b"fLaC".to_vec();
        let n = blocks.len();
        for (k, (kind, body)) in blocks.into_iter().enumerate() {
            out.push(if k + 1 == n { 0x80 | kind } else { kind });
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&body);
        }
        out.extend_from_slice(&self.audio[up.recording]);
        out
    }

    /// MP4: `ftyp`, then `moov` (with `udta`/`meta`/`ilst` tags and a `covr` image) before or
    /// after `mdat`, and a `free` box of padding.
    fn m4a_bytes(&self, i: usize) -> Vec<u8> {
        fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
            let mut b = Vec::with_capacity(8 + body.len());
            b.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
            b.extend_from_slice(kind);
            b.extend_from_slice(body);
            b
        }
        fn data_atom(kind: u32, payload: &[u8]) -> Vec<u8> {
            let mut d = kind.to_be_bytes().to_vec();
            d.extend_from_slice(&[0u8; 4]);
            d.extend_from_slice(payload);
            mp4_box(b"data", &d)
        }
        let up = &self.uploads[i];
        let t = &up.tags;
        let album = up.recording / self.spec.album_size;
        let mut ilst = Vec::new();
        ilst.extend(mp4_box(
            b"\xa9nam",
            &data_atom(1, format!("Track {}", up.recording).as_bytes()),
        ));
        ilst.extend(mp4_box(b"\xa9cmt", &data_atom(1, t.comment.as_bytes())));
        if t.with_cover {
            ilst.extend(mp4_box(b"covr", &data_atom(13, &self.covers[album])));
        }
        let mut meta = vec![0u8; 4];
        meta.extend(mp4_box(b"ilst", &ilst));
        let udta = mp4_box(b"udta", &mp4_box(b"meta", &meta));
        let mut moov_body = mp4_box(
            b"mvhd",
            &noise(self.spec.seed, &format!("mvhd {}", up.recording), 100),
        );
        moov_body.extend(udta);
        let moov = mp4_box(b"moov", &moov_body);
        let mut out = mp4_box(b"ftyp", b"M4A \0\0\0\0M4A mp42isom");
        let mdat = mp4_box(b"mdat", &self.audio[up.recording]);
        let free = mp4_box(b"free", &vec![0u8; t.padding]);
        if t.moov_first {
            out.extend(moov);
            out.extend(free);
            out.extend(mdat);
        } else {
            out.extend(free);
            out.extend(mdat);
            out.extend(moov);
        }
        out
    }

    /// MP3: ID3v2 tag, frames, optional APEv2 and ID3v1 trailers.
    fn mp3_bytes(&self, i: usize) -> Vec<u8> {
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
        if t.ape {
            let mut items = Vec::new();
            let mut count = 0u32;
            for (k, v) in [
                ("Title", format!("Track {}", up.recording)),
                ("Comment", t.comment.clone()),
            ] {
                items.extend_from_slice(&(v.len() as u32).to_le_bytes());
                items.extend_from_slice(&0u32.to_le_bytes());
                items.extend_from_slice(k.as_bytes());
                items.push(0);
                items.extend_from_slice(v.as_bytes());
                count += 1;
            }
            out.extend_from_slice(&items);
            out.extend_from_slice(b"APETAGEX");
            out.extend_from_slice(&2000u32.to_le_bytes());
            out.extend_from_slice(&((items.len() + 32) as u32).to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&[0u8; 8]);
        }
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
    fn every_container_is_segmented_to_its_exact_payload_and_picture() {
        let c = Corpus::generate(CorpusSpec {
            users: 12,
            recordings: 9,
            ..small()
        });
        let mut seen = std::collections::HashSet::new();
        for (i, up) in c.uploads.iter().enumerate() {
            let bytes = c.bytes(i);
            let seg = crate::segment::segment(&bytes);
            seen.insert(seg.format);
            assert_ne!(seg.format, crate::segment::Format::Unknown, "{}", up.key);
            assert_eq!(
                crate::segment::audio_fingerprint(&bytes, &seg),
                Some(*blake3::hash(c.audio(up.recording)).as_bytes()),
                "{}",
                up.key
            );
            let pictures: Vec<&[u8]> = seg
                .regions
                .iter()
                .filter(|r| r.kind == crate::segment::RegionKind::Picture)
                .map(|r| &bytes[r.start as usize..r.end as usize])
                .collect();
            let album = up.recording / c.spec.album_size;
            if up.tags.with_cover {
                assert_eq!(pictures, vec![&c.covers[album][..]], "{}", up.key);
            } else {
                assert!(pictures.is_empty(), "{}", up.key);
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
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
