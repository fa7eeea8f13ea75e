//! The server's shared state and its routes: every HTTP surface (the upload API, and the
//! surfaces that plug in beside it) is a `Router` of its own, merged here.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::Request;
use axum::routing::get;
use lockerstore::{Store, TrackKey, UserId};
use tower_http::trace::TraceLayer;

use crate::accounts::Accounts;
use crate::catalog::Catalog;
use crate::jobs::Jobs;
use crate::session::Sessions;
use crate::subsonic::AuthModes;
use crate::subsonic::userdata::UserDataStore;
use crate::web::Pages;

/// What every request handler shares.
#[derive(Clone, Debug)]
pub struct App {
    pub store: Store,
    pub accounts: Arc<Accounts>,
    /// The server's own files beside the store's (`<store>/server`).
    pub state_dir: PathBuf,
    /// Resumable uploads in progress (`<store>/server/uploads`).
    pub uploads: Arc<crate::tus::Uploads>,
    /// Who each outstanding upload-avoidance challenge was issued to.
    pub challenges: Arc<crate::avoid::Challenges>,
    /// Every user's catalogue, read from the tracks' tags (`<state>/catalog`).
    pub catalog: Arc<Catalog>,
    /// Every user's stars, play counts and playlists (`<state>/subsonic`).
    pub user_data: Arc<UserDataStore>,
    /// Which credentials `/rest/` takes.
    pub subsonic_auth: AuthModes,
    /// The web pages' signed-in browsers.
    pub sessions: Arc<Sessions>,
    /// Maintenance jobs started over the operator API.
    pub jobs: Arc<Jobs>,
    /// Where the web pages come from.
    pub pages: Pages,
}

impl App {
    /// Called after a track was stored under `user`/`key`, by every path that stores one (the
    /// upload API, resumable uploads, upload avoidance): what the server derives from a track
    /// (its catalogue entry, its counters) is kept up to date here, in one place. Runs on a
    /// blocking thread.
    pub fn stored(&self, user: &UserId, key: &TrackKey) {
        tracing::debug!(user = %user, key = %key, "track stored");
        self.catalog.stored(&self.store, user, key);
    }

    /// Called after `user`'s track `key` was deleted, by every path that deletes one: its
    /// catalogue entry goes. (Stars and play counts stay: the id is derived from the key, so a
    /// track stored again under the same key, retagged say, keeps them.) Runs on a blocking
    /// thread.
    pub fn deleted(&self, user: &UserId, key: &TrackKey) {
        tracing::debug!(user = %user, key = %key, "track deleted");
        self.catalog.deleted(&self.store, user, key);
    }
}

/// Every route of the server, each request traced in a span and counted in the metrics.
pub fn router(app: App) -> Router {
    let operators_only =
        axum::middleware::from_fn_with_state(app.clone(), crate::auth::require_operator);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::api::routes())
        .merge(crate::tus::routes())
        .merge(crate::avoid::routes())
        .merge(crate::subsonic::routes())
        .merge(crate::library_api::routes())
        .merge(crate::auth::user_routes())
        .merge(crate::auth::operator_routes())
        .nest(
            "/api/v1/admin",
            crate::admin::routes().route_layer(operators_only),
        )
        .merge(crate::web::routes())
        .fallback(|| async {
            crate::http::ApiError::new(axum::http::StatusCode::NOT_FOUND, "no such route")
        })
        .layer(axum::middleware::from_fn(crate::web::security_headers))
        .layer(axum::middleware::from_fn(crate::http::linger))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(app)
}

/// The operator's listener: Prometheus `/metrics` only.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(crate::metrics::render))
        .with_state(app)
}

/// A request's span names its method and route pattern, never its path or query: those carry
/// track names and, on `/rest/`, credentials, which do not belong in logs.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    tracing::info_span!("request", method = %request.method(), route)
}
