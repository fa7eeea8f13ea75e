//! OpenSubsonic at `/rest/`: the API players speak, over each user's own catalogue.
//!
//! `GET`, `HEAD` and form `POST` (the `formPost` extension) on `/rest/<method>` and
//! `/rest/<method>.view`; the query and the form body are merged. Answers are JSON (`f=json`) or
//! XML (the default). Errors are HTTP 200 with `status="failed"`, as Subsonic clients expect.
//! Every lookup goes through the authenticated user's own library: an id of another user's
//! is simply not found (70).

mod annotate;
mod auth;
mod browse;
mod media;
mod params;
mod playlists;
mod render;
pub mod response;
pub mod userdata;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use axum::routing::get;
use lockerstore::UserId;
use serde_json::json;

pub use auth::AuthModes;
use params::Params;
use render::View;
use response::{Failure, Format, Reply, envelope};
use userdata::UserData;

use crate::app::App;
use crate::catalog::Library;

/// The most bytes a form `POST` body may carry (read before the credentials in it are checked,
/// so kept small: Subsonic parameters are short).
const MAX_FORM: usize = 256 << 10;

/// The Subsonic routes.
pub fn routes() -> Router<App> {
    Router::new().route("/rest/{method}", get(handle).post(handle).head(handle))
}

/// One authenticated request: the caller and a snapshot of their library and annotations.
pub struct Ctx {
    pub app: App,
    pub user: UserId,
    pub lib: Arc<Library>,
    pub data: Arc<UserData>,
    pub params: Params,
    pub method: Method,
    pub headers: HeaderMap,
}

impl Ctx {
    pub fn view(&self) -> View<'_> {
        View {
            lib: &self.lib,
            data: &self.data,
        }
    }
}

/// Runs blocking work (the store, lofty, state files) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Failure::generic("internal error"))?
}

/// Shuffles `items` (Fisher-Yates on a xorshift seeded from the OS).
pub fn shuffle<T>(items: &mut [T]) {
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let mut x = u64::from_le_bytes(seed) | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

async fn handle(State(app): State<App>, Path(method): Path<String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query();
    let body = if parts.method == Method::POST && is_form(&parts.headers) {
        match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => Some(b),
            Err(_) => {
                let format = Format::of(Params::parse(query, None).get("f"));
                let failure = Failure::generic("The form is too large or was cut off");
                return envelope(format, Err(failure));
            }
        }
    } else {
        None
    };
    let params = Params::parse(query, body.as_deref());
    let format = Format::of(params.get("f"));
    let name = method.strip_suffix(".view").unwrap_or(&method);
    match run(app, name, params, parts.method, parts.headers).await {
        Ok(Reply::Body(fields)) => envelope(format, Ok(fields)),
        Ok(Reply::Raw(response)) => response,
        Err(failure) => envelope(format, Err(failure)),
    }
}

fn extensions() -> Reply {
    Reply::with(
        "openSubsonicExtensions",
        json!([
            { "name": "apiKeyAuthentication", "versions": [1] },
            { "name": "formPost", "versions": [1] },
        ]),
    )
}

async fn run(
    app: App,
    name: &str,
    params: Params,
    method: Method,
    headers: HeaderMap,
) -> Result<Reply, Failure> {
    let name = name.to_ascii_lowercase();
    // The spec wants this one public.
    if name == "getopensubsonicextensions" {
        return Ok(extensions());
    }
    let user = auth::authenticate(&app.accounts, app.subsonic_auth, &params)?;
    let user = UserId::new(&user).map_err(|_| Failure::new(40, "Wrong username or password"))?;
    let ctx = Ctx {
        lib: app.catalog.current(&app.store, &user),
        data: app.user_data.get(user.as_str()),
        app,
        user,
        params,
        method,
        headers,
    };
    match name.as_str() {
        "ping" => Ok(Reply::empty()),
        "getlicense" => Ok(Reply::with("license", json!({ "valid": true }))),
        "getuser" => get_user(&ctx),
        "getmusicfolders" => browse::music_folders(),
        "getindexes" => browse::indexes(&ctx),
        "getartists" => browse::artists(&ctx),
        "getartist" => browse::artist(&ctx),
        "getalbum" => browse::album(&ctx),
        "getsong" => browse::song(&ctx),
        "getalbumlist2" => browse::album_list2(&ctx),
        "getrandomsongs" => browse::random_songs(&ctx),
        "getgenres" => browse::genres(&ctx),
        "search3" => browse::search3(&ctx),
        "stream" | "download" => media::track(&ctx).await,
        "getcoverart" => media::cover_art(&ctx).await,
        "scrobble" => annotate::scrobble(&ctx).await,
        "star" => annotate::star(&ctx, true).await,
        "unstar" => annotate::star(&ctx, false).await,
        "getstarred2" => annotate::starred2(&ctx),
        "getplaylists" => playlists::list(&ctx),
        "getplaylist" => playlists::get(&ctx),
        "createplaylist" => playlists::create(&ctx).await,
        "updateplaylist" => playlists::update(&ctx).await,
        "deleteplaylist" => playlists::delete(&ctx).await,
        _ => {
            let shown: String = name.chars().take(64).collect();
            Err(Failure::new(70, format!("Unknown method {shown}")))
        }
    }
}

/// `getUser`: the caller only (50 for anyone else).
fn get_user(ctx: &Ctx) -> Result<Reply, Failure> {
    let name = ctx.params.require("username")?;
    if name != ctx.user.as_str() {
        return Err(Failure::not_authorized("Only your own user can be read"));
    }
    Ok(Reply::with(
        "user",
        json!({
            "username": name,
            "scrobblingEnabled": true,
            "adminRole": false,
            "settingsRole": false,
            "downloadRole": true,
            "uploadRole": false,
            "playlistRole": true,
            "coverArtRole": true,
            "commentRole": false,
            "podcastRole": false,
            "streamRole": true,
            "jukeboxRole": false,
            "shareRole": false,
            "videoConversionRole": false,
            "folder": [browse::FOLDER_ID],
        }),
    ))
}
