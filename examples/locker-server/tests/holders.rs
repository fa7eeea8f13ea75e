//! Licences per rights holder through the server: uploads that name their rights holder (the
//! upload API's `?rightsHolder=` and tus `Upload-Metadata`), the operator's `holders` JSON
//! (what-if per holder, licence, audit verdict, unassigned tracks), and setting and removing a
//! holder's licence over HTTP and on the command line, bad input changing nothing.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{add_user, bin, operator_key, start};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    std::fs::read(dir.join(name)).unwrap()
}

/// Two taggings of one recording, another recording, and a third for the unassigned track.
const EMI_SONG: &str = "mp3-cbr-id3v23-cover-eyed3.mp3";
const EMI_RETAGGED: &str = "mp3-cbr-id3v24-padding-mutagen.mp3";
const SONY_SONG: &str = "flac-vorbiscomment-picture-padding-metaflac.flac";
const NOBODYS: &str = "ogg-vorbis-tags-vorbiscomment.ogg";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let v = r.json().await.unwrap();
    (status, v)
}

/// One operator call with the key as Bearer (no CSRF token needed).
async fn admin(
    http: &Client,
    base: &str,
    root: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = http
        .request(method, format!("{base}/api/v1/admin{path}"))
        .bearer_auth(root);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    json_of(rb.send().await.unwrap()).await
}

async fn put(
    http: &Client,
    base: &str,
    key: &str,
    path: &str,
    query: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let r = http
        .put(format!("{base}/api/v1/tracks/{path}{query}"))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap();
    json_of(r).await
}

fn holder<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["holder"] == name)
        .unwrap_or_else(|| panic!("no holder {name} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_name_their_holder_and_bad_names_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let server = start(&store).await;
    let http = Client::new();
    let base = &server.base;
    let song = fixture(EMI_SONG);

    let (status, v) = put(
        &http,
        base,
        &alice,
        "a.mp3",
        "?rightsHolder=EMI",
        song.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["rights_holder"], "EMI");
    // Percent-encoded UTF-8 with an inner space is a fine name.
    let (status, v) = put(
        &http,
        base,
        &alice,
        "b.mp3",
        "?rightsHolder=Universal%20M%C3%BAsica",
        song.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["rights_holder"], "Universal Música");
    // Without one the engine reads the tags (the fixtures name no label).
    let (status, v) = put(&http, base, &alice, "c.mp3", "", song.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["rights_holder"], Value::Null);

    for query in [
        "?rightsHolder=",
        "?rightsHolder=%20EMI",
        "?rightsHolder=EMI%20",
        "?rightsHolder=E%07MI",
        "?rightsHolder=%FF",
        "?rightsHolder=%E",
        "?rightsHolder=%zz",
        "?rightsHolder=EMI&rightsHolder=Sony",
    ] {
        let (status, v) = put(&http, base, &alice, "bad.mp3", query, song.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains("rightsHolder"), "{v}");
    }
    let long = "x".repeat(129);
    let (status, _) = put(
        &http,
        base,
        &alice,
        "bad.mp3",
        &format!("?rightsHolder={long}"),
        song.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(common::tracks_of(&http, base, &alice).await, 3);

    // tus: `rightsHolder` in Upload-Metadata, checked at creation.
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let create = |meta: String| {
        http.post(format!("{base}/api/v1/uploads"))
            .bearer_auth(&alice)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", song.len().to_string())
            .header("Upload-Metadata", meta)
            .send()
    };
    for bad in [&b" EMI"[..], b"", b"E\nMI", b"\xff"] {
        let r = create(format!("key {},rightsHolder {}", b64(b"t.mp3"), b64(bad)))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("rightsHolder"), "{v}");
    }
    let r = create(format!(
        "key {},rightsHolder {}",
        b64(b"t.mp3"),
        b64(b"Sony")
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let r = http
        .patch(format!("{base}{location}"))
        .bearer_auth(&alice)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(song.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let listed: Value = http
        .get(format!("{base}/api/v1/tracks"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let holders: Vec<(&str, &Value)> = listed["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap(), &t["rights_holder"]))
        .collect();
    assert_eq!(
        holders,
        [
            ("a.mp3", &json!("EMI")),
            ("b.mp3", &json!("Universal Música")),
            ("c.mp3", &Value::Null),
            ("t.mp3", &json!("Sony")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_show_savings_licences_and_verdicts_and_licences_change_only_on_good_input() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let bob = add_user(&store, "bob", &[]);
    let root = operator_key(&store, "root");
    let server = start(&store).await;
    let http = Client::new();
    let base = &server.base;

    // EMI: one recording in both lockers (tagged differently); Sony: another one in both;
    // and alice's track with no holder.
    let emi = [fixture(EMI_SONG), fixture(EMI_RETAGGED)];
    let sony = fixture(SONY_SONG);
    let nobodys = fixture(NOBODYS);
    for (key, emi_song) in [(&alice, &emi[0]), (&bob, &emi[1])] {
        let (s, v) = put(
            &http,
            base,
            key,
            "emi.mp3",
            "?rightsHolder=EMI",
            emi_song.clone(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = put(
            &http,
            base,
            key,
            "sony.flac",
            "?rightsHolder=Sony",
            sony.clone(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, _) = put(&http, base, &alice, "mine.ogg", "", nobodys.clone()).await;
    assert_eq!(s, StatusCode::CREATED);

    // Users are no operators.
    for path in ["/holders", "/licences"] {
        let (s, _) = admin(&http, base, &alice, Method::GET, path, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, _) = admin(
        &http,
        base,
        &alice,
        Method::PUT,
        "/licences",
        Some(json!({ "holder": "EMI", "mode": "shared" })),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, v) = admin(&http, base, &root, Method::GET, "/holders", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["default"], "per-user-copy");
    assert_eq!(v["conforming"], true);
    assert_eq!(
        v["licences"],
        json!({ "default": "per-user-copy", "entries": [] })
    );
    assert_eq!(v["unassigned_tracks"], 1);
    assert_eq!(v["unassigned_bytes"], nobodys.len() as u64);
    assert_eq!(v["unassigned_audit"]["tracks"], 1);
    assert_eq!(v["unassigned_audit"]["conforming"], true);
    assert_eq!(v["baseline"]["mode"], "per-user-copy");
    assert_eq!(v["baseline"]["pending_tracks"], 0);
    let live = v["baseline"]["physical_bytes_now"].as_u64().unwrap();
    assert_eq!(v["holders"].as_array().unwrap().len(), 2);
    let mut last = i64::MAX;
    for h in v["holders"].as_array().unwrap() {
        let savings = h["savings"].as_i64().unwrap();
        assert!(savings <= last, "by savings, largest first: {v}");
        last = savings;
        assert!(savings > 0, "sharing a recording two users hold saves: {h}");
        assert_eq!(h["licence"], Value::Null);
        assert_eq!(h["mode_now"], "per-user-copy");
        assert_eq!(h["mode_after"], "single-master");
        assert_eq!(h["tracks"], 2);
        assert_eq!(h["physical_bytes_baseline"], live);
        assert_eq!(
            savings,
            live as i64 - h["physical_bytes_after"].as_i64().unwrap()
        );
        assert!(h["bytes_to_free"].as_u64().unwrap() > 0);
        let a = &h["audit"];
        assert_eq!(
            (
                &a["mode"],
                &a["tracks"],
                &a["pending_tracks"],
                &a["breaking_tracks"],
                &a["conforming"]
            ),
            (
                &json!("per-user-copy"),
                &json!(2),
                &json!(0),
                &json!(0),
                &json!(true)
            ),
            "{h}"
        );
    }
    let emi_now = holder(&v, "EMI");
    assert_eq!(
        emi_now["logical_bytes"],
        (emi[0].len() + emi[1].len()) as u64
    );
    assert_eq!(holder(&v, "Sony")["logical_bytes"], 2 * sony.len() as u64);
    let emi_savings = emi_now["savings"].as_i64().unwrap();

    // Bad input answers 400 in JSON and changes nothing.
    let before = admin(&http, base, &root, Method::GET, "/licences", None)
        .await
        .1;
    for body in [
        json!({ "holder": "", "mode": "shared" }),
        json!({ "holder": " EMI", "mode": "shared" }),
        json!({ "holder": "EMI\u{7}", "mode": "shared" }),
        json!({ "holder": "x".repeat(129), "mode": "shared" }),
        json!({ "holder": 7, "mode": "shared" }),
        json!({ "holder": "EMI", "mode": "free-for-all" }),
        json!({ "holder": "EMI" }),
        json!({ "holder": "EMI", "mode": "shared", "until": 1 }),
        json!({ "holder": "EMI", "mode": "shared", "until": now() }),
        json!({ "holder": "EMI", "mode": "shared", "until": "2027-01-31" }),
        json!({ "holder": "EMI", "mode": "shared", "until": -5 }),
        json!({ "holder": "EMI", "mode": "shared", "extra": true }),
    ] {
        let (s, e) = admin(
            &http,
            base,
            &root,
            Method::PUT,
            "/licences",
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(e["error"].is_string(), "{body}: {e}");
    }
    for body in [
        json!({ "holder": "" }),
        json!({ "holder": "EMI " }),
        json!({}),
    ] {
        let (s, e) = admin(
            &http,
            base,
            &root,
            Method::POST,
            "/licences/unset",
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
    }
    let (s, e) = admin(
        &http,
        base,
        &root,
        Method::POST,
        "/licences/unset",
        Some(json!({ "holder": "Warner" })),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert!(e["error"].as_str().unwrap().contains("Warner"));
    let (_, after) = admin(&http, base, &root, Method::GET, "/licences", None).await;
    assert_eq!(before, after);

    // EMI signs: its tracks are now pending, and flipping it back would cost what it saves.
    let (s, l) = admin(
        &http,
        base,
        &root,
        Method::PUT,
        "/licences",
        Some(json!({ "holder": "EMI", "mode": "shared" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(
        l["entries"],
        json!([{ "holder": "EMI", "mode": "single-master", "until": null, "expired": false,
                 "mode_now": "single-master" }])
    );
    let until = now() + 3600;
    let (s, l) = admin(
        &http,
        base,
        &root,
        Method::PUT,
        "/licences",
        Some(json!({ "holder": "Sony", "mode": "per-user", "until": until })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["entries"][1]["holder"], "Sony");
    assert_eq!(l["entries"][1]["until"], until);
    // A licence for a holder with no track yet is kept and listed too.
    let (s, _) = admin(
        &http,
        base,
        &root,
        Method::PUT,
        "/licences",
        Some(json!({ "holder": "Warner Music", "mode": "single-master" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let (_, v) = admin(&http, base, &root, Method::GET, "/holders", None).await;
    assert_eq!(v["conforming"], false);
    assert_eq!(v["licences"]["entries"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["holders"].as_array().unwrap().len(),
        2,
        "holders with tracks only"
    );
    let emi_now = holder(&v, "EMI");
    assert_eq!(
        emi_now["licence"],
        json!({ "mode": "single-master", "until": null, "expired": false })
    );
    assert_eq!(emi_now["mode_now"], "single-master");
    assert_eq!(emi_now["mode_after"], "per-user-copy");
    assert_eq!(emi_now["audit"]["pending_tracks"], 2);
    assert_eq!(emi_now["audit"]["conforming"], false);
    assert_eq!(emi_now["audit"]["examples"].as_array().unwrap().len(), 2);
    assert_eq!(v["baseline"]["pending_tracks"], 2);
    assert_eq!(emi_now["savings"].as_i64().unwrap(), -emi_savings, "{v}");
    let sony_now = holder(&v, "Sony");
    assert_eq!(sony_now["licence"]["mode"], "per-user-copy");
    assert_eq!(sony_now["licence"]["until"], until);
    assert_eq!(sony_now["audit"]["conforming"], true);
    // Sorted: Sony's flip saves, EMI's costs.
    assert_eq!(v["holders"][0]["holder"], "Sony");

    // A migration under the current licences (the default unchanged) moves EMI only.
    let (s, job) = admin(
        &http,
        base,
        &root,
        Method::POST,
        "/jobs",
        Some(json!({ "kind": "migrate", "mode": "per-user-copy" })),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let path = format!("/jobs/{}", job["id"]);
    let mut done = job;
    for _ in 0..800 {
        if done["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        done = admin(&http, base, &root, Method::GET, &path, None).await.1;
    }
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["report"]["tracks_migrated"], 2, "{done}");
    let (_, v) = admin(&http, base, &root, Method::GET, "/holders", None).await;
    assert_eq!(v["conforming"], true, "{v}");
    assert_eq!(holder(&v, "EMI")["audit"]["conforming"], true);
    assert_eq!(
        v["baseline"]["physical_bytes_now"].as_i64().unwrap(),
        live as i64 - emi_savings,
        "the migration saved what the what-if said"
    );

    // Unset: EMI follows the default again; its tracks are pending until the next migration.
    let (s, l) = admin(
        &http,
        base,
        &root,
        Method::POST,
        "/licences/unset",
        Some(json!({ "holder": "EMI" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert!(
        l["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["holder"] != "EMI")
    );
    let (_, v) = admin(&http, base, &root, Method::GET, "/holders", None).await;
    let emi_now = holder(&v, "EMI");
    assert_eq!(emi_now["licence"], Value::Null);
    assert_eq!(emi_now["mode_now"], "per-user-copy");
    assert_eq!(emi_now["audit"]["pending_tracks"], 2);

    // The command line goes through the running server's admin socket, with the same JSON.
    let cli = |args: &[&str]| {
        let out = bin()
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), out.stdout, out.stderr)
    };
    let (ok, out, err) = cli(&["license", "set", "EMI", "shared", "--json"]);
    assert!(ok, "{}", String::from_utf8_lossy(&err));
    let l: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(l["entries"][0]["holder"], "EMI");
    let (ok, _, err) = cli(&["license", "set", " EMI", "shared"]);
    assert!(!ok);
    assert!(
        String::from_utf8_lossy(&err).contains("rights holder"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    let (ok, _, _) = cli(&["license", "unset", "Nobody"]);
    assert!(!ok);
    let (ok, out, _) = cli(&["holders", "--json"]);
    assert!(ok);
    let from_cli: Value = serde_json::from_slice(&out).unwrap();
    let (_, v) = admin(&http, base, &root, Method::GET, "/holders", None).await;
    assert_eq!(from_cli, v);
    let (ok, out, _) = cli(&["license", "list"]);
    assert!(ok);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("(default)  per-user-copy"), "{text}");
    assert!(
        text.contains(&format!("Sony  per-user-copy  until {until}")),
        "{text}"
    );
}
