//! Upload avoidance over HTTP: a client that holds a track proves it and, where the store's
//! license mode allows, the track is linked into its locker from its own tag bytes and the
//! stored payload, without uploading the payload.
//!
//! - `POST /api/v1/avoid/challenge` `{key, audio_fingerprint (hex), audio_len}` answers
//!   `{challenge_id (hex), nonce (hex), ranges: [[start, end], ...], expires_in}`
//!   ([`lockerstore::Store::challenge`]: it looks nothing up).
//! - `POST /api/v1/avoid/prove` `{challenge_id, response (hex), head (base64), tail (base64)}`,
//!   the response being BLAKE3 keyed by the nonce over the payload's bytes in the ranges, head
//!   and tail the client's own bytes before and after the payload. Linked: 201 with the track,
//!   as the upload API's PUT answers it. Anything else: [`REFUSED`], one fixed answer whatever
//!   the reason (wrong answer, expired or reused challenge, unknown recording, a mode that
//!   refuses), no sooner than [`lockerstore::REFUSAL_FLOOR`], so neither its bytes nor its
//!   timing tell whether the store holds the recording.
//!
//! A challenge is bound to the user it was issued to: the engine links into the locker of the
//! challenge's user, so the server only hands a proof to the engine when it comes from that
//! user (anyone else is refused, and the challenge stays usable by its user).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, extract::FromRequest};
use base64::Engine as _;
use lockerstore::{
    AudioFingerprint, CHALLENGE_TTL, OwnershipClaim, ProofOutcome, REFUSAL_FLOOR, TrackKey, UserId,
};
use serde::Deserialize;
use serde_json::json;

use crate::api::describe;
use crate::app::App;
use crate::auth::user_of;
use crate::http::{ApiError, blocking};

/// What every refused proof answers (with 404).
pub const REFUSED: &str = "not linked: upload the track";
/// Most bytes of tags (head and tail together) a proof may carry.
pub const MAX_TAG_BYTES: usize = 16 << 20;
/// The proof's body limit: the tags in base64 and the rest of the JSON.
const PROVE_BODY_MAX: usize = MAX_TAG_BYTES / 3 * 4 + (64 << 10);
// Room for both tags in padded base64 and the other fields.
const _: () = assert!(PROVE_BODY_MAX >= MAX_TAG_BYTES.div_ceil(3) * 4 + 8 + 1024);
/// Most challenges one user may have outstanding; more are refused (429) until some expire or
/// are answered, so no user's challenges push out another's.
const PER_USER: usize = 64;
/// Most proof bodies (up to ~21 MiB each) read at once; more wait.
const PROVES_AT_ONCE: usize = 8;
static PROVE_BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PROVES_AT_ONCE);
/// Most challenges outstanding in all.
const MAX_PENDING: usize = 65_536;

/// Who each outstanding challenge was issued to.
#[derive(Debug, Default)]
pub struct Challenges {
    pending: Mutex<HashMap<u64, Issued>>,
}

#[derive(Debug)]
struct Issued {
    user: String,
    key: String,
    at: Instant,
}

impl Challenges {
    /// Whether `user` may have one more challenge outstanding.
    fn has_room(&self, user: &UserId) -> bool {
        let mut pending = self.pending.lock().expect("challenges lock");
        let now = Instant::now();
        pending.retain(|_, c| now.duration_since(c.at) < CHALLENGE_TTL);
        pending.values().filter(|c| c.user == user.as_str()).count() < PER_USER
    }

    fn issue(&self, id: u64, user: &UserId, key: &TrackKey) {
        let mut pending = self.pending.lock().expect("challenges lock");
        let now = Instant::now();
        pending.retain(|_, c| now.duration_since(c.at) < CHALLENGE_TTL);
        let oldest = |pending: &HashMap<u64, Issued>, of: Option<&str>| {
            pending
                .iter()
                .filter(|(_, c)| of.is_none_or(|u| c.user == u))
                .min_by_key(|(_, c)| c.at)
                .map(|(id, _)| *id)
        };
        if pending.values().filter(|c| c.user == user.as_str()).count() >= PER_USER
            && let Some(old) = oldest(&pending, Some(user.as_str()))
        {
            pending.remove(&old);
        }
        if pending.len() >= MAX_PENDING
            && let Some(old) = oldest(&pending, None)
        {
            pending.remove(&old);
        }
        pending.insert(
            id,
            Issued {
                user: user.as_str().to_owned(),
                key: key.as_str().to_owned(),
                at: now,
            },
        );
    }

    /// Takes challenge `id` for `user`: the key it was issued for, or `None` when it is
    /// unknown, expired or someone else's (then it stays for its own user).
    fn take(&self, id: u64, user: &UserId) -> Option<String> {
        let mut pending = self.pending.lock().expect("challenges lock");
        let c = pending.get(&id)?;
        if c.user != user.as_str() {
            return None;
        }
        let c = pending.remove(&id)?;
        (c.at.elapsed() < CHALLENGE_TTL).then_some(c.key)
    }
}

/// The upload avoidance routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/avoid/challenge", post(challenge))
        .route(
            "/api/v1/avoid/prove",
            post(prove).layer(DefaultBodyLimit::max(PROVE_BODY_MAX)),
        )
}

/// A JSON body of an authenticated user: the key is checked before a byte of the body is
/// read, so nobody without an account makes the server buffer a body; rejections answer like
/// every other error of the API.
struct Authed<T> {
    user: UserId,
    body: T,
}

impl<T> FromRequest<App> for Authed<T>
where
    Json<T>: FromRequest<App, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, app: &App) -> Result<Self, ApiError> {
        let user = user_of(app, req.method(), req.headers())?;
        let _reading = PROVE_BODIES
            .acquire()
            .await
            .expect("the semaphore is never closed");
        match Json::<T>::from_request(req, app).await {
            Ok(Json(body)) => Ok(Authed { user, body }),
            Err(r) => Err(ApiError::new(r.status(), r.body_text())),
        }
    }
}

#[derive(Deserialize)]
struct ChallengeRequest {
    key: String,
    audio_fingerprint: String,
    audio_len: u64,
}

#[derive(Deserialize)]
struct ProveRequest {
    challenge_id: String,
    response: String,
    #[serde(default)]
    head: String,
    #[serde(default)]
    tail: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn refused() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, REFUSED).into_response()
}

async fn challenge(
    State(app): State<App>,
    Authed { user, body: req }: Authed<ChallengeRequest>,
) -> Result<Response, ApiError> {
    if !app.challenges.has_room(&user) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("at most {PER_USER} challenges may be outstanding: answer or let some expire"),
        ));
    }
    let key = TrackKey::new(&req.key).map_err(|e| bad(e.to_string()))?;
    let audio_fingerprint = AudioFingerprint::from_hex(&req.audio_fingerprint)
        .ok_or_else(|| bad("audio_fingerprint must be 64 hex digits"))?;
    let claim = OwnershipClaim {
        audio_fingerprint,
        audio_len: req.audio_len,
    };
    let (store, u, k) = (app.store.clone(), user.clone(), key.clone());
    let c = blocking(move || store.challenge(&u, &k, &claim)).await?;
    app.challenges.issue(c.id, &user, &key);
    Ok(Json(json!({
        "challenge_id": format!("{:016x}", c.id),
        "nonce": hex(&c.nonce),
        "ranges": c.ranges.iter().map(|(s, e)| [*s, *e]).collect::<Vec<_>>(),
        "expires_in": CHALLENGE_TTL.as_secs(),
    }))
    .into_response())
}

async fn prove(
    State(app): State<App>,
    Authed { user, body: req }: Authed<ProveRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let id = (req.challenge_id.len() == 16)
        .then(|| u64::from_str_radix(&req.challenge_id, 16).ok())
        .flatten()
        .ok_or_else(|| bad("challenge_id must be 16 hex digits"))?;
    let response =
        blake3::Hash::from_hex(&req.response).map_err(|_| bad("response must be 64 hex digits"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let head = b64
        .decode(&req.head)
        .map_err(|_| bad("head must be base64"))?;
    let tail = b64
        .decode(&req.tail)
        .map_err(|_| bad("tail must be base64"))?;
    if head.len() + tail.len() > MAX_TAG_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("head and tail may hold {MAX_TAG_BYTES} bytes together"),
        ));
    }
    let Some(key) = app.challenges.take(id, &user) else {
        // Refused before the engine: as slow as the engine's refusals.
        tokio::time::sleep(REFUSAL_FLOOR.saturating_sub(started.elapsed())).await;
        return Ok(refused());
    };
    let linked =
        blocking(
            move || match app.store.prove(id, *response.as_bytes(), &head, &tail)? {
                ProofOutcome::Refused => Ok(None),
                ProofOutcome::Linked(_) => {
                    let key = TrackKey::new(&key)?;
                    app.stored(&user, &key);
                    app.store.track_info(&user, &key).map(Some)
                }
            },
        )
        .await?;
    Ok(match linked {
        Some(info) => (StatusCode::CREATED, Json(describe(&info))).into_response(),
        None => refused(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_bound_to_their_user_and_single_use() {
        let c = Challenges::default();
        let (a, b) = (UserId::new("a").unwrap(), UserId::new("b").unwrap());
        let key = TrackKey::new("k.mp3").unwrap();
        c.issue(7, &a, &key);
        assert_eq!(c.take(7, &b), None, "someone else's");
        assert_eq!(c.take(7, &a).as_deref(), Some("k.mp3"), "still its user's");
        assert_eq!(c.take(7, &a), None, "single use");
        for id in 0..(PER_USER as u64 + 10) {
            c.issue(100 + id, &a, &key);
        }
        assert_eq!(c.pending.lock().unwrap().len(), PER_USER);
        assert_eq!(c.take(100, &a), None, "the oldest went first");
        assert!(c.take(100 + PER_USER as u64 + 9, &a).is_some());
    }
}
