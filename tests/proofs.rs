//! Upload avoidance under concurrency: a proof links exactly the payload it proved, whatever the
//! holder does meanwhile, and what a prover sees never names the holder.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use lockerstore::corpus::{Corpus, CorpusSpec};
use lockerstore::{ClientTrack, GcOptions, LicenseMode, ProofOutcome, Store};

const HOLDER: &str = "holder-7c1e";
const HOLDER_KEY: &str = "secret/holder-track-91.mp3";

/// A tagged MP3 of a few hundred KB (several small chunks), and a track of the same length
/// whose payload bytes all differ: what the holder replaces its track with.
fn original_and_replacement() -> (Vec<u8>, Vec<u8>) {
    let corpus = Corpus::generate(CorpusSpec {
        seed: 7,
        users: 1,
        recordings: 1,
        album_size: 1,
        tracks_per_user: 1,
        min_audio: 300_000,
        max_audio: 400_000,
    });
    let original = corpus.bytes(0);
    let client = ClientTrack::from_file_bytes(&original).expect("a recognised MP3");
    let mut replacement = original.clone();
    let payload = client.head.len()..original.len() - client.tail.len();
    for b in &mut replacement[payload] {
        *b ^= 0x5a;
    }
    (original, replacement)
}

/// Proves `client` as `user`'s track `key`: `Some(true)` linked, `Some(false)` refused, `None`
/// an error (its message goes to `errors`).
fn prove(
    store: &Store,
    client: &ClientTrack,
    user: &str,
    key: &str,
    errors: &Mutex<Vec<String>>,
) -> Option<bool> {
    let result = store
        .challenge(&common::user(user), &common::key(key), &client.claim)
        .and_then(|ch| store.prove(ch.id, client.answer(&ch), &client.head, &client.tail));
    match result {
        Ok(ProofOutcome::Linked(_)) => Some(true),
        Ok(ProofOutcome::Refused) => Some(false),
        Err(e) => {
            errors.lock().unwrap().push(e.to_string());
            None
        }
    }
}

#[test]
fn a_proof_links_exactly_what_was_proven_while_the_holder_replaces_deletes_and_gc_runs() {
    const CYCLES: usize = 120;
    const PROVERS: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let store = open_small_packs(dir.path(), LicenseMode::SingleMaster);
    let (original, replacement) = original_and_replacement();
    let client = ClientTrack::from_file_bytes(&original).unwrap();
    let (holder, holder_key) = (user(HOLDER), key(HOLDER_KEY));

    let done = AtomicBool::new(false);
    let linked = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let wrong = AtomicU64::new(0);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        // The holder: its track is the original, then the replacement, then gone, over and over.
        s.spawn(|| {
            for _ in 0..CYCLES {
                store.put(&holder, &holder_key, &original[..]).unwrap();
                store.put(&holder, &holder_key, &replacement[..]).unwrap();
                store.delete(&holder, &holder_key).unwrap();
            }
            done.store(true, Ordering::Release);
        });
        // GC frees the chunks of whichever version nobody holds any more.
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                store.gc(GcOptions::default(), &mut |_| {}).unwrap();
            }
        });
        for t in 0..PROVERS {
            let (store, client, original) = (&store, &client, &original);
            let (done, linked, refused, wrong, errors) =
                (&done, &linked, &refused, &wrong, &errors);
            s.spawn(move || {
                let me = format!("prover-{t}");
                let mut n = 0;
                while !done.load(Ordering::Acquire) {
                    n += 1;
                    let k = format!("mine-{n}.mp3");
                    match prove(store, client, &me, &k, errors) {
                        Some(true) => {
                            linked.fetch_add(1, Ordering::Relaxed);
                            let got = store.read_track(&user(&me), &key(&k));
                            if got.as_ref().ok() != Some(original) {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                            // Deleted again, so GC can free the proven chunks while others prove.
                            store.delete(&user(&me), &key(&k)).unwrap();
                        }
                        Some(false) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {}
                    }
                }
            });
        }
    });

    // Quiet now: the holder holds the original again, and a proof links it.
    store.put(&holder, &holder_key, &original[..]).unwrap();
    assert_eq!(
        prove(&store, &client, "prover-0", "last.mp3", &errors),
        Some(true)
    );
    assert_eq!(
        store
            .read_track(&user("prover-0"), &key("last.mp3"))
            .unwrap(),
        original
    );

    let errors = errors.into_inner().unwrap();
    let (linked, refused, wrong) = (
        linked.into_inner(),
        refused.into_inner(),
        wrong.into_inner(),
    );
    eprintln!(
        "{linked} linked, {refused} refused, {} errors, {wrong} linked the wrong bytes",
        errors.len()
    );
    assert_eq!(wrong, 0, "of {linked} links, {wrong} hold other bytes");
    for e in &errors {
        assert!(
            !e.contains(HOLDER) && !e.contains(HOLDER_KEY),
            "an error names the holder: {e}"
        );
    }
    assert!(store.verify().unwrap().is_ok());
}
