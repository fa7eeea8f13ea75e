//! Model test: random sequences of puts, replacements, deletes, reads, mode switches and reopens,
//! checked after every step against a plain in-memory model of what the store must hold, and
//! against exact physical accounting derived from that model.
//!
//! Every content is chunk-independent of every other one (distinct BLAKE3-XOF streams, or text
//! no other content shares), so the chunk records a content needs in a copy domain are a fixed
//! set. The model learns that set's size (bytes and records) the first time a content is stored
//! and from then on predicts `physical_bytes`, `garbage_bytes`, `chunks`, `garbage_chunks` and
//! `pack_bytes` exactly: there is no GC here and every operation runs alone, so every record ever
//! written stays in its pack, live or garbage.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use common::{key, user};
use lockerstore::corpus::noise;
use lockerstore::{
    Error, Fingerprint, LicenseMode, Options, RecoveryReport, Stats, Store, UserStats,
};
use proptest::prelude::*;

const USERS: [&str; 3] = ["ann", "bob", "cy"];
const KEYS: [&str; 4] = [
    "a.mp3",
    "Artist/Album/02 b.flac",
    "c",
    "Zoë/Ünïcode – 03.ogg",
];
const PACK_LIMIT: u64 = 1 << 20;
const PACK_HEADER: u64 = 32;
const RECORD_HEADER: u64 = 64;
const POOL: u8 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Content {
    /// One of a small fixed pool, so dedup hits are frequent.
    Pool(u8),
    /// Fresh incompressible bytes.
    Random { seed: u64, size: u32 },
}

impl Content {
    fn bytes(self) -> Vec<u8> {
        match self {
            Content::Pool(i) => {
                let label = format!("pool {i}");
                match i {
                    0 => Vec::new(),
                    1 => noise(7, &label, 1),
                    2 => noise(7, &label, 1000),
                    3 => noise(7, &label, 70_000),
                    4 => noise(7, &label, 300_000),
                    5 => noise(7, &label, 600_000),
                    // A 32 KiB block eighteen times: chunks repeat inside the track (the cut
                    // points of periodic bytes fall into a cycle well within 576 KiB).
                    6 => noise(7, &label, 32 << 10).repeat(18),
                    // Text: compressible, stored as zstd records.
                    7 => (0..14_000)
                        .flat_map(|n| format!("verse {n}: la la la, oh oh\n").into_bytes())
                        .collect(),
                    _ => unreachable!("pool has {POOL} entries"),
                }
            }
            Content::Random { seed, size } => noise(seed, &format!("random {size}"), size as usize),
        }
    }

    /// Incompressible and free of repeats: one raw record per chunk.
    fn is_plain_noise(self) -> bool {
        !matches!(self, Content::Pool(0 | 6 | 7))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        user: u8,
        key: u8,
        content: Content,
    },
    /// Puts other content under a key that holds a track (if any).
    PutAgain {
        pick: u16,
        content: Content,
    },
    Delete {
        pick: u16,
    },
    DeleteMissing {
        user: u8,
        key: u8,
    },
    Read {
        pick: u16,
        buf: u16,
    },
    ReadRange {
        pick: u16,
        whence: u8,
        start: u32,
        len: u32,
    },
    ReadMissing {
        user: u8,
        key: u8,
    },
    SetMode {
        single_master: bool,
    },
    Reopen,
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        3 => (0..POOL).prop_map(Content::Pool),
        1 => (any::<u64>(), 0u32..600_000).prop_map(|(seed, size)| Content::Random { seed, size }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS.len() as u8;
    let k = 0..KEYS.len() as u8;
    prop_oneof![
        6 => (u.clone(), k.clone(), content())
            .prop_map(|(user, key, content)| Op::Put { user, key, content }),
        3 => (any::<u16>(), content()).prop_map(|(pick, content)| Op::PutAgain { pick, content }),
        2 => any::<u16>().prop_map(|pick| Op::Delete { pick }),
        1 => (u.clone(), k.clone()).prop_map(|(user, key)| Op::DeleteMissing { user, key }),
        2 => (any::<u16>(), 1u16..u16::MAX).prop_map(|(pick, buf)| Op::Read { pick, buf }),
        3 => (any::<u16>(), 0u8..3, any::<u32>(), any::<u32>())
            .prop_map(|(pick, whence, start, len)| Op::ReadRange { pick, whence, start, len }),
        1 => (u, k).prop_map(|(user, key)| Op::ReadMissing { user, key }),
        1 => any::<bool>().prop_map(|single_master| Op::SetMode { single_master }),
        1 => Just(Op::Reopen),
    ]
}

/// The copy domain a track's chunks live in, as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Dom {
    Shared,
    User(String),
}

#[derive(Clone, Debug)]
struct Track {
    content: Content,
    fingerprint: Fingerprint,
    len: u64,
    dom: Dom,
}

/// Records (bytes including headers, count) a content needs in one domain, learned on first store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Footprint {
    bytes: u64,
    records: u64,
}

struct Model {
    mode: LicenseMode,
    tracks: BTreeMap<(String, String), Track>,
    /// Users who have stored something (their row exists even when their locker is empty).
    known_users: BTreeSet<String>,
    /// Every (domain, content) ever stored: its records exist, live or garbage.
    ever: HashSet<(Dom, Fingerprint)>,
    footprint: HashMap<Fingerprint, Footprint>,
    /// Chunk count of each content's tracks.
    chunk_count: HashMap<Fingerprint, u64>,
    cache: HashMap<Content, Vec<u8>>,
}

impl Model {
    fn bytes(&mut self, c: Content) -> &[u8] {
        self.cache.entry(c).or_insert_with(|| c.bytes())
    }

    fn pick(&self, pick: u16) -> Option<(String, String)> {
        if self.tracks.is_empty() {
            return None;
        }
        let i = pick as usize % self.tracks.len();
        self.tracks.keys().nth(i).cloned()
    }

    fn live(&self) -> HashSet<(Dom, Fingerprint)> {
        self.tracks
            .values()
            .map(|t| (t.dom.clone(), t.fingerprint))
            .collect()
    }
}

fn options(mode: LicenseMode) -> Options {
    Options {
        mode,
        pack_size_limit: PACK_LIMIT,
        ..Options::default()
    }
}

fn mode_of(single_master: bool) -> LicenseMode {
    if single_master {
        LicenseMode::SingleMaster
    } else {
        LicenseMode::PerUserCopy
    }
}

fn other_mode(mode: LicenseMode) -> LicenseMode {
    match mode {
        LicenseMode::PerUserCopy => LicenseMode::SingleMaster,
        LicenseMode::SingleMaster => LicenseMode::PerUserCopy,
    }
}

fn do_put(store: &Store, m: &mut Model, u: &str, k: &str, c: Content) {
    let data = m.bytes(c).to_vec();
    let fingerprint = Fingerprint::of(&data);
    let dom = match m.mode {
        LicenseMode::SingleMaster => Dom::Shared,
        LicenseMode::PerUserCopy => Dom::User(u.to_owned()),
    };
    let before = store.stats().unwrap();
    let out = store.put(&user(u), &key(k), &data[..]).unwrap();
    let after = store.stats().unwrap();
    let ctx = format!("put {u}/{k} {c:?} in {dom:?}");

    assert_eq!(out.len, data.len() as u64, "{ctx}");
    assert_eq!(out.fingerprint, fingerprint, "{ctx}");
    assert_eq!(
        out.replaced,
        m.tracks.contains_key(&(u.to_owned(), k.to_owned())),
        "{ctx}: replaced"
    );
    match m.chunk_count.get(&fingerprint) {
        Some(&n) => assert_eq!(out.chunks, n, "{ctx}: chunking is deterministic"),
        None => {
            if data.is_empty() {
                assert_eq!(out.chunks, 0, "{ctx}");
            } else {
                // FastCDC's largest chunk is 256 KiB.
                assert!(out.chunks >= data.len().div_ceil(256 << 10) as u64, "{ctx}");
            }
            m.chunk_count.insert(fingerprint, out.chunks);
        }
    }

    // Records written by this put, as seen by the accounting.
    let written = Footprint {
        bytes: (after.physical_bytes + after.garbage_bytes)
            - (before.physical_bytes + before.garbage_bytes),
        records: (after.chunks + after.garbage_chunks) - (before.chunks + before.garbage_chunks),
    };
    if m.ever.contains(&(dom.clone(), fingerprint)) {
        // Every chunk is indexed in the domain already (live or garbage): nothing is written.
        assert_eq!(
            written,
            Footprint {
                bytes: 0,
                records: 0
            },
            "{ctx}: a dedup hit writes nothing"
        );
        assert_eq!((out.new_chunks, out.new_bytes), (0, 0), "{ctx}");
    } else {
        assert_eq!(written.records, out.new_chunks, "{ctx}: records written");
        match m.footprint.get(&fingerprint) {
            Some(&f) => assert_eq!(written, f, "{ctx}: same content, same records"),
            None => {
                m.footprint.insert(fingerprint, written);
            }
        }
        if c.is_plain_noise() {
            assert_eq!(
                written,
                Footprint {
                    bytes: out.len + RECORD_HEADER * out.chunks,
                    records: out.chunks,
                },
                "{ctx}: incompressible chunks are stored raw, once each"
            );
            assert_eq!(out.new_bytes, out.len, "{ctx}");
        }
        match c {
            Content::Pool(0) => assert_eq!(written.records, 0, "{ctx}"),
            Content::Pool(6) => {
                assert!(
                    written.records < out.chunks && out.new_bytes < out.len,
                    "{ctx}: chunks repeated inside a track are stored once ({written:?}, {out:?})"
                );
            }
            Content::Pool(7) => assert!(
                written.bytes < out.len / 2,
                "{ctx}: text is compressed ({written:?}, {out:?})"
            ),
            _ => {}
        }
        m.ever.insert((dom.clone(), fingerprint));
    }
    m.known_users.insert(u.to_owned());
    m.tracks.insert(
        (u.to_owned(), k.to_owned()),
        Track {
            content: c,
            fingerprint,
            len: data.len() as u64,
            dom,
        },
    );
}

fn check_missing<T: std::fmt::Debug>(m: &Model, u: &str, k: &str, r: lockerstore::Result<T>) {
    match r {
        Err(Error::UnknownUser(_)) if !m.known_users.contains(u) => {}
        Err(Error::TrackNotFound { .. }) if m.known_users.contains(u) => {}
        other => panic!(
            "{u}/{k} is missing (user known: {}), got {other:?}",
            m.known_users.contains(u)
        ),
    }
}

fn read_whole(store: &Store, m: &mut Model, u: &str, k: &str, buf: usize) {
    let t = m.tracks[&(u.to_owned(), k.to_owned())].clone();
    let want = m.bytes(t.content).to_vec();
    assert_eq!(
        store.read_track(&user(u), &key(k)).unwrap(),
        want,
        "read_track {u}/{k}"
    );
    // The same through the reader in odd-sized reads.
    let mut r = store.open_track(&user(u), &key(k)).unwrap();
    assert_eq!(r.len(), t.len);
    assert_eq!(r.fingerprint(), t.fingerprint);
    let mut got = Vec::with_capacity(want.len());
    let mut chunk = vec![0u8; buf];
    loop {
        let n = r.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got == want, "reader in {buf}-byte reads {u}/{k}");
}

fn read_range(store: &Store, m: &mut Model, u: &str, k: &str, whence: u8, start: u32, len: u32) {
    let t = m.tracks[&(u.to_owned(), k.to_owned())].clone();
    let data = m.bytes(t.content).to_vec();
    let n = data.len() as u64;
    let start = u64::from(start) % (n + 1);
    let want = (u64::from(len) % (n - start + 1)).min(200_000);
    let mut r = store.open_track(&user(u), &key(k)).unwrap();
    // Land on `start` by each kind of seek; a few bytes first so `Current` starts elsewhere.
    let landed = match whence {
        0 => r.seek(SeekFrom::Start(start)).unwrap(),
        1 => r.seek(SeekFrom::End(start as i64 - n as i64)).unwrap(),
        _ => {
            let first = n.min(3);
            let mut tiny = vec![0u8; first as usize];
            r.read_exact(&mut tiny).unwrap();
            assert_eq!(tiny, data[..first as usize]);
            r.seek(SeekFrom::Current(start as i64 - first as i64))
                .unwrap()
        }
    };
    assert_eq!(landed, start);
    let mut buf = vec![0u8; want as usize];
    r.read_exact(&mut buf).unwrap();
    let (s, e) = (start as usize, (start + want) as usize);
    assert!(buf == data[s..e], "{u}/{k} bytes {s}..{e}");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest == data[e..], "{u}/{k} rest after {e}");
    // Past the end: nothing, and no error.
    r.seek(SeekFrom::Start(n + 10)).unwrap();
    assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
}

/// Everything observable, compared with the model.
fn check(store: &Store, dir: &Path, m: &Model, step: &str) {
    assert_eq!(store.mode(), m.mode, "{step}: mode");
    for u in USERS {
        let listed = store.list(&user(u));
        if !m.known_users.contains(u) {
            assert!(
                matches!(listed, Err(Error::UnknownUser(_))),
                "{step}: list {u}: {listed:?}"
            );
            continue;
        }
        let got: Vec<(String, u64, Fingerprint, u64)> = listed
            .unwrap()
            .into_iter()
            .map(|t| (t.key.as_str().to_owned(), t.size, t.fingerprint, t.chunks))
            .collect();
        let want: Vec<(String, u64, Fingerprint, u64)> = m
            .tracks
            .iter()
            .filter(|((tu, _), _)| tu == u)
            .map(|((_, k), t)| {
                (
                    k.clone(),
                    t.len,
                    t.fingerprint,
                    m.chunk_count[&t.fingerprint],
                )
            })
            .collect();
        assert_eq!(got, want, "{step}: list {u}");
        for (k, size, fp, chunks) in &want {
            let info = store.track_info(&user(u), &key(k)).unwrap();
            assert_eq!(
                (info.size, info.fingerprint, info.chunks),
                (*size, *fp, *chunks)
            );
        }
    }

    let s: Stats = store.stats().unwrap();
    assert_eq!(s.mode, m.mode, "{step}");
    assert_eq!(s.tracks, m.tracks.len() as u64, "{step}: tracks");
    let mut per_user: BTreeMap<String, UserStats> = BTreeMap::new();
    for ((u, _), t) in &m.tracks {
        let e = per_user.entry(u.clone()).or_insert_with(|| UserStats {
            user: u.clone(),
            logical_bytes: 0,
            tracks: 0,
        });
        e.logical_bytes += t.len;
        e.tracks += 1;
    }
    assert_eq!(s.users, per_user.len() as u64, "{step}: users");
    let logical: u64 = m.tracks.values().map(|t| t.len).sum();
    assert_eq!(s.logical_bytes, logical, "{step}: logical bytes");
    let mut got_per_user = s.per_user.clone();
    got_per_user.sort_by(|a, b| a.user.cmp(&b.user));
    assert_eq!(
        got_per_user,
        per_user.into_values().collect::<Vec<_>>(),
        "{step}: per user"
    );

    // Physical accounting, exact.
    let live = m.live();
    let sum = |set: &mut dyn Iterator<Item = &(Dom, Fingerprint)>| {
        set.fold((0u64, 0u64), |(b, r), (_, fp)| {
            let f = m.footprint[fp];
            (b + f.bytes, r + f.records)
        })
    };
    let (live_bytes, live_records) = sum(&mut live.iter());
    let (dead_bytes, dead_records) = sum(&mut m.ever.iter().filter(|x| !live.contains(*x)));
    assert_eq!(
        (s.physical_bytes, s.chunks),
        (live_bytes, live_records),
        "{step}: live records ({s:?})"
    );
    assert_eq!(
        (s.garbage_bytes, s.garbage_chunks),
        (dead_bytes, dead_records),
        "{step}: garbage records ({s:?})"
    );
    let expected_ratio = if live_bytes == 0 {
        1.0
    } else {
        logical as f64 / live_bytes as f64
    };
    assert!(
        (s.dedup_ratio - expected_ratio).abs() < 1e-9,
        "{step}: {s:?}"
    );
    assert_eq!(
        s.pack_bytes,
        s.physical_bytes + s.garbage_bytes + PACK_HEADER * s.packs,
        "{step}: packs hold headers and records only ({s:?})"
    );

    // The pack files agree: all committed, no stray tails, and at most one open (unsealed) pack,
    // since a single writer reuses the open pack until it is full.
    let mut sizes = Vec::new();
    for e in std::fs::read_dir(dir.join("packs")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".pack") {
            sizes.push(e.metadata().unwrap().len());
        }
    }
    assert_eq!(sizes.len() as u64, s.packs, "{step}: pack files");
    assert_eq!(
        sizes.iter().sum::<u64>(),
        s.pack_bytes,
        "{step}: pack bytes"
    );
    let open = sizes.iter().filter(|&&n| n < PACK_LIMIT).count();
    assert!(open <= 1, "{step}: {open} unsealed packs: {sizes:?}");
    // A sealed pack stops at the first record that crosses the limit: at most one chunk (256 KiB
    // plus its header) beyond it.
    for &n in &sizes {
        assert!(
            n < PACK_LIMIT + (256 << 10) + RECORD_HEADER,
            "{step}: pack of {n} bytes"
        );
    }
}

fn verify_ok(store: &Store, m: &Model, step: &str) {
    let r = store.verify().unwrap();
    assert!(r.is_ok(), "{step}: verify: {:?}", r.problems);
    assert_eq!(r.tracks_checked, m.tracks.len() as u64, "{step}");
    assert_eq!(
        r.bytes_checked,
        m.tracks.values().map(|t| t.len).sum::<u64>(),
        "{step}"
    );
    let records: u64 = m.ever.iter().map(|(_, fp)| m.footprint[fp].records).sum();
    assert_eq!(r.chunks_checked, records, "{step}: every record re-hashed");
}

fn run(initial: LicenseMode, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(initial)).unwrap();
    let mut m = Model {
        mode: initial,
        tracks: BTreeMap::new(),
        known_users: BTreeSet::new(),
        ever: HashSet::new(),
        footprint: HashMap::new(),
        chunk_count: HashMap::new(),
        cache: HashMap::new(),
    };
    check(&store, dir.path(), &m, "fresh store");
    for (i, op) in ops.iter().enumerate() {
        let step = format!("step {i} {op:?}");
        match *op {
            Op::Put {
                user: u,
                key: k,
                content,
            } => {
                let (u, k) = (USERS[u as usize], KEYS[k as usize]);
                do_put(&store, &mut m, u, k, content);
                read_whole(&store, &mut m, u, k, 65_536);
            }
            Op::PutAgain { pick, content } => match m.pick(pick) {
                Some((u, k)) => {
                    do_put(&store, &mut m, &u, &k, content);
                    read_whole(&store, &mut m, &u, &k, 65_536);
                }
                None => do_put(&store, &mut m, USERS[0], KEYS[0], content),
            },
            Op::Delete { pick } => {
                if let Some((u, k)) = m.pick(pick) {
                    store.delete(&user(&u), &key(&k)).unwrap();
                    m.tracks.remove(&(u.clone(), k.clone()));
                    check_missing(&m, &u, &k, store.open_track(&user(&u), &key(&k)));
                }
            }
            Op::DeleteMissing { user: u, key: k } => {
                let (u, k) = (USERS[u as usize], KEYS[k as usize]);
                if !m.tracks.contains_key(&(u.to_owned(), k.to_owned())) {
                    check_missing(&m, u, k, store.delete(&user(u), &key(k)));
                }
            }
            Op::Read { pick, buf } => {
                if let Some((u, k)) = m.pick(pick) {
                    read_whole(&store, &mut m, &u, &k, buf as usize);
                }
            }
            Op::ReadRange {
                pick,
                whence,
                start,
                len,
            } => {
                if let Some((u, k)) = m.pick(pick) {
                    read_range(&store, &mut m, &u, &k, whence, start, len);
                }
            }
            Op::ReadMissing { user: u, key: k } => {
                let (u, k) = (USERS[u as usize], KEYS[k as usize]);
                if !m.tracks.contains_key(&(u.to_owned(), k.to_owned())) {
                    check_missing(&m, u, k, store.open_track(&user(u), &key(k)));
                    check_missing(&m, u, k, store.read_track(&user(u), &key(k)));
                    check_missing(&m, u, k, store.track_info(&user(u), &key(k)));
                }
            }
            Op::SetMode { single_master } => {
                store.set_mode(mode_of(single_master)).unwrap();
                m.mode = mode_of(single_master);
            }
            Op::Reopen => {
                drop(store);
                // The store keeps its own mode whatever the options say.
                store = Store::open(dir.path(), options(other_mode(m.mode))).unwrap();
                assert_eq!(
                    store.recovery(),
                    &RecoveryReport::default(),
                    "{step}: a clean close leaves nothing to recover"
                );
                verify_ok(&store, &m, &step);
                let keys: Vec<_> = m.tracks.keys().cloned().collect();
                for (u, k) in keys {
                    read_whole(&store, &mut m, &u, &k, 1 << 20);
                }
            }
        }
        check(&store, dir.path(), &m, &step);
    }
    verify_ok(&store, &m, "end");
    let keys: Vec<_> = m.tracks.keys().cloned().collect();
    for (u, k) in keys {
        read_whole(&store, &mut m, &u, &k, 1 << 20);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Keep the test from writing regression files into the source tree.
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model(single_master in any::<bool>(), ops in prop::collection::vec(op(), 1..=40)) {
        run(mode_of(single_master), ops);
    }
}

/// A fixed sequence through the same machinery, so the interesting paths (dedup across users,
/// garbage revival, mode switches, in-track repeats, compressed records, sealing, reopen) run on
/// every test run whatever the random cases draw.
#[test]
fn scripted_sequence_matches_the_model() {
    use Op::*;
    let ops = vec![
        Put {
            user: 0,
            key: 0,
            content: Content::Pool(5),
        },
        Put {
            user: 1,
            key: 0,
            content: Content::Pool(5),
        },
        Put {
            user: 1,
            key: 1,
            content: Content::Pool(6),
        },
        Put {
            user: 2,
            key: 2,
            content: Content::Pool(7),
        },
        Put {
            user: 2,
            key: 3,
            content: Content::Pool(0),
        },
        ReadRange {
            pick: 2,
            whence: 2,
            start: 123_456,
            len: 99_999,
        },
        SetMode {
            single_master: true,
        },
        Put {
            user: 0,
            key: 1,
            content: Content::Pool(5),
        },
        Put {
            user: 1,
            key: 2,
            content: Content::Pool(5),
        },
        Delete { pick: 0 },
        Delete { pick: 0 },
        Delete { pick: 0 },
        Reopen,
        Put {
            user: 2,
            key: 0,
            content: Content::Pool(5),
        },
        PutAgain {
            pick: 1,
            content: Content::Random {
                seed: 1,
                size: 512_345,
            },
        },
        Put {
            user: 0,
            key: 3,
            content: Content::Pool(4),
        },
        Put {
            user: 0,
            key: 3,
            content: Content::Pool(4),
        },
        SetMode {
            single_master: false,
        },
        Put {
            user: 0,
            key: 2,
            content: Content::Pool(4),
        },
        DeleteMissing { user: 1, key: 3 },
        ReadMissing { user: 2, key: 1 },
        Reopen,
        Read { pick: 3, buf: 4097 },
    ];
    run(LicenseMode::PerUserCopy, ops);
}
