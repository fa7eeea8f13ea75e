//! `locker-server --store DIR demo [--music DIR]`: the quick start in one command. Creates the
//! user `demo` (once), imports every music file under DIR (by default the real music files in
//! the repository's tests/fixtures) into its locker through the same path an upload takes, prints
//! how to connect, then serves.

use std::path::{Path, PathBuf};

use lockerstore::{Store, TrackKey, UserId};

use crate::admin::{Admin, NewUser};
use crate::app::App;

/// The music files the repository ships (real encoder output, a few seconds each).
pub fn default_music() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn music_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if e.file_type()?.is_dir() {
            music_files(&p, out)?;
        } else if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("mp3" | "flac" | "m4a" | "mp4" | "ogg" | "opus")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// Creates `demo` if it does not exist and imports `music`; prints the credentials when new.
pub fn prepare(app: &App, music: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let user = UserId::new("demo")?;
    let admin = Admin {
        store: &app.store,
        accounts: &app.accounts,
    };
    if !app.accounts.users().iter().any(|u| u == "demo") {
        let issued = admin.add_user(&NewUser {
            name: "demo".into(),
            max_bytes: None,
            max_tracks: None,
        })?;
        println!("user demo created (shown once):");
        println!("  api key           {}", issued.api_key);
        println!("  subsonic password {}", issued.subsonic_password);
    }
    let mut files = Vec::new();
    music_files(music, &mut files)?;
    let mut imported = 0;
    for path in &files {
        let rel = path.strip_prefix(music).unwrap_or(path);
        let key = TrackKey::new(&rel.to_string_lossy())?;
        if app.store.track_info(&user, &key).is_ok() {
            continue;
        }
        app.store.put(&user, &key, std::fs::File::open(path)?)?;
        app.stored(&user, &key);
        imported += 1;
    }
    println!(
        "{imported} tracks imported from {} ({} there)",
        music.display(),
        files.len()
    );
    Ok(())
}

/// Says how to connect.
pub fn greet(listen: std::net::SocketAddr, store: &Store) {
    println!("serving {} on http://{listen}", store.dir().display());
    println!("  upload API   curl -H 'Authorization: Bearer KEY' http://{listen}/api/v1/tracks");
    println!("  Subsonic     server http://{listen}, user demo, the subsonic password above");
}
