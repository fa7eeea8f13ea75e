//! Crafted uploads for the bounds tests and the `upload_bounds` fuzz target: valid containers
//! made of one tiny structure repeated, each repetition a region of its own to the segmenter.
//!
//! - MP3: stacked ID3v2.3 tags, each holding one `APIC` frame (tag and picture regions), then
//!   a few MPEG frames.
//! - FLAC: `fLaC`, STREAMINFO, then PICTURE blocks (tag and picture regions), then a frame.
//! - MP4: `ftyp`, then `mdat` boxes (tag and audio regions), with a `free` box between each two
//!   when `between` is set ("many boxes between mdats").
//! - Ogg Vorbis: a comment packet with a `METADATA_BLOCK_PICTURE` spread over tiny pages (the
//!   picture is cut around every page header), then the setup header and one audio page.

use crate::corpus::syncsafe;

/// A container to craft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// Stacked ID3v2 tags with a picture each, before MPEG frames.
    Mp3,
    /// FLAC PICTURE blocks.
    Flac,
    /// MP4 `mdat` boxes.
    Mp4,
    /// Ogg pages carrying a picture comment.
    Ogg,
}

impl Container {
    /// All four.
    pub const ALL: [Container; 4] = [
        Container::Mp3,
        Container::Flac,
        Container::Mp4,
        Container::Ogg,
    ];
}

/// `units` repetitions of `container`'s repeatable structure, each carrying `payload` bytes
/// (at least 1; for Ogg, each page carries `payload` rounded up to a multiple of 255 bytes, one
/// lacing value per 255). `between` adds a `free` box between MP4 `mdat`s.
pub fn crafted(container: Container, units: usize, payload: usize, between: bool) -> Vec<u8> {
    let payload = payload.max(1);
    let fill = |out: &mut Vec<u8>, n: usize| {
        let at = out.len();
        out.extend((0..n).map(|i| (at + i) as u8 | 1));
    };
    let mut out = Vec::new();
    match container {
        Container::Mp4 => {
            out.extend_from_slice(&[0, 0, 0, 20]);
            out.extend_from_slice(b"ftypM4A \0\0\0\0M4A ");
            for i in 0..units {
                if between && i > 0 {
                    out.extend_from_slice(&[0, 0, 0, 8]);
                    out.extend_from_slice(b"free");
                }
                out.extend_from_slice(&((8 + payload) as u32).to_be_bytes());
                out.extend_from_slice(b"mdat");
                fill(&mut out, payload);
            }
        }
        Container::Flac => {
            out.extend_from_slice(b"fLaC");
            out.extend_from_slice(&[u8::from(units == 0) << 7, 0, 0, 34]);
            out.extend_from_slice(&[0u8; 34]);
            for i in 0..units {
                let body = 32 + payload;
                let last = u8::from(i + 1 == units) << 7;
                out.push(last | 6);
                out.extend_from_slice(&(body as u32).to_be_bytes()[1..]);
                out.extend_from_slice(&3u32.to_be_bytes()); // front cover
                out.extend_from_slice(&[0u8; 8]); // no MIME type, no description
                out.extend_from_slice(&[0u8; 16]); // width, height, depth, colours
                out.extend_from_slice(&(payload as u32).to_be_bytes());
                fill(&mut out, payload);
            }
            out.extend_from_slice(&[0xff, 0xf8]);
            fill(&mut out, 62);
        }
        Container::Mp3 => {
            for _ in 0..units {
                let frame = 4 + payload;
                out.extend_from_slice(b"ID3\x03\0\0");
                out.extend_from_slice(&syncsafe(10 + frame));
                out.extend_from_slice(b"APIC");
                out.extend_from_slice(&(frame as u32).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&[0, 0, 3, 0]); // Latin-1, no MIME, cover, no description
                fill(&mut out, payload);
            }
            for _ in 0..4 {
                // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz: 417 bytes.
                out.extend_from_slice(&[0xff, 0xfb, 0x90, 0x64]);
                fill(&mut out, 413);
            }
        }
        Container::Ogg => {
            let mut id = b"\x01vorbis".to_vec();
            id.extend_from_slice(&[0u8; 23]);
            ogg_page(&mut out, 0x02, 0, 0, &[id.len() as u8], &id);
            let per_page = payload.div_ceil(255).min(255);
            let prefix = b"\x03vorbis\0\0\0\0\x01\0\0\0";
            let key = b"METADATA_BLOCK_PICTURE=";
            let value = (units * per_page * 255).saturating_sub(prefix.len() + 4 + key.len());
            let mut packet = prefix.to_vec();
            packet.extend_from_slice(&((key.len() + value) as u32).to_le_bytes());
            packet.extend_from_slice(key);
            packet.resize(packet.len() + value.max(1), b'A');
            let mut lacing = vec![255u8; packet.len() / 255];
            lacing.push((packet.len() % 255) as u8);
            let mut at = 0;
            let mut seq = 1;
            for group in lacing.chunks(per_page) {
                let n: usize = group.iter().map(|&v| usize::from(v)).sum();
                let flags = if at == 0 { 0 } else { 0x01 };
                ogg_page(&mut out, flags, 0, seq, group, &packet[at..at + n]);
                at += n;
                seq += 1;
            }
            ogg_page(&mut out, 0, 0, seq, &[7], b"\x05vorbis");
            let mut audio = Vec::new();
            fill(&mut audio, 200);
            ogg_page(&mut out, 0, 4096, seq + 1, &[200], &audio);
        }
    }
    out
}

fn ogg_page(out: &mut Vec<u8>, flags: u8, granule: u64, seq: u32, lacing: &[u8], body: &[u8]) {
    out.extend_from_slice(b"OggS\0");
    out.push(flags);
    out.extend_from_slice(&granule.to_le_bytes());
    out.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // CRC, not checked
    out.push(lacing.len() as u8);
    out.extend_from_slice(lacing);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{Format, MAX_REGIONS, segment};
    use crate::write::upload::fuzz_bounds_check;

    #[test]
    fn crafted_inputs_parse_as_their_container_up_to_the_cap() {
        for c in Container::ALL {
            let seg = segment(&crafted(c, 100, 10, false));
            let want = match c {
                Container::Mp3 => Format::Mp3,
                Container::Flac => Format::Flac,
                Container::Mp4 => Format::Mp4,
                Container::Ogg => Format::OggVorbis,
            };
            assert_eq!(seg.format, want, "{c:?}");
            assert!(seg.regions.len() >= 100, "{c:?}: {}", seg.regions.len());
            // Past the cap: the fallback, one region.
            let seg = segment(&crafted(c, MAX_REGIONS, 10, true));
            assert_eq!(seg.format, Format::Unknown, "{c:?}");
            assert_eq!(seg.regions.len(), 1, "{c:?}");
        }
    }

    #[test]
    fn crafted_inputs_stay_within_the_bounds() {
        for c in Container::ALL {
            for (units, payload) in [(0, 1), (1, 1), (7, 300), (1_000, 10), (3_000, 1)] {
                let data = crafted(c, units, payload, units % 2 == 1);
                for sizes in 0..4 {
                    fuzz_bounds_check(sizes, false, &data);
                }
                fuzz_bounds_check(0, true, &data);
            }
        }
    }
}
