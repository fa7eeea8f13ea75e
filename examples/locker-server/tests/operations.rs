//! Operations over real HTTP against the real binary: Prometheus metrics, and the limits that
//! keep hostile connections from holding the server (a request head that never ends, a huge
//! head, malformed HTTP) answered with 4xx or a closed connection, never a 5xx or a crash.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{add_user, start_with};

/// The value of the first metric line that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_bytes_puts_refusals_and_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let carol = add_user(&store, "carol", &["--quota", "1KB"]);
    let metrics_port = common::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = start_with(&store, &["--metrics-listen", &metrics_addr]).await;
    let http = reqwest::Client::new();
    let body = vec![7u8; 50_000];
    let r = http
        .put(format!("{}/api/v1/tracks/a.mp3", server.base))
        .bearer_auth(&alice)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(format!("{}/api/v1/tracks/a.mp3", server.base))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 50_000);
    let r = http
        .put(format!("{}/api/v1/tracks/b.mp3", server.base))
        .bearer_auth(&carol)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);

    // Not on the API's address: the store's figures are the operator's.
    let r = http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        metric(
            &text,
            "locker_http_requests_total{method=\"PUT\",route=\"/api/v1/tracks/{*key}\",status=\"201\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "locker_http_requests_total{method=\"PUT\",route=\"/api/v1/tracks/{*key}\",status=\"507\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "locker_quota_refusals_total"), 1.0);
    assert_eq!(metric(&text, "locker_put_seconds_count"), 1.0);
    // Both uploads' bodies came in (the refused one too: it was read to decide); the download
    // went out.
    assert!(metric(&text, "locker_http_request_body_bytes_total") >= 100_000.0);
    assert!(metric(&text, "locker_http_response_body_bytes_total") >= 50_000.0);
    assert_eq!(metric(&text, "locker_store_logical_bytes"), 50_000.0);
    assert_eq!(metric(&text, "locker_store_tracks"), 1.0);
    assert!(metric(&text, "locker_store_physical_bytes") > 0.0);
    assert!(text.ends_with("# EOF\n"));
    // Track names never become labels.
    assert!(!text.contains("a.mp3"));
}

/// Sends `raw` on a fresh connection and returns what the server answered before closing it.
fn exchange(port: u16, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_get_4xx_or_a_closed_connection_and_the_server_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let alice = add_user(&store, "alice", &[]);
    let server = start_with(&store, &["--header-timeout", "1", "--idle-timeout", "2"]).await;
    let port = server.port;

    // A request head that never ends: the connection is closed once the deadline passes
    // (read_to_end returns instead of waiting for the 30 s read timeout).
    let started = std::time::Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the slow head was cut off by the header deadline"
    );
    assert!(!answer.contains(" 200 "), "{answer}");

    // A huge head: 431 or 400, never a 5xx.
    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(100)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let answer = tokio::task::spawn_blocking(move || exchange(port, &huge))
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // Malformed request lines and headers.
    for raw in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"PUT /api/v1/tracks/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let answer = tokio::task::spawn_blocking(move || exchange(port, raw))
            .await
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 4"),
            "{raw:?} -> {answer}"
        );
    }

    // Malformed Range headers on a real track: the whole track, never an error.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/tracks/t.mp3", server.base);
    let r = http
        .put(&url)
        .bearer_auth(&alice)
        .body(vec![1u8; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for range in [
        "bytes=",
        "bytes=--5",
        "bytes=a-b",
        "bytes=99999999999999999999-",
        "x",
    ] {
        let r = http
            .get(&url)
            .bearer_auth(&alice)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{range}: {}", r.status());
        assert_eq!(r.bytes().await.unwrap().len(), 10_000, "{range}");
    }
    // Invalid keys (NUL, control characters, over 1024 bytes): 400, never a 5xx. (`..` and
    // slashes are ordinary characters of a key, which is never used as a path.)
    for key in ["%00", "a%01b", "%7F", &"k".repeat(5000)] {
        let r = http
            .put(format!("{}/api/v1/tracks/{key}", server.base))
            .bearer_auth(&alice)
            .body("x")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{key}: {}", r.status());
    }

    // Truncated upload bodies store nothing: a Content-Length body cut short, and a chunked
    // body that ends without its last chunk.
    let auth = format!("Authorization: Bearer {alice}\r\n");
    for (name, head, body) in [
        (
            "cut-length.mp3",
            "Content-Length: 100000\r\n".to_owned(),
            vec![3u8; 50_000],
        ),
        (
            "cut-chunked.mp3",
            "Transfer-Encoding: chunked\r\n".to_owned(),
            [&b"c350\r\n"[..], &[4u8; 50_000], b"\r\n"].concat(),
        ),
    ] {
        let raw = [
            format!("PUT /api/v1/tracks/{name} HTTP/1.1\r\nHost: x\r\n{auth}{head}\r\n")
                .into_bytes(),
            body,
        ]
        .concat();
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&raw).unwrap();
            // Close the sending side: the body ends short.
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
        })
        .await
        .unwrap();
        let r = http
            .get(format!("{}/api/v1/tracks/{name}", server.base))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{name}: a truncated upload stored nothing");
    }

    // A connection that never sends a byte is closed after the idle timeout.
    let started = std::time::Instant::now();
    let answer = tokio::task::spawn_blocking(move || exchange(port, b""))
        .await
        .unwrap();
    assert!(answer.is_empty() && started.elapsed() < Duration::from_secs(25));

    // A client that stops reading a stream does not hold its connection: the server gives up
    // after the idle timeout and the client finds the body cut short.
    let big: Vec<u8> = (0..24_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let r = http
        .put(format!("{}/api/v1/tracks/big.flac", server.base))
        .bearer_auth(&alice)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let request = format!(
        "GET /api/v1/tracks/big.flac HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n"
    );
    let got = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_secs(6)); // stop reading well past the idle timeout
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out.len()
    })
    .await
    .unwrap();
    assert!(
        got < big.len(),
        "the stalled stream was cut ({got} bytes read)"
    );

    // Header details real clients send: a weak If-None-Match, a lower-case scheme, a
    // capitalised range unit; a method outside the usual set is counted as "other".
    let r = http
        .get(&url)
        .header("authorization", format!("bearer {alice}"))
        .header("range", "Bytes=0-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = http
        .get(&url)
        .bearer_auth(&alice)
        .header("if-none-match", format!("W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = http
        .get(&url)
        .bearer_auth(&alice)
        .header("range", "bytes=0-1")
        .header("if-range", format!("W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "If-Range compares strongly: a weak tag gets the whole track"
    );

    // The server is still up and answers.
    let r = http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
