//! `locker-server user ...`, `operator ...`, `license ...` and `holders`: account and licence
//! commands. They work on the store directly when no server
//! runs, and through the running server's admin socket when one holds the store (see admin.rs),
//! with the same operations and the same output either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::Method;
use clap::Subcommand;
use lockerstore::{Options, Store};
use serde_json::{Value, json};

use crate::accounts::Accounts;
use crate::admin::{Admin, LicenceChange, Named, NamedHolder, NamedOperator, NewUser, QuotaChange};

#[derive(Subcommand)]
pub enum UserCommand {
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
    /// List the users with their limits and use.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a user's limits and use, or change them (`none` lifts a limit).
    Quota {
        name: String,
        /// Most bytes (5GB, 500MiB, ... or none).
        #[arg(long)]
        bytes: Option<String>,
        /// Most tracks (or none).
        #[arg(long)]
        tracks: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user's API keys and issue a new one.
    RevokeKey {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Create an operator; prints its key (shown once), for /admin and /api/v1/admin.
    Add {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an operator's keys (and end their sessions) and issue a new one.
    RevokeKey {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum LicenseCommand {
    /// Give HOLDER's tracks a licence: `shared` (identical content stored once for all users)
    /// or `per-user` (every user keeps their own copy). New uploads follow it at once; a
    /// migration (the page's button, or `lockerstore migrate` on a stopped store) moves the
    /// tracks already stored.
    Set {
        holder: String,
        /// shared (single-master) or per-user (per-user-copy).
        mode: String,
        /// The licence holds until then (seconds since the Unix epoch, such as
        /// `$(date -d 2027-02-01 +%s)`), then the holder's tracks follow the default again.
        #[arg(long, value_name = "UNIX_SECONDS")]
        until: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Remove HOLDER's licence: its tracks follow the default again.
    Unset {
        holder: String,
        #[arg(long)]
        json: bool,
    },
    /// The default and every holder's licence, with its end.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Parses a byte count with an optional SI or binary suffix (5GB, 500MiB).
pub fn bytes_arg(s: &str) -> Result<u64, String> {
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

/// `none` lifts a limit; anything else is parsed by `parse`.
fn limit(
    s: Option<&str>,
    parse: impl Fn(&str) -> Result<u64, String>,
) -> Result<Option<Option<u64>>, String> {
    match s {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(v) => parse(v).map(|n| Some(Some(n))),
    }
}

fn tracks_arg(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("invalid track count {s:?}"))
}

/// The operation as the admin socket takes it: method, path and body.
fn request(cmd: &UserCommand) -> Result<(Method, &'static str, Option<Value>), String> {
    Ok(match cmd {
        UserCommand::Add {
            name,
            quota,
            tracks,
            ..
        } => (
            Method::POST,
            "/users",
            Some(
                serde_json::to_value(NewUser {
                    name: name.clone(),
                    max_bytes: quota.as_deref().map(bytes_arg).transpose()?,
                    max_tracks: *tracks,
                })
                .expect("plain JSON"),
            ),
        ),
        UserCommand::List { .. } => (Method::GET, "/users", None),
        UserCommand::Quota {
            name,
            bytes,
            tracks,
            ..
        } => (
            Method::PUT,
            "/users/quota",
            Some(
                serde_json::to_value(Named {
                    name: name.clone(),
                    change: QuotaChange {
                        max_bytes: limit(bytes.as_deref(), bytes_arg)?,
                        max_tracks: limit(tracks.as_deref(), tracks_arg)?,
                    },
                })
                .expect("plain JSON"),
            ),
        ),
        UserCommand::RevokeKey { name, .. } => (
            Method::POST,
            "/users/revoke-key",
            Some(json!({ "name": name })),
        ),
    })
}

/// Runs the operation on the store itself (no server holds it).
fn direct(
    admin: &Admin<'_>,
    method: &Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Box<dyn std::error::Error>> {
    let body = body.unwrap_or(Value::Null);
    Ok(match (method.as_str(), path) {
        ("POST", "/users") => {
            serde_json::to_value(admin.add_user(&serde_json::from_value(body)?)?)?
        }
        ("GET", "/users") => serde_json::to_value(admin.users()?)?,
        ("PUT", "/users/quota") => {
            let n: Named = serde_json::from_value(body)?;
            serde_json::to_value(admin.set_quota(&n.name, &n.change)?)?
        }
        ("POST", "/users/revoke-key") => {
            let n: Named = serde_json::from_value(body)?;
            serde_json::to_value(admin.revoke_key(&n.name)?)?
        }
        ("GET", "/holders") => admin.holders()?,
        ("GET", "/licences") => admin.licences()?,
        ("PUT", "/licences") => admin.set_licence(&serde_json::from_value(body)?)?,
        ("POST", "/licences/unset") => {
            let n: NamedHolder = serde_json::from_value(body)?;
            admin.unset_licence(&n.holder)?
        }
        ("POST", "/operators" | "/operators/revoke-key") => {
            let n: NamedOperator = serde_json::from_value(body)?;
            serde_json::to_value(admin.operator_key(&n.name, path.ends_with("revoke-key"))?)?
        }
        _ => unreachable!("request() names only these"),
    })
}

fn limit_text(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

fn user_line(u: &Value) -> String {
    format!(
        "{}  bytes {} of {}  tracks {} of {}  exempt {} bytes in {} tracks",
        u["user"].as_str().unwrap_or_default(),
        u["counted_bytes"],
        limit_text(&u["max_bytes"]),
        u["counted_tracks"],
        limit_text(&u["max_tracks"]),
        u["exempt_bytes"],
        u["exempt_tracks"],
    )
}

/// Where a command runs: the store (its directory, or with `--meta` this node's directory,
/// optional), how it opens, and the PostgreSQL of a store many nodes share.
pub struct Place {
    pub store_dir: Option<PathBuf>,
    pub options: Options,
    pub meta: Option<String>,
}

/// Runs an operation on the store when it is free, else through the server's admin socket.
/// With `--meta` and no `--store`, the command opens the store with a node directory of its
/// own for the time it runs (accounts and licences live in PostgreSQL, so every node sees the
/// change at its next request).
fn execute(
    place: &Place,
    (method, path, body): (Method, &'static str, Option<Value>),
) -> Result<Value, Box<dyn std::error::Error>> {
    // Declared before the store, so it is removed after the store closes.
    let scratch;
    let store_dir: &Path = match (&place.store_dir, &place.meta) {
        (Some(dir), _) => dir,
        (None, Some(_)) => {
            scratch = tempfile::Builder::new()
                .prefix("locker-server-command-")
                .tempdir()?;
            scratch.path()
        }
        (None, None) => return Err("--store DIR (or --meta URL) is needed".into()),
    };
    Ok(match Store::open(store_dir, place.options.clone()) {
        Ok(store) => {
            let backend = match &place.meta {
                Some(url) => {
                    crate::state::Backend::Postgres(Arc::new(crate::pg::Pg::connect(url, 2)?))
                }
                None => crate::state::Backend::Files(store_dir.join("server")),
            };
            let accounts = Accounts::open_in(&backend)?;
            direct(
                &Admin {
                    store: &store,
                    accounts: &accounts,
                },
                &method,
                path,
                body,
            )?
        }
        Err(lockerstore::Error::Locked(_)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::admin::call(
                &store_dir.join("server"),
                method,
                path,
                body,
            ))?,
        Err(e) => return Err(e.into()),
    })
}

/// Runs an operator command.
pub fn run_operator(cmd: OperatorCommand, place: &Place) -> Result<(), Box<dyn std::error::Error>> {
    let (path, name, json) = match &cmd {
        OperatorCommand::Add { name, json } => ("/operators", name, *json),
        OperatorCommand::RevokeKey { name, json } => ("/operators/revoke-key", name, *json),
    };
    let body = json!({ "name": name });
    let value = execute(place, (Method::POST, path, Some(body)))?;
    if json {
        println!("{value}");
    } else {
        println!(
            "operator {}",
            value["operator"].as_str().unwrap_or_default()
        );
        println!(
            "operator key {}",
            value["operator_key"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs a user command.
pub fn run(cmd: UserCommand, place: &Place) -> Result<(), Box<dyn std::error::Error>> {
    let value = execute(place, request(&cmd)?)?;
    let json = match &cmd {
        UserCommand::Add { json, .. }
        | UserCommand::List { json }
        | UserCommand::Quota { json, .. }
        | UserCommand::RevokeKey { json, .. } => *json,
    };
    if json {
        println!("{value}");
        return Ok(());
    }
    match cmd {
        UserCommand::Add { .. } => {
            println!("user {}", value["user"].as_str().unwrap_or_default());
            println!("api key {}", value["api_key"].as_str().unwrap_or_default());
            println!(
                "subsonic password {}",
                value["subsonic_password"].as_str().unwrap_or_default()
            );
        }
        UserCommand::RevokeKey { .. } => {
            println!("api key {}", value["api_key"].as_str().unwrap_or_default())
        }
        UserCommand::List { .. } => {
            for u in value.as_array().into_iter().flatten() {
                println!("{}", user_line(u));
            }
        }
        UserCommand::Quota { .. } => println!("{}", user_line(&value)),
    }
    Ok(())
}

/// The licence policy as lines: the default, then each entry with its end.
fn print_licences(v: &Value) {
    println!("(default)  {}", v["default"].as_str().unwrap_or_default());
    for e in v["entries"].as_array().into_iter().flatten() {
        let end = match (e["until"].as_u64(), e["expired"].as_bool()) {
            (None, _) => "no end".to_owned(),
            (Some(u), Some(true)) => format!("ended at {u}: its tracks follow the default"),
            (Some(u), _) => format!("until {u}"),
        };
        println!(
            "{}  {}  {end}",
            e["holder"].as_str().unwrap_or_default(),
            e["mode"].as_str().unwrap_or_default()
        );
    }
}

/// Runs a licence command.
pub fn run_license(cmd: LicenseCommand, place: &Place) -> Result<(), Box<dyn std::error::Error>> {
    let (request, json) = match cmd {
        LicenseCommand::Set {
            holder,
            mode,
            until,
            json,
        } => {
            let body = LicenceChange {
                holder,
                mode,
                until,
            };
            let body = serde_json::to_value(body).expect("plain JSON");
            ((Method::PUT, "/licences", Some(body)), json)
        }
        LicenseCommand::Unset { holder, json } => {
            let body = serde_json::to_value(NamedHolder { holder }).expect("plain JSON");
            ((Method::POST, "/licences/unset", Some(body)), json)
        }
        LicenseCommand::List { json } => ((Method::GET, "/licences", None), json),
    };
    let value = execute(place, request)?;
    if json {
        println!("{value}");
    } else {
        print_licences(&value);
    }
    Ok(())
}

/// `holders`: what changing each rights holder's licence would do, and its audit verdict.
pub fn run_holders(json: bool, place: &Place) -> Result<(), Box<dyn std::error::Error>> {
    let value = execute(place, (Method::GET, "/holders", None))?;
    if json {
        println!("{value}");
        return Ok(());
    }
    println!(
        "{:<30}  {:<13}  {:<13}  {:>7}  {:>14}  {:>14}  verdict",
        "holder", "mode now", "after", "tracks", "logical bytes", "savings"
    );
    for h in value["holders"].as_array().into_iter().flatten() {
        let verdict = match (
            h["audit"]["conforming"].as_bool(),
            h["audit"]["breaking_tracks"].as_u64(),
        ) {
            (Some(true), _) => "conforming".to_owned(),
            (Some(false), Some(n)) => format!("{n} tracks break it"),
            _ => "not audited".to_owned(),
        };
        println!(
            "{:<30}  {:<13}  {:<13}  {:>7}  {:>14}  {:>14}  {verdict}",
            h["holder"].as_str().unwrap_or_default(),
            h["mode_now"].as_str().unwrap_or_default(),
            h["mode_after"].as_str().unwrap_or_default(),
            h["tracks"],
            h["logical_bytes"],
            h["savings"],
        );
    }
    println!(
        "unassigned (no rights holder, follow the default {}): {} tracks, {} bytes",
        value["default"].as_str().unwrap_or_default(),
        value["unassigned_tracks"],
        value["unassigned_bytes"]
    );
    Ok(())
}
