//! `RecordHeader::decode` on arbitrary pack bytes at an arbitrary offset.
//!
//! Input layout: two bytes choose the offset, the rest is the pack.
//! * `b0 b1` little-endian u16 `v`; if the top bit is clear the offset is `v` (mostly inside or
//!   just past the pack), if it is set the offset is `u64::MAX - (v & 0x7fff)` (far out of range).
//!
//! Properties: decode never panics; when it succeeds the returned stored bytes are exactly the
//! bytes after the 64-byte header, and re-encoding the header with them reproduces the header
//! bytes found in the pack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockerstore::PackId;
use lockerstore::fuzzing::RecordHeader;

const HEADER_LEN: usize = 64;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let v = u16::from_le_bytes([data[0], data[1]]);
    let at = if v & 0x8000 == 0 {
        u64::from(v)
    } else {
        u64::MAX - u64::from(v & 0x7fff)
    };
    let pack = &data[2..];
    let Ok((h, stored)) = RecordHeader::decode(PackId(7), pack, 0, at) else {
        return;
    };
    let start = usize::try_from(at).expect("a decoded record starts at an addressable offset");
    let body = start + HEADER_LEN;
    assert_eq!(stored.len(), h.stored_len as usize, "stored bytes vs stored_len");
    assert_eq!(h.record_len(), (HEADER_LEN + stored.len()) as u64);
    // The stored bytes are a borrow of the pack right after the header.
    assert_eq!(
        stored.as_ptr() as usize - pack.as_ptr() as usize,
        body,
        "stored bytes do not start right after the header"
    );
    assert_eq!(stored, &pack[body..body + stored.len()]);
    // Encoding the decoded header reproduces the header bytes.
    let enc = h.encode(stored);
    assert_eq!(&enc[..], &pack[start..body], "re-encoded header differs: {h:?}");
    // And the re-encoded record decodes to the same header on its own, under any pack id.
    let mut alone = enc.to_vec();
    alone.extend_from_slice(stored);
    let (h2, stored2) = RecordHeader::decode(PackId(u64::MAX), &alone, 0, 0)
        .expect("a re-encoded record decodes");
    assert_eq!(h2, h);
    assert_eq!(stored2, stored);
    // Any other pack id gives the same answer (the id is only used for error messages).
    let (h3, _) = RecordHeader::decode(PackId(0), pack, 0, at).expect("pack id changed the result");
    assert_eq!(h3, h);
});
