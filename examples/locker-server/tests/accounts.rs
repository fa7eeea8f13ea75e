//! Account commands against a running server (through its admin socket) and a stopped one
//! (directly on the store): the same operations, the same answers, effective at once.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{add_user_json, bin, start};

fn user_cmd(store: &Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = bin()
        .arg("--store")
        .arg(store)
        .arg("user")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        value,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn put(base: &str, key: &str, n: usize) -> u16 {
    reqwest::Client::new()
        .put(format!("{base}/api/v1/tracks/t{n}.mp3"))
        .bearer_auth(key)
        .body(vec![n as u8; n])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_change_while_the_server_runs_and_while_it_is_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    add_user_json(&store, "alice", &[]);
    let server = start(&store).await;
    let socket = store.join("server/admin.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600,
        "only the operator's account reaches the admin socket"
    );

    // A user added while the server runs can upload at once, within the quota it was given.
    let (ok, bob, err) = user_cmd(&store, &["add", "bob", "--quota", "10KB"]);
    assert!(ok, "{err}");
    let bob_key = bob["api_key"].as_str().unwrap().to_owned();
    assert_eq!(put(&server.base, &bob_key, 6000).await, 201);
    assert_eq!(put(&server.base, &bob_key, 6001).await, 507);
    let (ok, _, err) = user_cmd(&store, &["add", "bob"]);
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = user_cmd(&store, &["add", "bad\u{1}name"]);
    assert!(!ok, "{err}");

    // Quotas: shown with the use, lifted, set again.
    let (ok, q, err) = user_cmd(&store, &["quota", "bob"]);
    assert!(ok, "{err}");
    assert_eq!(q["counted_bytes"], 6000);
    assert_eq!(q["max_bytes"], 10_000);
    let (ok, q, _) = user_cmd(
        &store,
        &["quota", "bob", "--bytes", "none", "--tracks", "5"],
    );
    assert!(ok);
    assert!(q["max_bytes"].is_null());
    assert_eq!(q["max_tracks"], 5);
    assert_eq!(put(&server.base, &bob_key, 6001).await, 201);
    let (ok, _, err) = user_cmd(&store, &["quota", "nobody", "--tracks", "1"]);
    assert!(!ok && err.contains("no user"), "{err}");
    let (ok, _, err) = user_cmd(&store, &["quota", "bob", "--bytes", "lots"]);
    assert!(!ok && err.contains("invalid size"), "{err}");

    // A revoked key stops working at once; the new one works.
    let (ok, renewed, _) = user_cmd(&store, &["revoke-key", "bob"]);
    assert!(ok);
    assert_eq!(put(&server.base, &bob_key, 100).await, 401);
    let new_key = renewed["api_key"].as_str().unwrap();
    assert_eq!(put(&server.base, new_key, 101).await, 201);

    let (ok, list, _) = user_cmd(&store, &["list"]);
    assert!(ok);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(list[1]["counted_tracks"], 3);

    // Stopped: the same commands work on the store directly, with the same answers.
    drop(server);
    let (ok, q, err) = user_cmd(&store, &["quota", "bob"]);
    assert!(ok, "{err}");
    assert_eq!(q["counted_tracks"], 3);
    assert_eq!(q["max_tracks"], 5);
    let (ok, _, err) = user_cmd(&store, &["add", "carol", "--tracks", "1"]);
    assert!(ok, "{err}");
    let server = start(&store).await;
    let (ok, list, _) = user_cmd(&store, &["list"]);
    assert!(ok);
    assert_eq!(list[2]["user"], "carol");
    assert_eq!(list[2]["max_tracks"], 1);
    drop(server);
}
