//! `lockerstore bench`: the macro benchmark. Generates (or takes) a locker corpus on disk, then
//! measures in one run the machine's limits and the store against them, printing every figure as
//! MB/s and as a ratio against its baseline from the same run (see docs/PERFORMANCE.md).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fastcdc::v2020::{FastCDC, Normalization};
use lockerstore::corpus::{Corpus, CorpusSpec, SplitMix};
use lockerstore::{ChunkerParams, Error, LicenseMode, Options, Result, Store, TrackKey, UserId};
use serde_json::json;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Logical size of the generated corpus, GB.
    #[arg(long, default_value_t = 1.0)]
    size_gb: f64,
    /// Users in the generated corpus.
    #[arg(long, default_value_t = 40)]
    users: usize,
    /// Use this corpus (DIR/<user>/<key...>) instead of generating one.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Work directory (stores and the generated corpus); a temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Ingest threads.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Random seeks to time.
    #[arg(long, default_value_t = 2000)]
    seeks: usize,
    #[arg(long)]
    json: bool,
}

struct Track {
    user: UserId,
    key: TrackKey,
    path: PathBuf,
    len: u64,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn generate(dir: &Path, size_gb: f64, users: usize) -> Result<()> {
    // 3-10 MB tracks (6.5 MB mean), 8 per user, popular recordings held by many users.
    let per_user = 8;
    let uploads_wanted = ((size_gb * 1e9) / 6.5e6).ceil() as usize;
    let users = users.max(uploads_wanted.div_ceil(per_user));
    let spec = CorpusSpec {
        seed: 0xbe9c,
        users,
        recordings: (users * per_user / 5).max(per_user),
        album_size: 10,
        tracks_per_user: per_user,
        min_audio: 3_000_000,
        max_audio: 10_000_000,
    };
    let corpus = Corpus::generate(spec);
    for i in 0..corpus.uploads.len() {
        let up = &corpus.uploads[i];
        let path = dir.join(&up.user).join(&up.key);
        let parent = path.parent().expect("keys have a directory");
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        std::fs::write(&path, corpus.bytes(i)).map_err(io_err("write", &path))?;
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn list(root: &Path) -> Result<Vec<Track>> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut tracks = Vec::new();
    for path in files {
        let rel = path.strip_prefix(root).expect("below root");
        let mut parts = rel.components();
        let user = parts
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        let key = parts.as_path().to_str().unwrap_or("");
        let (Ok(user), Ok(key)) = (UserId::new(user), TrackKey::new(key)) else {
            continue;
        };
        let len = std::fs::metadata(&path)
            .map_err(io_err("stat", &path))?
            .len();
        tracks.push(Track {
            user,
            key,
            path,
            len,
        });
    }
    Ok(tracks)
}

/// Runs `f` over every track on `jobs` threads; returns the seconds it took.
fn parallel(tracks: &[Track], jobs: usize, f: impl Fn(&Track) -> Result<()> + Sync) -> Result<f64> {
    let started = Instant::now();
    crate::parallel(tracks.len(), jobs, |i| f(&tracks[i]))?;
    Ok(started.elapsed().as_secs_f64())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io_err("read", path))
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Figure {
    name: &'static str,
    mbs: f64,
    baseline: &'static str,
    baseline_mbs: f64,
    target: &'static str,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let (work, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("lockerstore-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work).map_err(io_err("create", &work))?;
    let outcome = run_in(args, &work);
    if temporary {
        let _ = std::fs::remove_dir_all(&work);
    }
    outcome
}

fn run_in(args: &BenchArgs, work: &Path) -> Result<()> {
    let corpus_dir = match &args.corpus {
        Some(d) => d.clone(),
        None => {
            let d = work.join("corpus");
            if !d.exists() {
                let started = Instant::now();
                generate(&d, args.size_gb, args.users)?;
                eprintln!(
                    "generated the corpus in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            d
        }
    };
    let tracks = list(&corpus_dir)?;
    let logical: u64 = tracks.iter().map(|t| t.len).sum();
    let mb = logical as f64 / 1e6;
    let users: std::collections::BTreeSet<_> = tracks.iter().map(|t| t.user.clone()).collect();
    eprintln!(
        "corpus: {} tracks of {} users, {mb:.1} MB",
        tracks.len(),
        users.len()
    );
    let params = ChunkerParams::default();

    // Warm the page cache so every phase reads the corpus from memory.
    parallel(&tracks, 2, |t| read_file(&t.path).map(|_| ()))?;

    // Baseline: 2-thread FastCDC + BLAKE3 over the same bytes.
    let secs = parallel(&tracks, 2, |t| {
        let data = read_file(&t.path)?;
        let cdc = FastCDC::with_level_and_seed(
            &data,
            params.min as usize,
            params.avg as usize,
            params.max as usize,
            Normalization::Level1,
            7,
        );
        for c in cdc {
            std::hint::black_box(blake3::hash(&data[c.offset..c.offset + c.length]));
        }
        Ok(())
    })?;
    let cdc_blake3 = mb / secs;
    // Baseline: one-thread BLAKE3.
    let secs = parallel(&tracks, 1, |t| {
        std::hint::black_box(blake3::hash(&read_file(&t.path)?));
        Ok(())
    })?;
    let blake3_1 = mb / secs;
    // Baseline: sequential write of the same bytes, fdatasync per track.
    let scratch = work.join("fdatasync-baseline");
    let secs = {
        let mut f = std::fs::File::create(&scratch).map_err(io_err("create", &scratch))?;
        let started = Instant::now();
        for t in &tracks {
            f.write_all(&read_file(&t.path)?)
                .map_err(io_err("write", &scratch))?;
            f.sync_data().map_err(io_err("sync", &scratch))?;
        }
        started.elapsed().as_secs_f64()
    };
    let _ = std::fs::remove_file(&scratch);
    let fdatasync = mb / secs;

    // The store, both modes.
    let mut stores = Vec::new();
    let mut ingest = Vec::new();
    for mode in [LicenseMode::SingleMaster, LicenseMode::PerUserCopy] {
        let dir = work.join(format!("store-{mode}"));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, Options::default().mode(mode))?;
        let secs = parallel(&tracks, args.jobs, |t| {
            let f = std::fs::File::open(&t.path).map_err(io_err("open", &t.path))?;
            store.put(
                &t.user,
                &t.key,
                std::io::BufReader::with_capacity(1 << 20, f),
            )?;
            Ok(())
        })?;
        ingest.push(mb / secs);
        stores.push(store);
    }
    let single = &stores[0];
    let stats = single.stats()?;
    // Re-ingest under new keys: every chunk a dedup hit, every put a real commit.
    let secs = parallel(&tracks, args.jobs, |t| {
        let f = std::fs::File::open(&t.path).map_err(io_err("open", &t.path))?;
        let key = TrackKey::new(&format!("again/{}", t.key))?;
        single.put(&t.user, &key, std::io::BufReader::with_capacity(1 << 20, f))?;
        Ok(())
    })?;
    let reingest = mb / secs;
    // Sequential verified read, one thread.
    let secs = parallel(&tracks, 1, |t| {
        let mut r = single.open_track(&t.user, &t.key)?;
        std::io::copy(&mut r, &mut std::io::sink()).map_err(Error::from_io)?;
        Ok(())
    })?;
    let read = mb / secs;
    // Random seek + 64 KiB read in open tracks, against one chunk decode (BLAKE3 of one
    // average chunk).
    let mut rng = SplitMix::new(3);
    let mut buf = vec![0u8; 64 << 10];
    let mut readers: Vec<_> = tracks
        .iter()
        .map(|t| single.open_track(&t.user, &t.key))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    for _ in 0..args.seeks {
        let i = rng.range(0, tracks.len());
        let (t, r) = (&tracks[i], &mut readers[i]);
        let at = rng.range(0, (t.len as usize).saturating_sub(buf.len()).max(1));
        r.seek(SeekFrom::Start(at as u64)).map_err(Error::from_io)?;
        let n = (t.len as usize - at).min(buf.len());
        r.read_exact(&mut buf[..n]).map_err(Error::from_io)?;
    }
    let seek_us = started.elapsed().as_secs_f64() * 1e6 / args.seeks.max(1) as f64;
    let chunk = lockerstore::corpus::noise(1, "one chunk", params.avg as usize);
    let started = Instant::now();
    for _ in 0..200 {
        std::hint::black_box(blake3::hash(std::hint::black_box(&chunk)));
    }
    let decode_us = started.elapsed().as_secs_f64() * 1e6 / 200.0;
    let meta_bytes = std::fs::metadata(work.join("store-single-master/meta.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    let rss = peak_rss_mb();

    let single_limit = cdc_blake3.min(fdatasync * stats.dedup_ratio);
    let figures = [
        Figure {
            name: "ingest, single-master, durable",
            mbs: ingest[0],
            baseline: "min(2-thread FastCDC+BLAKE3, fdatasync x dedup)",
            baseline_mbs: single_limit,
            target: ">= 70 %",
        },
        Figure {
            name: "ingest, per-user-copy, durable",
            mbs: ingest[1],
            baseline: "sequential write + fdatasync",
            baseline_mbs: fdatasync,
            target: ">= 80 %",
        },
        Figure {
            name: "re-ingest (all dedup hits)",
            mbs: reingest,
            baseline: "2-thread FastCDC+BLAKE3",
            baseline_mbs: cdc_blake3,
            target: ">= 80 %",
        },
        Figure {
            name: "sequential read, verified",
            mbs: read,
            baseline: "1-thread BLAKE3",
            baseline_mbs: blake3_1,
            target: ">= 60 %",
        },
    ];
    if args.json {
        let v: Vec<_> = figures
            .iter()
            .map(|f| {
                json!({"name": f.name, "mb_per_s": f.mbs, "baseline": f.baseline,
                       "baseline_mb_per_s": f.baseline_mbs, "ratio": f.mbs / f.baseline_mbs,
                       "target": f.target})
            })
            .collect();
        outln!(
            "{}",
            json!({
                "logical_bytes": logical, "tracks": tracks.len(), "users": users.len(),
                "dedup_ratio": stats.dedup_ratio, "figures": v,
                "seek_64k_us": seek_us, "one_chunk_decode_us": decode_us,
                "seek_in_chunk_decodes": seek_us / decode_us,
                "metadata_bytes": meta_bytes, "physical_bytes": stats.physical_bytes,
                "peak_rss_mb": rss,
                "baselines": {"fastcdc_blake3_2t": cdc_blake3, "blake3_1t": blake3_1, "fdatasync_write": fdatasync},
            })
        );
        return Ok(());
    }
    outln!(
        "corpus: {} tracks, {} users, {mb:.1} MB logical; single-master dedup ratio {:.2}",
        tracks.len(),
        users.len(),
        stats.dedup_ratio
    );
    outln!(
        "baselines: 2-thread FastCDC+BLAKE3 {cdc_blake3:.0} MB/s, 1-thread BLAKE3 {blake3_1:.0} MB/s, \
         write+fdatasync {fdatasync:.0} MB/s"
    );
    outln!();
    outln!(
        "{:<32} {:>9} {:>9} {:>8} {:>8}  baseline",
        "what",
        "MB/s",
        "base MB/s",
        "ratio",
        "target"
    );
    for f in &figures {
        outln!(
            "{:<32} {:>9.0} {:>9.0} {:>7.0}% {:>8}  {}",
            f.name,
            f.mbs,
            f.baseline_mbs,
            100.0 * f.mbs / f.baseline_mbs,
            f.target,
            f.baseline
        );
    }
    outln!(
        "{:<32} {:>9.1} us per op = {:.2} chunk decodes ({decode_us:.1} us each; target <= 2)",
        "seek + 64 KiB read",
        seek_us,
        seek_us / decode_us
    );
    outln!(
        "metadata {:.2} % of physical bytes (target <= 1 %); peak RSS {rss:.0} MB",
        100.0 * meta_bytes as f64 / stats.physical_bytes.max(1) as f64
    );
    Ok(())
}
