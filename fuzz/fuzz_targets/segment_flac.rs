//! The format-aware segmenter, aimed at the FLAC parser (ID3v2 tags, fLaC metadata blocks, PICTURE
//! blocks, trailing tags).
//!
//! Input: the upload's bytes, as is. `segment_check(2, data)` runs format detection and then
//! the FLAC parser directly on the same bytes (skipping detection).
//!
//! Properties (asserted inside `segment_check`): never panics; both results are partitions of
//! the input (non-empty regions, ordered, gap-free, from 0 to the input length; an unrecognised
//! input is exactly one `Other` region); the audio fingerprint is BLAKE3 over the audio regions
//! in order, and `None` exactly when there are none; when detection finds the same format as the
//! forced parser, both agree region for region.
//!
//! Seeds: `fuzz/corpus/segment_flac/`, the FLAC fixtures of `tests/fixtures/` with their audio
//! cut to about 1 KiB or one page (tag structure kept), plus generated tag variants; written by
//! `cargo test --lib segment::tests::write_fuzz_seeds -- --ignored`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockerstore::fuzzing::segment_check;

fuzz_target!(|data: &[u8]| {
    segment_check(2, data);
});
