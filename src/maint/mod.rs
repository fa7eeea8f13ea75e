//! Maintenance: garbage collection and compaction, migration between layouts with its
//! what-if and audit, and verification. Each is a function over the engine; the store's façade
//! calls them.

pub(crate) mod audit;
pub(crate) mod gc;
pub(crate) mod migrate;
pub(crate) mod verify;
pub(crate) mod whatif;
