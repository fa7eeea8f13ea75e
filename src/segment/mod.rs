//! Format-aware segmentation of uploads: tag regions apart from the audio payload.
//!
//! [`segment`] splits a complete upload into an ordered, gap-free, non-overlapping list of
//! [`Region`]s covering `0..len`, each marked as tag/container bytes, an embedded picture, audio
//! payload or bytes not understood. Chunking then cuts at region boundaries, so a retag (padding
//! grown, tag rewritten, audio moved) leaves the audio chunks and the cover-image chunks intact.
//!
//! Audio payload per format (the same definitions as `tests/fixtures/README.md`):
//! * MP3: from the first MPEG frame after the leading ID3v2 tag(s) to where the trailing tags
//!   (APEv2, ID3v1, Lyrics3, appended ID3v2, stacked in any order) begin.
//! * FLAC: everything after the metadata block with the last-block flag (the `fLaC` marker may
//!   follow ID3v2 tags), up to trailing tags if a tagger appended any (the fixtures' definition
//!   says "to the end of the file"; none of them has such a tag).
//!
//! Adjacent tag regions merge (an ID3v2 tag and the FLAC metadata after it are one region);
//! pictures and each `mdat` payload stay separate regions.
//! * MP4: the data of each top-level `mdat` box after its 8- or 16-byte header.
//! * Ogg Vorbis / Opus: from the page after the one on which the last codec header packet ends
//!   (3 packets for Vorbis, 2 for Opus) to the end of the file, page headers included.
//!
//! Robustness: the parsers read only through bounds-checked accessors and trust no size field
//! beyond checking it against the bytes at hand. Anything malformed, truncated or unknown yields
//! [`Format::Unknown`] with a single [`RegionKind::Other`] region over the whole input.
//!
//! Bounded work: a parse that would yield more than [`MAX_REGIONS`] regions (a crafted upload of
//! thousands of tiny boxes, blocks, tags or pages) is treated as malformed and falls back the
//! same way, so the region list, and every list a parser collects on the way (pictures, Ogg
//! comment spans), stays within a fixed size whatever the input. Regions are what the upload
//! *is*; where chunks are *cut* is derived from them by [`cut_ranges`], which merges regions
//! shorter than the minimum chunk (docs/FORMAT-AWARE.md, "Tiny regions and the region cap").

mod cut;
mod flac;
mod id3;
mod mp3;
mod mp4;
mod ogg;
#[cfg(test)]
mod tests;

pub(crate) use cut::{MAX_SHORT_RANGES, cut_ranges};

/// The most regions a segmentation may have. A parse that would produce more is treated as
/// malformed: an unknown format, one region of bytes not understood, plain chunking. Ordinary
/// tracks have fewer than a dozen regions (tags, a few pictures, one audio payload, trailing
/// tags); an MP4 with this many `mdat` boxes would also have more audio ranges than a track
/// record holds (`MAX_AUDIO_RANGES`). Caps the segmenter's memory at a few
/// hundred KiB whatever the input.
pub const MAX_REGIONS: usize = 4096;

/// What a region of an upload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// Metadata and container structure: tags, tag padding, FLAC metadata blocks, MP4 boxes other
    /// than `mdat` payload, Ogg header pages.
    Tag,
    /// The data of an embedded picture (cover art), cut apart from the tag around it.
    Picture,
    /// Audio payload; the audio fingerprint hashes these regions in order.
    Audio,
    /// Bytes not understood: the whole input on fallback, or junk between recognised structures.
    Other,
}

/// The container format an upload was segmented as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// MPEG audio frames (MP3, also MP2/MP1), optionally with ID3v2/ID3v1/APEv2/Lyrics3 tags.
    Mp3,
    /// Native FLAC, optionally behind ID3v2 tags.
    Flac,
    /// ISO base media file (MP4/M4A) or QuickTime.
    Mp4,
    /// Vorbis in Ogg.
    OggVorbis,
    /// Opus in Ogg.
    OggOpus,
    /// Not recognised, or malformed: one `Other` region over the whole input, no audio.
    Unknown,
}

impl Format {
    /// The format's code in a track record (`TrackAudio::format`, docs/DESIGN.md).
    pub(crate) fn code(self) -> u8 {
        match self {
            Format::Mp3 => 1,
            Format::Flac => 2,
            Format::Mp4 => 3,
            Format::OggVorbis => 4,
            Format::OggOpus => 5,
            Format::Unknown => 0,
        }
    }

    /// The name of a format code, as `TrackInfo::format` reports it.
    pub(crate) fn name_of_code(code: u8) -> &'static str {
        match code {
            1 => "mp3",
            2 => "flac",
            3 => "mp4",
            4 => "ogg-vorbis",
            5 => "ogg-opus",
            _ => "unknown",
        }
    }
}

/// A byte range `[start, end)` of the upload and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// What the bytes are.
    pub kind: RegionKind,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The result of [`segment`]: the format and a partition of the input into regions.
///
/// Invariant: regions are non-empty, ordered, gap-free and non-overlapping; the first starts at
/// 0 and the last ends at the input length (an empty input has no regions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segmentation {
    /// The format the regions were derived from.
    pub format: Format,
    /// The partition of `0..len`.
    pub regions: Vec<Region>,
}

impl Segmentation {
    /// The audio regions, in file order.
    pub fn audio(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().filter(|r| r.kind == RegionKind::Audio)
    }

    /// Checks the partition invariant against an input of `len` bytes, and that `Unknown` is
    /// exactly one `Other` region (none for an empty input).
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))] // fuzz_check and tests call it
    pub fn check(&self, len: u64) -> Result<(), String> {
        let mut at = 0u64;
        for (i, r) in self.regions.iter().enumerate() {
            if r.start != at {
                return Err(format!(
                    "region {i} starts at {} but the previous ended at {at}",
                    r.start
                ));
            }
            if r.end <= r.start {
                return Err(format!(
                    "region {i} is empty or reversed: {}..{}",
                    r.start, r.end
                ));
            }
            at = r.end;
        }
        if at != len {
            return Err(format!("regions end at {at}, input has {len} bytes"));
        }
        if self.format == Format::Unknown {
            let fallback = match self.regions.as_slice() {
                [] => len == 0,
                [r] => r.kind == RegionKind::Other,
                _ => false,
            };
            if !fallback {
                return Err("format Unknown but not a single Other region".into());
            }
        }
        Ok(())
    }
}

/// Splits a complete upload into regions. Never fails and never panics: anything not recognised
/// or malformed gives [`Format::Unknown`] and one [`RegionKind::Other`] region.
pub(crate) fn segment(data: &[u8]) -> Segmentation {
    finish(data, parse_auto(data))
}

/// BLAKE3 over the concatenation of the audio regions, in file order; `None` when there are no
/// audio regions (unknown format, or a recognised container without payload) or when `seg` does
/// not fit `data`.
pub(crate) fn audio_fingerprint(data: &[u8], seg: &Segmentation) -> Option<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut any = false;
    for r in seg.audio() {
        let start = usize::try_from(r.start).ok()?;
        let end = usize::try_from(r.end).ok()?;
        hasher.update(data.get(start..end)?);
        any = true;
    }
    any.then(|| *hasher.finalize().as_bytes())
}

/// Runs the segmenter on `data` and panics if the result breaks the partition invariant or the
/// audio fingerprint disagrees with the audio regions. Always runs [`segment`] (with format
/// detection); `parser` 1..=4 also runs the MP3, FLAC, MP4 or Ogg parser directly on the input,
/// skipping detection (other values: `parser % 5`, 0 for none), and when both find the same
/// format their segmentations must be equal.
#[doc(hidden)]
#[cfg_attr(not(feature = "test-support"), allow(dead_code))] // only the fuzz targets call it
pub fn fuzz_check(parser: u8, data: &[u8]) {
    let check = |seg: &Segmentation| {
        if let Err(e) = seg.check(data.len() as u64) {
            panic!(
                "broken partition ({:?}): {e}: {:?}",
                seg.format, seg.regions
            );
        }
        let mut concat = Vec::new();
        for r in seg.audio() {
            concat.extend_from_slice(&data[r.start as usize..r.end as usize]);
        }
        let expect = (seg.audio().count() > 0).then(|| *blake3::hash(&concat).as_bytes());
        assert_eq!(audio_fingerprint(data, seg), expect, "audio fingerprint");
    };
    let auto = segment(data);
    check(&auto);
    assert!(
        auto.regions.len() <= MAX_REGIONS,
        "{} regions, cap {MAX_REGIONS}",
        auto.regions.len()
    );
    let forced = match parser {
        0 => return,
        1..=4 => parser,
        _ => parser % 5,
    };
    let seg = finish(data, parse_forced(forced, data));
    check(&seg);
    assert!(
        seg.regions.len() <= MAX_REGIONS,
        "{} regions, cap {MAX_REGIONS}",
        seg.regions.len()
    );
    if seg.format != Format::Unknown && auto.format == seg.format {
        assert_eq!(auto, seg, "detection and the forced parser disagree");
    }
}

fn fallback(data: &[u8]) -> Segmentation {
    let regions = if data.is_empty() {
        Vec::new()
    } else {
        vec![Region {
            kind: RegionKind::Other,
            start: 0,
            end: data.len() as u64,
        }]
    };
    Segmentation {
        format: Format::Unknown,
        regions,
    }
}

/// Turns a parse into a segmentation, falling back when the parse failed or (defensively) when
/// the regions it produced do not partition the input.
fn finish(data: &[u8], parsed: Option<(Format, Builder)>) -> Segmentation {
    let Some((format, builder)) = parsed else {
        return fallback(data);
    };
    match builder.finish(data.len()) {
        Some(regions) if format != Format::Unknown => Segmentation { format, regions },
        _ => fallback(data),
    }
}

fn parse_auto(data: &[u8]) -> Option<(Format, Builder)> {
    let mut b = Builder::default();
    let lead = id3::leading_tags(data, &mut b)?;
    let rest = data.get(lead..)?;
    if rest.starts_with(flac::MAGIC) {
        return flac::parse(data, lead, b);
    }
    if lead == 0 {
        if rest.starts_with(ogg::MAGIC) {
            return ogg::parse(data, b);
        }
        if mp4::sniff(data) {
            return mp4::parse(data, b);
        }
    }
    mp3::parse(data, lead, b)
}

#[cfg_attr(not(feature = "test-support"), allow(dead_code))] // only fuzz_check calls it
fn parse_forced(parser: u8, data: &[u8]) -> Option<(Format, Builder)> {
    let mut b = Builder::default();
    match parser {
        1 => {
            let lead = id3::leading_tags(data, &mut b)?;
            mp3::parse(data, lead, b)
        }
        2 => {
            let lead = id3::leading_tags(data, &mut b)?;
            flac::parse(data, lead, b)
        }
        3 => mp4::parse(data, b),
        4 => ogg::parse(data, b),
        _ => None,
    }
}

/// Collects regions in file order. Empty ranges are dropped, adjacent `Tag` (or `Other`) ranges
/// merge; any out-of-order range, or a region beyond [`MAX_REGIONS`], marks the whole build as
/// broken, so a parser bug or a crafted input degrades to the fallback instead of a bad (or
/// unbounded) partition.
#[derive(Default)]
struct Builder {
    regions: Vec<Region>,
    at: usize,
    broken: bool,
}

impl Builder {
    fn push(&mut self, kind: RegionKind, start: usize, end: usize) {
        if start != self.at || end < start {
            self.broken = true;
            return;
        }
        if end == start {
            return;
        }
        self.at = end;
        let (start, end) = (start as u64, end as u64);
        if let Some(last) = self.regions.last_mut() {
            let mergeable = matches!(kind, RegionKind::Tag | RegionKind::Other);
            if mergeable && last.kind == kind && last.end == start {
                last.end = end;
                return;
            }
        }
        if self.regions.len() >= MAX_REGIONS {
            self.broken = true;
            return;
        }
        self.regions.push(Region { kind, start, end });
    }

    /// Pushes `[start, end)` as `Tag`, with the given picture ranges (sorted, disjoint, inside
    /// `[start, end)`) cut out as `Picture` regions.
    fn push_tag_with_pictures(&mut self, start: usize, end: usize, pictures: &[(usize, usize)]) {
        let mut at = start;
        for &(ps, pe) in pictures {
            if ps < at || pe > end || ps >= pe {
                // Not sorted or not inside: keep the rest as one tag region.
                break;
            }
            self.push(RegionKind::Tag, at, ps);
            self.push(RegionKind::Picture, ps, pe);
            at = pe;
        }
        self.push(RegionKind::Tag, at, end);
    }

    fn finish(self, len: usize) -> Option<Vec<Region>> {
        (!self.broken && self.at == len).then_some(self.regions)
    }
}

// Bounds-checked big/little-endian readers; `None` when the bytes are not there.

fn bytes<const N: usize>(d: &[u8], at: usize) -> Option<[u8; N]> {
    d.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    bytes::<2>(d, at).map(u16::from_be_bytes)
}

fn be24(d: &[u8], at: usize) -> Option<u32> {
    let [a, b, c] = bytes::<3>(d, at)?;
    Some(u32::from_be_bytes([0, a, b, c]))
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    bytes::<4>(d, at).map(u32::from_be_bytes)
}

fn be64(d: &[u8], at: usize) -> Option<u64> {
    bytes::<8>(d, at).map(u64::from_be_bytes)
}

fn le32(d: &[u8], at: usize) -> Option<u32> {
    bytes::<4>(d, at).map(u32::from_le_bytes)
}

/// `at + len` as an offset, if it does not overflow and stays within `limit`.
fn end_within(at: usize, len: impl TryInto<usize>, limit: usize) -> Option<usize> {
    let end = at.checked_add(len.try_into().ok()?)?;
    (end <= limit).then_some(end)
}
