//! A corrupt chunk on disk never reaches a client as data: the verified reader fails, and the
//! server answers with an error status when the first piece it would send fails, or ends the
//! body early (the client sees a cut transfer) when a later one does; never other bytes.

mod common;

use common::{add_user, start};

/// Flips one byte in the middle of every pack file of the store.
fn corrupt_packs(store: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(store.join("packs")).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.len() < 1024 {
            continue;
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        // Written in place (not replaced): the server has the pack mapped.
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(mid as u64)).unwrap();
        f.write_all(&bytes[mid..=mid]).unwrap();
        f.sync_all().unwrap();
        n += 1;
    }
    n
}

/// Bytes the server reads before it sends a status (`READ_PIECE` in src/http.rs).
const FIRST_PIECE: u64 = 256 << 10;
/// Probe spacing: half the chunker's smallest chunk (64 KiB), so every chunk but a short last
/// one holds a probe within `PROBE` of any of its bytes.
const PROBE: u64 = 32 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_is_an_error_status_or_a_cut_body_and_never_other_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let key = add_user(&store, "alice", &[]);
    let server = start(&store).await;
    let http = reqwest::Client::new();
    // 3 MB of incompressible bytes: several chunks, stored raw.
    let mut bytes = vec![0u8; 3_000_000];
    let mut x = 0x1234_5678_9abc_def0u64;
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let len = bytes.len() as u64;
    let url = format!("{}/api/v1/tracks/song.mp3", server.base);
    let r = http
        .put(&url)
        .bearer_auth(&key)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(corrupt_packs(&store) > 0);

    // Which chunks are bad, probed a byte at a time: a probe answers 500 exactly when its chunk
    // fails verification, and otherwise with the track's own byte.
    let mut bad = Vec::new();
    for at in (0..len).step_by(PROBE as usize).chain([len - 1]) {
        let r = http
            .get(&url)
            .bearer_auth(&key)
            .header("range", format!("bytes={at}-{at}"))
            .send()
            .await
            .unwrap();
        if r.status() == 500 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "the stored track failed verification");
            bad.push(at);
        } else {
            assert_eq!(r.status(), 206, "probe at {at}");
            assert_eq!(
                r.bytes().await.unwrap()[..],
                bytes[at as usize..=at as usize]
            );
        }
    }
    let first_bad = *bad.first().expect("a probe found the corrupt chunk");
    assert!(
        first_bad >= FIRST_PIECE + PROBE,
        "the corruption is too early: {bad:?}"
    );

    // A read whose first piece holds a bad probe fails before its status; one with no bad probe
    // within a probe's reach of its first piece sends a status and is cut at the bad chunk.
    let mut seen = (0, 0);
    for range in [
        None,
        Some("bytes=1000000-".to_owned()),
        Some("bytes=-2500000".to_owned()),
        Some(format!("bytes={first_bad}-")),
    ] {
        let start = match range.as_deref() {
            None => 0,
            Some("bytes=1000000-") => 1_000_000,
            Some("bytes=-2500000") => len - 2_500_000,
            Some(_) => first_bad,
        };
        let piece = start..start + FIRST_PIECE;
        let fails_first = bad.iter().any(|b| piece.contains(b));
        let reach = start.saturating_sub(PROBE)..start + FIRST_PIECE + PROBE;
        let cut_later = !bad.iter().any(|b| reach.contains(b)) && bad.iter().any(|&b| b > start);
        let mut req = http.get(&url).bearer_auth(&key);
        if let Some(r) = &range {
            req = req.header("range", r);
        }
        let r = req.send().await.unwrap();
        if r.status() == 500 {
            assert!(
                !cut_later,
                "{range:?}: an error status for a good first piece"
            );
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "the stored track failed verification");
            seen.0 += 1;
            continue;
        }
        assert!(
            !fails_first,
            "{range:?}: {} for a bad first piece",
            r.status()
        );
        assert!(r.status().is_success(), "{range:?}: {}", r.status());
        let mut r = r;
        let mut got = Vec::new();
        let cut = loop {
            match r.chunk().await {
                Ok(Some(piece)) => got.extend_from_slice(&piece),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        // A cut transfer: the client sees an error, not a short "success"; and every byte it
        // got before the cut is the track's own.
        assert!(
            cut,
            "{range:?}: the corrupt track came back whole ({} bytes)",
            got.len()
        );
        assert!((got.len() as u64) < len - start);
        assert!(
            got[..] == bytes[start as usize..start as usize + got.len()],
            "{range:?}: other bytes"
        );
        seen.1 += 1;
    }
    // Both answers were exercised: the last range starts on a bad chunk, the whole-track read
    // starts well before the first one.
    assert!(seen.0 >= 1 && seen.1 >= 1, "{seen:?}");
}
