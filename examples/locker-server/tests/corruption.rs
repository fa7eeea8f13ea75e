//! A corrupt chunk on disk never reaches a client as data: the verified reader fails, and the
//! server ends the body early (the client sees a cut transfer) instead of sending other bytes.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_cuts_the_body_short_and_never_sends_other_bytes() {
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

    for range in [None, Some("bytes=1000000-"), Some("bytes=-2500000")] {
        let mut req = http.get(&url).bearer_auth(&key);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{range:?}: {}", r.status());
        let start = match range {
            None => 0,
            Some("bytes=1000000-") => 1_000_000,
            Some(_) => 500_000,
        };
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
        assert!(got.len() < bytes.len() - start);
        assert!(
            got[..] == bytes[start..start + got.len()],
            "{range:?}: other bytes"
        );
    }
}
