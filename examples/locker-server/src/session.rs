//! Browser sessions: what the web pages sign in with instead of carrying a key.
//!
//! Signing in (`POST /api/v1/session` for users, `POST /api/v1/admin/session` for operators)
//! checks the credentials once and sets a cookie holding a random 256-bit token: `HttpOnly` (no
//! script reads it), `SameSite=Strict` (no other site's page sends it), its path limited to what
//! it is for. The server keeps only the token's BLAKE3 hash, so its memory holds no usable
//! credential. A session ends after [`SessionLimits::idle`] without a request, after
//! [`SessionLimits::lifetime`] whatever happens, when its owner signs out, or when the user's
//! keys are revoked. With one node, sessions live in the server's memory: a restart signs
//! everybody out. With many (`--meta`), they are rows of `srv_sessions` in PostgreSQL (the
//! token's hash, whose, the CSRF token, wall-clock times in milliseconds), so a browser signed
//! in through one node is signed in on every node and a restart signs nobody out; a check is
//! one lookup, plus an update of the last use when it is a second old or more.
//!
//! Cross-site request forgery: every state-changing request that a session authenticates must
//! carry the session's CSRF token in `X-CSRF-Token` (a synchronizer token: the page learns it
//! from the JSON answer of the sign-in, which no other origin can read) and must not come from
//! another origin (`Origin`, `Sec-Fetch-Site`). See [`crate::auth`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pg::Pg;
use crate::state::Backend;

/// Who a session belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A locker's user (the player).
    User(String),
    /// An operator (the page at `/admin`).
    Operator(String),
}

impl Principal {
    /// The cookie that carries this kind of session, and the path it is sent to.
    pub fn cookie(&self) -> (&'static str, &'static str) {
        match self {
            Principal::User(_) => (USER_COOKIE, "/"),
            Principal::Operator(_) => (OPERATOR_COOKIE, "/api/v1/admin"),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Principal::User(n) | Principal::Operator(n) => n,
        }
    }
}

/// The users' session cookie.
pub const USER_COOKIE: &str = "locker_session";
/// The operators' session cookie (sent to `/api/v1/admin` only).
pub const OPERATOR_COOKIE: &str = "locker_operator";
/// Most live sessions of one principal: signing in once more ends the oldest.
const PER_PRINCIPAL: usize = 16;
/// Most live sessions in all: beyond, the least recently used ends.
const MAX_SESSIONS: usize = 100_000;

/// How long sessions live.
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after its sign-in, used or not.
    pub lifetime: Duration,
    /// Whether cookies carry `Secure` (the server is behind HTTPS).
    pub secure_cookies: bool,
}

#[derive(Debug)]
struct Session {
    who: Principal,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// A live session, as a request sees it.
#[derive(Clone, Debug)]
pub struct Live {
    pub who: Principal,
    pub csrf: String,
    /// Seconds until the session ends if unused.
    pub expires_in: u64,
}

/// A new session: the cookie's token (given to the browser, never kept) and what it is.
#[derive(Debug)]
pub struct Started {
    pub token: String,
    pub live: Live,
}

/// Every live session of the server.
#[derive(Debug)]
pub struct Sessions {
    limits: SessionLimits,
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    /// Set when sessions live in PostgreSQL (then `by_hash` is unused).
    pg: Option<Arc<Pg>>,
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Principal {
    /// The kind's name in the shared tables (the kinds of `srv_keys` too).
    fn kind(&self) -> &'static str {
        match self {
            Principal::User(_) => "user",
            Principal::Operator(_) => "operator",
        }
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Sessions {
        Sessions {
            limits,
            by_hash: Mutex::new(HashMap::new()),
            pg: None,
        }
    }

    /// Sessions kept where `backend` says: memory for files, `srv_sessions` for PostgreSQL.
    pub fn open_in(backend: &Backend, limits: SessionLimits) -> Sessions {
        let mut sessions = Sessions::new(limits);
        if let Backend::Postgres(pg) = backend {
            sessions.pg = Some(Arc::clone(pg));
        }
        sessions
    }

    /// What a session row says, as a request sees it; `None` when it has ended.
    fn pg_live(
        &self,
        who: Principal,
        csrf: String,
        created: i64,
        last: i64,
        now: i64,
    ) -> Option<Live> {
        let idle_left = ms(self.limits.idle) - (now - last);
        let life_left = ms(self.limits.lifetime) - (now - created);
        let left = idle_left.min(life_left);
        (left > 0).then(|| Live {
            who,
            csrf,
            expires_in: u64::try_from(left / 1000).unwrap_or(0),
        })
    }

    fn pg_start(&self, pg: &Pg, who: Principal) -> std::io::Result<Started> {
        let token = random_token()?;
        let csrf = random_token()?;
        let hash = token_hash(&token).to_vec();
        let now = now_ms();
        let (kind, name) = (who.kind(), who.name().to_owned());
        let idle_cut = now.saturating_sub(ms(self.limits.idle));
        let life_cut = now.saturating_sub(ms(self.limits.lifetime));
        let keep = i64::try_from(PER_PRINCIPAL).unwrap_or(16) - 1;
        pg.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::Serializable)
                .start()?;
            // Ended sessions go (everybody's idle ones through the index on last use).
            tx.execute(
                "DELETE FROM srv_sessions WHERE last_used_ms < $1",
                &[&idle_cut],
            )?;
            tx.execute(
                "DELETE FROM srv_sessions WHERE kind = $1 AND name = $2 AND created_ms < $3",
                &[&kind, &name, &life_cut],
            )?;
            // At most PER_PRINCIPAL: the least recently used beyond go.
            tx.execute(
                "DELETE FROM srv_sessions WHERE hash IN (
                     SELECT hash FROM srv_sessions WHERE kind = $1 AND name = $2
                     ORDER BY last_used_ms DESC OFFSET $3)",
                &[&kind, &name, &keep],
            )?;
            tx.execute(
                "INSERT INTO srv_sessions (hash, kind, name, csrf, created_ms, last_used_ms)
                 VALUES ($1, $2, $3, $4, $5, $5)",
                &[&hash, &kind, &name, &csrf, &now],
            )?;
            tx.commit()
        })?;
        let live = self
            .pg_live(who, csrf, now, now, now)
            .ok_or_else(|| std::io::Error::other("a session with no lifetime"))?;
        Ok(Started { token, live })
    }

    fn pg_check(&self, pg: &Pg, token: &str, operator: bool) -> std::io::Result<Option<Live>> {
        let hash = token_hash(token).to_vec();
        let now = now_ms();
        let Some(row) = pg.with(|c| {
            c.query_opt(
                "SELECT kind, name, csrf, created_ms, last_used_ms FROM srv_sessions
                 WHERE hash = $1",
                &[&hash],
            )
        })?
        else {
            return Ok(None);
        };
        let (kind, name): (String, String) = (row.get(0), row.get(1));
        let who = match kind.as_str() {
            "operator" => Principal::Operator(name),
            _ => Principal::User(name),
        };
        let (created, last): (i64, i64) = (row.get(3), row.get(4));
        let Some(live) = self.pg_live(who, row.get(2), created, last, now) else {
            pg.with(|c| c.execute("DELETE FROM srv_sessions WHERE hash = $1", &[&hash]))?;
            return Ok(None);
        };
        if matches!(live.who, Principal::Operator(_)) != operator {
            return Ok(None);
        }
        if now - last >= 1000 {
            pg.with(|c| {
                c.execute(
                    "UPDATE srv_sessions SET last_used_ms = $2 WHERE hash = $1",
                    &[&hash, &now],
                )
            })?;
            return Ok(self.pg_live(live.who, live.csrf, created, now, now));
        }
        Ok(Some(live))
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) < self.limits.idle
            && now.duration_since(s.created) < self.limits.lifetime
    }

    fn live(&self, s: &Session, now: Instant) -> Live {
        let idle_left = self
            .limits
            .idle
            .saturating_sub(now.duration_since(s.last_used));
        let life_left = self
            .limits
            .lifetime
            .saturating_sub(now.duration_since(s.created));
        Live {
            who: s.who.clone(),
            csrf: s.csrf.clone(),
            expires_in: idle_left.min(life_left).as_secs(),
        }
    }

    /// Starts a session for `who` (whose credentials the caller checked).
    pub fn start(&self, who: Principal) -> std::io::Result<Started> {
        if let Some(pg) = &self.pg {
            return self.pg_start(pg, who);
        }
        let token = random_token()?;
        let csrf = random_token()?;
        let now = Instant::now();
        let mut map = self.by_hash.lock().expect("sessions lock");
        map.retain(|_, s| self.alive(s, now));
        let oldest = |map: &HashMap<[u8; 32], Session>, of: Option<&Principal>| {
            map.iter()
                .filter(|(_, s)| of.is_none_or(|w| &s.who == w))
                .min_by_key(|(_, s)| s.last_used)
                .map(|(h, _)| *h)
        };
        if map.values().filter(|s| s.who == who).count() >= PER_PRINCIPAL
            && let Some(h) = oldest(&map, Some(&who))
        {
            map.remove(&h);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(h) = oldest(&map, None)
        {
            map.remove(&h);
        }
        let session = Session {
            who,
            csrf,
            created: now,
            last_used: now,
        };
        let live = self.live(&session, now);
        map.insert(token_hash(&token), session);
        Ok(Started { token, live })
    }

    /// The live session of `token`, if it is one of `kind`'s (`User` or `Operator`, whatever
    /// the name); using it keeps it alive.
    pub fn check(&self, token: &str, operator: bool) -> Option<Live> {
        if let Some(pg) = &self.pg {
            return self
                .pg_check(pg, token, operator)
                .inspect_err(|e| tracing::error!(error = %e, "session not checked"))
                .ok()
                .flatten();
        }
        let now = Instant::now();
        let mut map = self.by_hash.lock().expect("sessions lock");
        let h = token_hash(token);
        let s = map.get_mut(&h)?;
        if !self.alive(s, now) {
            map.remove(&h);
            return None;
        }
        if matches!(s.who, Principal::Operator(_)) != operator {
            return None;
        }
        s.last_used = now;
        Some(self.live(s, now))
    }

    /// Ends the session of `token`.
    pub fn end(&self, token: &str) {
        if let Some(pg) = &self.pg {
            let hash = token_hash(token).to_vec();
            if let Err(e) =
                pg.with(|c| c.execute("DELETE FROM srv_sessions WHERE hash = $1", &[&hash]))
            {
                tracing::error!(error = %e, "session not ended");
            }
            return;
        }
        self.by_hash
            .lock()
            .expect("sessions lock")
            .remove(&token_hash(token));
    }

    /// Ends every session of `who` (their keys were revoked).
    pub fn end_all(&self, who: &Principal) {
        if let Some(pg) = &self.pg {
            let (kind, name) = (who.kind(), who.name());
            if let Err(e) = pg.with(|c| {
                c.execute(
                    "DELETE FROM srv_sessions WHERE kind = $1 AND name = $2",
                    &[&kind, &name],
                )
            }) {
                tracing::error!(error = %e, "sessions not ended");
            }
            return;
        }
        self.by_hash
            .lock()
            .expect("sessions lock")
            .retain(|_, s| &s.who != who);
    }

    /// The `Set-Cookie` value that hands `started`'s token to the browser.
    pub fn cookie(&self, started: &Started) -> String {
        let (name, path) = started.live.who.cookie();
        let c = cookie::Cookie::build((name, started.token.clone()))
            .path(path)
            .http_only(true)
            .same_site(cookie::SameSite::Strict)
            .secure(self.limits.secure_cookies)
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(self.limits.lifetime.as_secs()).unwrap_or(i64::MAX),
            ))
            .build();
        c.to_string()
    }

    /// The `Set-Cookie` value that removes the cookie of `who`'s kind.
    pub fn removal(&self, who: &Principal) -> String {
        let (name, path) = who.cookie();
        let mut c = cookie::Cookie::build((name, ""))
            .path(path)
            .http_only(true)
            .same_site(cookie::SameSite::Strict)
            .build();
        c.make_removal();
        c.to_string()
    }
}

/// The value of cookie `name` in a request's `Cookie` headers; `None` when there is none or
/// more than one (a cookie planted by a sibling domain beside ours must not choose whose
/// session a request runs in).
pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    let mut found = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == name)
        .map(|c| c.value().to_owned());
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(idle: u64, lifetime: u64) -> Sessions {
        Sessions::new(SessionLimits {
            idle: Duration::from_millis(idle),
            lifetime: Duration::from_millis(lifetime),
            secure_cookies: false,
        })
    }

    #[test]
    fn a_session_is_found_by_its_token_only_for_its_kind_and_ends() {
        let s = sessions(60_000, 60_000);
        let alice = s.start(Principal::User("alice".into())).unwrap();
        let root = s.start(Principal::Operator("root".into())).unwrap();
        let live = s.check(&alice.token, false).unwrap();
        assert_eq!(live.who, Principal::User("alice".into()));
        assert_eq!(live.csrf, alice.live.csrf);
        assert_ne!(alice.live.csrf, root.live.csrf);
        assert!(
            s.check(&alice.token, true).is_none(),
            "a user is no operator"
        );
        assert!(
            s.check(&root.token, false).is_none(),
            "an operator is no user"
        );
        assert!(s.check(&root.token, true).is_some());
        assert!(s.check("0000", false).is_none());
        s.end(&alice.token);
        assert!(s.check(&alice.token, false).is_none());
        let again = s.start(Principal::User("alice".into())).unwrap();
        s.end_all(&Principal::User("alice".into()));
        assert!(s.check(&again.token, false).is_none());
        assert!(s.check(&root.token, true).is_some());
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_lifetime() {
        let s = sessions(150, 400);
        let a = s.start(Principal::User("a".into())).unwrap();
        let b = s.start(Principal::User("b".into())).unwrap();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(60));
            assert!(s.check(&a.token, false).is_some(), "use keeps it alive");
        }
        assert!(s.check(&b.token, false).is_none(), "idle too long");
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            s.check(&a.token, false).is_none(),
            "past its lifetime, however used"
        );
    }

    #[test]
    fn one_principal_has_a_bounded_number_of_sessions() {
        let s = sessions(60_000, 60_000);
        let first = s.start(Principal::User("a".into())).unwrap();
        let other = s.start(Principal::User("b".into())).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let later: Vec<_> = (0..PER_PRINCIPAL)
            .map(|_| s.start(Principal::User("a".into())).unwrap())
            .collect();
        assert!(s.check(&first.token, false).is_none(), "the oldest ended");
        assert!(later.iter().all(|l| s.check(&l.token, false).is_some()));
        assert!(s.check(&other.token, false).is_some(), "others keep theirs");
    }

    #[test]
    fn cookies_are_http_only_strict_and_scoped() {
        let s = sessions(60_000, 60_000);
        let a = s.start(Principal::Operator("root".into())).unwrap();
        let c = s.cookie(&a);
        assert!(
            c.starts_with(&format!("{OPERATOR_COOKIE}={}", a.token)),
            "{c}"
        );
        for part in ["HttpOnly", "SameSite=Strict", "Path=/api/v1/admin"] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(!c.contains("Secure"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            format!("x=1; {OPERATOR_COOKIE}={}; y=2", a.token)
                .parse()
                .unwrap(),
        );
        assert_eq!(
            cookie_value(&headers, OPERATOR_COOKIE).as_deref(),
            Some(a.token.as_str())
        );
        assert_eq!(cookie_value(&headers, USER_COOKIE), None);
        headers.append(
            axum::http::header::COOKIE,
            format!("{OPERATOR_COOKIE}=planted").parse().unwrap(),
        );
        assert_eq!(
            cookie_value(&headers, OPERATOR_COOKIE),
            None,
            "two: neither"
        );
        assert!(s.removal(&a.live.who).contains("Max-Age=0"));
    }
}
