//! The caller's playlists: `getPlaylists`, `getPlaylist`, `createPlaylist`, `updatePlaylist`,
//! `deletePlaylist`. A playlist holds track ids; an entry whose track was deleted is not shown,
//! and is dropped at the next change (so `songIndexToRemove` counts what the client saw).

use serde_json::{Value, json};

use super::render::now;
use super::response::{Failure, Reply};
use super::userdata::{MAX_PLAYLIST_ENTRIES, MAX_PLAYLISTS, Playlist, UserData};
use super::{Ctx, blocking};
use crate::catalog::Library;

const MAX_TEXT: usize = 1_024;

fn text(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

fn new_id() -> Result<String, Failure> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|_| Failure::generic("internal error"))?;
    Ok(format!(
        "pl-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// The song ids of `name`, each checked to be the caller's (70 otherwise).
fn songs(ctx: &Ctx, name: &str) -> Result<Vec<String>, Failure> {
    let ids: Vec<String> = ctx.params.all(name).map(str::to_owned).collect();
    if ids.iter().any(|id| ctx.lib.track(id).is_none()) {
        return Err(Failure::not_found("Song"));
    }
    Ok(ids)
}

fn prune(lib: &Library, p: &mut Playlist) {
    p.entries.retain(|id| lib.track(id).is_some());
}

fn too_long() -> Failure {
    Failure::generic(format!(
        "A playlist holds at most {MAX_PLAYLIST_ENTRIES} songs"
    ))
}

/// Runs a change of the caller's playlists on a blocking thread, against the library snapshot.
async fn change<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&Library, &mut UserData) -> Result<T, Failure> + Clone + Send + 'static,
) -> Result<T, Failure> {
    let data = ctx.app.user_data.clone();
    let user = ctx.user.as_str().to_owned();
    let lib = ctx.lib.clone();
    blocking(move || data.update(&user, move |d| f(&lib, d))).await
}

pub fn list(ctx: &Ctx) -> Result<Reply, Failure> {
    if let Some(other) = ctx.params.get("username")
        && other != ctx.user.as_str()
    {
        return Err(Failure::not_authorized(
            "Only your own playlists can be listed",
        ));
    }
    let view = ctx.view();
    let list: Vec<Value> = ctx
        .data
        .playlists
        .values()
        .map(|p| view.playlist(ctx.user.as_str(), p, false))
        .collect();
    Ok(Reply::with("playlists", json!({ "playlist": list })))
}

pub fn get(ctx: &Ctx) -> Result<Reply, Failure> {
    let p = ctx
        .data
        .playlists
        .get(ctx.params.require("id")?)
        .ok_or_else(|| Failure::not_found("Playlist"))?;
    Ok(Reply::with(
        "playlist",
        ctx.view().playlist(ctx.user.as_str(), p, true),
    ))
}

/// `createPlaylist`: a new playlist (`name`), or, with `playlistId`, the songs of an existing
/// one replaced. Answers the playlist (since 1.14.0).
pub async fn create(ctx: &Ctx) -> Result<Reply, Failure> {
    let p = &ctx.params;
    let existing = p.get("playlistId").map(str::to_owned);
    let name = p.get("name").map(text);
    if existing.is_none() && name.is_none() {
        return Err(Failure::missing("name or playlistId"));
    }
    let entries = songs(ctx, "songId")?;
    if entries.len() > MAX_PLAYLIST_ENTRIES {
        return Err(too_long());
    }
    let fresh = new_id()?;
    let playlist = change(ctx, move |_, d| {
        let t = now();
        let id = match existing {
            Some(id) => {
                let pl = d
                    .playlists
                    .get_mut(&id)
                    .ok_or_else(|| Failure::not_found("Playlist"))?;
                pl.entries = entries;
                pl.name = name.unwrap_or_else(|| pl.name.clone());
                pl.changed = t;
                id
            }
            None => {
                if d.playlists.len() >= MAX_PLAYLISTS {
                    return Err(Failure::generic(format!(
                        "A user holds at most {MAX_PLAYLISTS} playlists"
                    )));
                }
                d.playlists.insert(
                    fresh.clone(),
                    Playlist {
                        id: fresh.clone(),
                        name: name.unwrap_or_default(),
                        comment: None,
                        public: false,
                        created: t,
                        changed: t,
                        entries,
                    },
                );
                fresh
            }
        };
        Ok(d.playlists.get(&id).cloned())
    })
    .await?
    .ok_or_else(|| Failure::not_found("Playlist"))?;
    Ok(Reply::with(
        "playlist",
        ctx.view().playlist(ctx.user.as_str(), &playlist, true),
    ))
}

/// `updatePlaylist`: `name`, `comment`, `public`, `songIdToAdd`, `songIndexToRemove`.
pub async fn update(ctx: &Ctx) -> Result<Reply, Failure> {
    let p = &ctx.params;
    let id = p.require("playlistId")?.to_owned();
    if !ctx.data.playlists.contains_key(&id) {
        return Err(Failure::not_found("Playlist"));
    }
    let name = p.get("name").map(text);
    let comment = p.get("comment").map(text);
    let public = match p.get("public") {
        Some(_) => Some(p.boolean("public", false)?),
        None => None,
    };
    let add = songs(ctx, "songIdToAdd")?;
    let mut remove = p
        .all("songIndexToRemove")
        .map(|i| {
            i.trim().parse::<usize>().map_err(|_| {
                Failure::generic(format!("Invalid value for songIndexToRemove: {i:?}"))
            })
        })
        .collect::<Result<Vec<usize>, Failure>>()?;
    remove.sort_unstable();
    remove.dedup();
    change(ctx, move |lib, d| {
        let pl = d
            .playlists
            .get_mut(&id)
            .ok_or_else(|| Failure::not_found("Playlist"))?;
        prune(lib, pl);
        if remove.last().is_some_and(|&i| i >= pl.entries.len()) {
            return Err(Failure::generic(
                "songIndexToRemove is past the playlist's end",
            ));
        }
        for &i in remove.iter().rev() {
            pl.entries.remove(i);
        }
        if pl.entries.len() + add.len() > MAX_PLAYLIST_ENTRIES {
            return Err(too_long());
        }
        pl.entries.extend(add);
        if let Some(n) = name {
            pl.name = n;
        }
        if let Some(c) = comment {
            pl.comment = Some(c);
        }
        if let Some(p) = public {
            pl.public = p;
        }
        pl.changed = now();
        Ok(())
    })
    .await?;
    Ok(Reply::empty())
}

pub async fn delete(ctx: &Ctx) -> Result<Reply, Failure> {
    let id = ctx.params.require("id")?.to_owned();
    if !ctx.data.playlists.contains_key(&id) {
        return Err(Failure::not_found("Playlist"));
    }
    change(ctx, move |_, d| {
        d.playlists
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| Failure::not_found("Playlist"))
    })
    .await?;
    Ok(Reply::empty())
}
