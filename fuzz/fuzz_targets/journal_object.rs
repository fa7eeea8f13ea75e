//! The metadata journal's objects (`meta/<n>.log` and `.ckpt` in a bucket, docs/DESIGN.md
//! 13.8): the op decoder behind a valid header and checksum.
//!
//! Input layout: the op count (u16 LE), then op bytes.
//!
//! Properties: never panics; a decoded object encodes back to the same bytes; anything else is
//! `Corrupted`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lockerstore::fuzzing::journal_check(data);
});
