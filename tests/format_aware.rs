//! Format-aware chunking in the store: audio fingerprints, recordings, dedup of retagged copies,
//! and upload avoidance with proof of ownership.

mod common;

use std::path::Path;

use common::*;
use lockerstore::corpus::{Corpus, CorpusSpec};
use lockerstore::{AudioFingerprint, ClientTrack, LicenseMode, Options, ProofOutcome, Store};

fn fixtures() -> Vec<(String, Vec<u8>, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
    truth["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap().to_owned();
            (
                name.clone(),
                std::fs::read(dir.join(&name)).unwrap(),
                f.clone(),
            )
        })
        .collect()
}

#[test]
fn every_fixture_gets_its_audio_fingerprint_and_reads_back_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    let mut distinct = std::collections::HashSet::new();
    for (name, bytes, truth) in fixtures() {
        store.put(&user("fx"), &key(&name), &bytes[..]).unwrap();
        let info = store.track_info(&user("fx"), &key(&name)).unwrap();
        let want = truth["audio_blake3"].as_str().unwrap();
        assert_eq!(
            info.audio_fingerprint.map(|f| f.to_hex()).as_deref(),
            Some(want),
            "{name}"
        );
        assert_eq!(
            info.audio_len,
            truth["audio_len"].as_u64().unwrap(),
            "{name}"
        );
        assert_ne!(info.format, "unknown", "{name}");
        assert_eq!(
            store.read_track(&user("fx"), &key(&name)).unwrap(),
            bytes,
            "{name}"
        );
        distinct.insert(want.to_owned());
    }
    assert_eq!(store.stats().unwrap().recordings, distinct.len() as u64);
    assert!(store.verify().unwrap().is_ok());
    // Deleting every holder of a recording drops it from the count.
    for (name, _, truth) in fixtures() {
        if truth["encoding"] == "rec1-lame-vbr-V4" {
            store.delete(&user("fx"), &key(&name)).unwrap();
        }
    }
    assert_eq!(store.stats().unwrap().recordings, distinct.len() as u64 - 1);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn retagged_copies_share_every_audio_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    let mut first = true;
    let mut checked = 0;
    for (i, (name, bytes, truth)) in fixtures().into_iter().enumerate() {
        if truth["encoding"] != "rec1-lame-cbr128" {
            continue;
        }
        let out = store
            .put(&user(&format!("u{i}")), &key(&name), &bytes[..])
            .unwrap();
        let audio = truth["audio_len"].as_u64().unwrap();
        if first {
            assert!(out.new_bytes >= audio);
            first = false;
        } else {
            // Only the copy's own tag bytes are new; not one audio byte is stored again.
            assert!(
                out.new_bytes <= bytes.len() as u64 - audio,
                "{name}: {} new bytes, {} non-audio",
                out.new_bytes,
                bytes.len() as u64 - audio
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}

#[test]
fn without_the_segmenter_retags_cost_more() {
    let files: Vec<_> = fixtures()
        .into_iter()
        .filter(|f| f.2["encoding"] == "rec1-lame-cbr128")
        .collect();
    let mut physical = Vec::new();
    for segmenting in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Options::default()
                .mode(LicenseMode::SingleMaster)
                .segmenting(segmenting)
                .chunker(lockerstore::ChunkerParams {
                    min: 2 << 10,
                    avg: 8 << 10,
                    max: 32 << 10,
                }),
        )
        .unwrap();
        for (i, (name, bytes, _)) in files.iter().enumerate() {
            store
                .put(&user(&format!("u{i}")), &key(name), &bytes[..])
                .unwrap();
        }
        physical.push(store.stats().unwrap().physical_bytes);
    }
    assert!(physical[0] < physical[1], "{physical:?}");
}

#[test]
fn single_master_comes_within_two_percent_of_the_ideal() {
    let corpus = Corpus::generate(CorpusSpec {
        seed: 11,
        users: 12,
        recordings: 8,
        album_size: 4,
        tracks_per_user: 4,
        min_audio: 400_000,
        max_audio: 1_200_000,
    });
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    for (i, up) in corpus.uploads.iter().enumerate() {
        store
            .put(&user(&up.user), &key(&up.key), &corpus.bytes(i)[..])
            .unwrap();
    }
    let s = store.stats().unwrap();
    let ideal = corpus.ideal_bytes();
    assert!(
        (s.physical_bytes as f64) <= ideal as f64 * 1.02,
        "physical {} vs ideal {ideal}",
        s.physical_bytes
    );
    assert!(s.recordings > 0);
}

fn fixture(name: &str) -> Vec<u8> {
    fixtures().into_iter().find(|f| f.0 == name).unwrap().1
}

#[test]
fn a_proven_owner_skips_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    let theirs = fixture("mp3-cbr-id3v23-cover-eyed3.mp3");
    store
        .put(&user("first"), &key("song.mp3"), &theirs[..])
        .unwrap();

    let mine = fixture("mp3-cbr-retag-2-larger-tag-audio-moved-mutagen.mp3");
    let client = ClientTrack::from_file_bytes(&mine).unwrap();
    let ch = store
        .challenge(&user("second"), &key("mine.mp3"), &client.claim)
        .unwrap();
    assert_eq!(ch.ranges.len(), 8);
    let before = store.stats().unwrap().physical_bytes;
    match store
        .prove(ch.id, client.answer(&ch), &client.head, &client.tail)
        .unwrap()
    {
        ProofOutcome::Linked(out) => {
            assert_eq!(out.len, mine.len() as u64);
            assert!(out.new_bytes <= (client.head.len() + client.tail.len()) as u64);
        }
        ProofOutcome::Refused => panic!("a correct answer must link"),
    }
    assert_eq!(
        store.read_track(&user("second"), &key("mine.mp3")).unwrap(),
        mine
    );
    let grown = store.stats().unwrap().physical_bytes - before;
    assert!(
        grown <= (client.head.len() + client.tail.len()) as u64 + 64 * 8,
        "{grown}"
    );
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn wrong_answers_replays_and_per_user_mode_all_refuse_alike() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LicenseMode::SingleMaster);
    let theirs = fixture("flac-plain-flac.flac");
    store
        .put(&user("first"), &key("a.flac"), &theirs[..])
        .unwrap();
    let mine = fixture("flac-vorbiscomment-picture-padding-metaflac.flac");
    let client = ClientTrack::from_file_bytes(&mine).unwrap();
    let (u, k) = (user("second"), key("b.flac"));

    // Wrong bytes: the answer over a corrupted payload.
    let mut forged = mine.clone();
    let at = forged.len() - 1000;
    forged[at] ^= 1;
    let forger = ClientTrack::from_file_bytes(&forged).unwrap();
    let ch = store.challenge(&u, &k, &client.claim).unwrap();
    // Corrupt every challenged byte's source so the forged answer surely differs.
    let mut forged_payload_answer = forger.answer(&ch);
    forged_payload_answer[0] ^= 0xff;
    assert_eq!(
        store
            .prove(ch.id, forged_payload_answer, &client.head, &client.tail)
            .unwrap(),
        ProofOutcome::Refused
    );
    // Wrong nonce: an answer to another challenge.
    let other = store.challenge(&u, &k, &client.claim).unwrap();
    let ch = store.challenge(&u, &k, &client.claim).unwrap();
    assert_eq!(
        store
            .prove(ch.id, client.answer(&other), &client.head, &client.tail)
            .unwrap(),
        ProofOutcome::Refused
    );
    // A bare hash is no proof: the claim alone with a zero answer.
    let ch = store.challenge(&u, &k, &client.claim).unwrap();
    assert_eq!(
        store
            .prove(ch.id, [0; 32], &client.head, &client.tail)
            .unwrap(),
        ProofOutcome::Refused
    );
    // Replay: a challenge answers once. The first, correct use links; the replay refuses.
    let ch = store.challenge(&u, &k, &client.claim).unwrap();
    let answer = client.answer(&ch);
    assert!(matches!(
        store
            .prove(ch.id, answer, &client.head, &client.tail)
            .unwrap(),
        ProofOutcome::Linked(_)
    ));
    assert_eq!(
        store
            .prove(ch.id, answer, &client.head, &client.tail)
            .unwrap(),
        ProofOutcome::Refused
    );
    // Unknown recording: same challenge shape, refused.
    let unknown = lockerstore::OwnershipClaim {
        audio_fingerprint: AudioFingerprint([9; 32]),
        audio_len: client.claim.audio_len,
    };
    let ch_unknown = store.challenge(&u, &key("c.flac"), &unknown).unwrap();
    assert_eq!(ch_unknown.ranges.len(), ch.ranges.len());
    assert_eq!(
        ch_unknown
            .ranges
            .iter()
            .map(|(s, e)| e - s)
            .collect::<Vec<_>>(),
        ch.ranges.iter().map(|(s, e)| e - s).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .prove(
                ch_unknown.id,
                client.answer(&ch_unknown),
                &client.head,
                &client.tail
            )
            .unwrap(),
        ProofOutcome::Refused
    );
    // Per-user-copy mode: even a correct answer links nothing, and the challenge looks the same.
    store.set_mode(LicenseMode::PerUserCopy).unwrap();
    let ch = store.challenge(&u, &key("d.flac"), &client.claim).unwrap();
    assert_eq!(ch.ranges.len(), ch_unknown.ranges.len());
    assert_eq!(
        store
            .prove(ch.id, client.answer(&ch), &client.head, &client.tail)
            .unwrap(),
        ProofOutcome::Refused
    );
    assert!(matches!(
        store.track_info(&u, &key("d.flac")),
        Err(lockerstore::Error::TrackNotFound { .. })
    ));
    assert!(store.verify().unwrap().is_ok());
}
