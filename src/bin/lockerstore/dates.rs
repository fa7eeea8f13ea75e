//! Licence ends on the command line: seconds since the Unix epoch from `YYYY-MM-DD` (the licence
//! holds through that day, UTC) or an RFC 3339 timestamp, and back to RFC 3339 in UTC.
//!
//! Written here rather than taken from `humantime`, whose parser accepts only `Z` timestamps:
//! a contract's end is as often written with its offset (`2027-01-31T23:59:59+01:00`).

const DAY: i64 = 86_400;

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
/// `days_from_civil`: eras of 400 years, years starting in March so the leap day comes last).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Fixed-width decimal digits at `s[at..at + n]`.
fn digits(s: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = s.get(at..at + n)?;
    part.iter().all(u8::is_ascii_digit).then(|| {
        part.iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'))
    })
}

/// Parses `--until`: `YYYY-MM-DD` gives the next midnight UTC (the licence holds through that
/// day), an RFC 3339 timestamp (`2027-01-31T12:00:00Z`, `...+01:00`) its instant, which must
/// fall on a whole second. Years 1970 to 9999.
pub(crate) fn parse_until(s: &str) -> Result<u64, String> {
    let fail = |why: &str| {
        format!(
            "invalid date {s:?}: {why}; expected YYYY-MM-DD (the licence holds through that \
             day, UTC) or an RFC 3339 timestamp such as 2027-01-31T12:00:00Z"
        )
    };
    let b = s.as_bytes();
    let (Some(year), Some(month), Some(day)) = (digits(b, 0, 4), digits(b, 5, 2), digits(b, 8, 2))
    else {
        return Err(fail("the date is not YYYY-MM-DD"));
    };
    if b[4] != b'-' || b[7] != b'-' {
        return Err(fail("the date is not YYYY-MM-DD"));
    }
    if year < 1970 {
        return Err(fail("years before 1970 are not supported"));
    }
    let month = u32::try_from(month).expect("two digits");
    let day = u32::try_from(day).expect("two digits");
    if !(1..=12).contains(&month) {
        return Err(fail("there is no such month"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(fail("there is no such day in that month"));
    }
    let midnight = days_from_civil(year, month, day) * DAY;
    if b.len() == 10 {
        return Ok((midnight + DAY) as u64);
    }
    if !matches!(b[10], b'T' | b't') {
        return Err(fail(
            "the date must be followed by nothing or by T and a time",
        ));
    }
    let (Some(hour), Some(minute), Some(second)) =
        (digits(b, 11, 2), digits(b, 14, 2), digits(b, 17, 2))
    else {
        return Err(fail("the time is not HH:MM:SS"));
    };
    if b[13] != b':' || b[16] != b':' {
        return Err(fail("the time is not HH:MM:SS"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(fail("there is no such time of day"));
    }
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        let fraction = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if fraction == 0 {
            return Err(fail("a decimal point without digits"));
        }
        if b[at + 1..at + 1 + fraction].iter().any(|&c| c != b'0') {
            return Err(fail("a licence ends on a whole second"));
        }
        at += 1 + fraction;
    }
    let offset = match b.get(at..) {
        Some(b"Z" | b"z") => 0,
        Some(&[sign @ (b'+' | b'-'), ..]) if b.len() == at + 6 && b[at + 3] == b':' => {
            let (Some(oh), Some(om)) = (digits(b, at + 1, 2), digits(b, at + 4, 2)) else {
                return Err(fail("the offset is not +HH:MM or -HH:MM"));
            };
            if oh > 23 || om > 59 {
                return Err(fail("the offset is not +HH:MM or -HH:MM"));
            }
            let minutes = oh * 60 + om;
            if sign == b'+' { minutes } else { -minutes }
        }
        _ => return Err(fail("the time must end with Z or an offset such as +01:00")),
    };
    let secs = midnight + hour * 3600 + minute * 60 + second - offset * 60;
    u64::try_from(secs).map_err(|_| fail("it falls before 1970"))
}

/// `secs` since the Unix epoch as an RFC 3339 timestamp in UTC (`2027-02-01T00:00:00Z`).
pub(crate) fn format_utc(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    let (year, month, day) = civil_from_days(secs.div_euclid(DAY));
    let t = secs.rem_euclid(DAY);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
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
        let noon = 1_801_440_000 - 12 * 3600;
        assert_eq!(parse_until("2027-01-31T12:00:00Z"), Ok(noon));
        assert_eq!(parse_until("2027-01-31t12:00:00z"), Ok(noon));
        assert_eq!(parse_until("2027-01-31T13:30:00+01:30"), Ok(noon));
        assert_eq!(parse_until("2027-01-31T07:00:00-05:00"), Ok(noon));
        assert_eq!(parse_until("2027-01-31T12:00:00.000Z"), Ok(noon));
        assert_eq!(format_utc(noon), "2027-01-31T12:00:00Z");
    }

    #[test]
    fn every_day_round_trips() {
        for days in (0..3_000_000i64).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
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
            "2027-01-31 12:00:00Z",
            "2027-01-31x",
            "１９７０-01-01",
        ] {
            let e = parse_until(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
