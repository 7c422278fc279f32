//! Local-time delivery (issue #18): each delivery of a campaign scheduled
//! with `--local-time` is due at the same wall-clock time (09:00) in its
//! reader's own IANA zone, read from a subscriber attribute (`tz`).
//!
//! Rules, in the reader's zone:
//! - the due time is the first `at` on or after the campaign's day (`--at
//!   DATE TIME`) or, without a day, on or after the day the campaign
//!   started, that has not passed when the deliveries are materialised: a
//!   zone where 09:00 is over already gets the next day's 09:00;
//! - a time the clocks skip (02:30 on a spring-forward day) moves forward
//!   to the first minute that exists (03:00 in Europe/Berlin);
//! - a time that happens twice (autumn) means the first; each reader gets
//!   one delivery anyway;
//! - a missing attribute or one that is no IANA zone (case does not
//!   matter) means the campaign's default zone.

use crate::run::RunError;
use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
pub use chrono_tz::Tz;
use rundbrief_store::{DueMap, LocalTime, Store};
use std::str::FromStr;
use uuid::Uuid;

/// Longest attribute name `--tz-attr` takes.
pub const MAX_ATTR_LEN: usize = 64;

/// A reader's zone from an attribute value: an IANA name, exact or in any
/// case (`europe/berlin`), surrounding spaces ignored. None: not a zone.
pub fn zone_named(value: &str) -> Option<Tz> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    Tz::from_str(v).ok().or_else(|| {
        chrono_tz::TZ_VARIANTS
            .iter()
            .copied()
            .find(|z| z.name().eq_ignore_ascii_case(v))
    })
}

/// Whether `attr` can name the zone attribute: 1–64 letters, digits, `_`
/// or `-`.
pub fn valid_attr(attr: &str) -> bool {
    !attr.is_empty()
        && attr.len() <= MAX_ATTR_LEN
        && attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `--at` of a local-time schedule: `09:00`, `09:00:30`, or a day and a
/// time (`2026-12-04 09:00`, also with `T`). None: neither.
pub fn parse_local_at(s: &str) -> Option<(Option<NaiveDate>, NaiveTime)> {
    let s = s.trim();
    let time = |t: &str| {
        NaiveTime::parse_from_str(t, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M:%S"))
            .ok()
    };
    if let Some(t) = time(s) {
        return Some((None, t));
    }
    let (d, t) = s.split_once([' ', 'T'])?;
    Some((
        Some(NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").ok()?),
        time(t.trim())?,
    ))
}

/// The instant of wall-clock `at` on `day` in `tz`: the first if it
/// happens twice, the first minute after the gap if the clocks skip it.
pub fn resolve_on(day: NaiveDate, at: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let local = day.and_time(at);
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are whole minutes (at most a few hours): the first
            // minute on the wall clock that exists.
            let minute = local.with_second(0).unwrap_or(local);
            for n in 1..=24 * 60 {
                let l = minute + chrono::Duration::minutes(n);
                if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                    tz.from_local_datetime(&l)
                {
                    return t.with_timezone(&Utc);
                }
            }
            // No zone has a day-long gap; UTC's reading as a last resort.
            Utc.from_utc_datetime(&local)
        }
    }
}

/// When a reader in `tz` is due: `at` on `date` (or on today in `tz` when
/// no date was given) or on the first later day, the first such instant
/// that is not before `now`.
pub fn due_in(tz: Tz, at: NaiveTime, date: Option<NaiveDate>, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    let mut day = date.map_or(today, |d| d.max(today));
    for _ in 0..3 {
        let t = resolve_on(day, at, tz);
        if t >= now {
            return t;
        }
        day = day + Days::new(1);
    }
    resolve_on(day, at, tz)
}

/// The earliest instant `at` on `date` can happen anywhere (UTC+14):
/// when a campaign for that day has to start.
pub fn earliest_start(date: NaiveDate, at: NaiveTime) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_time(at)) - chrono::Duration::hours(14)
}

/// A campaign's local-time settings, parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub at: NaiveTime,
    pub date: Option<NaiveDate>,
    pub attr: String,
    pub default_tz: Tz,
}

impl Plan {
    /// From what the store keeps.
    ///
    /// # Errors
    /// A stored value that does not parse (written by hand).
    pub fn from_stored(lt: &LocalTime) -> Result<Plan, crate::ScheduleError> {
        let at = parse_local_at(&lt.at)
            .map(|(_, t)| t)
            .ok_or_else(|| crate::ScheduleError::At(lt.at.clone()))?;
        let date = match &lt.date {
            Some(d) => Some(
                NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|_| crate::ScheduleError::At(d.clone()))?,
            ),
            None => None,
        };
        Ok(Plan {
            at,
            date,
            attr: lt.tz_attr.clone(),
            default_tz: crate::parse_tz(&lt.default_tz)?,
        })
    }

    /// The due time of a reader whose attribute is `value`, and whether
    /// that is the default zone's (missing or unknown).
    pub fn due_for(&self, value: Option<&str>, now: DateTime<Utc>) -> (DateTime<Utc>, bool) {
        match value.and_then(zone_named) {
            Some(tz) => (due_in(tz, self.at, self.date, now), false),
            None => (due_in(self.default_tz, self.at, self.date, now), true),
        }
    }

    /// How many of `groups` fall back to the default zone.
    pub fn fallbacks(&self, groups: &[rundbrief_store::AttrGroup]) -> u64 {
        groups
            .iter()
            .filter(|g| g.value.as_deref().and_then(zone_named).is_none())
            .map(|g| g.count)
            .sum()
    }
}

/// Most distinct unknown values named one by one; beyond that every value
/// not named gets the default zone's time in the same statement.
const MAX_UNKNOWN: usize = 500;

/// What [`assign_due`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assigned {
    /// Deliveries that got a due time.
    pub assigned: u64,
    /// Of those, the ones in the default zone (attribute missing or unknown).
    pub fallback: u64,
}

/// Gives the campaign's held deliveries (materialised, due time not yet
/// computed) their due times, relative to `now`. A no-op for a campaign
/// not sent by local time, and cheap when nothing is held.
///
/// # Errors
/// The store failed; stored settings that do not parse.
pub async fn assign_due(
    store: &Store,
    campaign_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Assigned, RunError> {
    let Some(lt) = store.local_time(campaign_id).await? else {
        return Ok(Assigned::default());
    };
    let plan = Plan::from_stored(&lt)?;
    let mut done = Assigned::default();
    // A second pass takes what another worker materialised meanwhile.
    for _ in 0..3 {
        let groups = store.held_by_attr(campaign_id, &plan.attr).await?;
        if groups.is_empty() {
            break;
        }
        let (default_due, _) = plan.due_for(None, now);
        let mut map = DueMap {
            by_value: Vec::new(),
            missing: default_due,
            otherwise: None,
        };
        let mut unknown = 0;
        for g in &groups {
            let Some(v) = &g.value else {
                done.fallback += g.count;
                continue;
            };
            let (due, fallback) = plan.due_for(Some(v), now);
            if fallback {
                done.fallback += g.count;
                unknown += 1;
                if unknown > MAX_UNKNOWN {
                    map.otherwise = Some(default_due);
                    continue;
                }
            }
            map.by_value.push((v.clone(), due));
        }
        store.set_due(campaign_id, &plan.attr, &map).await?;
        done.assigned += groups.iter().map(|g| g.count).sum::<u64>();
    }
    if done.assigned > 0 {
        tracing::info!(
            campaign = %campaign_id,
            assigned = done.assigned,
            fallback = done.fallback,
            default_tz = %plan.default_tz.name(),
            "local-time due times set"
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn t(s: &str) -> NaiveTime {
        parse_local_at(s).unwrap().1
    }
    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const NEW_YORK: Tz = chrono_tz::America::New_York;

    #[test]
    fn nine_in_each_zone() {
        let now = utc("2026-12-03T00:00:00Z");
        let day = Some(d("2026-12-03"));
        assert_eq!(
            due_in(BERLIN, t("09:00"), day, now),
            utc("2026-12-03T08:00:00Z")
        );
        assert_eq!(
            due_in(NEW_YORK, t("09:00"), day, now),
            utc("2026-12-03T14:00:00Z")
        );
        assert_eq!(
            due_in(chrono_tz::Asia::Tokyo, t("09:00"), day, now),
            utc("2026-12-03T00:00:00Z"),
            "Tokyo's 09:00 is now: due now"
        );
    }

    #[test]
    fn a_time_already_passed_in_a_zone_is_the_next_day() {
        // 10:00Z: Berlin's 09:00 (08:00Z) is over, New York's (14:00Z) is not.
        let now = utc("2026-12-03T10:00:00Z");
        assert_eq!(
            due_in(BERLIN, t("09:00"), None, now),
            utc("2026-12-04T08:00:00Z")
        );
        assert_eq!(
            due_in(NEW_YORK, t("09:00"), None, now),
            utc("2026-12-03T14:00:00Z")
        );
        // Same with a day given that is today.
        let day = Some(d("2026-12-03"));
        assert_eq!(
            due_in(BERLIN, t("09:00"), day, now),
            utc("2026-12-04T08:00:00Z")
        );
        // A day in the future is kept.
        let later = Some(d("2026-12-10"));
        assert_eq!(
            due_in(BERLIN, t("09:00"), later, now),
            utc("2026-12-10T08:00:00Z")
        );
    }

    #[test]
    fn spring_gap_moves_forward_to_the_first_valid_minute() {
        // Berlin 2026-03-29: 02:00 → 03:00 (CET → CEST). 02:30 does not exist.
        let now = utc("2026-03-28T12:00:00Z");
        let day = Some(d("2026-03-29"));
        assert_eq!(
            due_in(BERLIN, t("02:30"), day, now),
            utc("2026-03-29T01:00:00Z")
        ); // 03:00 CEST
        // New York 2026-03-08: 02:00 → 03:00 (EST → EDT).
        let day = Some(d("2026-03-08"));
        assert_eq!(
            due_in(NEW_YORK, t("02:30"), day, utc("2026-03-07T12:00:00Z")),
            utc("2026-03-08T07:00:00Z") // 03:00 EDT
        );
    }

    #[test]
    fn autumn_overlap_means_the_earlier() {
        // Berlin 2026-10-25: 03:00 → 02:00; 02:30 is 00:30Z (CEST) and 01:30Z (CET).
        let day = Some(d("2026-10-25"));
        assert_eq!(
            due_in(BERLIN, t("02:30"), day, utc("2026-10-24T12:00:00Z")),
            utc("2026-10-25T00:30:00Z")
        );
        // New York 2026-11-01: 01:30 is 05:30Z (EDT) and 06:30Z (EST).
        let day = Some(d("2026-11-01"));
        assert_eq!(
            due_in(NEW_YORK, t("01:30"), day, utc("2026-10-31T12:00:00Z")),
            utc("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn zones_and_attributes() {
        assert_eq!(zone_named("Europe/Berlin"), Some(BERLIN));
        assert_eq!(zone_named(" europe/berlin "), Some(BERLIN));
        assert_eq!(zone_named("Mars/Olympus"), None);
        assert_eq!(zone_named(""), None);
        assert!(valid_attr("tz") && valid_attr("time_zone-2"));
        assert!(!valid_attr("") && !valid_attr("a.b") && !valid_attr("x\"y"));
        assert_eq!(parse_local_at("09:00"), Some((None, t("09:00"))));
        assert_eq!(
            parse_local_at("2026-12-04 09:00"),
            Some((Some(d("2026-12-04")), t("09:00")))
        );
        assert_eq!(parse_local_at("9 o'clock"), None);
        assert_eq!(
            earliest_start(d("2026-12-04"), t("09:00")),
            utc("2026-12-03T19:00:00Z")
        );
    }
}
