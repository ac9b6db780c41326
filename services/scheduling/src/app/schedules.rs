//! Schedules: create, change, pause, resume, delete, read.

use chrono::Utc;
use coffer_db::TenantTx;
use coffer_eventstore::ExecuteError;
use coffer_types::{Actor, AggregateId, OrgId};

use super::{Error, Scheduling};
use crate::domain::schedule::{
    Schedule, ScheduleCommand, ScheduleError, ScheduleFields, ScheduleSpec,
};
use crate::store::{self, ScheduleView};

impl From<ExecuteError<ScheduleError>> for Error {
    fn from(e: ExecuteError<ScheduleError>) -> Self {
        match e {
            ExecuteError::Rejected(ScheduleError::Invalid(f)) => Error::Invalid(f),
            ExecuteError::Rejected(ScheduleError::NotFound) => Error::NotFound("schedule"),
            ExecuteError::Rejected(e @ ScheduleError::AlreadyExists) => {
                Error::AlreadyExists(e.to_string())
            }
            ExecuteError::Rejected(ScheduleError::Already(state)) => {
                Error::Precondition(if state == "paused" {
                    "schedule is already paused"
                } else {
                    "schedule is already running"
                })
            }
            ExecuteError::Rejected(ScheduleError::Paused) => {
                Error::Precondition("schedule is paused")
            }
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

/// Refuses a schedule whose database or destination the org does not have.
async fn check_targets(tx: &mut TenantTx, spec: &ScheduleSpec) -> Result<(), Error> {
    if store::database(tx, spec.database_id).await?.is_none() {
        return Err(Error::Precondition(
            "database_id names no database of this org",
        ));
    }
    if store::destinations::destination(tx, spec.destination_id)
        .await?
        .is_none()
    {
        return Err(Error::Precondition(
            "destination_id names no destination of this org",
        ));
    }
    Ok(())
}

impl Scheduling {
    /// Creates a schedule of `org`.
    pub async fn create_schedule(
        &self,
        actor: &Actor,
        org: OrgId,
        fields: ScheduleFields,
    ) -> Result<ScheduleView, Error> {
        let id = uuid::Uuid::now_v7();
        let command = ScheduleCommand::CreateSchedule {
            fields: fields.clone(),
            now: Utc::now(),
        };
        self.write_schedule(actor, org, id, &fields, command).await
    }

    /// Replaces every field of a schedule of `org`.
    pub async fn change_schedule(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        fields: ScheduleFields,
    ) -> Result<ScheduleView, Error> {
        let command = ScheduleCommand::ChangeSchedule {
            fields: fields.clone(),
            now: Utc::now(),
        };
        self.write_schedule(actor, org, id, &fields, command).await
    }

    async fn write_schedule(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        fields: &ScheduleFields,
        command: ScheduleCommand,
    ) -> Result<ScheduleView, Error> {
        let spec = ScheduleSpec::check(fields)?;
        let mut tx = self.begin(org).await?;
        if matches!(command, ScheduleCommand::ChangeSchedule { .. })
            && store::schedule(&mut tx, id).await?.is_none()
        {
            return Err(Error::NotFound("schedule"));
        }
        if store::schedule_name_taken(&mut tx, &spec.name, id).await? {
            return Err(Error::AlreadyExists(format!(
                "name {} is taken by another schedule of the org",
                spec.name
            )));
        }
        check_targets(&mut tx, &spec).await?;
        self.store
            .execute_in::<Schedule>(&mut tx, AggregateId::from(id), actor, command)
            .await?;
        let view = store::schedule(&mut tx, id)
            .await?
            .expect("written in this transaction");
        tx.commit().await?;
        Ok(view)
    }

    /// Pauses, resumes or deletes a schedule of `org`.
    async fn schedule_command(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        command: ScheduleCommand,
    ) -> Result<Option<ScheduleView>, Error> {
        let mut tx = self.begin(org).await?;
        self.store
            .execute_in::<Schedule>(&mut tx, AggregateId::from(id), actor, command)
            .await?;
        let view = store::schedule(&mut tx, id).await?;
        tx.commit().await?;
        Ok(view)
    }

    /// Pauses a schedule: nothing fires until it is resumed.
    pub async fn pause_schedule(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
    ) -> Result<ScheduleView, Error> {
        self.schedule_command(actor, org, id, ScheduleCommand::PauseSchedule)
            .await?
            .ok_or(Error::NotFound("schedule"))
    }

    /// Resumes a paused schedule from the next due time after now.
    pub async fn resume_schedule(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
    ) -> Result<ScheduleView, Error> {
        let command = ScheduleCommand::ResumeSchedule { now: Utc::now() };
        self.schedule_command(actor, org, id, command)
            .await?
            .ok_or(Error::NotFound("schedule"))
    }

    /// Deletes a schedule; its jobs stay.
    pub async fn delete_schedule(
        &self,
        actor: &Actor,
        org: OrgId,
        id: uuid::Uuid,
        reason: &str,
    ) -> Result<(), Error> {
        let command = ScheduleCommand::DeleteSchedule {
            reason: reason.to_owned(),
        };
        self.schedule_command(actor, org, id, command).await?;
        Ok(())
    }

    /// One live schedule of `org`.
    pub async fn get_schedule(&self, org: OrgId, id: uuid::Uuid) -> Result<ScheduleView, Error> {
        let mut tx = self.begin(org).await?;
        store::schedule(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("schedule"))
    }

    /// Every live schedule of `org`, by name.
    pub async fn list_schedules(&self, org: OrgId) -> Result<Vec<ScheduleView>, Error> {
        let mut tx = self.begin(org).await?;
        Ok(store::schedules(&mut tx).await?)
    }
}
