//! `scrobble`, `star`, `unstar`, `getStarred2`: the caller's own annotations of their library.

use serde_json::{Value, json};

use super::render::now;
use super::response::{Failure, Reply};
use super::{Ctx, blocking};

/// `scrobble`: a submission (the default) counts a play of each `id` at `time` (ms) or now; a
/// "now playing" notification (`submission=false`) is accepted and not kept.
pub async fn scrobble(ctx: &Ctx) -> Result<Reply, Failure> {
    let ids: Vec<String> = ctx.params.all("id").map(str::to_owned).collect();
    if ids.is_empty() {
        return Err(Failure::missing("id"));
    }
    if ids.iter().any(|id| ctx.lib.track(id).is_none()) {
        return Err(Failure::not_found("Song"));
    }
    let submission = ctx.params.boolean("submission", true)?;
    let when = ctx
        .params
        .number::<u64>("time")?
        .map_or_else(now, |ms| ms / 1000);
    if !submission {
        return Ok(Reply::empty());
    }
    let data = ctx.app.user_data.clone();
    let user = ctx.user.as_str().to_owned();
    blocking(move || {
        data.update(&user, |d| {
            for id in ids {
                let play = d.plays.entry(id).or_default();
                play.count += 1;
                play.last = play.last.max(when);
            }
            Ok(())
        })
    })
    .await?;
    Ok(Reply::empty())
}

/// `star` (`on`) and `unstar`: `id` (a song, album or artist), `albumId`, `artistId`, each
/// repeatable. Every id must be the caller's (70 otherwise); unstarring an id that is starred
/// but whose track is gone is allowed.
pub async fn star(ctx: &Ctx, on: bool) -> Result<Reply, Failure> {
    let p = &ctx.params;
    let lib = &ctx.lib;
    // An id may be named when it is in the library, or (to unstar) when it is starred.
    let allowed = |exists: bool, id: &str| exists || (!on && ctx.data.stars.contains_key(id));
    let mut ids: Vec<String> = Vec::new();
    for id in p.all("id") {
        let exists = lib.track(id).is_some() || lib.album(id).is_some() || lib.artist(id).is_some();
        if !allowed(exists, id) {
            return Err(Failure::not_found("Item"));
        }
        ids.push(id.to_owned());
    }
    for id in p.all("albumId") {
        if !allowed(lib.album(id).is_some(), id) {
            return Err(Failure::not_found("Album"));
        }
        ids.push(id.to_owned());
    }
    for id in p.all("artistId") {
        if !allowed(lib.artist(id).is_some(), id) {
            return Err(Failure::not_found("Artist"));
        }
        ids.push(id.to_owned());
    }
    if ids.is_empty() {
        return Err(Failure::missing("id, albumId or artistId"));
    }
    let data = ctx.app.user_data.clone();
    let user = ctx.user.as_str().to_owned();
    let when = now();
    blocking(move || {
        data.update(&user, |d| {
            for id in ids {
                if on {
                    d.stars.entry(id).or_insert(when);
                } else {
                    d.stars.remove(&id);
                }
            }
            Ok(())
        })
    })
    .await?;
    Ok(Reply::empty())
}

/// `getStarred2`: the caller's starred artists, albums and songs that still exist.
pub fn starred2(ctx: &Ctx) -> Result<Reply, Failure> {
    let view = ctx.view();
    let stars = &ctx.data.stars;
    let lib = &ctx.lib;
    let artist: Vec<Value> = stars
        .keys()
        .filter_map(|id| lib.artist(id))
        .map(|a| view.artist(a, false))
        .collect();
    let album: Vec<Value> = stars
        .keys()
        .filter_map(|id| lib.album(id))
        .map(|a| view.album(a, false))
        .collect();
    let song: Vec<Value> = stars
        .keys()
        .filter_map(|id| lib.track(id))
        .map(|t| view.song(t))
        .collect();
    Ok(Reply::with(
        "starred2",
        json!({ "artist": artist, "album": album, "song": song }),
    ))
}
