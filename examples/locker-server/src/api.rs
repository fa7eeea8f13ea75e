//! The upload API: `/api/v1/tracks/{key}` (PUT streams the body into `Store::put`; GET and HEAD
//! with single byte ranges, ETag = the track's fingerprint; DELETE) and `/api/v1/tracks` (the
//! caller's tracks), authenticated with `Authorization: Bearer KEY` or a browser session
//! ([`crate::auth`]). A caller only ever names tracks of their own locker. A PUT may name the
//! track's rights holder (`?rightsHolder=NAME`); without it the engine reads it from the tags.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lockerstore::{PutOptions, RightsHolder, TrackInfo, TrackKey};
use serde_json::json;

use crate::app::App;
use crate::auth::user_of;
use crate::http::{ApiError, blocking, blocking_op, serve_track, upload_reader};

/// The upload API's routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/tracks", get(list))
        .route(
            "/api/v1/tracks/{*key}",
            get(read).head(read).put(put).delete(delete),
        )
        // Uploads stream: no body limit below the user's quota.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

fn track_key(raw: &str) -> Result<TrackKey, ApiError> {
    TrackKey::new(raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The rights holder a client names for an upload (`rightsHolder`, in the PUT's query or in
/// tus `Upload-Metadata`): a valid name, or a 400 that says why.
pub(crate) fn rights_holder(raw: &[u8]) -> Result<RightsHolder, ApiError> {
    RightsHolder::from_bytes(raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("rightsHolder is not a valid rights holder: {e}"),
        )
    })
}

/// A query value's bytes: `+` is a space, `%XX` a byte. Not `form_urlencoded::parse`, which
/// turns bytes that are not UTF-8 into U+FFFD: a name must be refused, not silently changed.
fn query_bytes(raw: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let digit = |d: Option<u8>| (d? as char).to_digit(16);
                match (digit(hex[0]), digit(hex[1])) {
                    (Some(h), Some(l)) => (h * 16 + l) as u8,
                    _ => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "rightsHolder has a bad %-escape",
                        ));
                    }
                }
            }
            b => b,
        });
    }
    Ok(out)
}

/// `rightsHolder` in a query string, if present (once at most).
fn holder_in_query(query: Option<&str>) -> Result<Option<RightsHolder>, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "rightsHolder" {
            continue;
        }
        if found.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "rightsHolder is given twice",
            ));
        }
        found = Some(rights_holder(&query_bytes(value)?)?);
    }
    Ok(found)
}

pub(crate) fn describe(t: &TrackInfo) -> serde_json::Value {
    json!({
        "rights_holder": t.rights_holder.as_ref().map(RightsHolder::as_str),
        "key": t.key.as_str(),
        "size": t.size,
        "fingerprint": t.fingerprint.to_hex(),
        "format": t.format,
        "audio_fingerprint": t.audio_fingerprint.map(|f| f.to_hex()),
        "stored_at": t.stored_at,
    })
}

async fn list(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = user_of(&app, &method, &headers)?;
    let tracks = match blocking(move || app.store.list(&user)).await {
        Ok(t) => t,
        // A user with no upload yet has an empty locker.
        Err(ApiError(StatusCode::NOT_FOUND, _)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let body: Vec<_> = tracks.iter().map(describe).collect();
    Ok(axum::Json(json!({ "tracks": body })).into_response())
}

async fn put(
    State(app): State<App>,
    Path(key): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let user = user_of(&app, request.method(), request.headers())?;
    let key = track_key(&key)?;
    let holder = holder_in_query(request.uri().query())?;
    // The declared length sizes the engine's buffer once (a hint: a body of another length is
    // stored as it is, or cut off by hyper when it is shorter).
    let mut options = PutOptions::default();
    if let Some(len) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        options = options.expected_len(len);
    }
    if let Some(h) = holder {
        options = options.rights_holder(h);
    }
    let reader = upload_reader(request.into_body());
    let info = blocking_op("put", move || {
        // The put's outcome says how many bytes were new: that is for the operator only, so
        // the answer is built from the stored track's facts instead.
        let started = std::time::Instant::now();
        app.store.put_with(&user, &key, reader, &options)?;
        crate::metrics::observe_put(started.elapsed());
        app.stored(&user, &key);
        app.store.track_info(&user, &key)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(describe(&info))).into_response())
}

async fn delete(
    State(app): State<App>,
    Path(key): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = user_of(&app, &method, &headers)?;
    let key = track_key(&key)?;
    blocking(move || {
        app.store.delete(&user, &key)?;
        app.deleted(&user, &key);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn read(
    State(app): State<App>,
    Path(key): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = user_of(&app, &method, &headers)?;
    let key = track_key(&key)?;
    serve_track(&app.store, user, key, &method, &headers).await
}
