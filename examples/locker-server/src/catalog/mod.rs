//! The per-user catalogue the Subsonic API browses: an entry per track, read from its tags.
//!
//! Kept in memory as one immutable [`Library`] per user (swapped whole on a change) and on disk
//! in `<state>/catalog/<user hash>.json`, written atomically on every change. The store is the
//! source of truth: at startup every user's file is checked against `Store::list` (keys and
//! fingerprints) and whatever differs is read again from the store; a missing or unreadable
//! file is rebuilt whole.
//!
//! When other nodes share the store (`--meta`), they store and delete tracks behind this
//! node's back: [`Catalog::current`] then checks a user's catalogue against `Store::list`
//! before answering (at most once per [`Catalog::recheck`] interval; by default on every read)
//! and reads the tags of what changed. The files stay node-local caches.

pub mod library;
pub mod tags;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lockerstore::{Error, Store, TrackInfo, TrackKey, UserId};
use serde::{Deserialize, Serialize};

pub use library::{Album, Artist, Library, Track};

use crate::state_file::{self, Durability};

/// Bumped when an entry's meaning changes: files of another version are rebuilt.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct UserFile {
    version: u32,
    user: String,
    tracks: Vec<Track>,
}

/// Every user's catalogue.
#[derive(Debug)]
pub struct Catalog {
    dir: PathBuf,
    libraries: RwLock<HashMap<String, Arc<Library>>>,
    /// Serialises each user's changes, so their file on disk follows the same order as memory.
    writers: state_file::PerUserLocks,
    /// With other nodes on the store: how long a catalogue checked against the store is
    /// trusted without a new check (`None`: one node, the hooks keep it right).
    recheck: Option<Duration>,
    /// When each user's catalogue was last checked against the store.
    checked: Mutex<HashMap<String, Instant>>,
}

/// A user's tracks in the store; a user who never stored one has none.
fn listed(store: &Store, user: &UserId) -> lockerstore::Result<Vec<TrackInfo>> {
    match store.list(user) {
        Err(Error::UnknownUser(_)) => Ok(Vec::new()),
        r => r,
    }
}

impl Catalog {
    /// Loads the catalogues of `users` from `state_dir/catalog` and brings each in line with the
    /// store (reading the tags of every track the file does not describe). Blocking.
    pub fn open(state_dir: &Path, store: &Store, users: &[String]) -> std::io::Result<Catalog> {
        let catalog = Catalog {
            dir: state_dir.join("catalog"),
            libraries: RwLock::new(HashMap::new()),
            writers: state_file::PerUserLocks::default(),
            recheck: None,
            checked: Mutex::default(),
        };
        std::fs::create_dir_all(&catalog.dir)?;
        for name in users {
            let Ok(user) = UserId::new(name) else {
                continue;
            };
            catalog.reconcile(store, &user)?;
        }
        Ok(catalog)
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir.join(state_file::user_file_name(user))
    }

    /// Brings `user`'s catalogue in line with the store; returns how many entries were read
    /// again from the tracks.
    pub fn reconcile(&self, store: &Store, user: &UserId) -> std::io::Result<usize> {
        let path = self.path(user.as_str());
        let file: Option<UserFile> = state_file::read_json(&path).unwrap_or_else(|e| {
            tracing::warn!(user = %user, error = %e, "catalogue file unreadable: rebuilding it");
            None
        });
        let missing = file.is_none();
        let known: HashMap<String, Track> = file
            .filter(|f| f.version == VERSION && f.user == user.as_str())
            .map(|f| f.tracks.into_iter().map(|t| (t.key.clone(), t)).collect())
            .unwrap_or_default();
        let infos = listed(store, user).map_err(std::io::Error::other)?;
        Ok(self.rebuild(store, user, infos, known, missing))
    }

    /// Installs `user`'s catalogue for the tracks `infos`, taking the entries of `known` whose
    /// fingerprint matches and reading the tags of the others; saves it when it differs from
    /// `known` (or `changed`). Returns how many entries were read from the tracks.
    fn rebuild(
        &self,
        store: &Store,
        user: &UserId,
        infos: Vec<TrackInfo>,
        mut known: HashMap<String, Track>,
        mut changed: bool,
    ) -> usize {
        changed |= known.len() != infos.len();
        let mut read = 0;
        let mut tracks = Vec::with_capacity(infos.len());
        for info in infos {
            match known.remove(info.key.as_str()) {
                Some(mut t) if t.fingerprint == info.fingerprint.to_hex() => {
                    if (t.size, t.stored_at) != (info.size, info.stored_at) {
                        (t.size, t.stored_at) = (info.size, info.stored_at);
                        changed = true;
                    }
                    tracks.push(t);
                }
                _ => match store.open_track(user, &info.key) {
                    Ok(reader) => {
                        tracks.push(tags::read_track(user, reader));
                        read += 1;
                        changed = true;
                    }
                    Err(e) => {
                        tracing::error!(user = %user, key = %info.key, error = %e, "track unreadable: left out of the catalogue");
                        changed = true;
                    }
                },
            }
        }
        if changed {
            self.persist(user.as_str(), &tracks);
            tracing::info!(user = %user, tracks = tracks.len(), read, "catalogue rebuilt from the store");
        }
        self.install(user.as_str(), tracks);
        read
    }

    /// Makes [`Catalog::current`] check catalogues against the store, trusting a check for
    /// `every` (zero: check on every read). For a store other nodes change.
    #[must_use]
    pub fn recheck(mut self, every: Duration) -> Catalog {
        self.recheck = Some(every);
        self
    }

    /// `user`'s library, checked against the store first when other nodes share it (see
    /// [`Catalog::recheck`]): one `Store::list` of the user's tracks, compared with the
    /// entries in memory; the tags of tracks stored elsewhere are read here. Blocking; a
    /// failed check is logged and answers the library as it was.
    pub fn current(&self, store: &Store, user: &UserId) -> Arc<Library> {
        let Some(every) = self.recheck else {
            return self.library(user.as_str());
        };
        let due = self
            .checked
            .lock()
            .expect("catalogue checks")
            .get(user.as_str())
            .is_none_or(|at| at.elapsed() >= every);
        if due {
            crate::pg::blocking(|| self.check(store, user));
        }
        self.library(user.as_str())
    }

    /// Checks `user`'s catalogue against the store (see [`Catalog::current`]).
    fn check(&self, store: &Store, user: &UserId) {
        {
            let started = Instant::now();
            let writer = self.writers.of(user.as_str());
            let _guard = writer.lock().expect("catalogue writer lock");
            match listed(store, user) {
                Ok(infos) => {
                    let lib = self.library(user.as_str());
                    let same = lib.tracks.len() == infos.len() && {
                        let by_key: HashMap<&str, &Track> =
                            lib.tracks.iter().map(|t| (t.key.as_str(), t)).collect();
                        infos.iter().all(|i| {
                            by_key.get(i.key.as_str()).is_some_and(|t| {
                                t.fingerprint == i.fingerprint.to_hex()
                                    && (t.size, t.stored_at) == (i.size, i.stored_at)
                            })
                        })
                    };
                    if !same {
                        let known = lib
                            .tracks
                            .iter()
                            .map(|t| (t.key.clone(), t.clone()))
                            .collect();
                        self.rebuild(store, user, infos, known, true);
                    }
                    self.checked
                        .lock()
                        .expect("catalogue checks")
                        .insert(user.as_str().to_owned(), started);
                    tracing::debug!(user = %user, same, micros = started.elapsed().as_micros() as u64, "catalogue checked against the store");
                }
                Err(e) => {
                    tracing::error!(user = %user, error = %e, "catalogue not checked against the store");
                }
            }
        }
    }

    fn persist(&self, user: &str, tracks: &[Track]) {
        let file = UserFile {
            version: VERSION,
            user: user.to_owned(),
            tracks: tracks.to_vec(),
        };
        // Derived from the store, so not synced: memory stays right if the write fails or a
        // crash loses it, and the next start checks the file against the store and rebuilds.
        if let Err(e) = state_file::write_json(&self.path(user), &file, Durability::Derived) {
            tracing::error!(user, error = %e, "catalogue not saved");
        }
    }

    fn install(&self, user: &str, tracks: Vec<Track>) {
        let library = Arc::new(Library::new(tracks));
        self.libraries
            .write()
            .expect("catalogue lock")
            .insert(user.to_owned(), library);
    }

    /// `user`'s library as it is now (empty for a user with no track).
    pub fn library(&self, user: &str) -> Arc<Library> {
        self.libraries
            .read()
            .expect("catalogue lock")
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// Applies `f` to `user`'s entries, then saves and installs them.
    fn change(&self, user: &UserId, f: impl FnOnce(&mut Vec<Track>) -> bool) {
        let writer = self.writers.of(user.as_str());
        let _guard = writer.lock().expect("catalogue writer lock");
        let mut tracks = self.library(user.as_str()).tracks.clone();
        if f(&mut tracks) {
            self.persist(user.as_str(), &tracks);
            self.install(user.as_str(), tracks);
        }
    }

    /// After `user`'s track `key` was stored: reads its tags and updates the entry. Blocking;
    /// never fails (a track whose tags cannot be read is named from its key).
    pub fn stored(&self, store: &Store, user: &UserId, key: &TrackKey) {
        let entry = match store.open_track(user, key) {
            Ok(reader) => tags::read_track(user, reader),
            Err(e) => {
                tracing::error!(user = %user, key = %key, error = %e, "stored track unreadable");
                return;
            }
        };
        self.change(user, |tracks| {
            // The store decides: a put or delete of the same key may have landed meanwhile.
            match store.track_info(user, key) {
                Ok(info) if info.fingerprint.to_hex() == entry.fingerprint => {
                    tracks.retain(|t| t.key != entry.key);
                    tracks.push(entry);
                    true
                }
                Ok(_) => false, // replaced since: that put's own call updates the entry
                Err(Error::TrackNotFound { .. } | Error::UnknownUser(_)) => {
                    let before = tracks.len();
                    tracks.retain(|t| t.key != entry.key);
                    tracks.len() != before
                }
                Err(e) => {
                    tracing::error!(user = %user, key = %key, error = %e, "catalogue not updated");
                    false
                }
            }
        });
    }

    /// After `user`'s track `key` was deleted: removes its entry (unless the key was stored
    /// again meanwhile). Blocking.
    pub fn deleted(&self, store: &Store, user: &UserId, key: &TrackKey) {
        self.change(user, |tracks| {
            if store.track_info(user, key).is_ok() {
                return false;
            }
            let before = tracks.len();
            tracks.retain(|t| t.key != key.as_str());
            tracks.len() != before
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockerstore::Options;

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| {
                    ["mp3", "flac", "m4a", "ogg", "opus"].contains(&e.to_str().unwrap())
                })
            })
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn entries_come_from_the_tags_and_survive_a_rebuild() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store"), Options::default()).unwrap();
        let state = tmp.path().join("state");
        let alice = UserId::new("alice").unwrap();
        let users = vec!["alice".to_owned()];
        let catalog = Catalog::open(&state, &store, &users).unwrap();
        for (name, bytes) in fixtures() {
            let key = TrackKey::new(&format!("In/{name}")).unwrap();
            store.put(&alice, &key, &bytes[..]).unwrap();
            catalog.stored(&store, &alice, &key);
        }
        let lib = catalog.library("alice");
        assert_eq!(lib.tracks.len(), fixtures().len());
        let by_key = |k: &str| {
            lib.tracks
                .iter()
                .find(|t| t.key == format!("In/{k}"))
                .unwrap()
        };
        let cover = by_key("mp3-cbr-id3v23-cover-eyed3.mp3");
        assert_eq!(
            (
                cover.title.as_str(),
                cover.artist.as_str(),
                cover.album.as_str()
            ),
            ("Chord Study", "Fixture Ensemble", "Boundary Tests")
        );
        assert_eq!(
            (cover.track, cover.has_picture, cover.duration),
            (Some(1), true, 4)
        );
        assert_eq!((cover.bitrate, cover.suffix.as_str()), (Some(128), "mp3"));
        assert_eq!(cover.content_type, "audio/mpeg");
        let plain = by_key("flac-plain-flac.flac");
        assert_eq!(
            (
                plain.title.as_str(),
                plain.artist.as_str(),
                plain.album.as_str()
            ),
            ("flac-plain-flac", tags::UNKNOWN_ARTIST, tags::UNKNOWN_ALBUM)
        );
        assert!(by_key("m4a-aac-moov-end-tags-cover-mutagen.m4a").has_picture);
        assert!(
            lib.tracks
                .iter()
                .all(|t| t.duration >= 3 && t.bitrate.is_some())
        );

        // A reopen reads nothing again; a deleted file is rebuilt whole, alike.
        let before: Vec<Track> = lib.tracks.clone();
        drop(catalog);
        let catalog = Catalog::open(&state, &store, &users).unwrap();
        assert_eq!(catalog.library("alice").tracks, before);
        assert_eq!(catalog.reconcile(&store, &alice).unwrap(), 0);
        std::fs::remove_dir_all(state.join("catalog")).unwrap();
        let catalog = Catalog::open(&state, &store, &users).unwrap();
        assert_eq!(catalog.library("alice").tracks, before);
        assert!(
            state
                .join("catalog")
                .join(state_file::user_file_name("alice"))
                .exists()
        );

        // The store decides: a track deleted behind the catalogue's back is dropped at reopen,
        // and a delete through the hook drops its entry at once.
        let gone = TrackKey::new("In/opus-opusenc.opus").unwrap();
        store.delete(&alice, &gone).unwrap();
        drop(catalog);
        let catalog = Catalog::open(&state, &store, &users).unwrap();
        assert_eq!(catalog.library("alice").tracks.len(), before.len() - 1);
        let key = TrackKey::new("In/flac-plain-flac.flac").unwrap();
        store.delete(&alice, &key).unwrap();
        catalog.deleted(&store, &alice, &key);
        assert_eq!(catalog.library("alice").tracks.len(), before.len() - 2);
        assert!(catalog.library("bob").tracks.is_empty());

        // Bytes that are no audio still get an entry named from the key.
        let junk = TrackKey::new("Misc/not audio.mp3").unwrap();
        store.put(&alice, &junk, &b"no audio here"[..]).unwrap();
        catalog.stored(&store, &alice, &junk);
        let lib = catalog.library("alice");
        let t = lib.tracks.iter().find(|t| t.key == junk.as_str()).unwrap();
        assert_eq!(
            (t.title.as_str(), t.duration, t.has_picture),
            ("not audio", 0, false)
        );
    }
}
