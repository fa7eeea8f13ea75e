//! The web pages' server side through a real HTTP client against the real binary: sessions
//! (sign-in by key and by password, expiry, sign-out, revocation), CSRF and origin checks, the
//! player's JSON (usage, library, covers) with isolation between users, the operator API and
//! its credentials, and the pages' headers. The pages themselves run in headless Chromium
//! (clients/test_web_*.py).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{add_user_json, bin, start_with};
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, ETAG, IF_NONE_MATCH, SET_COOKIE};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    std::fs::read(dir.join(name)).unwrap()
}

/// A signed-in browser: its cookie and its CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

impl Browser {
    fn send(&self, rb: RequestBuilder) -> RequestBuilder {
        rb.header(COOKIE, &self.cookie)
    }

    fn with_csrf(&self, rb: RequestBuilder) -> RequestBuilder {
        self.send(rb).header("x-csrf-token", &self.csrf)
    }
}

async fn sign_in(http: &Client, url: &str, body: Value) -> Result<Browser, StatusCode> {
    let r = http.post(url).json(&body).send().await.unwrap();
    if r.status() != StatusCode::OK {
        return Err(r.status());
    }
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(part), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    Ok(Browser {
        cookie,
        csrf: v["csrf"].as_str().unwrap().to_owned(),
    })
}

fn operator_key(store: &std::path::Path, name: &str) -> String {
    let out = bin()
        .arg("--store")
        .arg(store)
        .args(["operator", "add", name, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["operator_key"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_isolation_and_the_players_json() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_json(&store, "alice", &["--quota", "5MB"]);
    let bob = add_user_json(&store, "bob", &[]);
    let server = start_with(&store, &[]).await;
    let http = Client::new();
    let base = &server.base;
    let session_url = format!("{base}/api/v1/session");

    // Sign-in by key, and by user name and Subsonic password; wrong ones get 401.
    let a = sign_in(&http, &session_url, json!({ "api_key": alice["api_key"] }))
        .await
        .unwrap();
    let a2 = sign_in(
        &http,
        &session_url,
        json!({ "user": "alice", "password": alice["subsonic_password"] }),
    )
    .await
    .unwrap();
    for wrong in [
        json!({ "api_key": "lk_nope" }),
        json!({ "user": "alice", "password": bob["subsonic_password"] }),
        json!({ "user": "nobody", "password": "" }),
    ] {
        assert_eq!(
            sign_in(&http, &session_url, wrong).await.err(),
            Some(StatusCode::UNAUTHORIZED)
        );
    }
    assert_eq!(
        sign_in(
            &http,
            &session_url,
            json!({ "api_key": "x", "user": "alice" })
        )
        .await
        .err(),
        Some(StatusCode::BAD_REQUEST)
    );
    // A sign-in from another site's page is forgery too.
    let r = http
        .post(&session_url)
        .header("origin", "http://evil.example")
        .json(&json!({ "api_key": alice["api_key"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let b = sign_in(&http, &session_url, json!({ "api_key": bob["api_key"] }))
        .await
        .unwrap();

    // The session tells the page its CSRF token back (after a reload).
    let v: Value = a
        .send(http.get(&session_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["user"], "alice");
    assert_eq!(v["csrf"], a.csrf.as_str());

    // Alice uploads with her key; her session reads her usage, library and covers.
    let with_cover = fixture("mp3-cbr-id3v23-cover-eyed3.mp3");
    for (key, bytes) in [
        ("Covered/a.mp3", with_cover.clone()),
        ("Plain/b.flac", fixture("flac-plain-flac.flac")),
    ] {
        let r = http
            .put(format!("{base}/api/v1/tracks/{key}"))
            .bearer_auth(alice["api_key"].as_str().unwrap())
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let me: Value = a
        .send(http.get(format!("{base}/api/v1/me")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "alice");
    assert_eq!(me["counted_tracks"], 2);
    assert_eq!(me["max_bytes"], 5_000_000);
    let lib: Value = a
        .send(http.get(format!("{base}/api/v1/library")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tracks: Vec<&Value> = lib["artists"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["albums"].as_array().unwrap())
        .flat_map(|al| al["tracks"].as_array().unwrap())
        .collect();
    assert_eq!(tracks.len(), 2, "{lib}");
    let covered = tracks.iter().find(|t| t["key"] == "Covered/a.mp3").unwrap();
    let cover_id = covered["cover"].as_str().unwrap().to_owned();
    let r = a
        .send(http.get(format!("{base}/api/v1/covers/{cover_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("image/")
    );
    let picture = r.bytes().await.unwrap();
    assert!(picture.len() > 100);
    let title = covered["title"].as_str().unwrap().to_owned();
    let found: Value = a
        .send(http.get(format!("{base}/api/v1/library")))
        .query(&[("q", title.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        found["artists"][0]["albums"][0]["tracks"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{found}"
    );
    // The track streams to the session with ranges, as to a key.
    let r = a
        .send(http.get(format!("{base}/api/v1/tracks/Covered/a.mp3")))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &with_cover[..10]);

    // Bob's session reaches nothing of Alice's: track, cover, library.
    for url in [
        format!("{base}/api/v1/tracks/Covered/a.mp3"),
        format!("{base}/api/v1/covers/{cover_id}"),
    ] {
        let r = b.send(http.get(&url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{url}");
    }
    let lib: Value = b
        .send(http.get(format!("{base}/api/v1/library")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lib["artists"], json!([]));

    // State changes through a session need its CSRF token, and this origin.
    let del = |br: &Browser| {
        br.send(http.request(Method::DELETE, format!("{base}/api/v1/tracks/Plain/b.flac")))
    };
    assert_eq!(
        del(&a).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let r = del(&a)
        .header("x-csrf-token", &a2.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another session's token");
    let r = a
        .with_csrf(http.delete(format!("{base}/api/v1/tracks/Plain/b.flac")))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = a
        .with_csrf(http.delete(format!("{base}/api/v1/tracks/Plain/b.flac")))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Bob's token with Bob's cookie deletes in Bob's locker only: nothing there.
    let r = b
        .with_csrf(http.delete(format!("{base}/api/v1/tracks/Plain/b.flac")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = a
        .with_csrf(http.delete(format!("{base}/api/v1/tracks/Plain/b.flac")))
        .header("origin", base.as_str())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A user's session is no operator's.
    let r = a
        .send(http.get(format!("{base}/api/v1/admin/stats")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Sign-out ends that session only.
    let r = a.with_csrf(http.delete(&session_url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let me = |br: &Browser| br.send(http.get(format!("{base}/api/v1/me")));
    assert_eq!(
        me(&a).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&a2).send().await.unwrap().status(), StatusCode::OK);

    // Sign-in takes JSON only (no HTML form of another site can send it).
    let r = http
        .post(&session_url)
        .header("content-type", "text/plain")
        .body(json!({ "api_key": alice["api_key"] }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Revoking Alice's keys ends her sessions, and renews her Subsonic password, which signs
    // in too.
    let out = bin()
        .arg("--store")
        .arg(&store)
        .args(["user", "revoke-key", "alice", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let renewed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        me(&a2).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&b).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        sign_in(
            &http,
            &session_url,
            json!({ "user": "alice", "password": alice["subsonic_password"] })
        )
        .await
        .err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    sign_in(
        &http,
        &session_url,
        json!({ "user": "alice", "password": renewed["subsonic_password"] }),
    )
    .await
    .unwrap();

    // Errors answer in JSON, unknown routes included.
    let r = http
        .get(format!("{base}/api/v1/no-such-thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_only_servers_refuse_passwords_on_the_pages_too() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_json(&store, "alice", &[]);
    let server = start_with(&store, &["--subsonic-auth", "api-key-only"]).await;
    let http = Client::new();
    let url = format!("{}/api/v1/session", server.base);
    assert_eq!(
        sign_in(
            &http,
            &url,
            json!({ "user": "alice", "password": alice["subsonic_password"] })
        )
        .await
        .err(),
        Some(StatusCode::BAD_REQUEST)
    );
    sign_in(&http, &url, json!({ "api_key": alice["api_key"] }))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_json(&store, "alice", &[]);
    let server = start_with(&store, &["--session-idle", "1s"]).await;
    let http = Client::new();
    let a = sign_in(
        &http,
        &format!("{}/api/v1/session", server.base),
        json!({ "api_key": alice["api_key"] }),
    )
    .await
    .unwrap();
    let me = || a.send(http.get(format!("{}/api/v1/me", server.base)));
    assert_eq!(me().send().await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        me().send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_api_takes_operators_only_and_runs_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user_json(&store, "alice", &[]);
    let root = operator_key(&store, "root");
    let server = start_with(&store, &[]).await;
    let http = Client::new();
    let base = &server.base;
    let alice_key = alice["api_key"].as_str().unwrap();

    // Keys of users are no operator keys, either way.
    let stats = |key: &str| {
        http.get(format!("{base}/api/v1/admin/stats"))
            .bearer_auth(key)
    };
    assert_eq!(
        stats(alice_key).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let admin_session = format!("{base}/api/v1/admin/session");
    assert_eq!(
        sign_in(&http, &admin_session, json!({ "operator_key": alice_key }))
            .await
            .err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let op = sign_in(&http, &admin_session, json!({ "operator_key": root }))
        .await
        .unwrap();

    // Two users hold the same recording: single-master would keep it once.
    let bob = add_user_json(&store, "bob", &[]);
    let song = fixture("mp3-cbr-id3v23-cover-eyed3.mp3");
    for key in [alice_key, bob["api_key"].as_str().unwrap()] {
        let r = http
            .put(format!("{base}/api/v1/tracks/song.mp3"))
            .bearer_auth(key)
            .body(song.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let before: Value = op
        .send(http.get(format!("{base}/api/v1/admin/stats")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(before["mode"], "per-user-copy");
    assert_eq!(before["tracks"], 2);
    assert_eq!(before["logical_bytes"], 2 * song.len() as u64);
    let what_if: Value = http
        .get(format!("{base}/api/v1/admin/what-if"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(what_if["mode"], "per-user-copy");
    assert_eq!(what_if["other"]["mode"], "single-master");
    let predicted = what_if["other"]["physical_bytes"].as_u64().unwrap();
    assert!(predicted < before["physical_bytes"].as_u64().unwrap());

    // A job through the session needs the CSRF token.
    let jobs = format!("{base}/api/v1/admin/jobs");
    let migrate = json!({ "kind": "migrate", "mode": "single-master" });
    let r = op
        .send(http.post(&jobs))
        .json(&migrate)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = op
        .with_csrf(http.post(&jobs))
        .json(&migrate)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_u64().unwrap();
    let mut done = job;
    for _ in 0..400 {
        if done["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        done = http
            .get(format!("{jobs}/{id}"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["mode"], "single-master");
    let after: Value = stats(&root).send().await.unwrap().json().await.unwrap();
    assert_eq!(after["mode"], "single-master");
    assert_eq!(after["physical_bytes"].as_u64().unwrap(), predicted);
    let r = http
        .get(format!("{jobs}/999"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Bad requests answer in JSON too.
    for (method, url, body) in [
        (
            Method::POST,
            jobs.clone(),
            Some(json!({ "kind": "format-disk" })),
        ),
        (Method::POST, jobs.clone(), None),
        (Method::GET, format!("{jobs}/abc"), None),
        (
            Method::PUT,
            format!("{base}/api/v1/admin/users/quota"),
            Some(json!({ "name": 7 })),
        ),
    ] {
        let mut rb = http.request(method, &url).bearer_auth(&root);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let r = rb.send().await.unwrap();
        assert!(r.status().is_client_error(), "{url}: {}", r.status());
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string(), "{url}: {v}");
    }
    // Operators are made on the machine (the admin socket), never over HTTP: a stolen session
    // must not mint keys.
    let r = op
        .with_csrf(http.post(format!("{base}/api/v1/admin/operators")))
        .json(&json!({ "name": "backdoor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // An operator's session is no user's.
    let r = op
        .send(http.get(format!("{base}/api/v1/me")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Operators manage users over the same API.
    let r = http
        .put(format!("{base}/api/v1/admin/users/quota"))
        .bearer_auth(&root)
        .json(&json!({ "name": "alice", "max_bytes": 1_000_000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let users: Value = http
        .get(format!("{base}/api/v1/admin/users"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users[0]["user"], "alice");
    assert_eq!(users[0]["max_bytes"], 1_000_000);

    // A renewed operator key ends the operator's sessions.
    let out = bin()
        .arg("--store")
        .arg(&store)
        .args(["operator", "revoke-key", "root", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = op
        .send(http.get(format!("{base}/api/v1/admin/stats")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        stats(&root).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_strict_policy_and_validators() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    add_user_json(&store, "alice", &[]);
    let server = start_with(&store, &[]).await;
    let http = Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/admin", "text/html"),
        ("/static/player.js", "text/javascript"),
        ("/static/admin.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/static/tus.min.js", "text/javascript"),
    ] {
        let r = http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind));
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let etag = h[ETAG].to_str().unwrap().to_owned();
        let r = http
            .get(format!("{}{path}", server.base))
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
    for path in [
        "/static/player.html",
        "/static/../Cargo.toml",
        "/static/x.js",
    ] {
        let r = http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // The JSON APIs carry the policy too.
    let r = http
        .get(format!("{}/api/v1/me", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key(CONTENT_SECURITY_POLICY));
}
