//! Who a request comes from, for the JSON APIs: a key in `Authorization: Bearer` (what scripts
//! and apps send) or a browser session's cookie (what the web pages send; [`crate::session`]).
//! A caller only ever names things of their own: the user comes from the credentials, never
//! from the request.
//!
//! A session authenticates a state-changing request (anything but GET, HEAD and OPTIONS) only
//! with its CSRF token in `X-CSRF-Token`, and only when the browser does not say the request
//! comes from another origin (`Sec-Fetch-Site`, `Origin`). A bearer key needs neither: a browser
//! never attaches one by itself, so another site cannot make it send one.
//!
//! Also here: signing in and out (`/api/v1/session`, `/api/v1/admin/session`).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use lockerstore::UserId;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::http::ApiError;
use crate::session::{Live, OPERATOR_COOKIE, Principal, USER_COOKIE, cookie_value};

/// The header a session's state-changing requests carry their CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

fn unauthorized(what: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, what)
}

/// The key of `Authorization: Bearer KEY`: `None` without the header, `Err` with another
/// scheme (the scheme is case-insensitive, RFC 9110 11.1).
fn bearer(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, key) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
            })
            .ok_or(()),
    )
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the browser says the request comes from this server's own pages. Current browsers
/// (Chromium, Firefox, Safari) send `Sec-Fetch-Site`, which alone decides: it compares the
/// page's origin with the URL's as the browser sees them, so it stays right behind a proxy
/// that rewrites `Host`. Older ones send `Origin` on cross-origin and state-changing requests,
/// compared with `Host` (behind a proxy, forward the browser's host: nginx `proxy_set_header
/// Host $host`). A client that sends neither is no browser another site could drive.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The live session of the request's cookie of `operator`'s kind, checked against forgery
/// when the request changes state.
fn session(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    operator: bool,
) -> Result<Live, ApiError> {
    let name = if operator {
        OPERATOR_COOKIE
    } else {
        USER_COOKIE
    };
    let token = cookie_value(headers, name).ok_or_else(|| {
        unauthorized(if operator {
            "operator credentials are needed: a key or a session"
        } else {
            "a valid API key or a session is needed"
        })
    })?;
    let live = app
        .sessions
        .check(&token, operator)
        .ok_or_else(|| unauthorized("the session expired or ended: sign in again"))?;
    if changes_state(method) {
        if !same_origin(headers) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a request from another site",
            ));
        }
        let given = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !crate::accounts::same(given.as_bytes(), live.csrf.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the session's CSRF token (X-CSRF-Token) is missing or wrong",
            ));
        }
    }
    Ok(live)
}

/// The user a request of the user APIs comes from.
pub fn user_of(app: &App, method: &Method, headers: &HeaderMap) -> Result<UserId, ApiError> {
    let name = match bearer(headers) {
        Some(key) => key
            .ok()
            .and_then(|k| app.accounts.user_of_key(k))
            .ok_or_else(|| unauthorized("a valid API key is needed"))?,
        None => match session(app, method, headers, false)?.who {
            Principal::User(name) => name,
            Principal::Operator(_) => return Err(unauthorized("a user's session is needed")),
        },
    };
    UserId::new(&name).map_err(|_| unauthorized("a valid API key is needed"))
}

/// The operator a request of the operator API comes from.
pub fn operator_of(app: &App, method: &Method, headers: &HeaderMap) -> Result<String, ApiError> {
    match bearer(headers) {
        Some(key) => key
            .ok()
            .and_then(|k| app.accounts.operator_of_key(k))
            .ok_or_else(|| unauthorized("a valid operator key is needed")),
        None => Ok(session(app, method, headers, true)?.who.name().to_owned()),
    }
}

/// Middleware of the operator API: only operators pass.
pub async fn require_operator(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let operator = operator_of(&app, request.method(), request.headers())?;
    let changes = changes_state(request.method());
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let response = next.run(request).await;
    // Every change an operator makes is on record, with who made it.
    if changes {
        tracing::info!(
            operator,
            route,
            status = response.status().as_u16(),
            "operator action"
        );
    }
    Ok(response)
}

// --- signing in and out ----------------------------------------------------------------------

/// Sign-in bodies are small.
const SIGN_IN_BODY_MAX: usize = 4 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSignIn {
    api_key: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorSignIn {
    operator_key: String,
}

fn describe(live: &Live) -> serde_json::Value {
    let who = match &live.who {
        Principal::User(_) => "user",
        Principal::Operator(_) => "operator",
    };
    json!({ who: live.who.name(), "csrf": live.csrf, "expires_in": live.expires_in })
}

fn signed_in(app: &App, who: Principal) -> Result<Response, ApiError> {
    let started = app.sessions.start(who).map_err(|e| {
        tracing::error!(error = %e, "no randomness for a session");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })?;
    let cookie = app.sessions.cookie(&started);
    Ok((
        [
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        axum::Json(describe(&started.live)),
    )
        .into_response())
}

/// Reads a sign-in body: JSON of at most [`SIGN_IN_BODY_MAX`] bytes, from this origin.
async fn sign_in_body<T: serde::de::DeserializeOwned>(request: Request) -> Result<T, ApiError> {
    // Signing a victim's browser into the attacker's account is forgery too; and no HTML form
    // can send JSON's content type.
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "sign in with a JSON body (Content-Type: application/json)",
        ));
    }
    if !same_origin(request.headers()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a request from another site",
        ));
    }
    let bytes = axum::body::to_bytes(request.into_body(), SIGN_IN_BODY_MAX)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad sign-in: {e}")))
}

async fn user_sign_in(State(app): State<App>, request: Request) -> Result<Response, ApiError> {
    let body: UserSignIn = sign_in_body(request).await?;
    let wrong = || unauthorized("wrong credentials");
    let name = match body {
        UserSignIn {
            api_key: Some(key),
            user: None,
            password: None,
        } => app.accounts.user_of_key(key.trim()).ok_or_else(wrong)?,
        UserSignIn {
            api_key: None,
            user: Some(user),
            password: Some(password),
        } => {
            // The operator who turned passwords off for /rest/ turned them off here too.
            if app.subsonic_auth == crate::subsonic::AuthModes::ApiKeyOnly {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "this server takes API keys only: sign in with {\"api_key\"}",
                ));
            }
            if !app.accounts.check_password(&user, &password) {
                return Err(wrong());
            }
            user
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "sign in with {\"api_key\"} or with {\"user\", \"password\"}",
            ));
        }
    };
    signed_in(&app, Principal::User(name))
}

async fn operator_sign_in(State(app): State<App>, request: Request) -> Result<Response, ApiError> {
    let body: OperatorSignIn = sign_in_body(request).await?;
    let name = app
        .accounts
        .operator_of_key(body.operator_key.trim())
        .ok_or_else(|| unauthorized("wrong credentials"))?;
    signed_in(&app, Principal::Operator(name))
}

async fn current(app: &App, method: &Method, headers: &HeaderMap, operator: bool) -> Response {
    match session(app, method, headers, operator) {
        Ok(live) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(describe(&live)),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn sign_out(app: &App, method: &Method, headers: &HeaderMap, operator: bool) -> Response {
    let name = if operator {
        OPERATOR_COOKIE
    } else {
        USER_COOKIE
    };
    match session(app, method, headers, operator) {
        Ok(live) => {
            if let Some(token) = cookie_value(headers, name) {
                app.sessions.end(&token);
            }
            (
                StatusCode::NO_CONTENT,
                [(header::SET_COOKIE, app.sessions.removal(&live.who))],
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `/api/v1/session`: a user's sign-in (`POST`), the live session (`GET`), sign-out (`DELETE`).
pub fn user_routes() -> Router<App> {
    Router::new().route(
        "/api/v1/session",
        post(user_sign_in)
            .get(
                |State(app): State<App>, m: Method, h: HeaderMap| async move {
                    current(&app, &m, &h, false).await
                },
            )
            .delete(
                |State(app): State<App>, m: Method, h: HeaderMap| async move {
                    sign_out(&app, &m, &h, false).await
                },
            ),
    )
}

/// `/api/v1/admin/session`: the same for operators.
pub fn operator_routes() -> Router<App> {
    Router::new().route(
        "/api/v1/admin/session",
        post(operator_sign_in)
            .get(
                |State(app): State<App>, m: Method, h: HeaderMap| async move {
                    current(&app, &m, &h, true).await
                },
            )
            .delete(
                |State(app): State<App>, m: Method, h: HeaderMap| async move {
                    sign_out(&app, &m, &h, true).await
                },
            ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn requests_from_other_origins_are_told_apart() {
        assert!(same_origin(&headers(&[])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:4533"),
            ("origin", "http://127.0.0.1:4533")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:4533"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:4533"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://127.0.0.1:4533"
        )])));
    }

    #[test]
    fn bearer_keys_are_read_with_any_case_of_the_scheme() {
        assert_eq!(bearer(&headers(&[])), None);
        assert_eq!(
            bearer(&headers(&[("authorization", "bEaReR  lk_1 ")])),
            Some(Ok("lk_1"))
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "Basic eDp5")])),
            Some(Err(()))
        );
    }
}
