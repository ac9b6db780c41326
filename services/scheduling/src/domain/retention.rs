//! Grandfather-father-son retention: which of a schedule's successful backups to keep.
//!
//! The rules are restic's `forget` and pgBackRest's, read the usual way: keep the newest
//! `keep_last` backups, and for each of the most recent `daily` days (`weekly` ISO weeks,
//! `monthly` months, `yearly` years) that have a backup, the newest backup of that period.
//! Periods are calendar periods in the schedule's time zone. The newest backup is always kept,
//! whatever the policy says. A policy of all zeros keeps everything.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

use super::FieldError;

/// Largest count of any one rule.
pub const MAX_KEEP: u32 = 10_000;

/// A GFS policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Retention {
    /// The newest N backups.
    pub keep_last: u32,
    /// The newest backup of each of the last N days that have one.
    pub daily: u32,
    /// Of each of the last N ISO weeks.
    pub weekly: u32,
    /// Of each of the last N months.
    pub monthly: u32,
    /// Of each of the last N years.
    pub yearly: u32,
}

/// The calendar period a backup falls in (year and day, week, month, or 0), in the zone.
type Period<'a> = dyn Fn(&Backup) -> (i32, u32) + 'a;

/// One successful backup, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backup {
    /// The job that made it.
    pub job_id: uuid::Uuid,
    /// When it was taken (the job's due time).
    pub taken_at: DateTime<Utc>,
}

impl Retention {
    /// Checks every count against [`MAX_KEEP`].
    pub fn check(self) -> Result<Self, FieldError> {
        for (field, value) in [
            ("retention.keep_last", self.keep_last),
            ("retention.daily", self.daily),
            ("retention.weekly", self.weekly),
            ("retention.monthly", self.monthly),
            ("retention.yearly", self.yearly),
        ] {
            if value > MAX_KEEP {
                return Err(FieldError::new(
                    field,
                    format!("must be at most {MAX_KEEP}"),
                ));
            }
        }
        Ok(self)
    }

    /// Whether the policy keeps everything.
    pub fn keeps_all(self) -> bool {
        self == Retention::default()
    }

    /// The backups to delete: those no rule keeps. `backups` may be in any order.
    pub fn expired(self, backups: &[Backup], zone: Tz) -> Vec<Backup> {
        if self.keeps_all() || backups.is_empty() {
            return Vec::new();
        }
        let mut newest_first = backups.to_vec();
        newest_first.sort_by(|a, b| {
            b.taken_at
                .cmp(&a.taken_at)
                .then_with(|| b.job_id.cmp(&a.job_id))
        });
        let mut keep: HashSet<uuid::Uuid> = HashSet::new();
        keep.insert(newest_first[0].job_id);
        keep.extend(
            newest_first
                .iter()
                .take(self.keep_last as usize)
                .map(|b| b.job_id),
        );
        let local = |b: &Backup| b.taken_at.with_timezone(&zone);
        let rules: [(u32, &Period); 4] = [
            (self.daily, &|b| (local(b).year(), local(b).ordinal())),
            (self.weekly, &|b| {
                let week = local(b).iso_week();
                (week.year(), week.week())
            }),
            (self.monthly, &|b| (local(b).year(), local(b).month())),
            (self.yearly, &|b| (local(b).year(), 0)),
        ];
        for (count, period) in rules {
            let mut seen = HashSet::new();
            for backup in &newest_first {
                if seen.len() == count as usize {
                    break;
                }
                // Newest first, so the first backup seen in a period is its newest.
                if seen.insert(period(backup)) {
                    keep.insert(backup.job_id);
                }
            }
        }
        newest_first
            .into_iter()
            .filter(|b| !keep.contains(&b.job_id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn backups_every(hours: i64, count: i64, start: DateTime<Utc>) -> Vec<Backup> {
        (0..count)
            .map(|i| Backup {
                job_id: uuid::Uuid::from_u128(i as u128 + 1),
                taken_at: start + Duration::hours(hours * i),
            })
            .collect()
    }

    fn kept(policy: Retention, backups: &[Backup], zone: Tz) -> Vec<DateTime<Utc>> {
        let expired: HashSet<_> = policy
            .expired(backups, zone)
            .iter()
            .map(|b| b.job_id)
            .collect();
        let mut kept: Vec<_> = backups
            .iter()
            .filter(|b| !expired.contains(&b.job_id))
            .map(|b| b.taken_at)
            .collect();
        kept.sort();
        kept
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let backups = backups_every(1, 10, start);
        let policy = Retention {
            keep_last: 3,
            ..Retention::default()
        };
        assert_eq!(
            kept(policy, &backups, Tz::UTC),
            (7..10)
                .map(|h| start + Duration::hours(h))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn each_period_keeps_its_newest_backup_for_the_last_n_periods_that_have_one() {
        // Every 6 hours for 10 days from Thursday 2026-01-01.
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let backups = backups_every(6, 40, start);
        let daily = Retention {
            daily: 3,
            ..Retention::default()
        };
        let day_end = |d: u32| Utc.with_ymd_and_hms(2026, 1, d, 18, 0, 0).unwrap();
        assert_eq!(
            kept(daily, &backups, Tz::UTC),
            vec![day_end(8), day_end(9), day_end(10)]
        );
        // ISO weeks: 2026-01-01 (Thu) is in week 1, which ends on Sunday 4 January.
        let weekly = Retention {
            weekly: 2,
            ..Retention::default()
        };
        assert_eq!(
            kept(weekly, &backups, Tz::UTC),
            vec![day_end(4), day_end(10)]
        );
    }

    #[test]
    fn periods_are_read_in_the_schedules_zone() {
        // 23:30 UTC on 1 January is already 2 January in Berlin.
        let late = Backup {
            job_id: uuid::Uuid::from_u128(1),
            taken_at: Utc.with_ymd_and_hms(2026, 1, 1, 23, 30, 0).unwrap(),
        };
        let next = Backup {
            job_id: uuid::Uuid::from_u128(2),
            taken_at: Utc.with_ymd_and_hms(2026, 1, 2, 12, 0, 0).unwrap(),
        };
        let policy = Retention {
            daily: 2,
            ..Retention::default()
        };
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(policy.expired(&[late, next], berlin), vec![late]);
        assert!(policy.expired(&[late, next], Tz::UTC).is_empty());
    }

    #[test]
    fn the_newest_backup_is_always_kept_and_zeros_keep_everything() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let backups = backups_every(24, 5, start);
        let yearly_only = Retention {
            yearly: 1,
            ..Retention::default()
        };
        assert_eq!(
            kept(yearly_only, &backups, Tz::UTC),
            vec![start + Duration::days(4)]
        );
        assert!(Retention::default().expired(&backups, Tz::UTC).is_empty());
    }

    #[test]
    fn counts_above_the_bound_name_their_field() {
        let err = Retention {
            monthly: MAX_KEEP + 1,
            ..Retention::default()
        }
        .check()
        .unwrap_err();
        assert_eq!(err.field, "retention.monthly");
    }
}
