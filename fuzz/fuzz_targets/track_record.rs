//! `TrackRecord::decode` on arbitrary bytes: never panics; on success the record re-encodes to
//! exactly the input and its invariants hold (chunk lengths in range and summing to `len`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockerstore::fuzzing::TrackRecord;

/// `MAX_CHUNK_LEN` in src/format.rs.
const MAX_CHUNK_LEN: u32 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = TrackRecord::decode(data) else {
        return;
    };
    let enc = t.encode();
    assert_eq!(enc.as_slice(), data, "re-encoding differs from the input");
    // Fixed part, audio section (40 + 16 per range), holder (2 + its length), chunk refs.
    let audio = t.audio.as_ref().map_or(0, |a| 40 + 16 * a.ranges.len());
    let holder = t.holder.as_ref().map_or(0, |h| 2 + h.as_str().len());
    assert_eq!(enc.len(), 64 + audio + holder + 36 * t.chunks.len());
    let mut total = 0u64;
    for c in &t.chunks {
        assert!(c.len > 0 && c.len <= MAX_CHUNK_LEN, "chunk length {} accepted", c.len);
        total += u64::from(c.len);
    }
    assert_eq!(total, t.len, "chunk lengths do not add up");
    assert_eq!(TrackRecord::decode(&enc).expect("re-encoded record decodes"), t);
});
