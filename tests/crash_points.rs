//! Exhaustive crash points: every sync of a scenario (and every write, torn) is a crash.
//!
//! For each scenario (create, put, put-replace, delete, collapse, expand, gc; see
//! `common/faultfs.rs`, module `harness`) the starting store is built once on a `FaultFs` and
//! closed cleanly. A first run counts the scenario's syncs and writes. Then the scenario runs
//! again from the same image for each crash point:
//! - a power loss at sync N (that sync does not happen), for every N;
//! - a power loss right after sync N took effect (the call returns EIO), for every N;
//! - a process kill at sync N, a restart on the bytes it left, a new acknowledged put, then a
//!   power loss, for every N;
//! - a power loss at write N with a prefix of that write torn onto the disk, for every N, at
//!   three tear sizes each;
//! - a power loss after the last step returned.
//!
//! After each, the store must open; pass `verify` (which recounts all accounting); hold every
//! track of every step that returned Ok, byte for byte, and the step in flight either wholly or
//! not at all (old or new content for a put, nothing else); let the steps be run again to the
//! end (a migration then conforms to the mode: `audit(false).conforming`); accept a new put; and
//! keep all of that through a second power loss.

#[path = "common/faultfs.rs"]
mod faultfs;

use std::time::Instant;

use faultfs::harness::{
    Armed, Scenario, Start, assert_none_failed, check_state, clean_run_counts, finish, matches,
    open, probe, run_armed, scenario, start, verified,
};
use faultfs::{FaultFs, Op};
use lockerstore::Error;
use lockerstore::vfs::Vfs;

/// What one crash point showed.
#[derive(Default)]
struct Tally {
    /// Crash points where the crash happened and everything held.
    checked: u64,
    /// Armed crash points the run never reached (counts differ between runs).
    not_reached: u64,
    /// Of the checked points, those where the step in flight had landed.
    landed: u64,
    /// Pack files recovery removed, packs it cut, over all points.
    removed_packs: u64,
    truncated_packs: u64,
}

/// Runs the scenario from its start, armed by `arm`, then checks the store after a power loss.
/// With `kill`, the crash is a process kill: the restart sees the current bytes, and the power
/// loss comes later, after the restarted store acknowledged its own put.
fn crash_run(
    sc: &Scenario,
    st: &Start,
    arm: &dyn Fn(&FaultFs),
    kill: bool,
    tally: &mut Tally,
) -> Result<(), String> {
    let Armed {
        fs,
        model,
        store,
        out,
        failed,
    } = run_armed(sc, st, arm)?;
    let crashed = fs.crashed();
    if let Some(e) = &out.error {
        if crashed.is_none() {
            return Err(format!("{failed} failed without a crash: {e}"));
        }
        if !matches!(e, Error::Io { .. } | Error::Poisoned(_)) {
            return Err(format!(
                "{failed} failed at the crash with an unexpected error kind: {e:?}"
            ));
        }
    }
    // The step in flight; none when the crash hit the creation of the store.
    let in_flight = store.as_ref().and(sc.steps.get(out.done));
    let what = crashed.clone().unwrap_or_else(|| "no crash".into());
    // After a kill the restarted process sees the current bytes (and a later power loss still
    // loses what was never synced); after a power loss, the crash image.
    let fs2 = if kill {
        fs.after_kill()
    } else {
        FaultFs::from_image(&fs.crash_image())
    };
    drop(store);

    let ctx = |e: String| format!("{what}, in flight: {failed}: {e}");
    let store2 = open(&fs2, sc.mode).map_err(|e| ctx(format!("reopen: {e}")))?;
    let rec = store2.recovery().clone();
    let mut found = check_state(&store2, &model, in_flight).map_err(ctx)?;
    let landed = found != model;
    finish(&store2, &sc.steps[out.done..], &mut found).map_err(ctx)?;
    probe(&store2, &mut found, "after-crash").map_err(|e| ctx(format!("probe put: {e}")))?;
    // A second power loss keeps everything the recovered store acknowledged.
    let image2 = fs2.crash_image();
    drop(store2);
    let fs3 = FaultFs::from_image(&image2);
    let store3 = open(&fs3, sc.mode).map_err(|e| ctx(format!("second reopen: {e}")))?;
    verified(&store3).map_err(|e| ctx(format!("after a second crash: {e}")))?;
    matches(&store3, &found).map_err(|e| ctx(format!("after a second crash: {e}")))?;
    if crashed.is_some() {
        tally.checked += 1;
        tally.landed += u64::from(landed);
        tally.removed_packs += rec.removed_packs;
        tally.truncated_packs += rec.truncated_packs;
    } else {
        tally.not_reached += 1;
    }
    Ok(())
}

/// Tear sizes for write crash points, cycled: from nothing to the whole write.
const TEARS: [usize; 6] = [0, 1, 100, 4096, 40_000, usize::MAX];

fn crash_points(name: &str) {
    let t0 = Instant::now();
    let sc = scenario(name);
    let st = start(&sc);

    // Count the scenario's syncs and writes.
    let n = clean_run_counts(&sc, &st);
    let (syncs, writes) = (n.syncs(), n.get(Op::Write));
    assert!(syncs > 0, "{name}: no sync points");

    let mut failures = Vec::new();
    let mut at_syncs = Tally::default();
    let mut after_syncs = Tally::default();
    let mut killed = Tally::default();
    for k in 1..=syncs {
        let at = &|fs: &FaultFs| fs.crash_after_syncs(k);
        if let Err(e) = crash_run(&sc, &st, at, false, &mut at_syncs) {
            failures.push(format!("power loss at sync {k}: {e}"));
        }
        let landed = &|fs: &FaultFs| fs.crash_after_syncs_landed(k);
        if let Err(e) = crash_run(&sc, &st, landed, false, &mut after_syncs) {
            failures.push(format!("power loss after sync {k}: {e}"));
        }
        if let Err(e) = crash_run(&sc, &st, at, true, &mut killed) {
            failures.push(format!("kill at sync {k}, restart, power loss: {e}"));
        }
    }
    // Every write, torn three times at different sizes.
    let mut at_writes = Tally::default();
    for k in 1..=writes {
        for j in 0..3 {
            let tear = TEARS[(3 * k as usize + j) % TEARS.len()];
            let arm = &|fs: &FaultFs| fs.crash_after_writes(k, tear);
            if let Err(e) = crash_run(&sc, &st, arm, false, &mut at_writes) {
                failures.push(format!("write {k} (tear {tear}): {e}"));
            }
        }
    }
    // And a power loss after the last step returned.
    let mut at_end = Tally::default();
    if let Err(e) = crash_run(&sc, &st, &|_| {}, false, &mut at_end) {
        failures.push(format!("after the end: {e}"));
    }
    let all = [&at_syncs, &after_syncs, &killed, &at_writes];
    println!(
        "{name}: {syncs} syncs, {writes} writes in the scenario; crash points exercised: {} \
         power losses at a sync (step in flight landed at {}), {} right after a sync (landed at \
         {}), {} kills at a sync then a power loss after restart (landed at {}), {} power losses \
         at torn writes (landed at {}), 1 after the end; total {}; recovery removed {} and cut {} \
         packs; {} not reached; {} failed; {:.1}s",
        at_syncs.checked,
        at_syncs.landed,
        after_syncs.checked,
        after_syncs.landed,
        killed.checked,
        killed.landed,
        at_writes.checked,
        at_writes.landed,
        all.iter().map(|t| t.checked).sum::<u64>() + 1,
        all.iter().map(|t| t.removed_packs).sum::<u64>(),
        all.iter().map(|t| t.truncated_packs).sum::<u64>(),
        all.iter().map(|t| t.not_reached).sum::<u64>(),
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert_none_failed(&format!("{name}: crash points"), &failures);
    assert!(at_syncs.checked > 0, "{name}: no crash point exercised");
    assert!(
        at_syncs.checked == syncs && after_syncs.checked == syncs && killed.checked == syncs,
        "{name}: {} sync points not reached",
        at_syncs.not_reached + after_syncs.not_reached + killed.not_reached
    );
}

#[test]
fn faultfs_models_durability() {
    faultfs::selftest::run();
}

#[test]
fn crash_points_create() {
    crash_points("create");
}

#[test]
fn crash_points_put() {
    crash_points("put");
}

#[test]
fn crash_points_put_replace() {
    crash_points("put-replace");
}

#[test]
fn crash_points_delete() {
    crash_points("delete");
}

#[test]
fn crash_points_collapse() {
    crash_points("collapse");
}

#[test]
fn crash_points_expand() {
    crash_points("expand");
}

#[test]
fn crash_points_gc() {
    crash_points("gc");
}

/// Regression (found by these tests, fixed in 78403bb): `Store::open` with `create` made the
/// store's directory without syncing its parent, so after a power loss the directory, and with
/// it every acknowledged put, could be gone.
#[test]
fn put_acknowledged_in_a_store_whose_directory_open_created_survives_power_loss() {
    let fs = FaultFs::new();
    let store = open(&fs, lockerstore::LicenseMode::PerUserCopy).unwrap();
    let (u, k) = (
        lockerstore::UserId::new("alice").unwrap(),
        lockerstore::TrackKey::new("song").unwrap(),
    );
    let song = faultfs::harness::data("song", 100_000);
    store.put(&u, &k, &song[..]).unwrap();
    let image = fs.crash_image();
    drop(store);
    let fs2 = FaultFs::from_image(&image);
    assert!(
        image.file(std::path::Path::new("/store/STORE")).is_some(),
        "the store's directory vanished with the power loss: {image:?}"
    );
    let store2 = open(&fs2, lockerstore::LicenseMode::PerUserCopy).unwrap();
    assert_eq!(store2.read_track(&u, &k).unwrap(), song);
}

/// BUG (minimal): store creation renames `STORE.tmp` to `STORE` and then syncs the directory. If
/// the process dies between the two (or that sync fails), the restarted `open` finds `STORE`,
/// accepts the store as complete without making the rename durable, and acknowledges puts. A
/// later power loss undoes the rename; the next `open` takes the directory for an interrupted
/// creation, re-creates the store (removing `meta.redb`) and the acknowledged put is gone
/// (src/store.rs, `Store::open`: an existing `STORE` is trusted without a `sync_dir`).
#[test]
fn put_acknowledged_after_a_restart_that_interrupted_creation_survives_power_loss() {
    let fs = FaultFs::new();
    fs.create_dir_all(std::path::Path::new("/store")).unwrap();
    fs.sync_dir(std::path::Path::new("/")).unwrap();
    // Creation: the last sync is the directory's, after the rename. The process dies there.
    let probe = FaultFs::from_image(&fs.image_now());
    let before = probe.counts().syncs();
    drop(open(&probe, lockerstore::LicenseMode::PerUserCopy).unwrap());
    let creation_syncs = probe.counts().syncs() - before;
    let fs1 = FaultFs::from_image(&fs.image_now());
    fs1.crash_after_syncs(creation_syncs_to_last_dir_sync(&fs, creation_syncs));
    assert!(open(&fs1, lockerstore::LicenseMode::PerUserCopy).is_err());
    // Restart on the bytes the killed process left (no power loss): STORE is there.
    let fs2 = fs1.after_kill();
    let store = open(&fs2, lockerstore::LicenseMode::PerUserCopy).unwrap();
    let (u, k) = (
        lockerstore::UserId::new("alice").unwrap(),
        lockerstore::TrackKey::new("song").unwrap(),
    );
    let song = faultfs::harness::data("song", 100_000);
    store.put(&u, &k, &song[..]).unwrap();
    // Power loss.
    let image = fs2.crash_image();
    drop(store);
    let store3 = open(
        &FaultFs::from_image(&image),
        lockerstore::LicenseMode::PerUserCopy,
    )
    .unwrap();
    assert_eq!(
        store3.read_track(&u, &k).map_err(|e| e.to_string()),
        Ok(song),
        "the put acknowledged before the power loss is gone"
    );
}

/// The number (from the start of `open`) of the last `sync_dir` of a store's creation.
fn creation_syncs_to_last_dir_sync(fs: &FaultFs, creation_syncs: u64) -> u64 {
    // Find it by crashing at each sync and looking at what crashed.
    (1..=creation_syncs)
        .rev()
        .find(|k| {
            let f = FaultFs::from_image(&fs.image_now());
            f.crash_after_syncs(*k);
            let _ = open(&f, lockerstore::LicenseMode::PerUserCopy);
            f.crashed().is_some_and(|c| c.contains("SyncDir /store)"))
        })
        .expect("creation syncs the store directory")
}
