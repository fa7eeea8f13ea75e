//! Model test: random sequences of puts, replacements, deletes, reads, mode switches, migrations,
//! garbage collections and reopens, checked after every step against a plain in-memory model of
//! what the store must hold, and against exact physical accounting derived from that model.
//!
//! Every content is chunk-independent of every other one (distinct BLAKE3-XOF streams, or text
//! no other content shares), so the chunk records a content needs in a copy domain are a fixed
//! set, and a content's chunks are always indexed in a domain all together or not at all. The
//! model learns that set's size (bytes and records) the first time a content is stored, tracks
//! which (domain, content) pairs are indexed (live or garbage) and how many record bytes the packs
//! hold, and from then on predicts `physical_bytes`, `garbage_bytes`, `chunks`, `garbage_chunks`,
//! `pack_bytes` and the audit exactly. Every operation runs alone, so:
//! - a put writes a content's records into a domain iff the pair is not indexed;
//! - migration to per-user copies copies a content into a user's domain iff the pair is not
//!   indexed (a garbage entry is revived instead); migration to single-master moves each user's
//!   references to the shared entry, promoting the user's entry (no byte written) where the shared
//!   domain has none, users taken in the order they got their numbers;
//! - GC removes every garbage entry (nothing is pinned) and compacts packs by the threshold rule,
//!   which is checked pack by pack against the records on disk.

mod common;

#[path = "common/pg.rs"]
mod pg;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use common::{key, user};
use lockerstore::corpus::noise;
use lockerstore::fuzzing::RecordHeader;
use lockerstore::{
    Domain, Error, Fingerprint, GcOptions, GcProgress, LicenseMode, MigrationProgress, Options,
    RecoveryReport, Stats, Store, UserNo, UserStats,
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
/// FastCDC's largest chunk.
const MAX_CHUNK: u64 = 256 << 10;

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
    /// Switches to the other mode.
    Flip,
    /// Brings the layout in line with the mode.
    Migrate,
    Gc {
        threshold: f64,
    },
    Reopen,
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        3 => (0..POOL).prop_map(Content::Pool),
        1 => (any::<u64>(), 0u32..600_000).prop_map(|(seed, size)| Content::Random { seed, size }),
    ]
}

fn threshold() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(0.5), Just(0.9), Just(1.0), 0.0..=1.0f64]
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
        2 => any::<bool>().prop_map(|single_master| Op::SetMode { single_master }),
        2 => Just(Op::Flip),
        3 => Just(Op::Migrate),
        1 => threshold().prop_map(|threshold| Op::Gc { threshold }),
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Footprint {
    bytes: u64,
    records: u64,
}

impl Footprint {
    const ZERO: Footprint = Footprint {
        bytes: 0,
        records: 0,
    };

    fn add(&mut self, f: Footprint) {
        self.bytes += f.bytes;
        self.records += f.records;
    }
}

/// What the maintenance operations did over a run (the scripted sequence asserts it covers
/// every path).
#[derive(Debug, Default)]
struct Coverage {
    migrations: u64,
    tracks_migrated: u64,
    records_promoted: u64,
    records_copied: u64,
    records_revived: u64,
    gcs: u64,
    gc_entries_removed: u64,
    packs_deleted: u64,
    packs_rewritten: u64,
    /// Puts that wrote a content again after GC had removed its garbage entries.
    rewritten_after_gc: u64,
}

impl Coverage {
    fn merge(&mut self, o: &Coverage) {
        self.migrations += o.migrations;
        self.tracks_migrated += o.tracks_migrated;
        self.records_promoted += o.records_promoted;
        self.records_copied += o.records_copied;
        self.records_revived += o.records_revived;
        self.gcs += o.gcs;
        self.gc_entries_removed += o.gc_entries_removed;
        self.packs_deleted += o.packs_deleted;
        self.packs_rewritten += o.packs_rewritten;
        self.rewritten_after_gc += o.rewritten_after_gc;
    }
}

struct Model {
    mode: LicenseMode,
    tracks: BTreeMap<(String, String), Track>,
    /// Users who have stored something (their row exists even when their locker is empty).
    known_users: BTreeSet<String>,
    /// The same, in the order the store numbered them (user number = position + 1).
    user_order: Vec<String>,
    /// Every (domain, content) whose chunk entries are in the index, live or garbage. A put
    /// adds; migration adds (copies, promotions) and removes (promoted user entries); GC removes
    /// the garbage ones.
    indexed: HashSet<(Dom, Fingerprint)>,
    /// Pairs GC removed at some point (a later put must write them again).
    gc_removed: HashSet<(Dom, Fingerprint)>,
    /// Bytes of all chunk records in the packs: live, garbage and dead (pack files minus
    /// headers).
    record_bytes: u64,
    /// GC runs so far: each may leave one more unsealed pack (its output) in the pool.
    gcs: u64,
    /// Packs GC filled to or past the limit, with their size: sealed, they never change.
    big_packs: BTreeMap<String, u64>,
    footprint: HashMap<Fingerprint, Footprint>,
    /// Chunk count of each content's tracks.
    chunk_count: HashMap<Fingerprint, u64>,
    cache: HashMap<Content, Vec<u8>>,
    cov: Coverage,
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

    /// Bytes and records of a set of (domain, content) pairs.
    fn size_of<'a>(&self, set: impl IntoIterator<Item = &'a (Dom, Fingerprint)>) -> Footprint {
        let mut total = Footprint::ZERO;
        for (_, fp) in set {
            total.add(self.footprint[fp]);
        }
        total
    }

    /// The domain the mode puts `u`'s chunks in.
    fn target(&self, u: &str) -> Dom {
        match self.mode {
            LicenseMode::SingleMaster => Dom::Shared,
            LicenseMode::PerUserCopy => Dom::User(u.to_owned()),
            other => unreachable!("the model knows two modes, not {other}"),
        }
    }

    /// The store's name for a model domain.
    fn domain(&self, d: &Dom) -> Domain {
        match d {
            Dom::Shared => Domain::Shared,
            Dom::User(u) => {
                let at = self
                    .user_order
                    .iter()
                    .position(|x| x == u)
                    .expect("known user");
                Domain::User(UserNo(at as u64 + 1))
            }
        }
    }

    fn keys(&self) -> Vec<(String, String)> {
        self.tracks.keys().cloned().collect()
    }
}

fn options(mode: LicenseMode) -> Options {
    Options::default()
        .mode(mode)
        .pack_size_limit(PACK_LIMIT)
        // The pool's contents are sized for these chunks (repeats inside a track, 256 KiB max).
        .chunker(lockerstore::ChunkerParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        })
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
        other => unreachable!("the model knows two modes, not {other}"),
    }
}

fn do_put(store: &Store, m: &mut Model, u: &str, k: &str, c: Content) {
    let data = m.bytes(c).to_vec();
    let fingerprint = Fingerprint::of(&data);
    let dom = m.target(u);
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
    if m.indexed.contains(&(dom.clone(), fingerprint)) {
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
        m.indexed.insert((dom.clone(), fingerprint));
        m.record_bytes += written.bytes;
        if m.gc_removed.contains(&(dom.clone(), fingerprint)) && written.records > 0 {
            m.cov.rewritten_after_gc += 1;
        }
    }
    if m.known_users.insert(u.to_owned()) {
        m.user_order.push(u.to_owned());
    }
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
    // user -> (logical bytes, tracks)
    let mut per_user: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((u, _), t) in &m.tracks {
        let e = per_user.entry(u.clone()).or_default();
        e.0 += t.len;
        e.1 += 1;
    }
    assert_eq!(s.users, per_user.len() as u64, "{step}: users");
    let logical: u64 = m.tracks.values().map(|t| t.len).sum();
    assert_eq!(s.logical_bytes, logical, "{step}: logical bytes");
    let got_per_user: BTreeMap<String, (u64, u64)> = s
        .per_user
        .iter()
        .map(|u: &UserStats| (u.user.clone(), (u.logical_bytes, u.tracks)))
        .collect();
    assert_eq!(s.per_user.len(), got_per_user.len(), "{step}: a user twice");
    assert_eq!(got_per_user, per_user, "{step}: per user");

    // Physical accounting, exact.
    let live = m.live();
    assert!(
        live.is_subset(&m.indexed),
        "{step}: model: a live pair is indexed"
    );
    let live_size = m.size_of(&live);
    let garbage_records = m.size_of(m.indexed.difference(&live)).records;
    assert_eq!(
        (s.physical_bytes, s.chunks),
        (live_size.bytes, live_size.records),
        "{step}: live records ({s:?})"
    );
    assert_eq!(
        (s.garbage_bytes, s.garbage_chunks),
        (m.record_bytes - live_size.bytes, garbage_records),
        "{step}: garbage records ({s:?})"
    );
    let expected_ratio = if live_size.bytes == 0 {
        1.0
    } else {
        logical as f64 / live_size.bytes as f64
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

    // The pack files agree: all committed, no stray tails. A single writer reuses the open pack
    // until it is full, so there is one unsealed pack, plus at most one per GC run (its output
    // goes back to the pool).
    let files = pack_files(dir);
    assert_eq!(files.len() as u64, s.packs, "{step}: pack files");
    assert_eq!(
        files.values().sum::<u64>(),
        s.pack_bytes,
        "{step}: pack bytes"
    );
    let open = files.values().filter(|&&n| n < PACK_LIMIT).count() as u64;
    assert!(
        open <= 1 + m.gcs,
        "{step}: {open} unsealed packs after {} GC runs: {files:?}",
        m.gcs
    );
    // A sealed pack stops at the first record that crosses the limit: at most one chunk (256 KiB
    // plus its header) beyond it. Packs GC filled (checked when they were made) never change.
    for (name, &n) in &files {
        match m.big_packs.get(name) {
            Some(&big) => assert_eq!(n, big, "{step}: sealed GC output {name} changed"),
            None => assert!(
                n < PACK_LIMIT + MAX_CHUNK + RECORD_HEADER,
                "{step}: pack {name} of {n} bytes"
            ),
        }
    }
    for name in m.big_packs.keys() {
        assert!(files.contains_key(name), "{step}: {name} vanished");
    }

    check_audit(store, m, step);
}

/// The audit, exactly: every count, and every live record's domain and users.
fn check_audit(store: &Store, m: &Model, step: &str) {
    let a = store.audit(true).unwrap();
    let mut holders: HashMap<(Dom, Fingerprint), BTreeSet<String>> = HashMap::new();
    let mut pending = 0;
    for ((u, _), t) in &m.tracks {
        holders
            .entry((t.dom.clone(), t.fingerprint))
            .or_default()
            .insert(u.clone());
        if t.dom != m.target(u) {
            pending += 1;
        }
    }
    let mut want: BTreeMap<(Domain, Vec<String>), u64> = BTreeMap::new();
    let mut copies: HashMap<Fingerprint, u64> = HashMap::new();
    let (mut shared, mut in_users, mut across) = (0, 0, 0);
    for ((d, fp), users) in &holders {
        let n = m.footprint[fp].records;
        if n > 0 {
            *want
                .entry((m.domain(d), users.iter().cloned().collect()))
                .or_default() += n;
        }
        *copies.entry(*fp).or_default() += 1;
        match d {
            Dom::Shared => shared += n,
            Dom::User(_) => in_users += n,
        }
        if users.len() > 1 {
            across += n;
        }
    }
    let duplicates: u64 = copies
        .iter()
        .map(|(fp, k)| (k - 1) * m.footprint[fp].records)
        .sum();
    let conforming = pending == 0
        && match m.mode {
            LicenseMode::PerUserCopy => across == 0 && shared == 0,
            LicenseMode::SingleMaster => duplicates == 0 && in_users == 0,
            other => unreachable!("the model knows two modes, not {other}"),
        };
    assert_eq!(a.mode, m.mode, "{step}: audit");
    assert_eq!(
        (
            a.conforming,
            a.pending_tracks,
            a.shared_records_across_users,
            a.duplicate_records,
            a.foreign_records,
            a.shared_domain_records,
            a.user_domain_records,
        ),
        (conforming, pending, across, duplicates, 0, shared, in_users),
        "{step}: audit (conforming, pending, across users, duplicates, foreign, shared, per-user)"
    );
    let mut got: BTreeMap<(Domain, Vec<String>), u64> = BTreeMap::new();
    for r in &a.records {
        *got.entry((r.domain, r.users.clone())).or_default() += 1;
    }
    assert_eq!(got, want, "{step}: audit records by (domain, users)");
}

/// Pack file name -> size.
fn pack_files(dir: &Path) -> BTreeMap<String, u64> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("packs")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pack") {
            files.insert(name, e.metadata().unwrap().len());
        }
    }
    files
}

/// Live record bytes per pack file: the audit's list of live records, each record's header read
/// (and checked) from its pack.
fn live_bytes_per_pack(store: &Store, dir: &Path) -> BTreeMap<String, u64> {
    use std::os::unix::fs::FileExt;
    let mut open: HashMap<String, std::fs::File> = HashMap::new();
    let mut live = BTreeMap::new();
    for r in store.audit(true).unwrap().records {
        let name = format!("{}.pack", r.pack);
        let f = open
            .entry(name.clone())
            .or_insert_with(|| std::fs::File::open(dir.join("packs").join(&name)).unwrap());
        let mut head = [0u8; RECORD_HEADER as usize];
        f.read_exact_at(&mut head, r.offset).unwrap();
        let stored = u32::from_le_bytes(head[52..56].try_into().unwrap()) as usize;
        let mut record = vec![0u8; RECORD_HEADER as usize + stored];
        f.read_exact_at(&mut record, r.offset).unwrap();
        let (h, _) = RecordHeader::decode(r.pack, &record, 0, 0)
            .unwrap_or_else(|e| panic!("record of {} at {name}+{}: {e}", r.chunk, r.offset));
        assert_eq!(h.id, r.chunk, "{name}+{}", r.offset);
        // The header names the domain the record was written for: its owner, or for a shared
        // entry possibly the user whose record collapse promoted (DESIGN.md, section 2.3).
        assert!(
            h.domain == r.domain || (r.domain == Domain::Shared && h.domain != Domain::Shared),
            "record of {} at {name}+{}: written for {:?}, owned by {:?}",
            r.chunk,
            r.offset,
            h.domain,
            r.domain
        );
        *live.entry(name).or_default() += h.record_len();
    }
    live
}

fn within_1pct(predicted: u64, actual: u64) -> bool {
    predicted.abs_diff(actual) as f64 <= 0.01 * actual.max(1) as f64
}

fn read_all(store: &Store, m: &mut Model) {
    for (u, k) in m.keys() {
        read_whole(store, m, &u, &k, 1 << 20);
    }
}

/// Migrates to the current mode; checks the what-if before and after, the report, the layout.
fn do_migrate(store: &Store, m: &mut Model, step: &str) {
    let mode = m.mode;
    let before = store.stats().unwrap();
    let w = store.what_if(mode).unwrap();

    // The model's migration.
    let live_before = m.live();
    let indexed_before = m.indexed.clone();
    let pending: Vec<(String, String)> = m
        .tracks
        .iter()
        .filter(|((u, _), t)| t.dom != m.target(u))
        .map(|(id, _)| id.clone())
        .collect();
    let mut copied = Footprint::ZERO;
    let mut promoted = 0;
    match mode {
        LicenseMode::PerUserCopy => {
            for id in &pending {
                let fp = m.tracks[id].fingerprint;
                if m.indexed.insert((Dom::User(id.0.clone()), fp)) {
                    copied.add(m.footprint[&fp]);
                }
            }
        }
        LicenseMode::SingleMaster => {
            // One user at a time, by user number.
            for u in m.user_order.clone() {
                let fps: BTreeSet<Fingerprint> = pending
                    .iter()
                    .filter(|(pu, _)| *pu == u)
                    .map(|id| m.tracks[id].fingerprint)
                    .collect();
                for fp in fps {
                    if !m.indexed.contains(&(Dom::Shared, fp)) {
                        assert!(m.indexed.remove(&(Dom::User(u.clone()), fp)));
                        m.indexed.insert((Dom::Shared, fp));
                        promoted += m.footprint[&fp].records;
                    }
                }
            }
        }
        other => unreachable!("the model knows two modes, not {other}"),
    }
    for id in &pending {
        let dom = m.target(&id.0);
        m.tracks.get_mut(id).unwrap().dom = dom;
    }
    let live_after = m.live();
    let revived = m.size_of(
        live_after
            .iter()
            .filter(|x| indexed_before.contains(*x) && !live_before.contains(*x)),
    );
    let (size_before, size_after) = (m.size_of(&live_before), m.size_of(&live_after));
    m.record_bytes += copied.bytes;

    // The prediction agrees with the model.
    assert_eq!(w.mode, mode, "{step}: {w:?}");
    assert_eq!(w.pending_tracks, pending.len() as u64, "{step}: {w:?}");
    assert_eq!(
        (w.bytes_to_write, w.records_to_write),
        (copied.bytes, copied.records),
        "{step}: what-if writes ({w:?})"
    );
    assert_eq!(
        w.pack_overhead_bytes,
        copied.bytes.div_ceil(PACK_LIMIT) * PACK_HEADER,
        "{step}: {w:?}"
    );
    assert_eq!(w.chunks, size_after.records, "{step}: {w:?}");
    assert_eq!(
        (w.physical_bytes_now, w.garbage_bytes_now),
        (before.physical_bytes, before.garbage_bytes),
        "{step}: {w:?}"
    );
    assert_eq!(
        w.bytes_to_free,
        size_before.bytes + copied.bytes + revived.bytes - size_after.bytes,
        "{step}: what-if bytes to free ({w:?})"
    );

    let mut progress: Vec<MigrationProgress> = Vec::new();
    let r = store.migrate(&mut |p| progress.push(p.clone())).unwrap();
    let after = store.stats().unwrap();
    assert_eq!(r.mode, Some(mode), "{step}: {r:?}");
    assert_eq!(
        (
            r.tracks_migrated,
            r.records_copied,
            r.bytes_written,
            r.records_promoted,
            r.rounds
        ),
        (
            pending.len() as u64,
            copied.records,
            copied.bytes,
            promoted,
            u64::from(!pending.is_empty())
        ),
        "{step}: migration report (tracks, copied, bytes written, promoted, rounds): {r:?}"
    );
    if mode == LicenseMode::SingleMaster {
        assert_eq!(r.bytes_written, 0, "{step}: collapsing never copies");
    }
    if let Some(last) = progress.last() {
        assert_eq!(
            (last.tracks_done, last.tracks_total, last.bytes_written),
            (pending.len() as u64, pending.len() as u64, copied.bytes),
            "{step}: last progress {progress:?}"
        );
        let bytes: u64 = pending.iter().map(|id| m.tracks[id].len).sum();
        assert_eq!(
            (last.bytes_done, last.bytes_total),
            (bytes, bytes),
            "{step}: {progress:?}"
        );
    } else {
        assert!(pending.is_empty(), "{step}: no progress reported");
    }
    for p in progress.windows(2) {
        assert!(
            p[0].tracks_done <= p[1].tracks_done && p[1].tracks_done <= p[1].tracks_total,
            "{step}: {progress:?}"
        );
    }

    // The prediction made before, and one made now, match what migration did.
    assert!(
        within_1pct(w.physical_bytes, after.physical_bytes),
        "{step}: what-if before the migration: {w:?}, after it: {after:?}"
    );
    let now = store.what_if(mode).unwrap();
    assert!(
        within_1pct(now.physical_bytes, after.physical_bytes),
        "{step}: what-if right after the migration: {now:?}, {after:?}"
    );
    assert_eq!(
        (
            now.pending_tracks,
            now.bytes_to_write,
            now.bytes_to_free,
            now.chunks
        ),
        (0, 0, 0, after.chunks),
        "{step}: nothing left to do: {now:?}"
    );
    let audit = store.audit(false).unwrap();
    assert!(audit.conforming, "{step}: after migrating: {audit:?}");
    assert_eq!(
        (
            after.logical_bytes,
            after.tracks,
            after.users,
            &after.per_user
        ),
        (
            before.logical_bytes,
            before.tracks,
            before.users,
            &before.per_user
        ),
        "{step}: migration changes no locker"
    );
    read_all(store, m);

    m.cov.migrations += 1;
    m.cov.tracks_migrated += r.tracks_migrated;
    m.cov.records_promoted += r.records_promoted;
    m.cov.records_copied += r.records_copied;
    m.cov.records_revived += revived.records;
}

/// Runs GC; checks the report, the accounting, the pack files and the compaction rule pack by pack.
fn do_gc(store: &Store, dir: &Path, m: &mut Model, threshold: f64, step: &str) {
    let before = store.stats().unwrap();
    let files_before = pack_files(dir);
    let live = m.live();
    let garbage: Vec<(Dom, Fingerprint)> = m.indexed.difference(&live).cloned().collect();
    let garbage_records = m.size_of(&garbage).records;

    let mut progress: Vec<GcProgress> = Vec::new();
    let r = store
        .gc(GcOptions { threshold }, &mut |p| progress.push(p.clone()))
        .unwrap();
    let after = store.stats().unwrap();
    let files = pack_files(dir);
    let ctx = format!("{step}: {r:?}, before {before:?}, after {after:?}");

    assert_eq!(
        (r.entries_removed, r.entries_pinned),
        (garbage_records, 0),
        "{ctx}: every garbage entry removed"
    );
    assert_eq!(after.garbage_chunks, 0, "{ctx}");
    assert_eq!(
        (
            after.physical_bytes,
            after.chunks,
            after.logical_bytes,
            after.tracks,
            after.users
        ),
        (
            before.physical_bytes,
            before.chunks,
            before.logical_bytes,
            before.tracks,
            before.users
        ),
        "{ctx}: GC changes nothing live"
    );
    assert_eq!(
        (r.pack_bytes_before, r.pack_bytes_after),
        (before.pack_bytes, after.pack_bytes),
        "{ctx}"
    );
    assert!(after.pack_bytes <= before.pack_bytes, "{ctx}: packs grew");
    assert!(after.garbage_bytes <= before.garbage_bytes, "{ctx}");
    if threshold >= 1.0 {
        assert_eq!(
            after.garbage_bytes, 0,
            "{ctx}: threshold 1 leaves no dead byte"
        );
    }

    // Whole packs go and come: a kept pack is not touched; the new ones hold the copies.
    let deleted: Vec<&String> = files_before
        .keys()
        .filter(|n| !files.contains_key(*n))
        .collect();
    let created: Vec<(&String, u64)> = files
        .iter()
        .filter(|(n, _)| !files_before.contains_key(*n))
        .map(|(n, s)| (n, *s))
        .collect();
    for (name, size) in &files {
        if let Some(was) = files_before.get(name) {
            assert_eq!(size, was, "{ctx}: kept pack {name} changed");
        }
    }
    assert_eq!(deleted.len() as u64, r.packs_deleted, "{ctx}: {deleted:?}");
    assert!(r.packs_rewritten <= r.packs_deleted, "{ctx}");
    assert_eq!(
        created.iter().map(|(_, s)| s - PACK_HEADER).sum::<u64>(),
        r.bytes_copied,
        "{ctx}: new packs hold the copies only ({created:?})"
    );
    assert_eq!(
        r.packs_rewritten == 0,
        r.bytes_copied == 0,
        "{ctx}: a rewritten pack had live records"
    );
    // The output takes each candidate's live records whole, and is sealed when full: it ends
    // less than one candidate beyond the limit.
    let biggest_before = files_before.values().copied().max().unwrap_or(0);
    for (name, size) in &created {
        assert!(
            *size < PACK_LIMIT + biggest_before,
            "{ctx}: GC output {name} of {size} bytes"
        );
        if *size >= PACK_LIMIT {
            m.big_packs.insert((*name).clone(), *size);
        }
    }
    m.big_packs.retain(|n, _| files.contains_key(n));

    // The rule, pack by pack: no pack is left with dead bytes and no live byte, or with dead
    // bytes and a live share below the threshold.
    let live_per_pack = live_bytes_per_pack(store, dir);
    for name in live_per_pack.keys() {
        assert!(files.contains_key(name), "{ctx}: live record in {name}");
    }
    let (mut total_live, mut total_dead) = (0, 0);
    for (name, size) in &files {
        let records = size - PACK_HEADER;
        let live = live_per_pack.get(name).copied().unwrap_or(0);
        assert!(live <= records, "{ctx}: {name}");
        let dead = records - live;
        assert!(
            dead == 0 || (live > 0 && live as f64 >= threshold * records as f64),
            "{ctx}: pack {name} left with {live} live and {dead} dead record bytes"
        );
        total_live += live;
        total_dead += dead;
    }
    assert_eq!(
        (total_live, total_dead),
        (after.physical_bytes, after.garbage_bytes),
        "{ctx}: live and dead bytes in the pack files"
    );

    // Progress: the entries, then the candidate packs.
    let entries: Vec<&GcProgress> = progress.iter().filter(|p| p.phase == "entries").collect();
    let packs: Vec<&GcProgress> = progress.iter().filter(|p| p.phase == "packs").collect();
    assert_eq!(
        entries.len() + packs.len(),
        progress.len(),
        "{ctx}: {progress:?}"
    );
    assert!(
        progress
            .iter()
            .skip_while(|p| p.phase == "entries")
            .all(|p| p.phase == "packs"),
        "{ctx}: {progress:?}"
    );
    assert_eq!(
        entries.last().map(|p| (p.done, p.total)),
        (garbage_records > 0).then_some((garbage_records, garbage_records)),
        "{ctx}: {progress:?}"
    );
    assert_eq!(
        packs.last().map(|p| (p.done, p.total)),
        (r.packs_deleted > 0).then_some((r.packs_deleted, r.packs_deleted)),
        "{ctx}: {progress:?}"
    );

    m.indexed.retain(|x| live.contains(x));
    m.gc_removed.extend(garbage);
    m.record_bytes = files.values().map(|s| s - PACK_HEADER).sum();
    m.gcs += 1;
    m.cov.gcs += 1;
    m.cov.gc_entries_removed += r.entries_removed;
    m.cov.packs_deleted += r.packs_deleted;
    m.cov.packs_rewritten += r.packs_rewritten;
    read_all(store, m);
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
    let records = m.size_of(&m.indexed).records;
    assert_eq!(r.chunks_checked, records, "{step}: every record re-hashed");
}

fn run(initial: LicenseMode, ops: Vec<Op>) -> Coverage {
    run_on(None, initial, ops)
}

/// Runs `ops` on a store whose metadata is in redb, or (`postgres`: a URL) in PostgreSQL.
fn run_on(postgres: Option<&str>, initial: LicenseMode, ops: Vec<Op>) -> Coverage {
    let options = |mode| match postgres {
        // No grace before GC removes garbage: the model checks GC's accounting at each step,
        // and no other node shares the store.
        Some(url) => options(mode)
            .postgres(url)
            .garbage_grace(std::time::Duration::ZERO),
        None => options(mode),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(initial)).unwrap();
    let mut m = Model {
        mode: initial,
        tracks: BTreeMap::new(),
        known_users: BTreeSet::new(),
        user_order: Vec::new(),
        indexed: HashSet::new(),
        gc_removed: HashSet::new(),
        record_bytes: 0,
        gcs: 0,
        big_packs: BTreeMap::new(),
        footprint: HashMap::new(),
        chunk_count: HashMap::new(),
        cache: HashMap::new(),
        cov: Coverage::default(),
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
            Op::Flip => {
                m.mode = other_mode(m.mode);
                store.set_mode(m.mode).unwrap();
            }
            Op::Migrate => do_migrate(&store, &mut m, &step),
            Op::Gc { threshold } => do_gc(&store, dir.path(), &mut m, threshold, &step),
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
                read_all(&store, &mut m);
            }
        }
        check(&store, dir.path(), &m, &step);
    }
    verify_ok(&store, &m, "end");
    read_all(&store, &mut m);
    m.cov
}

#[test]
fn store_matches_the_model() {
    use proptest::test_runner::{Config, TestRunner};
    // PROPTEST_CASES asks for a longer run.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        // Keep the test from writing regression files into the source tree.
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    });
    let total = std::cell::RefCell::new(Coverage::default());
    let strategy = (any::<bool>(), prop::collection::vec(op(), 1..=40));
    let result = runner.run(&strategy, |(single_master, ops)| {
        let cov = run(mode_of(single_master), ops);
        total.borrow_mut().merge(&cov);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let total = total.into_inner();
    println!("{cases} random cases: {total:?}");
    // The generator reaches the maintenance paths, not only the trivial cases.
    assert!(
        total.tracks_migrated > 0 && total.gc_entries_removed > 0,
        "{total:?}"
    );
}

/// The same random sequences on a store whose metadata is in PostgreSQL (the scratch server
/// `.ci/postgres.sh` starts), each case in a fresh schema: every accounting, audit, what-if and
/// read check of the model holds there too.
#[test]
fn store_on_postgres_matches_the_model() {
    use proptest::test_runner::{Config, TestRunner};
    let Some(server) = pg::server() else { return };
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    });
    let total = std::cell::RefCell::new(Coverage::default());
    let strategy = (any::<bool>(), prop::collection::vec(op(), 1..=40));
    let result = runner.run(&strategy, |(single_master, ops)| {
        let url = pg::fresh_schema(&server, "model");
        let cov = run_on(Some(&url), mode_of(single_master), ops);
        total.borrow_mut().merge(&cov);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let total = total.into_inner();
    println!("{cases} random cases on PostgreSQL: {total:?}");
    assert!(
        total.tracks_migrated > 0 && total.gc_entries_removed > 0,
        "{total:?}"
    );
}

/// The scripted sequences below, on PostgreSQL.
#[test]
fn scripted_sequences_on_postgres_match_the_model() {
    let Some(server) = pg::server() else { return };
    let url = pg::fresh_schema(&server, "scripted");
    run_on(Some(&url), LicenseMode::PerUserCopy, scripted_sequence());
    let url = pg::fresh_schema(&server, "flips");
    check_flip_coverage(run_on(
        Some(&url),
        LicenseMode::PerUserCopy,
        scripted_flips(),
    ));
}

/// A fixed sequence through the same machinery, so the interesting paths (dedup across users,
/// garbage revival, mode switches, in-track repeats, compressed records, sealing, reopen) run on
/// every test run whatever the random cases draw.
#[test]
fn scripted_sequence_matches_the_model() {
    run(LicenseMode::PerUserCopy, scripted_sequence());
}

fn scripted_sequence() -> Vec<Op> {
    use Op::*;
    vec![
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
    ]
}

/// A fixed sequence of flips, migrations and GC runs, so every maintenance path runs on every
/// test run: collapse by promotion and onto an existing shared entry, expansion by copy and by
/// revival of a garbage entry, GC at thresholds 0, 0.5, 0.9 and 1, a content written again after
/// GC removed it, and reopens in between.
#[test]
fn scripted_flips_migrations_and_gc_match_the_model() {
    check_flip_coverage(run(LicenseMode::PerUserCopy, scripted_flips()));
}

fn check_flip_coverage(cov: Coverage) {
    println!("{cov:?}");
    assert!(cov.records_promoted > 0, "{cov:?}");
    assert!(cov.records_copied > 0, "{cov:?}");
    assert!(cov.records_revived > 0, "{cov:?}");
    assert!(cov.gc_entries_removed > 0, "{cov:?}");
    assert!(cov.packs_rewritten > 0, "{cov:?}");
    assert!(cov.rewritten_after_gc > 0, "{cov:?}");
}

fn scripted_flips() -> Vec<Op> {
    use Op::*;
    let put = |user, key, content| Put { user, key, content };
    // Sorted track keys decide what a `pick` names; the comments say which track it is.
    vec![
        put(0, 0, Content::Pool(5)),
        put(1, 0, Content::Pool(5)),
        put(1, 1, Content::Pool(4)),
        put(2, 2, Content::Pool(7)),
        put(2, 3, Content::Pool(6)),
        put(
            0,
            1,
            Content::Random {
                seed: 11,
                size: 700_000,
            },
        ),
        SetMode {
            single_master: true,
        },
        put(2, 0, Content::Pool(4)),
        // Collapse: ann's contents are promoted, bob's land on existing shared entries.
        Migrate,
        Migrate,
        // Expand straight away: bob's user entries are garbage and get revived, ann's were
        // promoted away and are copied.
        SetMode {
            single_master: false,
        },
        Migrate,
        Gc { threshold: 1.0 },
        Reopen,
        SetMode {
            single_master: true,
        },
        Migrate,
        // ann/a.mp3 (Pool 5, bob holds it too), then cy/Zoë (Pool 6).
        Delete { pick: 1 },
        Delete { pick: 3 },
        Gc { threshold: 0.0 },
        // Pool 6 again: its entries are gone, so it is written again.
        put(2, 3, Content::Pool(6)),
        put(
            0,
            2,
            Content::Random {
                seed: 12,
                size: 1_500_000,
            },
        ),
        Gc { threshold: 0.9 },
        SetMode {
            single_master: false,
        },
        Migrate,
        Delete { pick: 0 },
        Gc { threshold: 0.5 },
        Reopen,
        Gc { threshold: 1.0 },
        Read { pick: 2, buf: 7777 },
        SetMode {
            single_master: true,
        },
        Migrate,
        Gc { threshold: 1.0 },
        Reopen,
    ]
}

// ---------------------------------------------------------------------------------------------
// Rights holders and licences per holder.
//
// A second model: every track carries a rights holder (from the put's options, from the
// upload's ID3v2 `TPUB` frame, or none), the policy is a default mode plus an entry per holder,
// and a track's copy domain follows its holder's licence. Contents are chunk-independent as
// above, so the model predicts the physical layout exactly: which (domain, content) pairs are
// indexed, which are live, what migration copies, promotes and revives (collapse copies a
// content into the shared domain when other tracks of the user, of holders without a shared
// licence, still need the user's entry), and what the audit says per holder.
// ---------------------------------------------------------------------------------------------

const HOLDER_NAMES: [&str; 3] = ["EMI", "Sony Music", "Warp"];

/// A licence operation on one holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lic {
    Shared,
    PerUser,
    /// A shared entry whose end has passed: the holder follows the default.
    SharedExpired,
    /// No entry.
    Removed,
    /// A shared entry that ends this many seconds from now (scripted sequences only: they
    /// sleep past its end).
    SharedFor(u8),
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Lic {
    fn licence(self) -> Option<lockerstore::Licence> {
        use lockerstore::Licence;
        match self {
            Lic::Shared => Some(Licence::new(LicenseMode::SingleMaster)),
            Lic::PerUser => Some(Licence::new(LicenseMode::PerUserCopy)),
            Lic::SharedExpired => Some(Licence::new(LicenseMode::SingleMaster).until(1)),
            Lic::Removed => None,
            Lic::SharedFor(secs) => {
                Some(Licence::new(LicenseMode::SingleMaster).until(unix_now() + u64::from(secs)))
            }
        }
    }
}

/// Track contents for the holder model: the pool and random contents above, and uploads whose
/// ID3v2 tag names a holder (audio of their own, so chunk-independent of every other content).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum HContent {
    Plain(Content),
    Tagged { holder: u8, body: u8 },
}

/// An MP3-shaped upload: an ID3v2.3 tag with a `TPUB` (label) frame naming `label`, an MPEG-1
/// Layer III frame header, then `audio`.
fn id3_tagged(label: &str, audio: &[u8]) -> Vec<u8> {
    let mut text = vec![0u8]; // ISO-8859-1
    text.extend_from_slice(label.as_bytes());
    let mut frames = b"TPUB".to_vec();
    frames.extend_from_slice(&(text.len() as u32).to_be_bytes());
    frames.extend_from_slice(&[0, 0]);
    frames.extend_from_slice(&text);
    // Some padding, as tag editors leave.
    frames.extend_from_slice(&[0u8; 64]);
    let n = frames.len();
    let mut out = b"ID3\x03\x00\x00".to_vec();
    out.extend_from_slice(&[
        ((n >> 21) & 0x7f) as u8,
        ((n >> 14) & 0x7f) as u8,
        ((n >> 7) & 0x7f) as u8,
        (n & 0x7f) as u8,
    ]);
    out.extend_from_slice(&frames);
    out.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
    out.extend_from_slice(audio);
    out
}

impl HContent {
    fn bytes(self) -> Vec<u8> {
        match self {
            HContent::Plain(c) => c.bytes(),
            HContent::Tagged { holder, body } => {
                let label = HOLDER_NAMES[holder as usize];
                let audio = noise(
                    8,
                    &format!("tagged {label} {body}"),
                    150_000 + 90_000 * body as usize,
                );
                id3_tagged(label, &audio)
            }
        }
    }

    /// The holder the upload's tags name.
    fn tag_holder(self) -> Option<u8> {
        match self {
            HContent::Plain(_) => None,
            HContent::Tagged { holder, .. } => Some(holder),
        }
    }
}

#[derive(Clone, Debug)]
enum HOp {
    /// A put; `holder` is the put's option (an upload's tags name one if it has none).
    Put {
        user: u8,
        key: u8,
        content: HContent,
        holder: Option<u8>,
    },
    Delete {
        pick: u16,
    },
    /// Reads every track in `buf`-byte reads.
    ReadAll {
        buf: u16,
    },
    SetLicence {
        holder: u8,
        lic: Lic,
    },
    /// The what-if by holder, then the licence change, then a migration: the prediction for
    /// the holder is exact.
    LicenceThenMigrate {
        holder: u8,
        lic: Lic,
    },
    SetDefault {
        single_master: bool,
    },
    SetHolder {
        pick: u16,
        holder: Option<u8>,
    },
    /// Sets the holder of a track that does not exist (if it does not): refused, nothing changes.
    SetHolderMissing {
        user: u8,
        key: u8,
        holder: Option<u8>,
    },
    Migrate,
    Gc {
        threshold: f64,
    },
    Reopen,
    /// Takes the what-if by holder's prediction for flipping `holder`; the next migration must
    /// match it if only time (an entry's end), reads and reopens came in between (scripted).
    PredictFlip {
        holder: u8,
    },
    /// Sleeps (scripted sequences: past the end of an entry).
    Sleep {
        secs: u8,
    },
    /// A process kill: the store's files as they are while it runs, opened by a new process.
    KillReopen,
}

fn h_content() -> impl Strategy<Value = HContent> {
    prop_oneof![
        // Few contents, so a user often holds one content under two holders (collapse copies).
        4 => prop::sample::select(vec![3u8, 6, 7]).prop_map(|i| HContent::Plain(Content::Pool(i))),
        3 => content().prop_map(HContent::Plain),
        1 => (0..HOLDER_NAMES.len() as u8, 0u8..2)
            .prop_map(|(holder, body)| HContent::Tagged { holder, body }),
    ]
}

fn lic() -> impl Strategy<Value = Lic> {
    prop_oneof![
        3 => Just(Lic::Shared),
        2 => Just(Lic::PerUser),
        1 => Just(Lic::SharedExpired),
        2 => Just(Lic::Removed),
    ]
}

fn h_holder() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![1 => Just(None), 3 => (0..HOLDER_NAMES.len() as u8).prop_map(Some)]
}

fn h_op() -> impl Strategy<Value = HOp> {
    let u = 0..USERS.len() as u8;
    let k = 0..KEYS.len() as u8;
    let h = 0..HOLDER_NAMES.len() as u8;
    prop_oneof![
        8 => (u, k, h_content(), h_holder())
            .prop_map(|(user, key, content, holder)| HOp::Put { user, key, content, holder }),
        1 => any::<u16>().prop_map(|pick| HOp::Delete { pick }),
        1 => (1u16..u16::MAX).prop_map(|buf| HOp::ReadAll { buf }),
        2 => (h.clone(), lic()).prop_map(|(holder, lic)| HOp::SetLicence { holder, lic }),
        4 => (h, lic()).prop_map(|(holder, lic)| HOp::LicenceThenMigrate { holder, lic }),
        1 => any::<bool>().prop_map(|single_master| HOp::SetDefault { single_master }),
        2 => (any::<u16>(), h_holder()).prop_map(|(pick, holder)| HOp::SetHolder { pick, holder }),
        1 => (0..USERS.len() as u8, 0..KEYS.len() as u8, h_holder())
            .prop_map(|(user, key, holder)| HOp::SetHolderMissing { user, key, holder }),
        3 => Just(HOp::Migrate),
        1 => threshold().prop_map(|threshold| HOp::Gc { threshold }),
        1 => Just(HOp::Reopen),
        1 => Just(HOp::KillReopen),
    ]
}

#[derive(Clone, Debug)]
struct HTrack {
    content: HContent,
    fingerprint: Fingerprint,
    len: u64,
    holder: Option<u8>,
    dom: Dom,
}

/// What a migration did, as the model predicts it.
#[derive(Debug, Default)]
struct HMigration {
    pending: u64,
    written: Footprint,
    promoted: u64,
    revived: u64,
}

struct HModel {
    default: LicenseMode,
    /// Entries by holder index: (mode, end).
    licences: BTreeMap<u8, (LicenseMode, Option<u64>)>,
    tracks: BTreeMap<(String, String), HTrack>,
    known_users: BTreeSet<String>,
    user_order: Vec<String>,
    /// (domain, content) pairs whose entries are indexed, live or garbage.
    indexed: HashSet<(Dom, Fingerprint)>,
    /// Bytes of all chunk records in the packs.
    record_bytes: u64,
    footprint: HashMap<Fingerprint, Footprint>,
    cache: HashMap<HContent, Vec<u8>>,
    /// A prediction of `PredictFlip`: (holder, physical bytes after).
    flip_prediction: Option<(u8, u64)>,
    /// Coverage: (what-if checks where the holder's mode changed, collapse copies, promotions,
    /// holders from tags).
    whatif_checked: u64,
    collapse_copies: u64,
    promotions: u64,
    tag_holders: u64,
}

impl HModel {
    fn bytes(&mut self, c: HContent) -> Vec<u8> {
        self.cache.entry(c).or_insert_with(|| c.bytes()).clone()
    }

    fn pick(&self, pick: u16) -> Option<(String, String)> {
        if self.tracks.is_empty() {
            return None;
        }
        self.tracks
            .keys()
            .nth(pick as usize % self.tracks.len())
            .cloned()
    }

    fn mode_of(&self, holder: Option<u8>) -> LicenseMode {
        holder
            .and_then(|h| self.licences.get(&h))
            .filter(|(_, until)| until.is_none_or(|u| unix_now() < u))
            .map_or(self.default, |(mode, _)| *mode)
    }

    fn target(&self, u: &str, holder: Option<u8>) -> Dom {
        match self.mode_of(holder) {
            LicenseMode::SingleMaster => Dom::Shared,
            _ => Dom::User(u.to_owned()),
        }
    }

    fn is_pending(&self, (u, _): &(String, String), t: &HTrack) -> bool {
        t.dom != self.target(u, t.holder)
    }

    fn live(&self) -> HashSet<(Dom, Fingerprint)> {
        self.tracks
            .values()
            .map(|t| (t.dom.clone(), t.fingerprint))
            .collect()
    }

    fn size_of<'a>(&self, set: impl IntoIterator<Item = &'a (Dom, Fingerprint)>) -> Footprint {
        let mut total = Footprint::ZERO;
        for (_, fp) in set {
            total.add(self.footprint[fp]);
        }
        total
    }

    fn domain(&self, d: &Dom) -> Domain {
        match d {
            Dom::Shared => Domain::Shared,
            Dom::User(u) => {
                let at = self.user_order.iter().position(|x| x == u).unwrap();
                Domain::User(UserNo(at as u64 + 1))
            }
        }
    }

    /// The model's migration: collapse users in the order of their numbers, then expand.
    fn migrate(&mut self) -> HMigration {
        let live_before = self.live();
        let indexed_before = self.indexed.clone();
        let mut out = HMigration::default();
        let pending: Vec<(String, String)> = self
            .tracks
            .iter()
            .filter(|(id, t)| self.is_pending(id, t))
            .map(|(id, _)| id.clone())
            .collect();
        out.pending = pending.len() as u64;
        for u in self.user_order.clone() {
            let moving: Vec<&(String, String)> = pending
                .iter()
                .filter(|id| id.0 == u && self.target(&u, self.tracks[*id].holder) == Dom::Shared)
                .collect();
            let fps: BTreeSet<Fingerprint> = moving
                .iter()
                .map(|id| self.tracks[*id].fingerprint)
                .collect();
            for fp in fps {
                if self.indexed.contains(&(Dom::Shared, fp)) {
                    continue;
                }
                // Tracks of the user that stay in the user's domain with this content.
                let stays = self.tracks.iter().any(|(id, t)| {
                    id.0 == u
                        && t.dom == Dom::User(u.clone())
                        && t.fingerprint == fp
                        && !moving.contains(&id)
                });
                let f = self.footprint[&fp];
                if stays {
                    out.written.add(f);
                    if f.records > 0 {
                        self.collapse_copies += 1;
                    }
                } else {
                    assert!(self.indexed.remove(&(Dom::User(u.clone()), fp)));
                    out.promoted += f.records;
                }
                self.indexed.insert((Dom::Shared, fp));
            }
            for id in moving {
                self.tracks.get_mut(id).unwrap().dom = Dom::Shared;
            }
        }
        for id in &pending {
            let t = &self.tracks[id];
            let dest = self.target(&id.0, t.holder);
            if dest == Dom::Shared {
                continue;
            }
            let fp = t.fingerprint;
            if self.indexed.insert((dest.clone(), fp)) {
                out.written.add(self.footprint[&fp]);
            }
            self.tracks.get_mut(id).unwrap().dom = dest;
        }
        self.promotions += out.promoted;
        let live_after = self.live();
        out.revived = self
            .size_of(
                live_after
                    .iter()
                    .filter(|x| indexed_before.contains(*x) && !live_before.contains(*x)),
            )
            .bytes;
        self.record_bytes += out.written.bytes;
        out
    }
}

fn holder_name(h: Option<u8>) -> Option<lockerstore::RightsHolder> {
    h.map(|h| lockerstore::RightsHolder::new(HOLDER_NAMES[h as usize]).unwrap())
}

fn h_put(
    store: &Store,
    m: &mut HModel,
    u: &str,
    k: &str,
    c: HContent,
    holder: Option<u8>,
    step: &str,
) {
    let data = m.bytes(c);
    let fingerprint = Fingerprint::of(&data);
    let holder_after = holder.or(c.tag_holder());
    let dom = m.target(u, holder_after);
    let mut options = lockerstore::PutOptions::default();
    if let Some(h) = holder_name(holder) {
        options = options.rights_holder(h);
    }
    let before = store.stats().unwrap();
    let out = store
        .put_with(&user(u), &key(k), &data[..], &options)
        .unwrap();
    let after = store.stats().unwrap();
    let ctx = format!("{step}: put {u}/{k} {c:?} holder {holder_after:?} in {dom:?}");
    assert_eq!(out.fingerprint, fingerprint, "{ctx}");
    let written = Footprint {
        bytes: (after.physical_bytes + after.garbage_bytes)
            - (before.physical_bytes + before.garbage_bytes),
        records: (after.chunks + after.garbage_chunks) - (before.chunks + before.garbage_chunks),
    };
    if m.indexed.contains(&(dom.clone(), fingerprint)) {
        assert_eq!(
            written,
            Footprint::ZERO,
            "{ctx}: a dedup hit writes nothing"
        );
    } else {
        match m.footprint.get(&fingerprint) {
            Some(&f) => assert_eq!(written, f, "{ctx}: same content, same records"),
            None => {
                m.footprint.insert(fingerprint, written);
            }
        }
        m.indexed.insert((dom.clone(), fingerprint));
        m.record_bytes += written.bytes;
    }
    if holder.is_none() && c.tag_holder().is_some() {
        m.tag_holders += 1;
    }
    if m.known_users.insert(u.to_owned()) {
        m.user_order.push(u.to_owned());
    }
    m.tracks.insert(
        (u.to_owned(), k.to_owned()),
        HTrack {
            content: c,
            fingerprint,
            len: data.len() as u64,
            holder: holder_after,
            dom,
        },
    );
}

fn h_read_all(store: &Store, m: &mut HModel, buf: usize, step: &str) {
    for ((u, k), t) in m.tracks.clone() {
        let want = m.bytes(t.content);
        let got = store.read_track(&user(&u), &key(&k)).unwrap();
        assert!(got == want, "{step}: read_track {u}/{k}");
        let mut r = store.open_track(&user(&u), &key(&k)).unwrap();
        let mut got = Vec::with_capacity(want.len());
        let mut chunk = vec![0u8; buf];
        loop {
            let n = r.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == want, "{step}: reader in {buf}-byte reads {u}/{k}");
    }
}

fn h_verify(store: &Store, m: &HModel, step: &str) {
    let r = store.verify().unwrap();
    assert!(r.is_ok(), "{step}: verify: {:?}", r.problems);
    assert_eq!(r.tracks_checked, m.tracks.len() as u64, "{step}");
    assert_eq!(
        r.chunks_checked,
        m.size_of(&m.indexed).records,
        "{step}: every record re-hashed"
    );
}

/// Everything observable, against the model: the policy, the lockers and each track's holder,
/// the accounting, and the audit (exact, per holder), with invariant 2 read from its records.
fn h_check(store: &Store, m: &HModel, step: &str) {
    // The policy.
    let l = store.licences();
    assert_eq!(l.default, m.default, "{step}: default mode");
    assert_eq!(store.mode(), m.default, "{step}: mode");
    let want: BTreeMap<String, LicenseMode> = m
        .licences
        .iter()
        .map(|(h, (mode, _))| (HOLDER_NAMES[*h as usize].to_owned(), *mode))
        .collect();
    let got: BTreeMap<String, LicenseMode> = l
        .entries
        .iter()
        .map(|(h, e)| (h.as_str().to_owned(), e.mode))
        .collect();
    assert_eq!(got, want, "{step}: licence entries");

    // The lockers, and each track's holder.
    for u in USERS {
        let listed = store.list(&user(u));
        if !m.known_users.contains(u) {
            assert!(matches!(listed, Err(Error::UnknownUser(_))), "{step}: {u}");
            continue;
        }
        let got: Vec<(String, u64, Fingerprint, Option<String>)> = listed
            .unwrap()
            .into_iter()
            .map(|t| {
                (
                    t.key.as_str().to_owned(),
                    t.size,
                    t.fingerprint,
                    t.rights_holder.map(|h| h.as_str().to_owned()),
                )
            })
            .collect();
        let want: Vec<(String, u64, Fingerprint, Option<String>)> = m
            .tracks
            .iter()
            .filter(|((tu, _), _)| tu == u)
            .map(|((_, k), t)| {
                (
                    k.clone(),
                    t.len,
                    t.fingerprint,
                    t.holder.map(|h| HOLDER_NAMES[h as usize].to_owned()),
                )
            })
            .collect();
        assert_eq!(
            got, want,
            "{step}: list {u} (key, size, fingerprint, holder)"
        );
        for (k, ..) in &want {
            let info = store.track_info(&user(u), &key(k)).unwrap();
            let t = &m.tracks[&(u.to_owned(), k.clone())];
            assert_eq!(info.rights_holder, holder_name(t.holder), "{step}: {u}/{k}");
        }
    }

    // Accounting, exact.
    let s = store.stats().unwrap();
    assert_eq!(s.tracks, m.tracks.len() as u64, "{step}: tracks");
    let mut per_user: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((u, _), t) in &m.tracks {
        let e = per_user.entry(u.clone()).or_default();
        e.0 += t.len;
        e.1 += 1;
    }
    let got_per_user: BTreeMap<String, (u64, u64)> = s
        .per_user
        .iter()
        .map(|u| (u.user.clone(), (u.logical_bytes, u.tracks)))
        .collect();
    assert_eq!(got_per_user, per_user, "{step}: per user");
    assert_eq!(
        s.logical_bytes,
        m.tracks.values().map(|t| t.len).sum::<u64>(),
        "{step}: logical bytes"
    );
    let live = m.live();
    assert!(live.is_subset(&m.indexed), "{step}: model");
    let live_size = m.size_of(&live);
    assert_eq!(
        (s.physical_bytes, s.chunks),
        (live_size.bytes, live_size.records),
        "{step}: live records ({s:?})"
    );
    assert_eq!(
        (s.garbage_bytes, s.garbage_chunks),
        (
            m.record_bytes - live_size.bytes,
            m.size_of(m.indexed.difference(&live)).records
        ),
        "{step}: garbage ({s:?})"
    );

    // The audit. Records by (domain, users), from the model's layout.
    let a = store.audit(true).unwrap();
    let mut users_of: HashMap<(Dom, Fingerprint), BTreeSet<String>> = HashMap::new();
    for ((u, _), t) in &m.tracks {
        users_of
            .entry((t.dom.clone(), t.fingerprint))
            .or_default()
            .insert(u.clone());
    }
    let mut want: BTreeMap<(Domain, Vec<String>), u64> = BTreeMap::new();
    for ((d, fp), users) in &users_of {
        let n = m.footprint[fp].records;
        if n > 0 {
            *want
                .entry((m.domain(d), users.iter().cloned().collect()))
                .or_default() += n;
        }
    }
    let mut got: BTreeMap<(Domain, Vec<String>), u64> = BTreeMap::new();
    for r in &a.records {
        *got.entry((r.domain, r.users.clone())).or_default() += 1;
    }
    assert_eq!(got, want, "{step}: audit records by (domain, users)");
    // A pending track breaks its licence and makes the record it reads misplaced, so every
    // track reading that record breaks its licence too.
    let pending_pairs: HashSet<(Dom, Fingerprint)> = m
        .tracks
        .iter()
        .filter(|(id, t)| m.is_pending(id, t) && m.footprint[&t.fingerprint].records > 0)
        .map(|(_, t)| (t.dom.clone(), t.fingerprint))
        .collect();
    let mut per_holder: BTreeMap<Option<String>, (LicenseMode, u64, u64, u64)> = BTreeMap::new();
    for (id, t) in &m.tracks {
        let e = per_holder
            .entry(t.holder.map(|h| HOLDER_NAMES[h as usize].to_owned()))
            .or_insert((m.mode_of(t.holder), 0, 0, 0));
        e.1 += 1;
        let pending = m.is_pending(id, t);
        e.2 += u64::from(pending);
        e.3 += u64::from(pending || pending_pairs.contains(&(t.dom.clone(), t.fingerprint)));
    }
    let got: BTreeMap<Option<String>, (LicenseMode, u64, u64, u64)> = a
        .holders
        .iter()
        .map(|h| {
            assert_eq!(h.conforming, h.breaking_tracks == 0, "{step}: {h:?}");
            (
                h.holder.as_ref().map(|h| h.as_str().to_owned()),
                (h.mode, h.tracks, h.pending_tracks, h.breaking_tracks),
            )
        })
        .collect();
    assert_eq!(
        got, per_holder,
        "{step}: audit per holder (mode, tracks, pending, breaking)"
    );
    let pending = m
        .tracks
        .iter()
        .filter(|(id, t)| m.is_pending(id, t))
        .count() as u64;
    assert_eq!(a.pending_tracks, pending, "{step}: pending tracks");
    assert_eq!(a.conforming, pending == 0, "{step}: conforming ({a:?})");
    assert_eq!(
        (a.foreign_records, a.aliased_records),
        (0, 0),
        "{step}: {a:?}"
    );

    // The what-if by holder describes every holder with tracks as the model sees it.
    let w = store.what_if_by_holder().unwrap();
    assert_eq!(
        w.baseline,
        store.what_if(m.default).unwrap(),
        "{step}: the baseline is the what-if of the policy as it is"
    );
    let mut want: BTreeMap<String, (u64, u64, u64, LicenseMode)> = BTreeMap::new();
    let mut pairs: BTreeMap<String, HashSet<(Dom, Fingerprint)>> = BTreeMap::new();
    let (mut unassigned, mut unassigned_bytes) = (0, 0);
    for t in m.tracks.values() {
        let Some(h) = t.holder else {
            unassigned += 1;
            unassigned_bytes += t.len;
            continue;
        };
        let name = HOLDER_NAMES[h as usize].to_owned();
        let e = want
            .entry(name.clone())
            .or_insert((0, 0, 0, m.mode_of(Some(h))));
        e.0 += 1;
        e.1 += t.len;
        pairs
            .entry(name)
            .or_default()
            .insert((t.dom.clone(), t.fingerprint));
    }
    for (name, set) in &pairs {
        want.get_mut(name).unwrap().2 = m.size_of(set).bytes;
    }
    let got: BTreeMap<String, (u64, u64, u64, LicenseMode)> = w
        .holders
        .iter()
        .map(|h| {
            (
                h.holder.as_str().to_owned(),
                (h.tracks, h.logical_bytes, h.physical_bytes_now, h.mode_now),
            )
        })
        .collect();
    assert_eq!(
        got, want,
        "{step}: what-if by holder (tracks, logical, physical now, mode now)"
    );
    assert_eq!(
        (w.unassigned_tracks, w.unassigned_bytes),
        (unassigned, unassigned_bytes),
        "{step}"
    );
    for h in &w.holders {
        let i = HOLDER_NAMES
            .iter()
            .position(|n| *n == h.holder.as_str())
            .unwrap() as u8;
        assert_eq!(h.mode_after, other_mode(h.mode_now), "{step}: {h:?}");
        assert_eq!(
            h.licence.map(|l| l.mode),
            m.licences.get(&i).map(|(mode, _)| *mode),
            "{step}: {h:?}"
        );
        assert_eq!(
            h.savings,
            h.physical_bytes_baseline as i64 - h.physical_bytes_after as i64,
            "{step}: {h:?}"
        );
        assert_eq!(
            h.physical_bytes_baseline, w.baseline.physical_bytes,
            "{step}"
        );
    }
    assert!(
        w.holders
            .windows(2)
            .all(|p| (-p[0].savings, &p[0].holder) < (-p[1].savings, &p[1].holder)),
        "{step}: holders by savings, largest first"
    );

    // Invariant 2, from the store's own answers: a live record that tracks of two users read
    // is in the shared domain, and every track in the shared domain (the only ones that can
    // read it) is of a holder licensed shared, unless it is pending (a migration moves it).
    for r in a.records.iter().filter(|r| r.users.len() > 1) {
        assert_eq!(r.domain, Domain::Shared, "{step}: {r:?} read across users");
    }
    for ((u, k), t) in &m.tracks {
        if t.dom == Dom::Shared {
            let holder = store.track_info(&user(u), &key(k)).unwrap().rights_holder;
            let h =
                holder.map(|h| HOLDER_NAMES.iter().position(|n| *n == h.as_str()).unwrap() as u8);
            assert!(
                m.mode_of(h) == LicenseMode::SingleMaster
                    || m.is_pending(&(u.clone(), k.clone()), t),
                "{step}: {u}/{k} of holder {h:?} reads the shared domain"
            );
        }
    }
}

/// Migrates; checks the report, the what-if for the current policy, and the model's migration.
fn h_migrate(store: &Store, m: &mut HModel, step: &str) -> (lockerstore::Stats, HMigration) {
    let before = store.stats().unwrap();
    let w = store.what_if(m.default).unwrap();
    let report = store.migrate(&mut |_| {}).unwrap();
    let after = store.stats().unwrap();
    let mm = m.migrate();
    assert_eq!(report.tracks_migrated, mm.pending, "{step}: {report:?}");
    assert_eq!(report.records_promoted, mm.promoted, "{step}: {report:?}");
    assert_eq!(
        (report.records_copied, report.bytes_written),
        (mm.written.records, mm.written.bytes),
        "{step}: {report:?}"
    );
    let written = (after.physical_bytes + after.garbage_bytes)
        - (before.physical_bytes + before.garbage_bytes);
    assert_eq!(written, mm.written.bytes, "{step}: bytes written");
    // The what-if for the policy as it is, exact.
    assert_eq!(w.pending_tracks, mm.pending, "{step}: {w:?}");
    assert_eq!(
        (w.physical_bytes, w.bytes_to_write, w.records_to_write),
        (after.physical_bytes, written, mm.written.records),
        "{step}: what-if ({w:?})"
    );
    assert_eq!(
        w.bytes_to_free,
        before.physical_bytes + written + mm.revived - after.physical_bytes,
        "{step}: what-if bytes to free ({w:?}, {mm:?})"
    );
    // After a migration the layout is the policy's, for every holder.
    let a = store.audit(false).unwrap();
    assert!(a.conforming, "{step}: {a:?}");
    for h in &a.holders {
        assert!(h.conforming && h.pending_tracks == 0, "{step}: {h:?}");
    }
    (after, mm)
}

/// Options for reopening: the store keeps its own policy whatever they say.
fn h_options() -> Options {
    options(LicenseMode::PerUserCopy)
}

fn run_holders(initial: LicenseMode, ops: Vec<HOp>) -> HModel {
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    let mut store = Store::open(dirs[0].path(), options(initial)).unwrap();
    let mut m = HModel {
        default: initial,
        licences: BTreeMap::new(),
        tracks: BTreeMap::new(),
        known_users: BTreeSet::new(),
        user_order: Vec::new(),
        indexed: HashSet::new(),
        record_bytes: 0,
        footprint: HashMap::new(),
        cache: HashMap::new(),
        flip_prediction: None,
        whatif_checked: 0,
        collapse_copies: 0,
        promotions: 0,
        tag_holders: 0,
    };
    h_check(&store, &m, "fresh store");
    for (i, op) in ops.iter().enumerate() {
        let step = format!("step {i} {op:?}");
        let prediction = m.flip_prediction.take();
        match *op {
            HOp::PredictFlip { holder } => {
                let name = holder_name(Some(holder)).unwrap();
                let w = store.what_if_by_holder().unwrap();
                let e = w.holders.iter().find(|e| e.holder == name).unwrap();
                m.flip_prediction = Some((holder, e.physical_bytes_after));
            }
            HOp::Sleep { .. } | HOp::ReadAll { .. } | HOp::Reopen if prediction.is_some() => {
                m.flip_prediction = prediction;
            }
            _ => {}
        }
        match *op {
            HOp::PredictFlip { .. } => {}
            HOp::Put {
                user: u,
                key: k,
                content,
                holder,
            } => {
                let (u, k) = (USERS[u as usize], KEYS[k as usize]);
                h_put(&store, &mut m, u, k, content, holder, &step);
            }
            HOp::Delete { pick } => {
                if let Some((u, k)) = m.pick(pick) {
                    store.delete(&user(&u), &key(&k)).unwrap();
                    m.tracks.remove(&(u, k));
                }
            }
            HOp::ReadAll { buf } => h_read_all(&store, &mut m, buf as usize, &step),
            HOp::SetLicence { holder, lic } => {
                store
                    .set_licence(&holder_name(Some(holder)).unwrap(), lic.licence())
                    .unwrap();
                set_model_licence(&mut m, holder, lic);
            }
            HOp::LicenceThenMigrate { holder, lic } => {
                let w = store.what_if_by_holder().unwrap();
                let name = holder_name(Some(holder)).unwrap();
                let entry = w.holders.iter().find(|e| e.holder == name).cloned();
                let mode_before = m.mode_of(Some(holder));
                store.set_licence(&name, lic.licence()).unwrap();
                set_model_licence(&mut m, holder, lic);
                let mode_after = m.mode_of(Some(holder));
                let before = store.stats().unwrap();
                let (after, mm) = h_migrate(&store, &mut m, &step);
                let written = (after.physical_bytes + after.garbage_bytes)
                    - (before.physical_bytes + before.garbage_bytes);
                match entry {
                    // A holder without tracks is not listed; its change moves nothing.
                    None => assert!(
                        m.tracks.values().all(|t| t.holder != Some(holder)),
                        "{step}: {name} has tracks but no what-if entry: {w:?}"
                    ),
                    Some(e) if mode_after != mode_before => {
                        assert_eq!(
                            (e.mode_now, e.mode_after),
                            (mode_before, mode_after),
                            "{step}: {e:?}"
                        );
                        assert_eq!(
                            (e.physical_bytes_after, e.bytes_to_write),
                            (after.physical_bytes, written),
                            "{step}: the prediction for {name} ({e:?})"
                        );
                        assert_eq!(
                            e.savings,
                            e.physical_bytes_baseline as i64 - after.physical_bytes as i64,
                            "{step}: {e:?}"
                        );
                        assert_eq!(
                            e.bytes_to_free,
                            before.physical_bytes + written + mm.revived - after.physical_bytes,
                            "{step}: the bytes {name}'s change frees ({e:?}, {mm:?})"
                        );
                        m.whatif_checked += 1;
                    }
                    Some(e) => {
                        assert_eq!(e.mode_now, mode_before, "{step}: {e:?}");
                        assert_eq!(
                            (e.physical_bytes_baseline, w.baseline.bytes_to_write),
                            (after.physical_bytes, written),
                            "{step}: the baseline ({e:?}, {w:?})"
                        );
                    }
                }
                h_verify(&store, &m, &step);
            }
            HOp::SetDefault { single_master } => {
                store.set_mode(mode_of(single_master)).unwrap();
                m.default = mode_of(single_master);
            }
            HOp::SetHolder { pick, holder } => {
                if let Some((u, k)) = m.pick(pick) {
                    store
                        .set_rights_holder(&user(&u), &key(&k), holder_name(holder))
                        .unwrap();
                    m.tracks.get_mut(&(u, k)).unwrap().holder = holder;
                }
            }
            HOp::SetHolderMissing {
                user: u,
                key: k,
                holder,
            } => {
                let (u, k) = (USERS[u as usize], KEYS[k as usize]);
                if !m.tracks.contains_key(&(u.to_owned(), k.to_owned())) {
                    let r = store.set_rights_holder(&user(u), &key(k), holder_name(holder));
                    match r {
                        Err(Error::UnknownUser(_)) if !m.known_users.contains(u) => {}
                        Err(Error::TrackNotFound { .. }) if m.known_users.contains(u) => {}
                        other => panic!("{step}: {u}/{k} is missing, got {other:?}"),
                    }
                }
            }
            HOp::Migrate => {
                let (after, _) = h_migrate(&store, &mut m, &step);
                if let Some((h, physical_after)) = prediction {
                    assert_eq!(
                        after.physical_bytes, physical_after,
                        "{step}: predicted by the what-if for {}",
                        HOLDER_NAMES[h as usize]
                    );
                    m.whatif_checked += 1;
                }
                h_verify(&store, &m, &step);
            }
            HOp::Gc { threshold } => {
                let r = store.gc(GcOptions { threshold }, &mut |_| {}).unwrap();
                let live = m.live();
                assert_eq!(
                    r.entries_removed,
                    m.size_of(m.indexed.difference(&live)).records,
                    "{step}: {r:?}"
                );
                m.indexed.retain(|x| live.contains(x));
                let files = pack_files(store.dir());
                m.record_bytes = files.values().map(|s| s - PACK_HEADER).sum();
            }
            HOp::Sleep { secs } => std::thread::sleep(std::time::Duration::from_secs(secs.into())),
            HOp::Reopen => {
                drop(store);
                store = Store::open(dirs.last().unwrap().path(), h_options()).unwrap();
                assert_eq!(store.recovery(), &RecoveryReport::default(), "{step}");
                h_verify(&store, &m, &step);
            }
            HOp::KillReopen => {
                // The files as the running store left them: what a process killed now leaves
                // (every write is in the page cache, nothing more).
                let copy = tempfile::tempdir().unwrap();
                common::copy_dir(dirs.last().unwrap().path(), copy.path());
                drop(store);
                dirs.push(copy);
                store = Store::open(dirs.last().unwrap().path(), h_options()).unwrap();
                h_verify(&store, &m, &step);
            }
        }
        h_read_all(&store, &mut m, 1 << 20, &step);
        h_check(&store, &m, &step);
    }
    h_verify(&store, &m, "end");
    m
}

fn set_model_licence(m: &mut HModel, holder: u8, lic: Lic) {
    let entry = |mode, until| Some((mode, until));
    let e = match lic {
        Lic::Shared => entry(LicenseMode::SingleMaster, None),
        Lic::PerUser => entry(LicenseMode::PerUserCopy, None),
        Lic::SharedExpired => entry(LicenseMode::SingleMaster, Some(1)),
        Lic::SharedFor(secs) => entry(
            LicenseMode::SingleMaster,
            Some(unix_now() + u64::from(secs)),
        ),
        Lic::Removed => None,
    };
    match e {
        Some(e) => m.licences.insert(holder, e),
        None => m.licences.remove(&holder),
    };
}

#[test]
fn store_with_rights_holders_matches_the_model() {
    use proptest::test_runner::{Config, TestRunner};
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    });
    let totals = std::cell::RefCell::new((0u64, 0u64, 0u64, 0u64));
    let strategy = (any::<bool>(), prop::collection::vec(h_op(), 1..=40));
    let result = runner.run(&strategy, |(single_master, ops)| {
        let m = run_holders(mode_of(single_master), ops);
        let mut t = totals.borrow_mut();
        t.0 += m.whatif_checked;
        t.1 += m.collapse_copies;
        t.2 += m.promotions;
        t.3 += m.tag_holders;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = totals.into_inner();
    println!(
        "{cases} cases: {} exact what-if checks, {} collapse copies, {} promotions, {} holders \
         from tags",
        t.0, t.1, t.2, t.3
    );
    // The paths every few cases reach. Collapse copies need one user holding a content under
    // two holders with a licence between them: random cases reach it only now and then (none
    // in one CI run of 100), so `scripted_holder_sequence_matches_the_model` runs it on every
    // run instead of this check depending on the draw.
    assert!(t.0 > 0 && t.2 > 0 && t.3 > 0, "{t:?}");
}

/// A fixed holder sequence, so the paths that matter run on every test run: one user holds a
/// content under two holders (collapse copies into the shared domain and keeps the user's
/// record), an expired entry, a holder named by the tags, a holder changed in place, both ways.
#[test]
fn scripted_holder_sequence_matches_the_model() {
    use HOp::*;
    let put = |user, key, content, holder| Put {
        user,
        key,
        content,
        holder,
    };
    let pool = |i| HContent::Plain(Content::Pool(i));
    let ops = vec![
        put(0, 0, pool(5), Some(0)),
        put(0, 1, pool(5), Some(1)),
        put(1, 0, pool(5), Some(0)),
        put(1, 1, pool(4), Some(2)),
        put(2, 2, HContent::Tagged { holder: 0, body: 1 }, None),
        put(2, 3, pool(6), None),
        LicenceThenMigrate {
            holder: 0,
            lic: Lic::Shared,
        },
        LicenceThenMigrate {
            holder: 2,
            lic: Lic::SharedExpired,
        },
        SetHolder {
            pick: 1,
            holder: Some(0),
        },
        Migrate,
        KillReopen,
        LicenceThenMigrate {
            holder: 0,
            lic: Lic::PerUser,
        },
        Gc { threshold: 1.0 },
        SetDefault {
            single_master: true,
        },
        LicenceThenMigrate {
            holder: 1,
            lic: Lic::PerUser,
        },
        Reopen,
        LicenceThenMigrate {
            holder: 0,
            lic: Lic::Removed,
        },
        Gc { threshold: 0.5 },
    ];
    let m = run_holders(LicenseMode::PerUserCopy, ops);
    assert!(m.whatif_checked >= 4, "{}", m.whatif_checked);
    assert!(m.collapse_copies > 0 && m.promotions > 0 && m.tag_holders > 0);
}

/// A licence with an end: while it runs the holder's tracks are stored once; once it ended the
/// audit finds them pending, the what-if made while it ran predicts the expansion exactly, and
/// the migration moves them back to per-user copies. The entry and its end survive a reopen.
#[test]
fn a_licence_that_ends_sends_its_tracks_back_to_per_user_copies() {
    use HOp::*;
    let put = |user, key, content, holder| Put {
        user,
        key,
        content,
        holder,
    };
    let pool = |i| HContent::Plain(Content::Pool(i));
    let ops = vec![
        put(0, 0, pool(5), Some(0)),
        put(1, 1, pool(4), Some(1)),
        // EMI licensed for 3 seconds: its tracks collapse, new ones go to the shared domain.
        LicenceThenMigrate {
            holder: 0,
            lic: Lic::SharedFor(3),
        },
        put(1, 0, pool(5), Some(0)),
        put(2, 0, pool(5), Some(0)),
        put(0, 1, pool(4), Some(0)),
        PredictFlip { holder: 0 },
        Reopen,
        Sleep { secs: 4 },
        // Ended: pending until a migration expands them.
        ReadAll { buf: 1000 },
        Migrate,
        Reopen,
        put(2, 1, pool(5), Some(0)),
    ];
    let m = run_holders(LicenseMode::PerUserCopy, ops);
    assert!(m.whatif_checked >= 2);
}
