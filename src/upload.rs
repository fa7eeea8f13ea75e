//! From an upload stream to chunks: a bounded window for the format-aware segmenter, then FastCDC
//! per region.
//!
//! The first `window` bytes of an upload are buffered (never more: memory per ingest is bounded
//! whatever the upload's size). An upload that ends within the window, which is every ordinary
//! track, is segmented exactly: tags, pictures and audio are chunked each on their own, so chunk
//! boundaries fall at region boundaries and the audio fingerprint is known. A larger upload is
//! chunked as plain bytes from its start (its leading regions could be found from the window, but
//! its trailing tags and its audio fingerprint could not), streamed through FastCDC.

use std::io::{Cursor, Read};

use fastcdc::v2020::{FastCDC, Normalization};

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::ids::{ChunkId, Fingerprint};
use crate::segment::{self, Format, RegionKind};

/// What the segmenter learnt about an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UploadInfo {
    pub len: u64,
    pub fingerprint: Fingerprint,
    pub format: Format,
    /// BLAKE3 of the audio payload and its byte ranges in the upload, when recognised.
    pub audio: Option<AudioInfo>,
}

/// The audio payload of a track: its fingerprint and where it lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AudioInfo {
    pub fingerprint: [u8; 32],
    pub ranges: Vec<(u64, u64)>,
}

/// Appends up to `want` more bytes of `reader` to `buf`; returns how many. `read_to_end` retries
/// interrupted reads and grows the buffer without zeroing it first.
fn fill(reader: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> Result<usize> {
    match reader.by_ref().take(want as u64).read_to_end(buf) {
        Ok(n) => Ok(n),
        Err(source) => Err(Error::Upload {
            read: buf.len() as u64,
            source,
        }),
    }
}

/// Appends the FastCDC cut points of `data[start..end]` (one region) to `cuts`.
fn cut_region(
    chunker: &Chunker,
    data: &[u8],
    (start, end): (usize, usize),
    cuts: &mut Vec<(usize, usize)>,
) {
    let p = chunker.params;
    let cdc = FastCDC::with_level_and_seed(
        &data[start..end],
        p.min as usize,
        p.avg as usize,
        p.max as usize,
        Normalization::Level1,
        chunker.seed,
    );
    cuts.extend(cdc.map(|c| (start + c.offset, start + c.offset + c.length)));
}

/// BLAKE3 of every chunk and of the whole buffer, on two threads: the track fingerprint on one
/// core, the chunk ids on the other (BLAKE3 runs at about 2 GB/s per core here, so this halves
/// the hashing time of a put).
fn hash_all(buf: &[u8], cuts: &[(usize, usize)]) -> (Fingerprint, Vec<ChunkId>) {
    let chunk_ids = || cuts.iter().map(|&(s, e)| ChunkId::of(&buf[s..e])).collect();
    if buf.len() < 1 << 20 {
        return (Fingerprint::of(buf), chunk_ids());
    }
    std::thread::scope(|s| {
        let whole = s.spawn(|| Fingerprint::of(buf));
        let ids = chunk_ids();
        (whole.join().expect("hashing thread panicked"), ids)
    })
}

/// Chunks an upload, region by region when `segmenting`, and returns what was learnt.
pub(crate) fn chunk_upload(
    chunker: &Chunker,
    segmenting: bool,
    window: usize,
    mut reader: impl Read,
    each: &mut dyn FnMut(&[u8], ChunkId) -> Result<()>,
) -> Result<UploadInfo> {
    let mut buf = Vec::new();
    fill(&mut reader, &mut buf, window)?;
    let whole = buf.len() < window || fill(&mut reader, &mut buf, 1)? == 0;
    if whole {
        let seg = if segmenting {
            segment::segment(&buf)
        } else {
            segment::Segmentation {
                format: Format::Unknown,
                regions: (!buf.is_empty())
                    .then_some(segment::Region {
                        kind: RegionKind::Other,
                        start: 0,
                        end: buf.len() as u64,
                    })
                    .into_iter()
                    .collect(),
            }
        };
        let mut cuts = Vec::new();
        for r in &seg.regions {
            cut_region(chunker, &buf, (r.start as usize, r.end as usize), &mut cuts);
        }
        let (fingerprint, ids) = hash_all(&buf, &cuts);
        for (&(s, e), id) in cuts.iter().zip(ids) {
            each(&buf[s..e], id)?;
        }
        // A track record lists at most this many payload ranges (MP4 with many `mdat` boxes);
        // beyond it the track is stored without an audio fingerprint.
        let ranges = seg
            .regions
            .iter()
            .filter(|r| r.kind == RegionKind::Audio)
            .count();
        let audio = segment::audio_fingerprint(&buf, &seg)
            .filter(|_| ranges <= crate::format::MAX_AUDIO_RANGES)
            .map(|fingerprint| AudioInfo {
                fingerprint,
                ranges: seg
                    .regions
                    .iter()
                    .filter(|r| r.kind == RegionKind::Audio)
                    .map(|r| (r.start, r.end))
                    .collect(),
            });
        return Ok(UploadInfo {
            len: buf.len() as u64,
            fingerprint,
            format: seg.format,
            audio,
        });
    }
    // Larger than the window: plain streaming chunking of the window and the rest.
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    for chunk in chunker.chunks(Cursor::new(buf).chain(reader)) {
        let chunk = chunk?;
        hasher.update(&chunk);
        len += chunk.len() as u64;
        each(&chunk, ChunkId::of(&chunk))?;
    }
    Ok(UploadInfo {
        len,
        fingerprint: Fingerprint::from(hasher.finalize()),
        format: Format::Unknown,
        audio: None,
    })
}
