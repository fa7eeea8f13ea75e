//! Prometheus metrics at `/metrics` (OpenMetrics text): requests by route, method and status;
//! bytes in and out; requests in flight; put latency; quota refusals; and the store's own
//! figures (logical, physical and garbage bytes, tracks, users), read at scrape time and kept for
//! a few seconds so a busy scraper cannot make the server recount its users all the time.
//!
//! The registry is process-wide, as metrics are: any path that refuses a put over quota or
//! times a put reports here without being handed a reference.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::app::App;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route's pattern (`/api/v1/tracks/{*key}`), never the path: track names stay out.
    route: String,
    status: u16,
}

/// How long the store's figures are reused between scrapes.
const STORE_FIGURES_TTL: Duration = Duration::from_secs(5);

struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    bytes_in: Counter,
    bytes_out: Counter,
    put_seconds: Histogram,
    quota_refusals: Counter,
    store: [Gauge; 5],
    store_read_at: Mutex<Option<Instant>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("locker");
    let requests = Family::<RequestLabels, Counter>::default();
    registry.register("http_requests", "HTTP requests answered", requests.clone());
    let in_flight = Gauge::default();
    registry.register(
        "http_requests_in_flight",
        "HTTP requests being answered",
        in_flight.clone(),
    );
    let bytes_in = Counter::default();
    registry.register(
        "http_request_body_bytes",
        "Bytes of request bodies received",
        bytes_in.clone(),
    );
    let bytes_out = Counter::default();
    registry.register(
        "http_response_body_bytes",
        "Bytes of response bodies sent",
        bytes_out.clone(),
    );
    // 1 ms .. ~65 s.
    let put_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
    registry.register(
        "put_seconds",
        "Time from the start of an upload's body to the committed track (stored tracks only)",
        put_seconds.clone(),
    );
    let quota_refusals = Counter::default();
    registry.register(
        "quota_refusals",
        "Puts refused because they would exceed the user's quota",
        quota_refusals.clone(),
    );
    let store: [Gauge; 5] = Default::default();
    for (gauge, (name, help)) in store.iter().zip([
        ("store_logical_bytes", "Bytes users uploaded and hold"),
        (
            "store_physical_bytes",
            "Bytes of chunk records committed tracks reference",
        ),
        (
            "store_garbage_bytes",
            "Bytes of chunk records no track references",
        ),
        ("store_tracks", "Tracks in all lockers"),
        ("store_users", "Users holding at least one track"),
    ]) {
        registry.register(name, help, gauge.clone());
    }
    Metrics {
        registry,
        requests,
        in_flight,
        bytes_in,
        bytes_out,
        put_seconds,
        quota_refusals,
        store,
        store_read_at: Mutex::new(None),
    }
});

/// Records a put that committed, timed from the first byte of its body.
pub fn observe_put(took: Duration) {
    METRICS.put_seconds.observe(took.as_secs_f64());
}

/// Records a put refused over quota.
pub fn quota_refused() {
    METRICS.quota_refusals.inc();
}

/// Middleware: counts every request and the bytes of its body and of its answer as they stream.
pub async fn track(request: Request, next: Next) -> Response {
    let m = &*METRICS;
    // A fixed set: any other method (a client may send any token) would be a new series.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request = request.map(|body| {
        Body::new(body.map_frame(|frame| {
            if let Some(data) = frame.data_ref() {
                METRICS.bytes_in.inc_by(data.len() as u64);
            }
            frame
        }))
    });
    m.in_flight.inc();
    let response = next.run(request).await;
    m.in_flight.dec();
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response.map(|body| {
        Body::new(body.map_frame(|frame| {
            if let Some(data) = frame.data_ref() {
                METRICS.bytes_out.inc_by(data.len() as u64);
            }
            frame
        }))
    })
}

/// `GET /metrics`.
pub async fn render(State(app): State<App>) -> Response {
    let m = &*METRICS;
    let stale = m
        .store_read_at
        .lock()
        .expect("metrics lock")
        .is_none_or(|at| at.elapsed() > STORE_FIGURES_TTL);
    if stale {
        let store = app.store.clone();
        match tokio::task::spawn_blocking(move || store.stats()).await {
            Ok(Ok(s)) => {
                for (gauge, value) in m.store.iter().zip([
                    s.logical_bytes,
                    s.physical_bytes,
                    s.garbage_bytes,
                    s.tracks,
                    s.users,
                ]) {
                    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
                }
                *m.store_read_at.lock().expect("metrics lock") = Some(Instant::now());
            }
            Ok(Err(e)) => tracing::error!(error = %e, "store figures for /metrics"),
            Err(e) => tracing::error!(error = %e, "store figures for /metrics"),
        }
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &m.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
