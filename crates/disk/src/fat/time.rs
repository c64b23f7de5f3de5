//! FAT timestamps from Unix seconds, with the civil-date conversions written out.

/// A FAT date and time (2-second resolution) plus the creation-time hundredths.
pub(super) struct FatTimestamp {
    pub(super) date: u16,
    pub(super) time: u16,
    pub(super) hundredths: u8,
}

impl FatTimestamp {
    pub(super) fn from_unix(unix_seconds: u64) -> FatTimestamp {
        let earliest = days_from_civil(1980, 1, 1) as u64 * 86400;
        let latest = days_from_civil(2107, 12, 31) as u64 * 86400 + 86399;
        let seconds = unix_seconds.clamp(earliest, latest);
        let (year, month, day) = civil_from_days((seconds / 86400) as i64);
        let second_of_day = seconds % 86400;
        let hour = (second_of_day / 3600) as u16;
        let minute = (second_of_day / 60 % 60) as u16;
        let second = (second_of_day % 60) as u16;
        FatTimestamp {
            date: (((year - 1980) as u16) << 9) | ((month as u16) << 5) | day as u16,
            time: (hour << 11) | (minute << 5) | (second / 2),
            hundredths: (second % 2 * 100) as u8,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month as i64 + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01; inverse of `days_from_civil`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn timestamps_are_utc_and_clamped() {
        let t = FatTimestamp::from_unix(1_700_000_001); // 2023-11-14 22:13:21
        assert_eq!(
            (t.date, t.time, t.hundredths),
            (43 << 9 | 11 << 5 | 14, 22 << 11 | 13 << 5 | 10, 100)
        );
        assert_eq!(FatTimestamp::from_unix(0).date, 1 << 5 | 1);
        assert_eq!(
            FatTimestamp::from_unix(u64::MAX).date,
            127 << 9 | 12 << 5 | 31
        );
    }
}
