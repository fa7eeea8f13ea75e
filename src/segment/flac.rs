//! Native FLAC: `fLaC`, then metadata blocks (1 byte last-flag and type, 24-bit length) up to
//! the one with the last-block flag; the frames follow. The first block must be a 34-byte
//! STREAMINFO and the first frame must start with the frame sync (14 bits `11111111111110`,
//! then a reserved 0), otherwise the file is treated as malformed. PICTURE blocks have their
//! image data cut out as pictures. Tags some taggers append (ID3v1, APEv2) are split off the
//! end.

use super::{Builder, Format, MAX_REGIONS, RegionKind, be24, be32, end_within, mp3};

pub(super) const MAGIC: &[u8; 4] = b"fLaC";
const STREAMINFO: u8 = 0;
const PICTURE: u8 = 6;
const STREAMINFO_LEN: usize = 34;

/// Segments a FLAC stream whose `fLaC` marker is at `at` (after any ID3v2 tags, already emitted).
pub(super) fn parse(data: &[u8], at: usize, mut b: Builder) -> Option<(Format, Builder)> {
    if !data.get(at..)?.starts_with(MAGIC) {
        return None;
    }
    let mut pos = at + MAGIC.len();
    let mut pictures = Vec::new();
    let mut first = true;
    loop {
        let head = *data.get(pos)?;
        let (last, kind) = (head & 0x80 != 0, head & 0x7f);
        let len = usize::try_from(be24(data, pos + 1)?).ok()?;
        let body = pos + 4;
        let end = end_within(body, len, data.len())?;
        if kind == 127 || (first && (kind != STREAMINFO || len != STREAMINFO_LEN)) {
            return None;
        }
        first = false;
        if kind == PICTURE && pictures.len() <= MAX_REGIONS {
            // Beyond the cap the build falls back anyway; the list stays bounded.
            pictures.extend(picture(&data[body..end]).map(|(s, e)| (body + s, body + e)));
        }
        pos = end;
        if last {
            break;
        }
    }
    let (audio_end, tail) = mp3::trailing_tags(data, pos)?;
    if let Some(&[a, b]) = data.get(pos..audio_end).and_then(|a| a.get(..2))
        && (a != 0xff || b & 0xfe != 0xf8)
    {
        return None;
    }
    b.push_tag_with_pictures(at, pos, &pictures);
    b.push(RegionKind::Audio, pos, audio_end);
    mp3::emit_tail(data, &tail, &mut b);
    Some((Format::Flac, b))
}

/// The image data inside a PICTURE block body: picture type, MIME length and string,
/// description length and string, width, height, depth, colours, data length, data.
fn picture(block: &[u8]) -> Option<(usize, usize)> {
    let mime_len = usize::try_from(be32(block, 4)?).ok()?;
    let desc_at = end_within(8, mime_len, block.len())?;
    let desc_len = usize::try_from(be32(block, desc_at)?).ok()?;
    let fields = end_within(desc_at + 4, desc_len, block.len())?;
    let data_len = be32(block, fields + 16)?;
    let data_at = fields + 20;
    let data_end = end_within(data_at, data_len, block.len())?;
    (data_at < data_end).then_some((data_at, data_end))
}
