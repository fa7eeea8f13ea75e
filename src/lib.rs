//! # lockerstore
//!
//! An embeddable, deduplicating, content-addressed storage engine for music-locker services.
//!
//! Every uploaded track is cut into chunks by FastCDC, each chunk is named by its BLAKE3 hash and
//! stored once per *copy domain* in append-only pack files; metadata lives in redb. A license
//! flag decides the domain: in [`LicenseMode::PerUserCopy`] every user's chunks are their own
//! physical copies (dedup only inside one locker); in [`LicenseMode::SingleMaster`] identical
//! content is stored once for everybody. Every read is verified against the chunk ids and the
//! track fingerprint; every acknowledged write survives a crash.
//!
//! ```
//! use std::io::{Read, Seek, SeekFrom};
//! use lockerstore::{LicenseMode, Options, Store, TrackKey, UserId};
//!
//! # fn main() -> lockerstore::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path(), Options::default().mode(LicenseMode::SingleMaster))?;
//! let alice = UserId::new("alice")?;
//! let key = TrackKey::new("Artist/Album/01 Song.mp3")?;
//! let song: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
//!
//! let put = store.put(&alice, &key, &song[..])?;
//! assert_eq!(put.len, song.len() as u64);
//!
//! let mut reader = store.open_track(&alice, &key)?;
//! reader.seek(SeekFrom::Start(500_000)).unwrap();
//! let mut buf = [0u8; 16];
//! reader.read_exact(&mut buf).unwrap();
//! assert_eq!(&buf[..], &song[500_000..500_016]);
//!
//! let stats = store.stats()?;
//! assert_eq!(stats.tracks, 1);
//! assert!(store.verify()?.is_ok());
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "object-store")]
mod bucket;
mod chunk;
// Test support (synthetic corpora, crafted inputs) is compiled only with the `test-support`
// feature; the crate's own tests, unit tests included, get it through its self dev-dependency.
#[cfg(feature = "test-support")]
pub mod corpus;
#[cfg(feature = "test-support")]
mod crafted;
mod engine;
mod error;
mod format;
mod ids;
mod index;
mod maint;
mod names;
mod ownership;
mod pack;
mod policy;
mod random;
mod read;
mod segment;
mod store;
mod tags;
// The file seam: public with `test-support` only, for tests that inject faults.
#[cfg(feature = "test-support")]
pub mod vfs;
#[cfg(not(feature = "test-support"))]
mod vfs;
mod write;

#[cfg(feature = "object-store")]
pub use bucket::ObjectLocation;
pub use chunk::ChunkerParams;
pub use error::{Error, Result};
pub use ids::{AudioFingerprint, ChunkId, Domain, Fingerprint, PackId, UserNo};
#[cfg(feature = "object-store")]
pub use index::journal::RebuildReport;
pub use maint::audit::{AuditReport, HolderAudit, RecordOwnership};
pub use maint::gc::{GcOptions, GcProgress, GcReport};
pub use maint::migrate::{MigrationProgress, MigrationReport};
pub use maint::verify::{DamagedTrack, DroppedDamage, VerifyReport};
pub use maint::whatif::{HolderWhatIf, HolderWhatIfs, WhatIf};
pub use names::{MAX_HOLDER_LEN, MAX_KEY_LEN, MAX_USER_ID_LEN, RightsHolder, TrackKey, UserId};
pub use ownership::{
    CHALLENGE_TTL, Challenge, ClientTrack, OwnershipClaim, ProofOutcome, REFUSAL_FLOOR,
};
pub use pack::RecoveryReport;
pub use policy::quota::{Quota, QuotaUsage};
pub use policy::{Licence, Licences, LicenseMode};
pub use read::TrackReader;
pub use read::catalog::{Stats, TrackInfo, UserStats};
pub use store::{Options, PackDurability, Store, StoreFileRepair};
pub use write::{PutOptions, PutOutcome};

/// Byte-level parsers of stored formats, exposed for the fuzz targets. Not a stable API.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod fuzzing;
