//! From an upload stream to chunks: a bounded window for the format-aware segmenter, then FastCDC
//! per region.
//!
//! The first `window` bytes of an upload are buffered (never more: memory per ingest is bounded
//! whatever the upload's size). An upload that ends within the window, which is every ordinary
//! track, is segmented exactly: tags, pictures and audio are chunked each on their own, so chunk
//! boundaries fall at region boundaries and the audio fingerprint is known. A larger upload is
//! chunked as plain bytes from its start (its leading regions could be found from the window, but
//! its trailing tags and its audio fingerprint could not), streamed through FastCDC.
//!
//! Bounded work: the regions are cut as `segment::cut_ranges` says (regions shorter than the
//! minimum chunk merge beyond a budget of 16), so an upload of `len` bytes is never cut into
//! more than [`max_chunks`] chunks whatever it holds; every path counts its chunks and asserts
//! the bound. The segmenter caps its regions at `segment::MAX_REGIONS`. What a put holds is
//! then the window, a few hundred KiB of region lists, and per-chunk state in proportion to
//! `len / min`.

use std::io::{Cursor, Read};

use crate::chunk::pipeline::{Cores, Sink, chunk_buffer, chunk_stream};
use crate::chunk::{Chunker, max_chunks};
use crate::error::{Error, Result};
use crate::ids::Fingerprint;
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

/// Called once with the window (the whole upload, or its leading part for a larger one) before
/// any chunk reaches the sink: the put decides there, from the tags, where the chunks go.
/// `Ok(false)` stops the upload before a chunk is cut.
pub(crate) type Decide<'a> = dyn FnMut(&[u8]) -> Result<bool> + 'a;

/// Chunks an upload, region by region when `segmenting`, and returns what was learnt; `None`
/// when `decide` stopped it. `expected` (a hint, never trusted) sizes the window's buffer at
/// once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunk_upload(
    chunker: &Chunker,
    cores: &Cores,
    segmenting: bool,
    window: usize,
    expected: Option<u64>,
    reader: impl Read,
    decide: &mut Decide<'_>,
    each: &mut Sink<'_>,
) -> Result<Option<UploadInfo>> {
    let mut chunks = 0u64;
    let mut counted = |b: &[u8], id| {
        chunks += 1;
        each(b, id)
    };
    let info = cut_upload(
        chunker,
        cores,
        segmenting,
        window,
        expected,
        reader,
        decide,
        &mut counted,
    )?;
    let Some(info) = info else {
        return Ok(None);
    };
    let bound = max_chunks(info.len, chunker.params.min);
    assert!(
        chunks <= bound,
        "{chunks} chunks for {} bytes, bound {bound}",
        info.len
    );
    Ok(Some(info))
}

#[allow(clippy::too_many_arguments)]
fn cut_upload(
    chunker: &Chunker,
    cores: &Cores,
    segmenting: bool,
    window: usize,
    expected: Option<u64>,
    mut reader: impl Read,
    decide: &mut Decide<'_>,
    each: &mut Sink<'_>,
) -> Result<Option<UploadInfo>> {
    // One byte more than expected: the read that finds the end needs room too.
    let capacity = expected.map_or(0, |n| n.saturating_add(1).min(window as u64 + 1) as usize);
    let mut buf = Vec::with_capacity(capacity);
    fill(&mut reader, &mut buf, window)?;
    let whole = buf.len() < window || fill(&mut reader, &mut buf, 1)? == 0;
    if !decide(&buf)? {
        return Ok(None);
    }
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
        let regions = segment::cut_ranges(&seg.regions, u64::from(chunker.params.min));
        let hashes = chunk_buffer(chunker, cores, &buf, &regions, &audio, each)?;
        let audio = hashes.audio.map(|fingerprint| AudioInfo {
            fingerprint,
            ranges: audio.iter().map(|&(s, e)| (s as u64, e as u64)).collect(),
        });
        return Ok(Some(UploadInfo {
            len: buf.len() as u64,
            fingerprint: hashes.fingerprint,
            format: seg.format,
            audio,
        }));
    }
    // Larger than the window: plain streaming chunking of the window and the rest.
    let (len, fingerprint) = chunk_stream(chunker, Cursor::new(buf).chain(reader), each)?;
    Ok(Some(UploadInfo {
        len,
        fingerprint,
        format: Format::Unknown,
        audio: None,
    }))
}

/// Cuts `data` as a put would (with a small chunker picked by `sizes % 4`: 64/256/1Ki,
/// 256/1Ki/4Ki, 4Ki/16Ki/64Ki or the default 64Ki/256Ki/1Mi; `streamed` gives a window smaller
/// than the input, so the plain streaming path) and panics unless: the segmentation has at most
/// `segment::MAX_REGIONS` regions and partitions the input; the cut ranges partition it, number
/// at most `len / min + 16` and at most 16 of them are shorter than `min`; the chunks number at
/// most `2 * len / min + 16` and concatenate to the input; the fingerprints are those of the
/// input and of its audio regions.
#[doc(hidden)]
#[cfg_attr(not(feature = "test-support"), allow(dead_code))] // only the fuzz targets call it
pub fn fuzz_bounds_check(sizes: u8, streamed: bool, data: &[u8]) {
    let params = [
        (64, 256, 1 << 10),
        (256, 1 << 10, 4 << 10),
        (4 << 10, 16 << 10, 64 << 10),
        (64 << 10, 256 << 10, 1 << 20),
    ][usize::from(sizes % 4)];
    let params = crate::ChunkerParams {
        min: params.0,
        avg: params.1,
        max: params.2,
    };
    let min = u64::from(params.min);
    let len = data.len() as u64;
    let chunker = Chunker { params, seed: 7 };

    let seg = segment::segment(data);
    seg.check(len).expect("regions partition the input");
    assert!(seg.regions.len() <= segment::MAX_REGIONS, "region cap");
    let ranges = segment::cut_ranges(&seg.regions, min);
    let mut at = 0;
    for &(s, e) in &ranges {
        assert!(s == at && e > s, "cut ranges partition the input");
        at = e;
    }
    assert_eq!(at, data.len(), "cut ranges cover the input");
    let short = ranges
        .iter()
        .filter(|(s, e)| ((e - s) as u64) < min)
        .count();
    assert!(short <= segment::MAX_SHORT_RANGES, "{short} short ranges");
    assert!(ranges.len() as u64 <= len / min + segment::MAX_SHORT_RANGES as u64);

    let mut got = Vec::with_capacity(data.len());
    let mut chunks = 0u64;
    let window = if streamed {
        data.len() / 2
    } else {
        data.len() + 1
    };
    let info = chunk_upload(
        &chunker,
        &Cores::new(1),
        true,
        window,
        data.len().is_multiple_of(2).then_some(data.len() as u64),
        data,
        // The tag reader sees whatever the fuzzer makes (it must not hang or run away).
        &mut |window| Ok(crate::tags::rights_holder(window).is_none() || !window.is_empty()),
        &mut |b, id| {
            assert_eq!(id, crate::ids::ChunkId::of(b));
            assert!(b.len() <= params.max as usize);
            got.extend_from_slice(b);
            chunks += 1;
            Ok(())
        },
    )
    .expect("a slice never fails to read")
    .expect("the upload was not stopped");
    assert!(chunks <= max_chunks(len, params.min), "{chunks} chunks");
    assert!(got == data, "chunks concatenate to the input");
    assert_eq!(info.len, len);
    assert_eq!(info.fingerprint, Fingerprint::of(data));
    if !streamed && seg.audio().count() <= crate::format::MAX_AUDIO_RANGES {
        assert_eq!(
            info.audio.map(|a| a.fingerprint),
            segment::audio_fingerprint(data, &seg),
            "audio fingerprint"
        );
    }
}
