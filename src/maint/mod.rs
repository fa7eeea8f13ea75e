//! Maintenance: garbage collection and compaction, migration between license modes with its
//! what-if and audit, and verification. Each is a function over the engine; the store's façade
//! calls them.

pub(crate) mod gc;
pub(crate) mod migrate;
pub(crate) mod verify;
