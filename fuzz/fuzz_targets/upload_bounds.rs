//! Bounded work for any upload: the segmenter and the cutting a put runs, on arbitrary bytes and
//! on crafted containers of many tiny structures.
//!
//! Input: byte 0 = flags: bits 0-1 pick the chunker sizes (64/256/1Ki, 256/1Ki/4Ki,
//! 4Ki/16Ki/64Ki, 64Ki/256Ki/1Mi), bit 2 streams the upload (a window smaller than it), bit 3
//! builds a crafted container instead of using the bytes as is. Raw mode: the rest is the
//! upload. Crafted mode: byte 1 picks the container (`% 4`: MP3 stacked ID3v2 tags with a
//! picture each, FLAC PICTURE blocks, MP4 `mdat` boxes, Ogg pages of a picture comment), bytes
//! 2-3 the number of repetitions (u16 LE, `% 8192`), byte 4 the payload per repetition
//! (1..=256), byte 5 bit 0 puts `free` boxes between MP4 `mdat`s; the rest is pairs
//! (u16 LE offset, byte) XORed into the crafted bytes, so the fuzzer can break the structure
//! anywhere.
//!
//! Properties (asserted inside `upload_bounds_check`): at most `MAX_REGIONS` regions, which
//! partition the input; the cut ranges partition it, at most `len / min + 16` of them and at
//! most 16 shorter than `min`; at most `2 * len / min + 16` chunks, which concatenate to the
//! input; the fingerprint and the audio fingerprint are those of the bytes and audio regions.
//!
//! Seeds: `fuzz/corpus/upload_bounds/`, one crafted-mode seed per container and a raw one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockerstore::fuzzing::{Container, crafted, upload_bounds_check};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (sizes, streamed) = (flags & 3, flags & 4 != 0);
    if flags & 8 == 0 {
        upload_bounds_check(sizes, streamed, rest);
        return;
    }
    let [c, n0, n1, payload, between, edits @ ..] = rest else {
        return;
    };
    let container = Container::ALL[usize::from(*c % 4)];
    let units = usize::from(u16::from_le_bytes([*n0, *n1])) % 8192;
    let mut bytes = crafted(container, units, usize::from(*payload) + 1, between & 1 != 0);
    if !bytes.is_empty() {
        for e in edits.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % bytes.len();
            bytes[at] ^= e[2];
        }
    }
    upload_bounds_check(sizes, streamed, &bytes);
});
