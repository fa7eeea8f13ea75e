//! MP4/M4A (ISO base media) and QuickTime: a sequence of top-level boxes (32-bit size and type;
//! size 1: a 64-bit size follows, 16-byte header; size 0: the box runs to the end of the file).
//! The data of each `mdat` box is audio; every other box (`ftyp`, `moov`, `free`, `udta`, ...)
//! and each `mdat` header is a tag region. Cover art (`moov`/`udta`/`meta`/`ilst`/`covr`/`data`
//! items) is cut out of the tag regions. The whole file must parse as boxes with printable type
//! codes; anything else is malformed.

use super::{Builder, Format, RegionKind, be32, be64, bytes};

/// Types a file may start with.
const FIRST_BOXES: [&[u8; 4]; 8] = [
    b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin",
];

/// True if `data` starts with a box of a type an MP4 or QuickTime file starts with.
pub(super) fn sniff(data: &[u8]) -> bool {
    bytes::<4>(data, 4).is_some_and(|t| FIRST_BOXES.contains(&&t))
}

/// A box header inside `[.., limit)`.
struct BoxAt {
    kind: [u8; 4],
    payload: usize,
    end: usize,
}

fn box_at(data: &[u8], at: usize, limit: usize) -> Option<BoxAt> {
    let size32 = be32(data, at)?;
    let kind = bytes::<4>(data, at + 4)?;
    let (size, header) = match size32 {
        0 => (limit.checked_sub(at)?, 8),
        1 => (usize::try_from(be64(data, at + 8)?).ok()?, 16),
        n => (usize::try_from(n).ok()?, 8),
    };
    if size < header {
        return None;
    }
    let end = at.checked_add(size)?;
    (end <= limit && at + header <= end).then_some(BoxAt {
        kind,
        payload: at + header,
        end,
    })
}

/// Segments an MP4 file.
pub(super) fn parse(data: &[u8], mut b: Builder) -> Option<(Format, Builder)> {
    let mut at = 0usize;
    while at < data.len() {
        let bx = box_at(data, at, data.len())?;
        if !bx.kind.iter().all(|c| (0x20..0x7f).contains(c)) {
            return None;
        }
        match &bx.kind {
            b"mdat" => {
                b.push(RegionKind::Tag, at, bx.payload);
                b.push(RegionKind::Audio, bx.payload, bx.end);
            }
            b"moov" | b"udta" | b"meta" => {
                let mut pictures = Vec::new();
                covers(data, &bx, &mut pictures);
                b.push_tag_with_pictures(at, bx.end, &pictures);
            }
            _ => b.push(RegionKind::Tag, at, bx.end),
        }
        at = bx.end;
    }
    Some((Format::Mp4, b))
}

/// Collects, in file order, the image data of `covr` items under `parent` along the path
/// `moov`/`udta`/`meta`/`ilst`/`covr`/`data` (also `meta` directly in `moov`, and `udta` or
/// `meta` at the top level). A malformed child just ends the search in its parent.
fn covers(data: &[u8], parent: &BoxAt, out: &mut Vec<(usize, usize)>) {
    let mut at = parent.payload;
    if &parent.kind == b"meta" {
        // ISO `meta` is a full box (4 bytes of version and flags before the children);
        // QuickTime's is not: its first child (`hdlr`) starts right away.
        if bytes::<4>(data, at + 4) != Some(*b"hdlr") {
            at += 4;
        }
    }
    // Beyond the cap the build falls back anyway; the list stays bounded.
    while at < parent.end && out.len() <= super::MAX_REGIONS {
        let Some(child) = box_at(data, at, parent.end) else {
            return;
        };
        match (&parent.kind, &child.kind) {
            (b"moov", b"udta" | b"meta")
            | (b"udta", b"meta")
            | (b"meta", b"ilst")
            | (b"ilst", b"covr") => covers(data, &child, out),
            (b"covr", b"data") => {
                // Type indicator and locale, then the image.
                let image = child.payload + 8;
                if image < child.end {
                    out.push((image, child.end));
                }
            }
            _ => {}
        }
        at = child.end;
    }
}
