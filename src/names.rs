//! The names callers choose: user ids and track keys, validated once when made.

use std::fmt;

use crate::error::{Error, Result};

/// Longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest track key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest rights-holder name, in bytes.
pub const MAX_HOLDER_LEN: usize = 128;

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

/// The rights holder of a track (a record label, a distributor): 1 to 128 bytes of UTF-8 without
/// NUL or control characters, with no whitespace at either end. Licences are granted per rights
/// holder ([`crate::Licence`]); names are compared exactly, byte for byte. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RightsHolder(std::sync::Arc<str>);

impl RightsHolder {
    /// Validates a rights-holder name.
    pub fn new(name: &str) -> Result<RightsHolder> {
        Self::from_bytes(name.as_bytes())
    }

    /// Validates a rights-holder name given as raw bytes.
    pub fn from_bytes(name: &[u8]) -> Result<RightsHolder> {
        let s = check_name(name, MAX_HOLDER_LEN).map_err(Error::InvalidRightsHolder)?;
        if s.trim() != s {
            return Err(Error::InvalidRightsHolder("begins or ends with whitespace"));
        }
        Ok(RightsHolder(s.into()))
    }

    /// The name a tag gives, made valid: control characters dropped, whitespace runs made one
    /// space, trimmed, cut to [`MAX_HOLDER_LEN`] bytes at a character boundary. `None` when
    /// nothing is left.
    #[cfg_attr(not(feature = "tags"), allow(dead_code))]
    pub(crate) fn from_tag(text: &str) -> Option<RightsHolder> {
        let mut clean = String::new();
        for word in text
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
        {
            let extra = usize::from(!clean.is_empty()) + word.len();
            if clean.len() + extra > MAX_HOLDER_LEN {
                if clean.is_empty() {
                    let mut end = MAX_HOLDER_LEN;
                    while !word.is_char_boundary(end) {
                        end -= 1;
                    }
                    clean.push_str(&word[..end]);
                }
                break;
            }
            if !clean.is_empty() {
                clean.push(' ');
            }
            clean.push_str(word);
        }
        RightsHolder::new(&clean).ok()
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RightsHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RightsHolder({:?})", &*self.0)
    }
}

impl fmt::Display for RightsHolder {
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
        assert!(RightsHolder::new("EMI").is_ok());
        assert!(RightsHolder::new(" EMI").is_err());
        assert!(RightsHolder::new("").is_err());
        assert!(RightsHolder::new(&"h".repeat(MAX_HOLDER_LEN + 1)).is_err());
    }

    #[test]
    fn tag_text_is_cleaned_into_a_holder() {
        let h = |s: &str| RightsHolder::from_tag(s).map(|h| h.as_str().to_owned());
        assert_eq!(h("  Warp\tRecords \n").as_deref(), Some("Warp Records"));
        assert_eq!(h(" \u{0} \n"), None);
        let long = "é".repeat(100);
        let cut = h(&long).unwrap();
        assert!(cut.len() <= MAX_HOLDER_LEN && cut.chars().all(|c| c == 'é'));
        let words = "Label ".repeat(40);
        let cut = h(&words).unwrap();
        assert!(cut.len() <= MAX_HOLDER_LEN && cut.ends_with("Label"));
    }
}
