//! Distinct id types: user ids, track keys, chunk ids, pack ids, copy domains, license modes.

use std::fmt;

use crate::error::{Error, Result};

/// `N` bytes from the OS's random source (store ids, chunker seeds, challenges and nonces);
/// `what` names what they are for in the error if the source fails.
pub(crate) fn random_bytes<const N: usize>(what: &'static str) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        op: "gather randomness for",
        path: what.into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

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

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// BLAKE3 of `bytes`.
            pub fn of(bytes: &[u8]) -> $name {
                $name(*blake3::hash(bytes).as_bytes())
            }

            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                blake3::Hash::from_bytes(self.0).to_hex().to_string()
            }

            /// Parses 64 hex digits.
            pub fn from_hex(hex: &str) -> Option<$name> {
                blake3::Hash::from_hex(hex).ok().map(|h| $name(*h.as_bytes()))
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> $name {
                $name(*h.as_bytes())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), &self.to_hex()[..16])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

hash_id!(
    /// BLAKE3 of a chunk's plain bytes.
    ChunkId
);
hash_id!(
    /// BLAKE3 of a whole track's bytes, exactly as uploaded.
    Fingerprint
);
hash_id!(
    /// BLAKE3 of a track's audio payload alone (tags stripped): the same recording under other
    /// tags has the same audio fingerprint.
    AudioFingerprint
);

/// Number of a pack file; its name is the number as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PackId(pub u64);

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The internal number the store gives a user the first time it sees them. User numbers start
/// at 1 and are never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct UserNo(pub u64);

/// The scope within which identical chunks are stored once. A physical chunk record belongs to
/// exactly one domain.
///
/// On disk a domain is one little-endian `u64`: the top byte is the kind (0 shared, 1 user,
/// 2..=255 reserved for later scopes such as per-rights-holder domains), the low 56 bits its id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Domain {
    /// Everybody's content, stored once (single-master mode).
    Shared,
    /// One user's own copies (per-user-copy mode).
    User(UserNo),
}

const DOMAIN_KIND_SHIFT: u32 = 56;
const DOMAIN_ID_MASK: u64 = (1 << DOMAIN_KIND_SHIFT) - 1;

impl Domain {
    /// The on-disk encoding.
    pub fn to_u64(self) -> u64 {
        match self {
            Domain::Shared => 0,
            Domain::User(UserNo(n)) => (1 << DOMAIN_KIND_SHIFT) | (n & DOMAIN_ID_MASK),
        }
    }

    /// Decodes the on-disk encoding; `None` for kinds this version does not know.
    pub fn from_u64(v: u64) -> Option<Domain> {
        match (v >> DOMAIN_KIND_SHIFT, v & DOMAIN_ID_MASK) {
            (0, 0) => Some(Domain::Shared),
            (1, n) if n != 0 => Some(Domain::User(UserNo(n))),
            _ => None,
        }
    }
}

/// The license policy: where new content goes, and what layout migration aims at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LicenseMode {
    /// No licence: every user's chunks live in that user's own domain.
    PerUserCopy,
    /// Licensed: identical content is stored once for everybody.
    SingleMaster,
}

impl LicenseMode {
    /// The domain a new chunk of `user` goes to under this mode.
    pub fn domain_for(self, user: UserNo) -> Domain {
        match self {
            LicenseMode::PerUserCopy => Domain::User(user),
            LicenseMode::SingleMaster => Domain::Shared,
        }
    }

    /// `"per-user-copy"` or `"single-master"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenseMode::PerUserCopy => "per-user-copy",
            LicenseMode::SingleMaster => "single-master",
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            LicenseMode::PerUserCopy => 1,
            LicenseMode::SingleMaster => 2,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<LicenseMode> {
        match b {
            1 => Some(LicenseMode::PerUserCopy),
            2 => Some(LicenseMode::SingleMaster),
            _ => None,
        }
    }
}

impl fmt::Display for LicenseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LicenseMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "per-user-copy" => Ok(LicenseMode::PerUserCopy),
            "single-master" => Ok(LicenseMode::SingleMaster),
            other => Err(format!(
                "unknown mode {other:?}: expected per-user-copy or single-master"
            )),
        }
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

    #[test]
    fn domain_encoding_round_trips_and_rejects_unknown_kinds() {
        for d in [
            Domain::Shared,
            Domain::User(UserNo(1)),
            Domain::User(UserNo(77)),
        ] {
            assert_eq!(Domain::from_u64(d.to_u64()), Some(d));
        }
        assert_eq!(Domain::User(UserNo(5)).to_u64(), 0x0100_0000_0000_0005);
        assert_eq!(Domain::from_u64(2 << 56), None);
        assert_eq!(Domain::from_u64(1 << 56), None);
        assert_eq!(Domain::from_u64(7), None);
    }
}
