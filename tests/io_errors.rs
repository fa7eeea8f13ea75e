//! Exhaustive I/O error injection: every operation of every kind a scenario performs fails once.
//!
//! For each scenario (create, put, put-replace, delete, collapse, expand, gc) a first run counts
//! the operations of each kind. Then, for every kind and every N up to its count, the scenario
//! runs again from the same starting image with EIO injected at the Nth operation of that kind.
//! The failing call must return a typed error (`Io`, `DiskFull` or `Poisoned`), never panic and
//! never succeed wrongly. Afterwards the store either still works (a new put reads back, verify
//! is clean, the step in flight is wholly there or wholly absent) or reports `Poisoned` and
//! works again after a reopen. Then, in both cases, the state must survive a process kill
//! (reopen on the current bytes) and a power loss (reopen on the crash image), and re-running
//! the steps must finish the job. Nothing committed before may be lost.
//!
//! Also: ENOSPC on every write of the puts, and bit flips in pack bytes.

#[path = "common/faultfs.rs"]
mod faultfs;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use faultfs::harness::{
    Armed, DIR, Model, Scenario, Start, assert_none_failed, check_state, clean_run_counts, data,
    finish, matches, open, probe, run_armed, run_steps, scenario, start, verified,
};
use faultfs::{Failure, FaultFs, Flip, FlipAt, Op};
use lockerstore::{Error, LicenseMode, TrackKey, UserId};

/// How the store came out of one injected error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    /// The fault never fired (the run had fewer operations of that kind).
    NotReached,
    /// The fault fired, yet every step returned Ok (and everything was there, durably).
    Absorbed,
    /// A step failed and the store went on working.
    Usable,
    /// A step failed and the store reported `Poisoned` until reopened.
    Poisoned,
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Io { .. } => "Io",
        Error::DiskFull { .. } => "DiskFull",
        Error::Poisoned(_) => "Poisoned",
        Error::Corrupted { .. } => "Corrupted",
        Error::Metadata(_) => "Metadata",
        _ => "other",
    }
}

/// What one injected error did.
struct Run {
    fate: Fate,
    /// Kind of the error the failing step returned.
    error: Option<&'static str>,
    /// The step that returned the error was there after all (its commit reached the file).
    landed: bool,
}

/// Runs a scenario with faults armed by `arm` (before the store is opened if `sc.create`, else
/// right after), and checks the store afterwards. `expect` names the error kinds the failing
/// step may return.
fn error_run(
    sc: &Scenario,
    st: &Start,
    arm: &dyn Fn(&FaultFs),
    expect: &[&str],
) -> Result<Run, String> {
    let Armed {
        fs,
        model,
        store,
        out,
        failed,
    } = run_armed(sc, st, arm)?;
    // A fault the steps did not reach must not hit the checks below.
    fs.disarm();
    let injected = fs.injected();
    let ctx = |e: String| format!("{injected:?}, failing {failed}: {e}");
    if injected.is_empty() {
        if let Some(e) = &out.error {
            return Err(ctx(format!("failed although no fault fired: {e}")));
        }
        return Ok(Run {
            fate: Fate::NotReached,
            error: None,
            landed: false,
        });
    }
    let error = out.error.as_ref().map(kind);
    if let Some(e) = &out.error
        && !expect.contains(&kind(e))
    {
        return Err(ctx(format!(
            "returned {} ({e}), expected one of {expect:?}",
            kind(e)
        )));
    }
    // The step in flight: wholly there or wholly absent. None when the store's creation failed.
    let in_flight = store.as_ref().and(sc.steps.get(out.done));
    let mut landed = false;
    let (mut found, fate) = match store {
        None => (model.clone(), Fate::Usable),
        Some(store) => {
            let mut with_probe = model.clone();
            match probe(&store, &mut with_probe, "after-error") {
                Ok(()) => {
                    let found = check_state(&store, &with_probe, in_flight)
                        .map_err(|e| ctx(format!("store still works, but: {e}")))?;
                    landed = found != with_probe;
                    let fate = if out.error.is_some() {
                        Fate::Usable
                    } else {
                        Fate::Absorbed
                    };
                    (found, fate)
                }
                Err(Error::Poisoned(_)) => (model.clone(), Fate::Poisoned),
                Err(e) => {
                    return Err(ctx(format!(
                        "afterwards a put fails with {} ({e}), not Poisoned",
                        kind(&e)
                    )));
                }
            }
        }
    };
    // A process kill: reopen on the current bytes (what was never synced is still not durable).
    let store2 = open(&fs, sc.mode).map_err(|e| ctx(format!("reopen: {e}")))?;
    if fate == Fate::Poisoned || in_flight.is_none() {
        // The poisoned store's last commit may or may not have reached the file.
        let before = found.clone();
        found = check_state(&store2, &before, in_flight)
            .map_err(|e| ctx(format!("after reopen: {e}")))?;
        landed = found != before;
        probe(&store2, &mut found, "after-reopen")
            .map_err(|e| ctx(format!("after reopen, a put fails: {e}")))?;
    } else {
        // What the working store showed is what the files hold.
        verified(&store2).map_err(|e| ctx(format!("after reopen: {e}")))?;
        matches(&store2, &found).map_err(|e| ctx(format!("after reopen: {e}")))?;
    }
    // A power loss.
    let image = fs.crash_image();
    drop(store2);
    let fs3 = FaultFs::from_image(&image);
    let store3 = open(&fs3, sc.mode).map_err(|e| ctx(format!("open the crash image: {e}")))?;
    verified(&store3).map_err(|e| ctx(format!("after a power loss: {e}")))?;
    matches(&store3, &found).map_err(|e| ctx(format!("after a power loss: {e}")))?;
    // Re-running the steps finishes the job.
    finish(&store3, &sc.steps[out.done..], &mut found)
        .map_err(|e| ctx(format!("after a power loss: {e}")))?;
    Ok(Run {
        fate,
        error,
        landed: landed && out.error.is_some(),
    })
}

/// Kinds of operations faults are injected into.
const KINDS: [Op; 15] = Op::ALL;

fn io_errors(name: &str) {
    let t0 = Instant::now();
    let sc = scenario(name);
    let st = start(&sc);

    let counts = clean_run_counts(&sc, &st);

    let mut failures = Vec::new();
    let mut per_kind: BTreeMap<Op, BTreeMap<Fate, u64>> = BTreeMap::new();
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut injected = 0u64;
    let mut landed = 0u64;
    for op in KINDS {
        for n in 1..=counts.get(op) {
            let expect = ["Io", "DiskFull", "Poisoned"];
            let arm = &|fs: &FaultFs| fs.fail_after(op, n, Failure::Eio);
            match error_run(&sc, &st, arm, &expect) {
                Ok(run) => {
                    *per_kind.entry(op).or_default().entry(run.fate).or_default() += 1;
                    if run.fate != Fate::NotReached {
                        injected += 1;
                    }
                    if let Some(e) = run.error {
                        *errors.entry(e).or_default() += 1;
                    }
                    landed += u64::from(run.landed);
                }
                Err(e) => failures.push(format!("EIO at {op:?} #{n}: {e}")),
            }
        }
    }
    let summary: Vec<String> = per_kind
        .iter()
        .map(|(op, fates)| format!("{op:?} {}: {fates:?}", counts.get(*op)))
        .collect();
    println!(
        "{name}: {injected} errors injected; by kind (ops in the scenario: outcomes): {}; \
         errors returned: {errors:?}; failed step there after all: {landed}; {} failed; {:.1}s",
        summary.join(", "),
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert_none_failed(&format!("{name}: injected errors"), &failures);
    assert!(injected > 0, "{name}: no error injected");
}

#[test]
fn io_errors_create() {
    io_errors("create");
}

#[test]
fn io_errors_put() {
    io_errors("put");
}

#[test]
fn io_errors_put_replace() {
    io_errors("put-replace");
}

#[test]
fn io_errors_delete() {
    io_errors("delete");
}

#[test]
fn io_errors_collapse() {
    io_errors("collapse");
}

#[test]
fn io_errors_expand() {
    io_errors("expand");
}

#[test]
fn io_errors_gc() {
    io_errors("gc");
}

/// ENOSPC at every write of the put scenario: the put fails with `DiskFull`. On a pack write the
/// store stays usable; inside the metadata database it is poisoned until reopened (the
/// documented contract, `lockerstore::Error` module docs). Either way nothing committed is lost,
/// through a reopen, a kill and a power loss, and a next put works (after the reopen).
#[test]
fn disk_full_on_every_write_of_a_put() {
    let t0 = Instant::now();
    let sc = scenario("put");
    let st = start(&sc);
    assert!(!sc.create);
    let writes = clean_run_counts(&sc, &st).get(Op::Write);
    let mut failures = Vec::new();
    let mut fates: BTreeMap<Fate, u64> = BTreeMap::new();
    for n in 1..=writes {
        let arm = &|fs: &FaultFs| fs.fail_after(Op::Write, n, Failure::Enospc);
        match error_run(&sc, &st, arm, &["DiskFull"]) {
            Ok(run) => *fates.entry(run.fate).or_default() += 1,
            Err(e) => failures.push(format!("ENOSPC at write #{n}: {e}")),
        }
    }
    println!(
        "put: ENOSPC injected at each of {writes} writes: {fates:?}; {} failed; {:.1}s",
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert_none_failed(&format!("put: ENOSPC at {writes} writes"), &failures);
    assert!(writes > 0);
}

/// Records of a pack file: (offset, total length), parsed from the documented format
/// (32-byte pack header; 64-byte record headers with `stored_len` at byte 52).
fn records(pack: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 32usize;
    while at + 64 <= pack.len() {
        assert_eq!(&pack[at..at + 4], b"LKCR", "record magic at {at}");
        let stored = u32::from_le_bytes(pack[at + 52..at + 56].try_into().unwrap()) as usize;
        out.push((at as u64, 64 + stored as u64));
        at += 64 + stored;
    }
    assert_eq!(at, pack.len(), "records end at the end of the pack");
    out
}

/// A flipped bit anywhere in a pack's header or records gives a corruption error, never wrong
/// bytes: every track reads back exact or fails with `is_corruption()`, at least one fails, and
/// verify reports a problem.
#[test]
fn bit_flips_in_packs_are_corruption_never_data() {
    let t0 = Instant::now();
    let sc = scenario("put");
    let st = start(&sc);
    let pack_dir = Path::new(DIR).join("packs");
    let mut offsets: Vec<(String, u64)> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for name in FaultFs::from_image(&st.image).peek_dir(&pack_dir) {
        if !name.ends_with(".pack") {
            continue;
        }
        let bytes = st.image.file(&pack_dir.join(&name)).unwrap().to_vec();
        names.push(name.clone());
        // Every byte of the pack header.
        offsets.extend((0..32).map(|o| (name.clone(), o)));
        for (i, (at, len)) in records(&bytes).into_iter().enumerate() {
            // Every header byte of the first records, a spread of them for the others, and
            // payload bytes at the start, middle and end.
            let header: Vec<u64> = if i < 2 {
                (0..64).collect()
            } else {
                vec![0, 4, 5, 9, 16, 31, 47, 48, 52, 55, 56, 63]
            };
            offsets.extend(header.into_iter().map(|o| (name.clone(), at + o)));
            offsets.extend([64, 64 + (len - 64) / 2, len - 1].map(|o| (name.clone(), at + o)));
        }
    }
    assert!(!names.is_empty());
    let mut failures = Vec::new();
    let mut corrupted_reads = 0u64;
    for (i, (name, offset)) in offsets.iter().enumerate() {
        let fs = FaultFs::from_image(&st.image);
        fs.add_flip(Flip {
            name_contains: name.clone(),
            at: FlipAt::Offset(*offset),
            bit: (i % 8) as u8,
        });
        if let Err(e) = flipped_reads(&fs, &st.model, &mut corrupted_reads) {
            failures.push(format!("{name} offset {offset}: {e}"));
        }
    }
    // A flip in the middle of every map of every pack.
    let fs = FaultFs::from_image(&st.image);
    fs.add_flip(Flip {
        name_contains: ".pack".into(),
        at: FlipAt::Middle,
        bit: 3,
    });
    if let Err(e) = flipped_reads(&fs, &st.model, &mut corrupted_reads) {
        failures.push(format!("middle of every pack: {e}"));
    }
    println!(
        "bit flips: {} flipped bits in {} packs, {corrupted_reads} track reads failed as \
         corruption, {} failed; {:.1}s",
        offsets.len() + 1,
        names.len(),
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Reads every track of `model` on `fs` (flips armed): exact bytes or a corruption error, at
/// least one corruption, and verify must report a problem.
fn flipped_reads(fs: &FaultFs, model: &Model, corrupted: &mut u64) -> Result<(), String> {
    let store = open(fs, LicenseMode::PerUserCopy).map_err(|e| format!("open: {e}"))?;
    let mut bad = 0;
    for ((u, k), bytes) in &model.tracks {
        let (uid, key) = (UserId::new(u).unwrap(), TrackKey::new(k).unwrap());
        match store.read_track(&uid, &key) {
            Ok(got) if got == *bytes => {}
            Ok(_) => return Err(format!("{u}/{k}: WRONG BYTES returned as data")),
            Err(e) if e.is_corruption() => bad += 1,
            Err(e) => return Err(format!("{u}/{k}: not a corruption error: {e:?}")),
        }
    }
    *corrupted += bad;
    if bad == 0 {
        return Err("no read noticed the flipped bit".into());
    }
    match store.verify() {
        Ok(r) if !r.is_ok() => Ok(()),
        Ok(_) => Err("verify found nothing".into()),
        Err(e) => Err(format!("verify failed to run: {e}")),
    }
}

#[test]
fn enospc_is_disk_full() {
    // Sanity of the injected error itself, through the engine's classification.
    let fs = FaultFs::new();
    let store = open(&fs, LicenseMode::PerUserCopy).unwrap();
    fs.fail_after(Op::Write, 1, Failure::Enospc);
    let (u, k) = (UserId::new("a").unwrap(), TrackKey::new("k").unwrap());
    let e = store.put(&u, &k, &data("k", 10_000)[..]).unwrap_err();
    assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
}

/// BUG (minimal): a full disk while the metadata commit writes `meta.redb` fails the put with
/// `DiskFull`, as documented, but the store does not stay usable as `Error::DiskFull` promises
/// ("the operation was rolled back and the store stays usable"): redb latches the failed write
/// (its `io_failed` flag), and every later call returns `Poisoned` until the store is reopened
/// (src/meta/redb_meta.rs keeps the one `Database` for the life of the store; src/error.rs
/// documents `DiskFull` as leaving the store usable).
#[test]
fn disk_full_in_a_metadata_write_poisons_until_reopen_and_loses_nothing() {
    let fs = FaultFs::new();
    let store = open(&fs, LicenseMode::PerUserCopy).unwrap();
    let u = UserId::new("alice").unwrap();
    let (k1, k2) = (TrackKey::new("one").unwrap(), TrackKey::new("two").unwrap());
    store.put(&u, &k1, &data("one", 100_000)[..]).unwrap();
    fs.fail_after_on(Op::Write, 1, Failure::Enospc, "meta.redb");
    let e = store.put(&u, &k2, &data("two", 100_000)[..]).unwrap_err();
    assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
    // The metadata database refuses further work until the store is reopened.
    let again = store.put(&u, &k2, &data("two", 100_000)[..]);
    assert!(matches!(again, Err(Error::Poisoned(_))), "{again:?}");
    drop(store);
    let store = open(&fs, LicenseMode::PerUserCopy).unwrap();
    assert_eq!(store.read_track(&u, &k1).unwrap(), data("one", 100_000));
    assert!(matches!(
        store.read_track(&u, &k2),
        Err(Error::TrackNotFound { .. })
    ));
    store.put(&u, &k2, &data("two", 100_000)[..]).unwrap();
    assert_eq!(store.read_track(&u, &k2).unwrap(), data("two", 100_000));
    assert!(store.verify().unwrap().is_ok());
}

/// A filling disk is refused before anything is written: below `Options::min_free_space`, a
/// put fails with `DiskFull` and the store stays usable (no metadata write ever hits ENOSPC).
#[test]
fn low_free_space_refuses_puts_cleanly() {
    let fs = FaultFs::new();
    let store = open(&fs, LicenseMode::PerUserCopy).unwrap();
    let u = UserId::new("alice").unwrap();
    let k = TrackKey::new("one").unwrap();
    fs.set_available_space(1 << 20);
    let e = store.put(&u, &k, &data("one", 100_000)[..]).unwrap_err();
    assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
    fs.set_available_space(1 << 40);
    store.put(&u, &k, &data("one", 100_000)[..]).unwrap();
    assert_eq!(store.read_track(&u, &k).unwrap(), data("one", 100_000));
    assert!(store.verify().unwrap().is_ok());
}

/// A pack write fails, and so does the truncation that should cut the failed put's tail
/// (`Packs::abandon`'s `set_len`): the put fails with `Io`, the pack is retired, the store goes
/// on working, and recovery after a kill or a power loss cuts what no commit covers.
#[test]
fn pack_write_and_its_truncation_both_fail() {
    let t0 = Instant::now();
    let sc = scenario("put");
    let st = start(&sc);
    let mut failures = Vec::new();
    let mut fates: BTreeMap<Fate, u64> = BTreeMap::new();
    for k in 1.. {
        let arm = &|fs: &FaultFs| {
            fs.fail_after_on(Op::Write, k, Failure::Eio, ".pack");
            fs.fail_after(Op::SetLen, 1, Failure::Eio);
        };
        match error_run(&sc, &st, arm, &["Io"]) {
            Ok(run) if run.fate == Fate::NotReached => break,
            Ok(run) => *fates.entry(run.fate).or_default() += 1,
            Err(e) => failures.push(format!("pack write #{k} and the next set_len: {e}")),
        }
    }
    println!(
        "put: EIO at each pack write, then at the truncation: {fates:?}; {} failed; {:.1}s",
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(fates.values().sum::<u64>() > 0);
}

/// Errors while `open` recovers from a power loss (removing a pack no commit names, cutting an
/// uncommitted tail, redb's own repair): `open` fails with a typed error or succeeds, a second
/// `open` succeeds, and the store holds every acknowledged put, through a kill and a power loss.
#[test]
fn io_errors_during_recovery() {
    let t0 = Instant::now();
    let sc = scenario("put");
    let st = start(&sc);
    // The crash image: a power loss at one of the last syncs of the put scenario (the last put's
    // commit), after that put created a pack and filled another one, so recovery both removes
    // and truncates. The crash point is the last sync whose image needs both, counted back from
    // a clean run's last sync. A point fixed by count alone once (CI, c717b34; never here in
    // hundreds of runs, cause not found) gave an image without the new pack, and the test
    // stopped at its precondition; now it checks the image it uses.
    assert!(!sc.create);
    let last = clean_run_counts(&sc, &st).syncs();
    let (image, out, model, counts, rec) = (0..8)
        .filter_map(|back| {
            let fs = FaultFs::from_image(&st.image);
            let store = open(&fs, sc.mode).unwrap();
            fs.crash_after_syncs(last.checked_sub(back)?);
            let mut model = st.model.clone();
            let out = run_steps(&store, &sc.steps, &mut model);
            if out.done != sc.steps.len() - 1 {
                return None;
            }
            let image = fs.crash_image();
            drop(store);
            // What a clean recovery does, and the operations it takes.
            let fs = FaultFs::from_image(&image);
            let store = open(&fs, sc.mode).unwrap();
            let counts = fs.counts();
            let rec = store.recovery().clone();
            drop(store);
            (rec.removed_packs > 0 && rec.truncated_packs > 0)
                .then_some((image, out, model, counts, rec))
        })
        .next()
        .expect("a power loss at one of the last syncs of the last put needs recovery");
    let in_flight = &sc.steps[out.done];

    let mut failures = Vec::new();
    let mut outcomes: BTreeMap<Op, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut injected = 0u64;
    for op in KINDS {
        for n in 1..=counts.get(op) {
            let fs = FaultFs::from_image(&image);
            fs.fail_after(op, n, Failure::Eio);
            let first = open(&fs, sc.mode);
            if fs.injected().is_empty() {
                continue;
            }
            injected += 1;
            let result = (|| -> Result<&'static str, String> {
                let outcome = match &first {
                    Ok(_) => "open absorbed it",
                    Err(e) if ["Io", "DiskFull", "Poisoned"].contains(&kind(e)) => kind(e),
                    Err(e) => return Err(format!("open returned {} ({e})", kind(e))),
                };
                drop(first);
                let store = open(&fs, sc.mode).map_err(|e| format!("second open: {e}"))?;
                let mut found = check_state(&store, &model, Some(in_flight))?;
                probe(&store, &mut found, "after-recovery").map_err(|e| format!("probe: {e}"))?;
                drop(store);
                // A kill, then a power loss.
                let store = open(&fs, sc.mode).map_err(|e| format!("reopen: {e}"))?;
                matches(&store, &found)?;
                let image2 = fs.crash_image();
                drop(store);
                let store = open(&FaultFs::from_image(&image2), sc.mode)
                    .map_err(|e| format!("open after a power loss: {e}"))?;
                verified(&store)?;
                matches(&store, &found)?;
                finish(&store, &sc.steps[out.done..], &mut found)?;
                Ok(outcome)
            })();
            match result {
                Ok(o) => *outcomes.entry(op).or_default().entry(o).or_default() += 1,
                Err(e) => failures.push(format!("EIO at {op:?} #{n} during recovery: {e}")),
            }
        }
    }
    println!(
        "recovery ({rec:?}): {injected} errors injected; by kind: {outcomes:?}; {} failed; \
         {:.1}s",
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(injected > 0);
}

/// Errors while reading (opening, measuring or mapping a pack): the read fails with a typed I/O
/// error, never corruption and never wrong bytes, and the next read works.
#[test]
fn io_errors_on_reads() {
    let sc = scenario("put");
    let st = start(&sc);
    let mut failures = Vec::new();
    let mut injected = 0u64;
    for op in [Op::Open, Op::Len, Op::Map] {
        for n in 1.. {
            let fs = FaultFs::from_image(&st.image);
            let store = open(&fs, sc.mode).unwrap();
            fs.fail_after(op, n, Failure::Eio);
            let mut errors = 0;
            for ((u, k), bytes) in &st.model.tracks {
                let (uid, key) = (UserId::new(u).unwrap(), TrackKey::new(k).unwrap());
                match store.read_track(&uid, &key) {
                    Ok(got) if got == *bytes => {}
                    Ok(_) => failures.push(format!("{op:?} #{n}: {u}/{k}: WRONG BYTES")),
                    Err(Error::Io { .. }) => errors += 1,
                    Err(e) => failures.push(format!("{op:?} #{n}: {u}/{k}: {e:?}")),
                }
            }
            if fs.injected().is_empty() {
                break;
            }
            injected += 1;
            if errors != 1 {
                failures.push(format!("{op:?} #{n}: {errors} reads failed, expected 1"));
            }
            if let Err(e) = matches(&store, &st.model).and_then(|()| verified(&store)) {
                failures.push(format!("{op:?} #{n}: afterwards: {e}"));
            }
        }
    }
    println!(
        "reads: {injected} errors injected (open, len, map); {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(injected > 0);
}

/// When the fsync of a put's metadata commit fails, the put returns `Io` and its outcome is
/// unknown (documented on `Store::put`): the store is poisoned, and after a restart the track is
/// wholly there or wholly absent, never partial; everything committed before is intact.
#[test]
fn put_whose_commit_fsync_failed_is_all_or_nothing_after_a_restart() {
    let fs = FaultFs::new();
    let store = open(&fs, LicenseMode::PerUserCopy).unwrap();
    let u = UserId::new("alice").unwrap();
    let (k1, k2) = (TrackKey::new("one").unwrap(), TrackKey::new("two").unwrap());
    store.put(&u, &k1, &data("one", 100_000)[..]).unwrap();
    // The next fdatasync of meta.redb is the commit of the next put.
    fs.fail_after_on(Op::SyncData, 1, Failure::Eio, "meta.redb");
    let e = store.put(&u, &k2, &data("two", 100_000)[..]).unwrap_err();
    assert!(matches!(e, Error::Io { .. } | Error::Poisoned(_)), "{e:?}");
    assert!(matches!(
        store.put(&u, &k2, &data("two", 100_000)[..]),
        Err(Error::Poisoned(_))
    ));
    drop(store);
    for fs in [fs.image_now(), fs.crash_image()].map(|i| FaultFs::from_image(&i)) {
        let store = open(&fs, LicenseMode::PerUserCopy).unwrap();
        assert_eq!(store.read_track(&u, &k1).unwrap(), data("one", 100_000));
        match store.read_track(&u, &k2) {
            Ok(b) => assert_eq!(b, data("two", 100_000)),
            Err(Error::TrackNotFound { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(store.verify().unwrap().is_ok());
    }
}
