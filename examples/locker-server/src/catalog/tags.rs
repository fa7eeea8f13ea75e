//! Reading a track's tags, properties and embedded picture with lofty, through the store's
//! verified reader: lofty seeks to the parts it needs (the tag regions, the stream headers), so a
//! track is never read whole. A track lofty cannot parse still gets an entry, named from its key.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::panic::AssertUnwindSafe;

use lockerstore::{TrackReader, UserId};
use lofty::config::ParseOptions;
use lofty::file::TaggedFile;
use lofty::picture::{Picture, PictureType};
use lofty::prelude::*;
use lofty::probe::Probe;
use lofty::tag::Tag;

use super::library::{Track, album_id, artist_id, track_id};

pub const UNKNOWN_ARTIST: &str = "Unknown Artist";
pub const UNKNOWN_ALBUM: &str = "Unknown Album";

/// The most characters a name from a tag keeps (tags can be huge; entries stay small).
const MAX_NAME: usize = 512;

/// A reader that fails once `left` bytes were read from it. lofty searches MPEG frames by
/// seeking at every false sync word, and each seek makes the buffer above refill: a crafted file
/// of false syncs would cost gigabytes of copying. The budget (a few times the track's size)
/// bounds a parse by the bytes uploaded; a track over it is named from its key.
struct Budget<R> {
    inner: R,
    left: u64,
    /// Set once a read found the budget spent.
    spent: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            self.spent.set(true);
            return Err(std::io::Error::other("the tag reader's budget is spent"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Budget<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

/// Bytes a parse may read: four times the track plus 4 MiB.
fn budget_of(len: u64) -> u64 {
    len.saturating_mul(4).saturating_add(4 << 20)
}

fn parse(reader: TrackReader, read_cover_art: bool) -> Result<TaggedFile, String> {
    let options = ParseOptions::new().read_cover_art(read_cover_art);
    let left = budget_of(reader.info().size);
    let spent = std::rc::Rc::default();
    let reader = Budget {
        inner: reader,
        left,
        spent: std::rc::Rc::clone(&spent),
    };
    // lofty is fed bytes a user uploaded: a panic in it must cost this entry, not the server.
    std::panic::catch_unwind(AssertUnwindSafe(move || {
        Probe::new(BufReader::with_capacity(64 << 10, reader))
            .options(options)
            .guess_file_type()
            .map_err(|e| e.to_string())?
            .read()
            .map_err(|e| e.to_string())
    }))
    .unwrap_or_else(|_| Err("the tag reader panicked".to_owned()))
    .map_err(|e| {
        if spent.get() {
            format!("the tag reader read more than {left} bytes ({e})")
        } else {
            e
        }
    })
}

/// The tags in the order they are consulted: the format's primary tag first.
fn tags_of(file: &TaggedFile) -> Vec<&Tag> {
    let mut tags: Vec<&Tag> = file.primary_tag().into_iter().collect();
    for t in file.tags() {
        if !tags.iter().any(|p| std::ptr::eq(*p, t)) {
            tags.push(t);
        }
    }
    tags
}

fn clean(s: &str) -> Option<String> {
    let s: String = s
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .chars()
        .take(MAX_NAME)
        .collect();
    (!s.is_empty()).then_some(s)
}

fn first_string(tags: &[&Tag], get: impl Fn(&Tag) -> Option<String>) -> Option<String> {
    tags.iter().find_map(|t| get(t).as_deref().and_then(clean))
}

/// The leading four digits of a date-like string (`2004`, `2004-05-06`, `2004/05`).
fn year_of(s: &str) -> Option<u32> {
    let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
    match digits.len() {
        4.. => digits[..4].parse().ok().filter(|y| *y > 0),
        _ => None,
    }
}

/// The title a track without one gets: its key's last segment without the extension.
pub fn title_from_key(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    let stem = match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => name,
    };
    if stem.is_empty() {
        key.to_owned()
    } else {
        stem.to_owned()
    }
}

fn suffix_of(key: &str, format: &str) -> String {
    let from_key = key
        .rsplit('/')
        .next()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()));
    from_key.unwrap_or_else(|| {
        match format {
            "mp3" => "mp3",
            "flac" => "flac",
            "mp4" => "m4a",
            "ogg-vorbis" => "ogg",
            "ogg-opus" => "opus",
            _ => "bin",
        }
        .to_owned()
    })
}

/// The catalogue entry of `user`'s track, read through `reader`. Never fails: when the tags
/// cannot be read the entry is named from the key and the error is logged.
pub fn read_track(user: &UserId, reader: TrackReader) -> Track {
    let info = reader.info().clone();
    let key = info.key.as_str().to_owned();
    let parsed = parse(reader, true);
    if let Err(e) = &parsed {
        tracing::warn!(user = %user, key = %key, error = %e, "tags unreadable: the entry is named from the key");
    }
    let file = parsed.ok();
    let tags = file.as_ref().map(tags_of).unwrap_or_default();
    let title = first_string(&tags, |t| t.title().map(|s| s.into_owned()))
        .unwrap_or_else(|| title_from_key(&key));
    let artist = first_string(&tags, |t| t.artist().map(|s| s.into_owned()));
    let album_artist = first_string(&tags, |t| {
        t.get_string(ItemKey::AlbumArtist).map(str::to_owned)
    });
    let album = first_string(&tags, |t| t.album().map(|s| s.into_owned()))
        .unwrap_or_else(|| UNKNOWN_ALBUM.to_owned());
    let artist = artist
        .or_else(|| album_artist.clone())
        .unwrap_or_else(|| UNKNOWN_ARTIST.to_owned());
    let album_artist = album_artist.unwrap_or_else(|| artist.clone());
    let year = tags.iter().find_map(|t| {
        t.date()
            .map(|d| u32::from(d.year))
            .filter(|y| *y > 0)
            .or_else(|| {
                [
                    ItemKey::RecordingDate,
                    ItemKey::Year,
                    ItemKey::OriginalReleaseDate,
                ]
                .into_iter()
                .find_map(|k| t.get_string(k).and_then(year_of))
            })
    });
    let properties = file.as_ref().map(|f| f.properties());
    let u = user.as_str();
    Track {
        id: track_id(u, &key),
        fingerprint: info.fingerprint.to_hex(),
        size: info.size,
        stored_at: info.stored_at,
        format: info.format.to_owned(),
        track: tags.iter().find_map(|t| t.track()),
        disc: tags.iter().find_map(|t| t.disk()),
        year,
        genre: first_string(&tags, |t| t.genre().map(|s| s.into_owned())),
        duration: properties.map_or(0, |p| {
            p.duration().as_millis().saturating_add(500) as u64 / 1000
        }),
        bitrate: properties.and_then(|p| p.audio_bitrate().or(p.overall_bitrate())),
        sample_rate: properties.and_then(|p| p.sample_rate()),
        channels: properties.and_then(|p| p.channels()),
        bit_depth: properties.and_then(|p| p.bit_depth()),
        suffix: suffix_of(&key, info.format),
        content_type: crate::http::content_type(info.format).to_owned(),
        has_picture: tags.iter().any(|t| t.picture_count() > 0),
        artist_id: artist_id(u, &artist),
        album_artist_id: artist_id(u, &album_artist),
        album_id: album_id(u, &album_artist, &album),
        title,
        artist,
        album_artist,
        album,
        key,
    }
}

/// The content type of a picture: what the tag says when it is a raster type a browser shows
/// inertly, else what its first bytes say. Never `image/svg+xml` or anything else a tag
/// claims: a picture is an uploader's bytes, and an SVG is a document with scripts.
fn picture_type(p: &Picture) -> String {
    const RASTER: [&str; 5] = [
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
    ];
    if let Some(m) = p.mime_type()
        && let Some(known) = RASTER.iter().find(|r| r.eq_ignore_ascii_case(m.as_str()))
    {
        return (*known).to_owned();
    }
    let d = p.data();
    if d.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg".into()
    } else if d.starts_with(b"\x89PNG") {
        "image/png".into()
    } else if d.starts_with(b"GIF8") {
        "image/gif".into()
    } else {
        "application/octet-stream".into()
    }
}

/// The embedded picture of `user`'s track `key` and its content type; `None` when the track
/// has none or is gone. Blocking.
pub fn picture_of(
    store: &lockerstore::Store,
    user: &lockerstore::UserId,
    key: &lockerstore::TrackKey,
) -> lockerstore::Result<Option<(Vec<u8>, String)>> {
    match store.open_track(user, key) {
        Ok(reader) => Ok(read_picture(reader)),
        Err(lockerstore::Error::TrackNotFound { .. } | lockerstore::Error::UnknownUser(_)) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The embedded picture of a track (the front cover when there are several) and its content
/// type; `None` when it has none or its tags cannot be read.
pub fn read_picture(reader: TrackReader) -> Option<(Vec<u8>, String)> {
    let file = parse(reader, true).ok()?;
    let tags = tags_of(&file);
    let picture = tags
        .iter()
        .find_map(|t| t.get_picture_type(PictureType::CoverFront))
        .or_else(|| tags.iter().find_map(|t| t.pictures().first()))?;
    Some((picture.data().to_vec(), picture_type(picture)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fall_back_to_the_key() {
        assert_eq!(title_from_key("Artist/Album/01 Song.mp3"), "01 Song");
        assert_eq!(title_from_key("Song"), "Song");
        assert_eq!(title_from_key("dir/.hidden"), ".hidden");
        assert_eq!(suffix_of("a/b.FLAC", "flac"), "flac");
        assert_eq!(suffix_of("a/b", "mp4"), "m4a");
        assert_eq!(year_of("2004-05-06"), Some(2004));
        assert_eq!(year_of("04"), None);
        assert_eq!(clean("  x\0"), Some("x".into()));
        assert_eq!(clean(" \0 "), None);
    }

    #[test]
    fn a_parse_reads_no_more_than_its_budget() {
        let mut r = Budget {
            inner: std::io::Cursor::new(vec![7u8; 100]),
            left: 30,
            spent: std::rc::Rc::default(),
        };
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).unwrap(), 30);
        r.seek(SeekFrom::Start(0)).unwrap();
        assert!(
            r.read(&mut buf).is_err(),
            "seeking back does not refill the budget"
        );
    }

    /// A file of nothing but MPEG false sync words makes lofty seek at every one; the budget
    /// ends the parse, and the track is named from its key.
    #[test]
    fn a_file_of_false_syncs_is_named_from_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let store = lockerstore::Store::open(tmp.path(), lockerstore::Options::default()).unwrap();
        let user = UserId::new("u").unwrap();
        let key = lockerstore::TrackKey::new("Hostile/Syncs.mp3").unwrap();
        let bytes: Vec<u8> = [0xFFu8, 0xE2, 0x00, 0x00].repeat(1 << 20);
        store.put(&user, &key, &bytes[..]).unwrap();
        let Err(err) = parse(store.open_track(&user, &key).unwrap(), true) else {
            panic!("a file of false syncs parsed")
        };
        assert!(
            err.contains("read more than"),
            "the budget ended the parse: {err}"
        );
        let entry = read_track(&user, store.open_track(&user, &key).unwrap());
        assert_eq!(entry.title, "Syncs");
        assert_eq!(entry.artist, UNKNOWN_ARTIST);
    }
}
