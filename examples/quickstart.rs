//! The library's main job in a few lines: open a store, put a track from a file, read part of it
//! back through a seek, print the stats.
//!
//! `cargo run --example quickstart [FILE]` (without FILE it makes a 4 MB stand-in track).

use std::io::{Read, Seek, SeekFrom};

use lockerstore::{LicenseMode, Options, Store, TrackKey, UserId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(std::env::args_os().nth(1).map(std::path::PathBuf::from))
}

/// Runs the quickstart on `file`, or on a generated stand-in track.
pub fn run(file: Option<std::path::PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("lockerstore-quickstart-{}", std::process::id()));
    let store = Store::open(&dir, Options::default().mode(LicenseMode::SingleMaster))?;

    // A track from a file, or a generated stand-in.
    let generated = file.is_none();
    let path = match file {
        Some(p) => p,
        None => {
            let p = dir.with_extension("mp3");
            std::fs::write(&p, lockerstore::corpus::noise(1, "quickstart", 4_000_000))?;
            p
        }
    };
    let alice = UserId::new("alice")?;
    let key = TrackKey::new("Some Artist/Some Album/01 Song.mp3")?;
    let put = store.put(&alice, &key, std::fs::File::open(&path)?)?;
    println!(
        "stored {} bytes in {} chunks, fingerprint {}",
        put.len, put.chunks, put.fingerprint
    );

    // Seek into the middle and read 64 KiB: one binary search, at most one chunk decode.
    let mut track = store.open_track(&alice, &key)?;
    let middle = track.len() / 2;
    track.seek(SeekFrom::Start(middle))?;
    let mut buf = vec![0u8; 64 << 10];
    let n = track.read(&mut buf)?;
    let original = std::fs::read(&path)?;
    assert_eq!(&buf[..n], &original[middle as usize..middle as usize + n]);
    println!("read {n} bytes at offset {middle}: identical to the file");

    let s = store.stats()?;
    println!(
        "{} mode: {} tracks, {} logical bytes, {} physical bytes, dedup ratio {:.2}",
        s.mode, s.tracks, s.logical_bytes, s.physical_bytes, s.dedup_ratio
    );
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    if generated {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
