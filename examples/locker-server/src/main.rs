//! locker-server: a music-locker server on lockerstore (see README.md).
//!
//! ```text
//! locker-server --store DIR [--listen ADDR] [--mode MODE]          serve (default 127.0.0.1:4533)
//!               [--metrics-listen ADDR]                            Prometheus /metrics
//!               [--max-connections N] [--header-timeout S] [--idle-timeout S]
//!               [--upload-expiry 24h] [--upload-max-size 4GiB]     resumable uploads (tus)
//!               [--subsonic-auth all|api-key-only]                 credentials /rest/ takes
//!               [--session-idle 30m] [--session-lifetime 12h]      the web pages' sessions
//!               [--secure-cookies] [--web-dir DIR]
//! locker-server --store DIR demo [--music DIR]                     the quick start
//! locker-server --store DIR user add NAME [--quota 5GB] [--tracks N] [--json]
//! locker-server --store DIR user list [--json]
//! locker-server --store DIR user quota NAME [--bytes 5GB|none] [--tracks N|none] [--json]
//! locker-server --store DIR user revoke-key NAME [--json]
//! locker-server --store DIR operator add NAME [--json]             a key for /admin
//! locker-server --store DIR operator revoke-key NAME [--json]
//! locker-server --store DIR license set HOLDER shared|per-user [--until UNIX_SECONDS] [--json]
//! locker-server --store DIR license unset HOLDER [--json]
//! locker-server --store DIR license list [--json]
//! locker-server --store DIR holders [--json]                     savings and audit per holder
//!
//! Many nodes on one store (metadata in PostgreSQL, packs in a bucket):
//! locker-server --meta URL [--packs s3://B/P ...] [--store NODE_DIR] user add NAME ...
//! locker-server --meta URL [--packs s3://B/P ...] --store NODE_DIR --listen ADDR serve
//! ```

mod accounts;
mod admin;
mod api;
mod app;
mod auth;
mod avoid;
mod catalog;
mod demo;
mod http;
mod jobs;
mod library_api;
mod metrics;
mod pg;
mod serve;
mod session;
mod state;
mod state_file;
mod subsonic;
mod tus;
mod users_cli;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lockerstore::{LicenseMode, Options, Store};

#[derive(Parser)]
#[command(name = "locker-server", about = "A music-locker server on lockerstore")]
struct Cli {
    /// The store directory (created if missing). With `--meta`: this node's own directory
    /// (its open packs, cache, catalogue cache and unfinished uploads); optional for the
    /// account and licence commands.
    #[arg(long, required_unless_present = "meta")]
    store: Option<PathBuf>,
    /// Keep the store's metadata, and the server's own shared state (accounts, stars and
    /// playlists, web sessions), in this PostgreSQL database
    /// (`postgres://user:password@host/db`): many nodes, each with its own `--store`, then
    /// serve one store. Its packs belong in a bucket (`--packs`, or the store's own).
    #[arg(long)]
    meta: Option<String>,
    /// With `--meta`: most connections to PostgreSQL, for the store and for the server each.
    #[arg(long, default_value_t = 16)]
    meta_connections: u32,
    /// With `--meta`: the longest an upload's put may take before it fails (other nodes' GC
    /// keeps what it deduplicated against for twice this long).
    #[arg(long, value_parser = duration_arg)]
    ingest_time_limit: Option<Duration>,
    /// With `--meta`: how long the maintenance lease (GC, migration) lasts unless renewed.
    #[arg(long, value_parser = duration_arg)]
    lease_ttl: Option<Duration>,
    /// With `--meta`: how long a user's catalogue, checked against the store (where other
    /// nodes store tracks too), is trusted before the next check (0: every read).
    #[arg(long, default_value = "0", value_parser = duration_or_zero)]
    catalog_recheck: Duration,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4533")]
    listen: SocketAddr,
    /// Where to serve Prometheus `/metrics` (for example 127.0.0.1:9533); not served when
    /// unset. Apart from the API's address because the store's figures are for the operator:
    /// in single-master mode, physical bytes that do not grow tell an uploader that someone
    /// else holds the recording.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Most connections open at once (more wait in the kernel's backlog).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds without a byte moving either way after which a connection is closed.
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
    /// Seconds a client has to send a request's head.
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// License mode of a new store.
    #[arg(long, default_value = "per-user-copy")]
    mode: LicenseMode,
    /// Keep a new store's packs in an S3-compatible bucket (`s3://bucket/prefix`), as
    /// `lockerstore init --packs` does; credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY. An existing store keeps where its packs live.
    #[arg(long)]
    packs: Option<String>,
    /// The S3-compatible server of `--packs` (`http://127.0.0.1:8333`).
    #[arg(long, requires = "packs")]
    endpoint: Option<String>,
    /// The bucket's region.
    #[arg(long, requires = "packs")]
    region: Option<String>,
    /// Allow plain HTTP to the endpoint (loopback servers).
    #[arg(long, requires = "packs")]
    allow_http: bool,
    /// Most bytes of packs cached on local disk, for a store whose packs live in a bucket.
    #[arg(long, default_value = "1GiB", value_parser = users_cli::bytes_arg)]
    cache_bytes: u64,
    /// For packs in a bucket: how long a deleted pack's object stays there (other nodes may
    /// still read it); longer than any upload (90s, 30m, 6h, 7d).
    #[arg(long, default_value = "6h", value_parser = duration_arg)]
    deletion_grace: Duration,
    /// For packs in a bucket: acknowledge uploads once in the bucket (`bucket`), or once
    /// durable on local disk with the uploads behind (`local-disk`: losing this disk loses
    /// what was not uploaded yet).
    #[arg(long, value_enum, default_value_t = Durability::Bucket)]
    pack_durability: Durability,
    /// A resumable upload not touched for this long is removed (90s, 30m, 24h, 7d).
    #[arg(long, default_value = "24h", value_parser = duration_arg)]
    upload_expiry: Duration,
    /// Most bytes of one resumable upload (tus `Tus-Max-Size`).
    #[arg(long, default_value = "4GiB", value_parser = users_cli::bytes_arg)]
    upload_max_size: u64,
    /// Which credentials the Subsonic API (/rest/) takes: `all` (API keys, tokens, passwords)
    /// or `api-key-only`.
    #[arg(long, value_enum, default_value_t = subsonic::AuthModes::All)]
    subsonic_auth: subsonic::AuthModes,
    /// A web page's session unused this long ends (90s, 30m, 24h, 7d).
    #[arg(long, default_value = "30m", value_parser = duration_arg)]
    session_idle: Duration,
    /// A web page's session ends this long after its sign-in, used or not.
    #[arg(long, default_value = "12h", value_parser = duration_arg)]
    session_lifetime: Duration,
    /// Mark session cookies `Secure` (sent over HTTPS only): set it when a TLS proxy is in
    /// front of the server.
    #[arg(long)]
    secure_cookies: bool,
    /// Serve the web pages from this directory (`examples/locker-server/web`) instead of the
    /// copies compiled in: for working on the pages.
    #[arg(long)]
    web_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// The quick start: create the user `demo`, import music into its locker, serve.
    Demo {
        /// Music to import (every .mp3/.flac/.m4a/.ogg/.opus below it); the repository's
        /// real music fixtures by default.
        #[arg(long)]
        music: Option<PathBuf>,
    },
    /// Accounts.
    #[command(subcommand)]
    User(users_cli::UserCommand),
    /// Operators: who may use /admin and /api/v1/admin.
    #[command(subcommand)]
    Operator(users_cli::OperatorCommand),
    /// Licences per rights holder (which labels' tracks share one copy).
    #[command(subcommand)]
    License(users_cli::LicenseCommand),
    /// Per rights holder: its licence, what changing it would save or cost, its audit verdict.
    Holders {
        #[arg(long)]
        json: bool,
    },
}

/// Parses a duration: a number with a unit `s`, `m`, `h` or `d` (a bare number is seconds).
fn duration_arg(s: &str) -> Result<Duration, String> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration {s:?}: use s, m, h or d")),
    };
    n.checked_mul(secs)
        .filter(|&t| t > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {s:?}"))
}

/// A duration as [`duration_arg`] takes it, or `0`.
fn duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim_end_matches(['s', 'm', 'h', 'd']) == "0" {
        return Ok(Duration::ZERO);
    }
    duration_arg(s)
}

/// `--pack-durability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Durability {
    Bucket,
    LocalDisk,
}

/// How the store opens: the mode and pack location a new store gets, the cache's bound.
fn store_options(cli: &Cli) -> Options {
    let mut options = Options::default()
        .mode(cli.mode)
        .cache_bytes(cli.cache_bytes)
        .deletion_grace(cli.deletion_grace)
        .pack_durability(match cli.pack_durability {
            Durability::Bucket => lockerstore::PackDurability::Bucket,
            Durability::LocalDisk => lockerstore::PackDurability::LocalDisk,
        });
    if let Some(url) = &cli.packs {
        let mut location = lockerstore::ObjectLocation::new(url.clone()).allow_http(cli.allow_http);
        if let Some(e) = &cli.endpoint {
            location = location.endpoint(e.clone());
        }
        if let Some(r) = &cli.region {
            location = location.region(r.clone());
        }
        options = options.object_packs(location);
    }
    if let Some(url) = &cli.meta {
        options = options
            .postgres(url.clone())
            .meta_connections(cli.meta_connections);
        if let Some(t) = cli.ingest_time_limit {
            options = options.ingest_time_limit(t);
        }
        if let Some(t) = cli.lease_ttl {
            options = options.lease_ttl(t);
        }
    }
    options
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    let options = store_options(&cli);
    let place = users_cli::Place {
        store_dir: cli.store.clone(),
        options: options.clone(),
        meta: cli.meta.clone(),
    };
    let command = cli.command.take().unwrap_or(Command::Serve);
    let command = match command {
        Command::User(cmd) => return users_cli::run(cmd, &place),
        Command::Operator(cmd) => return users_cli::run_operator(cmd, &place),
        Command::License(cmd) => return users_cli::run_license(cmd, &place),
        Command::Holders { json } => return users_cli::run_holders(json, &place),
        other => other,
    };
    let Some(store_dir) = cli.store.clone() else {
        return Err("serving needs --store DIR (with --meta: this node's own directory)".into());
    };
    let store = Store::open(&store_dir, options)?;
    let state_dir = store_dir.join("server");
    // The seam: where the state every node must see lives (state.rs).
    let backend = match &cli.meta {
        Some(url) => {
            state::Backend::Postgres(Arc::new(pg::Pg::connect(url, cli.meta_connections)?))
        }
        None => state::Backend::Files(state_dir.clone()),
    };
    let accounts = Arc::new(accounts::Accounts::open_in(&backend)?);
    let uploads = tus::Uploads::open(
        &state_dir.join("uploads"),
        tus::Limits {
            expiry: cli.upload_expiry,
            max_size: cli.upload_max_size,
            max_open_per_user: 64,
            max_finished_per_user: 256,
        },
    )?;
    let users = accounts.users();
    // The store is the source of truth: each catalogue is checked against it (and rebuilt
    // where it differs) before the first request.
    let mut catalog = catalog::Catalog::open(&state_dir, &store, &users)?;
    if backend.shared() {
        // Other nodes store and delete tracks too: check before answering.
        catalog = catalog.recheck(cli.catalog_recheck);
    }
    let catalog = Arc::new(catalog);
    let user_data = Arc::new(subsonic::userdata::UserDataStore::open_in(
        &backend, &users,
    )?);
    let app = app::App {
        store,
        accounts,
        state_dir,
        uploads: Arc::new(uploads),
        challenges: Arc::default(),
        catalog,
        user_data,
        subsonic_auth: cli.subsonic_auth,
        sessions: Arc::new(session::Sessions::open_in(
            &backend,
            session::SessionLimits {
                idle: cli.session_idle,
                lifetime: cli.session_lifetime,
                secure_cookies: cli.secure_cookies,
            },
        )),
        jobs: Arc::default(),
        pages: web::Pages { dir: cli.web_dir },
    };
    if let Command::Demo { music } = command {
        demo::prepare(&app, &music.unwrap_or_else(demo::default_music))?;
        demo::greet(cli.listen, &app.store);
    }
    let limits = serve::Limits {
        max_connections: cli.max_connections.max(1),
        header_read_timeout: std::time::Duration::from_secs(cli.header_timeout.max(1)),
        idle_timeout: std::time::Duration::from_secs(cli.idle_timeout.max(1)),
        ..serve::Limits::default()
    };
    tokio::runtime::Runtime::new()?.block_on(serve(cli.listen, cli.metrics_listen, app, limits))?;
    Ok(())
}

async fn serve(
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    app: app::App,
    limits: serve::Limits,
) -> std::io::Result<()> {
    // Uploads whose last byte arrived before a stop but whose put had not committed are
    // finished first, so a client asking about them finds them stored.
    let pending = app.clone();
    tokio::task::spawn_blocking(move || tus::finish_pending(&pending))
        .await
        .map_err(std::io::Error::other)?;
    tus::spawn_sweeper(app.clone());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, state = %app.state_dir.display(), "listening");
    // SIGINT or SIGTERM: stop accepting, let requests in flight finish (an upload either
    // commits or, cut off, stores nothing), then close the store.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let metrics = match metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            let router = app::metrics_router(app.clone());
            Some(tokio::spawn(serve::serve(
                listener,
                router,
                limits,
                stopped(),
            )))
        }
        None => None,
    };
    // The admin socket: account commands while the server holds the store (admin.rs).
    let admin_listener = admin::bind(&app.state_dir)?;
    let admin_router = admin::socket_routes().with_state(app.clone());
    let admin_stop = stopped();
    let admin = tokio::spawn(async move {
        axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(admin_stop)
            .await
    });
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = stopping.send(true);
    });
    let jobs = app.jobs.clone();
    serve::serve(listener, app::router(app), limits, stopped()).await?;
    if let Some(job) = jobs.list().into_iter().find(|j| j.state == "running") {
        // GC and migration are crash-safe; a migration finishes when run again.
        tracing::warn!(
            job = job.id,
            kind = job.kind,
            "stopping with a job running: it ends unfinished"
        );
    }
    admin.await.map_err(std::io::Error::other)??;
    if let Some(metrics) = metrics {
        metrics.await.map_err(std::io::Error::other)??;
    }
    Ok(())
}
