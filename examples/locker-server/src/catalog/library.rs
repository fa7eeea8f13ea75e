//! One user's catalogue: an entry per track (what its tags say), and the views players browse
//! (albums, artists, genres) derived from the entries. Ids are opaque and deterministic: a
//! BLAKE3 of the user and the names they stand for, so they survive a rebuild, and two users'
//! ids never meet (every lookup is also scoped to the authenticated user's own library).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One track of a user's locker, as its tags and properties describe it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Track {
    /// `tr-<hex16>`, from the user and the key.
    pub id: String,
    /// The track's key in the store.
    pub key: String,
    /// The store's fingerprint (BLAKE3 hex) of the bytes the entry was read from.
    pub fingerprint: String,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub stored_at: u64,
    /// The store's container format (`mp3`, `flac`, `mp4`, `ogg-vorbis`, `ogg-opus`, `unknown`).
    pub format: String,
    pub title: String,
    pub artist: String,
    pub album_artist: String,
    pub album: String,
    pub track: Option<u32>,
    pub disc: Option<u32>,
    pub year: Option<u32>,
    pub genre: Option<String>,
    /// Whole seconds.
    pub duration: u64,
    /// kbit/s.
    pub bitrate: Option<u32>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
    pub bit_depth: Option<u8>,
    pub suffix: String,
    pub content_type: String,
    pub has_picture: bool,
    /// `ar-<hex16>` of `artist`.
    pub artist_id: String,
    /// `ar-<hex16>` of `album_artist`.
    pub album_artist_id: String,
    /// `al-<hex16>` of (`album_artist`, `album`).
    pub album_id: String,
}

/// An album: the tracks that share an album artist and an album name.
#[derive(Clone, Debug)]
pub struct Album {
    pub id: String,
    pub name: String,
    pub artist: String,
    pub artist_id: String,
    /// Indexes into [`Library::tracks`], in disc/track order.
    pub tracks: Vec<usize>,
    pub year: Option<u32>,
    pub genre: Option<String>,
    pub duration: u64,
    /// The newest track's `stored_at`.
    pub created: u64,
    /// The id of a track with an embedded picture.
    pub cover: Option<String>,
}

/// An artist: a name that is some track's artist or album artist.
#[derive(Clone, Debug)]
pub struct Artist {
    pub id: String,
    pub name: String,
    /// Indexes into [`Library::albums`]: albums by the artist or with a track by them.
    pub albums: Vec<usize>,
    pub cover: Option<String>,
}

/// A genre and how much of the library carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genre {
    pub name: String,
    pub songs: usize,
    pub albums: usize,
}

/// One user's library: the entries and the views over them.
#[derive(Debug, Default)]
pub struct Library {
    /// Sorted by album artist, album, disc, track number, title.
    pub tracks: Vec<Track>,
    /// Sorted by name.
    pub albums: Vec<Album>,
    /// Sorted by name.
    pub artists: Vec<Artist>,
    /// The newest `stored_at` (seconds), 0 for an empty library.
    pub last_modified: u64,
    track_ix: HashMap<String, usize>,
    album_ix: HashMap<String, usize>,
    artist_ix: HashMap<String, usize>,
}

fn id(kind: &str, user: &str, parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new_derive_key("lockerstore locker-server subsonic ids v1");
    // Length-prefixed, so no two lists of names hash alike.
    for part in std::iter::once(kind)
        .chain(std::iter::once(user))
        .chain(parts.iter().copied())
    {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    format!("{kind}-{}", &h.finalize().to_hex()[..16])
}

/// The id of `user`'s track `key`.
pub fn track_id(user: &str, key: &str) -> String {
    id("tr", user, &[key])
}

/// The id of `user`'s artist `name`.
pub fn artist_id(user: &str, name: &str) -> String {
    id("ar", user, &[name])
}

/// The id of `user`'s album `name` by `album_artist`.
pub fn album_id(user: &str, album_artist: &str, name: &str) -> String {
    id("al", user, &[album_artist, name])
}

/// A case-insensitive sort key.
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Most distinct words of a query that count, and most characters of each: a search costs
/// words x library, so a 1 MiB query of one-letter words must not cost a million passes.
pub const MAX_WORDS: usize = 16;
pub const MAX_WORD_CHARS: usize = 64;

/// The words of a search query, lowercased, distinct, at most [`MAX_WORDS`] of at most
/// [`MAX_WORD_CHARS`] characters; none for an empty query (`""` and `''` as clients send them,
/// and `*`, count as empty).
pub fn words(query: &str) -> Vec<String> {
    let q = query.trim();
    let q = match q {
        "\"\"" | "''" => "",
        q => q,
    };
    let mut out: Vec<String> = Vec::new();
    for w in q.split_whitespace() {
        let w: String = fold(w.trim_matches(|c| c == '*' || c == '"'))
            .chars()
            .take(MAX_WORD_CHARS)
            .collect();
        if !w.is_empty() && !out.contains(&w) {
            out.push(w);
            if out.len() == MAX_WORDS {
                break;
            }
        }
    }
    out
}

/// Whether every word occurs in one of `fields` (case-insensitively); no words match all.
pub fn matches(words: &[String], fields: &[&str]) -> bool {
    if words.is_empty() {
        return true;
    }
    let hay: Vec<String> = fields.iter().map(|f| fold(f)).collect();
    words
        .iter()
        .all(|w| hay.iter().any(|h| h.contains(w.as_str())))
}

impl Library {
    /// Derives the views from the entries.
    pub fn new(mut tracks: Vec<Track>) -> Library {
        tracks.sort_by_cached_key(|t| {
            (
                fold(&t.album_artist),
                fold(&t.album),
                t.album_id.clone(),
                t.disc.unwrap_or(0),
                t.track.unwrap_or(0),
                fold(&t.title),
                t.key.clone(),
            )
        });
        let track_ix = tracks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        let mut albums: Vec<Album> = Vec::new();
        for (i, t) in tracks.iter().enumerate() {
            // Tracks of one album are adjacent: they sort by album id after the names.
            match albums.last_mut() {
                Some(a) if a.id == t.album_id => {
                    a.tracks.push(i);
                    a.duration += t.duration;
                    a.created = a.created.max(t.stored_at);
                    a.year = a.year.or(t.year);
                    a.genre = a.genre.clone().or_else(|| t.genre.clone());
                    if a.cover.is_none() && t.has_picture {
                        a.cover = Some(t.id.clone());
                    }
                }
                _ => albums.push(Album {
                    id: t.album_id.clone(),
                    name: t.album.clone(),
                    artist: t.album_artist.clone(),
                    artist_id: t.album_artist_id.clone(),
                    tracks: vec![i],
                    year: t.year,
                    genre: t.genre.clone(),
                    duration: t.duration,
                    created: t.stored_at,
                    cover: t.has_picture.then(|| t.id.clone()),
                }),
            }
        }
        albums.sort_by_cached_key(|a| (fold(&a.name), fold(&a.artist), a.id.clone()));
        let album_ix = albums
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        // Artists: every album artist and every track artist, each with its albums.
        let mut by_artist: BTreeMap<String, Artist> = BTreeMap::new();
        for (ai, album) in albums.iter().enumerate() {
            let mut names = vec![(album.artist_id.clone(), album.artist.clone())];
            for &ti in &album.tracks {
                let t = &tracks[ti];
                names.push((t.artist_id.clone(), t.artist.clone()));
            }
            for (id, name) in names {
                let artist = by_artist.entry(id.clone()).or_insert_with(|| Artist {
                    id,
                    name,
                    albums: Vec::new(),
                    cover: None,
                });
                if artist.albums.last() != Some(&ai) {
                    artist.albums.push(ai);
                }
                if artist.cover.is_none() {
                    artist.cover = album.cover.clone();
                }
            }
        }
        let mut artists: Vec<Artist> = by_artist.into_values().collect();
        artists.sort_by_cached_key(|a| (fold(&a.name), a.id.clone()));
        let artist_ix = artists
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let last_modified = tracks.iter().map(|t| t.stored_at).max().unwrap_or(0);
        Library {
            tracks,
            albums,
            artists,
            last_modified,
            track_ix,
            album_ix,
            artist_ix,
        }
    }

    pub fn track(&self, id: &str) -> Option<&Track> {
        self.track_ix.get(id).map(|&i| &self.tracks[i])
    }

    pub fn album(&self, id: &str) -> Option<&Album> {
        self.album_ix.get(id).map(|&i| &self.albums[i])
    }

    pub fn artist(&self, id: &str) -> Option<&Artist> {
        self.artist_ix.get(id).map(|&i| &self.artists[i])
    }

    /// The track whose embedded picture is the cover `id` names: a track's own (when it has
    /// one), or an album's or artist's first track that has one.
    pub fn cover_track(&self, id: &str) -> Option<&Track> {
        let cover = match id.get(..3) {
            Some("al-") => self.album(id).and_then(|a| a.cover.as_deref()),
            Some("ar-") => self.artist(id).and_then(|a| a.cover.as_deref()),
            _ => self
                .track(id)
                .filter(|t| t.has_picture)
                .map(|t| t.id.as_str()),
        };
        cover.and_then(|c| self.track(c))
    }

    /// Every genre with its song and album counts, by name.
    pub fn genres(&self) -> Vec<Genre> {
        let mut genres: BTreeMap<String, (String, usize, Vec<usize>)> = BTreeMap::new();
        for (ai, album) in self.albums.iter().enumerate() {
            for &ti in &album.tracks {
                if let Some(g) = &self.tracks[ti].genre {
                    let e = genres
                        .entry(fold(g))
                        .or_insert_with(|| (g.clone(), 0, Vec::new()));
                    e.1 += 1;
                    if e.2.last() != Some(&ai) {
                        e.2.push(ai);
                    }
                }
            }
        }
        genres
            .into_values()
            .map(|(name, songs, albums)| Genre {
                name,
                songs,
                albums: albums.len(),
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn entry(user: &str, key: &str, artist: &str, album: &str, n: u32) -> Track {
        Track {
            id: track_id(user, key),
            key: key.into(),
            fingerprint: "00".into(),
            size: 10,
            stored_at: u64::from(n),
            format: "mp3".into(),
            title: format!("Song {n}"),
            artist: artist.into(),
            album_artist: artist.into(),
            album: album.into(),
            track: Some(n),
            disc: None,
            year: Some(2000 + n),
            genre: Some("Rock".into()),
            duration: 3,
            bitrate: Some(128),
            sample_rate: None,
            channels: None,
            bit_depth: None,
            suffix: "mp3".into(),
            content_type: "audio/mpeg".into(),
            has_picture: n == 2,
            artist_id: artist_id(user, artist),
            album_artist_id: artist_id(user, artist),
            album_id: album_id(user, artist, album),
        }
    }

    #[test]
    fn ids_are_deterministic_opaque_and_per_user() {
        assert_eq!(track_id("alice", "a.mp3"), track_id("alice", "a.mp3"));
        assert_ne!(track_id("alice", "a.mp3"), track_id("bob", "a.mp3"));
        assert_ne!(album_id("u", "a\0b", "c"), album_id("u", "a", "\0bc"));
        let id = artist_id("alice", "X");
        assert!(id.starts_with("ar-") && id.len() == 19, "{id}");
    }

    #[test]
    fn albums_and_artists_are_derived() {
        let mut t3 = entry("u", "c.mp3", "B", "Second", 1);
        t3.artist = "Guest".into();
        t3.artist_id = artist_id("u", "Guest");
        let lib = Library::new(vec![
            entry("u", "b.mp3", "A", "First", 2),
            entry("u", "a.mp3", "A", "First", 1),
            t3,
        ]);
        assert_eq!(lib.albums.len(), 2);
        let first = lib.album(&album_id("u", "A", "First")).unwrap();
        let titles: Vec<_> = first
            .tracks
            .iter()
            .map(|&i| lib.tracks[i].title.as_str())
            .collect();
        assert_eq!(titles, ["Song 1", "Song 2"]);
        assert_eq!(first.cover, Some(track_id("u", "b.mp3")));
        assert_eq!(first.created, 2);
        let names: Vec<_> = lib.artists.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "Guest"]);
        assert_eq!(
            lib.artist(&artist_id("u", "Guest")).unwrap().albums.len(),
            1
        );
        assert_eq!(
            lib.genres(),
            [Genre {
                name: "Rock".into(),
                songs: 3,
                albums: 2
            }]
        );
        assert!(lib.track(&track_id("other", "a.mp3")).is_none());
        assert_eq!(lib.last_modified, 2);
    }

    #[test]
    fn queries_split_into_words_and_empty_queries_match_all() {
        assert!(words("").is_empty());
        assert!(words("\"\"").is_empty());
        assert!(words(" * ").is_empty());
        assert_eq!(words("Foo  bAR*"), ["foo", "bar"]);
        assert_eq!(words("a a A a b"), ["a", "b"]);
        let many: String = (0..10_000).map(|i| format!("w{i} ")).collect();
        assert_eq!(words(&many).len(), MAX_WORDS);
        assert_eq!(words(&"x".repeat(1000))[0].len(), MAX_WORD_CHARS);
        assert!(matches(&[], &["x"]));
        assert!(matches(&words("tone bea"), &["A Tone", "The Beatles"]));
        assert!(!matches(&words("tone zzz"), &["A Tone", "The Beatles"]));
    }
}
