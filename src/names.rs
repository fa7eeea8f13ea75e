//! The names callers choose: user ids and track keys, validated once when made.

use std::fmt;

use crate::error::{Error, Result};

/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest track key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

fn check_name(bytes: &[u8], max: usize) -> std::result::Result<&str, &'static str> {
    if bytes.is_empty() {
        return Err("empty");
    }
    if bytes.len() > max {
        return Err("too long");
    }
    let s = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
    if s.contains('\0') {
        return Err("contains NUL");
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    Ok(s)
}

/// A locker owner's opaque id: 1 to 256 bytes of UTF-8 without NUL or control characters.
/// Never used as a path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

impl UserId {
    /// Validates a user id.
    pub fn new(id: &str) -> Result<UserId> {
        Self::from_bytes(id.as_bytes())
    }

    /// Validates a user id given as raw bytes (for ids that come from outside, such as argv).
    pub fn from_bytes(id: &[u8]) -> Result<UserId> {
        check_name(id, MAX_USER_ID_LEN)
            .map(|s| UserId(s.to_owned()))
            .map_err(Error::InvalidUserId)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a track inside a user's locker, such as `"Artist/Album/01 Song.mp3"`: 1 to 1024
/// bytes of UTF-8 without NUL or control characters. Slashes and `..` are ordinary characters:
/// a key is never used as a path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackKey(String);

impl TrackKey {
    /// Validates a track key.
    pub fn new(key: &str) -> Result<TrackKey> {
        Self::from_bytes(key.as_bytes())
    }

    /// Validates a track key given as raw bytes.
    pub fn from_bytes(key: &[u8]) -> Result<TrackKey> {
        check_name(key, MAX_KEY_LEN)
            .map(|s| TrackKey(s.to_owned()))
            .map_err(Error::InvalidKey)
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TrackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrackKey({:?})", self.0)
    }
}

impl fmt::Display for TrackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(UserId::new("alice").is_ok());
        assert!(matches!(
            UserId::new(""),
            Err(Error::InvalidUserId("empty"))
        ));
        assert!(matches!(
            UserId::new("a\0b"),
            Err(Error::InvalidUserId("contains NUL"))
        ));
        assert!(matches!(
            UserId::from_bytes(&[0xff, 0xfe]),
            Err(Error::InvalidUserId("not UTF-8"))
        ));
        assert!(matches!(
            UserId::new(&"x".repeat(MAX_USER_ID_LEN + 1)),
            Err(Error::InvalidUserId("too long"))
        ));
        assert!(TrackKey::new("Artist/Album/../01 Song.mp3").is_ok());
        assert!(matches!(TrackKey::new("a\nb"), Err(Error::InvalidKey(_))));
        assert!(TrackKey::new(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(TrackKey::new(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
