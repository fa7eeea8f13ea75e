//! Who is calling: OpenSubsonic `apiKey` (the upload API's key), token auth (`u`, `t`, `s` with
//! `t = md5(subsonic password + s)`), or a plain password (`p=`, `p=enc:HEX`). The Subsonic
//! password is the one the server generated for the user, never the account's own.

use md5::{Digest, Md5};

use super::params::Params;
use super::response::Failure;
use crate::accounts::{Accounts, same};

/// Which Subsonic credentials the server takes (`--subsonic-auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthModes {
    /// API keys, tokens and passwords.
    #[default]
    All,
    /// API keys only: token auth answers error 41, a password error 42.
    ApiKeyOnly,
}

fn wrong() -> Failure {
    Failure::new(40, "Wrong username or password")
}

fn conflicting() -> Failure {
    Failure::new(
        43,
        "Multiple conflicting authentication mechanisms provided",
    )
}

/// Compares without leaking where two strings first differ.
fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `p=enc:HEX` password decoded; `None` when the hex or the UTF-8 is invalid.
fn decode_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The name of the user the request's credentials authenticate.
pub fn authenticate(accounts: &Accounts, modes: AuthModes, p: &Params) -> Result<String, Failure> {
    if let Some(key) = p.get("apiKey") {
        if p.has("u") || p.has("t") || p.has("p") {
            return Err(conflicting());
        }
        return accounts
            .user_of_key(key.trim())
            .ok_or_else(|| Failure::new(44, "Invalid API key"));
    }
    let user = p.require("u")?;
    if p.has("t") && p.has("p") {
        return Err(conflicting());
    }
    if let Some(token) = p.get("t") {
        if modes == AuthModes::ApiKeyOnly {
            return Err(Failure::new(
                41,
                "Token authentication not supported: use an API key (apiKey)",
            ));
        }
        let salt = p.require("s")?;
        let password = accounts.subsonic_password(user).ok_or_else(wrong)?;
        let expected = md5_hex(&format!("{password}{salt}"));
        return if same(expected.as_bytes(), token.to_ascii_lowercase().as_bytes()) {
            Ok(user.to_owned())
        } else {
            Err(wrong())
        };
    }
    if let Some(given) = p.get("p") {
        if modes == AuthModes::ApiKeyOnly {
            return Err(Failure::new(
                42,
                "Provided authentication mechanism not supported: use an API key (apiKey)",
            ));
        }
        let given = match given.strip_prefix("enc:") {
            Some(hex) => decode_hex(hex).ok_or_else(wrong)?,
            None => given.to_owned(),
        };
        return if accounts.check_password(user, &given) {
            Ok(user.to_owned())
        } else {
            Err(wrong())
        };
    }
    Err(Failure::missing("t or p (or apiKey)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mechanism_and_error() {
        let tmp = tempfile::tempdir().unwrap();
        let accounts = Accounts::open(tmp.path()).unwrap();
        let alice = accounts.add("alice").unwrap();
        let auth = |q: &str, modes| authenticate(&accounts, modes, &Params::parse(Some(q), None));
        let code = |q: &str, modes| auth(q, modes).unwrap_err().code;
        let all = AuthModes::All;
        let token = md5_hex(&format!("{}salt", alice.subsonic_password));
        assert_eq!(
            auth(&format!("apiKey={}", alice.api_key), all).unwrap(),
            "alice"
        );
        assert_eq!(
            auth(&format!("u=alice&t={token}&s=salt"), all).unwrap(),
            "alice"
        );
        let upper = token.to_ascii_uppercase();
        assert_eq!(
            auth(&format!("u=alice&t={upper}&s=salt"), all).unwrap(),
            "alice"
        );
        let pw = &alice.subsonic_password;
        assert_eq!(auth(&format!("u=alice&p={pw}"), all).unwrap(), "alice");
        let enc: String = pw.bytes().map(|b| format!("{b:02X}")).collect();
        assert_eq!(auth(&format!("u=alice&p=enc:{enc}"), all).unwrap(), "alice");
        assert_eq!(code(&format!("u=alice&apiKey={}", alice.api_key), all), 43);
        assert_eq!(code(&format!("u=alice&t={token}&s=salt&p={pw}"), all), 43);
        assert_eq!(code("apiKey=lk_nope", all), 44);
        assert_eq!(code("u=alice", all), 10);
        assert_eq!(code(&format!("u=alice&t={token}"), all), 10);
        assert_eq!(code(&format!("t={token}&s=salt"), all), 10);
        assert_eq!(code(&format!("u=alice&t={token}&s=pepper"), all), 40);
        assert_eq!(code(&format!("u=bob&t={token}&s=salt"), all), 40);
        assert_eq!(code("u=alice&p=enc:zz", all), 40);
        assert_eq!(code("u=alice&p=wrong", all), 40);
        let only = AuthModes::ApiKeyOnly;
        assert_eq!(code(&format!("u=alice&t={token}&s=salt"), only), 41);
        assert_eq!(code(&format!("u=alice&p={pw}"), only), 42);
        assert_eq!(
            auth(&format!("apiKey={}", alice.api_key), only).unwrap(),
            "alice"
        );
    }
}
