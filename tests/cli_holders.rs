//! Licences per rights holder through the `lockerstore` binary: `put --rights-holder`, `ls`,
//! `license set|unset|list`, `holder`, `what-if --by-holder`, `migrate` and the per-holder
//! `audit`, and bad input refused with nothing changed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::cli;
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(out: Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// `a` within 1 % of `b`.
fn near(a: u64, b: u64) -> bool {
    a.abs_diff(b) * 100 <= b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn physical(store: &Path) -> u64 {
    u(&json(cli(store, &["stats", "--json"]))["physical_bytes"])
}

/// The holder row of `what-if --by-holder --json`.
fn row<'a>(w: &'a Value, holder: &str) -> &'a Value {
    w["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["holder"] == holder)
        .unwrap_or_else(|| panic!("{holder} missing from {w}"))
}

/// The holder verdict of `audit --json` (`None`: the tracks without a holder).
fn verdict<'a>(a: &'a Value, holder: Option<&str>) -> &'a Value {
    let want = holder.map_or(Value::Null, Value::from);
    a["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["holder"] == want)
        .unwrap_or_else(|| panic!("{holder:?} missing from {a}"))
}

/// Three users each upload EMI's hit (2 MB), Sony Music's (1 MB) and a Warp Records track of
/// their own (300 kB); ann also a file with no holder. Per-user-copy store.
fn three_holders(tmp: &Path) -> PathBuf {
    let store = tmp.join("store");
    let emi = write(tmp, "emi", &lockerstore::corpus::noise(1, "emi", 2_000_000));
    let sony = write(
        tmp,
        "sony",
        &lockerstore::corpus::noise(1, "sony", 1_000_000),
    );
    ok(cli(&store, &["init", "--mode", "per-user-copy"]));
    for user in ["ann", "ben", "cat"] {
        let warp = write(
            tmp,
            &format!("warp-{user}"),
            &lockerstore::corpus::noise(1, user, 300_000),
        );
        for (key, file, holder) in [
            ("emi.mp3", &emi, "EMI"),
            ("sony.mp3", &sony, "Sony Music"),
            ("warp.mp3", &warp, "Warp Records"),
        ] {
            let out = ok(cli(
                &store,
                &[
                    "put",
                    user,
                    key,
                    file.to_str().unwrap(),
                    "--rights-holder",
                    holder,
                ],
            ));
            assert!(out.contains(&format!("rights holder {holder}")), "{out}");
        }
    }
    let plain = write(
        tmp,
        "plain",
        &lockerstore::corpus::noise(1, "plain", 200_000),
    );
    let out = ok(cli(
        &store,
        &["put", "ann", "x.bin", plain.to_str().unwrap()],
    ));
    assert!(out.contains("no rights holder"), "{out}");
    store
}

#[test]
fn one_holder_collapses_and_splits_again_as_predicted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = three_holders(tmp.path());
    let before = physical(&store);

    let ls = json(cli(&store, &["ls", "ann", "--json"]));
    let holders: Vec<(&str, &Value)> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap(), &t["rights_holder"]))
        .collect();
    assert!(holders.contains(&("emi.mp3", &Value::from("EMI"))), "{ls}");
    assert!(
        holders.contains(&("sony.mp3", &Value::from("Sony Music"))),
        "{ls}"
    );
    assert!(holders.contains(&("x.bin", &Value::Null)), "{ls}");
    let text = ok(cli(&store, &["ls", "ann"]));
    assert!(
        text.lines()
            .any(|l| l.contains("Sony Music") && l.ends_with("sony.mp3")),
        "{text}"
    );

    // The prediction for every holder, by savings.
    let w = json(cli(&store, &["what-if", "--by-holder", "--json"]));
    let names: Vec<&str> = w["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["holder"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["EMI", "Sony Music", "Warp Records"], "{w}");
    assert_eq!(w["unassigned_tracks"], 1);
    assert_eq!(w["unassigned_bytes"], 200_000);
    assert_eq!(w["baseline"]["pending_tracks"], 0);
    let emi = row(&w, "EMI");
    assert_eq!(emi["licence"], Value::Null);
    assert_eq!(emi["mode_now"], "per-user-copy");
    assert_eq!(emi["mode_after"], "single-master");
    assert_eq!(emi["tracks"], 3);
    assert_eq!(emi["logical_bytes"], 6_000_000);
    assert!(near(u(&emi["physical_bytes_now"]), 6_000_000), "{emi}");
    assert_eq!(emi["physical_bytes_baseline"], before);
    // Two of the three copies go.
    assert!(near(u(&emi["bytes_to_free"]), 4_000_000), "{emi}");
    assert!(
        near(emi["savings"].as_i64().unwrap() as u64, 4_000_000),
        "{emi}"
    );
    let warp = row(&w, "Warp Records");
    assert!(
        warp["savings"].as_i64().unwrap().unsigned_abs() * 100 <= 900_000,
        "{warp}"
    );
    let predicted = u(&emi["physical_bytes_after"]);
    assert!(near(predicted, before - 4_000_000), "{emi}");
    let table = ok(cli(&store, &["what-if", "--by-holder"]));
    assert!(table.contains("Warp Records"), "{table}");
    assert!(table.contains("unassigned"), "{table}");

    // The licence: new policy at once, the layout pending until a migration.
    let out = ok(cli(&store, &["license", "set", "EMI", "shared"]));
    assert!(out.contains("EMI: single-master"), "{out}");
    let l = json(cli(&store, &["license", "list", "--json"]));
    assert_eq!(l["default"], "per-user-copy");
    assert_eq!(l["entries"][0]["holder"], "EMI");
    assert_eq!(l["entries"][0]["mode"], "single-master");
    assert_eq!(l["entries"][0]["until"], Value::Null);
    assert_eq!(l["entries"][0]["expired"], false);
    let pending = cli(&store, &["audit", "--json"]);
    assert_eq!(pending.status.code(), Some(1), "{}", stderr(&pending));
    let a: Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert_eq!(a["conforming"], false);
    let e = verdict(&a, Some("EMI"));
    assert_eq!(e["mode"], "single-master");
    assert_eq!(e["tracks"], 3);
    assert_eq!(e["pending_tracks"], 3);
    assert_eq!(e["breaking_tracks"], 3);
    assert_eq!(e["conforming"], false);
    assert!(
        e["examples"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"user": "ben", "key": "emi.mp3"})),
        "{e}"
    );
    assert_eq!(verdict(&a, Some("Sony Music"))["conforming"], true);
    assert_eq!(verdict(&a, None)["conforming"], true);
    let text = cli(&store, &["audit"]);
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("NOT CONFORMING"), "{text}");
    assert!(text.contains("\"cat\""), "{text}");

    let m = json(cli(&store, &["migrate", "--json"]));
    assert_eq!(m["tracks_migrated"], 3, "only EMI's tracks move: {m}");
    let after = physical(&store);
    assert!(near(after, predicted), "{after} vs predicted {predicted}");
    let a = json(cli(&store, &["audit", "--json"]));
    assert_eq!(a["conforming"], true);
    for h in a["holders"].as_array().unwrap() {
        assert_eq!(h["conforming"], true, "{h}");
        assert_eq!(h["breaking_tracks"], 0, "{h}");
    }
    assert_eq!(verdict(&a, Some("EMI"))["mode"], "single-master");
    assert_eq!(verdict(&a, Some("Sony Music"))["mode"], "per-user-copy");

    // And back: the prediction of the flip from the collapsed layout, then the migration.
    let w = json(cli(&store, &["what-if", "--by-holder", "--json"]));
    let emi = row(&w, "EMI");
    assert_eq!(emi["licence"]["mode"], "single-master");
    assert_eq!(emi["mode_now"], "single-master");
    assert_eq!(emi["mode_after"], "per-user-copy");
    assert!(emi["savings"].as_i64().unwrap() < 0, "{emi}");
    let predicted = u(&emi["physical_bytes_after"]);
    assert!(near(predicted, before), "{predicted} vs {before}");
    ok(cli(&store, &["license", "set", "EMI", "per-user"]));
    let m = json(cli(&store, &["migrate", "--json"]));
    assert_eq!(m["tracks_migrated"], 3, "{m}");
    let after = physical(&store);
    assert!(near(after, predicted), "{after} vs predicted {predicted}");
    let a = json(cli(&store, &["audit", "--json"]));
    assert_eq!(a["conforming"], true);
    assert_eq!(a["shared_records_across_users"], 0);
    assert_eq!(verdict(&a, Some("EMI"))["mode"], "per-user-copy");

    assert_eq!(json(cli(&store, &["verify", "--json"]))["ok"], true);
    let got = cli(&store, &["get", "cat", "emi.mp3"]);
    assert_eq!(
        got.stdout,
        lockerstore::corpus::noise(1, "emi", 2_000_000),
        "{}",
        stderr(&got)
    );
}

/// Everything the store shows about licences and holders, to compare before and after.
fn snapshot(store: &Path) -> Vec<String> {
    [
        &["license", "list", "--json"][..],
        &["ls", "ann", "--json"],
        &["stats", "--json"],
        &["mode"],
    ]
    .iter()
    .map(|args| ok(cli(store, args)))
    .collect()
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let file = write(
        tmp.path(),
        "t",
        &lockerstore::corpus::noise(2, "t", 100_000),
    );
    let f = file.to_str().unwrap();
    ok(cli(&store, &["init"]));
    ok(cli(
        &store,
        &["put", "ann", "a.mp3", f, "--rights-holder", "EMI"],
    ));
    ok(cli(
        &store,
        &["license", "set", "EMI", "shared", "--until", "2099-12-31"],
    ));
    let before = snapshot(&store);
    let long = "x".repeat(lockerstore::MAX_HOLDER_LEN + 1);
    let cases: &[(&[&str], &str)] = &[
        (&["license", "set", "", "shared"], "invalid rights holder"),
        (
            &["license", "set", " EMI", "shared"],
            "invalid rights holder",
        ),
        (
            &["license", "set", "EM\tI", "shared"],
            "invalid rights holder",
        ),
        (
            &["license", "set", &long, "shared"],
            "invalid rights holder",
        ),
        (
            &["license", "set", "EMI", "sharde"],
            "unknown mode \"sharde\"",
        ),
        (
            &["license", "set", "EMI", "per-user", "--until", "2099-02-30"],
            "invalid date \"2099-02-30\"",
        ),
        (
            &["license", "set", "EMI", "per-user", "--until", "tomorrow"],
            "invalid date \"tomorrow\"",
        ),
        (
            &[
                "license",
                "set",
                "EMI",
                "per-user",
                "--until",
                "2099-01-01T00:00:00",
            ],
            "invalid date",
        ),
        (
            &["license", "set", "EMI", "per-user", "--until", "2001-01-01"],
            "already passed",
        ),
        (&["license", "unset", "Sony"], "no licence to unset"),
        (&["license", "unset", ""], "invalid rights holder"),
        (
            &["put", "ann", "b.mp3", f, "--rights-holder", ""],
            "invalid rights holder",
        ),
        (
            &["put", "ann", "a.mp3", f, "--rights-holder", "EMI "],
            "invalid rights holder",
        ),
        (&["holder", "ann", "a.mp3", "a\nb"], "invalid rights holder"),
        (
            &["holder", "ann", "a.mp3", "Sony", "--none"],
            "cannot be used with",
        ),
        (&["holder", "ann", "nope.mp3", "Sony"], "has no track"),
        (&["what-if"], "required"),
        (&["what-if", "shared", "--by-holder"], "cannot be used with"),
    ];
    for (args, says) in cases {
        let out = cli(&store, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} wrote {:?}", out.stdout);
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert_eq!(snapshot(&store), before, "{args:?} changed the store");
    }
}

#[test]
fn licence_ends_are_days_or_instants_and_expired_ones_are_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    ok(cli(&store, &["init", "--mode", "single-master"]));
    ok(cli(
        &store,
        &["license", "set", "A", "shared", "--until", "2099-12-31"],
    ));
    ok(cli(
        &store,
        &[
            "licence",
            "set",
            "B b",
            "per-user",
            "--until",
            "2099-06-30T12:00:00+02:00",
        ],
    ));
    ok(cli(&store, &["license", "set", "C", "per-user"]));
    // An entry whose end has passed, as one left from long ago would be (the command line
    // refuses to set one).
    {
        let s = lockerstore::Store::open(&store, lockerstore::Options::default()).unwrap();
        s.set_licence(
            &lockerstore::RightsHolder::new("Old").unwrap(),
            Some(lockerstore::Licence::new(lockerstore::LicenseMode::PerUserCopy).until(1_000)),
        )
        .unwrap();
    }
    let l = json(cli(&store, &["license", "list", "--json"]));
    assert_eq!(l["default"], "single-master");
    let entries = l["entries"].as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["holder"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A", "B b", "C", "Old"]);
    // Through 2099-12-31, UTC: until the next midnight.
    assert_eq!(entries[0]["until"], 4_102_444_800u64);
    assert_eq!(entries[0]["until_utc"], "2100-01-01T00:00:00Z");
    assert_eq!(entries[1]["until"], 4_086_496_800u64);
    assert_eq!(entries[1]["until_utc"], "2099-06-30T10:00:00Z");
    assert_eq!(entries[1]["mode"], "per-user-copy");
    assert_eq!(entries[2]["until"], Value::Null);
    for e in &entries[..3] {
        assert_eq!(e["expired"], false, "{e}");
        assert_eq!(e["mode_now"], e["mode"], "{e}");
    }
    assert_eq!(entries[3]["expired"], true);
    assert_eq!(entries[3]["mode"], "per-user-copy");
    assert_eq!(
        entries[3]["mode_now"], "single-master",
        "an expired entry gives the default"
    );

    let text = ok(cli(&store, &["license", "list"]));
    let line = |h: &str| {
        text.lines()
            .find(|l| l.starts_with(h))
            .unwrap_or_else(|| panic!("{h}: {text}"))
            .to_string()
    };
    assert!(line("(default)").contains("single-master"), "{text}");
    assert!(line("A ").contains("until 2100-01-01T00:00:00Z"), "{text}");
    assert!(line("C ").contains("no end"), "{text}");
    assert!(line("Old").contains("EXPIRED"), "{text}");
    assert!(!line("A ").contains("EXPIRED"), "{text}");

    ok(cli(&store, &["license", "unset", "A"]));
    let l = json(cli(&store, &["license", "list", "--json"]));
    let names: Vec<&str> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["holder"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["B b", "C", "Old"]);
}

/// `audio` behind an ID3v2.3 tag whose TPUB (publisher) frame names `label`.
fn with_tpub(label: &str, audio: &[u8]) -> Vec<u8> {
    let mut frame = b"TPUB".to_vec();
    frame.extend_from_slice(&(label.len() as u32 + 1).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0]); // flags, then ISO-8859-1
    frame.extend_from_slice(label.as_bytes());
    let n = frame.len() as u32;
    let mut tag = b"ID3\x03\x00\x00".to_vec();
    tag.extend_from_slice(&[
        (n >> 21) as u8 & 0x7f,
        (n >> 14) as u8 & 0x7f,
        (n >> 7) as u8 & 0x7f,
        n as u8 & 0x7f,
    ]);
    tag.extend_from_slice(&frame);
    tag.extend_from_slice(audio);
    tag
}

#[test]
fn holder_shows_and_changes_a_tracks_holder_and_tags_name_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mp3 = std::fs::read(fixtures.join("mp3-cbr-untagged-lame.mp3")).unwrap();
    let tagged = write(tmp.path(), "tagged.mp3", &with_tpub("Tag Records", &mp3));
    let hit = write(
        tmp.path(),
        "hit",
        &lockerstore::corpus::noise(3, "hit", 1_500_000),
    );
    ok(cli(&store, &["init"]));

    // The tags name the holder; --rights-holder wins over them.
    ok(cli(
        &store,
        &["put", "ann", "t.mp3", tagged.to_str().unwrap()],
    ));
    assert_eq!(
        ok(cli(&store, &["holder", "ann", "t.mp3"]))
            .split("  ")
            .next(),
        Some("Tag Records")
    );
    ok(cli(
        &store,
        &[
            "put",
            "ann",
            "u.mp3",
            tagged.to_str().unwrap(),
            "--rights-holder",
            "EMI",
        ],
    ));
    let h = json(cli(&store, &["holder", "ann", "u.mp3", "--json"]));
    assert_eq!(h["rights_holder"], "EMI");
    assert_eq!(h["mode"], "per-user-copy");

    // A shared licence, both users' copies collapsed.
    ok(cli(&store, &["license", "set", "EMI", "shared"]));
    for u in ["ann", "ben"] {
        ok(cli(
            &store,
            &[
                "put",
                u,
                "hit.mp3",
                hit.to_str().unwrap(),
                "--rights-holder",
                "EMI",
            ],
        ));
    }
    ok(cli(&store, &["migrate"]));
    let one_copy = physical(&store);

    // ann's copy changes holder: metadata only, pending until migrated.
    let out = ok(cli(&store, &["holder", "ann", "hit.mp3", "Indie"]));
    assert!(out.starts_with("Indie  (per-user-copy)"), "{out}");
    let ls = json(cli(&store, &["ls", "ann", "--json"]));
    let of = |k: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == k)
            .unwrap()["rights_holder"]
            .clone()
    };
    assert_eq!(of("hit.mp3"), "Indie");
    assert_eq!(of("t.mp3"), "Tag Records");
    assert_eq!(physical(&store), one_copy, "a holder change moves no byte");
    let out = cli(&store, &["audit", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    let indie = verdict(&a, Some("Indie"));
    assert_eq!(indie["pending_tracks"], 1, "{indie}");
    assert_eq!(
        indie["examples"][0],
        serde_json::json!({"user": "ann", "key": "hit.mp3"})
    );
    assert_eq!(
        json(cli(&store, &["migrate", "--json"]))["tracks_migrated"],
        1
    );
    assert_eq!(json(cli(&store, &["audit", "--json"]))["conforming"], true);
    assert!(
        near(physical(&store), one_copy + 1_500_000),
        "ann has her own copy again"
    );

    // --none: unknown, the default's.
    ok(cli(&store, &["holder", "ann", "u.mp3", "--none"]));
    let h = json(cli(&store, &["holder", "ann", "u.mp3", "--json"]));
    assert_eq!(h["rights_holder"], Value::Null);
    assert!(ok(cli(&store, &["holder", "ann", "u.mp3"])).starts_with("(unknown)"));
    let got = cli(&store, &["get", "ann", "u.mp3"]);
    assert_eq!(
        got.stdout,
        std::fs::read(&tagged).unwrap(),
        "{}",
        stderr(&got)
    );
}
