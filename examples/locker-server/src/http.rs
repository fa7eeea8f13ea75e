//! What every HTTP surface of the server shares: the error answer, running engine calls off the
//! async workers, and serving a track's bytes with the semantics players need (single byte
//! ranges, `HEAD`, a strong `ETag` that is the track's fingerprint, `If-None-Match`, `If-Range`,
//! content types) through the verified reader.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Buf;
use futures_util::StreamExt;
use lockerstore::{Error, Store, TrackKey, TrackReader, UserId};
use serde_json::json;

/// An error as the JSON APIs answer it: a status and a body naming only the caller's own names.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::UnknownUser(_) | Error::TrackNotFound { .. } => StatusCode::NOT_FOUND,
            Error::QuotaExceeded { .. } => {
                crate::metrics::quota_refused();
                StatusCode::INSUFFICIENT_STORAGE
            }
            Error::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            e if e.is_bad_input() => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // The store's own failures name server paths: they go to the log, not to the client.
        let message = match &e {
            Error::DiskFull { .. } => {
                tracing::error!(error = %e, "store full");
                "the server is out of space".to_owned()
            }
            e if e.is_corruption() => {
                tracing::error!(error = %e, "stored data failed verification");
                "the stored track failed verification".to_owned()
            }
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %e, "store error");
                "internal error".to_owned()
            }
            _ => e.to_string(),
        };
        ApiError(status, message)
    }
}

/// How much of a request body the server still reads, and for how long, once it has answered
/// without reading it all (an upload refused for its key, its name or its size, say).
///
/// Closing a connection with unread bytes in its receive buffer sends a TCP reset, and a reset
/// can destroy the answer in the client's buffers before the client reads it: the client sees a
/// dropped connection instead of the 4xx. Reading (and discarding) the rest for a bounded time
/// first, as nginx's lingering close does, lets the answer arrive; the work stays bounded by the
/// bytes received and by [`LINGER_TIME`].
pub const LINGER_BYTES: usize = 64 << 20;
/// See [`LINGER_BYTES`].
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Middleware for every route: the request's body drains in the background when the handler
/// drops it unread ([`LINGER_BYTES`]).
pub async fn linger(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    next.run(request.map(|body| Body::new(Lingering(Some(body)))))
        .await
}

/// A request body that, dropped before its end, hands its rest to a task that reads it.
struct Lingering(Option<Body>);

impl HttpBody for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let Some(body) = self.0.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            self.0 = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.0.take() else { return };
        if body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut frames = body.into_data_stream();
            let mut read = 0;
            let _ = tokio::time::timeout(LINGER_TIME, async {
                while let Some(Ok(frame)) = frames.next().await {
                    read += frame.len();
                    if read > LINGER_BYTES {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

/// Runs a blocking engine call on tokio's blocking pool, never on an async worker.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    blocking_op("engine", f).await
}

/// [`blocking`], traced as engine operation `op` inside the request's span.
pub async fn blocking_op<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::info_span!("engine", op);
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
        .map_err(ApiError::from)
}

/// How long an upload may send nothing before it is cut off (and stores nothing).
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// After [`UPLOAD_IDLE_TIMEOUT`], an upload must have averaged this rate (32 kbit/s, a slow
/// mobile uplink) or it is cut off: a byte every 59 s cannot hold the engine's thread for ever.
pub const UPLOAD_MIN_RATE: u64 = 4 << 10;

/// Bytes the upload reader hands over at once (and at most about three times that is buffered
/// per upload).
const UPLOAD_PIECE: usize = 1 << 20;

/// A request body's frames under the upload rules, for every path that takes an upload (the
/// upload API's PUT, tus's PATCH): a body that sends nothing for [`UPLOAD_IDLE_TIMEOUT`], or
/// averages less than [`UPLOAD_MIN_RATE`] after it, fails with `TimedOut`; a body cut short
/// fails as the connection does. The stream ends after its first error.
pub fn upload_frames(
    body: Body,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static {
    let state = Some((body.into_data_stream(), tokio::time::Instant::now(), 0u64));
    Box::pin(futures_util::stream::unfold(state, |state| async move {
        let (mut frames, started, total) = state?;
        let next = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, frames.next()).await;
        let elapsed = started.elapsed();
        let too_slow = elapsed > UPLOAD_IDLE_TIMEOUT
            && total < UPLOAD_MIN_RATE.saturating_mul(elapsed.as_secs());
        let timed_out = |why| std::io::Error::new(std::io::ErrorKind::TimedOut, why);
        match next {
            Ok(Some(Ok(_))) if too_slow => Some((Err(timed_out("the upload is too slow")), None)),
            Ok(Some(Ok(frame))) => {
                let total = total + frame.len() as u64;
                Some((Ok(frame), Some((frames, started, total))))
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Err(_) => Some((Err(timed_out("the upload sent nothing for too long")), None)),
        }
    }))
}

/// A request body as a blocking `Read` for the engine, for use on a blocking thread, under the
/// rules of [`upload_frames`].
///
/// An async task gathers the body's frames (a few KiB each, kept as received: no copy) into
/// groups of 1 MiB and hands them over a channel of two: the engine's thread wakes once per MiB
/// instead of once per frame, and the connection keeps receiving while the engine works. A
/// client cannot hold an upload (and its blocking thread) open by sending (almost) nothing.
pub fn upload_reader(body: Body) -> impl Read + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<VecDeque<Bytes>>>(2);
    tokio::spawn(async move {
        let mut frames = upload_frames(body);
        let mut group = VecDeque::new();
        let mut grouped = 0;
        loop {
            match frames.next().await {
                Some(Ok(frame)) => {
                    grouped += frame.len();
                    group.push_back(frame);
                    if grouped < UPLOAD_PIECE {
                        continue;
                    }
                }
                None => {
                    if !group.is_empty() {
                        let _ = tx.send(Ok(group)).await;
                    }
                    return;
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            grouped = 0;
            if tx.send(Ok(std::mem::take(&mut group))).await.is_err() {
                return; // the engine stopped reading
            }
        }
    });
    PieceReader {
        rx,
        frames: VecDeque::new(),
        failed: None,
    }
}

/// The blocking side of [`upload_reader`].
struct PieceReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<VecDeque<Bytes>>>,
    frames: VecDeque<Bytes>,
    /// An error seen once is returned on every later read.
    failed: Option<(std::io::ErrorKind, String)>,
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some((kind, message)) = &self.failed {
            return Err(std::io::Error::new(*kind, message.clone()));
        }
        while self.frames.front().is_none_or(|f| f.is_empty()) {
            if self.frames.pop_front().is_some() {
                continue;
            }
            match self.rx.blocking_recv() {
                Some(Ok(group)) => self.frames = group,
                Some(Err(e)) => {
                    self.failed = Some((e.kind(), e.to_string()));
                    return Err(e);
                }
                None => return Ok(0),
            }
        }
        // Fill `buf` from as many frames as it takes.
        let mut n = 0;
        while n < buf.len() {
            let Some(frame) = self.frames.front_mut() else {
                break;
            };
            let take = (buf.len() - n).min(frame.len());
            buf[n..n + take].copy_from_slice(&frame[..take]);
            frame.advance(take);
            n += take;
            if frame.is_empty() {
                self.frames.pop_front();
            }
        }
        Ok(n)
    }
}

/// A single byte range of a track of `len` bytes, as RFC 9110 14.1.1 reads `bytes=...`.
/// `Ok(None)`: no usable range (serve the whole track, as a multi-range may be answered);
/// `Err(())`: unsatisfiable (416).
pub fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    // The unit is case-insensitive (RFC 9110 14.1).
    let value = value.trim();
    let Some(spec) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &value[6..])
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => Ok(None),
        (true, false) => {
            let Some(n) = num(last) else { return Ok(None) };
            if n == 0 || len == 0 {
                return Err(());
            }
            Ok(Some((len.saturating_sub(n), len - 1)))
        }
        (false, _) => {
            let Some(start) = num(first) else {
                return Ok(None);
            };
            let end = if last.trim().is_empty() {
                len.saturating_sub(1)
            } else {
                match num(last) {
                    Some(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return Ok(None),
                }
            };
            if start >= len {
                return Err(());
            }
            Ok(Some((start, end)))
        }
    }
}

/// The `Content-Type` of a stored track's container format.
pub fn content_type(format: &str) -> &'static str {
    match format {
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "mp4" => "audio/mp4",
        "ogg-vorbis" | "ogg-opus" => "audio/ogg",
        _ => "application/octet-stream",
    }
}

/// Serves `user`'s track `key` for `GET` or `HEAD` with the request's range and validators.
/// The bytes come from the verified reader on a blocking thread through a small channel: memory
/// stays bounded whatever the track's size, and a chunk that fails verification ends the body
/// with an error, never with other bytes.
pub async fn serve_track(
    store: &Store,
    user: UserId,
    key: TrackKey,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let store = store.clone();
    let reader = blocking(move || store.open_track(&user, &key)).await?;
    let info = reader.info().clone();
    let len = info.size;
    let etag = format!("\"{}\"", info.fingerprint.to_hex());
    let mut response = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CONTENT_TYPE, content_type(info.format));
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    // If-None-Match compares weakly (RFC 9110 13.1.2): `W/"fp"` matches too, as does `*`.
    let none_match = header_str(header::IF_NONE_MATCH).is_some_and(|v| {
        v.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
        })
    });
    if none_match {
        return Ok(response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
    // A range applies only while `If-Range` (when sent) is this track's own strong validator
    // (RFC 9110 13.1.5: one entity tag, compared strongly; a date never matches, as the track
    // has no Last-Modified).
    let range_applies = match header_str(header::IF_RANGE) {
        None => headers.get(header::IF_RANGE).is_none(),
        Some(v) => v.trim() == etag,
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if range_applies => parse_range(r, len),
        _ => Ok(None),
    };
    let (status, start, end) = match range {
        Err(()) => {
            return Ok(response
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .expect("valid response"));
        }
        Ok(Some((s, e))) => {
            response = response.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{len}"));
            (StatusCode::PARTIAL_CONTENT, s, e + 1)
        }
        Ok(None) => (StatusCode::OK, 0, len),
    };
    response = response
        .status(status)
        .header(header::CONTENT_LENGTH, end - start);
    if method == Method::HEAD || start == end {
        return Ok(response.body(Body::empty()).expect("valid response"));
    }
    // The first piece is read before the status goes out: a track whose first chunk fails
    // verification is answered with an error status, not with headers and then a cut body (a
    // client may see that as a dropped connection, with no status at all).
    let want = (end - start).min(READ_PIECE) as usize;
    let (reader, first) = read_piece(reader, start, want)
        .await
        .map_err(|e| ApiError::from(Error::from_io(e)))?;
    let rest = track_body(reader, start + want as u64, end);
    let body = futures_util::stream::once(async move { Ok(first) }).chain(rest);
    Ok(response
        .body(Body::from_stream(body))
        .expect("valid response"))
}

/// Bytes read per blocking call while streaming a track.
const READ_PIECE: u64 = 256 << 10;

/// Reads `want` bytes of a track from `at` on the blocking pool, and hands the reader back.
async fn read_piece(
    mut reader: TrackReader,
    at: u64,
    want: usize,
) -> std::io::Result<(TrackReader, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; want];
        reader.seek(SeekFrom::Start(at))?;
        reader.read_exact(&mut buf)?;
        Ok((reader, buf))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// The bytes `[start, end)` of a track as a body stream. Each piece is read on the blocking pool
/// by its own short call, so a stream that waits on a slow client holds no thread, only its
/// reader; memory stays one piece per stream. A chunk that fails verification ends the stream
/// with an error (the client sees a cut body), never with other bytes.
fn track_body(
    reader: TrackReader,
    start: u64,
    end: u64,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let state = Some((reader, start));
    futures_util::stream::unfold(state, move |state| async move {
        let (reader, at) = state?;
        if at >= end {
            return None;
        }
        let want = (end - at).min(READ_PIECE) as usize;
        match read_piece(reader, at, want).await {
            Ok((reader, buf)) => Some((Ok(buf), Some((reader, at + want as u64)))),
            Err(e) => {
                tracing::error!(error = %e, "track read failed");
                Some((Err(e), None))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=0-1", 100), Ok(Some((0, 1))));
        assert_eq!(parse_range("bytes=10-500", 100), Ok(Some((10, 99))));
        assert_eq!(parse_range("bytes=-20", 100), Ok(Some((80, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=x-", 100), Ok(None));
        assert_eq!(parse_range("Bytes=0-1", 100), Ok(Some((0, 1))));
        assert_eq!(parse_range("bytes", 100), Ok(None));
        assert_eq!(parse_range("bytés=0-1", 100), Ok(None));
    }
}
