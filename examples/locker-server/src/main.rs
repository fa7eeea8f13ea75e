//! locker-server: a music-locker server on lockerstore (work in progress; see README.md).
//!
//! ```text
//! locker-server --store DIR [--listen ADDR] [--mode MODE]          serve (default 127.0.0.1:4533)
//! locker-server --store DIR user add NAME [--quota 5GB] [--tracks N] [--json]
//! locker-server --store DIR user list [--json]
//! locker-server --store DIR user quota NAME [--bytes 5GB|none] [--tracks N|none] [--json]
//! locker-server --store DIR user revoke-key NAME [--json]
//! ```

mod accounts;
mod admin;
mod api;
mod app;
mod demo;
mod http;
mod metrics;
mod serve;
mod users_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lockerstore::{LicenseMode, Options, Store};

#[derive(Parser)]
#[command(name = "locker-server", about = "A music-locker server on lockerstore")]
struct Cli {
    /// The store directory (created if missing).
    #[arg(long)]
    store: PathBuf,
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
    /// Seconds a client has to send a request's head.
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// License mode of a new store.
    #[arg(long, default_value = "per-user-copy")]
    mode: LicenseMode,
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
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::User(cmd) = command {
        return users_cli::run(cmd, &cli.store, cli.mode);
    }
    let store = Store::open(&cli.store, Options::default().mode(cli.mode))?;
    let accounts = Arc::new(accounts::Accounts::open(&cli.store)?);
    let app = app::App {
        store,
        accounts,
        state_dir: cli.store.join("server"),
    };
    if let Command::Demo { music } = command {
        demo::prepare(&app, &music.unwrap_or_else(demo::default_music))?;
        demo::greet(cli.listen, &app.store);
    }
    let limits = serve::Limits {
        max_connections: cli.max_connections.max(1),
        header_read_timeout: std::time::Duration::from_secs(cli.header_timeout.max(1)),
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
    let admin_router = admin::routes().with_state(app.clone());
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
    serve::serve(listener, app::router(app), limits, stopped()).await?;
    admin.await.map_err(std::io::Error::other)??;
    if let Some(metrics) = metrics {
        metrics.await.map_err(std::io::Error::other)??;
    }
    Ok(())
}
