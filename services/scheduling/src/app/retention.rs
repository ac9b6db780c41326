//! Retention: scheduling, never an agent, deletes the backups a schedule's GFS policy no
//! longer keeps, against the destination, and records every deletion as events of the backup's
//! job so it reaches the audit log.
//!
//! For each backup to delete, `BackupExpired` is committed first (no deletion the log does not
//! hold, P3), then the object is deleted, then `BackupDeleted` records the storage outcome. A
//! failed deletion leaves the backup expired but undeleted, and the next pass tries again; so
//! does a pass cut short between the two events. The newest successful backup is never deleted:
//! [`Retention::expired`] never returns it, and this module checks again.

use chrono::{DateTime, Utc};
use coffer_types::{Actor, ActorKind, AggregateId, OrgId};

use super::{Error, Scheduling};
use crate::domain::job::{Job, JobCommand};
use crate::domain::retention::Backup;
use crate::store::{self, RetainedBackup};

/// What one retention pass over a schedule did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// Backups whose objects were deleted.
    pub deleted: Vec<uuid::Uuid>,
    /// Backups whose deletion failed (retried at the next pass), with why.
    pub failed: Vec<(uuid::Uuid, String)>,
}

fn retention_actor() -> Actor {
    Actor {
        kind: ActorKind::Service,
        id: "scheduling".into(),
    }
}

impl Scheduling {
    /// Applies schedule `schedule`'s retention policy as of `now`: the backups no rule keeps
    /// (and any an earlier pass expired but could not delete) are deleted from the destination.
    pub async fn apply_retention(
        &self,
        org: OrgId,
        schedule: uuid::Uuid,
        now: DateTime<Utc>,
    ) -> Result<RetentionPass, Error> {
        let (view, backups, destination) = {
            let mut tx = self.begin(org).await?;
            let Some(view) = store::schedule(&mut tx, schedule).await? else {
                return Ok(RetentionPass::default());
            };
            let backups = store::retained_backups(&mut tx, schedule).await?;
            let destination =
                store::destinations::destination(&mut tx, view.spec.destination_id).await?;
            (view, backups, destination)
        };
        let weighed: Vec<Backup> = backups
            .iter()
            .filter(|b| b.due_at <= now)
            .map(|b| Backup {
                job_id: b.job_id,
                taken_at: b.due_at,
            })
            .collect();
        let newest = weighed
            .iter()
            .max_by_key(|b| (b.taken_at, b.job_id))
            .map(|b| b.job_id);
        let expired: std::collections::HashSet<uuid::Uuid> = view
            .spec
            .retention
            .expired(&weighed, view.spec.timing.zone())
            .into_iter()
            .map(|b| b.job_id)
            .collect();
        let doomed: Vec<&RetainedBackup> = backups
            .iter()
            .filter(|b| (b.expired || expired.contains(&b.job_id)) && Some(b.job_id) != newest)
            .collect();
        if doomed.is_empty() {
            return Ok(RetentionPass::default());
        }
        let Some(destination) = destination else {
            tracing::warn!(%org, schedule_id = %schedule, "retention cannot delete: the schedule's destination was removed");
            return Ok(RetentionPass::default());
        };
        let store = self
            .open_for_retention(org, destination.destination_id, &destination.spec)
            .await?;
        let mut pass = RetentionPass::default();
        let actor = retention_actor();
        for backup in doomed {
            let job = AggregateId::from(backup.job_id);
            // Recorded before the object is touched.
            self.store
                .execute::<Job>(org, job, &actor, JobCommand::ExpireBackup)
                .await?;
            let error = match store.delete(&backup.object_key).await {
                Ok(()) => None,
                Err(e) => Some(e.to_string()),
            };
            self.store
                .execute::<Job>(
                    org,
                    job,
                    &actor,
                    JobCommand::RecordDeletion {
                        error: error.clone(),
                    },
                )
                .await?;
            match error {
                None => pass.deleted.push(backup.job_id),
                Some(why) => {
                    tracing::warn!(%org, schedule_id = %schedule, job_id = %backup.job_id, error = %why, "retention could not delete a backup; retried at the next pass");
                    pass.failed.push((backup.job_id, why));
                }
            }
        }
        tracing::info!(%org, schedule_id = %schedule, deleted = pass.deleted.len(), failed = pass.failed.len(), "retention applied");
        Ok(pass)
    }

    /// Applies every schedule's retention (the daily sweep).
    pub async fn sweep_retention(&self, now: DateTime<Utc>) -> Result<(), Error> {
        for (org, schedule) in store::retained_schedules(self.store.db().pool()).await? {
            if let Err(e) = self.apply_retention(org, schedule, now).await {
                tracing::warn!(error = %e, %org, schedule_id = %schedule, "retention pass failed");
            }
        }
        Ok(())
    }
}
