//! tus 1.0 resumable uploads at `/api/v1/uploads`: the core protocol (`HEAD` tells the offset,
//! `PATCH` appends) with the creation and termination extensions, and expiration.
//!
//! - `POST` creates an upload of `Upload-Length` bytes. `Upload-Metadata` names the track: its
//!   `key` pair is the track key; without one, its `filename` pair is used as the key.
//! - `PATCH` appends the streamed body at `Upload-Offset` to a staging file and answers only
//!   after the bytes are synced: the offset a client is told is always durable. A body cut off
//!   (the client went away, the body stream failed, or it stalled for [`BODY_IDLE`]) keeps what
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
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use futures_util::StreamExt;
use lockerstore::{Error, TrackKey, UserId};
use serde::{Deserialize, Serialize};

use crate::api::user_of;
use crate::app::App;
use crate::http::{ApiError, blocking};

/// The one protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// Most bytes of `Upload-Metadata`.
pub const MAX_METADATA: usize = 4096;
/// A `PATCH` body that sends nothing for this long is treated as cut off.
pub const BODY_IDLE: Duration = Duration::from_secs(60);
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

/// The limits of resumable uploads.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// An upload not touched for this long is removed (finished ones too).
    pub expiry: Duration,
    /// Most bytes of one upload (`Tus-Max-Size`).
    pub max_size: u64,
    /// Most unfinished uploads one user may have open.
    pub max_open_per_user: usize,
    /// Most finished uploads a user's records keep (each answers a client that lost the last
    /// answer until it expires); a new upload past it drops that user's oldest finished one.
    pub max_finished_per_user: usize,
}

/// The record of one upload, as `<id>.json` holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    version: u32,
    user: String,
    key: String,
    length: u64,
    /// Bytes synced and acknowledged.
    offset: u64,
    /// `Upload-Metadata` as the client sent it (`HEAD` repeats it).
    metadata: String,
    /// Unix seconds.
    created: u64,
    /// Unix seconds of the last request that used the upload.
    touched: u64,
    /// Once the put committed: the track's fingerprint (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<String>,
}

/// What changes over an upload's life.
#[derive(Clone, Debug)]
struct Progress {
    offset: u64,
    done: Option<String>,
}

/// One upload in memory.
#[derive(Debug)]
struct Upload {
    id: String,
    user: String,
    key: String,
    length: u64,
    metadata: String,
    created: u64,
    touched: AtomicU64,
    progress: Mutex<Progress>,
    /// Held by the one request that may change the upload (a `PATCH`, a `DELETE`, expiry).
    busy: AtomicBool,
    /// Set, under `busy`, once the upload was removed.
    gone: AtomicBool,
}

impl Upload {
    fn progress(&self) -> Progress {
        self.progress.lock().expect("upload lock").clone()
    }

    fn set_progress(&self, p: Progress) {
        *self.progress.lock().expect("upload lock") = p;
    }

    fn touch(&self) {
        self.touched.store(unix_now(), Ordering::Relaxed);
    }

    fn claim(self: &Arc<Self>) -> Option<Claim> {
        self.busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Claim(self.clone()))
    }

    fn record(&self, p: &Progress) -> Record {
        Record {
            version: 1,
            user: self.user.clone(),
            key: self.key.clone(),
            length: self.length,
            offset: p.offset,
            metadata: self.metadata.clone(),
            created: self.created,
            touched: self.touched.load(Ordering::Relaxed),
            done: p.done.clone(),
        }
    }
}

/// The right to change one upload; released when dropped.
struct Claim(Arc<Upload>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// The resumable uploads of one server.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    limits: Limits,
    all: Mutex<HashMap<String, Arc<Upload>>>,
    /// Uploads found complete at start whose put had not committed.
    pending: Mutex<Vec<Arc<Upload>>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_id() -> io::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An I/O failure of the staging area as the client sees it: never a server path.
fn io_error(e: io::Error) -> ApiError {
    if e.kind() == io::ErrorKind::StorageFull {
        tracing::error!(error = %e, "upload staging full");
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "the server is out of space",
        )
    } else {
        tracing::error!(error = %e, "upload staging failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such upload")
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Runs blocking work (files, the store) on tokio's blocking pool.
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, then syncs the
/// directory: a crash leaves the old or the new file.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".tmp").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// What the store says about a user before an upload is created.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    max_bytes: Option<u64>,
    counted_bytes: u64,
    max_tracks: Option<u64>,
    counted_tracks: u64,
    /// The size of the track the upload would replace.
    replaces: Option<u64>,
}

impl Usage {
    /// Refuses an upload of `length` bytes that cannot fit, counting the user's other open
    /// uploads (`staged` bytes) as stored. A precheck: the put checks exactly at the end.
    fn check(&self, length: u64, staged: u64) -> Result<(), ApiError> {
        let over = |m: String| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m);
        if let Some(max) = self.max_bytes {
            let free = max
                .saturating_sub(self.counted_bytes)
                .saturating_add(self.replaces.unwrap_or(0))
                .saturating_sub(staged);
            if length > free {
                return Err(over(format!(
                    "over quota: {free} bytes are free for new uploads, {length} asked for"
                )));
            }
        }
        if let Some(max) = self.max_tracks
            && self.replaces.is_none()
            && self.counted_tracks >= max
        {
            return Err(over(format!("over quota: at most {max} tracks")));
        }
        Ok(())
    }
}

impl Uploads {
    /// Opens the staging directory `dir` (created if missing) and takes up the uploads a
    /// previous run left: a `.bin` longer than its recorded offset is cut back to it, leftovers
    /// (temporary files, a `.bin` without a record, an unreadable record) are removed, expired
    /// uploads too.
    pub fn open(dir: &Path, limits: Limits) -> io::Result<Uploads> {
        fs::create_dir_all(dir)?;
        let uploads = Uploads {
            dir: dir.to_owned(),
            limits,
            all: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
        };
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp") {
                fs::remove_file(dir.join(name))?;
            } else if let Some(id) = name.strip_suffix(".json")
                && is_id(id)
            {
                ids.push(id.to_owned());
            } else if let Some(id) = name.strip_suffix(".bin")
                && is_id(id)
                && !dir.join(format!("{id}.json")).exists()
            {
                fs::remove_file(dir.join(name))?;
            }
        }
        for id in ids {
            if let Err(e) = uploads.take_up(&id) {
                tracing::warn!(upload = %id, error = %e, "dropping an unusable upload");
                uploads.remove_files(&id);
            }
        }
        Ok(uploads)
    }

    fn take_up(&self, id: &str) -> io::Result<()> {
        let record: Record =
            serde_json::from_slice(&fs::read(self.json(id))?).map_err(io::Error::other)?;
        if UserId::new(&record.user).is_err()
            || TrackKey::new(&record.key).is_err()
            || record.offset > record.length
        {
            return Err(io::Error::other("an invalid record"));
        }
        let up = Arc::new(Upload {
            id: id.to_owned(),
            user: record.user.clone(),
            key: record.key.clone(),
            length: record.length,
            metadata: record.metadata.clone(),
            created: record.created,
            touched: AtomicU64::new(record.touched),
            progress: Mutex::new(Progress {
                offset: record.offset,
                done: record.done.clone(),
            }),
            busy: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        });
        if self.expired(&up) {
            tracing::info!(upload = %id, "removing an expired upload");
            self.remove_files(id);
            return Ok(());
        }
        if record.done.is_some() {
            // Finished before the stop: only its record is kept, for clients asking late.
            match fs::remove_file(self.bin(id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            let file = OpenOptions::new().write(true).open(self.bin(id))?;
            let len = file.metadata()?.len();
            if len > record.offset {
                // Written but never acknowledged: the client sends it again.
                file.set_len(record.offset)?;
                file.sync_all()?;
            } else if len < record.offset {
                tracing::warn!(upload = %id, recorded = record.offset, len,
                    "staged bytes lost: the upload resumes from what is there");
                let p = Progress {
                    offset: len,
                    done: None,
                };
                self.save(&up, &p)?;
                up.set_progress(p);
            }
            if up.progress().offset == up.length {
                self.pending.lock().expect("uploads lock").push(up.clone());
            }
        }
        self.all
            .lock()
            .expect("uploads lock")
            .insert(id.to_owned(), up);
        Ok(())
    }

    fn bin(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.bin"))
    }

    fn json(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn save(&self, up: &Upload, p: &Progress) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&up.record(p)).map_err(io::Error::other)?;
        write_atomic(&self.dir, &self.json(&up.id), &bytes)
    }

    fn remove_files(&self, id: &str) {
        for path in [self.bin(id), self.json(id)] {
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::error!(upload = %id, error = %e, "removing an upload's file failed");
            }
        }
    }

    fn expired(&self, up: &Upload) -> bool {
        unix_now().saturating_sub(up.touched.load(Ordering::Relaxed))
            >= self.limits.expiry.as_secs().max(1)
    }

    fn expires_at(&self, up: &Upload) -> SystemTime {
        UNIX_EPOCH
            + Duration::from_secs(up.touched.load(Ordering::Relaxed))
            + self.limits.expiry.max(Duration::from_secs(1))
    }

    /// `user`'s upload `id`: `None` when it does not exist, is someone else's or expired.
    fn get(&self, id: &str, user: &UserId) -> Option<Arc<Upload>> {
        let up = self.all.lock().expect("uploads lock").get(id).cloned()?;
        (up.user == user.as_str() && !self.expired(&up)).then_some(up)
    }

    /// Creates an upload (blocking: it makes its files). Refuses one over the user's limits:
    /// their open uploads count as stored.
    fn create(
        &self,
        user: &UserId,
        key: &TrackKey,
        length: u64,
        metadata: String,
        usage: &Usage,
    ) -> Result<Arc<Upload>, ApiError> {
        let id = random_id().map_err(io_error)?;
        let now = unix_now();
        let up = Arc::new(Upload {
            id: id.clone(),
            user: user.as_str().to_owned(),
            key: key.as_str().to_owned(),
            length,
            metadata,
            created: now,
            touched: AtomicU64::new(now),
            progress: Mutex::new(Progress {
                offset: 0,
                done: None,
            }),
            busy: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        });
        let evicted = {
            let mut all = self.all.lock().expect("uploads lock");
            let mine: Vec<_> = all
                .values()
                .filter(|u| {
                    u.user == user.as_str() && u.progress().done.is_none() && !self.expired(u)
                })
                .collect();
            if mine.len() >= self.limits.max_open_per_user {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "at most {} unfinished uploads may be open at once",
                        self.limits.max_open_per_user
                    ),
                ));
            }
            let staged = mine
                .iter()
                .fold(0u64, |sum, u| sum.saturating_add(u.length));
            usage.check(length, staged)?;
            let finished: Vec<&Arc<Upload>> = all
                .values()
                .filter(|u| u.user == user.as_str() && u.progress().done.is_some())
                .collect();
            let evicted = (finished.len() >= self.limits.max_finished_per_user)
                .then(|| {
                    finished
                        .iter()
                        .min_by_key(|u| u.created)
                        .and_then(|u| u.claim())
                })
                .flatten();
            all.insert(id.clone(), up.clone());
            evicted
        };
        if let Some(old) = evicted {
            tracing::debug!(upload = %old.0.id, "dropping a user's oldest finished upload record");
            self.remove(&old);
        }
        let made = File::create_new(self.bin(&id))
            .and_then(|f| f.sync_all())
            .and_then(|()| self.save(&up, &up.progress()));
        if let Err(e) = made {
            self.all.lock().expect("uploads lock").remove(&id);
            self.remove_files(&id);
            return Err(io_error(e));
        }
        Ok(up)
    }

    /// Removes a claimed upload: its record, its files.
    fn remove(&self, claim: &Claim) {
        claim.0.gone.store(true, Ordering::Release);
        self.all.lock().expect("uploads lock").remove(&claim.0.id);
        self.remove_files(&claim.0.id);
    }

    /// Removes every expired upload no request is using; returns how many.
    pub fn sweep(&self) -> usize {
        let expired: Vec<Claim> = self
            .all
            .lock()
            .expect("uploads lock")
            .values()
            .filter(|u| self.expired(u))
            .filter_map(|u| u.claim())
            .collect();
        for claim in &expired {
            tracing::info!(upload = %claim.0.id, "removing an expired upload");
            self.remove(claim);
        }
        expired.len()
    }

    /// How often [`Uploads::sweep`] should run.
    pub fn sweep_interval(&self) -> Duration {
        (self.limits.expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }
}

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
    let user = user_of(&app, &headers)?;
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
    let key = key_of(&parse_metadata(&metadata).map_err(bad)?)?;
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
    let user = user_of(&app, &headers)?;
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
    let user = user_of(&app, &headers)?;
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
    let user = user_of(&app, headers)?;
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
        let mut stream = body.into_data_stream();
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(BODY_IDLE, stream.next()).await {
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
    let mut stream = body.into_data_stream();
    let end = loop {
        let frame = match tokio::time::timeout(BODY_IDLE, stream.next()).await {
            Err(_) => break End::CutOff("the body stalled".into()),
            Ok(None) => break End::Complete,
            Ok(Some(Err(e))) => break End::CutOff(e.to_string()),
            Ok(Some(Ok(frame))) => frame,
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
    let file = File::open(uploads.bin(&up.id)).map_err(io_error)?;
    let put = app.store.put_with(
        &user,
        &key,
        io::BufReader::new(file).take(up.length),
        &lockerstore::PutOptions::default().expected_len(up.length),
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
