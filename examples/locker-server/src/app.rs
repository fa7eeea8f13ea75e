//! The server's shared state and its routes: every HTTP surface (the upload API, and the
//! surfaces that plug in beside it) is a `Router` of its own, merged here.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use lockerstore::{Store, TrackKey, UserId};

use crate::accounts::Accounts;

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
}

impl App {
    /// Called after a track was stored under `user`/`key`, by every path that stores one (the
    /// upload API, resumable uploads, upload avoidance): what the server derives from a track
    /// (its catalogue entry, its counters) is kept up to date here, in one place. Runs on a
    /// blocking thread.
    pub fn stored(&self, user: &UserId, key: &TrackKey) {
        tracing::debug!(user = %user, key = %key, "track stored");
    }
}

/// Every route of the server.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::api::routes())
        .merge(crate::tus::routes())
        .merge(crate::avoid::routes())
        .with_state(app)
}
