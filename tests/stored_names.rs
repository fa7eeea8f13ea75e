//! A stored user id or track key that fails validation is damage: verify lists it and goes on,
//! accounting reports it as stored, and a listing that meets it calls it corruption.

mod common;

use common::{key, small_chunks, user};
use lockerstore::{Options, Store};
use redb::{Database, ReadableDatabase, TableDefinition};

const USERS: TableDefinition<&str, [u8; 24]> = TableDefinition::new("users");
const USER_NAMES: TableDefinition<u64, &str> = TableDefinition::new("user_names");
const TRACKS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("tracks");

#[test]
fn verify_lists_bad_stored_names_instead_of_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let options = || Options::default().chunker(small_chunks()).min_free_space(0);
    {
        let store = Store::open(&dir, options()).unwrap();
        store
            .put(&user("alice"), &key("a"), &[5u8; 3000][..])
            .unwrap();
    }
    {
        // A track under a key no put could have written, and a user (number 2) whose stored id
        // is invalid, holding a copy of the same record.
        let db = Database::open(dir.join("meta.redb")).unwrap();
        let record = {
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(TRACKS).unwrap();
            t.get((1, "a")).unwrap().unwrap().value().to_vec()
        };
        let txn = db.begin_write().unwrap();
        {
            let mut tracks = txn.open_table(TRACKS).unwrap();
            tracks.insert((1, "x\ny"), record.as_slice()).unwrap();
            tracks.insert((2, "k"), record.as_slice()).unwrap();
            let mut row = [0u8; 24];
            row[0..8].copy_from_slice(&2u64.to_le_bytes());
            row[8..16].copy_from_slice(&3000u64.to_le_bytes());
            row[16..24].copy_from_slice(&1u64.to_le_bytes());
            txn.open_table(USERS).unwrap().insert("b\0d", row).unwrap();
            txn.open_table(USER_NAMES)
                .unwrap()
                .insert(2, "b\0d")
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&dir, options()).unwrap();
    let report = store.verify().unwrap();
    let has = |s: &str| report.problems.iter().any(|p| p.contains(s));
    assert!(
        has(r#"track "x\ny" of user number 1: bad names"#),
        "{report:#?}"
    );
    assert!(has(r#"stored user id "b\0d" is invalid"#), "{report:#?}");
    // The sound track was still read back.
    assert_eq!(report.tracks_checked, 1, "{report:#?}");
    // Accounting reports the name as stored; a listing that meets the bad key calls it
    // corruption.
    let stats = store.stats().unwrap();
    assert!(stats.per_user.iter().any(|u| u.user == "b\0d"), "{stats:?}");
    assert!(store.list(&user("alice")).unwrap_err().is_corruption());
}
