//! Changing a track's rights holder: one commit rewrites its record; no chunk moves.

use crate::engine::{Engine, user_track};
use crate::error::Result;
use crate::format::TrackRecord;
use crate::ids::UserNo;
use crate::index::write_with;
use crate::names::{RightsHolder, TrackKey, UserId};

/// Sets the rights holder of `user`'s track `key` (see `Store::set_rights_holder`).
pub(crate) fn set_rights_holder(
    engine: &Engine,
    user: &UserId,
    key: &TrackKey,
    holder: Option<RightsHolder>,
) -> Result<()> {
    // Bad input first, without touching the ballast.
    engine.track_record(user, key)?;
    engine.space().room_for_metadata()?;
    write_with(engine.meta(), |w| {
        let (row, old) = user_track(w, user, key)?;
        if old.holder == holder {
            return Ok(());
        }
        w.put_track(
            UserNo(row.no),
            key,
            &TrackRecord {
                holder: holder.clone(),
                ..old
            },
        )
    })
}
