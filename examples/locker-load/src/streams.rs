//! `streams`: listeners at playback pace with random seeks, beside uploaders.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lockerstore::LicenseMode;

use crate::server::{Server, add_user, file_body, fresh, track_url};
use crate::{Rng, Track, corpus};

#[derive(clap::Args)]
pub struct Args {
    /// The locker-server binary (a release build).
    #[arg(long)]
    server: PathBuf,
    /// The corpus: DIR/<user>/<key...>.
    #[arg(long)]
    corpus: PathBuf,
    /// Bytes of the corpus the listeners play from, GB.
    #[arg(long, default_value_t = 0.3)]
    library_gb: f64,
    /// Concurrent listeners.
    #[arg(long, default_value_t = 200)]
    streams: usize,
    /// Concurrent uploaders (each uploads corpus files in a loop under new keys).
    #[arg(long, default_value_t = 4)]
    uploads: usize,
    /// Length of the run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Playback pace, kbit/s (320 is the highest MP3 bit rate).
    #[arg(long, default_value_t = 320)]
    kbps: u64,
    /// Mean seconds between a listener's seeks (each seek waits 0.5x to 1.5x of it).
    #[arg(long, default_value_t = 5.0)]
    seek_every: f64,
    /// License mode of the store.
    #[arg(long, default_value = "per-user-copy")]
    mode: LicenseMode,
    #[arg(long)]
    work: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct ListenerReport {
    first_byte: Vec<Duration>,
    failed: Vec<String>,
    bytes: u64,
}

/// What every listener shares.
#[derive(Clone)]
struct Listening {
    http: reqwest::Client,
    base: String,
    key: String,
    library: Arc<Vec<Track>>,
    /// Bytes per second.
    pace: f64,
    seek_every: f64,
    until: Instant,
}

/// One listener: seek (a new ranged GET), time the first byte, play at pace, seek again.
async fn listen(l: Listening, seed: u64) -> ListenerReport {
    let Listening {
        http,
        base,
        key,
        library,
        pace,
        seek_every,
        until,
    } = l;
    let mut rng = Rng::new(seed);
    let mut report = ListenerReport::default();
    // Listeners start spread over the first seek interval, as real ones would.
    let stagger = Duration::from_secs_f64(seek_every * (rng.below(1000) as f64 / 1000.0));
    tokio::time::sleep(stagger).await;
    while Instant::now() < until {
        let t = &library[rng.below(library.len() as u64) as usize];
        let offset = rng.below(t.len);
        let hold = Duration::from_secs_f64(seek_every * (0.5 + rng.below(1000) as f64 / 1000.0));
        let asked = Instant::now();
        let response = http
            .get(track_url(&base, &library_key(t)))
            .bearer_auth(&key)
            .header("range", format!("bytes={offset}-"))
            .send()
            .await;
        let response = match response {
            Ok(r) if r.status() == 206 => r,
            Ok(r) => {
                report.failed.push(format!("status {}", r.status()));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                report.failed.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut body = response.bytes_stream();
        let mut played = 0u64;
        let mut first = true;
        while let Some(piece) = body.next().await {
            match piece {
                Ok(bytes) => {
                    if first {
                        report.first_byte.push(asked.elapsed());
                        first = false;
                    }
                    played += bytes.len() as u64;
                    // Playback pace: a player's buffer holds what it fetched ahead, so the
                    // client reads no faster than `pace` (after the first piece).
                    let due = asked + Duration::from_secs_f64(played as f64 / pace);
                    let now = Instant::now();
                    if now >= asked + hold || now >= until {
                        break;
                    }
                    if due > now {
                        tokio::time::sleep((due - now).min(asked + hold - now)).await;
                    }
                }
                Err(e) => {
                    report.failed.push(format!("body: {e}"));
                    break;
                }
            }
        }
        report.bytes += played;
        // A whole track played before the hold ended: the next seek comes now.
    }
    report
}

/// The listener's key for a corpus track: the corpus user's name in front, so two users' files
/// of the same name stay two tracks.
fn library_key(t: &Track) -> String {
    format!("{}/{}", t.user, t.key)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let work = args.work.clone().unwrap_or_else(|| tmp.path().to_owned());
    let all = corpus(&args.corpus, u64::MAX)?;
    let library_bytes = (args.library_gb * 1e9) as u64;
    let mut library = Vec::new();
    let mut total = 0;
    for t in &all {
        if total >= library_bytes {
            break;
        }
        total += t.len;
        library.push(t.clone());
    }
    let dir = fresh(&work, "streams")?;
    let listener_key = add_user(&args.server, &dir, "listener")?;
    let uploader_key = add_user(&args.server, &dir, "uploader")?;
    let server = Server::start(
        &args.server,
        &dir,
        &["--mode".into(), args.mode.to_string()],
    )
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    eprintln!(
        "filling the library: {} tracks, {:.0} MB",
        library.len(),
        total as f64 / 1e6
    );
    for t in &library {
        let r = http
            .put(track_url(&server.base, &library_key(t)))
            .bearer_auth(&listener_key)
            .body(file_body(&t.path).await?)
            .send()
            .await?;
        if r.status() != 201 {
            return Err(format!("filling {}: {}", t.key, r.status()).into());
        }
    }
    let library = Arc::new(library);
    let all = Arc::new(all);
    eprintln!(
        "{} listeners at {} kbit/s seeking every ~{} s, {} uploaders, {} s",
        args.streams, args.kbps, args.seek_every, args.uploads, args.seconds
    );
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let pace = args.kbps as f64 * 1000.0 / 8.0;
    let listening = Listening {
        http: http.clone(),
        base: server.base.clone(),
        key: listener_key.clone(),
        library: library.clone(),
        pace,
        seek_every: args.seek_every,
        until,
    };
    let listeners: Vec<_> = (0..args.streams)
        .map(|i| tokio::spawn(listen(listening.clone(), 0x5eed ^ ((i as u64) << 20))))
        .collect();
    let uploaders: Vec<_> = (0..args.uploads)
        .map(|u| {
            tokio::spawn(upload_loop(
                http.clone(),
                server.base.clone(),
                uploader_key.clone(),
                all.clone(),
                u,
                args.uploads,
                until,
            ))
        })
        .collect();
    let mut first_byte = Vec::new();
    let mut failed = Vec::new();
    let mut streamed = 0u64;
    for l in listeners {
        let r = l.await?;
        first_byte.extend(r.first_byte);
        failed.extend(r.failed);
        streamed += r.bytes;
    }
    let (mut uploaded, mut upload_count) = (0u64, 0u64);
    for u in uploaders {
        let (bytes, count, errors) = u.await?;
        uploaded += bytes;
        upload_count += count;
        failed.extend(errors);
    }
    let secs = started.elapsed().as_secs_f64();
    server.stop()?;
    first_byte.sort();
    let (p50, p90, p99) = (
        percentile(&first_byte, 0.5),
        percentile(&first_byte, 0.9),
        percentile(&first_byte, 0.99),
    );
    let max = first_byte
        .last()
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "streams": args.streams, "uploads": args.uploads, "seconds": secs,
                "kbps": args.kbps, "seeks": first_byte.len(),
                "first_byte_ms": {"p50": p50, "p90": p90, "p99": p99, "max": max},
                "failed": failed.len(), "failures": failed.iter().take(20).collect::<Vec<_>>(),
                "streamed_mb": streamed as f64 / 1e6,
                "uploaded_tracks": upload_count, "upload_mb_s": uploaded as f64 / 1e6 / secs,
            })
        );
    } else {
        println!("seeks (ranged GETs)   {}", first_byte.len());
        println!("first byte p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
        println!("failed requests       {}", failed.len());
        for f in failed.iter().take(10) {
            println!("  {f}");
        }
        println!("streamed              {:.0} MB", streamed as f64 / 1e6);
        println!(
            "uploads               {upload_count} tracks, {:.1} MB/s",
            uploaded as f64 / 1e6 / secs
        );
    }
    Ok(())
}

/// One uploader: corpus files in a loop, each under a new key, until the run ends.
async fn upload_loop(
    http: reqwest::Client,
    base: String,
    key: String,
    all: Arc<Vec<Track>>,
    first: usize,
    step: usize,
    until: Instant,
) -> (u64, u64, Vec<String>) {
    let (mut bytes, mut count, mut failed) = (0u64, 0u64, Vec::new());
    let mut i = first;
    while Instant::now() < until {
        let t = &all[i % all.len()];
        let name = format!("up{first}/{i}/{}", t.key);
        i += step;
        let body = match file_body(&t.path).await {
            Ok(b) => b,
            Err(e) => {
                failed.push(format!("upload: {e}"));
                continue;
            }
        };
        match http
            .put(track_url(&base, &name))
            .bearer_auth(&key)
            .header("content-length", t.len)
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status() == 201 => {
                bytes += t.len;
                count += 1;
            }
            Ok(r) => failed.push(format!("upload: status {}", r.status())),
            Err(e) => failed.push(format!("upload: {e}")),
        }
    }
    (bytes, count, failed)
}
