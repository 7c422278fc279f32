//! When campaigns run: one-off instants and recurring cron schedules read in
//! an IANA time zone (croner does the calendar and DST arithmetic), and
//! daily send windows.
//!
//! Daylight saving time, in the zone's own wall clock:
//! - a local time that does not exist (clocks go forward, e.g. 02:30 on the
//!   last Sunday of March in Europe/Berlin) is refused for a one-off
//!   (`--at`), and a cron occurrence in the gap runs at croner's answer for
//!   it (the first existing minute after the gap);
//! - a local time that happens twice (clocks go back) means its first
//!   occurrence, for `--at` and for cron: a recurring newsletter never runs
//!   twice in the repeated hour.
//! - A run missed while no scheduler was running is started late, once:
//!   [`Recurrence::due`] returns only the latest missed occurrence.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use std::str::FromStr;

/// A schedule that cannot be used, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("unknown time zone `{0}`: use an IANA name such as Europe/Berlin or UTC")]
    TimeZone(String),
    #[error(
        "cannot read the time `{0}`: write it as \"2026-12-01 09:00\" (in --tz) or RFC 3339 with an offset"
    )]
    At(String),
    #[error("{at} does not exist in {tz}: the clocks go forward then; pick a time outside the gap")]
    Nonexistent { at: String, tz: String },
    #[error(
        "invalid cron expression `{pattern}`: {reason} (five fields: minute hour day-of-month month day-of-week, e.g. \"0 9 * * TUE\")"
    )]
    Cron { pattern: String, reason: String },
    #[error("invalid send window `{0}`: write it as HH:MM-HH:MM, e.g. 08:00-20:00")]
    Window(String),
}

/// Reads an IANA zone name.
pub fn parse_tz(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::TimeZone(name.to_string()))
}

/// The wall-clock time `local` in `tz` as an instant: the first one if the
/// clocks go back then, an error if they go forward over it.
pub fn resolve_local(local: NaiveDateTime, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Ok(first.with_timezone(&Utc)),
        LocalResult::None => Err(ScheduleError::Nonexistent {
            at: local.format("%Y-%m-%d %H:%M").to_string(),
            tz: tz.name().to_string(),
        }),
    }
}

/// `--at`: `2026-12-01 09:00` (or with `T`, with seconds) in `tz`, or an
/// RFC 3339 instant with its own offset.
pub fn parse_at(s: &str, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(local) = NaiveDateTime::parse_from_str(s, f) {
            return resolve_local(local, tz);
        }
    }
    Err(ScheduleError::At(s.to_string()))
}

/// A recurring schedule: a cron pattern read in a time zone.
#[derive(Debug, Clone)]
pub struct Recurrence {
    cron: croner::Cron,
    tz: Tz,
}

/// Most occurrences walked to find the latest missed one.
const MAX_STEPS: usize = 100_000;

impl Recurrence {
    pub fn parse(pattern: &str, tz: Tz) -> Result<Self, ScheduleError> {
        let cron = croner::Cron::from_str(pattern).map_err(|e| ScheduleError::Cron {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Recurrence { cron, tz })
    }

    /// The first occurrence strictly after `after`. A wall-clock time that
    /// repeats when the clocks go back counts once.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Whole seconds: croner keeps the fraction of its starting point, so
        // runs were due at 09:00:00.015813990.
        let after = after.with_nanosecond(0).unwrap_or(after);
        let mut from = after.with_timezone(&self.tz);
        let prev_local = from.naive_local();
        for _ in 0..4 {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            // The second pass through a repeated hour: same wall clock as an
            // occurrence already seen one hour earlier.
            if next.naive_local() <= prev_local && next > from {
                from = next;
                continue;
            }
            let repeated = self
                .tz
                .from_local_datetime(&next.naive_local())
                .earliest()
                .is_some_and(|first| first < next);
            if repeated {
                from = next;
                continue;
            }
            return Some(next.with_timezone(&Utc));
        }
        None
    }

    /// The occurrence to run now, if any: the latest one after `last` (or
    /// after `since` when the schedule never ran) and not after `now`.
    /// Several missed occurrences give one run, for the latest.
    pub fn due(
        &self,
        last: Option<DateTime<Utc>>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut at = last.unwrap_or(since);
        let mut found = None;
        for _ in 0..MAX_STEPS {
            match self.next_after(at) {
                Some(n) if n <= now => {
                    found = Some(n);
                    at = n;
                }
                _ => break,
            }
        }
        found
    }
}

/// A daily send window in a time zone, e.g. 08:00–20:00. An end before the
/// start spans midnight (22:00–06:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Window {
    /// `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Self, ScheduleError> {
        let err = || ScheduleError::Window(s.to_string());
        let (a, b) = s.split_once('-').ok_or_else(err)?;
        Self::from_parts(a, b).ok_or_else(err)
    }

    /// From stored `HH:MM` strings.
    pub fn from_parts(start: &str, end: &str) -> Option<Self> {
        let start = NaiveTime::parse_from_str(start.trim(), "%H:%M").ok()?;
        let end = NaiveTime::parse_from_str(end.trim(), "%H:%M").ok()?;
        (start != end).then_some(Window { start, end })
    }

    pub fn start_str(&self) -> String {
        self.start.format("%H:%M").to_string()
    }

    pub fn end_str(&self) -> String {
        self.end.format("%H:%M").to_string()
    }

    /// Whether `now` is inside the window, in `tz`.
    pub fn contains(&self, tz: Tz, now: DateTime<Utc>) -> bool {
        let t = now.with_timezone(&tz).time();
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// When the window open at `now` closes (`now` itself when outside).
    pub fn closes_at(&self, tz: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
        if !self.contains(tz, now) {
            return now;
        }
        let today: NaiveDate = now.with_timezone(&tz).date_naive();
        for days in 0..3 {
            let day = today + chrono::Days::new(days);
            let local = day.and_time(self.end);
            let at = match tz.from_local_datetime(&local) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
                LocalResult::None => match tz
                    .from_local_datetime(&(local + chrono::Duration::hours(1)))
                {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
                    LocalResult::None => continue,
                },
            };
            if at > now {
                return at;
            }
        }
        now + chrono::Duration::days(1)
    }

    /// When the window next opens after `now` (`now` itself when inside).
    pub fn opens_at(&self, tz: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.contains(tz, now) {
            return now;
        }
        let today: NaiveDate = now.with_timezone(&tz).date_naive();
        for days in 0..3 {
            let day = today + chrono::Days::new(days);
            let local = day.and_time(self.start);
            // A start inside a DST gap opens at the first minute after it.
            let at = match tz.from_local_datetime(&local) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
                LocalResult::None => match tz
                    .from_local_datetime(&(local + chrono::Duration::hours(1)))
                {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
                    LocalResult::None => continue,
                },
            };
            if at > now {
                return at;
            }
        }
        now + chrono::Duration::days(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn at_is_read_in_the_zone() {
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            parse_at("2026-12-01 09:00", BERLIN).unwrap(),
            utc("2026-12-01T08:00:00Z")
        );
        assert_eq!(
            parse_at("2026-07-01T09:00", BERLIN).unwrap(),
            utc("2026-07-01T07:00:00Z")
        );
        assert_eq!(
            parse_at("2026-07-01T09:00:00+00:00", BERLIN).unwrap(),
            utc("2026-07-01T09:00:00Z")
        );
        assert!(matches!(
            parse_at("1 Dec", BERLIN),
            Err(ScheduleError::At(_))
        ));
    }

    #[test]
    fn at_in_the_spring_gap_is_refused_and_the_autumn_repeat_means_the_first() {
        // 2026-03-29: 02:00 → 03:00 in Berlin.
        let e = parse_at("2026-03-29 02:30", BERLIN).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        // 2026-10-25: 03:00 → 02:00; 02:30 happens at 00:30Z and 01:30Z.
        assert_eq!(
            parse_at("2026-10-25 02:30", BERLIN).unwrap(),
            utc("2026-10-25T00:30:00Z")
        );
    }

    #[test]
    fn weekly_cron_follows_the_wall_clock_across_dst() {
        let r = Recurrence::parse("0 9 * * TUE", BERLIN).unwrap();
        // Tuesday 2026-03-24 09:00 CET = 08:00Z; next Tuesday (after the
        // change) 09:00 CEST = 07:00Z.
        let a = r.next_after(utc("2026-03-23T00:00:00Z")).unwrap();
        assert_eq!(a, utc("2026-03-24T08:00:00Z"));
        let b = r.next_after(a).unwrap();
        assert_eq!(b, utc("2026-03-31T07:00:00Z"));
        // On the second, whatever fraction "now" has.
        let c = r.next_after(utc("2026-03-23T00:00:00.015813990Z")).unwrap();
        assert_eq!(c, a);
    }

    #[test]
    fn daily_cron_in_the_repeated_hour_runs_once() {
        let r = Recurrence::parse("30 2 * * *", BERLIN).unwrap();
        let first = r.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        let next = r.next_after(first).unwrap();
        // Not 01:30Z the same morning (02:30 again): the next day.
        assert_eq!(next, utc("2026-10-26T01:30:00Z"));
    }

    #[test]
    fn daily_cron_in_the_spring_gap_still_runs_that_day() {
        let r = Recurrence::parse("30 2 * * *", BERLIN).unwrap();
        let n = r.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        // Runs on the 29th (some time after the gap), not skipped to the 30th.
        assert_eq!(
            n.with_timezone(&BERLIN).date_naive().to_string(),
            "2026-03-29"
        );
        assert!(n >= utc("2026-03-29T01:00:00Z"), "{n}");
    }

    #[test]
    fn missed_occurrences_give_one_run_for_the_latest() {
        let r = Recurrence::parse("0 9 * * *", BERLIN).unwrap();
        let since = utc("2026-12-01T00:00:00Z");
        // Down for three days: one run, for the 4th.
        let due = r.due(None, since, utc("2026-12-04T10:00:00Z")).unwrap();
        assert_eq!(due, utc("2026-12-04T08:00:00Z"));
        // After it ran, nothing is due until the next morning.
        assert_eq!(r.due(Some(due), since, utc("2026-12-04T20:00:00Z")), None);
        assert_eq!(
            r.due(Some(due), since, utc("2026-12-05T08:00:00Z")),
            Some(utc("2026-12-05T08:00:00Z"))
        );
        assert!(Recurrence::parse("61 * * * *", BERLIN).is_err());
    }

    #[test]
    fn windows_in_a_zone() {
        let w = Window::parse("08:00-20:00").unwrap();
        assert!(w.contains(BERLIN, utc("2026-12-01T07:00:00Z"))); // 08:00 local
        assert!(!w.contains(BERLIN, utc("2026-12-01T06:59:00Z")));
        assert!(!w.contains(BERLIN, utc("2026-12-01T19:00:00Z"))); // 20:00 local
        assert_eq!(
            w.opens_at(BERLIN, utc("2026-12-01T20:00:00Z")),
            utc("2026-12-02T07:00:00Z")
        );
        assert_eq!(
            w.closes_at(BERLIN, utc("2026-12-01T10:00:00Z")),
            utc("2026-12-01T19:00:00Z")
        );
        let night = Window::parse("22:00-06:00").unwrap();
        assert!(night.contains(BERLIN, utc("2026-12-01T23:30:00Z")));
        assert!(!night.contains(BERLIN, utc("2026-12-01T12:00:00Z")));
        assert!(Window::parse("8-20").is_err());
        assert!(Window::parse("08:00-08:00").is_err());
    }
}
