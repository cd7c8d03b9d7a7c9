//! Cron schedules for function triggers: five fields (minute hour
//! day-of-month month day-of-week) or six (a leading second), each `*`,
//! a number, a range `a-b`, a step `*/n` or `a-b/n`, or a list of those.
//! Day-of-month and day-of-week follow Vixie cron: when both are
//! restricted (neither starts with `*`), either may match. Times are UTC.

use std::str::FromStr;

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    any_day: bool,
    any_weekday: bool,
}

fn field(text: &str, min: u32, max: u32, name: &str) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name}: `{step}` is not a step"))?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, name)?, number(b, name)?)
        } else {
            let n = number(range, name)?;
            (n, if step > 1 { max } else { n })
        };
        if low < min || high > max || low > high {
            return Err(format!("{name}: `{part}` is outside {min}-{max}"));
        }
        for value in (low..=high).step_by(step as usize) {
            bits |= 1 << value;
        }
    }
    // Vixie cron counts a field as unrestricted when it starts with `*`
    // (`*/2` included).
    Ok((bits, text.starts_with('*')))
}

fn number(text: &str, name: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("{name}: `{text}` is not a number"))
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "a schedule has 5 fields (minute hour day month weekday) or 6 (a second first), not {n}"
                ));
            }
        };
        let (seconds, _) = field(second, 0, 59, "second")?;
        let (minutes, _) = field(rest[0], 0, 59, "minute")?;
        let (hours, _) = field(rest[1], 0, 23, "hour")?;
        let (days, any_day) = field(rest[2], 1, 31, "day of month")?;
        let (months, _) = field(rest[3], 1, 12, "month")?;
        let (mut weekdays, any_weekday) = field(rest[4], 0, 7, "day of week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Self {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        })
    }
}

impl Schedule {
    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => by_day || by_weekday,
            _ => by_day && by_weekday,
        }
    }

    /// The first time the schedule fires strictly after `after` (Unix
    /// seconds); `None` if it never does. The Gregorian calendar, weekdays
    /// included, repeats every 400 years, so a schedule that does not fire
    /// within one such cycle never fires (`0 0 29 2 */7`, a leap day that
    /// is a Sunday, fires once in 28 years, and in a century's non-leap
    /// year longer still).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let mut t = after + 1;
        let limit = after + (GREGORIAN_CYCLE_DAYS + 1) * 86_400;
        while t < limit {
            let days = t.div_euclid(86_400);
            let (year, month, day) = civil(days);
            let in_day = t.rem_euclid(86_400);
            let (hour, minute, second) = (in_day / 3600, in_day % 3600 / 60, in_day % 60);
            if self.months & (1 << month) == 0 {
                let (y, m) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                t = days_from_civil(y, m, 1) * 86_400;
            } else if !self.day_matches(day, weekday(days)) {
                t = (days + 1) * 86_400;
            } else if self.hours & (1 << hour) == 0 {
                t = days * 86_400 + (hour + 1) * 3600;
            } else if self.minutes & (1 << minute) == 0 {
                t = days * 86_400 + hour * 3600 + (minute + 1) * 60;
            } else if self.seconds & (1 << second) == 0 {
                t += 1;
            } else {
                return Some(t);
            }
        }
        None
    }
}

/// Days in 400 Gregorian years: a whole number of weeks too.
const GREGORIAN_CYCLE_DAYS: i64 = 146_097;

/// 0 = Sunday.
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32 // 1970-01-01 was a Thursday
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(GREGORIAN_CYCLE_DAYS);
    let doe = z - era * GREGORIAN_CYCLE_DAYS;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The day count since 1970-01-01 of a date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * GREGORIAN_CYCLE_DAYS + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time.
    fn at(year: i64, month: u32, day: u32, h: i64, m: i64, s: i64) -> i64 {
        days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s
    }

    fn next(schedule: &str, after: i64) -> i64 {
        schedule
            .parse::<Schedule>()
            .unwrap()
            .next_after(after)
            .unwrap()
    }

    #[test]
    fn dates_round_trip() {
        for days in [-800_000, -1, 0, 59, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(weekday(0), 4);
    }

    #[test]
    fn schedules_fire_when_they_say() {
        let t = at(2026, 11, 27, 10, 15, 30);
        assert_eq!(next("* * * * * *", t), t + 1);
        assert_eq!(next("*/5 * * * *", t), at(2026, 11, 27, 10, 20, 0));
        assert_eq!(next("0 0 * * *", t), at(2026, 11, 28, 0, 0, 0));
        assert_eq!(next("30 9 1 * *", t), at(2026, 12, 1, 9, 30, 0));
        assert_eq!(
            next("0 12 * * 1", t),
            at(2026, 11, 30, 12, 0, 0),
            "next Monday"
        );
        assert_eq!(
            next("0 0 29 2 *", t),
            at(2028, 2, 29, 0, 0, 0),
            "a leap day"
        );
        // Rare leap days: a Sunday's (AND, for the starred weekday), and
        // the one after 2096, past 2100, which is no leap year.
        assert_eq!(next("0 0 29 2 */7", t), at(2032, 2, 29, 0, 0, 0));
        assert_eq!(
            next("0 0 29 2 */7", at(2032, 3, 1, 0, 0, 0)),
            at(2060, 2, 29, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 29 2 *", at(2096, 3, 1, 0, 0, 0)),
            at(2104, 2, 29, 0, 0, 0)
        );
        assert_eq!(next("15,45 10 * * *", t), at(2026, 11, 27, 10, 45, 0));
        assert_eq!(next("0 0 1 1 *", t), at(2027, 1, 1, 0, 0, 0));
        // Both day fields restricted: either matches (the 1st, or a Sunday).
        assert_eq!(next("0 0 1 * 0", t), at(2026, 11, 29, 0, 0, 0));
        assert_eq!(
            next("0 0 * * 7", t),
            at(2026, 11, 29, 0, 0, 0),
            "7 is Sunday"
        );
        // A starred step leaves its day field unrestricted (Vixie): odd
        // days that are Mondays, not odd days or Mondays.
        assert_eq!(
            next("0 9 */2 * 1", t),
            at(2026, 12, 7, 9, 0, 0),
            "the next odd-day Monday"
        );
        // A step past the range fires at its start only.
        assert_eq!(
            next("1-59/4294967295 * * * *", t),
            at(2026, 11, 27, 11, 1, 0)
        );
        assert_eq!(next("7/4294967290 * * * *", t), at(2026, 11, 27, 11, 7, 0));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (bad, says) in [
            ("* * * *", "5 fields"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day of week"),
            ("*/0 * * * *", "step"),
            ("a * * * *", "not a number"),
            ("5-1 * * * *", "outside"),
        ] {
            let error = bad.parse::<Schedule>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
        // Never, in a whole calendar cycle.
        for never in ["0 0 31 2 *", "0 0 30 2 *", "59 59 23 31 4 *"] {
            assert_eq!(never.parse::<Schedule>().unwrap().next_after(0), None);
        }
    }
}
