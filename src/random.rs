//! The one source of randomness: the OS's.

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
