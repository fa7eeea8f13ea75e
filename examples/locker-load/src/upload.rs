//! `upload`: the same files through the server and through `Store::put`, alternating.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lockerstore::{LicenseMode, Options, Store, TrackKey, UserId};

use crate::server::{Server, add_user, cpu_seconds_of, fresh, track_url};
use crate::{Track, corpus, median};

#[derive(clap::Args)]
pub struct Args {
    /// The locker-server binary (a release build).
    #[arg(long)]
    server: PathBuf,
    /// The corpus: DIR/<user>/<key...>.
    #[arg(long)]
    corpus: PathBuf,
    /// Bytes of the corpus to upload per round, GB.
    #[arg(long, default_value_t = 1.0)]
    gb: f64,
    /// Uploads at once (HTTP connections; threads for Store::put).
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Rounds of each; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// License mode of the stores.
    #[arg(long, default_value = "per-user-copy")]
    mode: LicenseMode,
    /// Work directory (a temporary one by default).
    #[arg(long)]
    work: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Seconds and CPU seconds of putting every track with `Store::put` in this process.
fn direct(
    args: &Args,
    tracks: &[Track],
    bytes: &[bytes::Bytes],
    dir: &std::path::Path,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let store = Store::open(dir, Options::default().mode(args.mode))?;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let cpu = cpu_seconds_of("/proc/self/stat");
    std::thread::scope(|s| -> Result<(), lockerstore::Error> {
        let workers: Vec<_> = (0..args.jobs.max(1))
            .map(|_| {
                s.spawn(|| -> Result<(), lockerstore::Error> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(t) = tracks.get(i) else {
                            return Ok(());
                        };
                        store.put(
                            &UserId::new(&t.user)?,
                            &TrackKey::new(&t.key)?,
                            &bytes[i][..],
                        )?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a put thread panicked")?;
        }
        Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    Ok((secs, cpu_seconds_of("/proc/self/stat") - cpu))
}

/// Seconds, the server's CPU seconds and this client's CPU seconds of uploading every track.
async fn through_server(
    args: &Args,
    tracks: &[Track],
    bytes: &[bytes::Bytes],
    dir: &std::path::Path,
) -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
    let mode = args.mode.to_string();
    let mut keys = BTreeMap::new();
    for t in tracks {
        if !keys.contains_key(&t.user) {
            keys.insert(t.user.clone(), add_user(&args.server, dir, &t.user)?);
        }
    }
    let server = Server::start(&args.server, dir, &["--mode".into(), mode]).await?;
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let tracks = Arc::new(tracks.to_vec());
    let bytes = Arc::new(bytes.to_vec());
    let keys = Arc::new(keys);
    let started = Instant::now();
    let (server_cpu, client_cpu) = (server.cpu_seconds(), cpu_seconds_of("/proc/self/stat"));
    let mut tasks = Vec::new();
    for _ in 0..args.jobs.max(1) {
        let (http, next, tracks, bytes, keys, base) = (
            http.clone(),
            next.clone(),
            tracks.clone(),
            bytes.clone(),
            keys.clone(),
            server.base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(t) = tracks.get(i) else {
                    return Ok::<_, String>(());
                };
                let r = http
                    .put(track_url(&base, &t.key))
                    .bearer_auth(&keys[&t.user])
                    .body(bytes[i].clone())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() != 201 {
                    return Err(format!("{}: {}", t.key, r.status()));
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let server_cpu = server.cpu_seconds() - server_cpu;
    let client_cpu = cpu_seconds_of("/proc/self/stat") - client_cpu;
    server.stop()?;
    Ok((secs, server_cpu, client_cpu))
}

pub async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let work = args.work.clone().unwrap_or_else(|| tmp.path().to_owned());
    let tracks = corpus(&args.corpus, (args.gb * 1e9) as u64)?;
    // Both sides start from the same bytes in memory: the comparison is of the server against
    // the library call, not of two ways of reading files.
    let contents = tracks
        .iter()
        .map(|t| std::fs::read(&t.path).map(bytes::Bytes::from))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes: u64 = tracks.iter().map(|t| t.len).sum();
    let mb = bytes as f64 / 1e6;
    eprintln!(
        "{} tracks, {mb:.0} MB, {} jobs, {} rounds, mode {}",
        tracks.len(),
        args.jobs,
        args.rounds,
        args.mode
    );
    let (mut direct_rates, mut server_rates) = (Vec::new(), Vec::new());
    let (mut direct_cpu, mut server_cpu, mut client_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let gb = bytes as f64 / 1e9;
    for round in 0..args.rounds.max(1) {
        let dir = fresh(&work, "direct")?;
        let (secs, cpu) = tokio::task::block_in_place(|| direct(&args, &tracks, &contents, &dir))?;
        direct_rates.push(mb / secs);
        direct_cpu.push(cpu / gb);
        std::fs::remove_dir_all(&dir)?;
        let dir = fresh(&work, "server")?;
        let (secs, cpu, client) = through_server(&args, &tracks, &contents, &dir).await?;
        server_rates.push(mb / secs);
        server_cpu.push(cpu / gb);
        client_cpu.push(client / gb);
        std::fs::remove_dir_all(&dir)?;
        eprintln!(
            "round {round}: Store::put {:.1} MB/s, server {:.1} MB/s",
            direct_rates[round], server_rates[round]
        );
    }
    let d = median(&mut direct_rates);
    let s = median(&mut server_rates);
    let (dc, sc, cc) = (
        median(&mut direct_cpu),
        median(&mut server_cpu),
        median(&mut client_cpu),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "tracks": tracks.len(), "bytes": bytes, "jobs": args.jobs, "rounds": args.rounds,
                "mode": args.mode.to_string(),
                "store_put_mb_s": direct_rates, "server_mb_s": server_rates,
                "median_store_put_mb_s": d, "median_server_mb_s": s, "ratio": s / d,
                "cpu_s_per_gb": {"store_put": dc, "server": sc, "client": cc},
            })
        );
    } else {
        println!("Store::put  median {d:.1} MB/s");
        println!("server PUT  median {s:.1} MB/s");
        println!("ratio       {:.2}", s / d);
        println!("CPU s/GB    Store::put {dc:.2}, server {sc:.2} (its client {cc:.2} more)");
    }
    Ok(())
}
