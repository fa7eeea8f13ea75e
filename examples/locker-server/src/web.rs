//! The web pages: the player at `/` and the operator's page at `/admin`, with their scripts and
//! styles under `/static/`. Every file is compiled into the binary (`web/`), so the server needs
//! no asset directory and fetches nothing at run time; `--web-dir DIR` serves the same names
//! from a directory instead (for working on the pages without rebuilding).
//!
//! Every answer of the server carries the headers of [`security_headers`]: a Content Security
//! Policy that lets a page run only this server's own script files and styles (no inline script,
//! no `eval`, no other origin), and no framing, sniffing or referrers.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;

/// One file of the pages.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../web/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the server serves; any other name is 404.
static ASSETS: &[Asset] = &[
    asset!("player.html", HTML),
    asset!("admin.html", HTML),
    asset!("player.js", JS),
    asset!("admin.js", JS),
    asset!("style.css", CSS),
    asset!("admin.css", CSS),
    Asset {
        name: "tus.min.js",
        content_type: JS,
        bytes: include_bytes!("../web/vendor/tus.min.js"),
    },
];

/// The Content Security Policy of every answer: only this server's own scripts, styles,
/// images (and `blob:`/`data:` ones a script made), media and requests.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; \
    form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Where the pages come from.
#[derive(Clone, Debug, Default)]
pub struct Pages {
    /// Serve from this directory instead of the compiled-in copies.
    pub dir: Option<PathBuf>,
}

pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/",
            get(|s: State<App>, h: HeaderMap| serve(s, h, "player.html")),
        )
        .route(
            "/admin",
            get(|s: State<App>, h: HeaderMap| serve(s, h, "admin.html")),
        )
        .route(
            "/static/{name}",
            get(
                |s: State<App>, h: HeaderMap, Path(name): Path<String>| async move {
                    if name.ends_with(".html") {
                        return StatusCode::NOT_FOUND.into_response();
                    }
                    serve(s, h, &name).await
                },
            ),
        )
        // Browsers ask for it by themselves: no icon, and no error in their console.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
}

async fn serve(State(app): State<App>, headers: HeaderMap, name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(dir) = &app.pages.dir {
        let path = if name == "tus.min.js" {
            dir.join("vendor").join(name)
        } else {
            dir.join(name)
        };
        return match tokio::fs::read(&path).await {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, asset.content_type),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                bytes,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "page file unreadable");
                StatusCode::NOT_FOUND.into_response()
            }
        };
    }
    // A strong validator: the bytes' hash. `no-cache` makes the browser ask each time, so a
    // new server's pages take effect at once; unchanged files cost a 304.
    static ETAGS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &blake3::hash(a.bytes).to_hex()[..32]))
            .collect()
    });
    let index = ASSETS
        .iter()
        .position(|a| a.name == name)
        .expect("found above");
    let etag = ETAGS[index].clone();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let common = [
        (header::CONTENT_TYPE, asset.content_type.to_owned()),
        (header::CACHE_CONTROL, "no-cache".to_owned()),
        (header::ETAG, etag),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, asset.bytes).into_response()
}

/// Adds the headers every answer carries (unless a handler set its own).
pub async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in set {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    response
}
