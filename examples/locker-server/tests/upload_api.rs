//! The upload API through a real HTTP client (reqwest) against the real server binary on
//! loopback: uploads, byte ranges and validators, isolation between users, quotas.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{add_user, start, tracks_of};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_NONE_MATCH, IF_RANGE, RANGE};

fn song(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_ranges_isolation_and_quotas_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let bob = add_user(&store, "bob", &[]);
    let carol = add_user(&store, "carol", &["--quota", "10KB"]);
    let server = start(&store).await;
    let http = reqwest::Client::new();
    let url = |key: &str| format!("{}/api/v1/tracks/{key}", server.base);
    let bytes = song(300_000, 7);

    // Upload: 201 with the track's facts, and nothing about how many bytes were new.
    let r = http
        .put(url("Artist/Album/01 Song.mp3"))
        .bearer_auth(&alice)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["size"], 300_000);
    assert_eq!(v["fingerprint"], blake3::hash(&bytes).to_hex().as_str());
    assert!(v.get("new_bytes").is_none() && v.get("new_chunks").is_none());

    // The whole track, then ranges, validators and HEAD.
    let key = "Artist/Album/01 Song.mp3";
    let r = http.get(url(key)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()[ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", blake3::hash(&bytes).to_hex()));
    assert_eq!(r.bytes().await.unwrap(), bytes);
    let get_range = |range: &'static str| {
        http.get(url(key))
            .bearer_auth(&alice)
            .header(RANGE, range)
            .send()
    };
    let r = get_range("bytes=0-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()[CONTENT_RANGE], "bytes 0-1/300000");
    assert_eq!(r.bytes().await.unwrap(), bytes[..2]);
    let r = get_range("bytes=123456-").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), bytes[123_456..]);
    let r = get_range("bytes=-1000").await.unwrap();
    assert_eq!(r.headers()[CONTENT_RANGE], "bytes 299000-299999/300000");
    assert_eq!(r.bytes().await.unwrap(), bytes[299_000..]);
    let r = get_range("bytes=300000-").await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()[CONTENT_RANGE], "bytes */300000");
    let r = http
        .get(url(key))
        .bearer_auth(&alice)
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = http
        .get(url(key))
        .bearer_auth(&alice)
        .header(RANGE, "bytes=0-1")
        .header(IF_RANGE, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a stale If-Range gets the whole track"
    );
    assert_eq!(r.bytes().await.unwrap().len(), 300_000);
    let r = http
        .head(url(key))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "300000");

    // Isolation: bob names the same key and reaches only his own (empty) locker.
    for r in [
        http.get(url(key)).bearer_auth(&bob).send().await.unwrap(),
        http.delete(url(key))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(tracks_of(&http, &server.base, &bob).await, 0);
    // No key, or a wrong one: 401.
    assert_eq!(
        http.get(url(key)).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(url(key))
            .bearer_auth("lk_wrong")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Quotas: carol may hold 10 KB; a 20 KB upload is refused and leaves nothing.
    let r = http
        .put(url("big.mp3"))
        .bearer_auth(&carol)
        .body(song(20_000, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(tracks_of(&http, &server.base, &carol).await, 0);

    // Delete, then the track is gone; alice's listing follows.
    let r = http
        .delete(url(key))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = http.get(url(key)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // SIGTERM stops the server cleanly (exit status 0), and the store opens again after it.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut status = None;
    for _ in 0..400 {
        if let Some(s) = server.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let status = status.expect("the server stops within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    let again = start(&store).await;
    let r = http
        .get(format!("{}/api/v1/tracks", again.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// An upload refused before its body is read (a wrong key, a bad name, a bad rights holder, a
/// track over the quota) still gets its answer: the server reads the rest of the body for a
/// bounded time instead of resetting the connection under the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_gets_its_answer_not_a_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &["--quota", "1MB"]);
    let server = start(&store).await;
    let http = reqwest::Client::new();
    let body = song(8 << 20, 3);
    let refusals = [
        ("wrong-key", "a.mp3", StatusCode::UNAUTHORIZED),
        (
            alice.as_str(),
            "a.mp3?rightsHolder=%20EMI",
            StatusCode::BAD_REQUEST,
        ),
        (alice.as_str(), "a%01.mp3", StatusCode::BAD_REQUEST),
        (alice.as_str(), "a.mp3", StatusCode::INSUFFICIENT_STORAGE),
    ];
    for round in 0..8 {
        for (key, path, status) in &refusals {
            let r = http
                .put(format!("{}/api/v1/tracks/{path}", server.base))
                .bearer_auth(key)
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("round {round}, {path}: {e:?}"));
            assert_eq!(r.status(), *status, "round {round}, {path}");
        }
    }
    assert_eq!(tracks_of(&http, &server.base, &alice).await, 0);
}
