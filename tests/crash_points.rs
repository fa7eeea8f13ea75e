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

/// Licences per rights holder: the tracks of three holders, stored per user; one user holds the
/// same bytes under EMI and under Sony, so collapsing EMI must copy them into the shared domain
/// and leave the user's record to the Sony track.
mod holders {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::faultfs::harness::{DIR, assert_none_failed, data, open, options, verified};
    use super::faultfs::{FaultFs, Image, Op};
    use lockerstore::{
        Error, HolderWhatIf, Licence, LicenseMode, PutOptions, RightsHolder, Store, TrackKey,
        UserId,
    };

    const EMI: &str = "EMI";
    const OTHERS: [&str; 2] = ["Sony Music", "Warp"];

    fn holder(name: &str) -> RightsHolder {
        RightsHolder::new(name).unwrap()
    }

    fn ids(u: &str, k: &str) -> (UserId, TrackKey) {
        (UserId::new(u).unwrap(), TrackKey::new(k).unwrap())
    }

    /// (user, key) -> (holder, bytes).
    type Tracks = BTreeMap<(String, String), (&'static str, Vec<u8>)>;

    fn tracks() -> Tracks {
        let rows: [(&str, &str, &'static str, &str, usize); 9] = [
            ("alice", "a0", EMI, "A", 300_000),
            ("alice", "a1", OTHERS[0], "A", 300_000),
            ("alice", "a2", EMI, "B", 200_000),
            ("alice", "a3", OTHERS[1], "C", 150_000),
            ("bob", "b0", EMI, "A", 300_000),
            ("bob", "b1", OTHERS[0], "D", 180_000),
            ("bob", "b2", OTHERS[1], "C", 150_000),
            ("carol", "c0", EMI, "B", 200_000),
            ("carol", "c1", OTHERS[0], "E", 120_000),
        ];
        rows.iter()
            .map(|(u, k, h, label, n)| ((u.to_string(), k.to_string()), (*h, data(label, *n))))
            .collect()
    }

    /// One step of a move.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// `set_licence(EMI, mode)`.
        Licence(LicenseMode),
        /// `set_rights_holder(user, key, holder)`.
        Holder(&'static str, &'static str, &'static str),
        Migrate,
    }

    impl Step {
        fn run(self, store: &Store) -> lockerstore::Result<()> {
            match self {
                Step::Licence(mode) => store.set_licence(&holder(EMI), Some(Licence::new(mode))),
                Step::Holder(u, k, h) => {
                    let (uid, key) = ids(u, k);
                    store.set_rights_holder(&uid, &key, Some(holder(h)))
                }
                Step::Migrate => store.migrate(&mut |_| {}).map(|_| ()),
            }
        }

        fn apply(self, tracks: &mut Tracks) {
            if let Step::Holder(u, k, h) = self {
                tracks.get_mut(&(u.to_owned(), k.to_owned())).unwrap().0 = h;
            }
        }
    }

    /// Runs `steps`, counting those that returned Ok in `acked`.
    fn run(store: &Store, steps: &[Step], acked: &mut usize) -> lockerstore::Result<()> {
        for s in steps {
            s.run(store)?;
            *acked += 1;
        }
        Ok(())
    }

    /// What the move leads to.
    struct Move {
        steps: Vec<Step>,
        /// EMI's licence at the end.
        licence: LicenseMode,
        /// The other holders' tracks are the same before and after (a licence move).
        others_fixed: bool,
    }

    /// The what-if entries of the other holders.
    fn others(store: &Store) -> Result<Vec<HolderWhatIf>, String> {
        let w = store
            .what_if_by_holder()
            .map_err(|e| format!("what-if by holder: {e}"))?;
        let mut v: Vec<HolderWhatIf> = w
            .holders
            .into_iter()
            .filter(|h| OTHERS.contains(&h.holder.as_str()))
            .collect();
        v.sort_by(|a, b| a.holder.cmp(&b.holder));
        Ok(v)
    }

    /// Every track reads back exactly, with its holder; verify is clean; no record is read
    /// across users outside the shared domain; the other holders' tracks are never pending
    /// in a licence move.
    fn sound(store: &Store, tracks: &Tracks, others_fixed: bool) -> Result<(), String> {
        for ((u, k), (h, bytes)) in tracks {
            let (uid, key) = ids(u, k);
            match store.read_track(&uid, &key) {
                Ok(got) if got == *bytes => {}
                Ok(_) => return Err(format!("{u}/{k}: other bytes")),
                Err(e) => return Err(format!("{u}/{k}: {e}")),
            }
            let info = store
                .track_info(&uid, &key)
                .map_err(|e| format!("{u}/{k}: {e}"))?;
            if info.rights_holder.as_ref().map(|h| h.as_str()) != Some(h) {
                return Err(format!("{u}/{k}: holder {:?}", info.rights_holder));
            }
        }
        verified(store)?;
        let a = store.audit(true).map_err(|e| format!("audit: {e}"))?;
        if a.foreign_records != 0 || a.aliased_records != 0 {
            return Err(format!("foreign or aliased records: {a:?}"));
        }
        if let Some(r) = a
            .records
            .iter()
            .find(|r| r.users.len() > 1 && r.domain != lockerstore::Domain::Shared)
        {
            return Err(format!("a user's record read across users: {r:?}"));
        }
        for h in &a.holders {
            let name = h.holder.as_ref().map(|h| h.as_str());
            if others_fixed && name.is_some_and(|n| OTHERS.contains(&n)) && h.pending_tracks != 0 {
                return Err(format!("another holder's tracks are pending: {h:?}"));
            }
        }
        Ok(())
    }

    /// After the move is finished: the layout is the policy's for every holder, and the other
    /// holders are where the clean run left them.
    fn finished(store: &Store, mv: &Move, reference: &[HolderWhatIf]) -> Result<(), String> {
        let l = store.licences();
        if l.entries.get(&holder(EMI)).map(|e| e.mode) != Some(mv.licence) {
            return Err(format!("licences after the move: {l:?}"));
        }
        let a = store.audit(false).map_err(|e| format!("audit: {e}"))?;
        if !a.conforming
            || a.holders
                .iter()
                .any(|h| !h.conforming || h.pending_tracks > 0)
        {
            return Err(format!("not conforming after migrate: {a:?}"));
        }
        let got = others(store)?;
        if got != reference {
            return Err(format!(
                "the other holders' what-if changed: {got:#?}, expected {reference:#?}"
            ));
        }
        Ok(())
    }

    /// One crash point: run the move from `start` with `arm`, crash (power loss, or kill and
    /// later power loss), reopen and check, finish the move and check, then a second power
    /// loss. Returns whether the crash happened.
    fn crash_run(
        start: &Image,
        tracks: &Tracks,
        mv: &Move,
        reference: &[HolderWhatIf],
        arm: &dyn Fn(&FaultFs),
        kill: bool,
    ) -> Result<bool, String> {
        let fs = FaultFs::from_image(start);
        let store = open(&fs, LicenseMode::PerUserCopy).map_err(|e| format!("open: {e}"))?;
        arm(&fs);
        let mut acked = 0;
        let r = run(&store, &mv.steps, &mut acked);
        let crashed = fs.crashed();
        match (&r, &crashed) {
            (Err(e), None) => return Err(format!("failed without a crash: {e}")),
            (Err(e), Some(_)) if !matches!(e, Error::Io { .. } | Error::Poisoned(_)) => {
                return Err(format!("unexpected error kind at the crash: {e:?}"));
            }
            _ => {}
        }
        let what = crashed.clone().unwrap_or_else(|| "no crash".into());
        let ctx = |e: String| format!("{what} (steps acknowledged: {acked}): {e}");
        let fs2 = if kill {
            fs.after_kill()
        } else {
            FaultFs::from_image(&fs.crash_image())
        };
        drop(store);
        let store2 =
            open(&fs2, LicenseMode::PerUserCopy).map_err(|e| ctx(format!("reopen: {e}")))?;
        // The acknowledged steps hold; the one in flight wholly or not at all.
        let mut before = tracks.clone();
        mv.steps[..acked].iter().for_each(|s| s.apply(&mut before));
        if let Err(e) = sound(&store2, &before, mv.others_fixed) {
            let mut with = before.clone();
            match mv.steps.get(acked) {
                Some(s @ Step::Holder(..)) => s.apply(&mut with),
                _ => return Err(ctx(format!("after the crash: {e}"))),
            }
            sound(&store2, &with, mv.others_fixed)
                .map_err(|e2| ctx(format!("after the crash: neither {e} nor {e2}")))?;
        }
        let licence_acked = mv.steps[..acked]
            .iter()
            .any(|s| matches!(s, Step::Licence(_)));
        if licence_acked {
            let l = store2.licences();
            if l.entries.get(&holder(EMI)).map(|e| e.mode) != Some(mv.licence) {
                return Err(ctx(format!("the acknowledged licence is lost: {l:?}")));
            }
        }
        if acked == mv.steps.len() {
            finished(&store2, mv, reference).map_err(|e| ctx(format!("acknowledged: {e}")))?;
        }
        // Finish the move.
        let mut after = tracks.clone();
        mv.steps.iter().for_each(|s| s.apply(&mut after));
        run(&store2, &mv.steps, &mut 0).map_err(|e| ctx(format!("finishing the move: {e}")))?;
        sound(&store2, &after, mv.others_fixed)
            .map_err(|e| ctx(format!("after finishing: {e}")))?;
        finished(&store2, mv, reference).map_err(ctx)?;
        // A second power loss keeps the finished move.
        let image = fs2.crash_image();
        drop(store2);
        let store3 = open(&FaultFs::from_image(&image), LicenseMode::PerUserCopy)
            .map_err(|e| ctx(format!("second reopen: {e}")))?;
        sound(&store3, &after, mv.others_fixed)
            .map_err(|e| ctx(format!("after a second crash: {e}")))?;
        finished(&store3, mv, reference).map_err(|e| ctx(format!("after a second crash: {e}")))?;
        Ok(crashed.is_some())
    }

    /// Runs the move from `start` cleanly (for its sync and write counts, its end state, and
    /// the other holders' what-if after it), then crashes at every sync point in three ways and
    /// at every write torn three ways. Returns the image after the clean run, and its tracks.
    fn move_with_crashes(start: &Image, tracks: &Tracks, mv: &Move) -> (Image, Tracks) {
        let t0 = Instant::now();
        let name = format!("{:?}", mv.steps);
        let fs = FaultFs::from_image(start);
        let store = open(&fs, LicenseMode::PerUserCopy).unwrap();
        let before = others(&store).unwrap();
        let c0 = fs.counts();
        run(&store, &mv.steps, &mut 0).unwrap();
        let n = fs.counts().since(&c0);
        let (syncs, writes) = (n.syncs(), n.get(Op::Write));
        let reference = others(&store).unwrap();
        let mut after = tracks.clone();
        mv.steps.iter().for_each(|s| s.apply(&mut after));
        sound(&store, &after, mv.others_fixed).unwrap();
        finished(&store, mv, &reference).unwrap();
        if mv.others_fixed {
            // The other holders did not move: same tracks, bytes, records read, mode.
            let key = |w: &HolderWhatIf| {
                (
                    w.holder.clone(),
                    w.mode_now,
                    w.tracks,
                    w.logical_bytes,
                    w.physical_bytes_now,
                )
            };
            assert_eq!(
                before.iter().map(key).collect::<Vec<_>>(),
                reference.iter().map(key).collect::<Vec<_>>(),
                "{name}: the other holders' tracks moved"
            );
        }
        assert!(
            reference
                .iter()
                .all(|w| w.mode_now == LicenseMode::PerUserCopy)
        );
        drop(store);
        let end = fs.image_now();

        let mut failures = Vec::new();
        let mut checked = 0;
        let kinds: [(&str, bool, bool); 3] = [
            ("power loss at sync", false, false),
            ("power loss after sync", true, false),
            ("kill at sync, restart, power loss", false, true),
        ];
        for k in 1..=syncs {
            for (kind, landed, kill) in kinds {
                let arm = |fs: &FaultFs| {
                    if landed {
                        fs.crash_after_syncs_landed(k)
                    } else {
                        fs.crash_after_syncs(k)
                    }
                };
                match crash_run(start, tracks, mv, &reference, &arm, kill) {
                    Ok(true) => checked += 1,
                    Ok(false) => failures.push(format!("{kind} {k}: not reached")),
                    Err(e) => failures.push(format!("{kind} {k}: {e}")),
                }
            }
        }
        // Every write, torn at three sizes.
        for k in 1..=writes {
            for j in 0..3 {
                let tear = super::TEARS[(3 * k as usize + j) % super::TEARS.len()];
                let arm = |fs: &FaultFs| fs.crash_after_writes(k, tear);
                match crash_run(start, tracks, mv, &reference, &arm, false) {
                    Ok(true) => checked += 1,
                    Ok(false) => failures.push(format!("write {k} (tear {tear}): not reached")),
                    Err(e) => failures.push(format!("write {k} (tear {tear}): {e}")),
                }
            }
        }
        println!(
            "{name}: {syncs} syncs, {writes} writes, {checked} crash points checked (power loss \
             at and after each sync, kill at each sync, each write torn three ways), {} failed, \
             {:.1}s",
            failures.len(),
            t0.elapsed().as_secs_f64()
        );
        assert_none_failed(&format!("{name}: crash points"), &failures);
        (end, after)
    }

    #[test]
    fn crash_points_per_holder_collapse_expand_and_holder_change() {
        let tracks = tracks();
        let fs = FaultFs::new();
        let store = Store::open(DIR, options(&fs, LicenseMode::PerUserCopy)).unwrap();
        for ((u, k), (h, bytes)) in &tracks {
            let (uid, key) = ids(u, k);
            let o = PutOptions::default().rights_holder(holder(h));
            store.put_with(&uid, &key, &bytes[..], &o).unwrap();
        }
        sound(&store, &tracks, true).unwrap();
        // The collapse writes: alice's Sony track keeps her record of "A", so EMI's needs a
        // copy in the shared domain.
        let w = store.what_if_by_holder().unwrap();
        let emi = w.holders.iter().find(|h| h.holder.as_str() == EMI).unwrap();
        assert!(emi.bytes_to_write > 0, "{emi:?}");
        drop(store);
        let start = fs.image_now();
        let collapse = Move {
            steps: vec![Step::Licence(LicenseMode::SingleMaster), Step::Migrate],
            licence: LicenseMode::SingleMaster,
            others_fixed: true,
        };
        let (collapsed, tracks) = move_with_crashes(&start, &tracks, &collapse);
        // A Sony track of bob's becomes EMI's: it joins the shared domain.
        let change = Move {
            steps: vec![Step::Holder("bob", "b1", EMI), Step::Migrate],
            licence: LicenseMode::SingleMaster,
            others_fixed: false,
        };
        move_with_crashes(&collapsed, &tracks, &change);
        let expand = Move {
            steps: vec![Step::Licence(LicenseMode::PerUserCopy), Step::Migrate],
            licence: LicenseMode::PerUserCopy,
            others_fixed: true,
        };
        move_with_crashes(&collapsed, &tracks, &expand);
    }
}
