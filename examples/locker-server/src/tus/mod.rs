//! tus 1.0 resumable uploads at `/api/v1/uploads`: the core protocol (`HEAD` tells the offset,
//! `PATCH` appends) with the creation and termination extensions, and expiration.
//!
//! - `POST` creates an upload of `Upload-Length` bytes. `Upload-Metadata` names the track: its
//!   `key` pair is the track key; without one, its `filename` pair is used as the key. An
//!   optional `rightsHolder` pair names the track's rights holder (checked here, a bad name is
//!   a 400; without it the engine reads the holder from the tags).
//! - `PATCH` appends the streamed body at `Upload-Offset` to a staging file and answers only
//!   after the bytes are synced: the offset a client is told is always durable. A body cut off
//!   (the client went away, the body stream failed, or it broke the upload rules of
//!   [`crate::http::upload_frames`]) keeps what
//!   arrived: it is synced and recorded, and the client resumes from `HEAD`'s offset.
//! - When the offset reaches the length, the staged bytes are put into the store, and that
//!   `PATCH` answers 204 only after the put committed, with `Locker-Track-Location` (the
//!   track's URL in the upload API) and `Locker-Track-Fingerprint` (its BLAKE3, the ETag the
//!   upload API serves it with). The finished upload stays answerable until it expires, so a
//!   client whose last answer was lost learns the outcome from `HEAD` (offset = length) or from
//!   an empty `PATCH` at the final offset.
//!
//! An upload belongs to the user who created it: anybody else gets 404 for it. State lives in
//! `<store>/server/uploads/`: `<id>.bin` holds the bytes, `<id>.json` the record (user, key,
//! length, offset of record, times), rewritten through a synced temporary file and a rename.
//! The offset of record is the synced length; a restart truncates a `.bin` longer than it
//! (bytes written but never acknowledged), and finishes an upload whose bytes were all in but
//! whose put had not committed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use futures_util::StreamExt;
use lockerstore::{Error, TrackKey, UserId};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::auth::user_of;
use crate::http::{ApiError, blocking, upload_frames};

mod uploads;

use uploads::*;
pub use uploads::{Limits, Uploads};

/// The one protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// Most bytes of `Upload-Metadata`.
pub const MAX_METADATA: usize = 4096;
/// Bytes gathered before each write to the staging file.
const WRITE_BUF: usize = 512 << 10;

const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const TUS_VERSION_HEADER: HeaderName = HeaderName::from_static("tus-version");
const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
const TRACK_LOCATION: HeaderName = HeaderName::from_static("locker-track-location");
const TRACK_FINGERPRINT: HeaderName = HeaderName::from_static("locker-track-fingerprint");

/// Finishes the uploads found complete at start whose put had not committed (a crash or stop
/// between the last byte and the commit). Blocking; run before serving.
pub fn finish_pending(app: &App) {
    let pending = std::mem::take(&mut *app.uploads.pending.lock().expect("uploads lock"));
    for up in pending {
        let Some(claim) = up.claim() else { continue };
        match finish(app, &claim) {
            Ok(_) => tracing::info!(upload = %up.id, "finished an upload staged before a stop"),
            Err(e) => {
                tracing::warn!(upload = %up.id, error = %e.1, "an upload staged before a stop did not finish")
            }
        }
    }
}

/// Runs [`Uploads::sweep`] every [`Uploads::sweep_interval`] on the blocking pool.
pub fn spawn_sweeper(app: App) {
    tokio::spawn(async move {
        let every = app.uploads.sweep_interval();
        loop {
            tokio::time::sleep(every).await;
            let uploads = app.uploads.clone();
            let _ = tokio::task::spawn_blocking(move || uploads.sweep()).await;
        }
    });
}

/// The resumable upload routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/uploads", post(create).options(options))
        .route(
            "/api/v1/uploads/{id}",
            axum::routing::head(head).patch(patch).delete(terminate),
        )
        // PATCH bodies stream to the staging file: no limit below the upload's length.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut()
                    .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
                r
            },
        ))
}

/// 412 unless the request speaks tus 1.0.0.
fn version_mismatch(headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get(TUS_RESUMABLE)
        .is_some_and(|v| v.as_bytes().trim_ascii() == TUS_VERSION.as_bytes());
    (!ok).then(|| {
        let mut r = ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!("Tus-Resumable: {TUS_VERSION} is needed"),
        )
        .into_response();
        r.headers_mut()
            .insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
        r
    })
}

/// A non-negative integer header: `None` when absent, 400 when anything but digits.
fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = v.as_bytes().trim_ascii();
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(bad(format!("{name} must be a non-negative integer")));
    }
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| bad(format!("{name} is too large")))
}

/// Parses `Upload-Metadata`: comma-separated pairs of an ASCII key and, after one space, a
/// base64 value (which may be left out).
fn parse_metadata(raw: &str) -> Result<HashMap<String, Vec<u8>>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const B64: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut out = HashMap::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    for pair in raw.split(',') {
        let mut parts = pair.trim().split(' ');
        let key = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default();
        if parts.next().is_some() {
            return Err(format!("Upload-Metadata pair {pair:?} is not `key base64`"));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an Upload-Metadata key is empty or not printable ASCII".into());
        }
        let value = B64
            .decode(value)
            .map_err(|_| format!("Upload-Metadata value of {key:?} is not base64"))?;
        if out.insert(key.to_owned(), value).is_some() {
            return Err(format!("Upload-Metadata names {key:?} twice"));
        }
    }
    Ok(out)
}

/// The track key of an upload: metadata `key`, else `filename`.
fn key_of(metadata: &HashMap<String, Vec<u8>>) -> Result<TrackKey, ApiError> {
    let raw = metadata
        .get("key")
        .or_else(|| metadata.get("filename"))
        .ok_or_else(|| bad("Upload-Metadata must name the track: `key` (or `filename`)"))?;
    let raw = std::str::from_utf8(raw).map_err(|_| bad("the track key is not UTF-8"))?;
    TrackKey::new(raw).map_err(|e| bad(e.to_string()))
}

/// The rights holder an upload's metadata names (`rightsHolder`), if any.
fn holder_of(
    metadata: &HashMap<String, Vec<u8>>,
) -> Result<Option<lockerstore::RightsHolder>, ApiError> {
    metadata
        .get("rightsHolder")
        .map(|raw| crate::api::rights_holder(raw))
        .transpose()
}

/// The track's URL in the upload API, percent-encoded.
fn track_location(key: &str) -> String {
    let mut s = String::from("/api/v1/tracks/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn header_value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn options(State(app): State<App>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(TUS_VERSION_HEADER, HeaderValue::from_static(TUS_VERSION));
    h.insert(
        TUS_EXTENSION,
        HeaderValue::from_static("creation,termination,expiration"),
    );
    h.insert(TUS_MAX_SIZE, header_value(app.uploads.limits.max_size));
    r
}

async fn create(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(r) = version_mismatch(&headers) {
        return Ok(r);
    }
    let user = user_of(&app, &Method::POST, &headers)?;
    let Some(length) = number(&headers, &UPLOAD_LENGTH)? else {
        return Err(if headers.contains_key(UPLOAD_DEFER_LENGTH) {
            bad("Upload-Defer-Length is not supported: send Upload-Length")
        } else {
            bad("Upload-Length is needed")
        });
    };
    if length == 0 {
        return Err(bad("an empty upload holds no track"));
    }
    if length > app.uploads.limits.max_size {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "at most {} bytes per upload (Tus-Max-Size)",
                app.uploads.limits.max_size
            ),
        ));
    }
    let metadata = match headers.get(UPLOAD_METADATA) {
        None => String::new(),
        Some(v) if v.len() > MAX_METADATA => {
            return Err(bad(format!("Upload-Metadata is over {MAX_METADATA} bytes")));
        }
        Some(v) => v
            .to_str()
            .map_err(|_| bad("Upload-Metadata is not ASCII"))?
            .to_owned(),
    };
    let parsed = parse_metadata(&metadata).map_err(bad)?;
    let key = key_of(&parsed)?;
    // Checked now so a bad name fails before any byte is sent; `finish` reads it again.
    holder_of(&parsed)?;
    let usage = {
        let (store, user, key) = (app.store.clone(), user.clone(), key.clone());
        blocking(move || {
            let mut usage = Usage::default();
            match store.quota(&user) {
                Ok(q) => {
                    usage.max_bytes = q.quota.max_bytes;
                    usage.max_tracks = q.quota.max_tracks;
                    usage.counted_bytes = q.counted_bytes;
                    usage.counted_tracks = q.counted_tracks;
                }
                // Limits are set in the same row as usage: a user unknown to the store has none.
                Err(Error::UnknownUser(_)) => return Ok(usage),
                Err(e) => return Err(e),
            }
            match store.track_info(&user, &key) {
                Ok(t) => usage.replaces = Some(t.size),
                Err(Error::UnknownUser(_) | Error::TrackNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            Ok(usage)
        })
        .await?
    };
    let uploads = app.uploads.clone();
    let up = run(move || uploads.create(&user, &key, length, metadata, &usage)).await?;
    tracing::info!(upload = %up.id, user = %up.user, length, "upload created");
    let mut r = StatusCode::CREATED.into_response();
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        header_value(format!("/api/v1/uploads/{}", up.id)),
    );
    h.insert(
        UPLOAD_EXPIRES,
        header_value(httpdate::fmt_http_date(app.uploads.expires_at(&up))),
    );
    Ok(r)
}

async fn head(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(r) = version_mismatch(&headers) {
        return Ok(r);
    }
    let user = user_of(&app, &Method::HEAD, &headers)?;
    let up = app.uploads.get(&id, &user).ok_or_else(not_found)?;
    up.touch();
    let p = up.progress();
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    h.insert(UPLOAD_OFFSET, header_value(p.offset));
    h.insert(UPLOAD_LENGTH, header_value(up.length));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        UPLOAD_EXPIRES,
        header_value(httpdate::fmt_http_date(app.uploads.expires_at(&up))),
    );
    if !up.metadata.is_empty() {
        h.insert(UPLOAD_METADATA, header_value(&up.metadata));
    }
    if let Some(fp) = &p.done {
        h.insert(TRACK_LOCATION, header_value(track_location(&up.key)));
        h.insert(TRACK_FINGERPRINT, header_value(fp));
    }
    Ok(r)
}

async fn terminate(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(r) = version_mismatch(&headers) {
        return Ok(r);
    }
    let user = user_of(&app, &Method::DELETE, &headers)?;
    let up = app.uploads.get(&id, &user).ok_or_else(not_found)?;
    let claim = up
        .claim()
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "a request is writing this upload"))?;
    if up.gone.load(Ordering::Acquire) {
        return Err(not_found());
    }
    let uploads = app.uploads.clone();
    run(move || {
        uploads.remove(&claim);
        Ok(())
    })
    .await?;
    tracing::info!(upload = %id, "upload terminated");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn patch(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if let Some(r) = version_mismatch(headers) {
        return Ok(r);
    }
    let user = user_of(&app, request.method(), headers)?;
    let up = app.uploads.get(&id, &user).ok_or_else(not_found)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if content_type != Some("application/offset+octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/offset+octet-stream is needed",
        ));
    }
    let offset = number(headers, &UPLOAD_OFFSET)?.ok_or_else(|| bad("Upload-Offset is needed"))?;
    let content_length = number(headers, &header::CONTENT_LENGTH)?;
    let claim = up.claim().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "another request is writing this upload",
        )
    })?;
    if up.gone.load(Ordering::Acquire) {
        return Err(not_found());
    }
    up.touch();
    let start = up.progress().offset;
    if offset != start {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Upload-Offset {offset} is not the upload's offset {start}"),
        ));
    }
    if content_length.is_some_and(|n| n > up.length - start) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body goes past Upload-Length {}", up.length),
        ));
    }
    // The body is read by a task of its own: if the client goes away and the connection drops
    // this handler, the task still syncs and records what arrived.
    let body = request.into_body();
    let task = tokio::spawn(append(app.clone(), claim, start, body));
    let p = task
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))??;
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(UPLOAD_OFFSET, header_value(p.offset));
    if let Some(fp) = &p.done {
        h.insert(TRACK_LOCATION, header_value(track_location(&up.key)));
        h.insert(TRACK_FINGERPRINT, header_value(fp));
    } else {
        h.insert(
            UPLOAD_EXPIRES,
            header_value(httpdate::fmt_http_date(app.uploads.expires_at(&up))),
        );
    }
    Ok(r)
}

/// The staging file of a claimed upload, open for appending at `start`.
struct Staging {
    file: File,
    buf: Vec<u8>,
}

/// Moves `staging` to the blocking pool for `f` and back.
async fn on_file<T: Send + 'static>(
    staging: Staging,
    f: impl FnOnce(&mut Staging) -> io::Result<T> + Send + 'static,
) -> Result<(Staging, io::Result<T>), ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut staging = staging;
        let r = f(&mut staging);
        (staging, r)
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

/// How a body ended.
enum End {
    /// All of it arrived.
    Complete,
    /// It was cut off: what arrived is kept.
    CutOff(String),
    /// It went past the upload's length: none of it is kept.
    TooLong,
}

/// Appends `body` to the claimed upload from `start` (its offset of record), syncs and records
/// the new offset, and puts the track into the store once the upload is complete.
async fn append(app: App, claim: Claim, start: u64, body: Body) -> Result<Progress, ApiError> {
    let up = claim.0.clone();
    let too_long = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body goes past Upload-Length {}", up.length),
        )
    };
    if up.progress().done.is_some() {
        // Finished: only its outcome is left to tell, to an empty PATCH at the final offset.
        let mut stream = upload_frames(body);
        while let Some(Ok(frame)) = stream.next().await {
            if !frame.is_empty() {
                return Err(too_long());
            }
        }
        return Ok(up.progress());
    }
    let uploads = app.uploads.clone();
    let path = uploads.bin(&up.id);
    let opened = run(move || {
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        // Bytes past the offset of record were never acknowledged: they go.
        file.set_len(start).map_err(io_error)?;
        file.seek(SeekFrom::Start(start)).map_err(io_error)?;
        Ok(file)
    })
    .await?;
    let mut staging = Staging {
        file: opened,
        buf: Vec::with_capacity(WRITE_BUF),
    };
    let room = up.length - start;
    let mut received = 0u64;
    let mut stream = upload_frames(body);
    let end = loop {
        let frame = match stream.next().await {
            None => break End::Complete,
            Some(Err(e)) => break End::CutOff(e.to_string()),
            Some(Ok(frame)) => frame,
        };
        if frame.len() as u64 > room - received {
            break End::TooLong;
        }
        received += frame.len() as u64;
        staging.buf.extend_from_slice(&frame);
        if staging.buf.len() >= WRITE_BUF {
            let (s, r) = on_file(staging, |s| {
                s.file.write_all(&s.buf)?;
                s.buf.clear();
                Ok(())
            })
            .await?;
            staging = s;
            if let Err(e) = r {
                // Nothing of this request is acknowledged: the next PATCH cuts it back.
                return Err(io_error(e));
            }
        }
    };
    drop(stream);
    if let End::TooLong = end {
        let (_, r) = on_file(staging, move |s| {
            s.file.set_len(start)?;
            s.file.sync_data()
        })
        .await?;
        r.map_err(io_error)?;
        return Err(too_long());
    }
    // Whether the body ended or was cut off, what arrived is synced, then recorded.
    let record_up = up.clone();
    let (_, r) = on_file(staging, move |s| {
        s.file.write_all(&s.buf)?;
        s.file.sync_data()?;
        if received > 0 {
            record_up.touch();
            let p = Progress {
                offset: start + received,
                done: None,
            };
            uploads.save(&record_up, &p)?;
            record_up.set_progress(p);
        }
        Ok(())
    })
    .await?;
    r.map_err(io_error)?;
    if let End::CutOff(why) = end {
        tracing::info!(upload = %up.id, kept = start + received, why = %why, "a PATCH was cut off");
        return Err(bad(format!(
            "the body was cut off ({why}); the upload holds {} bytes",
            start + received
        )));
    }
    let p = up.progress();
    if p.offset < up.length || p.done.is_some() {
        return Ok(p);
    }
    run(move || finish(&app, &claim)).await
}

/// Puts a complete, claimed upload into the store (blocking). On success the upload keeps only
/// its record, marked done. Over quota (or refused as bad input) it is discarded; any other
/// failure keeps it complete, and an empty `PATCH` at its final offset tries again.
fn finish(app: &App, claim: &Claim) -> Result<Progress, ApiError> {
    let up = &claim.0;
    let uploads = &app.uploads;
    let (user, key) = match (UserId::new(&up.user), TrackKey::new(&up.key)) {
        (Ok(u), Ok(k)) => (u, k),
        _ => {
            uploads.remove(claim);
            return Err(bad("the upload's user or key is invalid"));
        }
    };
    // The metadata was checked when the upload was created (a record from an older server
    // that fails the check now is refused like a bad key).
    let holder = match parse_metadata(&up.metadata)
        .map_err(bad)
        .and_then(|m| holder_of(&m))
    {
        Ok(h) => h,
        Err(e) => {
            uploads.remove(claim);
            return Err(e);
        }
    };
    let mut options = lockerstore::PutOptions::default().expected_len(up.length);
    if let Some(h) = holder {
        options = options.rights_holder(h);
    }
    let file = File::open(uploads.bin(&up.id)).map_err(io_error)?;
    let put = app.store.put_with(
        &user,
        &key,
        io::BufReader::new(file).take(up.length),
        &options,
    );
    match put {
        Ok(_) => {}
        // The staging file failed to read: the server's fault, not the client's.
        Err(e @ Error::Upload { .. }) => {
            tracing::error!(upload = %up.id, error = %e, "reading a staged upload failed");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ));
        }
        Err(e) if e.is_bad_input() => {
            tracing::info!(upload = %up.id, error = %e, "a finished upload was refused");
            uploads.remove(claim);
            return Err(ApiError::from(e));
        }
        Err(e) => return Err(ApiError::from(e)),
    }
    app.stored(&user, &key);
    let info = app.store.track_info(&user, &key).map_err(ApiError::from)?;
    let p = Progress {
        offset: up.length,
        done: Some(info.fingerprint.to_hex()),
    };
    up.touch();
    // The track is committed: from here on a failure only loses the late answer.
    if let Err(e) = uploads.save(up, &p) {
        tracing::error!(upload = %up.id, error = %e, "recording a finished upload failed");
    }
    up.set_progress(p.clone());
    if let Err(e) = fs::remove_file(uploads.bin(&up.id)) {
        tracing::error!(upload = %up.id, error = %e, "removing a finished upload's bytes failed");
    }
    tracing::info!(upload = %up.id, user = %up.user, "upload stored");
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses_as_tus_writes_it() {
        let m = parse_metadata("key QXJ0aXN0L1NvbmcubXAz,filename c29uZy5tcDM=,flag").unwrap();
        assert_eq!(m["key"], b"Artist/Song.mp3");
        assert_eq!(m["filename"], b"song.mp3");
        assert_eq!(m["flag"], b"");
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(parse_metadata("key !!!").is_err());
        assert!(parse_metadata("key YQ==,key YQ==").is_err());
        assert!(parse_metadata("key YQ== YQ==").is_err());
        assert!(parse_metadata(",").is_err());
        let key = key_of(&parse_metadata("filename c29uZy5tcDM=").unwrap()).unwrap();
        assert_eq!(key.as_str(), "song.mp3");
        assert!(key_of(&parse_metadata("other YQ==").unwrap()).is_err());
    }

    #[test]
    fn numbers_are_digits_only() {
        let mut h = HeaderMap::new();
        assert_eq!(number(&h, &UPLOAD_OFFSET).unwrap(), None);
        for (v, ok) in [
            ("0", Some(0)),
            ("123", Some(123)),
            ("+5", None),
            ("-1", None),
            ("1e3", None),
            ("", None),
            ("99999999999999999999999", None),
        ] {
            h.insert(UPLOAD_OFFSET, HeaderValue::from_static(v));
            assert_eq!(number(&h, &UPLOAD_OFFSET).ok().flatten(), ok, "{v}");
        }
    }

    #[test]
    fn track_locations_are_percent_encoded() {
        assert_eq!(
            track_location("Artist/Album/01 Song.mp3"),
            "/api/v1/tracks/Artist/Album/01%20Song.mp3"
        );
        assert_eq!(track_location("é?#"), "/api/v1/tracks/%C3%A9%3F%23");
    }
}
