//! Licences per rights holder: each holder's tracks follow its licence, one holder moves both
//! ways while the others stay put, the what-if by holder matches each migration, and the audit
//! judges every holder.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use lockerstore::corpus::{Corpus, CorpusSpec};
use lockerstore::{
    Domain, Error, GcOptions, HolderWhatIf, Licence, LicenseMode, PutOptions, RightsHolder, Store,
};

const HOLDERS: [&str; 3] = ["EMI", "Sony Music", "Warp Records"];

fn holder(name: &str) -> RightsHolder {
    RightsHolder::new(name).unwrap()
}

fn corpus() -> Corpus {
    Corpus::generate(CorpusSpec {
        seed: 11,
        users: 6,
        recordings: 6,
        album_size: 3,
        tracks_per_user: 4,
        min_audio: 150_000,
        max_audio: 400_000,
    })
}

/// The holder of an upload: by recording, so every copy of a recording has one label.
fn holder_of(corpus: &Corpus, i: usize) -> &'static str {
    HOLDERS[corpus.uploads[i].recording % HOLDERS.len()]
}

/// The bytes two holders' tracks share (a cover image both labels use), uploaded by every
/// user under both holders: collapsing one holder must copy, never take the other's record.
fn shared_art() -> Vec<u8> {
    audio("cover art both labels use", 300_000)
}

/// Every track the test stores: (user, key, holder, bytes).
fn uploads(corpus: &Corpus) -> Vec<(String, String, &'static str, Vec<u8>)> {
    let mut all: Vec<_> = corpus
        .uploads
        .iter()
        .enumerate()
        .map(|(i, up)| {
            (
                up.user.clone(),
                up.key.clone(),
                holder_of(corpus, i),
                corpus.bytes(i),
            )
        })
        .collect();
    let users: std::collections::BTreeSet<String> =
        corpus.uploads.iter().map(|u| u.user.clone()).collect();
    for u in users.iter().take(3) {
        for h in &HOLDERS[..2] {
            all.push((u.clone(), format!("{h}/cover.jpg"), h, shared_art()));
        }
    }
    all
}

fn put_all(store: &Store, all: &[(String, String, &'static str, Vec<u8>)]) {
    for (u, k, h, bytes) in all {
        store
            .put_with(
                &user(u),
                &key(k),
                &bytes[..],
                &PutOptions::default().rights_holder(holder(h)),
            )
            .unwrap();
    }
}

fn check_all(store: &Store, all: &[(String, String, &'static str, Vec<u8>)]) {
    for (u, k, h, bytes) in all {
        assert_eq!(
            &store.read_track(&user(u), &key(k)).unwrap(),
            bytes,
            "{u}/{k}"
        );
        let info = store.track_info(&user(u), &key(k)).unwrap();
        assert_eq!(info.rights_holder.as_ref().map(|h| h.as_str()), Some(*h));
    }
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
}

/// The audit conforms, for the store and for every holder, each in the mode the policy gives.
fn assert_conforms(store: &Store, modes: &BTreeMap<&str, LicenseMode>) {
    let audit = store.audit(false).unwrap();
    assert!(audit.conforming, "{audit:?}");
    for h in &audit.holders {
        assert!(h.conforming && h.breaking_tracks == 0, "{h:?}");
        let name = h.holder.as_ref().map(|h| h.as_str()).unwrap_or("");
        assert_eq!(Some(&h.mode), modes.get(name), "{h:?}");
    }
}

fn prediction(store: &Store, name: &str) -> HolderWhatIf {
    store
        .what_if_by_holder()
        .unwrap()
        .holders
        .into_iter()
        .find(|w| w.holder.as_str() == name)
        .unwrap()
}

/// Tracks of `name` in the store.
fn tracks_of(all: &[(String, String, &'static str, Vec<u8>)], name: &str) -> u64 {
    all.iter().filter(|t| t.2 == name).count() as u64
}

/// Sets `name`'s licence to `mode`, migrates, and checks the migration against the prediction
/// made before: the physical bytes after and the bytes written exactly, the bytes freed once GC
/// ran; only `name`'s tracks moved.
fn flip_and_check(
    store: &Store,
    all: &[(String, String, &'static str, Vec<u8>)],
    name: &str,
    mode: LicenseMode,
) {
    let w = prediction(store, name);
    assert_eq!(w.mode_after, mode, "{w:?}");
    assert_eq!(w.tracks, tracks_of(all, name));
    let before = store.stats().unwrap();
    assert_eq!(w.physical_bytes_baseline, before.physical_bytes);
    store
        .set_licence(&holder(name), Some(Licence::new(mode)))
        .unwrap();
    let rep = store.migrate(&mut |_| {}).unwrap();
    assert_eq!(rep.tracks_migrated, tracks_of(all, name), "{rep:?}");
    let after = store.stats().unwrap();
    assert_eq!(
        after.physical_bytes, w.physical_bytes_after,
        "{name} to {mode}: {w:?} vs {after:?}"
    );
    assert_eq!(rep.bytes_written, w.bytes_to_write, "{rep:?} vs {w:?}");
    assert_eq!(
        w.savings,
        before.physical_bytes as i64 - after.physical_bytes as i64
    );
    // What migration freed is garbage now, for GC.
    assert_eq!(
        after.garbage_bytes,
        before.garbage_bytes + w.bytes_to_free,
        "{w:?}"
    );
    store.gc(GcOptions::default(), &mut |_| {}).unwrap();
    assert!(store.stats().unwrap().garbage_bytes <= after.garbage_bytes);
}

#[test]
fn each_holder_moves_both_ways_and_the_what_if_matches_every_migration() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
    let corpus = corpus();
    let all = uploads(&corpus);
    put_all(&store, &all);
    let mut modes: BTreeMap<&str, LicenseMode> = HOLDERS
        .iter()
        .map(|h| (*h, LicenseMode::PerUserCopy))
        .collect();
    assert_conforms(&store, &modes);
    let by = store.what_if_by_holder().unwrap();
    assert_eq!(by.holders.len(), HOLDERS.len());
    assert_eq!(by.unassigned_tracks, 0);
    assert!(by.holders.windows(2).all(|p| p[0].savings >= p[1].savings));
    assert!(by.holders.iter().all(|h| h.savings > 0), "{by:?}");

    for name in HOLDERS {
        flip_and_check(&store, &all, name, LicenseMode::SingleMaster);
        modes.insert(name, LicenseMode::SingleMaster);
        assert_conforms(&store, &modes);
        check_all(&store, &all);
    }
    // Every holder shared: one record per distinct chunk.
    assert_eq!(store.audit(false).unwrap().duplicate_records, 0);
    for name in HOLDERS {
        flip_and_check(&store, &all, name, LicenseMode::PerUserCopy);
        modes.insert(name, LicenseMode::PerUserCopy);
        assert_conforms(&store, &modes);
        check_all(&store, &all);
    }
    assert_eq!(store.audit(false).unwrap().shared_domain_records, 0);
}

#[test]
fn identical_bytes_of_two_holders_obey_each_licence() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
    let art = shared_art();
    let users = ["ann", "bob", "cy"];
    for u in users {
        for h in ["EMI", "Sony Music"] {
            store
                .put_with(
                    &user(u),
                    &key(&format!("{h}/cover.jpg")),
                    &art[..],
                    &PutOptions::default().rights_holder(holder(h)),
                )
                .unwrap();
        }
    }
    let one_copy = store.stats().unwrap().physical_bytes / users.len() as u64;

    // EMI licensed, Sony not: the EMI tracks share one copy; each user keeps its own copy for
    // the Sony track, so collapsing EMI copies the first user's record instead of taking it.
    let w = prediction(&store, "EMI");
    store
        .set_licence(
            &holder("EMI"),
            Some(Licence::new(LicenseMode::SingleMaster)),
        )
        .unwrap();
    let rep = store.migrate(&mut |_| {}).unwrap();
    assert_eq!(rep.records_promoted, 0, "{rep:?}");
    assert!(
        rep.records_copied > 0 && rep.bytes_written == w.bytes_to_write,
        "{rep:?} {w:?}"
    );
    assert_eq!(
        store.stats().unwrap().physical_bytes,
        w.physical_bytes_after
    );
    assert_eq!(w.physical_bytes_after, one_copy * (users.len() as u64 + 1));
    let audit = store.audit(true).unwrap();
    assert!(audit.conforming, "{audit:?}");
    for r in &audit.records {
        match r.domain {
            // Only the EMI tracks read the shared copy, and every user's do.
            Domain::Shared => assert_eq!(r.users.len(), users.len()),
            Domain::User(_) => assert_eq!(r.users.len(), 1),
            _ => unreachable!(),
        }
    }

    // Sony licensed too: its tracks join the shared copy, nothing is written.
    let w = prediction(&store, "Sony Music");
    store
        .set_licence(
            &holder("Sony Music"),
            Some(Licence::new(LicenseMode::SingleMaster)),
        )
        .unwrap();
    let rep = store.migrate(&mut |_| {}).unwrap();
    assert_eq!((rep.bytes_written, w.bytes_to_write), (0, 0));
    assert_eq!(store.stats().unwrap().physical_bytes, one_copy);
    assert_eq!(w.physical_bytes_after, one_copy);

    // EMI's licence lapses: its tracks get per-user copies; Sony keeps the shared one.
    let w = prediction(&store, "EMI");
    store.set_licence(&holder("EMI"), None).unwrap();
    let rep = store.migrate(&mut |_| {}).unwrap();
    assert_eq!(rep.tracks_migrated, users.len() as u64);
    assert_eq!(rep.bytes_written, w.bytes_to_write);
    assert_eq!(
        store.stats().unwrap().physical_bytes,
        w.physical_bytes_after
    );
    assert_eq!(w.physical_bytes_after, one_copy * (users.len() as u64 + 1));
    let audit = store.audit(false).unwrap();
    assert!(audit.conforming, "{audit:?}");
    for u in users {
        for h in ["EMI", "Sony Music"] {
            assert_eq!(
                store
                    .read_track(&user(u), &key(&format!("{h}/cover.jpg")))
                    .unwrap(),
                art
            );
        }
    }
}

#[test]
fn one_holder_moves_online_while_the_others_ingest_and_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
    let corpus = corpus();
    let all = uploads(&corpus);
    put_all(&store, &all);
    let stop = Arc::new(AtomicBool::new(false));
    // Readers of every track, and a writer of new tracks of the other holders.
    let reader = {
        let (store, stop, all) = (store.clone(), stop.clone(), all.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                for (u, k, _, bytes) in &all {
                    assert_eq!(&store.read_track(&user(u), &key(k)).unwrap(), bytes);
                    reads += 1;
                }
            }
            reads
        })
    };
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut written = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || i < 4 {
                let h = HOLDERS[1 + i % 2];
                let (u, k) = (format!("new{}", i % 3), format!("new/{i}.mp3"));
                let bytes = audio(&format!("new {}", i % 5), 120_000);
                store
                    .put_with(
                        &user(&u),
                        &key(&k),
                        &bytes[..],
                        &PutOptions::default().rights_holder(holder(h)),
                    )
                    .unwrap();
                written.push((u, k, h, bytes));
                i += 1;
            }
            written
        })
    };
    store
        .set_licence(
            &holder("EMI"),
            Some(Licence::new(LicenseMode::SingleMaster)),
        )
        .unwrap();
    let rep = store.migrate(&mut |_| {}).unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let written = writer.join().unwrap();
    // Only EMI's tracks moved; the other holders' tracks, old and new, stayed per user.
    assert_eq!(rep.tracks_migrated, tracks_of(&all, "EMI"), "{rep:?}");
    let mut modes: BTreeMap<&str, LicenseMode> = HOLDERS
        .iter()
        .map(|h| (*h, LicenseMode::PerUserCopy))
        .collect();
    modes.insert("EMI", LicenseMode::SingleMaster);
    assert_conforms(&store, &modes);
    let mut everything = all.clone();
    everything.extend(written);
    check_all(&store, &everything);
    // And back, online too.
    store
        .set_licence(&holder("EMI"), Some(Licence::new(LicenseMode::PerUserCopy)))
        .unwrap();
    let rep = store.migrate(&mut |_| {}).unwrap();
    assert_eq!(rep.tracks_migrated, tracks_of(&all, "EMI"));
    modes.insert("EMI", LicenseMode::PerUserCopy);
    assert_conforms(&store, &modes);
    check_all(&store, &everything);
}

#[test]
fn a_licence_that_ends_sends_its_tracks_back_to_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let indie = holder("Warp Records");
    store
        .set_licence(
            &indie,
            Some(Licence::new(LicenseMode::SingleMaster).until(now + 2)),
        )
        .unwrap();
    let bytes = audio("an indie single", 200_000);
    for u in ["ann", "bob"] {
        store
            .put_with(
                &user(u),
                &key("single.mp3"),
                &bytes[..],
                &PutOptions::default().rights_holder(indie.clone()),
            )
            .unwrap();
    }
    // Stored once while the licence holds.
    let one = store.stats().unwrap().physical_bytes;
    assert!(one < 2 * bytes.len() as u64);
    assert!(store.audit(false).unwrap().conforming);
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        < now + 2
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The licence ended: the shared copy now breaks the policy until migrated.
    let audit = store.audit(false).unwrap();
    assert!(!audit.conforming);
    let h = audit.holders.iter().find(|h| h.holder.is_some()).unwrap();
    assert_eq!(
        (h.mode, h.pending_tracks, h.breaking_tracks),
        (LicenseMode::PerUserCopy, 2, 2)
    );
    assert_eq!(h.examples.len(), 2);
    assert!(
        h.examples
            .iter()
            .any(|(u, k)| u == "ann" && k == "single.mp3")
    );
    let rep = store.migrate(&mut |_| {}).unwrap();
    assert_eq!(rep.tracks_migrated, 2);
    assert!(store.audit(false).unwrap().conforming);
    assert!(store.stats().unwrap().physical_bytes >= 2 * bytes.len() as u64);
    // The entry stays, ended, for the operator to see.
    assert_eq!(store.licences().entries[&indie].until, Some(now + 2));
}

#[test]
fn a_holder_change_is_metadata_until_migrated_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
    store
        .set_licence(
            &holder("EMI"),
            Some(Licence::new(LicenseMode::SingleMaster)),
        )
        .unwrap();
    let bytes = audio("a track", 200_000);
    let options = PutOptions::default().rights_holder(holder("EMI"));
    for u in ["ann", "bob"] {
        store
            .put_with(&user(u), &key("t.mp3"), &bytes[..], &options)
            .unwrap();
    }
    let before = store.stats().unwrap();
    store
        .set_rights_holder(&user("ann"), &key("t.mp3"), Some(holder("Sony Music")))
        .unwrap();
    // No byte moved; the track breaks its new holder's (default) licence until migrated.
    assert_eq!(store.stats().unwrap().physical_bytes, before.physical_bytes);
    let audit = store.audit(false).unwrap();
    let sony = audit
        .holders
        .iter()
        .find(|h| {
            h.holder
                .as_ref()
                .is_some_and(|h| h.as_str() == "Sony Music")
        })
        .unwrap();
    assert_eq!(sony.breaking_tracks, 1);
    assert_eq!(sony.examples, vec![("ann".to_owned(), "t.mp3".to_owned())]);
    let rep = store.migrate(&mut |_| {}).unwrap();
    assert_eq!(rep.tracks_migrated, 1);
    assert!(store.audit(false).unwrap().conforming);
    assert_eq!(
        store.read_track(&user("ann"), &key("t.mp3")).unwrap(),
        bytes
    );
    // Unknown users and tracks are typed errors; a bad name never becomes a holder.
    assert!(matches!(
        store.set_rights_holder(&user("zed"), &key("t.mp3"), None),
        Err(Error::UnknownUser(_))
    ));
    assert!(matches!(
        store.set_rights_holder(&user("ann"), &key("nope"), None),
        Err(Error::TrackNotFound { .. })
    ));
    for bad in ["", " EMI", "EMI\n", &"x".repeat(129)] {
        assert!(matches!(
            RightsHolder::new(bad),
            Err(Error::InvalidRightsHolder(_))
        ));
    }
    // Clearing the holder: the default applies.
    store
        .set_rights_holder(&user("bob"), &key("t.mp3"), None)
        .unwrap();
    assert_eq!(
        store
            .track_info(&user("bob"), &key("t.mp3"))
            .unwrap()
            .rights_holder,
        None
    );
}

#[test]
fn licences_persist_and_the_what_if_of_the_default_keeps_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let entries = {
        let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
        store
            .set_licence(
                &holder("EMI"),
                Some(Licence::new(LicenseMode::SingleMaster)),
            )
            .unwrap();
        store
            .set_licence(
                &holder("Sony Music"),
                Some(Licence::new(LicenseMode::PerUserCopy).until(4_102_444_800)),
            )
            .unwrap();
        store
            .set_licence(
                &holder("Warp Records"),
                Some(Licence::new(LicenseMode::SingleMaster)),
            )
            .unwrap();
        store.set_licence(&holder("Warp Records"), None).unwrap();
        let bytes = audio("x", 100_000);
        for (u, h) in [("ann", "EMI"), ("bob", "EMI"), ("ann", "Sony Music")] {
            store
                .put_with(
                    &user(u),
                    &key(h),
                    &bytes[..],
                    &PutOptions::default().rights_holder(holder(h)),
                )
                .unwrap();
        }
        store.licences().entries
    };
    let store = open_small_packs(dir.path(), LicenseMode::PerUserCopy);
    assert_eq!(store.licences().entries, entries);
    assert_eq!(entries.len(), 2);
    // Everything shared by default: Sony's entry keeps its tracks per user.
    let w = store.what_if(LicenseMode::SingleMaster).unwrap();
    store.set_mode(LicenseMode::SingleMaster).unwrap();
    store.migrate(&mut |_| {}).unwrap();
    assert_eq!(store.stats().unwrap().physical_bytes, w.physical_bytes);
    let audit = store.audit(true).unwrap();
    assert!(audit.conforming);
    // Sony's entry keeps ann's Sony track in her own domain, though its bytes are EMI's too.
    assert!(audit.user_domain_records > 0);
    let sony = audit
        .holders
        .iter()
        .find(|h| {
            h.holder
                .as_ref()
                .is_some_and(|h| h.as_str() == "Sony Music")
        })
        .unwrap();
    assert_eq!(sony.mode, LicenseMode::PerUserCopy);
}

/// Writes `text` as the label of `tag_type` into a copy of fixture `name`.
fn labelled(
    dir: &Path,
    name: &str,
    tags: &[(lofty::tag::TagType, lofty::tag::ItemKey, &str)],
) -> Vec<u8> {
    use lofty::config::WriteOptions;
    use lofty::tag::{Tag, TagExt};
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let path = dir.join(name);
    std::fs::copy(&src, &path).unwrap();
    for (tag_type, item, text) in tags {
        let mut tag = Tag::new(*tag_type);
        tag.insert_text(*item, (*text).to_owned());
        tag.save_to_path(&path, WriteOptions::default()).unwrap();
    }
    std::fs::read(&path).unwrap()
}

#[test]
fn the_tags_name_the_holder_unless_the_caller_does() {
    use lofty::tag::{ItemKey, TagType};
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "mp3 TPUB",
            labelled(
                files.path(),
                "mp3-cbr-untagged-lame.mp3",
                &[(TagType::Id3v2, ItemKey::Label, "  Warp \n Records ")],
            ),
            Some("Warp Records"),
        ),
        (
            "mp3 ID3v2 before APE",
            labelled(
                files.path(),
                "mp3-vbr-untagged-lame.mp3",
                &[
                    (TagType::Ape, ItemKey::Label, "From APE"),
                    (TagType::Id3v2, ItemKey::Label, "From ID3v2"),
                ],
            ),
            Some("From ID3v2"),
        ),
        (
            "flac LABEL",
            labelled(
                files.path(),
                "flac-plain-flac.flac",
                &[(TagType::VorbisComments, ItemKey::Label, "EMI")],
            ),
            Some("EMI"),
        ),
        (
            "flac PUBLISHER only",
            labelled(
                files.path(),
                "flac-vorbiscomment-picture-padding-metaflac.flac",
                &[(
                    TagType::VorbisComments,
                    ItemKey::Publisher,
                    "Some Publisher",
                )],
            ),
            Some("Some Publisher"),
        ),
        (
            "ogg LABEL",
            labelled(
                files.path(),
                "ogg-vorbis-untagged-oggenc.ogg",
                &[(TagType::VorbisComments, ItemKey::Label, "Sub Pop")],
            ),
            Some("Sub Pop"),
        ),
        (
            "m4a iTunes LABEL",
            labelled(
                files.path(),
                "m4a-aac-moov-front-untagged-ffmpeg.m4a",
                &[(TagType::Mp4Ilst, ItemKey::Label, "XL Recordings")],
            ),
            Some("XL Recordings"),
        ),
        (
            "m4a moov at the end",
            labelled(
                files.path(),
                "m4a-aac-moov-end-untagged-ffmpeg.m4a",
                &[(TagType::Mp4Ilst, ItemKey::Label, "Domino")],
            ),
            Some("Domino"),
        ),
        (
            "untagged",
            std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/mp3-cbr-untagged-lame.mp3"),
            )
            .unwrap(),
            None,
        ),
        ("not audio", audio("noise", 50_000), None),
    ];
    for (i, (what, bytes, expected)) in cases.iter().enumerate() {
        let k = key(&format!("{i}"));
        store.put(&user("ann"), &k, &bytes[..]).unwrap();
        let got = store.track_info(&user("ann"), &k).unwrap().rights_holder;
        assert_eq!(got.as_ref().map(|h| h.as_str()), *expected, "{what}");
        assert_eq!(
            &store.read_track(&user("ann"), &k).unwrap(),
            bytes,
            "{what}"
        );
        // The caller's holder wins over the tags.
        store
            .put_with(
                &user("bob"),
                &k,
                &bytes[..],
                &PutOptions::default().rights_holder(holder("Caller")),
            )
            .unwrap();
        let got = store.track_info(&user("bob"), &k).unwrap().rights_holder;
        assert_eq!(got.unwrap().as_str(), "Caller", "{what}");
    }
    // The derived holder decides the layout: licensed, ann's and cy's copies of the tagged
    // FLAC are stored once.
    store
        .set_licence(
            &holder("EMI"),
            Some(Licence::new(LicenseMode::SingleMaster)),
        )
        .unwrap();
    store.migrate(&mut |_| {}).unwrap();
    let flac = &cases[2].1;
    let before = store.stats().unwrap().physical_bytes;
    store.put(&user("cy"), &key("flac"), &flac[..]).unwrap();
    let grew = store.stats().unwrap().physical_bytes - before;
    assert!(grew < flac.len() as u64 / 10, "grew by {grew}");
    assert!(store.audit(false).unwrap().conforming);
}

/// Answers a challenge for `file` as a client holding it would.
fn prove(store: &Store, u: &str, k: &str, file: &[u8]) -> lockerstore::ProofOutcome {
    let client = lockerstore::ClientTrack::from_file_bytes(file).expect("a recognised MP3");
    let ch = store.challenge(&user(u), &key(k), &client.claim).unwrap();
    store
        .prove(ch.id, client.answer(&ch), &client.head, &client.tail)
        .unwrap()
}

#[test]
fn upload_avoidance_links_only_tracks_whose_own_tags_name_a_shared_holder() {
    use lofty::tag::{ItemKey, TagType};
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::PerUserCopy);
    store
        .set_licence(
            &holder("EMI"),
            Some(Licence::new(LicenseMode::SingleMaster)),
        )
        .unwrap();
    let emi = labelled(
        files.path(),
        "mp3-cbr-untagged-lame.mp3",
        &[(TagType::Id3v2, ItemKey::Label, "EMI")],
    );
    let sony_dir = tempfile::tempdir().unwrap();
    // The same recording, its tags naming an unlicensed label.
    let sony = labelled(
        sony_dir.path(),
        "mp3-cbr-untagged-lame.mp3",
        &[(TagType::Id3v2, ItemKey::Label, "Sony Music")],
    );
    store
        .put(&user("alice"), &key("song.mp3"), &emi[..])
        .unwrap();
    let before = store.stats().unwrap().physical_bytes;
    // bob's copy names EMI: linked to the shared record, nothing stored again.
    match prove(&store, "bob", "song.mp3", &emi) {
        lockerstore::ProofOutcome::Linked(_) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.read_track(&user("bob"), &key("song.mp3")).unwrap(),
        emi
    );
    assert_eq!(
        store
            .track_info(&user("bob"), &key("song.mp3"))
            .unwrap()
            .rights_holder
            .unwrap()
            .as_str(),
        "EMI"
    );
    assert!(store.stats().unwrap().physical_bytes - before < emi.len() as u64 / 4);
    // carol's copy names Sony, whose tracks are per-user copies: refused, nothing stored.
    let refused = prove(&store, "carol", "song.mp3", &sony);
    assert!(
        matches!(refused, lockerstore::ProofOutcome::Refused),
        "{refused:?}"
    );
    assert!(matches!(
        store.read_track(&user("carol"), &key("song.mp3")),
        Err(Error::UnknownUser(_) | Error::TrackNotFound { .. })
    ));
    // A recording stored only under an unlicensed holder is never a source.
    store
        .put(&user("dave"), &key("sony.mp3"), &sony[..])
        .unwrap();
    store.delete(&user("alice"), &key("song.mp3")).unwrap();
    store.delete(&user("bob"), &key("song.mp3")).unwrap();
    let refused = prove(&store, "erin", "sony.mp3", &sony);
    assert!(
        matches!(refused, lockerstore::ProofOutcome::Refused),
        "{refused:?}"
    );
    assert!(store.audit(false).unwrap().conforming);
}

/// Invariant 7 with holders: whether another user keeps a per-user copy of the recording never
/// changes a proof's outcome.
#[test]
fn a_per_user_copy_of_the_recording_changes_no_proof() {
    use lofty::tag::{ItemKey, TagType};
    let files = tempfile::tempdir().unwrap();
    let emi = labelled(
        files.path(),
        "mp3-cbr-untagged-lame.mp3",
        &[(TagType::Id3v2, ItemKey::Label, "EMI")],
    );
    let other = tempfile::tempdir().unwrap();
    let sony = labelled(
        other.path(),
        "mp3-cbr-untagged-lame.mp3",
        &[(TagType::Id3v2, ItemKey::Label, "Sony Music")],
    );
    let mut outcomes = Vec::new();
    for with_copy in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), LicenseMode::PerUserCopy);
        store
            .set_licence(
                &holder("EMI"),
                Some(Licence::new(LicenseMode::SingleMaster)),
            )
            .unwrap();
        // alice is user number 1, ahead of bob's shared copy.
        if with_copy {
            store.put(&user("alice"), &key("a.mp3"), &sony[..]).unwrap();
        } else {
            store
                .put(&user("alice"), &key("other"), &audio("x", 1000)[..])
                .unwrap();
        }
        store.put(&user("bob"), &key("b.mp3"), &emi[..]).unwrap();
        let out = prove(&store, "erin", "song.mp3", &emi);
        outcomes.push(matches!(out, lockerstore::ProofOutcome::Linked(_)));
    }
    assert_eq!(outcomes, [true, true]);
}
