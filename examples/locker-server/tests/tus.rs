//! tus 1.0 resumable uploads through a real HTTP client (reqwest) against the real server
//! binary on loopback: the protocol and its errors, restarts (SIGTERM and SIGKILL) mid-upload,
//! a body cut off mid-way, concurrent PATCHes, quotas and limits, termination, expiry.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::{Server, add_user, start, start_with};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::mpsc;

const OCTETS: &str = "application/offset+octet-stream";

fn song(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// A tus client of one user against one server (whose address changes on restart).
struct Tus {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

impl Tus {
    fn new(server: &Server, api_key: &str) -> Tus {
        Tus {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            api_key: api_key.to_owned(),
        }
    }

    /// A request with the key and `Tus-Resumable`; `path` is a `Location` or any server path.
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .header("Tus-Resumable", "1.0.0")
    }

    /// Creates an upload; returns its `Location`.
    async fn create(&self, length: u64, key: &str) -> String {
        let r = self
            .req(Method::POST, "/api/v1/uploads")
            .header("Upload-Length", length.to_string())
            .header("Upload-Metadata", format!("key {}", b64(key)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(header(&r, "upload-expires").is_some());
        header(&r, "location").unwrap().to_owned()
    }

    fn patch_req(
        &self,
        location: &str,
        offset: u64,
        body: impl Into<reqwest::Body>,
    ) -> RequestBuilder {
        self.req(Method::PATCH, location)
            .header(CONTENT_TYPE, OCTETS)
            .header("Upload-Offset", offset.to_string())
            .body(body)
    }

    async fn patch(&self, location: &str, offset: u64, body: impl Into<reqwest::Body>) -> Response {
        self.patch_req(location, offset, body).send().await.unwrap()
    }

    /// `HEAD`'s `Upload-Offset`, or `None` on 404.
    async fn offset(&self, location: &str) -> Option<u64> {
        let r = self.req(Method::HEAD, location).send().await.unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        Some(header(&r, "upload-offset").unwrap().parse().unwrap())
    }

    async fn track(&self, key: &str) -> Vec<u8> {
        let r = self
            .http
            .get(format!("{}/api/v1/tracks/{key}", self.base))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap().to_vec()
    }
}

/// A request body the test feeds by hand: dropping the sender ends it, sending an `Err`
/// breaks it off.
fn fed_body() -> (mpsc::Sender<Result<Vec<u8>, std::io::Error>>, reqwest::Body) {
    let (tx, mut rx) = mpsc::channel(4);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, reqwest::Body::wrap_stream(stream))
}

fn staged(store: &Path, location: &str, ext: &str) -> PathBuf {
    let id = location.rsplit('/').next().unwrap();
    store.join("server/uploads").join(format!("{id}.{ext}"))
}

fn staged_len(store: &Path, location: &str) -> Option<u64> {
    std::fs::metadata(staged(store, location, "bin"))
        .ok()
        .map(|m| m.len())
}

/// SIGTERM, and the server exits 0 within 10 s.
async fn stop(server: &mut Server) {
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for _ in 0..400 {
        if let Some(s) = server.child.try_wait().unwrap() {
            assert!(s.success(), "{s:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server did not stop within 10 s of SIGTERM");
}

/// Waits until `f` holds, for up to 10 s.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_in_pieces_read_back_exact_and_errors_are_4xx() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let bob = add_user(&store, "bob", &[]);
    let server = start(&store).await;
    let tus = Tus::new(&server, &alice);
    let other = Tus::new(&server, &bob);

    // Discovery.
    let r = tus
        .http
        .request(Method::OPTIONS, format!("{}/api/v1/uploads", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "tus-version"), Some("1.0.0"));
    let ext = header(&r, "tus-extension").unwrap();
    assert!(
        ext.contains("creation") && ext.contains("termination"),
        "{ext}"
    );
    assert!(header(&r, "tus-max-size").unwrap().parse::<u64>().unwrap() > 0);

    // Every request must speak tus 1.0.0; then it must be authenticated.
    let r = tus
        .http
        .post(format!("{}/api/v1/uploads", server.base))
        .bearer_auth(&alice)
        .header("Upload-Length", "10")
        .header("Upload-Metadata", format!("key {}", b64("x.mp3")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&r, "tus-version"), Some("1.0.0"));
    let r = tus
        .http
        .post(format!("{}/api/v1/uploads", server.base))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Create, then append in pieces.
    let key = "Artist/Album/01 Tus.mp3";
    let bytes = song(700_000, 1);
    let loc = tus.create(700_000, key).await;
    let id = loc.strip_prefix("/api/v1/uploads/").unwrap();
    assert!(
        id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let r = tus.req(Method::HEAD, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "upload-offset"), Some("0"));
    assert_eq!(header(&r, "upload-length"), Some("700000"));
    assert_eq!(header(&r, "tus-resumable"), Some("1.0.0"));
    assert_eq!(
        header(&r, "upload-metadata"),
        Some(format!("key {}", b64(key)).as_str())
    );
    let r = tus.patch(&loc, 0, bytes[..200_000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), Some("200000"));

    // A wrong offset conflicts; malformed requests are 4xx; none changes the upload.
    for off in [0, 199_999, 200_001, 700_000] {
        let r = tus.patch(&loc, off, vec![1u8; 10]).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "offset {off}");
    }
    for bad in ["abc", "+200000", "-1", "", "2e5", "99999999999999999999999"] {
        let r = tus
            .req(Method::PATCH, &loc)
            .header(CONTENT_TYPE, OCTETS)
            .header("Upload-Offset", bad)
            .body(vec![1u8; 10])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "Upload-Offset {bad:?}");
    }
    let r = tus
        .req(Method::PATCH, &loc)
        .header(CONTENT_TYPE, OCTETS)
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no Upload-Offset");
    let r = tus
        .req(Method::PATCH, &loc)
        .header("Upload-Offset", "200000")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = tus
        .http
        .patch(format!("{}{loc}", server.base))
        .bearer_auth(&alice)
        .header(CONTENT_TYPE, OCTETS)
        .header("Upload-Offset", "200000")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(tus.offset(&loc).await, Some(200_000));

    // The upload is alice's: bob gets 404 whatever he does, and changes nothing.
    assert_eq!(other.offset(&loc).await, None);
    let r = other.patch(&loc, 200_000, vec![1u8; 10]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = other.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = tus
        .req(
            Method::HEAD,
            "/api/v1/uploads/0123456789abcdef0123456789abcdef",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = tus
        .patch(&loc, 200_000, bytes[200_000..500_000].to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), Some("500000"));

    // A body past the length: refused whole, with a Content-Length or streamed without one.
    let r = tus.patch(&loc, 500_000, vec![7u8; 200_001]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (tx, body) = fed_body();
    let sending = tokio::spawn(tus.patch_req(&loc, 500_000, body).send());
    tx.send(Ok(bytes[500_000..650_000].to_vec())).await.unwrap();
    tx.send(Ok(vec![7u8; 50_001])).await.unwrap();
    drop(tx);
    let r = sending.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(tus.offset(&loc).await, Some(500_000));
    assert_eq!(staged_len(&store, &loc), Some(500_000));

    // The last piece: 204 only once the track is stored, and it says where.
    let r = tus.patch(&loc, 500_000, bytes[500_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), Some("700000"));
    assert_eq!(
        header(&r, "locker-track-location"),
        Some("/api/v1/tracks/Artist/Album/01%20Tus.mp3")
    );
    let fingerprint = blake3::hash(&bytes).to_hex().to_string();
    assert_eq!(
        header(&r, "locker-track-fingerprint"),
        Some(fingerprint.as_str())
    );
    assert_eq!(tus.track(key).await, bytes);
    assert_eq!(staged_len(&store, &loc), None, "the staged bytes are gone");
    // A client that lost that answer learns the outcome again.
    assert_eq!(tus.offset(&loc).await, Some(700_000));
    let r = tus.patch(&loc, 700_000, Vec::new()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&r, "locker-track-fingerprint"),
        Some(fingerprint.as_str())
    );

    // Creation's malformed headers.
    let post = |length: &str, metadata: Option<String>| {
        let mut r = tus
            .req(Method::POST, "/api/v1/uploads")
            .header("Upload-Length", length);
        if let Some(m) = metadata {
            r = r.header("Upload-Metadata", m);
        }
        r.send()
    };
    let meta = || Some(format!("key {}", b64("a.mp3")));
    for (length, metadata, why) in [
        ("abc", meta(), "non-numeric length"),
        ("-1", meta(), "negative length"),
        ("+5", meta(), "signed length"),
        ("0", meta(), "empty upload"),
        ("99999999999999999999999", meta(), "length overflows"),
        ("10", Some("key !!!".into()), "bad base64"),
        ("10", Some("key YQ== YQ==".into()), "two spaces"),
        (
            "10",
            Some(format!("key {}", b64(&"k".repeat(5000)))),
            "metadata over 4 KiB",
        ),
        ("10", Some(format!("title {}", b64("x"))), "no key"),
        ("10", None, "no metadata"),
        (
            "10",
            Some(format!("key {}", b64("a\u{1}b"))),
            "invalid track key",
        ),
        ("10", Some(format!("key {}", b64(""))), "empty track key"),
    ] {
        let r = post(length, metadata).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{why}");
    }
    let r = tus
        .req(Method::POST, "/api/v1/uploads")
        .header("Upload-Metadata", meta().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no Upload-Length");
    let r = post("5000000000000", meta()).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "over Tus-Max-Size"
    );

    // Without `key`, `filename` names the track.
    let small = song(5000, 3);
    let r = post(
        "5000",
        Some(format!("filename {},x", b64("From Filename.flac"))),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc2 = header(&r, "location").unwrap().to_owned();
    let r = tus.patch(&loc2, 0, small.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.track("From%20Filename.flac").await, small);

    // Termination.
    let loc3 = tus.create(100_000, "gone.mp3").await;
    let r = tus.patch(&loc3, 0, song(40_000, 4)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = tus.req(Method::DELETE, &loc3).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.offset(&loc3).await, None);
    let r = tus.patch(&loc3, 40_000, song(60_000, 4)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = tus.req(Method::DELETE, &loc3).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(staged_len(&store, &loc3), None);
    assert!(!staged(&store, &loc3, "json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_after_sigterm_and_after_sigkill_mid_patch() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let mut server = start(&store).await;
    let mut tus = Tus::new(&server, &alice);
    let key = "Resumed/Track.flac";
    let bytes = song(1_500_000, 9);
    let loc = tus.create(1_500_000, key).await;
    let r = tus.patch(&loc, 0, bytes[..400_000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // SIGTERM between PATCHes: the upload resumes from HEAD's offset on the next server.
    stop(&mut server).await;
    let mut server = start(&store).await;
    tus.base = server.base.clone();
    assert_eq!(tus.offset(&loc).await, Some(400_000));
    let r = tus
        .patch(&loc, 400_000, bytes[400_000..900_000].to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // SIGKILL in the middle of a PATCH: bytes written to the staging file but never
    // acknowledged are cut off at the restart, and HEAD gives the last acknowledged offset.
    let (tx, body) = fed_body();
    let sending = tokio::spawn(tus.patch_req(&loc, 900_000, body).send());
    tx.send(Ok(bytes[900_000..1_500_000].to_vec()))
        .await
        .unwrap();
    eventually(
        "the server writes the body to its staging file",
        async || staged_len(&store, &loc).unwrap() > 900_000,
    )
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(tx);
    let _ = sending.await;
    let server = start(&store).await;
    tus.base = server.base.clone();
    assert_eq!(staged_len(&store, &loc), Some(900_000));
    assert_eq!(tus.offset(&loc).await, Some(900_000));
    let r = tus.patch(&loc, 900_000, bytes[900_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.track("Resumed/Track.flac").await, bytes);

    // A stop after the last byte was recorded but before the put committed: the next start
    // finishes the upload before it serves.
    let loc = tus.create(300_000, "Pending.mp3").await;
    let last = song(300_000, 11);
    let r = tus.patch(&loc, 0, last[..299_999].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let mut server = server;
    stop(&mut server).await;
    let mut bin = std::fs::OpenOptions::new()
        .append(true)
        .open(staged(&store, &loc, "bin"))
        .unwrap();
    std::io::Write::write_all(&mut bin, &last[299_999..]).unwrap();
    let json = staged(&store, &loc, "json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    record["offset"] = 300_000.into();
    std::fs::write(&json, serde_json::to_vec(&record).unwrap()).unwrap();
    let server = start(&store).await;
    tus.base = server.base.clone();
    assert_eq!(tus.track("Pending.mp3").await, last);
    let r = tus.req(Method::HEAD, &loc).send().await.unwrap();
    assert_eq!(header(&r, "upload-offset"), Some("300000"));
    assert_eq!(
        header(&r, "locker-track-fingerprint"),
        Some(blake3::hash(&last).to_hex().as_str())
    );
    assert_eq!(staged_len(&store, &loc), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_cut_off_mid_body_keeps_what_arrived() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let server = start(&store).await;
    let tus = Tus::new(&server, &alice);
    let bytes = song(1_000_000, 5);
    let loc = tus.create(1_000_000, "cut.mp3").await;

    // The body stream fails after 700,000 bytes: the client's request fails, the server keeps
    // those bytes (synced and recorded), and the client resumes without sending them again.
    let (tx, body) = fed_body();
    let sending = tokio::spawn(tus.patch_req(&loc, 0, body).send());
    tx.send(Ok(bytes[..700_000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send(Err(std::io::Error::other("the client's disk failed")))
        .await
        .unwrap();
    assert!(sending.await.unwrap().is_err());
    eventually("HEAD reports the received prefix", async || {
        let offset = tus.offset(&loc).await.unwrap();
        assert!(offset <= 700_000, "{offset}");
        offset == 700_000
    })
    .await;
    let r = tus.patch(&loc, 700_000, bytes[700_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.track("cut.mp3").await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_patches_at_once_one_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let server = start(&store).await;
    let tus = Tus::new(&server, &alice);
    let bytes = song(400_000, 6);
    let loc = tus.create(400_000, "race.mp3").await;
    let (tx, body) = fed_body();
    let first = tokio::spawn(tus.patch_req(&loc, 0, body).send());
    tx.send(Ok(bytes[..100_000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The first PATCH holds the upload: the second, at the same offset, conflicts.
    let r = tus.patch(&loc, 0, bytes[..100_000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    tx.send(Ok(bytes[100_000..200_000].to_vec())).await.unwrap();
    drop(tx);
    let r = first.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-offset"), Some("200000"));
    let r = tus.patch(&loc, 200_000, bytes[200_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(tus.track("race.mp3").await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_the_open_upload_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let carol = add_user(&store, "carol", &["--quota", "100KB"]);
    let dave = add_user(&store, "dave", &[]);
    let server = start(&store).await;
    let tus = Tus::new(&server, &carol);

    // An upload that alone exceeds the quota is refused at creation; open uploads count.
    let r = tus
        .req(Method::POST, "/api/v1/uploads")
        .header("Upload-Length", "150000")
        .header("Upload-Metadata", format!("key {}", b64("big.mp3")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let loc = tus.create(60_000, "first.mp3").await;
    let r = tus
        .req(Method::POST, "/api/v1/uploads")
        .header("Upload-Length", "60000")
        .header("Upload-Metadata", format!("key {}", b64("second.mp3")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // The store checks exactly at the end: a track stored meanwhile makes the final put go
    // over, which answers 507 and discards the upload.
    let r = tus
        .http
        .put(format!("{}/api/v1/tracks/other.mp3", server.base))
        .bearer_auth(&carol)
        .body(song(50_000, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = tus.patch(&loc, 0, song(60_000, 2)).await;
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(tus.offset(&loc).await, None);
    assert_eq!(staged_len(&store, &loc), None);
    assert!(!staged(&store, &loc, "json").exists());

    // At most 64 unfinished uploads per user.
    let tus = Tus::new(&server, &dave);
    let mut open = Vec::new();
    for i in 0..64 {
        open.push(tus.create(1000, &format!("t{i}.mp3")).await);
    }
    let r = tus
        .req(Method::POST, "/api/v1/uploads")
        .header("Upload-Length", "1000")
        .header("Upload-Metadata", format!("key {}", b64("t64.mp3")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = tus.req(Method::DELETE, &open[0]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    tus.create(1000, "t64.mp3").await;

    // Finished uploads keep their records (for a client that lost the last answer), at most
    // 256 per user: the 257th drops one of the oldest, and the staging directory stays bounded.
    // (erin is added while the server runs, through its admin socket.)
    let erin = Tus::new(&server, &add_user(&store, "erin", &[]));
    let mut done = Vec::new();
    for i in 0..257 {
        let loc = erin.create(1, &format!("f{i}.mp3")).await;
        let r = erin.patch(&loc, 0, vec![i as u8]).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        done.push(loc);
    }
    // (Records are aged by the second, so "oldest" is one of those made in the first second.)
    let mut gone = Vec::new();
    for (i, loc) in done.iter().enumerate() {
        if erin.offset(loc).await.is_none() {
            assert!(!staged(&store, loc, "json").exists());
            gone.push(i);
        }
    }
    assert_eq!(gone.len(), 1, "one finished record went: {gone:?}");
    assert_ne!(gone[0], 256, "not the newest");
    let key = format!("f{}.mp3", gone[0]);
    assert_eq!(
        erin.track(&key).await,
        [gone[0] as u8],
        "the track itself stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_not_touched_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let server = start_with(&store, &["--upload-expiry", "1s"]).await;
    let tus = Tus::new(&server, &alice);
    let loc = tus.create(100_000, "late.mp3").await;
    let r = tus.patch(&loc, 0, song(10_000, 1)).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(tus.offset(&loc).await, None);
    eventually(
        "the sweeper removes the expired upload's files",
        async || staged_len(&store, &loc).is_none() && !staged(&store, &loc, "json").exists(),
    )
    .await;
    let r = tus.patch(&loc, 10_000, song(90_000, 1)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
