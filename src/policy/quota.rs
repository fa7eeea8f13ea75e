//! Quotas: how many logical bytes and tracks a user's locker may hold.
//!
//! A user's *counted* usage is what their tracks hold minus the tracks stored quota-exempt
//! (bought music, which Amazon's 2011 locker did not count). The limits are checked inside the
//! metadata transaction that links a track (`write::PutCommit`), so two concurrent uploads cannot
//! both pass the last free byte: the transactions are serialised, and each sees the other's
//! usage. A put over the quota fails with [`crate::Error::QuotaExceeded`] and stores nothing.

use crate::error::{Error, Result};
use crate::format::QuotaRow;
use crate::names::UserId;

/// A user's limits; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Most logical bytes the user's counted tracks may hold.
    pub max_bytes: Option<u64>,
    /// Most counted tracks.
    pub max_tracks: Option<u64>,
}

impl Quota {
    /// No limits.
    pub fn unlimited() -> Quota {
        Quota::default()
    }

    /// These limits with `max_bytes` (`None`: no limit).
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: Option<u64>) -> Quota {
        self.max_bytes = max_bytes;
        self
    }

    /// These limits with `max_tracks` (`None`: no limit).
    #[must_use]
    pub fn max_tracks(mut self, max_tracks: Option<u64>) -> Quota {
        self.max_tracks = max_tracks;
        self
    }

    pub(crate) fn of_row(row: &QuotaRow) -> Quota {
        let limit = |v: u64| (v != u64::MAX).then_some(v);
        Quota {
            max_bytes: limit(row.max_bytes),
            max_tracks: limit(row.max_tracks),
        }
    }

    /// `row` with these limits (its exempt usage kept).
    pub(crate) fn into_row(self, row: QuotaRow) -> QuotaRow {
        QuotaRow {
            max_bytes: self.max_bytes.unwrap_or(u64::MAX),
            max_tracks: self.max_tracks.unwrap_or(u64::MAX),
            ..row
        }
    }
}

/// A user's limits and usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaUsage {
    /// The limits.
    pub quota: Quota,
    /// Logical bytes of the tracks that count against the quota.
    pub counted_bytes: u64,
    /// Tracks that count against the quota.
    pub counted_tracks: u64,
    /// Logical bytes of the user's quota-exempt tracks.
    pub exempt_bytes: u64,
    /// The user's quota-exempt tracks.
    pub exempt_tracks: u64,
}

impl QuotaUsage {
    /// The usage of a user holding `logical_bytes` in `tracks` tracks, with quota row `row`.
    pub(crate) fn of(row: &QuotaRow, logical_bytes: u64, tracks: u64) -> Result<QuotaUsage> {
        let over = || Error::corrupted("a user's exempt usage exceeds their usage");
        Ok(QuotaUsage {
            quota: Quota::of_row(row),
            counted_bytes: logical_bytes
                .checked_sub(row.exempt_bytes)
                .ok_or_else(over)?,
            counted_tracks: tracks.checked_sub(row.exempt_tracks).ok_or_else(over)?,
            exempt_bytes: row.exempt_bytes,
            exempt_tracks: row.exempt_tracks,
        })
    }

    /// `Ok` unless this usage, reached from `before` by one put, passes a limit on a figure the
    /// put made grow: `QuotaExceeded` naming that limit. A put that shrinks or keeps a figure (a
    /// smaller replacement) passes even while the user is over a limit lowered since.
    pub(crate) fn check_growth(&self, before: &QuotaUsage, user: &UserId) -> Result<()> {
        let exceeded = |what, limit, needed| Error::QuotaExceeded {
            user: user.to_string(),
            what,
            limit,
            needed,
        };
        if let Some(limit) = self.quota.max_bytes
            && self.counted_bytes > limit
            && self.counted_bytes > before.counted_bytes
        {
            return Err(exceeded("bytes", limit, self.counted_bytes));
        }
        if let Some(limit) = self.quota.max_tracks
            && self.counted_tracks > limit
            && self.counted_tracks > before.counted_tracks
        {
            return Err(exceeded("tracks", limit, self.counted_tracks));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_and_the_check_counts_only_counted_usage() {
        let q = Quota::unlimited().max_bytes(Some(100)).max_tracks(Some(2));
        let row = q.into_row(QuotaRow {
            exempt_bytes: 50,
            exempt_tracks: 1,
            ..QuotaRow::default()
        });
        assert_eq!(Quota::of_row(&row), q);
        assert_eq!(Quota::of_row(&QuotaRow::default()), Quota::unlimited());
        let alice = UserId::new("alice").unwrap();
        // 150 bytes in 3 tracks, 50 of them in 1 exempt track: 100 bytes in 2 tracks counted.
        let empty = QuotaUsage::of(&row, 50, 1).unwrap();
        let at_limit = QuotaUsage::of(&row, 150, 3).unwrap();
        assert_eq!((at_limit.counted_bytes, at_limit.counted_tracks), (100, 2));
        at_limit.check_growth(&empty, &alice).unwrap();
        let err = QuotaUsage::of(&row, 151, 3)
            .unwrap()
            .check_growth(&at_limit, &alice)
            .unwrap_err();
        assert!(matches!(
            err,
            Error::QuotaExceeded {
                what: "bytes",
                limit: 100,
                needed: 101,
                ..
            }
        ));
        let err = QuotaUsage::of(&row, 150, 4)
            .unwrap()
            .check_growth(&at_limit, &alice)
            .unwrap_err();
        assert!(matches!(err, Error::QuotaExceeded { what: "tracks", .. }));
        // Over a lowered limit, a put that shrinks the usage passes; one that grows it does not.
        let over = QuotaUsage::of(&row, 180, 3).unwrap();
        QuotaUsage::of(&row, 170, 3)
            .unwrap()
            .check_growth(&over, &alice)
            .unwrap();
        assert!(
            QuotaUsage::of(&row, 181, 3)
                .unwrap()
                .check_growth(&over, &alice)
                .is_err()
        );
        assert!(QuotaUsage::of(&row, 10, 3).unwrap_err().is_corruption());
    }
}
