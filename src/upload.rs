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

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::ids::Fingerprint;
use crate::pipeline::{Cores, Sink, chunk_buffer, chunk_stream};
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

/// Chunks an upload, region by region when `segmenting`, and returns what was learnt.
pub(crate) fn chunk_upload(
    chunker: &Chunker,
    cores: &Cores,
    segmenting: bool,
    window: usize,
    mut reader: impl Read,
    each: &mut Sink<'_>,
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
        // A track record lists at most this many payload ranges (MP4 with many `mdat` boxes);
        // beyond it the track is stored without an audio fingerprint.
        let audio: Vec<(usize, usize)> = seg
            .audio()
            .map(|r| (r.start as usize, r.end as usize))
            .collect();
        let audio = if audio.len() <= crate::format::MAX_AUDIO_RANGES {
            audio
        } else {
            Vec::new()
        };
        let regions: Vec<_> = seg
            .regions
            .iter()
            .map(|r| (r.start as usize, r.end as usize))
            .collect();
        let hashes = chunk_buffer(chunker, cores, &buf, &regions, &audio, each)?;
        let audio = hashes.audio.map(|fingerprint| AudioInfo {
            fingerprint,
            ranges: audio.iter().map(|&(s, e)| (s as u64, e as u64)).collect(),
        });
        return Ok(UploadInfo {
            len: buf.len() as u64,
            fingerprint: hashes.fingerprint,
            format: seg.format,
            audio,
        });
    }
    // Larger than the window: plain streaming chunking of the window and the rest.
    let (len, fingerprint) = chunk_stream(chunker, Cursor::new(buf).chain(reader), each)?;
    Ok(UploadInfo {
        len,
        fingerprint,
        format: Format::Unknown,
        audio: None,
    })
}
