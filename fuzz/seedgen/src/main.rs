//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/`.
//!
//! The encodings are written by hand from the layouts in src/format.rs (docs/DESIGN.md), not with
//! the crate's encoders, so a seed is an independent check of the layout; every seed meant to be
//! valid is then decoded with `lockerstore::fuzzing` and the run fails if the crate disagrees.

use std::fs;
use std::path::{Path, PathBuf};

use lockerstore::PackId;
use lockerstore::fuzzing::{ChunkEntry, PackHeader, PackRow, RecordHeader, StoreFile, TrackRecord};

const RAW: u8 = 0;
const ZSTD: u8 = 1;

fn shared() -> u64 {
    0
}

fn user(n: u64) -> u64 {
    (1 << 56) | n
}

fn hash(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

/// A chunk record: 64-byte header then the stored bytes.
fn record(codec: u8, domain: u64, id: [u8; 32], plain_len: u32, stored: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + stored.len());
    b.extend_from_slice(b"LKCR");
    b.push(codec);
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&domain.to_le_bytes());
    b.extend_from_slice(&id);
    b.extend_from_slice(&plain_len.to_le_bytes());
    b.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    let mut h = blake3::Hasher::new();
    h.update(&b[0..56]);
    if codec != RAW {
        h.update(stored);
    }
    b.extend_from_slice(&h.finalize().as_bytes()[..8]);
    b.extend_from_slice(stored);
    b
}

fn raw_record(domain: u64, plain: &[u8]) -> Vec<u8> {
    record(RAW, domain, hash(plain), plain.len() as u32, plain)
}

/// record_header input: u16 offset selector, then the pack bytes.
fn rh_input(offset_selector: u16, pack: &[u8]) -> Vec<u8> {
    let mut b = offset_selector.to_le_bytes().to_vec();
    b.extend_from_slice(pack);
    b
}

fn track(domain: u64, stored_at: u64, fingerprint: [u8; 32], chunks: &[([u8; 32], u32)]) -> Vec<u8> {
    let len: u64 = chunks.iter().map(|c| u64::from(c.1)).sum();
    let mut b = vec![1u8, 0, 0, 0];
    b.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    b.extend_from_slice(&domain.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&stored_at.to_le_bytes());
    b.extend_from_slice(&fingerprint);
    for (id, l) in chunks {
        b.extend_from_slice(id);
        b.extend_from_slice(&l.to_le_bytes());
    }
    b
}

fn chunk_entry(pack: u64, offset: u64, stored_len: u32, plain_len: u32, codec: u8, refcount: u64) -> [u8; 40] {
    let mut b = [0u8; 40];
    b[0..8].copy_from_slice(&pack.to_le_bytes());
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    b[16..20].copy_from_slice(&stored_len.to_le_bytes());
    b[20..24].copy_from_slice(&plain_len.to_le_bytes());
    b[24] = codec;
    b[32..40].copy_from_slice(&refcount.to_le_bytes());
    b
}

fn pack_row(sealed: bool, committed_len: u64, dead_bytes: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = u8::from(sealed);
    b[8..16].copy_from_slice(&committed_len.to_le_bytes());
    b[16..24].copy_from_slice(&dead_bytes.to_le_bytes());
    b
}

fn store_file(version: u32, store_id: [u8; 16]) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0..8].copy_from_slice(b"LKSTORE\0");
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[12..16].copy_from_slice(&48u32.to_le_bytes());
    b[16..32].copy_from_slice(&store_id);
    let check = hash(&b[0..32]);
    b[32..48].copy_from_slice(&check[..16]);
    b
}

fn pack_header(pack: u64, store_tag: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(b"LKSPACK\0");
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&32u32.to_le_bytes());
    b[16..24].copy_from_slice(&pack.to_le_bytes());
    b[24..32].copy_from_slice(&store_tag.to_le_bytes());
    b
}

fn with_selector(sel: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![sel];
    b.extend_from_slice(body);
    b
}

/// store_ops operations, encoded as the harness reads them.
#[derive(Default)]
struct Ops(Vec<u8>);

impl Ops {
    fn new(flags: u8) -> Ops {
        Ops(vec![flags])
    }
    fn put(mut self, u: u8, k: u8, kind: u8, len: u16, seed: u8) -> Ops {
        self.0.extend_from_slice(&[0, u, k, kind]);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.push(seed);
        self
    }
    fn put_pattern(mut self, u: u8, k: u8, len: u16, pattern: &[u8]) -> Ops {
        self.0.extend_from_slice(&[1, u, k, 4]);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.push(0);
        self.0.push(pattern.len() as u8);
        self.0.extend_from_slice(pattern);
        self
    }
    fn delete(mut self, u: u8, k: u8) -> Ops {
        self.0.extend_from_slice(&[3, u, k]);
        self
    }
    fn read(mut self, u: u8, k: u8) -> Ops {
        self.0.extend_from_slice(&[4, u, k]);
        self
    }
    fn range(mut self, u: u8, k: u8, off: u16, len: u16) -> Ops {
        self.0.extend_from_slice(&[5, u, k]);
        self.0.extend_from_slice(&off.to_le_bytes());
        self.0.extend_from_slice(&len.to_le_bytes());
        self
    }
    fn reopen(mut self) -> Ops {
        self.0.push(6);
        self
    }
    fn set_mode(mut self) -> Ops {
        self.0.push(7);
        self
    }
}

struct Out {
    root: PathBuf,
    written: usize,
}

impl Out {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) {
        assert!(bytes.len() < 10 * 1024, "{target}/{name} is {} bytes", bytes.len());
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
        self.written += 1;
    }
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus"));
    let mut out = Out { root, written: 0 };

    // ---- record_header ----
    let hello = raw_record(user(3), b"hello chunk");
    let check_rh = |input: &[u8], at: u64| {
        let (h, stored) = RecordHeader::decode(PackId(1), &input[2..], 0, at).expect("valid seed");
        assert_eq!(h.encode(stored)[..], input[2 + at as usize..2 + at as usize + 64]);
    };
    let s = rh_input(0, &hello);
    check_rh(&s, 0);
    out.write("record_header", "raw_user3_at0", &s);

    let mut pack = vec![0xAA; 5];
    let plain = b"ID3\x04\x00 some tag text that compresses, some tag text that compresses";
    // Decode does not decompress, so the stored bytes only need the checksum to match: the zstd
    // magic number followed by filler, not a real frame.
    let stored = [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x49, 0x11, 0x02, 0x00, 0x42, 0x43];
    pack.extend_from_slice(&record(ZSTD, shared(), hash(plain), plain.len() as u32, &stored));
    let s = rh_input(5, &pack);
    check_rh(&s, 5);
    out.write("record_header", "zstd_shared_at5", &s);

    let mut pack = hello.clone();
    let second = raw_record(shared(), &[0x55; 300]);
    pack.extend_from_slice(&second);
    let s = rh_input(hello.len() as u16, &pack);
    check_rh(&s, hello.len() as u64);
    out.write("record_header", "second_of_two", &s);

    let s = rh_input(0, &raw_record(user(0x00ff_ffff_ffff_ffff), b""));
    check_rh(&s, 0);
    out.write("record_header", "empty_max_user", &s);

    let s = rh_input(0x8000, &hello);
    assert!(RecordHeader::decode(PackId(1), &s[2..], 0, u64::MAX).is_err());
    out.write("record_header", "offset_u64_max", &s);

    let s = rh_input(0, &hello[..hello.len() - 1]);
    assert!(RecordHeader::decode(PackId(1), &s[2..], 0, 0).is_err());
    out.write("record_header", "truncated_payload", &s);

    // ---- track_record ----
    let fp = hash(b"the whole track");
    let check_tr = |b: &[u8]| {
        let t = TrackRecord::decode(b).expect("valid seed");
        assert_eq!(t.encode(), b);
    };
    let s = track(shared(), 0, hash(b""), &[]);
    check_tr(&s);
    out.write("track_record", "empty_shared", &s);
    let s = track(user(5), 1_700_000_000, fp, &[(hash(b"a"), 10), (hash(b"b"), 20)]);
    check_tr(&s);
    out.write("track_record", "two_chunks_user5", &s);
    let s = track(
        user(1),
        u64::MAX,
        fp,
        &[(hash(b"x"), 16 << 20), (hash(b"y"), 1), (hash(b"x"), 16 << 20)],
    );
    check_tr(&s);
    out.write("track_record", "max_chunks_repeated_id", &s);
    let mut s = track(shared(), 7, fp, &[(hash(b"a"), 10)]);
    s[16] = 11; // len no longer matches the chunks
    assert!(TrackRecord::decode(&s).is_err());
    out.write("track_record", "bad_total", &s);

    // ---- small_rows ----
    let e = chunk_entry(3, 4096, 1000, 2000, ZSTD, 2);
    assert_eq!(ChunkEntry::decode(&e).expect("valid seed").encode(), e);
    out.write("small_rows", "chunk_entry", &with_selector(0, &e));
    let r = pack_row(true, 64 << 20, 12345);
    assert_eq!(PackRow::decode(&r).expect("valid seed").encode(), r);
    out.write("small_rows", "pack_row_sealed", &with_selector(1, &r));
    let f = store_file(1, *b"0123456789abcdef");
    assert!(matches!(StoreFile::decode(&f), Ok(Ok(_))));
    out.write("small_rows", "store_file_v1", &with_selector(2, &f));
    let f2 = store_file(2, [7; 16]);
    assert!(matches!(StoreFile::decode(&f2), Ok(Err(2))));
    out.write("small_rows", "store_file_v2", &with_selector(2, &f2));
    let mut h = pack_header(0x1234, 0xdead_beef_0bad_f00d).to_vec();
    assert!(PackHeader::decode(&h).is_ok());
    h.extend_from_slice(&hello); // a pack: header, then records
    out.write("small_rows", "pack_header_then_record", &with_selector(3, &h));
    out.write("small_rows", "all_on_store_file", &with_selector(4, &f));

    // ---- store_ops ----
    // users 0..3, keys 0..4; kinds: 0 fill, 1 random, 2 variation, 3 text, 4 pattern.
    let seeds = [
        (
            "dedup_per_user",
            Ops::new(0)
                .put(0, 0, 1, 5000, 7)
                .read(0, 0)
                .put(1, 0, 1, 5000, 7)
                .put(0, 1, 1, 5000, 7)
                .delete(0, 0)
                .read(0, 0)
                .reopen()
                .range(1, 0, 100, 300)
                .read(0, 1),
        ),
        (
            "single_master_small_chunks",
            Ops::new(3)
                .put(0, 1, 3, 20000, 1)
                .put(1, 2, 2, 20000, 0)
                .range(1, 2, 4000, 9000)
                .set_mode()
                .put(0, 1, 0, 0, 9)
                .read(0, 1)
                .reopen()
                .delete(0, 1)
                .delete(1, 2)
                .delete(1, 2),
        ),
        (
            "patterns_small_chunks",
            Ops::new(2)
                .put_pattern(2, 3, 30000, b"\xff\xfbT\xc4 frame ")
                .put_pattern(2, 0, 30000, b"\xff\xfbT\xc4 frame ")
                .range(2, 3, 0, 65535)
                .delete(2, 3)
                .put(2, 3, 2, 12345, 1)
                .reopen()
                .read(2, 3),
        ),
        (
            "missing_tracks",
            Ops::new(0).read(2, 2).delete(0, 0).put(0, 0, 0, 100, 1).read(0, 3).delete(0, 1),
        ),
        (
            "replace_many_times",
            Ops::new(1)
                .put(0, 0, 1, 64000, 1)
                .put(0, 0, 1, 64000, 2)
                .put(0, 0, 1, 64000, 1)
                .set_mode()
                .put(0, 0, 1, 64000, 1)
                .reopen()
                .range(0, 0, 63999, 10),
        ),
    ];
    for (name, ops) in seeds {
        out.write("store_ops", name, &ops.0);
    }

    println!("wrote {} seeds under {}", out.written, out.root.display());
}
