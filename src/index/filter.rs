//! An in-memory Bloom filter of the chunk entry keys `(domain, chunk id)` that may exist, so an
//! ingest skips the metadata store for content that is certainly new.
//!
//! - **No false negatives.** Every key is added *before* the transaction that writes its entry
//!   commits (the metadata store adds it in `put_chunk`), and the filter is filled from every
//!   committed entry when the store opens. So "absent" means no committed entry has that key.
//!   Even a wrong "absent" would not lose data: the put's commit re-checks every entry it
//!   inserts and treats a record that lost the race as garbage.
//! - **False positives** cost one metadata lookup, as without the filter. Removed entries stay
//!   in the filter until the store is reopened.
//! - **Size.** [`BITS_PER_KEY`] bits per key for twice the entries the store holds at open (at
//!   least [`MIN_KEYS`] keys), rounded up to a power of two, and [`PROBES`] probes: at most
//!   about 0.3 % false positives at that design load. That is 3 to 6 bytes of RAM per stored
//!   chunk (the target allows 64), and 2 MiB for a store of up to half a million chunks
//!   (128 GB at the default 256 KiB average chunk). A store that grows past the design load
//!   within one open keeps working; only the false-positive rate rises, until the next open
//!   sizes the filter again. Opening reads every chunk key once to fill it.
//!
//! Chunk ids are BLAKE3 hashes, so their bytes are already uniformly distributed: the probes
//! are derived from them directly (double hashing), mixed with the domain so the per-user
//! copies of one chunk fall on different bits.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::{ChunkId, Domain};

/// Bits of filter per expected key.
pub(crate) const BITS_PER_KEY: u64 = 12;
/// Bits tested per key.
pub(crate) const PROBES: u64 = 7;
/// The filter is sized for at least this many keys.
pub(crate) const MIN_KEYS: u64 = 1 << 20;

#[derive(Debug)]
pub(crate) struct ChunkFilter {
    words: Box<[AtomicU64]>,
    /// Number of bits minus one (a power of two minus one).
    mask: u64,
}

impl ChunkFilter {
    /// A filter sized for a store holding `entries` chunk entries now.
    pub(crate) fn for_entries(entries: u64) -> ChunkFilter {
        let keys = entries.saturating_mul(2).max(MIN_KEYS);
        let bits = keys
            .saturating_mul(BITS_PER_KEY)
            .next_power_of_two()
            .max(64);
        ChunkFilter {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits - 1,
        }
    }

    /// A filter that answers "may contain" for every key: for metadata other processes write
    /// too, whose entries this process never sees being written.
    pub(crate) fn everything() -> ChunkFilter {
        ChunkFilter {
            words: Box::new([]),
            mask: 0,
        }
    }

    /// RAM held by the filter, in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn probes(&self, domain: Domain, id: &ChunkId) -> impl Iterator<Item = u64> + use<> {
        let b = &id.0;
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        // Domain codes are small integers with a kind tag; spread them over the word.
        let d = domain.to_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h1 = word(0) ^ d;
        let h2 = (word(8) ^ d.rotate_left(32)) | 1;
        let mask = self.mask;
        (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & mask)
    }

    /// Adds a key. Lock-free; safe from any thread.
    pub(crate) fn insert(&self, domain: Domain, id: &ChunkId) {
        if self.words.is_empty() {
            return;
        }
        for bit in self.probes(domain, id) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Release);
        }
    }

    /// Whether the key may have an entry; `false` means it certainly has none.
    pub(crate) fn may_contain(&self, domain: Domain, id: &ChunkId) -> bool {
        if self.words.is_empty() {
            return true;
        }
        self.probes(domain, id).all(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Acquire) & (1 << (bit % 64)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserNo;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let f = ChunkFilter::for_entries(0);
        assert_eq!(
            f.bytes() as u64 * 8,
            (MIN_KEYS * BITS_PER_KEY).next_power_of_two()
        );
        let id = |i: u32| ChunkId::of(&i.to_le_bytes());
        let user = Domain::User(UserNo(3));
        for i in 0..MIN_KEYS as u32 {
            f.insert(Domain::Shared, &id(i));
        }
        for i in 0..MIN_KEYS as u32 {
            assert!(f.may_contain(Domain::Shared, &id(i)));
        }
        // The same ids in another domain, and ids never added: mostly absent.
        let probes = 200_000u32;
        let other = (0..probes).filter(|&i| f.may_contain(user, &id(i))).count();
        let new = (0..probes)
            .filter(|&i| f.may_contain(Domain::Shared, &id(MIN_KEYS as u32 + i)))
            .count();
        // At half the design load the expected rate is well under 0.5 %.
        for fp in [other, new] {
            assert!((fp as f64) < 0.005 * probes as f64, "{fp} false positives");
        }
    }
}
