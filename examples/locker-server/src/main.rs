//! locker-server: a music-locker server on lockerstore (work in progress; see README.md).
//!
//! ```text
//! locker-server --store DIR [--listen ADDR] [--mode MODE]          serve (default 127.0.0.1:4533)
//!               [--subsonic-auth all|api-key-only]                 credentials /rest/ takes
//! locker-server --store DIR user add NAME [--quota 5GB] [--tracks N] [--json]
//! locker-server --store DIR user list | user revoke-key NAME
//! ```

mod accounts;
mod api;
mod app;
mod catalog;
mod http;
mod state_file;
mod subsonic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lockerstore::{LicenseMode, Options, Quota, Store, UserId};

#[derive(Parser)]
#[command(name = "locker-server", about = "A music-locker server on lockerstore")]
struct Cli {
    /// The store directory (created if missing).
    #[arg(long)]
    store: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4533")]
    listen: SocketAddr,
    /// License mode of a new store.
    #[arg(long, default_value = "per-user-copy")]
    mode: LicenseMode,
    /// Which credentials the Subsonic API (/rest/) takes: `all` (API keys, tokens, passwords)
    /// or `api-key-only`.
    #[arg(long, value_enum, default_value_t = subsonic::AuthModes::All)]
    subsonic_auth: subsonic::AuthModes,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Accounts.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints its API key and Subsonic password (shown once).
    Add {
        name: String,
        /// Most bytes the user's tracks may hold (5GB, 500MiB, ...).
        #[arg(long)]
        quota: Option<String>,
        /// Most tracks.
        #[arg(long)]
        tracks: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List the users.
    List,
    /// Revoke a user's API keys and issue a new one.
    RevokeKey { name: String },
}

/// Parses a byte count with an optional SI or binary suffix (5GB, 500MiB).
fn bytes_arg(s: &str) -> Result<u64, String> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, suffix) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let unit: u64 = match suffix {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(format!("invalid size {s:?}")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("invalid size {s:?}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let store = Store::open(&cli.store, Options::default().mode(cli.mode))?;
    let accounts = Arc::new(accounts::Accounts::open(&cli.store)?);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let state_dir = cli.store.join("server");
            let users = accounts.users();
            // The store is the source of truth: each catalogue is checked against it (and
            // rebuilt where it differs) before the first request.
            let catalog = Arc::new(catalog::Catalog::open(&state_dir, &store, &users)?);
            let user_data = Arc::new(subsonic::userdata::UserDataStore::open(&state_dir, &users)?);
            let runtime = tokio::runtime::Runtime::new()?;
            let app = app::App {
                store,
                accounts,
                state_dir,
                catalog,
                user_data,
                subsonic_auth: cli.subsonic_auth,
            };
            runtime.block_on(serve(cli.listen, app))?;
        }
        Command::User(UserCommand::Add {
            name,
            quota,
            tracks,
            json,
        }) => {
            let user = UserId::new(&name)?;
            let max_bytes = quota.as_deref().map(bytes_arg).transpose()?;
            let issued = accounts.add(&name)?;
            if max_bytes.is_some() || tracks.is_some() {
                store.set_quota(
                    &user,
                    Quota::unlimited().max_bytes(max_bytes).max_tracks(tracks),
                )?;
            }
            if json {
                println!("{}", serde_json::to_string(&issued)?);
            } else {
                println!("user {}", issued.user);
                println!("api key {}", issued.api_key);
                println!("subsonic password {}", issued.subsonic_password);
            }
        }
        Command::User(UserCommand::List) => {
            for u in accounts.users() {
                println!("{u}");
            }
        }
        Command::User(UserCommand::RevokeKey { name }) => {
            let issued = accounts.revoke_keys(&name)?;
            println!("api key {}", issued.api_key);
        }
    }
    Ok(())
}

async fn serve(listen: SocketAddr, app: app::App) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, state = %app.state_dir.display(), "listening");
    // SIGINT or SIGTERM: stop accepting, let requests in flight finish (an upload either
    // commits or, cut off, stores nothing), then close the store.
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    axum::serve(listener, app::router(app))
        .with_graceful_shutdown(stop)
        .await
}
