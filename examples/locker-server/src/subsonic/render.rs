//! The Subsonic shapes of the catalogue's entries (`Child`, `AlbumID3`, `ArtistID3`,
//! `playlist`), with the caller's stars and play counts.

use serde_json::{Map, Value, json};

use super::userdata::{Playlist, UserData};
use crate::catalog::{Album, Artist, Library, Track};

/// Seconds since the Unix epoch now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` since the Unix epoch as ISO 8601 UTC (`2024-05-06T07:08:09Z`).
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// What renders need: the caller's library and annotations.
pub struct View<'a> {
    pub lib: &'a Library,
    pub data: &'a UserData,
}

fn set(m: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    m.insert(k.to_owned(), v.into());
}

fn set_opt<T: Into<Value>>(m: &mut Map<String, Value>, k: &str, v: Option<T>) {
    if let Some(v) = v {
        set(m, k, v);
    }
}

impl View<'_> {
    fn starred(&self, m: &mut Map<String, Value>, id: &str) {
        set_opt(m, "starred", self.data.stars.get(id).map(|&t| iso8601(t)));
    }

    /// A track as a `Child`.
    pub fn song(&self, t: &Track) -> Value {
        let mut m = Map::new();
        set(&mut m, "id", t.id.as_str());
        set(&mut m, "parent", t.album_id.as_str());
        set(&mut m, "isDir", false);
        set(&mut m, "title", t.title.as_str());
        set(&mut m, "album", t.album.as_str());
        set(&mut m, "artist", t.artist.as_str());
        set(&mut m, "displayArtist", t.artist.as_str());
        set(&mut m, "displayAlbumArtist", t.album_artist.as_str());
        set_opt(&mut m, "track", t.track);
        set_opt(&mut m, "discNumber", t.disc);
        set_opt(&mut m, "year", t.year);
        set_opt(&mut m, "genre", t.genre.as_deref());
        if let Some(g) = &t.genre {
            set(&mut m, "genres", json!([{ "name": g }]));
        }
        let cover = if t.has_picture {
            Some(t.id.as_str())
        } else {
            self.lib.album(&t.album_id).and_then(|a| a.cover.as_deref())
        };
        set_opt(&mut m, "coverArt", cover);
        set(&mut m, "size", t.size);
        set(&mut m, "contentType", t.content_type.as_str());
        set(&mut m, "suffix", t.suffix.as_str());
        set(&mut m, "duration", t.duration);
        set_opt(&mut m, "bitRate", t.bitrate);
        set_opt(&mut m, "samplingRate", t.sample_rate);
        set_opt(&mut m, "channelCount", t.channels);
        set_opt(&mut m, "bitDepth", t.bit_depth);
        set(&mut m, "path", t.key.as_str());
        set(&mut m, "isVideo", false);
        set(&mut m, "created", iso8601(t.stored_at));
        set(&mut m, "albumId", t.album_id.as_str());
        set(&mut m, "artistId", t.artist_id.as_str());
        set(&mut m, "type", "music");
        set(&mut m, "mediaType", "song");
        let play = self.data.plays.get(&t.id);
        set(&mut m, "playCount", play.map_or(0, |p| p.count));
        set_opt(&mut m, "played", play.map(|p| iso8601(p.last)));
        self.starred(&mut m, &t.id);
        Value::Object(m)
    }

    /// Plays of an album: (count, last played).
    pub fn album_plays(&self, a: &Album) -> (u64, Option<u64>) {
        a.tracks
            .iter()
            .filter_map(|&i| self.data.plays.get(&self.lib.tracks[i].id))
            .fold((0, None), |(n, last), p| {
                (n + p.count, Some(last.unwrap_or(0).max(p.last)))
            })
    }

    /// An album as an `AlbumID3`, with its songs when `songs`.
    pub fn album(&self, a: &Album, songs: bool) -> Value {
        let mut m = Map::new();
        set(&mut m, "id", a.id.as_str());
        set(&mut m, "name", a.name.as_str());
        set(&mut m, "artist", a.artist.as_str());
        set(&mut m, "artistId", a.artist_id.as_str());
        set(&mut m, "displayArtist", a.artist.as_str());
        set(&mut m, "songCount", a.tracks.len());
        set(&mut m, "duration", a.duration);
        set(&mut m, "created", iso8601(a.created));
        set_opt(&mut m, "year", a.year);
        set_opt(&mut m, "genre", a.genre.as_deref());
        set_opt(&mut m, "coverArt", a.cover.as_deref());
        let (plays, last) = self.album_plays(a);
        set(&mut m, "playCount", plays);
        set_opt(&mut m, "played", last.map(iso8601));
        self.starred(&mut m, &a.id);
        if songs {
            let list: Vec<Value> = a
                .tracks
                .iter()
                .map(|&i| self.song(&self.lib.tracks[i]))
                .collect();
            set(&mut m, "song", list);
        }
        Value::Object(m)
    }

    /// An artist as an `ArtistID3`, with its albums when `albums`.
    pub fn artist(&self, a: &Artist, albums: bool) -> Value {
        let mut m = Map::new();
        set(&mut m, "id", a.id.as_str());
        set(&mut m, "name", a.name.as_str());
        set(&mut m, "albumCount", a.albums.len());
        set_opt(&mut m, "coverArt", a.cover.as_deref());
        self.starred(&mut m, &a.id);
        if albums {
            let list: Vec<Value> = a
                .albums
                .iter()
                .map(|&i| self.album(&self.lib.albums[i], false))
                .collect();
            set(&mut m, "album", list);
        }
        Value::Object(m)
    }

    /// A playlist, with its entries when `entries`; entries whose track is gone are left out.
    pub fn playlist(&self, owner: &str, p: &Playlist, entries: bool) -> Value {
        let tracks: Vec<&Track> = p
            .entries
            .iter()
            .filter_map(|id| self.lib.track(id))
            .collect();
        let mut m = Map::new();
        set(&mut m, "id", p.id.as_str());
        set(&mut m, "name", p.name.as_str());
        set_opt(&mut m, "comment", p.comment.as_deref());
        set(&mut m, "owner", owner);
        set(&mut m, "public", p.public);
        set(&mut m, "readonly", false);
        set(&mut m, "songCount", tracks.len());
        set(
            &mut m,
            "duration",
            tracks.iter().map(|t| t.duration).sum::<u64>(),
        );
        set(&mut m, "created", iso8601(p.created));
        set(&mut m, "changed", iso8601(p.changed));
        let cover = tracks.iter().find(|t| t.has_picture).map(|t| t.id.as_str());
        set_opt(&mut m, "coverArt", cover);
        if entries {
            let list: Vec<Value> = tracks.iter().map(|t| self.song(t)).collect();
            set(&mut m, "entry", list);
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::iso8601;

    #[test]
    fn iso8601_is_utc_civil_time() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
