//! What each user adds to their library through the Subsonic API: stars, play counts,
//! playlists. Where it lives is the [`Backend`]'s choice. With files (one node): in memory as
//! one immutable snapshot per user and on disk in `<state>/subsonic/<user hash>.json`, written
//! atomically before a change is visible. In PostgreSQL (`--meta`, many nodes): one row per
//! user in `srv_userdata` (the same JSON, with a version), read on each request (one round
//! trip) and changed by a conditional update (`WHERE version = $read`, run again when another
//! node changed the row meanwhile), so every node sees every change at once.

use std::collections::{BTreeMap, HashMap};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::response::Failure;
use crate::pg::Pg;
use crate::state::Backend;
use crate::state_file;

/// Most playlists a user may hold, and most entries in one.
pub const MAX_PLAYLISTS: usize = 1_000;
pub const MAX_PLAYLIST_ENTRIES: usize = 10_000;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Play {
    pub count: u64,
    /// Seconds since the Unix epoch.
    pub last: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Playlist {
    pub id: String,
    pub name: String,
    pub comment: Option<String>,
    pub public: bool,
    pub created: u64,
    pub changed: u64,
    /// Track ids, in order.
    pub entries: Vec<String>,
}

/// One user's stars, plays and playlists.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserData {
    pub user: String,
    /// Starred ids (tracks, albums, artists) -> when (seconds).
    pub stars: BTreeMap<String, u64>,
    /// Track id -> plays.
    pub plays: BTreeMap<String, Play>,
    /// Playlist id -> playlist.
    pub playlists: BTreeMap<String, Playlist>,
}

/// Every user's data.
#[derive(Debug)]
pub struct UserDataStore {
    dir: PathBuf,
    users: RwLock<HashMap<String, Arc<UserData>>>,
    /// Serialises each user's changes, so their file on disk follows the same order as memory.
    writers: state_file::PerUserLocks,
    /// Set when the data lives in PostgreSQL (then `dir` and `users` are unused).
    pg: Option<Arc<Pg>>,
}

impl UserDataStore {
    /// Loads the data of `users` from `state_dir/subsonic`. Blocking.
    #[cfg(test)]
    pub fn open(state_dir: &Path, users: &[String]) -> std::io::Result<UserDataStore> {
        UserDataStore::open_in(&Backend::Files(state_dir.to_owned()), users)
    }

    /// Opens the data kept in `backend` (for files, loading that of `users`). Blocking.
    pub fn open_in(backend: &Backend, users: &[String]) -> std::io::Result<UserDataStore> {
        let (state_dir, pg) = match backend {
            Backend::Files(dir) => (dir.clone(), None),
            Backend::Postgres(pg) => (PathBuf::new(), Some(Arc::clone(pg))),
        };
        let store = UserDataStore {
            dir: state_dir.join("subsonic"),
            users: RwLock::new(HashMap::new()),
            writers: state_file::PerUserLocks::default(),
            pg,
        };
        if store.pg.is_some() {
            return Ok(store);
        }
        std::fs::create_dir_all(&store.dir)?;
        let mut map = HashMap::new();
        for user in users {
            if let Some(data) = store.load(user)? {
                map.insert(user.clone(), Arc::new(data));
            }
        }
        *store.users.write().expect("user data lock") = map;
        Ok(store)
    }

    fn path(&self, user: &str) -> PathBuf {
        self.dir.join(state_file::user_file_name(user))
    }

    fn load(&self, user: &str) -> std::io::Result<Option<UserData>> {
        Ok(state_file::read_json::<UserData>(&self.path(user))?.filter(|d| d.user == user))
    }

    /// `user`'s data as it is now (empty, logged, when the database cannot answer).
    pub fn get(&self, user: &str) -> Arc<UserData> {
        if let Some(pg) = &self.pg {
            return Arc::new(match pg_read(pg, user) {
                Ok(Some((_, data))) => data,
                Ok(None) => UserData {
                    user: user.to_owned(),
                    ..UserData::default()
                },
                Err(e) => {
                    tracing::error!(user, error = %e, "user data not read");
                    UserData {
                        user: user.to_owned(),
                        ..UserData::default()
                    }
                }
            });
        }
        self.users
            .read()
            .expect("user data lock")
            .get(user)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(UserData {
                    user: user.to_owned(),
                    ..UserData::default()
                })
            })
    }

    /// Applies `f` to a copy of `user`'s data, saves it, then makes it visible. Blocking. When
    /// `f` fails or the save fails nothing changes.
    pub fn update<T>(
        &self,
        user: &str,
        f: impl FnOnce(&mut UserData) -> Result<T, Failure> + Clone,
    ) -> Result<T, Failure> {
        if let Some(pg) = &self.pg {
            return pg_update(pg, user, f);
        }
        let writer = self.writers.of(user);
        let _guard = writer.lock().expect("user data writer lock");
        let mut data = (*self.get(user)).clone();
        let out = f(&mut data)?;
        state_file::write_json(&self.path(user), &data, state_file::Durability::Synced).map_err(
            |e| {
                tracing::error!(user, error = %e, "user data not saved");
                Failure::generic("The change could not be saved")
            },
        )?;
        self.users
            .write()
            .expect("user data lock")
            .insert(user.to_owned(), Arc::new(data));
        Ok(out)
    }
}

/// `user`'s row: its version and data.
fn pg_read(pg: &Pg, user: &str) -> std::io::Result<Option<(i64, UserData)>> {
    let row = pg.with(|c| {
        c.query_opt(
            "SELECT version, data FROM srv_userdata WHERE name = $1",
            &[&user],
        )
    })?;
    let Some(row) = row else {
        return Ok(None);
    };
    let data: UserData = serde_json::from_str(row.get::<_, &str>(1))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(Some((row.get(0), data)))
}

/// Reads `user`'s row, applies `f`, and writes it back if nobody changed it meanwhile (else
/// reads it again and applies `f` to what is there now).
fn pg_update<T>(
    pg: &Pg,
    user: &str,
    f: impl FnOnce(&mut UserData) -> Result<T, Failure> + Clone,
) -> Result<T, Failure> {
    let failed = |e: std::io::Error| {
        tracing::error!(user, error = %e, "user data not saved");
        Failure::generic("The change could not be saved")
    };
    loop {
        let read = pg_read(pg, user).map_err(failed)?;
        let (version, mut data) = read.unwrap_or_else(|| {
            (
                0,
                UserData {
                    user: user.to_owned(),
                    ..UserData::default()
                },
            )
        });
        // A lost race runs a fresh copy of `f` on what is there now.
        let out = f.clone()(&mut data)?;
        let json = serde_json::to_string(&data).map_err(|e| failed(std::io::Error::other(e)))?;
        let next = version + 1;
        let written = pg
            .with(|c| {
                if version == 0 {
                    c.execute(
                        "INSERT INTO srv_userdata (name, version, data) VALUES ($1, $2, $3)
                         ON CONFLICT (name) DO NOTHING",
                        &[&user, &next, &json],
                    )
                } else {
                    c.execute(
                        "UPDATE srv_userdata SET version = $2, data = $3
                         WHERE name = $1 AND version = $4",
                        &[&user, &next, &json, &version],
                    )
                }
            })
            .map_err(failed)?;
        if written == 1 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_persist_and_failed_changes_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let users = vec!["alice".to_owned(), "bob".to_owned()];
        let store = UserDataStore::open(tmp.path(), &users).unwrap();
        store
            .update("alice", |d| {
                d.stars.insert("tr-1".into(), 5);
                Ok(())
            })
            .unwrap();
        let err = store
            .update("alice", |d| {
                d.stars.clear();
                Err::<(), _>(Failure::not_found("Song"))
            })
            .unwrap_err();
        assert_eq!(err.code, 70);
        assert_eq!(store.get("alice").stars.len(), 1);
        assert!(store.get("bob").stars.is_empty());
        drop(store);
        let store = UserDataStore::open(tmp.path(), &users).unwrap();
        assert_eq!(store.get("alice").stars.get("tr-1"), Some(&5));
    }
}
