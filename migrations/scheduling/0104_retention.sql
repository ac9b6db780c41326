-- Scheduling: retention. A succeeded backup's job records when retention expired it and when
-- its object was deleted from the destination (or why the last attempt failed).

ALTER TABLE jobs
    ADD COLUMN expired_at      timestamptz NULL,
    ADD COLUMN deleted_at      timestamptz NULL,
    ADD COLUMN deletion_error  text        NULL;
CREATE INDEX jobs_retained ON jobs (org_id, schedule_id, due_at)
    WHERE state = 'succeeded' AND kind = 'backup' AND deleted_at IS NULL;

-- Schedules with a retention policy, for the daily sweep (owner's rights, identifiers only).
CREATE FUNCTION scheduling_retained_schedules()
    RETURNS TABLE (org_id uuid, schedule_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT s.org_id, s.schedule_id FROM coffer_scheduling.schedules s
         WHERE s.keep_last + s.keep_daily + s.keep_weekly + s.keep_monthly + s.keep_yearly > 0
    $$;
REVOKE ALL ON FUNCTION scheduling_retained_schedules() FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION scheduling_retained_schedules() TO %I',
                   coffer_role());
END $$;
