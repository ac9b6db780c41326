//! When a schedule's runs are due: a cron expression (5 fields, or 6 with seconds first) read in
//! an IANA time zone, an optional jitter, and what to do with runs missed while no scheduler
//! was running. Pure: every function takes the time it reasons about.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use sha2::{Digest, Sha256};

use super::FieldError;

/// Longest jitter: a day.
pub const MAX_JITTER_SECS: u32 = 24 * 60 * 60;

/// Most due times one firing looks through when it counts missed runs; a schedule that fires
/// every second and was down for longer than this counts "at least" this many.
pub const MAX_COUNTED_MISSES: u32 = 100_000;

/// Longest cron expression accepted.
const MAX_CRON_CHARS: usize = 200;

/// What happens to runs that fell due while no scheduler was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MissedRuns {
    /// Run once for all of them, as soon as a scheduler sees them (pgBackRest and cron-style
    /// "catch up once"). The default: a backup missed is a backup owed.
    #[default]
    RunOnce,
    /// Skip them; the next run is the next one due.
    Skip,
}

impl MissedRuns {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedRuns::RunOnce => "run_once",
            MissedRuns::Skip => "skip",
        }
    }

    /// Parses a wire name; empty means the default.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s.trim() {
            "" | "run_once" => Ok(MissedRuns::RunOnce),
            "skip" => Ok(MissedRuns::Skip),
            _ => Err(FieldError::new("missed_runs", "must be run_once or skip")),
        }
    }
}

/// A checked schedule timing.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    expression: String,
    zone: Tz,
    jitter_secs: u32,
    missed_runs: MissedRuns,
}

impl PartialEq for Timing {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
            && self.zone == other.zone
            && self.jitter_secs == other.jitter_secs
            && self.missed_runs == other.missed_runs
    }
}

impl Eq for Timing {}

/// Parses a cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
/// seconds first; names (`MON`, `JAN`) and `@daily`-style nicknames; no year field.
fn parse_cron(raw: &str) -> Result<(Cron, String), FieldError> {
    let expression = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if expression.is_empty() {
        return Err(FieldError::new("cron", "must not be empty"));
    }
    if expression.len() > MAX_CRON_CHARS {
        return Err(FieldError::new(
            "cron",
            format!("must be at most {MAX_CRON_CHARS} characters"),
        ));
    }
    let fields = expression.split(' ').count();
    if !(expression.starts_with('@') || fields == 5 || fields == 6) {
        return Err(FieldError::new(
            "cron",
            format!(
                "must have 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), got {fields}"
            ),
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(&expression)
        .map_err(|e| FieldError::new("cron", format!("is not a valid cron expression: {e}")))?;
    Ok((cron, expression))
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_zone(raw: &str) -> Result<Tz, FieldError> {
    let name = raw.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    Tz::from_str(name).map_err(|_| {
        FieldError::new(
            "timezone",
            "must be an IANA time zone name such as Europe/Berlin or UTC",
        )
    })
}

/// What one firing does, decided at `now` for the due time the schedule was waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firing {
    /// Run the job due at `due_at`; `skipped` earlier due times are folded into it.
    Run {
        /// The due time the job is for.
        due_at: DateTime<Utc>,
        /// Earlier due times, missed, that this run stands for.
        skipped: u32,
        /// The next due time after `now`.
        next_due_at: Option<DateTime<Utc>>,
    },
    /// The policy skips missed runs and every due time up to `now` was missed.
    Skip {
        /// The first missed due time.
        first: DateTime<Utc>,
        /// The last.
        last: DateTime<Utc>,
        /// How many.
        count: u32,
        /// The next due time after `now`.
        next_due_at: Option<DateTime<Utc>>,
    },
}

impl Timing {
    /// Checks a timing's fields.
    pub fn check(
        cron: &str,
        timezone: &str,
        jitter_secs: u32,
        missed_runs: &str,
    ) -> Result<Self, FieldError> {
        let (cron, expression) = parse_cron(cron)?;
        let zone = parse_zone(timezone)?;
        if jitter_secs > MAX_JITTER_SECS {
            return Err(FieldError::new(
                "jitter_seconds",
                format!("must be at most {MAX_JITTER_SECS} (a day)"),
            ));
        }
        let timing = Timing {
            cron,
            expression,
            zone,
            jitter_secs,
            missed_runs: MissedRuns::parse(missed_runs)?,
        };
        // An expression that can never match (30 February) would never fire: refuse it.
        let probe = DateTime::<Utc>::from_timestamp(0, 0).expect("the epoch is a valid time");
        if timing.next_due(probe).is_none() {
            return Err(FieldError::new("cron", "never matches any date"));
        }
        Ok(timing)
    }

    /// The expression, whitespace normalised.
    pub fn cron(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The jitter bound in seconds.
    pub fn jitter_secs(&self) -> u32 {
        self.jitter_secs
    }

    /// The missed-run policy.
    pub fn missed_runs(&self) -> MissedRuns {
        self.missed_runs
    }

    /// The first due time strictly after `after`. Local times that a daylight-saving change
    /// skips or repeats are resolved by croner (a skipped time fires once after the change, a
    /// repeated one once).
    pub fn next_due(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest due time at or before `at`.
    fn last_due(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&self.zone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// When the run due at `due` fires: `due` plus a jitter in `[0, jitter)` seconds that
    /// depends only on the schedule and the due time, so every replica computes the same one
    /// and a rebuilt read model equals the original.
    pub fn fire_at(&self, schedule: uuid::Uuid, due: DateTime<Utc>) -> DateTime<Utc> {
        if self.jitter_secs == 0 {
            return due;
        }
        let digest = Sha256::new()
            .chain_update(schedule.as_bytes())
            .chain_update(due.timestamp().to_be_bytes())
            .finalize();
        let word = u64::from_be_bytes(digest[..8].try_into().expect("8 of 32 bytes"));
        due + Duration::seconds(i64::try_from(word % u64::from(self.jitter_secs)).unwrap_or(0))
    }

    /// What firing at `now` does for a schedule waiting for `due`. A due time counts as
    /// missed when `now` is more than `grace` past its fire time.
    pub fn fire(
        &self,
        schedule: uuid::Uuid,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
        grace: Duration,
    ) -> Firing {
        // Every due time up to now, counted (bounded), keeping the first and the last.
        let mut last = due;
        let mut count: u32 = 1;
        let mut next = self.next_due(due);
        while let Some(t) = next.filter(|t| *t <= now) {
            last = t;
            count = count.saturating_add(1);
            if count >= MAX_COUNTED_MISSES {
                // Jump ahead: the rest are folded in uncounted, the latest kept.
                last = self.last_due(now).unwrap_or(t);
                next = self.next_due(now);
                break;
            }
            next = self.next_due(t);
        }
        let next_due_at = next;
        let last_on_time = now <= self.fire_at(schedule, last) + grace;
        match self.missed_runs {
            MissedRuns::RunOnce => Firing::Run {
                due_at: last,
                skipped: count - 1,
                next_due_at,
            },
            MissedRuns::Skip if last_on_time => Firing::Run {
                due_at: last,
                skipped: count - 1,
                next_due_at,
            },
            MissedRuns::Skip => Firing::Skip {
                first: due,
                last,
                count,
                next_due_at,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn timing(cron: &str, tz: &str, missed: &str) -> Timing {
        Timing::check(cron, tz, 0, missed).unwrap()
    }

    #[test]
    fn five_and_six_field_expressions_are_read_in_the_schedules_zone() {
        let berlin = timing("30 2 * * *", "Europe/Berlin", "");
        // 02:30 in Berlin in winter is 01:30 UTC.
        assert_eq!(
            berlin.next_due(utc(2026, 1, 10, 0, 0, 0)),
            Some(utc(2026, 1, 10, 1, 30, 0))
        );
        // And in summer 00:30 UTC.
        assert_eq!(
            berlin.next_due(utc(2026, 7, 10, 0, 0, 0)),
            Some(utc(2026, 7, 10, 0, 30, 0))
        );
        let seconds = timing("*/15 * * * * *", "UTC", "");
        assert_eq!(
            seconds.next_due(utc(2026, 1, 1, 0, 0, 1)),
            Some(utc(2026, 1, 1, 0, 0, 15))
        );
        let named = timing("0 3 * * MON", "America/New_York", "");
        // Monday 2026-01-12 03:00 EST is 08:00 UTC.
        assert_eq!(
            named.next_due(utc(2026, 1, 10, 0, 0, 0)),
            Some(utc(2026, 1, 12, 8, 0, 0))
        );
    }

    #[test]
    fn daylight_saving_gaps_and_repeats_fire_once() {
        // 02:30 does not exist in Berlin on 2026-03-29 (clocks jump 02:00 → 03:00).
        let t = timing("30 2 * * *", "Europe/Berlin", "");
        let spring = t.next_due(utc(2026, 3, 28, 12, 0, 0)).unwrap();
        let after = t.next_due(spring).unwrap();
        assert!(spring > utc(2026, 3, 28, 12, 0, 0) && spring < utc(2026, 3, 30, 0, 0, 0));
        assert_eq!(after, utc(2026, 3, 30, 0, 30, 0));
        // 02:30 happens twice on 2026-10-25; the run fires once that day.
        let first = t.next_due(utc(2026, 10, 24, 12, 0, 0)).unwrap();
        let second = t.next_due(first).unwrap();
        assert!(
            second >= utc(2026, 10, 26, 0, 0, 0),
            "{first} then {second}"
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_the_field_and_the_rule() {
        let err = |cron: &str, tz: &str, jitter: u32, missed: &str| {
            Timing::check(cron, tz, jitter, missed).unwrap_err()
        };
        assert_eq!(err("", "UTC", 0, "").field, "cron");
        assert!(err("* * * *", "UTC", 0, "").rule.contains("got 4"));
        assert!(err("0 0 0 * * * 2030", "UTC", 0, "").rule.contains("got 7"));
        assert_eq!(err("61 * * * *", "UTC", 0, "").field, "cron");
        assert_eq!(err("every day", "UTC", 0, "").field, "cron");
        assert_eq!(
            err("0 0 30 2 *", "UTC", 0, "").rule,
            "never matches any date"
        );
        let zone = err("0 * * * *", "Mars/Olympus", 0, "");
        assert_eq!(zone.field, "timezone");
        assert_eq!(err("0 * * * *", "UTC", 90_000, "").field, "jitter_seconds");
        assert_eq!(err("0 * * * *", "UTC", 0, "sometimes").field, "missed_runs");
        assert_eq!(timing("@daily", "", "").zone(), Tz::UTC);
    }

    #[test]
    fn jitter_is_bounded_and_the_same_for_every_replica() {
        let t = Timing::check("0 * * * *", "UTC", 600, "").unwrap();
        let schedule = uuid::Uuid::from_u128(7);
        let due = utc(2026, 1, 1, 10, 0, 0);
        let fire = t.fire_at(schedule, due);
        assert!(fire >= due && fire < due + Duration::seconds(600));
        assert_eq!(fire, t.fire_at(schedule, due));
        let offsets: std::collections::HashSet<_> = (0..50)
            .map(|h| t.fire_at(schedule, due + Duration::hours(h)) - (due + Duration::hours(h)))
            .collect();
        assert!(offsets.len() > 10, "jitter varies by due time");
    }

    #[test]
    fn after_downtime_run_once_folds_missed_runs_into_one_and_skip_drops_them() {
        let schedule = uuid::Uuid::from_u128(1);
        let grace = Duration::seconds(60);
        let due = utc(2026, 1, 1, 1, 0, 0);
        let now = utc(2026, 1, 1, 5, 30, 0);
        let run_once = timing("0 * * * *", "UTC", "run_once");
        assert_eq!(
            run_once.fire(schedule, due, now, grace),
            Firing::Run {
                due_at: utc(2026, 1, 1, 5, 0, 0),
                skipped: 4,
                next_due_at: Some(utc(2026, 1, 1, 6, 0, 0)),
            }
        );
        let skip = timing("0 * * * *", "UTC", "skip");
        assert_eq!(
            skip.fire(schedule, due, now, grace),
            Firing::Skip {
                first: due,
                last: utc(2026, 1, 1, 5, 0, 0),
                count: 5,
                next_due_at: Some(utc(2026, 1, 1, 6, 0, 0)),
            }
        );
        // On time, both policies run it.
        let on_time = utc(2026, 1, 1, 1, 0, 20);
        for t in [&run_once, &skip] {
            assert_eq!(
                t.fire(schedule, due, on_time, grace),
                Firing::Run {
                    due_at: due,
                    skipped: 0,
                    next_due_at: Some(utc(2026, 1, 1, 2, 0, 0)),
                }
            );
        }
        // Skip still runs the latest due time when it is on time.
        assert_eq!(
            skip.fire(schedule, due, utc(2026, 1, 1, 5, 0, 30), grace),
            Firing::Run {
                due_at: utc(2026, 1, 1, 5, 0, 0),
                skipped: 4,
                next_due_at: Some(utc(2026, 1, 1, 6, 0, 0)),
            }
        );
    }

    #[test]
    fn a_very_long_downtime_is_counted_up_to_a_bound() {
        let every_second = timing("* * * * * *", "UTC", "skip");
        let due = utc(2026, 1, 1, 0, 0, 0);
        let second = utc(2026, 1, 10, 0, 0, 0);
        let now = second + Duration::milliseconds(500);
        let Firing::Skip {
            count,
            last,
            next_due_at,
            ..
        } = every_second.fire(uuid::Uuid::nil(), due, now, Duration::zero())
        else {
            panic!("skipped")
        };
        assert_eq!(count, MAX_COUNTED_MISSES);
        assert_eq!(last, second);
        assert_eq!(next_due_at, Some(second + Duration::seconds(1)));
    }
}
