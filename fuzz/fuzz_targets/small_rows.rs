//! The fixed-size decoders: `ChunkEntry` (40 bytes), `PackRow` (32 bytes), `StoreFile` (48 bytes,
//! variable-length input) and `PackHeader` (32-byte prefix of a longer input).
//!
//! Input layout: the first byte selects the decoder (low two bits) and the rest is its input; a
//! fixed-size decoder takes the first N bytes (zero-padded when shorter). With the selector's
//! bit 2 set, every decoder is run on the same bytes instead, which lets the fuzzer share inputs.
//!
//! Properties: never panics; when a decode succeeds, encoding the value gives back the bytes
//! the decoder read (all bytes of these formats are either fields or checked-zero/constant).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockerstore::fuzzing::{ChunkEntry, PackHeader, PackRow, StoreFile};

/// `STORE_FORMAT_VERSION` in src/format.rs.
const STORE_FORMAT_VERSION: u32 = 1;

fn fixed<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = b.len().min(N);
    a[..n].copy_from_slice(&b[..n]);
    a
}

fn chunk_entry(b: &[u8]) {
    let a: [u8; 40] = fixed(b);
    if let Ok(e) = ChunkEntry::decode(&a) {
        assert_eq!(e.encode(), a, "ChunkEntry round trip: {e:?}");
        assert_eq!(e.record_len(), 64 + u64::from(e.stored_len));
    }
}

fn pack_row(b: &[u8]) {
    let a: [u8; 32] = fixed(b);
    if let Ok(r) = PackRow::decode(&a) {
        assert_eq!(r.encode(), a, "PackRow round trip: {r:?}");
    }
}

fn store_file(b: &[u8]) {
    match StoreFile::decode(b) {
        Ok(Ok(f)) => {
            assert_eq!(b.len(), 48, "StoreFile accepted {} bytes", b.len());
            assert_eq!(&f.encode()[..], b, "StoreFile round trip: {f:?}");
            assert!(f.version >= 1 && f.version <= STORE_FORMAT_VERSION);
        }
        Ok(Err(version)) => {
            // A version this build does not read: reported, never decoded.
            assert!(version == 0 || version > STORE_FORMAT_VERSION, "version {version} refused");
        }
        Err(_) => {}
    }
}

fn pack_header(b: &[u8]) {
    if let Ok(h) = PackHeader::decode(b) {
        assert!(b.len() >= 32);
        assert_eq!(&h.encode()[..], &b[..32], "PackHeader round trip: {h:?}");
        assert_eq!(PackHeader::decode(&h.encode()).expect("re-encoded header decodes"), h);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 4 != 0 {
        chunk_entry(rest);
        pack_row(rest);
        store_file(rest);
        pack_header(rest);
        return;
    }
    match sel & 3 {
        0 => chunk_entry(rest),
        1 => pack_row(rest),
        2 => store_file(rest),
        _ => pack_header(rest),
    }
});
