//! `lockerstore import DIR`: every file under DIR/<user>/... becomes a track of <user>, keyed by
//! its path below DIR/<user>/. Files are ingested by `jobs` threads fed through a bounded channel.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use lockerstore::{Error, Result, Store, TrackKey, UserId};

struct Job {
    user: UserId,
    key: TrackKey,
    path: PathBuf,
    len: u64,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
        op: "list",
        path: dir.to_owned(),
        source: e,
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let ft = std::fs::symlink_metadata(&p).map_err(|e| Error::Io {
            op: "stat",
            path: p.clone(),
            source: e,
        })?;
        if ft.is_dir() {
            walk(&p, out)?;
        } else if ft.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn plan(root: &Path) -> Result<(Vec<Job>, Vec<String>)> {
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    let users = std::fs::read_dir(root).map_err(|e| Error::Io {
        op: "list",
        path: root.to_owned(),
        source: e,
    })?;
    let mut user_dirs: Vec<PathBuf> = users
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    user_dirs.sort();
    for udir in user_dirs {
        let name = udir.file_name().expect("read_dir entries have names");
        let user = match UserId::from_bytes(std::os::unix::ffi::OsStrExt::as_bytes(name)) {
            Ok(u) => u,
            Err(e) => {
                skipped.push(format!("{}: {e}", udir.display()));
                continue;
            }
        };
        let mut files = Vec::new();
        walk(&udir, &mut files)?;
        for path in files {
            let rel = path.strip_prefix(&udir).expect("walked below udir");
            let key = rel
                .to_str()
                .ok_or(Error::InvalidKey("not UTF-8"))
                .and_then(TrackKey::new);
            match key {
                Ok(key) => {
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    jobs.push(Job {
                        user: user.clone(),
                        key,
                        path,
                        len,
                    });
                }
                Err(e) => skipped.push(format!("{}: {e}", path.display())),
            }
        }
    }
    Ok((jobs, skipped))
}

/// Imports the tree; returns the number of files that failed (each is printed to stderr).
pub fn run(store: &Store, root: &Path, jobs: usize) -> Result<usize> {
    let (work, mut failures) = plan(root)?;
    let total: u64 = work.iter().map(|j| j.len).sum();
    let bar = if std::env::var_os("CI").is_some() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let (tx, rx) = crossbeam::channel::bounded::<Job>(jobs * 2);
    let errors = Mutex::new(Vec::new());
    let done = Mutex::new((0u64, 0u64));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let rx = rx.clone();
            let (bar, errors, done) = (&bar, &errors, &done);
            s.spawn(move || {
                for job in rx {
                    let outcome = std::fs::File::open(&job.path)
                        .map_err(|e| Error::Upload { read: 0, source: e })
                        .and_then(|f| {
                            store.put(
                                &job.user,
                                &job.key,
                                std::io::BufReader::with_capacity(1 << 20, f),
                            )
                        });
                    match outcome {
                        Ok(out) => {
                            let mut d = done.lock().expect("counter lock");
                            d.0 += 1;
                            d.1 += out.len;
                            bar.inc(out.len);
                        }
                        Err(e) => errors
                            .lock()
                            .expect("error lock")
                            .push(format!("{}: {e}", job.path.display())),
                    }
                }
            });
        }
        for job in work {
            if tx.send(job).is_err() {
                break;
            }
        }
        drop(tx);
    });
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let (files, bytes) = *done.lock().expect("counter lock");
    failures.extend(errors.into_inner().expect("error lock"));
    outln!(
        "imported {files} files, {:.1} MB logical in {secs:.2} s: {:.1} MB/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs.max(1e-9)
    );
    for f in &failures {
        eprintln!("failed: {f}");
    }
    Ok(failures.len())
}
