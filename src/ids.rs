//! Distinct id types of content and storage: chunk ids, fingerprints, pack ids, user numbers
//! and copy domains. Plain values with their encodings; nothing here depends on the rest of the
//! crate.

use std::fmt;

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
#[non_exhaustive]
pub enum Domain {
    /// Everybody's content, stored once (single-master mode).
    Shared,
    /// One user's own copies (per-user-copy mode).
    User(UserNo),
}

/// `shared`, or `user#<number>`.
impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Shared => f.write_str("shared"),
            Domain::User(n) => write!(f, "user#{}", n.0),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(Domain::User(UserNo(5)).to_string(), "user#5");
        assert_eq!(Domain::Shared.to_string(), "shared");
        assert_eq!(Domain::from_u64(2 << 56), None);
        assert_eq!(Domain::from_u64(1 << 56), None);
        assert_eq!(Domain::from_u64(7), None);
    }
}
