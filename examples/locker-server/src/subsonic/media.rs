//! `stream`, `download` and `getCoverArt`. The server does not transcode: `stream` serves the
//! stored bytes whatever `format`/`maxBitRate` ask, through the same path as the upload API's
//! reads (single byte ranges, `HEAD`, a strong ETag, `If-None-Match`, `If-Range`). The cover is
//! the picture embedded in the track's tags, served as stored (`size` is ignored).

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use lockerstore::TrackKey;

use super::response::{Failure, Reply};
use super::{Ctx, blocking};
use crate::catalog::{Track, tags};
use crate::http::{ApiError, serve_track};

fn find_track<'a>(ctx: &'a Ctx, id: &str) -> Result<&'a Track, Failure> {
    ctx.lib.track(id).ok_or_else(|| Failure::not_found("Song"))
}

fn key_of(t: &Track) -> Result<TrackKey, Failure> {
    TrackKey::new(&t.key).map_err(|_| Failure::generic("The track's key is invalid"))
}

/// `stream` and `download`: the track's stored bytes.
pub async fn track(ctx: &Ctx) -> Result<Reply, Failure> {
    let t = find_track(ctx, ctx.params.require("id")?)?;
    let key = key_of(t)?;
    match serve_track(
        &ctx.app.store,
        ctx.user.clone(),
        key,
        &ctx.method,
        &ctx.headers,
    )
    .await
    {
        Ok(response) => Ok(Reply::Raw(response)),
        Err(ApiError(StatusCode::NOT_FOUND, _)) => Err(Failure::not_found("Song")),
        Err(ApiError(_, message)) => Err(Failure::generic(message)),
    }
}

/// `getCoverArt`: the picture of a track (a song's cover id), or of an album's or artist's
/// first track that has one.
pub async fn cover_art(ctx: &Ctx) -> Result<Reply, Failure> {
    let id = ctx.params.require("id")?;
    // `size` must still be a number when given, though it is not applied.
    let _ = ctx.params.number::<u32>("size")?;
    let t = ctx
        .lib
        .cover_track(id)
        .ok_or_else(|| Failure::not_found("Cover art"))?;
    let key = key_of(t)?;
    let store = ctx.app.store.clone();
    let user = ctx.user.clone();
    let picture = blocking(move || {
        tags::picture_of(&store, &user, &key).map_err(|e| {
            tracing::error!(error = %e, "cover art unreadable");
            Failure::generic("The track could not be read")
        })
    })
    .await?;
    let (bytes, content_type) = picture.ok_or_else(|| Failure::not_found("Cover art"))?;
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(header::CACHE_CONTROL, "private, max-age=86400")
        .body(Body::from(bytes))
        .map_err(|_| Failure::generic("internal error"))?;
    Ok(Reply::Raw(response))
}
