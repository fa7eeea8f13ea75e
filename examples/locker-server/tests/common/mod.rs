//! The harness every HTTP test shares: the real server binary on a free loopback port.
#![allow(dead_code)] // each test file uses its own part of the harness

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_locker-server"))
}

/// Creates `name` and returns its API key.
pub fn add_user(store: &Path, name: &str, extra: &[&str]) -> String {
    add_user_json(store, name, extra)["api_key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Creates `name` and returns the whole JSON answer (`api_key`, `subsonic_password`, ...).
pub fn add_user_json(store: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
    let out = bin()
        .arg("--store")
        .arg(store)
        .args(["user", "add", name, "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A port free on loopback a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the server on `store` and waits until it answers `/healthz`.
pub async fn start(store: &Path) -> Server {
    start_with(store, &[]).await
}

/// Starts the server on `store` with more arguments (`--mode single-master`, ...).
pub async fn start_with(store: &Path, extra: &[&str]) -> Server {
    let port = free_port();
    let child = bin()
        .arg("--store")
        .arg(store)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        // The server's log is shown with `TEST_SERVER_LOG=1` (and `RUST_LOG` to choose levels).
        .stderr(if std::env::var_os("TEST_SERVER_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        port,
    };
    // Up to 20 s: opening the store and binding take milliseconds, but CI machines stall.
    for _ in 0..800 {
        if let Ok(r) = reqwest::get(format!("{}/healthz", server.base)).await
            && r.status().is_success()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the server did not come up");
}

/// How many tracks the key's owner lists through the upload API.
pub async fn tracks_of(http: &reqwest::Client, base: &str, key: &str) -> usize {
    let listed: serde_json::Value = http
        .get(format!("{base}/api/v1/tracks"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listed["tracks"].as_array().unwrap().len()
}

/// Creates the operator `name` and returns its key.
pub fn operator_key(store: &Path, name: &str) -> String {
    let out = bin()
        .arg("--store")
        .arg(store)
        .args(["operator", "add", name, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["operator_key"].as_str().unwrap().to_owned()
}
