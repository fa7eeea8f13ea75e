//! Browsing and searching the caller's library: music folders, indexes, artists, albums, songs,
//! album lists, random songs, genres and `search3` (an empty query lists everything, paged).

use serde_json::{Value, json};

use super::params::page;
use super::response::{Failure, Reply};
use super::{Ctx, shuffle};
use crate::catalog::library::{fold, matches, words};
use crate::catalog::{Album, Artist};

/// The one music folder: the caller's locker.
pub const FOLDER_ID: u32 = 1;

/// `musicFolderId`, when given, must name the one folder.
fn check_folder(ctx: &Ctx) -> Result<(), Failure> {
    match ctx.params.number::<u32>("musicFolderId")? {
        None | Some(FOLDER_ID) => Ok(()),
        Some(_) => Err(Failure::not_found("Music folder")),
    }
}

pub fn music_folders() -> Result<Reply, Failure> {
    Ok(Reply::with(
        "musicFolders",
        json!({ "musicFolder": [{ "id": FOLDER_ID, "name": "Locker" }] }),
    ))
}

/// Artists grouped under their initial (`#` for anything but a letter).
fn index(ctx: &Ctx) -> Vec<Value> {
    let view = ctx.view();
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for a in &ctx.lib.artists {
        let initial = a
            .name
            .chars()
            .next()
            .filter(|c| c.is_alphabetic())
            .map_or_else(|| "#".to_owned(), |c| c.to_uppercase().collect());
        match groups.iter_mut().find(|(name, _)| *name == initial) {
            Some((_, list)) => list.push(view.artist(a, false)),
            None => groups.push((initial, vec![view.artist(a, false)])),
        }
    }
    groups.sort_by(|a, b| (a.0 == "#").cmp(&(b.0 == "#")).then(a.0.cmp(&b.0)));
    groups
        .into_iter()
        .map(|(name, artist)| json!({ "name": name, "artist": artist }))
        .collect()
}

pub fn indexes(ctx: &Ctx) -> Result<Reply, Failure> {
    check_folder(ctx)?;
    Ok(Reply::with(
        "indexes",
        json!({
            "ignoredArticles": "",
            "lastModified": ctx.lib.last_modified.saturating_mul(1000),
            "index": index(ctx),
        }),
    ))
}

pub fn artists(ctx: &Ctx) -> Result<Reply, Failure> {
    check_folder(ctx)?;
    Ok(Reply::with(
        "artists",
        json!({ "ignoredArticles": "", "index": index(ctx) }),
    ))
}

fn find_artist<'a>(ctx: &'a Ctx, id: &str) -> Result<&'a Artist, Failure> {
    ctx.lib
        .artist(id)
        .ok_or_else(|| Failure::not_found("Artist"))
}

fn find_album<'a>(ctx: &'a Ctx, id: &str) -> Result<&'a Album, Failure> {
    ctx.lib.album(id).ok_or_else(|| Failure::not_found("Album"))
}

pub fn artist(ctx: &Ctx) -> Result<Reply, Failure> {
    let a = find_artist(ctx, ctx.params.require("id")?)?;
    Ok(Reply::with("artist", ctx.view().artist(a, true)))
}

pub fn album(ctx: &Ctx) -> Result<Reply, Failure> {
    let a = find_album(ctx, ctx.params.require("id")?)?;
    Ok(Reply::with("album", ctx.view().album(a, true)))
}

pub fn song(ctx: &Ctx) -> Result<Reply, Failure> {
    let t = ctx
        .lib
        .track(ctx.params.require("id")?)
        .ok_or_else(|| Failure::not_found("Song"))?;
    Ok(Reply::with("song", ctx.view().song(t)))
}

/// `getAlbumList2`: random, newest, alphabeticalByName, alphabeticalByArtist, frequent, recent,
/// starred, byYear, byGenre (and highest, always empty: there are no ratings).
pub fn album_list2(ctx: &Ctx) -> Result<Reply, Failure> {
    let p = &ctx.params;
    let kind = p.require("type")?;
    let size = p.count("size", 10)?;
    let offset = p.offset("offset")?;
    check_folder(ctx)?;
    let view = ctx.view();
    let lib = &ctx.lib;
    let mut albums: Vec<&Album> = lib.albums.iter().collect();
    match kind {
        "random" => shuffle(&mut albums),
        "newest" => albums.sort_by_key(|a| std::cmp::Reverse(a.created)),
        "alphabeticalByName" => {}
        "alphabeticalByArtist" => albums.sort_by_cached_key(|a| (fold(&a.artist), fold(&a.name))),
        "frequent" => {
            albums.retain(|a| view.album_plays(a).0 > 0);
            albums.sort_by_key(|a| std::cmp::Reverse(view.album_plays(a).0));
        }
        "recent" => {
            albums.retain(|a| view.album_plays(a).1.is_some());
            albums.sort_by_key(|a| std::cmp::Reverse(view.album_plays(a).1));
        }
        "starred" => albums.retain(|a| ctx.data.stars.contains_key(&a.id)),
        "highest" => albums.clear(),
        "byYear" => {
            let from: u32 = p
                .number("fromYear")?
                .ok_or_else(|| Failure::missing("fromYear"))?;
            let to: u32 = p
                .number("toYear")?
                .ok_or_else(|| Failure::missing("toYear"))?;
            let (lo, hi) = (from.min(to), from.max(to));
            albums.retain(|a| a.year.is_some_and(|y| (lo..=hi).contains(&y)));
            albums.sort_by_key(|a| a.year);
            if from > to {
                albums.reverse();
            }
        }
        "byGenre" => {
            let genre = fold(p.require("genre")?);
            albums.retain(|a| {
                a.tracks.iter().any(|&i| {
                    lib.tracks[i]
                        .genre
                        .as_deref()
                        .is_some_and(|g| fold(g) == genre)
                })
            });
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(Failure::generic(format!("Unknown list type {shown}")));
        }
    }
    let list: Vec<Value> = page(albums, offset, size)
        .into_iter()
        .map(|a| view.album(a, false))
        .collect();
    Ok(Reply::with("albumList2", json!({ "album": list })))
}

pub fn random_songs(ctx: &Ctx) -> Result<Reply, Failure> {
    let p = &ctx.params;
    let size = p.count("size", 10)?;
    let genre = p.get("genre").map(fold);
    let from: Option<u32> = p.number("fromYear")?;
    let to: Option<u32> = p.number("toYear")?;
    check_folder(ctx)?;
    let mut songs: Vec<_> = ctx
        .lib
        .tracks
        .iter()
        .filter(|t| {
            genre
                .as_ref()
                .is_none_or(|g| t.genre.as_deref().is_some_and(|tg| fold(tg) == *g))
                && from.is_none_or(|f| t.year.is_some_and(|y| y >= f))
                && to.is_none_or(|l| t.year.is_some_and(|y| y <= l))
        })
        .collect();
    shuffle(&mut songs);
    let view = ctx.view();
    let list: Vec<Value> = songs.into_iter().take(size).map(|t| view.song(t)).collect();
    Ok(Reply::with("randomSongs", json!({ "song": list })))
}

pub fn genres(ctx: &Ctx) -> Result<Reply, Failure> {
    let list: Vec<Value> = ctx
        .lib
        .genres()
        .into_iter()
        .map(|g| json!({ "value": g.name, "songCount": g.songs, "albumCount": g.albums }))
        .collect();
    Ok(Reply::with("genres", json!({ "genre": list })))
}

/// `search3`: songs whose title, artist or album hold every word; albums by name or artist;
/// artists by name. An empty query lists everything (Symfonium syncs that way).
pub fn search3(ctx: &Ctx) -> Result<Reply, Failure> {
    let p = &ctx.params;
    let words = words(p.get("query").unwrap_or(""));
    let (artist_count, artist_offset) = (p.count("artistCount", 20)?, p.offset("artistOffset")?);
    let (album_count, album_offset) = (p.count("albumCount", 20)?, p.offset("albumOffset")?);
    let (song_count, song_offset) = (p.count("songCount", 20)?, p.offset("songOffset")?);
    check_folder(ctx)?;
    let view = ctx.view();
    let lib = &ctx.lib;
    let artists = lib.artists.iter().filter(|a| matches(&words, &[&a.name]));
    let albums = lib
        .albums
        .iter()
        .filter(|a| matches(&words, &[&a.name, &a.artist]));
    let songs = lib
        .tracks
        .iter()
        .filter(|t| matches(&words, &[&t.title, &t.artist, &t.album, &t.album_artist]));
    let artist: Vec<Value> = page(artists, artist_offset, artist_count)
        .into_iter()
        .map(|a| view.artist(a, false))
        .collect();
    let album: Vec<Value> = page(albums, album_offset, album_count)
        .into_iter()
        .map(|a| view.album(a, false))
        .collect();
    let song: Vec<Value> = page(songs, song_offset, song_count)
        .into_iter()
        .map(|t| view.song(t))
        .collect();
    Ok(Reply::with(
        "searchResult3",
        json!({ "artist": artist, "album": album, "song": song }),
    ))
}
