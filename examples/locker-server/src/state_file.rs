//! The server's own small state files (catalogues, stars, playlists): JSON, rewritten whole
//! through a temporary file in the same directory and renamed over the old one. What only the
//! server holds (stars, playlists) is [`Durability::Synced`]: the file and the directory are
//! fsynced, so a crash leaves the old file or the new one, never a torn one. What is derived
//! from the store (a catalogue) is [`Durability::Derived`]: no fsync, so a crash may leave an
//! older or an unreadable file, and the next start rebuilds it from the store.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a crash may do to a state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The write is on disk when `write_json` returns (two fsyncs: the file, the directory).
    Synced,
    /// Rebuildable from the store: no fsync; after a crash the file may be older or unreadable.
    Derived,
}

/// Writes `value` as JSON to `path` by rename (creating the directory if needed).
pub fn write_json<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a state file needs a directory"))?;
    std::fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    if durability == Durability::Derived {
        tmp.persist(path).map_err(|e| e.error)?;
        return Ok(());
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a JSON state file: `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// One lock per user, so changes of one user's state file follow each other in order (the file
/// on disk ends as memory does) while other users' changes go on.
#[derive(Debug, Default)]
pub struct PerUserLocks {
    locks:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<std::sync::Mutex<()>>>>,
}

impl PerUserLocks {
    /// `user`'s lock (made on first use; one per user who ever changed something).
    pub fn of(&self, user: &str) -> std::sync::Arc<std::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("per-user locks");
        std::sync::Arc::clone(locks.entry(user.to_owned()).or_default())
    }
}

/// The file name that stands for `user` in a state directory: a hash, so a user name never
/// becomes a path.
pub fn user_file_name(user: &str) -> String {
    let hash = blake3::hash(user.as_bytes());
    format!("{}.json", &hash.to_hex()[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b").join(user_file_name("alice"));
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), None);
        write_json(&path, &vec![1u32, 2], Durability::Synced).unwrap();
        write_json(&path, &vec![3u32], Durability::Derived).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![3]));
        assert_ne!(user_file_name("alice"), user_file_name("bob"));
        std::fs::write(&path, b"{").unwrap();
        assert!(read_json::<Vec<u32>>(&path).is_err());
    }

    #[test]
    fn each_user_has_one_lock_of_their_own() {
        let locks = PerUserLocks::default();
        let a = locks.of("alice");
        assert!(std::sync::Arc::ptr_eq(&a, &locks.of("alice")));
        let _held = a.lock().unwrap();
        // Bob's changes do not wait for Alice's.
        assert!(locks.of("bob").try_lock().is_ok());
        assert!(locks.of("alice").try_lock().is_err());
    }
}
