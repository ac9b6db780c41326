-- Scheduling: schedules and jobs, projections of the Schedule and Job aggregates' events, and
-- the operational lease table the agents' heartbeats keep fresh.

CREATE TABLE schedules (
    org_id          uuid        NOT NULL,
    schedule_id     uuid        PRIMARY KEY,
    name            text        NOT NULL,
    database_id     uuid        NOT NULL,
    destination_id  uuid        NOT NULL,
    cron            text        NOT NULL,
    timezone        text        NOT NULL,
    jitter_seconds  integer     NOT NULL CHECK (jitter_seconds >= 0),
    missed_runs     text        NOT NULL CHECK (missed_runs IN ('run_once', 'skip')),
    keep_last       integer     NOT NULL CHECK (keep_last >= 0),
    keep_daily      integer     NOT NULL CHECK (keep_daily >= 0),
    keep_weekly     integer     NOT NULL CHECK (keep_weekly >= 0),
    keep_monthly    integer     NOT NULL CHECK (keep_monthly >= 0),
    keep_yearly     integer     NOT NULL CHECK (keep_yearly >= 0),
    max_attempts    integer     NOT NULL CHECK (max_attempts >= 1),
    paused          boolean     NOT NULL,
    -- The due time the schedule waits for, and when it fires (due time plus jitter).
    next_due_at     timestamptz NULL,
    next_fire_at    timestamptz NULL,
    last_due_at     timestamptz NULL,
    version         integer     NOT NULL CHECK (version >= 1),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT schedules_org_id_name_key UNIQUE (org_id, name)
);
CREATE INDEX schedules_next_fire_at ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
SELECT coffer_tenant_table('schedules');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'schedules');

CREATE TABLE jobs (
    org_id            uuid        NOT NULL,
    job_id            uuid        PRIMARY KEY,
    kind              text        NOT NULL CHECK (kind IN ('backup', 'restore')),
    trigger           text        NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    schedule_id       uuid        NULL,
    database_id       uuid        NOT NULL,
    destination_id    uuid        NOT NULL,
    agent_id          uuid        NOT NULL,
    restore_of        uuid        NULL,
    due_at            timestamptz NOT NULL,
    state             text        NOT NULL,
    attempt           integer     NOT NULL CHECK (attempt >= 1),
    max_attempts      integer     NOT NULL CHECK (max_attempts >= 1),
    fencing_token     bigint      NOT NULL CHECK (fencing_token >= 0),
    not_before        timestamptz NOT NULL,
    cancel_requested  boolean     NOT NULL,
    reason            text        NOT NULL,
    artifact_object_key         text   NULL,
    artifact_size_bytes         bigint NULL,
    artifact_sha256             text   NULL,
    artifact_recipient          text   NULL,
    artifact_age_header_sha256  text   NULL,
    version           integer     NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    finished_at       timestamptz NULL
);
-- Exactly one job per (schedule, due time): the second of two schedulers firing the same run
-- fails here even if it got past the schedule's own version check.
CREATE UNIQUE INDEX jobs_schedule_due ON jobs (schedule_id, due_at) WHERE trigger = 'schedule';
CREATE INDEX jobs_claimable ON jobs (agent_id, not_before) WHERE state = 'pending';
CREATE INDEX jobs_by_schedule ON jobs (org_id, schedule_id, created_at);
SELECT coffer_tenant_table('jobs');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'jobs');

-- Leases of held jobs: extended by every heartbeat, so not event-sourced (a heartbeat is not
-- a consequential action) and not rebuilt. A row belongs to one claim (its fencing token); the
-- claim's end deletes it.
CREATE TABLE job_leases (
    org_id            uuid        NOT NULL,
    job_id            uuid        PRIMARY KEY,
    fencing_token     bigint      NOT NULL,
    agent_id          uuid        NOT NULL,
    lease_expires_at  timestamptz NOT NULL,
    bytes_read        bigint      NOT NULL DEFAULT 0,
    bytes_written     bigint      NOT NULL DEFAULT 0,
    bytes_per_second  bigint      NOT NULL DEFAULT 0,
    progress_at       timestamptz NULL
);
CREATE INDEX job_leases_expiry ON job_leases (lease_expires_at);
SELECT coffer_tenant_table('job_leases');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'job_leases');

-- The scheduler's cross-org questions, answered with the owner's rights and returning only
-- identifiers: which schedules are due to fire, which leases have run out, and which pending
-- jobs became claimable in a window. Every change happens in the org's own transaction.
CREATE FUNCTION scheduling_due_schedules(at timestamptz, max_rows integer)
    RETURNS TABLE (org_id uuid, schedule_id uuid, next_due_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT s.org_id, s.schedule_id, s.next_due_at FROM coffer_scheduling.schedules s
         WHERE s.next_fire_at <= at ORDER BY s.next_fire_at LIMIT max_rows
    $$;

CREATE FUNCTION scheduling_expired_leases(at timestamptz, max_rows integer)
    RETURNS TABLE (org_id uuid, job_id uuid, fencing_token bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT l.org_id, l.job_id, l.fencing_token FROM coffer_scheduling.job_leases l
         WHERE l.lease_expires_at <= at ORDER BY l.lease_expires_at LIMIT max_rows
    $$;

CREATE FUNCTION scheduling_ready_jobs(after timestamptz, upto timestamptz, max_rows integer)
    RETURNS TABLE (org_id uuid, agent_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT DISTINCT j.org_id, j.agent_id FROM coffer_scheduling.jobs j
         WHERE j.state = 'pending' AND j.not_before > after AND j.not_before <= upto
         LIMIT max_rows
    $$;

REVOKE ALL ON FUNCTION scheduling_due_schedules(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION scheduling_expired_leases(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION scheduling_ready_jobs(timestamptz, timestamptz, integer) FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION scheduling_due_schedules(timestamptz, integer) TO %I',
                   coffer_role());
    EXECUTE format('GRANT EXECUTE ON FUNCTION scheduling_expired_leases(timestamptz, integer) TO %I',
                   coffer_role());
    EXECUTE format('GRANT EXECUTE ON FUNCTION scheduling_ready_jobs(timestamptz, timestamptz, integer) TO %I',
                   coffer_role());
END $$;

-- Scheduling's Ed25519 job-ticket signing keys (platform org): the private key only wrapped
-- through KMS (purpose signing_key, object job-ticket/<key_id>). The newest signs; every key's
-- public half is published as job_ticket.jwks for the credentials service.
CREATE TABLE ticket_keys (
    org_id               uuid        NOT NULL,
    key_id               uuid        PRIMARY KEY,
    kid                  text        NOT NULL UNIQUE,
    public_key           bytea       NOT NULL CHECK (length(public_key) = 32),
    kms_key_id           text        NOT NULL,
    wrapped_private_key  bytea       NOT NULL,
    created_at           timestamptz NOT NULL
);
SELECT coffer_tenant_table('ticket_keys');
SELECT coffer_grant('SELECT, INSERT', 'ticket_keys');
