//! Upload avoidance over HTTP against the real server binary: a proven recording is linked in
//! single-master mode with the prover's own tags, every refusal answers the same bytes, and
//! per-user-copy mode answers a proof of a stored recording exactly as one of an unknown
//! recording.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{Server, bin, start};
use lockerstore::{Challenge, ClientTrack};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The same recording (one LAME encoding) under different tags.
const HOLDER_FILE: &str = "mp3-cbr-id3v23-cover-eyed3.mp3";
const PROVER_FILE: &str = "mp3-cbr-id3v24-padding-mutagen.mp3";

fn fixture(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    std::fs::read(dir.join(name)).unwrap()
}

/// Creates `name` in a store made with license mode `mode`; returns the API key.
fn add_user_in(store: &Path, mode: &str, name: &str) -> String {
    let out = bin()
        .arg("--store")
        .arg(store)
        .args(["--mode", mode, "user", "add", name, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["api_key"].as_str().unwrap().to_owned()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One HTTP answer, as compared byte for byte (all headers but `date`).
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(server: &Server) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: server.base.clone(),
        }
    }

    async fn post(&self, api_key: &str, path: &str, body: &Value) -> Answer {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(api_key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let mut headers: Vec<_> = r
            .headers()
            .iter()
            .filter(|(n, _)| n.as_str() != "date")
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        headers.sort();
        Answer {
            status,
            headers,
            body: r.bytes().await.unwrap().to_vec(),
        }
    }

    /// Asks for a challenge for `track` under `key`; returns it as the library's type.
    async fn challenge(&self, api_key: &str, key: &str, track: &ClientTrack) -> Challenge {
        self.challenge_for(
            api_key,
            key,
            &track.claim.audio_fingerprint.to_hex(),
            track.claim.audio_len,
        )
        .await
    }

    async fn challenge_for(&self, api_key: &str, key: &str, fp: &str, len: u64) -> Challenge {
        let a = self
            .post(
                api_key,
                "/api/v1/avoid/challenge",
                &json!({"key": key, "audio_fingerprint": fp, "audio_len": len}),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{:?}",
            String::from_utf8_lossy(&a.body)
        );
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        let id = v["challenge_id"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        let ranges = v["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
            .collect();
        Challenge {
            id: u64::from_str_radix(id, 16).unwrap(),
            nonce: *blake3::Hash::from_hex(v["nonce"].as_str().unwrap())
                .unwrap()
                .as_bytes(),
            ranges,
        }
    }

    async fn prove(
        &self,
        api_key: &str,
        challenge: &Challenge,
        response: [u8; 32],
        track: &ClientTrack,
    ) -> Answer {
        self.post(
            api_key,
            "/api/v1/avoid/prove",
            &json!({
                "challenge_id": format!("{:016x}", challenge.id),
                "response": blake3::Hash::from_bytes(response).to_hex().as_str(),
                "head": b64(&track.head),
                "tail": b64(&track.tail),
            }),
        )
        .await
    }

    async fn get(&self, api_key: &str, key: &str) -> (StatusCode, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}/api/v1/tracks/{key}", self.base))
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }

    async fn put(&self, api_key: &str, key: &str, bytes: Vec<u8>) {
        let r = self
            .http
            .put(format!("{}/api/v1/tracks/{key}", self.base))
            .bearer_auth(api_key)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

fn assert_refused(a: &Answer) {
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v, json!({"error": "not linked: upload the track"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_master_links_a_proven_recording_with_the_provers_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_in(&store, "single-master", "alice");
    let bob = add_user_in(&store, "single-master", "bob");
    let carol = add_user_in(&store, "single-master", "carol");
    let server = start(&store).await;
    let c = Client::new(&server);
    let holder_bytes = fixture(HOLDER_FILE);
    let prover_bytes = fixture(PROVER_FILE);
    assert_ne!(holder_bytes, prover_bytes);
    c.put(&alice, "Alice/Song.mp3", holder_bytes.clone()).await;
    let holder = ClientTrack::from_file_bytes(&holder_bytes).unwrap();
    let prover = ClientTrack::from_file_bytes(&prover_bytes).unwrap();
    assert_eq!(holder.claim, prover.claim, "one recording");

    // Bob is challenged; carol, who holds the file too, cannot answer bob's challenge (it would
    // link into bob's locker), and her attempt does not use it up.
    let ch = c.challenge(&bob, "Bob/Song.mp3", &prover).await;
    assert_eq!(ch.ranges.len(), 8);
    let stolen = c.prove(&carol, &ch, prover.answer(&ch), &prover).await;
    assert_refused(&stolen);
    assert_eq!(c.get(&carol, "Bob/Song.mp3").await.0, StatusCode::NOT_FOUND);

    // Bob proves: 201 with the track as the upload API answers it, and bob's copy reads back
    // as his own file: his tags around alice's stored payload.
    let linked = c.prove(&bob, &ch, prover.answer(&ch), &prover).await;
    assert_eq!(linked.status, StatusCode::CREATED);
    let v: Value = serde_json::from_slice(&linked.body).unwrap();
    assert_eq!(v["key"], "Bob/Song.mp3");
    assert_eq!(v["size"], prover_bytes.len());
    assert_eq!(
        v["fingerprint"],
        blake3::hash(&prover_bytes).to_hex().as_str()
    );
    assert_eq!(
        v["audio_fingerprint"],
        prover.claim.audio_fingerprint.to_hex()
    );
    let (status, read) = c.get(&bob, "Bob/Song.mp3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, prover_bytes);
    assert_eq!(c.get(&alice, "Alice/Song.mp3").await.1, holder_bytes);

    // A challenge answers once.
    let again = c.prove(&bob, &ch, prover.answer(&ch), &prover).await;
    assert_refused(&again);

    // A wrong answer is refused and links nothing.
    let ch = c.challenge(&bob, "Bob/Wrong.mp3", &prover).await;
    let mut wrong = prover.answer(&ch);
    wrong[0] ^= 1;
    let wrong = c.prove(&bob, &ch, wrong, &prover).await;
    assert_refused(&wrong);
    assert_eq!(c.get(&bob, "Bob/Wrong.mp3").await.0, StatusCode::NOT_FOUND);

    // A recording the store does not hold is refused with the very same answer.
    let unknown = blake3::hash(b"no such recording").to_hex().to_string();
    let ch = c
        .challenge_for(&bob, "Bob/Unknown.mp3", &unknown, prover.claim.audio_len)
        .await;
    let unknown = c.prove(&bob, &ch, prover.answer(&ch), &prover).await;
    assert_refused(&unknown);
    assert_eq!(unknown, wrong);
    assert_eq!(unknown, stolen);
    assert_eq!(unknown, again);

    // Malformed requests are 4xx, never 5xx.
    let fp = prover.claim.audio_fingerprint.to_hex();
    for (path, body) in [
        (
            "/api/v1/avoid/challenge",
            json!({"key": "k", "audio_fingerprint": "zz", "audio_len": 1}),
        ),
        (
            "/api/v1/avoid/challenge",
            json!({"key": "", "audio_fingerprint": fp, "audio_len": 1}),
        ),
        (
            "/api/v1/avoid/challenge",
            json!({"key": "k", "audio_fingerprint": fp, "audio_len": -1}),
        ),
        ("/api/v1/avoid/challenge", json!({"key": "k"})),
        (
            "/api/v1/avoid/prove",
            json!({"challenge_id": "xyz", "response": "00".repeat(32)}),
        ),
        (
            "/api/v1/avoid/prove",
            json!({"challenge_id": "0".repeat(16), "response": "00"}),
        ),
        (
            "/api/v1/avoid/prove",
            json!({"challenge_id": "0".repeat(16), "response": "00".repeat(32), "head": "!!"}),
        ),
        ("/api/v1/avoid/prove", json!([1, 2, 3])),
    ] {
        let a = c.post(&bob, path, &body).await;
        assert!(a.status.is_client_error(), "{path} {body}: {:?}", a.status);
    }
    let r = c
        .http
        .post(format!("{}/api/v1/avoid/prove", c.base))
        .bearer_auth(&bob)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .http
        .post(format!("{}/api/v1/avoid/challenge", c.base))
        .json(&json!({"key": "k", "audio_fingerprint": fp, "audio_len": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Tags are capped at 16 MiB together.
    let a = c
        .post(
            &bob,
            "/api/v1/avoid/prove",
            &json!({
                "challenge_id": "0".repeat(16),
                "response": "00".repeat(32),
                "head": b64(&vec![0u8; 8 << 20]),
                "tail": b64(&vec![0u8; (8 << 20) + 1]),
            }),
        )
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_copy_answers_a_stored_recording_as_an_unknown_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_in(&store, "per-user-copy", "alice");
    let bob = add_user_in(&store, "per-user-copy", "bob");
    let server = start(&store).await;
    let c = Client::new(&server);
    let holder_bytes = fixture(HOLDER_FILE);
    c.put(&alice, "Alice/Song.mp3", holder_bytes).await;
    let prover = ClientTrack::from_file_bytes(&fixture(PROVER_FILE)).unwrap();

    // The store holds the recording and bob answers correctly: refused, as the mode wants.
    let ch = c.challenge(&bob, "Bob/Song.mp3", &prover).await;
    let stored = c.prove(&bob, &ch, prover.answer(&ch), &prover).await;
    // A recording nobody stored.
    let unknown = blake3::hash(b"no such recording").to_hex().to_string();
    let ch = c
        .challenge_for(&bob, "Bob/Other.mp3", &unknown, prover.claim.audio_len)
        .await;
    let nothing = c.prove(&bob, &ch, prover.answer(&ch), &prover).await;
    assert_refused(&stored);
    assert_eq!(stored, nothing, "status, headers and body are identical");
    assert_eq!(c.get(&bob, "Bob/Song.mp3").await.0, StatusCode::NOT_FOUND);
}
