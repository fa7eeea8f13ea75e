//! Licence ends on the command line: seconds since the Unix epoch from `YYYY-MM-DD` (the licence
//! holds through that day, UTC) or an RFC 3339 timestamp (with `Z` or an offset: a contract's
//! end is as often written `2027-01-31T23:59:59+01:00`), and back to RFC 3339 in UTC. The
//! calendar is the `time` crate's.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, Time};

/// Parses `--until`: `YYYY-MM-DD` gives the next midnight UTC (the licence holds through that
/// day), an RFC 3339 timestamp (`2027-01-31T12:00:00Z`, `...+01:00`) its instant, which must
/// fall on a whole second after 1970-01-01T00:00:00Z.
pub(crate) fn parse_until(s: &str) -> Result<u64, String> {
    let fail = |why: &str| {
        format!(
            "invalid date {s:?}: {why}; expected YYYY-MM-DD (the licence holds through that \
             day, UTC) or an RFC 3339 timestamp such as 2027-01-31T12:00:00Z"
        )
    };
    let instant = if s.len() == 10 {
        let date = Date::parse(s, format_description!("[year]-[month]-[day]"))
            .map_err(|e| fail(&e.to_string()))?;
        let next = date.next_day().ok_or_else(|| fail("out of range"))?;
        next.with_time(Time::MIDNIGHT).assume_utc()
    } else {
        OffsetDateTime::parse(s, &Rfc3339).map_err(|e| fail(&e.to_string()))?
    };
    if instant.nanosecond() != 0 {
        return Err(fail("not a whole second"));
    }
    u64::try_from(instant.unix_timestamp())
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| fail("not after 1970-01-01T00:00:00Z"))
}

/// `secs` since the Unix epoch as an RFC 3339 timestamp in UTC.
pub(crate) fn format_utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{secs} s after the Unix epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_holds_through_its_end_utc() {
        // 2027-02-01T00:00:00Z, checked against Python's calendar.timegm.
        assert_eq!(parse_until("2027-01-31"), Ok(1_801_440_000));
        assert_eq!(parse_until("1970-01-01"), Ok(86_400));
        assert_eq!(parse_until("2028-02-29"), Ok(1_835_395_200 + 86_400));
        assert_eq!(format_utc(1_801_440_000), "2027-02-01T00:00:00Z");
    }

    #[test]
    fn timestamps_with_and_without_offsets() {
        // RFC 3339 lets a space stand for the `T`.
        assert_eq!(parse_until("2027-01-31 12:00:00Z"), Ok(1_801_396_800));
        let noon = 1_801_440_000 - 12 * 3600;
        assert_eq!(parse_until("2027-01-31T12:00:00Z"), Ok(noon));
        assert_eq!(parse_until("2027-01-31t12:00:00z"), Ok(noon));
        assert_eq!(parse_until("2027-01-31T13:30:00+01:30"), Ok(noon));
        assert_eq!(parse_until("2027-01-31T07:00:00-05:00"), Ok(noon));
        assert_eq!(parse_until("2027-01-31T12:00:00.000Z"), Ok(noon));
        assert_eq!(format_utc(noon), "2027-01-31T12:00:00Z");
    }

    #[test]
    fn bad_dates_are_refused_with_what_was_typed() {
        for bad in [
            "",
            "tomorrow",
            "2027-1-31",
            "2027/01/31",
            "2027-02-29",
            "2027-13-01",
            "2027-00-10",
            "2027-01-00",
            "1969-12-31",
            "2027-01-31T12:00Z",
            "2027-01-31T24:00:00Z",
            "2027-01-31T12:00:00",
            "2027-01-31T12:00:00.5Z",
            "2027-01-31T12:00:00.Z",
            "2027-01-31T12:00:00+0100",
            "2027-01-31T12:00:00+01:60",
            "2027-01-31x",
            "１９７０-01-01",
        ] {
            let e = parse_until(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
