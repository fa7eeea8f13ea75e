//! Account administration: one set of operations (add a user, list, quotas, revoke a key),
//! run by the command line directly on a stopped server's store, or, while the server runs and
//! holds the store's lock, by the server itself for the command line through its admin socket
//! `<store>/server/admin.sock` (a Unix socket, mode 0600: only the operator's account reaches
//! it). Either way the same code changes the accounts and the store, so the running server sees
//! a new user or a revoked key at once.
//!
//! Licences per rights holder are operated here too: `holders` (what changing each holder's
//! licence would save or cost, its licence and its audit verdict), `licences` (the policy), and
//! setting or removing one holder's licence.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use lockerstore::{
    HolderAudit, Licence, Licences, LicenseMode, Quota, QuotaUsage, RightsHolder, Stats, Store,
    UserId, WhatIf,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::{Accounts, Issued, OperatorIssued};
use crate::app::App;
use crate::jobs::JobRequest;
use crate::session::Principal;

/// Why an account operation failed.
#[derive(Debug)]
pub enum AdminError {
    /// A bad name or limit.
    BadInput(String),
    /// No such user.
    NotFound(String),
    /// The user exists already.
    Exists(String),
    /// Another job runs.
    Busy(String),
    /// The store failed.
    Store(lockerstore::Error),
    /// The accounts file failed.
    Io(std::io::Error),
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::BadInput(m)
            | AdminError::NotFound(m)
            | AdminError::Exists(m)
            | AdminError::Busy(m) => f.write_str(m),
            AdminError::Store(e) => write!(f, "{e}"),
            AdminError::Io(e) => write!(f, "accounts: {e}"),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<lockerstore::Error> for AdminError {
    fn from(e: lockerstore::Error) -> AdminError {
        if e.is_bad_input() {
            AdminError::BadInput(e.to_string())
        } else {
            AdminError::Store(e)
        }
    }
}

impl From<std::io::Error> for AdminError {
    fn from(e: std::io::Error) -> AdminError {
        match e.kind() {
            std::io::ErrorKind::AlreadyExists => AdminError::Exists(e.to_string()),
            std::io::ErrorKind::NotFound => AdminError::NotFound(e.to_string()),
            _ => AdminError::Io(e),
        }
    }
}

/// A user as listed: name, limits and usage.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserView {
    pub user: String,
    pub max_bytes: Option<u64>,
    pub max_tracks: Option<u64>,
    pub counted_bytes: u64,
    pub counted_tracks: u64,
    pub exempt_bytes: u64,
    pub exempt_tracks: u64,
}

/// A new user and its first limits.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewUser {
    pub name: String,
    pub max_bytes: Option<u64>,
    pub max_tracks: Option<u64>,
}

/// A change of limits: a field left out stays as it is; `null` lifts the limit.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct QuotaChange {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub max_bytes: Option<Option<u64>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub max_tracks: Option<Option<u64>>,
}

/// A field that is present: `null` is `Some(None)` (lift the limit), not "left out".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// A licence to give a rights holder (`PUT /licences`): `mode` is `shared` (or
/// `single-master`) or `per-user` (or `per-user-copy`); `until`, seconds since the Unix epoch
/// after which the entry no longer applies (it must lie ahead), or absent for no end.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceChange {
    pub holder: String,
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// A request naming one rights holder (`POST /licences/unset`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedHolder {
    pub holder: String,
}

fn rights_holder(name: &str) -> Result<RightsHolder, AdminError> {
    RightsHolder::new(name)
        .map_err(|e| AdminError::BadInput(format!("rights holder {name:?}: {e}")))
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A licence entry as the API shows it: the names of `lockerstore license list --json`.
fn licence_json(l: &Licence, at: u64) -> serde_json::Value {
    json!({
        "mode": l.mode.as_str(),
        "until": l.until,
        "expired": !l.in_force(at),
    })
}

/// The policy as the API shows it (`lockerstore license list --json`).
fn licences_json(l: &Licences, at: u64) -> serde_json::Value {
    let entries: Vec<_> = l
        .entries
        .iter()
        .map(|(h, e)| {
            let mut v = licence_json(e, at);
            v["holder"] = json!(h.as_str());
            v["mode_now"] = json!(l.mode_of(Some(h), at).as_str());
            v
        })
        .collect();
    json!({ "default": l.default.as_str(), "entries": entries })
}

/// A what-if as `lockerstore what-if --json` prints it.
fn what_if_json(w: &WhatIf) -> serde_json::Value {
    json!({
        "mode": w.mode.as_str(),
        "physical_bytes": w.physical_bytes,
        "chunks": w.chunks,
        "bytes_to_write": w.bytes_to_write,
        "records_to_write": w.records_to_write,
        "pack_overhead_bytes": w.pack_overhead_bytes,
        "bytes_to_free": w.bytes_to_free,
        "pending_tracks": w.pending_tracks,
        "physical_bytes_now": w.physical_bytes_now,
        "garbage_bytes_now": w.garbage_bytes_now,
    })
}

/// A holder's audit verdict (`lockerstore audit --json`, `holders`).
fn audit_json(a: &HolderAudit) -> serde_json::Value {
    json!({
        "mode": a.mode.as_str(),
        "tracks": a.tracks,
        "pending_tracks": a.pending_tracks,
        "breaking_tracks": a.breaking_tracks,
        "conforming": a.conforming,
        "examples": a
            .examples
            .iter()
            .map(|(u, k)| json!({ "user": u, "key": k }))
            .collect::<Vec<_>>(),
    })
}

/// The operations, over one store and its accounts.
pub struct Admin<'a> {
    pub store: &'a Store,
    pub accounts: &'a Accounts,
}

fn user_id(name: &str) -> Result<UserId, AdminError> {
    UserId::new(name).map_err(|e| AdminError::BadInput(e.to_string()))
}

impl Admin<'_> {
    fn known(&self, name: &str) -> Result<UserId, AdminError> {
        let id = user_id(name)?;
        if !self.accounts.exists(name)? {
            return Err(AdminError::NotFound(format!("no user {name:?}")));
        }
        Ok(id)
    }

    fn view(&self, name: &str, id: &UserId) -> Result<UserView, AdminError> {
        let usage = match self.store.quota(id) {
            Ok(u) => u,
            // An account that never stored anything and has no limits.
            Err(lockerstore::Error::UnknownUser(_)) => QuotaUsage::default(),
            Err(e) => return Err(e.into()),
        };
        Ok(UserView {
            user: name.to_owned(),
            max_bytes: usage.quota.max_bytes,
            max_tracks: usage.quota.max_tracks,
            counted_bytes: usage.counted_bytes,
            counted_tracks: usage.counted_tracks,
            exempt_bytes: usage.exempt_bytes,
            exempt_tracks: usage.exempt_tracks,
        })
    }

    /// Creates a user with limits; prints nothing, returns the credentials (shown once).
    pub fn add_user(&self, new: &NewUser) -> Result<Issued, AdminError> {
        let id = user_id(&new.name)?;
        if self.accounts.exists(&new.name)? {
            return Err(AdminError::Exists(format!("user {:?} exists", new.name)));
        }
        // Limits first: an account never exists without the limits it was created with.
        if new.max_bytes.is_some() || new.max_tracks.is_some() {
            self.store.set_quota(
                &id,
                Quota::unlimited()
                    .max_bytes(new.max_bytes)
                    .max_tracks(new.max_tracks),
            )?;
        }
        Ok(self.accounts.add(&new.name)?)
    }

    /// Every user with limits and usage.
    pub fn users(&self) -> Result<Vec<UserView>, AdminError> {
        self.accounts
            .users()
            .iter()
            .map(|name| self.view(name, &user_id(name)?))
            .collect()
    }

    /// Changes a user's limits; returns the user as it is now.
    pub fn set_quota(&self, name: &str, change: &QuotaChange) -> Result<UserView, AdminError> {
        let id = self.known(name)?;
        let now = self.view(name, &id)?;
        let quota = Quota::unlimited()
            .max_bytes(change.max_bytes.unwrap_or(now.max_bytes))
            .max_tracks(change.max_tracks.unwrap_or(now.max_tracks));
        self.store.set_quota(&id, quota)?;
        self.view(name, &id)
    }

    /// Revokes every API key of a user and issues a new one.
    pub fn revoke_key(&self, name: &str) -> Result<Issued, AdminError> {
        self.known(name)?;
        Ok(self.accounts.revoke_keys(name)?)
    }

    /// Creates an operator, or (`renew`) revokes an operator's keys and issues a new one.
    pub fn operator_key(&self, name: &str, renew: bool) -> Result<OperatorIssued, AdminError> {
        // Operators' names follow the rules of users' names.
        user_id(name)?;
        Ok(self.accounts.issue_operator_key(name, renew)?)
    }

    /// Store-wide and per-user accounting, as `lockerstore stats --json` prints it.
    pub fn stats(&self) -> Result<serde_json::Value, AdminError> {
        Ok(stats_json(&self.store.stats()?))
    }

    /// What migrating to the other mode would do, as `lockerstore what-if --json` prints it.
    pub fn what_if(&self) -> Result<serde_json::Value, AdminError> {
        let mode = self.store.mode();
        let other = if mode == LicenseMode::SingleMaster {
            LicenseMode::PerUserCopy
        } else {
            LicenseMode::SingleMaster
        };
        let w = self.store.what_if(other)?;
        Ok(json!({ "mode": mode.as_str(), "other": what_if_json(&w) }))
    }

    /// Every rights holder with tracks: what flipping its licence then migrating would do (the
    /// fields of `lockerstore what-if --by-holder --json`, by savings, largest first), with its
    /// audit verdict; the tracks with no holder; and every licence entry (also of holders
    /// without tracks). The what-if and the audit are two reads: a put between them may show
    /// in one and not the other.
    pub fn holders(&self) -> Result<serde_json::Value, AdminError> {
        let at = unix_now();
        let w = self.store.what_if_by_holder()?;
        let audit = self.store.audit(false)?;
        let licences = self.store.licences();
        let verdict = |h: Option<&RightsHolder>| {
            audit
                .holders
                .iter()
                .find(|a| a.holder.as_ref() == h)
                .map(audit_json)
        };
        let holders: Vec<_> = w
            .holders
            .iter()
            .map(|h| {
                json!({
                    "holder": h.holder.as_str(),
                    "licence": h.licence.as_ref().map(|l| licence_json(l, at)),
                    "mode_now": h.mode_now.as_str(),
                    "mode_after": h.mode_after.as_str(),
                    "tracks": h.tracks,
                    "logical_bytes": h.logical_bytes,
                    "physical_bytes_now": h.physical_bytes_now,
                    "physical_bytes_after": h.physical_bytes_after,
                    "physical_bytes_baseline": h.physical_bytes_baseline,
                    "bytes_to_write": h.bytes_to_write,
                    "bytes_to_free": h.bytes_to_free,
                    "savings": h.savings,
                    "audit": verdict(Some(&h.holder)),
                })
            })
            .collect();
        Ok(json!({
            "default": licences.default.as_str(),
            "baseline": what_if_json(&w.baseline),
            "holders": holders,
            "unassigned_tracks": w.unassigned_tracks,
            "unassigned_bytes": w.unassigned_bytes,
            "unassigned_audit": verdict(None),
            "conforming": audit.conforming,
            "licences": licences_json(&licences, at),
        }))
    }

    /// The licence policy: the default and every entry.
    pub fn licences(&self) -> Result<serde_json::Value, AdminError> {
        Ok(licences_json(&self.store.licences(), unix_now()))
    }

    /// Gives a rights holder a licence (replacing its entry); returns the policy as it is now.
    /// New uploads follow it at once; a migration moves the tracks already stored. Everything
    /// is checked before anything changes.
    pub fn set_licence(&self, change: &LicenceChange) -> Result<serde_json::Value, AdminError> {
        let holder = rights_holder(&change.holder)?;
        let mode: LicenseMode = change.mode.parse().map_err(AdminError::BadInput)?;
        let mut licence = Licence::new(mode);
        if let Some(until) = change.until {
            let now = unix_now();
            if until <= now {
                return Err(AdminError::BadInput(format!(
                    "until {until} has already passed (now {now}, seconds since the Unix epoch)"
                )));
            }
            licence = licence.until(until);
        }
        self.store.set_licence(&holder, Some(licence))?;
        self.licences()
    }

    /// Removes a rights holder's licence: its tracks follow the default again. Returns the
    /// policy as it is now.
    pub fn unset_licence(&self, holder: &str) -> Result<serde_json::Value, AdminError> {
        let holder = rights_holder(holder)?;
        if !self.store.licences().entries.contains_key(&holder) {
            return Err(AdminError::NotFound(format!(
                "{:?} has no licence to unset",
                holder.as_str()
            )));
        }
        self.store.set_licence(&holder, None)?;
        self.licences()
    }
}

/// [`lockerstore::Stats`] with the field names of `lockerstore stats --json` (the browser
/// test compares the two).
fn stats_json(s: &Stats) -> serde_json::Value {
    let per_user: Vec<_> = s
        .per_user
        .iter()
        .map(|u| {
            json!({
                "user": u.user,
                "logical_bytes": u.logical_bytes,
                "tracks": u.tracks,
                "max_bytes": u.quota.quota.max_bytes,
                "max_tracks": u.quota.quota.max_tracks,
                "exempt_bytes": u.quota.exempt_bytes,
                "exempt_tracks": u.quota.exempt_tracks,
            })
        })
        .collect();
    json!({
        "mode": s.mode.as_str(),
        "users": s.users,
        "tracks": s.tracks,
        "logical_bytes": s.logical_bytes,
        "physical_bytes": s.physical_bytes,
        "garbage_bytes": s.garbage_bytes,
        "chunks": s.chunks,
        "recordings": s.recordings,
        "garbage_chunks": s.garbage_chunks,
        "packs": s.packs,
        "pack_bytes": s.pack_bytes,
        "dedup_ratio": s.dedup_ratio,
        "filter_bytes": s.filter_bytes,
        "pack_location": s.pack_location,
        "cache_bytes": s.cache_bytes,
        "cache_limit": s.cache_limit,
        "upload_backlog_bytes": s.upload_backlog_bytes,
        "per_user": per_user,
    })
}

/// The admin socket's path for a store.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.sock")
}

// --- the server side -------------------------------------------------------------------------

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::BadInput(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Exists(_) | AdminError::Busy(_) => StatusCode::CONFLICT,
            AdminError::Store(_) | AdminError::Io(_) => {
                // The store's and the file system's messages name server paths: the log has
                // them, the answer does not.
                tracing::error!(error = %self, "admin operation failed");
                let message = "internal error: see the server's log";
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({ "error": message })),
                )
                    .into_response();
            }
        };
        (status, axum::Json(json!({ "error": self.to_string() }))).into_response()
    }
}

async fn run<T: Send + 'static>(
    app: App,
    f: impl FnOnce(&Admin<'_>) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(move || {
        f(&Admin {
            store: &app.store,
            accounts: &app.accounts,
        })
    })
    .await
    .map_err(|e| AdminError::Io(std::io::Error::other(e.to_string())))?
}

/// A JSON body whose rejections (malformed, wrong type, not JSON) answer in JSON like every
/// other error of the API.
pub struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    axum::Json<T>:
        axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = AdminError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AdminError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| Body(v))
            .map_err(|r| AdminError::BadInput(r.body_text()))
    }
}

/// A request naming one user (names travel in bodies, never in URLs).
#[derive(Debug, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    #[serde(flatten)]
    pub change: QuotaChange,
}

/// A request naming one operator.
#[derive(Debug, Serialize, Deserialize)]
pub struct NamedOperator {
    pub name: String,
}

/// The admin socket's routes: the operator API, and managing operators, which only the
/// machine's operator account may do (a stolen web session must not mint operator keys).
pub fn socket_routes() -> Router<App> {
    routes()
        .route(
            "/operators",
            post(
                |State(app): State<App>, Body(n): Body<NamedOperator>| async move {
                    run(app, move |a| a.operator_key(&n.name, false))
                        .await
                        .map(|i| (StatusCode::CREATED, axum::Json(i)))
                },
            ),
        )
        .route(
            "/operators/revoke-key",
            post(
                |State(app): State<App>, Body(n): Body<NamedOperator>| async move {
                    let sessions = app.sessions.clone();
                    let issued = run(app, move |a| a.operator_key(&n.name, true)).await?;
                    sessions.end_all(&Principal::Operator(issued.operator.clone()));
                    Ok::<_, AdminError>(axum::Json(issued))
                },
            ),
        )
}

/// The operator API: served on the admin socket (whose file mode is its access control) and,
/// behind operator credentials ([`crate::auth::require_operator`]), at `/api/v1/admin` on the
/// server's address for the page at `/admin` and for scripts. Names travel in bodies, never
/// in URLs.
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/users",
            get(|State(app): State<App>| async move {
                run(app, |a| a.users()).await.map(axum::Json)
            })
            .post(
                |State(app): State<App>, Body(new): Body<NewUser>| async move {
                    run(app, move |a| a.add_user(&new))
                        .await
                        .map(|i| (StatusCode::CREATED, axum::Json(i)))
                },
            ),
        )
        .route(
            "/users/quota",
            put(
                |State(app): State<App>, Body(n): Body<Named>| async move {
                    run(app, move |a| a.set_quota(&n.name, &n.change))
                        .await
                        .map(axum::Json)
                },
            ),
        )
        .route(
            "/users/revoke-key",
            post(
                |State(app): State<App>, Body(n): Body<Named>| async move {
                    let sessions = app.sessions.clone();
                    let issued = run(app, move |a| a.revoke_key(&n.name)).await?;
                    // Sessions signed in with a revoked key end with it.
                    sessions.end_all(&Principal::User(issued.user.clone()));
                    Ok::<_, AdminError>(axum::Json(issued))
                },
            ),
        )
        .route(
            "/stats",
            get(|State(app): State<App>| async move {
                run(app, |a| a.stats()).await.map(axum::Json)
            }),
        )
        .route(
            "/what-if",
            get(|State(app): State<App>| async move {
                run(app, |a| a.what_if()).await.map(axum::Json)
            }),
        )
        .route(
            "/holders",
            get(|State(app): State<App>| async move {
                run(app, |a| a.holders()).await.map(axum::Json)
            }),
        )
        .route(
            "/licences",
            get(|State(app): State<App>| async move {
                run(app, |a| a.licences()).await.map(axum::Json)
            })
            .put(
                |State(app): State<App>, Body(c): Body<LicenceChange>| async move {
                    run(app, move |a| a.set_licence(&c)).await.map(axum::Json)
                },
            ),
        )
        .route(
            "/licences/unset",
            post(
                |State(app): State<App>, Body(n): Body<NamedHolder>| async move {
                    run(app, move |a| a.unset_licence(&n.holder))
                        .await
                        .map(axum::Json)
                },
            ),
        )
        .route(
            "/jobs",
            get(|State(app): State<App>| async move { axum::Json(app.jobs.list()) }).post(
                |State(app): State<App>, Body(r): Body<JobRequest>| async move {
                    app.jobs
                        .start(app.store.clone(), r)
                        .map(|job| (StatusCode::ACCEPTED, axum::Json(job)))
                },
            ),
        )
        .route(
            "/jobs/{id}",
            get(
                |State(app): State<App>, axum::extract::Path(id): axum::extract::Path<String>| async move {
                    id.parse()
                        .ok()
                        .and_then(|id| app.jobs.get(id))
                        .map(axum::Json)
                        .ok_or_else(|| AdminError::NotFound(format!("no job {id:?}")))
                },
            ),
        )
}

/// Binds the admin socket (replacing a stale one: the store's lock, held by this process,
/// says no other server uses it) with mode 0600.
pub fn bind(state_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    // The directory first: the socket is briefly open to what the umask allows between its
    // bind and its chmod, and the accounts file beside it is nobody else's either.
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))?;
    let path = socket_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

// --- the command line's side -----------------------------------------------------------------

/// One request to the running server's admin socket; the JSON answer or the server's error.
pub async fn call(
    state_dir: &Path,
    method: axum::http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket_path(state_dir))
        .await
        .map_err(|e| {
            format!("the store is locked and its server's admin socket does not answer: {e}")
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes_of(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes)?;
    if !status.is_success() {
        let message = value["error"].as_str().unwrap_or("failed").to_owned();
        return Err(message.into());
    }
    Ok(value)
}

fn bytes_of(body: Option<serde_json::Value>) -> axum::body::Bytes {
    body.map(|b| axum::body::Bytes::from(b.to_string()))
        .unwrap_or_default()
}
