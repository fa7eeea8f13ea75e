//! Crafted uploads cost work, metadata and reads in proportion to their bytes (issue 10, item
//! 6): an MP4 of 1.86 million tiny `mdat` boxes and its equivalents in every container are cut
//! into at most `2 * len / min + 16` chunks, read back exact, and add at most 1 % of their size
//! to the metadata. Memory per put is asserted in `tests/hostile_memory.rs`.

mod common;
#[path = "common/hostile.rs"]
mod hostile_cases;

use common::*;
use lockerstore::{LicenseMode, Options};

fn meta_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("meta.redb")).unwrap().len()
}

#[test]
fn crafted_uploads_are_cut_by_their_bytes_and_read_back_exact() {
    let options = Options::default();
    let min = options.get_chunker().min;
    for case in hostile_cases::cases() {
        let bytes = (case.build)();
        let len = bytes.len() as u64;
        assert!(bytes.len() < options.get_segment_window(), "{}", case.name);
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), LicenseMode::PerUserCopy);
        // The metadata of an almost empty store: redb's own pages, the store's rows.
        store.put(&user("u"), &key("seed"), &b"seed"[..]).unwrap();
        let base = meta_len(dir.path());

        let put = store.put(&user("u"), &key("crafted"), &bytes[..]).unwrap();
        let info = store.track_info(&user("u"), &key("crafted")).unwrap();
        // TARGETS.md: chunks <= 2 x len / min chunk + 16, whatever the upload holds.
        let bound = 2 * len / u64::from(min) + 16;
        assert!(
            info.chunks <= bound && put.chunks == info.chunks,
            "{}: {} chunks for {len} bytes, bound {bound}",
            case.name,
            info.chunks
        );
        assert!(
            store.read_track(&user("u"), &key("crafted")).unwrap() == bytes,
            "{}: read back differs",
            case.name
        );
        // The metadata target is 1 % of the physical bytes; the pattern-filled payloads compress
        // well, so hold the metadata this put added to 1 % of its logical bytes instead.
        let added = meta_len(dir.path()).saturating_sub(base);
        assert!(
            added <= len / 100,
            "{}: meta.redb grew by {added} bytes for a {len}-byte upload",
            case.name
        );
        let listed = store.list(&user("u")).unwrap();
        assert_eq!(listed.len(), 2, "{}", case.name);
        eprintln!(
            "{}: {} chunks (bound {bound}), meta.redb +{added} B, format {}",
            case.name, info.chunks, info.format
        );
    }
}
