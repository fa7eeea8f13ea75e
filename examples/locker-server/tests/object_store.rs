//! The server on a store whose packs live in a real S3-compatible bucket (SeaweedFS in CI, from
//! the environment as in the library's tests/object_store.rs): uploads through the API, and
//! streams with ranges from a cold cache after a restart, byte for byte.

mod common;

use std::path::PathBuf;

use common::{add_user, start_with};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_ranged_streams_work_unchanged_with_packs_in_a_bucket() {
    let Ok(endpoint) = std::env::var("LOCKERSTORE_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must start an S3 server and set LOCKERSTORE_S3_ENDPOINT"
        );
        eprintln!("no S3 server (set LOCKERSTORE_S3_ENDPOINT): test not run");
        return;
    };
    let bucket = std::env::var("LOCKERSTORE_S3_BUCKET").unwrap_or_else(|_| "packs".into());
    let prefix = format!(
        "server-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let url = format!("s3://{bucket}/{prefix}");
    let bucket_args = [
        "--packs",
        url.as_str(),
        "--endpoint",
        endpoint.as_str(),
        "--region",
        "us-east-1",
        "--allow-http",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // The first command creates the store, on the bucket.
    let out = common::bin()
        .arg("--store")
        .arg(&store)
        .args(bucket_args)
        .args(["user", "add", "alice", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    // A later command on the same store needs no location: the store knows it.
    add_user(&store, "bob", &[]);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let song =
        std::fs::read(fixtures.join("flac-vorbiscomment-picture-padding-metaflac.flac")).unwrap();
    let http = reqwest::Client::new();
    {
        let server = start_with(&store, &["--cache-bytes", "0"]).await;
        let r = http
            .put(format!("{}/api/v1/tracks/Album/song.flac", server.base))
            .bearer_auth(&key)
            .body(song.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    // A restart with the cache dropped: every byte comes from the bucket.
    for e in std::fs::read_dir(store.join("packs")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let server = start_with(&store, &["--cache-bytes", "0"]).await;
    let url = format!("{}/api/v1/tracks/Album/song.flac", server.base);
    let whole = http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await.unwrap(), song);
    let part = http
        .get(&url)
        .bearer_auth(&key)
        .header("range", "bytes=1000-50999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.bytes().await.unwrap(), song[1000..51000]);
    // Account commands open the bucket store too.
    let out = common::bin()
        .arg("--store")
        .arg(&store)
        .args(["user", "list", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
