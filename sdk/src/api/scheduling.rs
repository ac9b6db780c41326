//! Scheduling's typed clients: [`Databases`], [`Destinations`], [`Schedules`] and [`Jobs`]
//! (`coffer.scheduling.v1`).

use coffer_proto::scheduling::v1 as pb;
use coffer_proto::scheduling::v1::{
    database_service_client::DatabaseServiceClient,
    destination_service_client::DestinationServiceClient, job_service_client::JobServiceClient,
    schedule_service_client::ScheduleServiceClient,
};
use coffer_types::{DatabaseId, DestinationId, JobId, OrgId, ScheduleId};

use crate::client::Rpc;
use crate::{
    Client, Database, DatabaseFields, Destination, DestinationFields, Error, Job, JobQuery, Page,
    Schedule, ScheduleFields,
};

/// The database registry: an org's backup targets and the agent that reaches each one
/// (`coffer.scheduling.v1.DatabaseService`).
#[derive(Debug, Clone, Copy)]
pub struct Databases<'a> {
    client: &'a Client,
}

impl<'a> Databases<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Registers a database in `org` (version 1). Its name must be free among the org's
    /// databases ([`Error::AlreadyExists`]); its agent must be an enrolled, unrevoked agent of
    /// the org and its password reference a credential of the org. A field breaking a rule is
    /// [`Error::InvalidArgument`] naming it.
    ///
    /// Retried only when certainly not applied (see [`crate::RetryPolicy`]): a
    /// [`Error::Transport`] answer may mean it was registered; list the databases to check.
    pub async fn register(&self, org: OrgId, fields: &DatabaseFields) -> Result<Database, Error> {
        let request = pb::RegisterDatabaseRequest {
            org_id: org.to_string(),
            fields: Some(fields.to_pb()),
        };
        self.client
            .call(
                Rpc::write("RegisterDatabase"),
                request,
                |channel, request| async move {
                    DatabaseServiceClient::new(channel)
                        .register_database(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Replaces every field of `database` (the next version); see [`Database::fields`].
    pub async fn change(
        &self,
        org: OrgId,
        database: DatabaseId,
        fields: &DatabaseFields,
    ) -> Result<Database, Error> {
        let request = pb::ChangeDatabaseRequest {
            org_id: org.to_string(),
            database_id: database.to_string(),
            fields: Some(fields.to_pb()),
        };
        self.client
            .call(
                Rpc::write("ChangeDatabase"),
                request,
                |channel, request| async move {
                    DatabaseServiceClient::new(channel)
                        .change_database(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Reads one database.
    pub async fn get(&self, org: OrgId, database: DatabaseId) -> Result<Database, Error> {
        let request = pb::GetDatabaseRequest {
            org_id: org.to_string(),
            database_id: database.to_string(),
        };
        self.client
            .call(
                Rpc::read("GetDatabase"),
                request,
                |channel, request| async move {
                    DatabaseServiceClient::new(channel)
                        .get_database(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Every database of `org`, by name.
    pub async fn list(&self, org: OrgId) -> Result<Vec<Database>, Error> {
        let request = pb::ListDatabasesRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("ListDatabases"),
                request,
                |channel, request| async move {
                    DatabaseServiceClient::new(channel)
                        .list_databases(request)
                        .await
                },
            )
            .await?
            .databases
            .into_iter()
            .map(Database::try_from)
            .collect()
    }

    /// Removes `database` from the registry, saying why (empty: no reason); its name is free
    /// again.
    pub async fn remove(
        &self,
        org: OrgId,
        database: DatabaseId,
        reason: &str,
    ) -> Result<(), Error> {
        let request = pb::RemoveDatabaseRequest {
            org_id: org.to_string(),
            database_id: database.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("RemoveDatabase"),
                request,
                |channel, request| async move {
                    DatabaseServiceClient::new(channel)
                        .remove_database(request)
                        .await
                },
            )
            .await?;
        Ok(())
    }
}

/// Storage destinations: the S3-compatible buckets and local directories an org's backups are
/// written to (`coffer.scheduling.v1.DestinationService`).
///
/// Every registration and change is probed first (list, write, read back and delete a small
/// object under `<prefix>.coffer-probe/`); a failing probe saves nothing and is
/// [`Error::FailedPrecondition`] `probe failed at <step>: <cause>`. An endpoint resolving to an
/// address the deployment does not allow (loopback, private, link-local, metadata) is
/// [`Error::InvalidArgument`] naming `endpoint`; a local path that is not absolute, not
/// normalised or not under one of the deployment's local roots is [`Error::InvalidArgument`]
/// naming `path`.
#[derive(Debug, Clone, Copy)]
pub struct Destinations<'a> {
    client: &'a Client,
}

impl<'a> Destinations<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Probes, then registers a destination in `org` (version 1). Its name must be free among
    /// the org's destinations ([`Error::AlreadyExists`]); an S3 destination's access key must
    /// be a `storage` credential of the org holding JSON keys (else
    /// [`Error::FailedPrecondition`] naming `access_key_vault_ref`). A field breaking a rule is
    /// [`Error::InvalidArgument`] naming it; a failed probe is [`Error::FailedPrecondition`]
    /// `probe failed at <step>: <cause>`. Where the server runs scheduling without the
    /// credentials service in the same process, an S3 destination is [`Error::Unavailable`].
    ///
    /// Retried only when certainly not applied (see [`crate::RetryPolicy`]): a
    /// [`Error::Transport`] answer may mean it was registered; list the destinations to check.
    pub async fn register(
        &self,
        org: OrgId,
        fields: &DestinationFields,
    ) -> Result<Destination, Error> {
        let request = pb::RegisterDestinationRequest {
            org_id: org.to_string(),
            fields: Some(fields.to_pb()),
        };
        self.client
            .call(
                Rpc::write("RegisterDestination"),
                request,
                |channel, request| async move {
                    DestinationServiceClient::new(channel)
                        .register_destination(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Probes `fields`, then replaces every field of `destination` (the next version; see
    /// [`Destination::fields`]); it may change kind. The errors are
    /// [`register`](Self::register)'s, and [`Error::NotFound`] for an unknown destination; a
    /// failed probe leaves the destination as it was.
    pub async fn change(
        &self,
        org: OrgId,
        destination: DestinationId,
        fields: &DestinationFields,
    ) -> Result<Destination, Error> {
        let request = pb::ChangeDestinationRequest {
            org_id: org.to_string(),
            destination_id: destination.to_string(),
            fields: Some(fields.to_pb()),
        };
        self.client
            .call(
                Rpc::write("ChangeDestination"),
                request,
                |channel, request| async move {
                    DestinationServiceClient::new(channel)
                        .change_destination(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Reads one destination; [`Error::NotFound`] if `org` has no such destination.
    pub async fn get(&self, org: OrgId, destination: DestinationId) -> Result<Destination, Error> {
        let request = pb::GetDestinationRequest {
            org_id: org.to_string(),
            destination_id: destination.to_string(),
        };
        self.client
            .call(
                Rpc::read("GetDestination"),
                request,
                |channel, request| async move {
                    DestinationServiceClient::new(channel)
                        .get_destination(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Every destination of `org`, by name.
    pub async fn list(&self, org: OrgId) -> Result<Vec<Destination>, Error> {
        let request = pb::ListDestinationsRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("ListDestinations"),
                request,
                |channel, request| async move {
                    DestinationServiceClient::new(channel)
                        .list_destinations(request)
                        .await
                },
            )
            .await?
            .destinations
            .into_iter()
            .map(Destination::try_from)
            .collect()
    }

    /// Removes `destination`, saying why (empty: no reason); its name is free again. Objects
    /// already written stay where they are. [`Error::NotFound`] if `org` has no such
    /// destination.
    pub async fn remove(
        &self,
        org: OrgId,
        destination: DestinationId,
        reason: &str,
    ) -> Result<(), Error> {
        let request = pb::RemoveDestinationRequest {
            org_id: org.to_string(),
            destination_id: destination.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("RemoveDestination"),
                request,
                |channel, request| async move {
                    DestinationServiceClient::new(channel)
                        .remove_destination(request)
                        .await
                },
            )
            .await?;
        Ok(())
    }

    /// Probes a saved destination again (list, write, read back, delete) and changes nothing.
    /// `Ok` is a probe that passed every step, with the destination probed; a failed one is
    /// [`Error::FailedPrecondition`] `probe failed at <step>: <cause>`, as is an endpoint the
    /// deployment no longer allows. [`Error::NotFound`] if `org` has no such destination.
    pub async fn probe(
        &self,
        org: OrgId,
        destination: DestinationId,
    ) -> Result<Destination, Error> {
        let request = pb::ProbeDestinationRequest {
            org_id: org.to_string(),
            destination_id: destination.to_string(),
        };
        // Retried like a read: a probe saves nothing and deletes the object it wrote, so
        // sending it twice is harmless.
        let response = self
            .client
            .call(
                Rpc::read("ProbeDestination"),
                request,
                |channel, request| async move {
                    DestinationServiceClient::new(channel)
                        .probe_destination(request)
                        .await
                },
            )
            .await?;
        response
            .destination
            .ok_or_else(|| Error::protocol("ProbeDestinationResponse.destination is missing"))?
            .try_into()
    }
}

/// Backup schedules: a database, a destination, a cron expression in a time zone, and a
/// retention policy (`coffer.scheduling.v1.ScheduleService`).
#[derive(Debug, Clone, Copy)]
pub struct Schedules<'a> {
    client: &'a Client,
}

impl<'a> Schedules<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// Creates a schedule in `org`; it fires from its first due time after now. An invalid
    /// cron expression, unknown time zone or other broken rule is [`Error::InvalidArgument`]
    /// naming the field; an unknown database is [`Error::NotFound`].
    ///
    /// Retried only when certainly not applied (see [`crate::RetryPolicy`]): a
    /// [`Error::Transport`] answer may mean it was created; list the schedules to check.
    pub async fn create(&self, org: OrgId, fields: &ScheduleFields) -> Result<Schedule, Error> {
        let request = pb::CreateScheduleRequest {
            org_id: org.to_string(),
            fields: Some(fields.to_pb()),
        };
        self.client
            .call(
                Rpc::write("CreateSchedule"),
                request,
                |channel, request| async move {
                    ScheduleServiceClient::new(channel)
                        .create_schedule(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Replaces every field of `schedule` (the next version; see [`Schedule::fields`]). A
    /// running schedule waits for the new timing's first due time.
    pub async fn change(
        &self,
        org: OrgId,
        schedule: ScheduleId,
        fields: &ScheduleFields,
    ) -> Result<Schedule, Error> {
        let request = pb::ChangeScheduleRequest {
            org_id: org.to_string(),
            schedule_id: schedule.to_string(),
            fields: Some(fields.to_pb()),
        };
        self.client
            .call(
                Rpc::write("ChangeSchedule"),
                request,
                |channel, request| async move {
                    ScheduleServiceClient::new(channel)
                        .change_schedule(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Reads one schedule.
    pub async fn get(&self, org: OrgId, schedule: ScheduleId) -> Result<Schedule, Error> {
        let request = pb::GetScheduleRequest {
            org_id: org.to_string(),
            schedule_id: schedule.to_string(),
        };
        self.client
            .call(
                Rpc::read("GetSchedule"),
                request,
                |channel, request| async move {
                    ScheduleServiceClient::new(channel)
                        .get_schedule(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Every schedule of `org`.
    pub async fn list(&self, org: OrgId) -> Result<Vec<Schedule>, Error> {
        let request = pb::ListSchedulesRequest {
            org_id: org.to_string(),
        };
        self.client
            .call(
                Rpc::read("ListSchedules"),
                request,
                |channel, request| async move {
                    ScheduleServiceClient::new(channel)
                        .list_schedules(request)
                        .await
                },
            )
            .await?
            .schedules
            .into_iter()
            .map(Schedule::try_from)
            .collect()
    }

    /// Pauses `schedule`: nothing fires until it is resumed.
    pub async fn pause(&self, org: OrgId, schedule: ScheduleId) -> Result<Schedule, Error> {
        let request = pb::PauseScheduleRequest {
            org_id: org.to_string(),
            schedule_id: schedule.to_string(),
        };
        self.client
            .call(
                Rpc::write("PauseSchedule"),
                request,
                |channel, request| async move {
                    ScheduleServiceClient::new(channel)
                        .pause_schedule(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Resumes `schedule`: it fires again from its first due time after now; runs that fell
    /// due while it was paused are not owed.
    pub async fn resume(&self, org: OrgId, schedule: ScheduleId) -> Result<Schedule, Error> {
        let request = pb::ResumeScheduleRequest {
            org_id: org.to_string(),
            schedule_id: schedule.to_string(),
        };
        self.client
            .call(
                Rpc::write("ResumeSchedule"),
                request,
                |channel, request| async move {
                    ScheduleServiceClient::new(channel)
                        .resume_schedule(request)
                        .await
                },
            )
            .await?
            .try_into()
    }

    /// Deletes `schedule`, saying why (empty: no reason). Its jobs and backups stay.
    pub async fn delete(
        &self,
        org: OrgId,
        schedule: ScheduleId,
        reason: &str,
    ) -> Result<(), Error> {
        let request = pb::DeleteScheduleRequest {
            org_id: org.to_string(),
            schedule_id: schedule.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("DeleteSchedule"),
                request,
                |channel, request| async move {
                    ScheduleServiceClient::new(channel)
                        .delete_schedule(request)
                        .await
                },
            )
            .await?;
        Ok(())
    }
}

/// Backup and restore jobs as users see and steer them (`coffer.scheduling.v1.JobService`).
/// Agents claim and report on jobs themselves, over mTLS (see `coffer-agent`).
#[derive(Debug, Clone, Copy)]
pub struct Jobs<'a> {
    client: &'a Client,
}

impl<'a> Jobs<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Self { client }
    }

    /// A backup of `schedule` now, outside its cron (a pending job, trigger
    /// [`crate::JobTrigger::Manual`]).
    ///
    /// Retried only when certainly not applied (see [`crate::RetryPolicy`]): a
    /// [`Error::Transport`] answer may mean a job was created; list the schedule's jobs.
    pub async fn run_now(&self, org: OrgId, schedule: ScheduleId) -> Result<Job, Error> {
        let request = pb::RunNowRequest {
            org_id: org.to_string(),
            schedule_id: schedule.to_string(),
        };
        self.client
            .call(Rpc::write("RunNow"), request, |channel, request| async move {
                JobServiceClient::new(channel).run_now(request).await
            })
            .await?
            .try_into()
    }

    /// A restore of the succeeded backup job `backup` into `database` (`None`: the backup's
    /// own database).
    pub async fn restore(
        &self,
        org: OrgId,
        backup: JobId,
        database: Option<DatabaseId>,
    ) -> Result<Job, Error> {
        let request = pb::StartRestoreRequest {
            org_id: org.to_string(),
            backup_job_id: backup.to_string(),
            database_id: database.map(|d| d.to_string()).unwrap_or_default(),
        };
        self.client
            .call(
                Rpc::write("StartRestore"),
                request,
                |channel, request| async move {
                    JobServiceClient::new(channel).start_restore(request).await
                },
            )
            .await?
            .try_into()
    }

    /// Cancels `job`, saying why (empty: no reason). A pending job is cancelled at once; one
    /// an agent holds gets [`Job::cancel_requested`] and stops at its next heartbeat. A job
    /// that is already over is [`Error::FailedPrecondition`].
    pub async fn cancel(&self, org: OrgId, job: JobId, reason: &str) -> Result<Job, Error> {
        let request = pb::CancelJobRequest {
            org_id: org.to_string(),
            job_id: job.to_string(),
            reason: reason.to_owned(),
        };
        self.client
            .call(
                Rpc::write("CancelJob"),
                request,
                |channel, request| async move {
                    JobServiceClient::new(channel).cancel_job(request).await
                },
            )
            .await?
            .try_into()
    }

    /// Reads one job, with its last reported progress while an agent holds it.
    pub async fn get(&self, org: OrgId, job: JobId) -> Result<Job, Error> {
        let request = pb::GetJobRequest {
            org_id: org.to_string(),
            job_id: job.to_string(),
        };
        self.client
            .call(Rpc::read("GetJob"), request, |channel, request| async move {
                JobServiceClient::new(channel).get_job(request).await
            })
            .await?
            .try_into()
    }

    /// One page of `org`'s jobs matching `query`, newest first.
    pub async fn list(&self, org: OrgId, query: &JobQuery) -> Result<Page<Job>, Error> {
        let response = self
            .client
            .call(
                Rpc::read("ListJobs"),
                query.to_request(org),
                |channel, request| async move {
                    JobServiceClient::new(channel).list_jobs(request).await
                },
            )
            .await?;
        Ok(Page {
            items: response
                .jobs
                .into_iter()
                .map(Job::try_from)
                .collect::<Result<_, _>>()?,
            next_page_token: (!response.next_page_token.is_empty())
                .then_some(response.next_page_token),
        })
    }

    /// Every job of `org` matching `query`, from the page it names on, following the pages.
    pub async fn list_all(&self, org: OrgId, query: JobQuery) -> Result<Vec<Job>, Error> {
        let mut query = query;
        let mut all = Vec::new();
        loop {
            let page = self.list(org, &query).await?;
            all.extend(page.items);
            match page.next_page_token {
                Some(token) => query = query.page_token(token),
                None => return Ok(all),
            }
        }
    }
}
