//! The server's shared state and its routes: every HTTP surface (the upload API, and the
//! surfaces that plug in beside it) is a `Router` of its own, merged here.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use lockerstore::{Store, TrackKey, UserId};

use crate::accounts::Accounts;
use crate::catalog::Catalog;
use crate::subsonic::AuthModes;
use crate::subsonic::userdata::UserDataStore;

/// What every request handler shares.
#[derive(Clone, Debug)]
pub struct App {
    pub store: Store,
    pub accounts: Arc<Accounts>,
    /// The server's own files beside the store's (`<store>/server`).
    pub state_dir: PathBuf,
    /// Every user's catalogue, read from the tracks' tags (`<state>/catalog`).
    pub catalog: Arc<Catalog>,
    /// Every user's stars, play counts and playlists (`<state>/subsonic`).
    pub user_data: Arc<UserDataStore>,
    /// Which credentials `/rest/` takes.
    pub subsonic_auth: AuthModes,
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

/// Every route of the server.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::api::routes())
        .merge(crate::subsonic::routes())
        .with_state(app)
}
