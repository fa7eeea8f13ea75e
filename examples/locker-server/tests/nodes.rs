//! Three server nodes on one store: metadata and the server's own state in one PostgreSQL
//! schema, packs in one SeaweedFS bucket (both real servers, from the environment:
//! `LOCKERSTORE_PG_URL` as `.ci/postgres.sh` sets it, `LOCKERSTORE_S3_ENDPOINT` and the AWS
//! credentials as for tests/object_store.rs). Without them the test says so and does nothing,
//! except under `CI`, which must start them.
//!
//! Per license mode: a user added through one node's command line (its admin socket) signs in
//! on every node; an album uploaded by three users at once, each user's tracks spread over the
//! three nodes, streams back byte for byte through every node and is listed by every node's
//! catalogue (Subsonic `search3`, the library API); a star and a web session made on one node
//! count on the others. In single-master mode the store holds the album once (the second and
//! third users' uploads add no chunk and no physical byte); in per-user-copy mode each user
//! holds a copy of their own (three times the chunks); the audit is clean either way.

#[path = "subsonic/client.rs"]
mod client;
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{Server, bin, start_with};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// The PostgreSQL server's URL and the S3 endpoint, or `None` (outside CI) when missing.
fn servers() -> Option<(String, String)> {
    let pg = std::env::var("LOCKERSTORE_PG_URL");
    let s3 = std::env::var("LOCKERSTORE_S3_ENDPOINT");
    match (pg, s3) {
        (Ok(pg), Ok(s3)) => Some((pg, s3)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must start PostgreSQL (LOCKERSTORE_PG_URL, .ci/postgres.sh) and an S3 server \
                 (LOCKERSTORE_S3_ENDPOINT, .ci/seaweedfs.sh)"
            );
            eprintln!(
                "no PostgreSQL or S3 server (set LOCKERSTORE_PG_URL and LOCKERSTORE_S3_ENDPOINT): \
                 test not run"
            );
            None
        }
    }
}

fn unique(label: &str) -> String {
    format!(
        "{label}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A URL whose connections work in a new, empty schema of their own.
fn fresh_schema(server: &str, label: &str) -> String {
    let schema = unique(label);
    // The synchronous client runs a runtime of its own: on a thread apart from the test's.
    let (url, sql) = (server.to_owned(), format!("CREATE SCHEMA {schema}"));
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        client.batch_execute(&sql).unwrap();
    })
    .join()
    .unwrap();
    let sep = if server.contains('?') { '&' } else { '?' };
    format!("{server}{sep}options=-csearch_path%3D{schema}")
}

/// The arguments every command and node of the store takes.
struct Cluster {
    args: Vec<String>,
}

impl Cluster {
    /// Runs a command (`user add alice --json`, ...) with `--store node_dir` when given (then
    /// through that running node's admin socket), else with no node directory of its own.
    fn command(&self, node_dir: Option<&Path>, cmd: &[&str]) -> Value {
        let mut c = bin();
        c.args(&self.args);
        if let Some(dir) = node_dir {
            c.arg("--store").arg(dir);
        }
        let out = c.args(cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

async fn get_json(http: &Client, url: String, key: &str) -> Value {
    let r = http.get(&url).bearer_auth(key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.json().await.unwrap()
}

/// A Subsonic JSON call that must succeed, with the key's credentials.
async fn subsonic(base: &str, key: &str, method: &str, params: &[(&str, &str)]) -> Value {
    client::Client::new(base)
        .ok(method, &client::Auth::Key(key.to_owned()), params)
        .await
}

async fn three_nodes(mode: &str) {
    let Some((pg, endpoint)) = servers() else {
        return;
    };
    let meta = fresh_schema(&pg, &format!("srv_nodes_{}", mode.replace('-', "_")));
    let bucket = std::env::var("LOCKERSTORE_S3_BUCKET").unwrap_or_else(|_| "packs".into());
    let packs = format!("s3://{bucket}/{}", unique("server-nodes"));
    let cluster = Cluster {
        args: [
            "--meta",
            &meta,
            "--packs",
            &packs,
            "--endpoint",
            &endpoint,
            "--region",
            "us-east-1",
            "--allow-http",
            "--mode",
            mode,
        ]
        .map(str::to_owned)
        .to_vec(),
    };
    // The store is made by the first command (no node directory of its own).
    let root = cluster.command(None, &["operator", "add", "root", "--json"]);
    let root = root["operator_key"].as_str().unwrap().to_owned();

    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|i| tmp.path().join(format!("node{i}")))
        .collect();
    let args: Vec<&str> = cluster.args.iter().map(String::as_str).collect();
    let (a, b, c) = tokio::join!(
        start_with(&dirs[0], &args),
        start_with(&dirs[1], &args),
        start_with(&dirs[2], &args)
    );
    let nodes: Vec<Server> = vec![a, b, c];
    let http = Client::new();

    // Users added through node 1's command line (its admin socket) exist on every node.
    let users = ["alice", "bob", "carol"];
    let mut keys = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let issued = cluster.command(Some(&dirs[i % 3]), &["user", "add", user, "--json"]);
        keys.push(issued["api_key"].as_str().unwrap().to_owned());
    }
    for node in &nodes {
        for key in &keys {
            get_json(&http, format!("{}/api/v1/me", node.base), key).await;
        }
    }

    // Alice first: her tracks spread over the three nodes, uploaded at once.
    let album = client::fixtures();
    let upload = |user: usize, shift: usize| {
        let http = http.clone();
        let album = album.clone();
        let key = keys[user].clone();
        let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
        async move {
            let puts = album.into_iter().enumerate().map(|(i, (name, bytes))| {
                let url = format!("{}/api/v1/tracks/Album/{name}", bases[(i + shift) % 3]);
                let (http, key) = (http.clone(), key.clone());
                async move {
                    let r = http
                        .put(&url)
                        .bearer_auth(&key)
                        .body(bytes)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::CREATED, "{url}");
                }
            });
            futures_util::future::join_all(puts).await;
        }
    };
    upload(0, 0).await;
    let stats = |base: String| {
        let (http, root) = (http.clone(), root.clone());
        async move { get_json(&http, format!("{base}/api/v1/admin/stats"), &root).await }
    };
    let first = stats(nodes[0].base.clone()).await;
    assert_eq!(first["tracks"], album.len());
    // Then Bob and Carol at once, each through the nodes in another order.
    tokio::join!(upload(1, 1), upload(2, 2));

    // Every file streams back exact through every node, for every user.
    for node in &nodes {
        for key in &keys {
            for (name, bytes) in &album {
                let r = http
                    .get(format!("{}/api/v1/tracks/Album/{name}", node.base))
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                assert!(
                    r.bytes().await.unwrap() == bytes[..],
                    "{name} through {}",
                    node.base
                );
            }
        }
    }

    // Every node's catalogue lists every user's album, wherever it was uploaded; what it
    // costs to check a catalogue against the store on each read is printed.
    for node in &nodes {
        for key in &keys {
            let started = Instant::now();
            let found = subsonic(
                &node.base,
                key,
                "search3",
                &[("query", ""), ("songCount", "500")],
            )
            .await;
            let took = started.elapsed();
            let songs = found["searchResult3"]["song"].as_array().unwrap().len();
            assert_eq!(songs, album.len(), "search3 through {}", node.base);
            let lib = get_json(&http, format!("{}/api/v1/library", node.base), key).await;
            let tracks: usize = lib["artists"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["albums"].as_array().unwrap())
                .map(|a| a["tracks"].as_array().unwrap().len())
                .sum();
            assert_eq!(tracks, album.len());
            eprintln!("search3 of {songs} songs through {}: {took:?}", node.base);
        }
    }

    // Stars made through node 1 are seen through node 3.
    let found = subsonic(
        &nodes[0].base,
        &keys[0],
        "search3",
        &[("query", ""), ("songCount", "1")],
    )
    .await;
    let song = found["searchResult3"]["song"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    subsonic(&nodes[0].base, &keys[0], "star", &[("id", &song)]).await;
    let starred = subsonic(&nodes[2].base, &keys[0], "getStarred2", &[]).await;
    assert_eq!(starred["starred2"]["song"][0]["id"], song.as_str());

    // A web session signed in through node 2 works through node 3, and ends everywhere.
    let r = http
        .post(format!("{}/api/v1/session", nodes[1].base))
        .json(&json!({ "api_key": keys[1] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()[reqwest::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me = |base: &str| {
        http.get(format!("{base}/api/v1/me"))
            .header(reqwest::header::COOKIE, &cookie)
            .send()
    };
    let r = me(&nodes[2].base).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["user"], "bob");
    cluster.command(None, &["user", "revoke-key", "bob", "--json"]);
    assert_eq!(
        me(&nodes[0].base).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(format!("{}/api/v1/me", nodes[2].base))
            .bearer_auth(&keys[1])
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED,
        "a revoked key stops working on every node"
    );

    // What the store holds, as every node reports it.
    let after = stats(nodes[2].base.clone()).await;
    assert_eq!(after["tracks"], album.len() * 3);
    let (chunks, physical) = (
        first["chunks"].as_u64().unwrap(),
        first["physical_bytes"].as_u64().unwrap(),
    );
    if mode == "single-master" {
        assert_eq!(after["chunks"].as_u64().unwrap(), chunks, "{after}");
        assert_eq!(
            after["physical_bytes"].as_u64().unwrap(),
            physical,
            "{after}"
        );
    } else {
        assert_eq!(after["chunks"].as_u64().unwrap(), 3 * chunks, "{after}");
        assert!(
            after["physical_bytes"].as_u64().unwrap() >= 3 * physical * 99 / 100,
            "{after}"
        );
    }
    for node in &nodes {
        let holders = get_json(&http, format!("{}/api/v1/admin/holders", node.base), &root).await;
        assert_eq!(holders["conforming"], true, "{holders}");
        assert_eq!(stats(node.base.clone()).await["chunks"], after["chunks"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_single_master_store_an_album_once() {
    three_nodes("single-master").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_per_user_copy_keep_each_users_copy() {
    three_nodes("per-user-copy").await;
}
