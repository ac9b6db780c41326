-- The benchmark service's own tables, next to the event store's (events, outbox,
-- processed_events), which come from coffer_eventstore::MIGRATOR.

-- Read model of the Meter aggregate, updated in every append transaction.
CREATE TABLE meter_totals (
    org_id      uuid        NOT NULL,
    meter_id    uuid        PRIMARY KEY,
    readings    bigint      NOT NULL,
    bytes       bigint      NOT NULL,
    last_at     timestamptz NOT NULL
);
SELECT coffer_tenant_table('meter_totals');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'meter_totals');

-- The append benchmark's baseline: the events table's columns and unique keys, without
-- row-level security, the version-guard query, projection, outbox or NOTIFY.
CREATE TABLE plain_rows (
    position        bigserial   PRIMARY KEY,
    org_id          uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    version         bigint      NOT NULL,
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    occurred_at     timestamptz NOT NULL,
    actor_kind      text        NOT NULL,
    actor_id        text        NOT NULL,
    trace_context   jsonb       NOT NULL DEFAULT '{}',
    payload         bytea       NOT NULL,
    UNIQUE (aggregate_id, version)
);
SELECT coffer_grant('INSERT', 'plain_rows');
SELECT coffer_grant('USAGE', 'plain_rows_position_seq');
