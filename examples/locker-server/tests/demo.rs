//! The quick start: `locker-server --store DIR demo` imports the repository's real music
//! fixtures for the user `demo`, prints its credentials once, and serves; run again, it imports
//! nothing twice and keeps serving the same locker.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{bin, free_port};

async fn tracks(base: &str, key: &str) -> usize {
    common::tracks_of(&reqwest::Client::new(), base, key).await
}

/// Starts `demo`, returns the child, its base URL and what it printed up to "serving".
async fn demo(store: &std::path::Path) -> (common::Server, Vec<String>) {
    let port = free_port();
    let mut child = bin()
        .arg("--store")
        .arg(store)
        .args(["--listen", &format!("127.0.0.1:{port}"), "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = common::Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        port,
    };
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout).lines();
        for line in reader.by_ref() {
            let line = line.unwrap();
            let done = line.starts_with("serving");
            lines.push(line);
            if done {
                break;
            }
        }
        // Keep draining: the demo prints more after "serving", and a closed pipe would fail it.
        std::thread::spawn(move || reader.for_each(drop));
        lines
    })
    .await
    .unwrap();
    for _ in 0..800 {
        if let Ok(r) = reqwest::get(format!("{}/healthz", server.base)).await
            && r.status().is_success()
        {
            return (server, lines);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the demo server did not come up: {lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_imports_the_fixtures_once_and_serves_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let fixtures = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            [".mp3", ".flac", ".m4a", ".ogg", ".opus"]
                .iter()
                .any(|x| name.ends_with(x))
        })
        .count();
    assert!(fixtures >= 20);

    let (server, lines) = demo(&store).await;
    let key = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("api key"))
        .expect("the demo prints the API key")
        .trim()
        .to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{fixtures} tracks imported")))
    );
    assert_eq!(tracks(&server.base, &key).await, fixtures);
    drop(server);

    // Again: no new credentials, nothing imported twice, the same locker.
    let (server, lines) = demo(&store).await;
    assert!(!lines.iter().any(|l| l.contains("api key")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("0 tracks imported")));
    assert_eq!(tracks(&server.base, &key).await, fixtures);
}
