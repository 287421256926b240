//! Dates and times as text, computed by hand, and the proleptic Gregorian
//! calendar arithmetic behind them (also used by the Postgres decoder).
//!
//! The encoder formats every date and timestamp it meets, so this works on
//! plain integers and appends ASCII to the output buffer: no date library,
//! no allocation, no `fmt` machinery.
//!
//! Formats (the proleptic Gregorian calendar, as Postgres uses):
//!
//! * date: `YYYY-MM-DD`. Years before 1 AD use ISO 8601 astronomical
//!   numbering rather than Postgres's `BC` suffix, so the text sorts and
//!   parses like any other ISO date: 1 BC is year `0000`, 44 BC is `-0043`.
//!   Years past 9999 carry a `+` sign (`+10000-01-01`), the ISO 8601
//!   expanded form that chrono and other ISO parsers read.
//! * time of day: `HH:MM:SS` plus, when not zero, a fraction of up to six
//!   digits with trailing zeros removed, as Postgres prints it
//!   (`12:30:05.25`). `24:00:00` is a valid Postgres `time` and is kept.
//! * timestamp: date `T` time of day, and `Z` for `timestamptz` (always UTC).
//! * The infinities are `infinity` and `-infinity`, as in Postgres.

use crate::EncodeError;

/// Microseconds in one second.
const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one day.
pub(crate) const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days in a 400-year Gregorian cycle: the calendar repeats exactly after it.
const DAYS_PER_ERA: i64 = 146_097;
/// Days from 0000-03-01 to 1970-01-01.
const EPOCH_FROM_MARCH_ZERO: i64 = 719_468;

/// The (year, month, day) of a day count since 1970-01-01.
///
/// Counting years from 1 March puts the leap day at the very end of each
/// year, so the month lengths within a year never depend on leapness, and a
/// year's position in its 400-year era determines everything else.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + EPOCH_FROM_MARCH_ZERO;
    let era = z.div_euclid(DAYS_PER_ERA);
    let day_of_era = z.rem_euclid(DAYS_PER_ERA); // 0..=146_096
    // Each 4 years add a leap day, except at 100 and 400 years: remove those
    // days to find the year of the era (0..=399).
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524
        - day_of_era / (DAYS_PER_ERA - 1))
        / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: lengths 31 30 31 30 31 31 30 31 30 31 31 28/29 follow
    // a 153-day pattern per 5 months, which (5 * d + 2) / 153 inverts.
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day count since 1970-01-01 of a (year, month, day): the inverse of
/// [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - EPOCH_FROM_MARCH_ZERO
}

/// Whether `year` (astronomical numbering: 1 BC is year 0) is a leap year.
pub fn is_leap_year(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

/// The number of days in `month` (1..=12) of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Appends a `date` (days since 1970-01-01; `i32::MAX`/`i32::MIN` are the infinities).
pub(crate) fn write_date(out: &mut Vec<u8>, days: i32) {
    match days {
        i32::MAX => out.extend_from_slice(b"infinity"),
        i32::MIN => out.extend_from_slice(b"-infinity"),
        _ => {
            let mut text = Ascii::new();
            text.ymd(i64::from(days));
            text.append_to(out);
        }
    }
}

/// Appends a `time` (microseconds since midnight, `0..=24:00:00`).
pub(crate) fn write_time(out: &mut Vec<u8>, micros: i64) -> Result<(), EncodeError> {
    if !(0..=MICROS_PER_DAY).contains(&micros) {
        return Err(EncodeError::new(format!(
            "time value {micros} µs is outside 00:00:00..=24:00:00"
        )));
    }
    let mut text = Ascii::new();
    text.time_of_day(micros);
    text.append_to(out);
    Ok(())
}

/// Appends a `timestamp` or, with `utc`, a `timestamptz` (microseconds since
/// 1970-01-01 00:00:00; `i64::MAX`/`i64::MIN` are the infinities).
pub(crate) fn write_timestamp(out: &mut Vec<u8>, micros: i64, utc: bool) {
    match micros {
        i64::MAX => out.extend_from_slice(b"infinity"),
        i64::MIN => out.extend_from_slice(b"-infinity"),
        _ => {
            let mut text = Ascii::new();
            // Euclidean division keeps the time of day positive before 1970.
            text.ymd(micros.div_euclid(MICROS_PER_DAY));
            text.push(b'T');
            text.time_of_day(micros.rem_euclid(MICROS_PER_DAY));
            if utc {
                text.push(b'Z');
            }
            text.append_to(out);
        }
    }
}

/// "00" to "99": two digits by one lookup instead of a division each.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// A small stack buffer that a date or time is formatted into before it is
/// copied to the output in one piece: many tiny appends to a `Vec` cost
/// more than the arithmetic.
struct Ascii {
    /// Enough for the longest timestamp, `-290308-12-21T19:59:05.224193Z`.
    bytes: [u8; 40],
    len: usize,
}

impl Ascii {
    fn new() -> Self {
        Ascii {
            bytes: [0; 40],
            len: 0,
        }
    }

    /// One fixed-size copy, then cut back: cheaper than a variable-length copy.
    fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
        out.truncate(out.len() - (self.bytes.len() - self.len));
    }

    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    /// Two decimal digits, zero-padded; `n` must be below 100.
    fn two_digits(&mut self, n: u32) {
        let n = n as usize;
        self.bytes[self.len..self.len + 2].copy_from_slice(&DIGIT_PAIRS[2 * n..2 * n + 2]);
        self.len += 2;
    }

    fn ymd(&mut self, days: i64) {
        let (year, month, day) = civil_from_days(days);
        self.year(year);
        self.push(b'-');
        self.two_digits(month);
        self.push(b'-');
        self.two_digits(day);
    }

    fn year(&mut self, year: i64) {
        if year < 0 {
            self.push(b'-');
        } else if year > 9999 {
            self.push(b'+');
        }
        let abs = year.unsigned_abs();
        if abs < 10_000 {
            let abs = abs as u32;
            self.two_digits(abs / 100);
            self.two_digits(abs % 100);
        } else {
            let digits = abs.ilog10() as usize + 1;
            let mut rest = abs;
            for i in (0..digits).rev() {
                self.bytes[self.len + i] = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            self.len += digits;
        }
    }

    /// `micros` must be in `0..=MICROS_PER_DAY`.
    fn time_of_day(&mut self, micros: i64) {
        let seconds = (micros / MICROS_PER_SECOND) as u32;
        let mut fraction = (micros % MICROS_PER_SECOND) as u32;
        self.two_digits(seconds / 3600);
        self.push(b':');
        self.two_digits(seconds / 60 % 60);
        self.push(b':');
        self.two_digits(seconds % 60);
        if fraction != 0 {
            // Postgres drops trailing zeros: .250000 prints as .25.
            let mut digits = 6;
            while fraction.is_multiple_of(10) {
                fraction /= 10;
                digits -= 1;
            }
            self.push(b'.');
            for i in (0..digits).rev() {
                self.bytes[self.len + i] = b'0' + (fraction % 10) as u8;
                fraction /= 10;
            }
            self.len += digits;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip_and_known_points() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        // 2024 is a leap year: Feb 29 exists and March 1 follows it.
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(2024, 3, 1), 19_783);
        // 1900 is not a leap year, 2000 is.
        assert_eq!(
            days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 28),
            1
        );
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        // Postgres: SELECT date '0044-03-15 BC' - date '1970-01-01' = -735_160.
        assert_eq!(days_from_civil(-43, 3, 15), -735_160);
        for d in (-1_000_000..1_000_000).step_by(997) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d, "{y}-{m}-{dd}");
        }
    }

    #[test]
    fn month_lengths() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        // 1 BC (year 0) is a leap year.
        assert_eq!(days_in_month(0, 2), 29);
        assert_eq!(days_in_month(2023, 4), 30);
        assert_eq!(days_in_month(2023, 12), 31);
    }
}
