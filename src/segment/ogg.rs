//! Ogg Vorbis and Ogg Opus.
//!
//! A page: `OggS`, version 0, header type (0x02: first page of a stream), granule position,
//! serial, sequence number, CRC, segment count, lacing values (a packet ends at a value below
//! 255), then the body. The codec is named by the first packet (`\x01vorbis`: 3 header packets,
//! `OpusHead`: 2). Audio starts on the page after the one where the last header packet ends
//! and runs to the end of the file, page headers included; the header pages are a tag region.
//! Both codec specifications start audio on a fresh page, so granule positions are not needed
//! (the repaginated fixture shows why they would mislead: a header page on which no packet ends
//! carries granule -1). CRCs are not checked: a damaged page is still the page it is.
//!
//! Cover art in the comment packet (`METADATA_BLOCK_PICTURE=` or `COVERART=`, base64) is cut out
//! as picture regions, split around the page headers it spans. Pages of another stream among
//! the header pages (multiplexed files) are treated as malformed.

use super::{Builder, Format, MAX_REGIONS, RegionKind, end_within, le32};

pub(super) const MAGIC: &[u8; 4] = b"OggS";
const PAGE_HEADER_LEN: usize = 27;
const FIRST_PAGE: u8 = 0x02;

pub(super) struct Page<'a> {
    serial: u32,
    flags: u8,
    lacing: &'a [u8],
    body: usize,
    pub(super) end: usize,
}

pub(super) fn page_at(data: &[u8], at: usize) -> Option<Page<'_>> {
    let h = data.get(at..at.checked_add(PAGE_HEADER_LEN)?)?;
    if &h[..4] != MAGIC || h[4] != 0 {
        return None;
    }
    let lacing_at = at + PAGE_HEADER_LEN;
    let lacing = data.get(lacing_at..lacing_at + usize::from(h[26]))?;
    let body = lacing_at + lacing.len();
    let body_len: usize = lacing.iter().map(|&v| usize::from(v)).sum();
    Some(Page {
        serial: le32(data, at + 14)?,
        flags: h[5],
        lacing,
        body,
        end: end_within(body, body_len, data.len())?,
    })
}

/// Segments an Ogg Vorbis or Opus file.
pub(super) fn parse(data: &[u8], mut b: Builder) -> Option<(Format, Builder)> {
    let first = page_at(data, 0)?;
    if first.flags & FIRST_PAGE == 0 {
        return None;
    }
    let id = data.get(first.body..first.end)?;
    let (format, headers, comment_magic): (_, usize, &[u8]) = if id.starts_with(b"\x01vorbis") {
        (Format::OggVorbis, 3, b"\x03vorbis")
    } else if id.starts_with(b"OpusHead") {
        (Format::OggOpus, 2, b"OpusTags")
    } else {
        return None;
    };
    let serial = first.serial;
    // The comment packet (the second) as (file offset, length) spans, contiguous ones merged.
    let mut comment: Vec<(usize, usize)> = Vec::new();
    let mut done = 0usize;
    let mut at = 0usize;
    while done < headers {
        let page = page_at(data, at)?;
        if page.serial != serial {
            return None;
        }
        let mut off = page.body;
        for &v in page.lacing {
            let v = usize::from(v);
            if done == 1 {
                match comment.last_mut() {
                    Some((s, l)) if *s + *l == off => *l += v,
                    _ => comment.push((off, v)),
                }
            }
            off += v;
            if v < 255 {
                done += 1;
                if done == headers {
                    break;
                }
            }
        }
        at = page.end;
        if comment.len() > MAX_REGIONS {
            // A comment packet in thousands of pieces: as malformed (bounded work and memory).
            return None;
        }
    }
    let pictures = comment_pictures(data, &comment, comment_magic);
    b.push_tag_with_pictures(0, at, &pictures);
    b.push(RegionKind::Audio, at, data.len());
    Some((format, b))
}

/// File ranges of the picture values in the comment packet laid out as `spans`.
fn comment_pictures(data: &[u8], spans: &[(usize, usize)], magic: &[u8]) -> Vec<(usize, usize)> {
    let mut packet = Vec::new();
    for &(s, l) in spans {
        match data.get(s..s + l) {
            Some(bytes) => packet.extend_from_slice(bytes),
            None => return Vec::new(),
        }
    }
    let mut out = Vec::new();
    for (vs, ve) in picture_values(&packet, magic) {
        // Map the packet range [vs, ve) onto the spans.
        let mut packet_at = 0usize;
        for &(s, l) in spans {
            let (lo, hi) = (vs.max(packet_at), ve.min(packet_at + l));
            if lo < hi {
                out.push((s + (lo - packet_at), s + (hi - packet_at)));
            }
            packet_at += l;
        }
    }
    out
}

/// Packet ranges of the values of `METADATA_BLOCK_PICTURE` and `COVERART` comments.
fn picture_values(packet: &[u8], magic: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if !packet.starts_with(magic) {
        return out;
    }
    let Some(mut at) = le32(packet, magic.len())
        .and_then(|vendor| end_within(magic.len() + 4, vendor, packet.len()))
    else {
        return out;
    };
    let Some(count) = le32(packet, at) else {
        return out;
    };
    at += 4;
    for _ in 0..count {
        if out.len() > MAX_REGIONS {
            // The build falls back anyway; the list stays bounded.
            break;
        }
        let Some(end) = le32(packet, at).and_then(|n| end_within(at + 4, n, packet.len())) else {
            break;
        };
        let entry = &packet[at + 4..end];
        if let Some(eq) = entry.iter().position(|&c| c == b'=') {
            let key = &entry[..eq];
            if key.eq_ignore_ascii_case(b"METADATA_BLOCK_PICTURE")
                || key.eq_ignore_ascii_case(b"COVERART")
            {
                let value = at + 4 + eq + 1;
                if value < end {
                    out.push((value, end));
                }
            }
        }
        at = end;
    }
    out
}
