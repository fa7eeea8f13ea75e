//! Where the server's own state lives beside the store: the seam between one node and many.
//!
//! | state | [`Backend::Files`] (one node) | [`Backend::Postgres`] (`--meta`, many nodes) |
//! |---|---|---|
//! | accounts, operators, keys | `<store>/server/accounts.json` | `srv_accounts`, `srv_operators`, `srv_keys` |
//! | stars, plays, playlists | `<store>/server/subsonic/*.json` | `srv_userdata` |
//! | web sessions | this process's memory | `srv_sessions` |
//! | catalogue (derived from the store) | `<store>/server/catalog/`, checked at start | the same files on each node, checked against the store before each read |
//! | tus uploads in progress | `<store>/server/uploads/` | the same, node-local: an upload resumes through the node it started on |
//!
//! Each component ([`crate::accounts::Accounts`], [`crate::subsonic::userdata::UserDataStore`],
//! [`crate::session::Sessions`]) opens on a `Backend` and keeps its two implementations
//! inside; handlers never see which one runs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::pg::Pg;

/// Where the state every node must share lives.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Files in the state directory (`<store>/server`) and memory: one node.
    Files(PathBuf),
    /// The server's `srv_*` tables in PostgreSQL: any number of nodes.
    Postgres(Arc<Pg>),
}

impl Backend {
    /// Whether other nodes may change the store and the shared state behind this one's back
    /// (so what this node derives from them must be checked before use).
    pub fn shared(&self) -> bool {
        matches!(self, Backend::Postgres(_))
    }
}
