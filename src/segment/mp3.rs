//! MPEG audio (MP3/MP2/MP1) and the tags found at the end of files: APEv2, ID3v1, Lyrics3
//! (v1 and v2) and an appended ID3v2.4 tag, stacked in any order.
//!
//! The payload starts at the first frame after the leading ID3v2 tags: a frame header is only
//! accepted when the frame it announces ends exactly at the payload's end or is followed by a
//! header of the same version, layer and sample rate. Right after the tags junk (for instance
//! padding a tagger left outside the declared tag size) is skipped for up to [`SCAN_LIMIT`]
//! bytes; without a leading tag the file must start with a frame. The payload ends where the
//! trailing tags begin; frames are not walked to the end, so a truncated last frame stays
//! payload.

use super::{Builder, Format, RegionKind, end_within, id3, le32};

/// How far past the leading tags the first frame is searched for.
const SCAN_LIMIT: usize = 64 << 10;
const APE_LEN: usize = 32;
const APE_MAGIC: &[u8; 8] = b"APETAGEX";
const LYRICS_BEGIN: &[u8; 11] = b"LYRICSBEGIN";
const LYRICS_V1_END: &[u8; 9] = b"LYRICSEND";
const LYRICS_V2_END: &[u8; 9] = b"LYRICS200";
/// Lyrics3 v1 holds at most 5100 bytes of lyrics.
const LYRICS_V1_MAX: usize = 5100;

/// Segments an MPEG audio file whose leading ID3v2 tags (already emitted) end at `lead`.
pub(super) fn parse(data: &[u8], lead: usize, mut b: Builder) -> Option<(Format, Builder)> {
    let (end, tail) = trailing_tags(data, lead)?;
    let first = first_frame(data, lead, end)?;
    b.push(RegionKind::Other, lead, first);
    b.push(RegionKind::Audio, first, end);
    emit_tail(data, &tail, &mut b);
    Some((Format::Mp3, b))
}

/// A tag found at the end of a file.
pub(super) enum Tail {
    /// A tag with its picture ranges.
    Plain {
        start: usize,
        end: usize,
        pictures: Vec<(usize, usize)>,
    },
    /// An appended ID3v2 tag (pictures found when emitted).
    Id3v2 { start: usize, end: usize },
}

/// Finds the tags stacked at the end of `data`, none of them reaching below `floor`. Returns
/// where they begin and the tags in file order; `None` when an APEv2 footer is found but its
/// tag does not fit.
pub(super) fn trailing_tags(data: &[u8], floor: usize) -> Option<(usize, Vec<Tail>)> {
    let mut end = data.len();
    let mut tags = Vec::new();
    loop {
        if let Some((start, pictures)) = ape(data, floor, end)? {
            tags.push(Tail::Plain {
                start,
                end,
                pictures,
            });
            end = start;
        } else if let Some(start) = id3::v1(data, floor, end).or_else(|| lyrics3(data, floor, end))
        {
            tags.push(Tail::Plain {
                start,
                end,
                pictures: Vec::new(),
            });
            end = start;
        } else if let Some(start) = id3::appended_v2(data, floor, end) {
            tags.push(Tail::Id3v2 { start, end });
            end = start;
        } else {
            break;
        }
    }
    tags.reverse();
    Some((end, tags))
}

pub(super) fn emit_tail(data: &[u8], tail: &[Tail], b: &mut Builder) {
    for t in tail {
        match *t {
            Tail::Plain {
                start,
                end,
                ref pictures,
            } => b.push_tag_with_pictures(start, end, pictures),
            Tail::Id3v2 { start, end } => id3::emit_v2_at(data, start, end, b),
        }
    }
}

/// An APEv2 (or v1) tag ending at `end`: `Ok(None)` when there is no footer there, `None` (via
/// the outer option) when the footer announces a tag that does not fit above `floor`.
///
/// Footer: `APETAGEX`, version, size (items + footer), item count, flags (bit 31: a 32-byte
/// header precedes the items), 8 reserved bytes.
#[allow(clippy::type_complexity)]
fn ape(data: &[u8], floor: usize, end: usize) -> Option<Option<(usize, Vec<(usize, usize)>)>> {
    let Some(foot) = end.checked_sub(APE_LEN).filter(|&f| f >= floor) else {
        return Some(None);
    };
    if !data
        .get(foot..end)
        .is_some_and(|f| f.starts_with(APE_MAGIC))
    {
        return Some(None);
    }
    let version = le32(data, foot + 8)?;
    let size = usize::try_from(le32(data, foot + 12)?).ok()?;
    let count = le32(data, foot + 16)?;
    let flags = le32(data, foot + 20)?;
    if size < APE_LEN {
        return None;
    }
    let items = end.checked_sub(size).filter(|&s| s >= floor)?;
    let start = if version >= 2000 && flags & (1 << 31) != 0 {
        let h = items.checked_sub(APE_LEN).filter(|&s| s >= floor)?;
        if !data.get(h..)?.starts_with(APE_MAGIC) {
            return None;
        }
        h
    } else {
        items
    };
    Some(Some((start, ape_pictures(data, items, foot, count))))
}

/// Binary `Cover Art (...)` items between `at` and `end`: value = file name, NUL, image.
fn ape_pictures(data: &[u8], mut at: usize, end: usize, count: u32) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let Some(items) = data.get(..end) else {
        return out;
    };
    for _ in 0..count {
        if out.len() > super::MAX_REGIONS {
            // The build falls back anyway; the list stays bounded.
            break;
        }
        let (Some(len), Some(flags)) = (le32(items, at), le32(items, at + 4)) else {
            break;
        };
        let key_at = at + 8;
        let Some(key_len) = items
            .get(key_at..)
            .and_then(|k| k.iter().take(256).position(|&c| c == 0))
        else {
            break;
        };
        let value_at = key_at + key_len + 1;
        let Some(value_end) = end_within(value_at, len, end) else {
            break;
        };
        let key = &items[key_at..key_at + key_len];
        let binary = (flags >> 1) & 3 == 1;
        if binary && key.len() >= 9 && key[..9].eq_ignore_ascii_case(b"cover art") {
            let value = &items[value_at..value_end];
            if let Some(nul) = value.iter().position(|&c| c == 0) {
                let ps = value_at + nul + 1;
                if ps < value_end {
                    out.push((ps, value_end));
                }
            }
        }
        at = value_end;
    }
    out
}

/// A Lyrics3 tag ending at `end`: v2 (`LYRICSBEGIN` ... 6-digit size, `LYRICS200`) or v1
/// (`LYRICSBEGIN` ... `LYRICSEND`, at most 5100 bytes of lyrics).
fn lyrics3(data: &[u8], floor: usize, end: usize) -> Option<usize> {
    let tail = data.get(floor..end)?;
    if tail.ends_with(LYRICS_V2_END) {
        let digits = tail.get(tail.len().checked_sub(15)?..tail.len() - 9)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let size = digits
            .iter()
            .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
        let start = tail.len().checked_sub(15)?.checked_sub(size)?;
        return tail[start..]
            .starts_with(LYRICS_BEGIN)
            .then_some(floor + start);
    }
    if tail.ends_with(LYRICS_V1_END) {
        let body_end = tail.len() - LYRICS_V1_END.len();
        let window = body_end.saturating_sub(LYRICS_V1_MAX + LYRICS_BEGIN.len());
        let start = tail[window..body_end]
            .windows(LYRICS_BEGIN.len())
            .rposition(|w| w == LYRICS_BEGIN)?;
        return Some(floor + window + start);
    }
    None
}

/// The first frame at `from` (or, after a leading tag, within [`SCAN_LIMIT`] bytes of it),
/// confirmed by its successor or by ending exactly at `to`.
fn first_frame(data: &[u8], from: usize, to: usize) -> Option<usize> {
    let audio = data.get(..to)?;
    let last = if from == 0 {
        0
    } else {
        from.saturating_add(SCAN_LIMIT).min(to)
    };
    (from..=last).find(|&at| confirmed(audio, at))
}

fn confirmed(audio: &[u8], at: usize) -> bool {
    let Some((len, key)) = header_at(audio, at) else {
        return false;
    };
    let Some(next) = at.checked_add(len) else {
        return false;
    };
    if next == audio.len() {
        return true;
    }
    matches!(header_at(audio, next), Some((_, k)) if k == key)
}

/// Frame length and a (version, layer, sample rate) key of the MPEG audio frame header at
/// `at`. Free-format frames (no length in the header) and reserved values are rejected.
fn header_at(d: &[u8], at: usize) -> Option<(usize, u8)> {
    let h: [u8; 4] = super::bytes(d, at)?;
    if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0: MPEG 2.5, 1: reserved, 2: MPEG 2, 3: MPEG 1
    let layer = (h[1] >> 1) & 3; // 0: reserved, 1: III, 2: II, 3: I
    let bitrate_idx = usize::from(h[2] >> 4);
    let rate_idx = usize::from((h[2] >> 2) & 3);
    let padding = usize::from((h[2] >> 1) & 1);
    if version == 1 || layer == 0 || bitrate_idx == 0 || bitrate_idx == 15 || rate_idx == 3 {
        return None;
    }
    if h[3] & 3 == 2 {
        // Reserved emphasis.
        return None;
    }
    const V1: [[u32; 15]; 3] = [
        [
            0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ],
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ],
        [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ],
    ];
    const V2: [[u32; 15]; 2] = [
        [
            0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ],
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ];
    const RATES: [[u32; 3]; 3] = [
        [11025, 12000, 8000],
        [22050, 24000, 16000],
        [44100, 48000, 32000],
    ];
    let mpeg1 = version == 3;
    let layer_no = 4 - usize::from(layer); // 1, 2 or 3
    let kbps = if mpeg1 {
        V1[layer_no - 1][bitrate_idx]
    } else {
        V2[usize::from(layer_no != 1)][bitrate_idx]
    };
    let rate = RATES[usize::from(version.saturating_sub(1))][rate_idx];
    let bits = kbps * 1000;
    let len = match layer_no {
        1 => (12 * bits / rate) as usize * 4 + padding * 4,
        3 if !mpeg1 => (72 * bits / rate) as usize + padding,
        _ => (144 * bits / rate) as usize + padding,
    };
    // Version and layer bits, and the sample rate index above them.
    let key = (h[1] & 0x1e) | ((h[2] & 0x0c) << 4);
    Some((len, key))
}
