//! ID3v2 (2.2, 2.3, 2.4) and ID3v1 tags.
//!
//! ID3v2: a 10-byte header (`ID3`, major, revision, flags, 28-bit syncsafe size), the frames and
//! padding (`size` bytes), and in 2.4 an optional 10-byte footer (`3DI`, flag 0x10). Tags may be
//! stacked at the front, and a 2.4 tag with a footer may be appended at the end. Picture frames
//! (`APIC`, 2.2 `PIC`) are located by walking the frames; a frame walk that meets anything odd
//! just stops, leaving the rest of the tag as one tag region: the tag's own size is the only size
//! that decides a boundary.
//!
//! ID3v1: the last 128 bytes start with `TAG`; an Enhanced TAG (`TAG+`, 227 bytes) may precede it.

use super::{Builder, be16, be24, be32, bytes, end_within};

const HEADER_LEN: usize = 10;
const V1_LEN: usize = 128;
const V1_ENHANCED_LEN: usize = 227;

/// A recognised ID3v2 header.
struct Header {
    major: u8,
    flags: u8,
    /// Frames, extended header and padding, without header and footer.
    size: usize,
    /// Header + size + footer.
    total: usize,
}

fn syncsafe(b: [u8; 4]) -> Option<usize> {
    if b.iter().any(|&x| x & 0x80 != 0) {
        return None;
    }
    Some(b.iter().fold(0usize, |acc, &x| (acc << 7) | usize::from(x)))
}

/// Parses a header (`ID3`) or, with `magic = b"3DI"`, a 2.4 footer at `at`.
fn header(data: &[u8], at: usize, magic: &[u8; 3]) -> Option<Header> {
    let h: [u8; HEADER_LEN] = bytes(data, at)?;
    if &h[..3] != magic || !(2..=4).contains(&h[3]) || h[4] == 0xff {
        return None;
    }
    let (major, flags) = (h[3], h[5]);
    let size = syncsafe([h[6], h[7], h[8], h[9]])?;
    let footer = if major == 4 && flags & 0x10 != 0 {
        HEADER_LEN
    } else {
        0
    };
    let total = HEADER_LEN.checked_add(size)?.checked_add(footer)?;
    Some(Header {
        major,
        flags,
        size,
        total,
    })
}

/// Emits the ID3v2 tags at the start of `data` (possibly several, back to back) and returns the
/// offset after them (0 when there is none). `None` when a tag is announced by `ID3` but its
/// header is invalid or the tag runs past the end of the input.
pub(super) fn leading_tags(data: &[u8], b: &mut Builder) -> Option<usize> {
    let mut at = 0usize;
    while data.get(at..)?.starts_with(b"ID3") {
        let h = header(data, at, b"ID3")?;
        let end = end_within(at, h.total, data.len())?;
        emit_v2(data, at, end, &h, b);
        at = end;
    }
    Some(at)
}

/// If an ID3v2.4 tag with a footer ends exactly at `end` (and starts at or after `floor`),
/// returns its start.
pub(super) fn appended_v2(data: &[u8], floor: usize, end: usize) -> Option<usize> {
    let foot_at = end.checked_sub(HEADER_LEN)?;
    let foot = header(data, foot_at, b"3DI")?;
    let start = end.checked_sub(foot.total)?;
    if start < floor {
        return None;
    }
    let h = header(data, start, b"ID3")?;
    (h.major == foot.major && h.size == foot.size && h.total == foot.total).then_some(start)
}

/// Emits the ID3v2 tag occupying `[start, end)`, cutting out its pictures.
pub(super) fn emit_v2_at(data: &[u8], start: usize, end: usize, b: &mut Builder) {
    match header(data, start, b"ID3") {
        Some(h) => emit_v2(data, start, end, &h, b),
        None => b.push(super::RegionKind::Tag, start, end),
    }
}

fn emit_v2(data: &[u8], start: usize, end: usize, h: &Header, b: &mut Builder) {
    let body_end = start
        .saturating_add(HEADER_LEN)
        .saturating_add(h.size)
        .min(end);
    let pictures = data
        .get(start.saturating_add(HEADER_LEN)..body_end)
        .map(|body| v2_pictures(body, h, start + HEADER_LEN))
        .unwrap_or_default();
    b.push_tag_with_pictures(start, end, &pictures);
}

/// Absolute ranges of picture data in the tag body `body` (the bytes after the header, up to
/// the padding's end), which starts at file offset `base`.
fn v2_pictures(body: &[u8], h: &Header, base: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // Tag-level unsynchronisation rewrites every frame; its frame bytes are not the picture's.
    if h.flags & 0x80 != 0 {
        return out;
    }
    let mut at = 0usize;
    if h.flags & 0x40 != 0 {
        let ext = match h.major {
            3 => be32(body, 0).and_then(|n| usize::try_from(n).ok()?.checked_add(4)),
            4 => bytes::<4>(body, 0).and_then(syncsafe),
            // 2.2: bit 6 is compression, whose scheme was never defined.
            _ => None,
        };
        match ext {
            Some(n) if n >= 4 && n <= body.len() => at = n,
            _ => return out,
        }
    }
    let (id_len, frame_header) = if h.major == 2 { (3, 6) } else { (4, 10) };
    // Beyond the cap the build falls back anyway; the list stays bounded.
    while out.len() <= super::MAX_REGIONS
        && let Some(id) = body.get(at..at + id_len)
    {
        if !id
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            // Padding (zeros) or garbage: no more frames we can trust.
            break;
        }
        let Some(size) = frame_size(body, at, h.major, frame_header) else {
            break;
        };
        let data_at = at + frame_header;
        let Some(data_end) = end_within(data_at, size, body.len()) else {
            break;
        };
        let is_picture = if h.major == 2 {
            id == b"PIC"
        } else {
            id == b"APIC"
        };
        if is_picture {
            let flags = if h.major == 2 {
                0
            } else {
                be16(body, at + 8).unwrap_or(0)
            };
            if let Some((ps, pe)) = picture_in_frame(&body[data_at..data_end], h.major, flags) {
                out.push((base + data_at + ps, base + data_at + pe));
            }
        }
        at = data_end;
    }
    out
}

/// The frame's data size. 2.4 sizes are syncsafe, but some writers (iTunes) put plain 32-bit
/// sizes there: when the syncsafe reading does not land on a frame, padding or the end and the
/// plain one does, the plain one is taken.
fn frame_size(body: &[u8], at: usize, major: u8, frame_header: usize) -> Option<usize> {
    match major {
        2 => be24(body, at + 3).and_then(|n| usize::try_from(n).ok()),
        3 => be32(body, at + 4).and_then(|n| usize::try_from(n).ok()),
        _ => {
            let raw = bytes::<4>(body, at + 4)?;
            let plain = usize::try_from(u32::from_be_bytes(raw)).ok()?;
            let lands = |size: usize| {
                at.checked_add(frame_header)
                    .and_then(|x| x.checked_add(size))
                    .is_some_and(|next| frame_boundary(body, next))
            };
            match syncsafe(raw) {
                Some(ss) if lands(ss) || !lands(plain) => Some(ss),
                _ => Some(plain),
            }
        }
    }
}

/// True if `at` is the end of the body, the start of padding, or the start of a frame id.
fn frame_boundary(body: &[u8], at: usize) -> bool {
    match body.get(at..) {
        None => false,
        Some([]) => true,
        // Padding: zeros from here on (looking at a few bytes is enough to tell).
        Some(rest @ [0, ..]) => rest.iter().take(16).all(|&c| c == 0),
        Some(rest) => rest
            .iter()
            .take(4)
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
    }
}

/// The picture bytes inside an APIC/PIC frame's data, relative to the data's start. `None` when
/// the frame is compressed, encrypted or unsynchronised (its bytes are not the picture's), or
/// its fields do not parse.
fn picture_in_frame(frame: &[u8], major: u8, flags: u16) -> Option<(usize, usize)> {
    let mut at = 0usize;
    let [_, format_flags] = flags.to_be_bytes();
    match major {
        3 => {
            // Compression, encryption; grouping adds a byte.
            if format_flags & 0xc0 != 0 {
                return None;
            }
            if format_flags & 0x20 != 0 {
                at += 1;
            }
        }
        4 => {
            // Compression, encryption, unsynchronisation; grouping and data length indicator add
            // 1 and 4 bytes.
            if format_flags & 0x0e != 0 {
                return None;
            }
            if format_flags & 0x40 != 0 {
                at += 1;
            }
            if format_flags & 0x01 != 0 {
                at += 4;
            }
        }
        _ => {}
    }
    let encoding = *frame.get(at)?;
    if encoding > 3 {
        return None;
    }
    at += 1;
    if major == 2 {
        // Three-letter image format.
        at += 3;
    } else {
        // Latin-1 MIME type, NUL-terminated.
        let nul = frame.get(at..)?.iter().position(|&c| c == 0)?;
        at += nul + 1;
    }
    // Picture type.
    at += 1;
    let desc = frame.get(at..)?;
    let desc_len = if encoding == 1 || encoding == 2 {
        // UTF-16: terminated by a 16-bit NUL on a code unit boundary.
        desc.chunks_exact(2).position(|u| u == [0, 0])? * 2 + 2
    } else {
        desc.iter().position(|&c| c == 0)? + 1
    };
    at += desc_len;
    (at < frame.len()).then_some((at, frame.len()))
}

/// If an ID3v1 tag ends at `end` (and starts at or after `floor`), returns its start, including
/// an Enhanced TAG right in front of it.
pub(super) fn v1(data: &[u8], floor: usize, end: usize) -> Option<usize> {
    let start = end.checked_sub(V1_LEN)?;
    if start < floor || !data.get(start..end)?.starts_with(b"TAG") {
        return None;
    }
    let enhanced = start
        .checked_sub(V1_ENHANCED_LEN)
        .filter(|&s| s >= floor && data.get(s..).is_some_and(|t| t.starts_with(b"TAG+")));
    Some(enhanced.unwrap_or(start))
}
