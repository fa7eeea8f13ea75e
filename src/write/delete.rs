//! Deleting a track: one commit drops its references and its user's share of the accounting.

use crate::engine::{Engine, user_track};
use crate::error::Result;
use crate::index::refs::{Accounting, unlink_track};
use crate::index::write_with;
use crate::names::{TrackKey, UserId};

/// Deletes `user`'s track `key` (see `Store::delete`).
pub(crate) fn delete(engine: &Engine, user: &UserId, key: &TrackKey) -> Result<()> {
    // Bad input first: deleting a track that is not there must not release the ballast.
    engine.track_record(user, key)?;
    engine.space().room_for_metadata()?;
    write_with(engine.meta(), |w| {
        let (row, old) = user_track(w, user, key)?;
        let mut acc = Accounting::default();
        unlink_track(w, user, &row, key, &old, &mut acc)?;
        acc.apply(w)
    })
}
