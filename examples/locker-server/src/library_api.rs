//! What the web player reads besides the tracks' bytes: the caller's usage against their quota
//! (`/api/v1/me`), their library by artist and album with search (`/api/v1/library?q=`), and
//! cover art (`/api/v1/covers/{id}`). Authenticated like the upload API ([`crate::auth`]); a
//! caller reaches only their own catalogue, and ids of another user's catalogue are unknown
//! in theirs (ids are derived from the user's name).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lockerstore::{QuotaUsage, TrackKey};
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::user_of;
use crate::catalog::library::{Library, Track, fold, matches, words};
use crate::catalog::tags;
use crate::http::{ApiError, blocking};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/library", get(library))
        .route("/api/v1/covers/{id}", get(cover))
}

async fn me(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = user_of(&app, &method, &headers)?;
    let name = user.as_str().to_owned();
    let usage = blocking(move || match app.store.quota(&user) {
        // An account that never stored anything and has no limits.
        Err(lockerstore::Error::UnknownUser(_)) => Ok(QuotaUsage::default()),
        r => r,
    })
    .await?;
    Ok(axum::Json(json!({
        "user": name,
        "counted_bytes": usage.counted_bytes,
        "counted_tracks": usage.counted_tracks,
        "max_bytes": usage.quota.max_bytes,
        "max_tracks": usage.quota.max_tracks,
        "exempt_bytes": usage.exempt_bytes,
        "exempt_tracks": usage.exempt_tracks,
    }))
    .into_response())
}

fn track_json(t: &Track, album_cover: Option<&str>) -> Value {
    let cover = if t.has_picture {
        Some(t.id.as_str())
    } else {
        album_cover
    };
    json!({
        "id": t.id,
        "key": t.key,
        "title": t.title,
        "artist": t.artist,
        "album": t.album,
        "track": t.track,
        "disc": t.disc,
        "duration": t.duration,
        "size": t.size,
        "format": t.format,
        "content_type": t.content_type,
        "cover": cover,
    })
}

/// The library as the player shows it: album artists by name, each with their albums by name,
/// each with the tracks that match every word of the query, in disc and track order.
fn library_json(lib: &Library, query: &str) -> Value {
    let words = words(query);
    let mut albums: Vec<_> = lib.albums.iter().collect();
    albums.sort_by_cached_key(|a| (fold(&a.artist), a.artist_id.clone(), fold(&a.name)));
    let mut artists: Vec<Value> = Vec::new();
    let mut current: Option<(&str, &str, Vec<Value>)> = None;
    for album in albums {
        let tracks: Vec<Value> = album
            .tracks
            .iter()
            .map(|&i| &lib.tracks[i])
            .filter(|t| matches(&words, &[&t.title, &t.artist, &t.album, &t.album_artist]))
            .map(|t| track_json(t, album.cover.as_deref()))
            .collect();
        if tracks.is_empty() {
            continue;
        }
        let album_json = json!({
            "id": album.id,
            "name": album.name,
            "year": album.year,
            "cover": album.cover,
            "tracks": tracks,
        });
        match &mut current {
            Some((id, _, list)) if *id == album.artist_id => list.push(album_json),
            _ => {
                if let Some((id, name, list)) = current.take() {
                    artists.push(json!({ "id": id, "name": name, "albums": list }));
                }
                current = Some((&album.artist_id, &album.artist, vec![album_json]));
            }
        }
    }
    if let Some((id, name, list)) = current {
        artists.push(json!({ "id": id, "name": name, "albums": list }));
    }
    json!({ "artists": artists })
}

async fn library(
    State(app): State<App>,
    method: Method,
    headers: HeaderMap,
    // A map, not a typed query: a repeated or unknown parameter is no error.
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = params.get("q").cloned().unwrap_or_default();
    let user = user_of(&app, &method, &headers)?;
    let lib = app.catalog.current(&app.store, &user);
    // O(library): off the async workers, like every other walk of a catalogue.
    let body = tokio::task::spawn_blocking(move || library_json(&lib, &query))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response())
}

async fn cover(
    State(app): State<App>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = user_of(&app, &method, &headers)?;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such cover");
    let lib = app.catalog.current(&app.store, &user);
    let key = lib
        .cover_track(&id)
        .and_then(|t| TrackKey::new(&t.key).ok())
        .ok_or_else(not_found)?;
    let store = app.store.clone();
    let (bytes, content_type) = blocking(move || tags::picture_of(&store, &user, &key))
        .await?
        .ok_or_else(not_found)?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(header::CACHE_CONTROL, "private, max-age=86400")
        .body(Body::from(bytes))
        .expect("a response of fixed parts"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::library::tests::entry;

    #[test]
    fn the_library_groups_by_album_artist_and_filters_tracks_by_every_word() {
        let mut guest = entry("u", "c.mp3", "B", "Second", 1);
        guest.artist = "Guest".into();
        guest.title = "Duet".into();
        let lib = Library::new(vec![
            entry("u", "b.mp3", "A", "First", 2),
            entry("u", "a.mp3", "A", "First", 1),
            entry("u", "d.mp3", "A", "Alpha", 1),
            guest,
        ]);
        let all = library_json(&lib, "");
        let artists = all["artists"].as_array().unwrap();
        let names: Vec<_> = artists
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["A", "B"], "album artists only, by name");
        let albums: Vec<_> = artists[0]["albums"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(albums, ["Alpha", "First"]);
        let first = &artists[0]["albums"][1];
        let keys: Vec<_> = first["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["a.mp3", "b.mp3"], "in track order");
        // b.mp3 (track 2) has the picture: it is the album's cover and a's too.
        assert_eq!(
            first["cover"],
            json!(crate::catalog::library::track_id("u", "b.mp3"))
        );
        assert_eq!(first["tracks"][0]["cover"], first["cover"]);

        let found = library_json(&lib, "duet guest");
        assert_eq!(found["artists"].as_array().unwrap().len(), 1);
        assert_eq!(
            found["artists"][0]["albums"][0]["tracks"][0]["key"],
            "c.mp3"
        );
        assert_eq!(library_json(&lib, "nothing-like-it")["artists"], json!([]));
    }
}
