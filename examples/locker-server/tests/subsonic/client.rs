//! A small Subsonic client for the tests: credentials, JSON and XML calls, uploads, fixtures.
#![allow(dead_code)] // each test file uses its own part of the client

use std::collections::HashMap;

use md5::{Digest, Md5};
use quick_xml::XmlVersion;
use quick_xml::events::Event;
use serde_json::Value;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
/// A fixture with an embedded JPEG cover (ID3v2.3 APIC).
pub const COVER: &str = "mp3-cbr-id3v23-cover-eyed3.mp3";

/// Every real music file of the fixtures, as (name, bytes), by name.
pub fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            ["mp3", "flac", "m4a", "ogg", "opus"].contains(&ext)
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

/// Subsonic credentials.
#[derive(Clone, Debug)]
pub enum Auth {
    Key(String),
    /// User and Subsonic password: token auth with a fresh salt.
    Token(String, String),
    /// User and Subsonic password sent as `p=`.
    Plain(String, String),
}

impl Auth {
    pub fn of(user: &Value) -> (Auth, Auth) {
        let name = user["user"].as_str().unwrap().to_owned();
        let pw = user["subsonic_password"].as_str().unwrap().to_owned();
        (
            Auth::Key(user["api_key"].as_str().unwrap().to_owned()),
            Auth::Token(name, pw),
        )
    }

    pub fn params(&self) -> Vec<(String, String)> {
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        match self {
            Auth::Key(k) => vec![p("apiKey", k)],
            Auth::Token(u, pw) => {
                let salt = format!("{:x}", rand_u64());
                let token: String = Md5::digest(format!("{pw}{salt}").as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                vec![p("u", u), p("t", &token), p("s", &salt)]
            }
            Auth::Plain(u, pw) => vec![p("u", u), p("p", pw)],
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

fn pairs(auth: Option<&Auth>, params: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut q = auth.map(Auth::params).unwrap_or_default();
    q.extend(
        params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    q.push(("v".into(), "1.16.1".into()));
    q.push(("c".into(), "tests".into()));
    q
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.to_owned(),
        }
    }

    /// `GET /rest/<method>` with the credentials and parameters as they are.
    pub async fn get(
        &self,
        method: &str,
        auth: Option<&Auth>,
        params: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .get(format!("{}/rest/{method}", self.base))
            .query(&pairs(auth, params))
            .send()
            .await
            .unwrap()
    }

    /// The `subsonic-response` of a JSON call, its envelope checked.
    pub async fn json(&self, method: &str, auth: Option<&Auth>, params: &[(&str, &str)]) -> Value {
        let mut all = params.to_vec();
        all.push(("f", "json"));
        let r = self.get(method, auth, &all).await;
        assert_eq!(
            r.status(),
            200,
            "{method}: Subsonic errors are HTTP 200 too"
        );
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: Value = r.json().await.unwrap();
        let v = v["subsonic-response"].clone();
        assert_eq!(v["version"], "1.16.1");
        assert_eq!(v["type"], "lockerstore");
        assert!(v["serverVersion"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(v["openSubsonic"], true);
        v
    }

    /// A JSON call that must succeed.
    pub async fn ok(&self, method: &str, auth: &Auth, params: &[(&str, &str)]) -> Value {
        let v = self.json(method, Some(auth), params).await;
        assert_eq!(v["status"], "ok", "{method} {params:?}: {v}");
        v
    }

    /// A JSON call that must fail: its error code.
    pub async fn code(&self, method: &str, auth: Option<&Auth>, params: &[(&str, &str)]) -> u64 {
        let v = self.json(method, auth, params).await;
        assert_eq!(v["status"], "failed", "{method} {params:?}: {v}");
        assert!(v["error"]["message"].is_string());
        v["error"]["code"].as_u64().unwrap()
    }

    /// The bytes of a binary call (stream, download, getCoverArt) that must succeed.
    pub async fn bytes(
        &self,
        method: &str,
        auth: &Auth,
        params: &[(&str, &str)],
    ) -> (String, Vec<u8>) {
        let r = self.get(method, Some(auth), params).await;
        assert_eq!(r.status(), 200, "{method} {params:?}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            !ct.contains("json") && !ct.contains("xml"),
            "{method}: {ct}"
        );
        (ct, r.bytes().await.unwrap().to_vec())
    }

    /// The XML document of a call (no `f`, or `f=xml`).
    pub async fn xml(&self, method: &str, auth: Option<&Auth>, params: &[(&str, &str)]) -> Vec<El> {
        let r = self.get(method, auth, params).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/xml; charset=utf-8");
        parse_xml(&r.text().await.unwrap())
    }

    /// Uploads through the upload API.
    pub async fn upload(&self, api_key: &str, key: &str, bytes: &[u8]) {
        let r = self
            .http
            .put(format!("{}/api/v1/tracks/{key}", self.base))
            .bearer_auth(api_key)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "upload {key}");
    }
}

/// One XML element: its name, attributes, text and depth (the root is 0).
#[derive(Debug)]
pub struct El {
    pub name: String,
    pub attrs: HashMap<String, String>,
    pub text: String,
    pub depth: usize,
}

/// Parses a document with quick-xml; panics on anything that is not well-formed.
pub fn parse_xml(doc: &str) -> Vec<El> {
    let mut reader = quick_xml::Reader::from_str(doc);
    reader.config_mut().check_end_names = true;
    let mut out: Vec<El> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    loop {
        let event = reader.read_event().expect("well-formed XML");
        let (start, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let attrs = e
                .attributes()
                .map(|a| {
                    let a = a.expect("a well-formed attribute");
                    let k = a.key.as_ref().to_owned();
                    let v = a
                        .normalized_value(XmlVersion::Implicit1_0)
                        .unwrap()
                        .into_owned();
                    (k, v)
                })
                .collect();
            out.push(El {
                name: e.name().as_ref().to_owned(),
                attrs,
                text: String::new(),
                depth: open.len(),
            });
            if !empty {
                open.push(out.len() - 1);
            }
            continue;
        }
        match event {
            Event::Text(t) => {
                if let Some(&i) = open.last() {
                    out[i].text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let s = if r.is_char_ref() {
                    r.resolve_char_ref().unwrap().unwrap().to_string()
                } else {
                    quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                        .expect("a predefined entity")
                        .to_owned()
                };
                if let Some(&i) = open.last() {
                    out[i].text.push_str(&s);
                }
            }
            Event::End(_) => {
                open.pop();
            }
            Event::Decl(_) => {}
            Event::Eof => break,
            other => panic!("unexpected XML event {other:?}"),
        }
    }
    assert!(open.is_empty(), "every element is closed");
    assert_eq!(out.iter().filter(|e| e.depth == 0).count(), 1, "one root");
    out
}

/// The root's checks every XML answer passes; its `status`.
pub fn xml_root(doc: &[El]) -> String {
    let root = &doc[0];
    assert_eq!(root.name, "subsonic-response");
    assert_eq!(root.attrs["xmlns"], "http://subsonic.org/restapi");
    assert_eq!(root.attrs["version"], "1.16.1");
    assert_eq!(root.attrs["type"], "lockerstore");
    assert_eq!(root.attrs["openSubsonic"], "true");
    root.attrs["status"].clone()
}

/// The array `name` of a JSON object (missing = empty).
pub fn list<'a>(v: &'a Value, name: &str) -> Vec<&'a Value> {
    v[name]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Uploads every fixture for `api_key` under `prefix/`; returns key -> bytes.
pub async fn upload_all(c: &Client, api_key: &str, prefix: &str) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    for (name, bytes) in fixtures() {
        let key = format!("{prefix}/{name}");
        c.upload(api_key, &key, &bytes).await;
        out.insert(key, bytes);
    }
    out
}

/// Every song of the caller, through search3's empty query.
pub async fn all_songs(c: &Client, auth: &Auth) -> Vec<Value> {
    let v = c
        .ok("search3", auth, &[("query", ""), ("songCount", "500")])
        .await;
    list(&v["searchResult3"], "song")
        .into_iter()
        .cloned()
        .collect()
}
