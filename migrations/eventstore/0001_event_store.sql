-- The event store every service shares (DESIGN §3): the stream, the transactional outbox and
-- the consumer idempotency ledger. Applied into each service's own schema.

CREATE TABLE events (
    -- Commit-independent replay order for rebuilds; never used to find "new" events.
    position        bigserial   PRIMARY KEY,
    org_id          uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    occurred_at     timestamptz NOT NULL,
    actor_kind      text        NOT NULL,
    actor_id        text        NOT NULL,
    trace_context   jsonb       NOT NULL DEFAULT '{}',
    payload         bytea       NOT NULL,
    -- Optimistic concurrency: two writers of one version cannot both commit.
    CONSTRAINT events_aggregate_version UNIQUE (aggregate_id, version)
);
SELECT coffer_tenant_table('events');
SELECT coffer_grant('SELECT, INSERT', 'events');
SELECT coffer_grant('USAGE', 'events_position_seq');

-- Written in the append transaction; published in id order by the relay and deleted on ack.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    org_id          uuid        NOT NULL,
    event_id        uuid        NOT NULL UNIQUE,
    aggregate_id    uuid        NOT NULL,
    event_type      text        NOT NULL,
    -- The encoded coffer.events.v1.EventEnvelope.
    envelope        bytea       NOT NULL,
    trace_context   jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
SELECT coffer_tenant_table('outbox');
SELECT coffer_grant('SELECT, INSERT', 'outbox');
SELECT coffer_grant('USAGE', 'outbox_id_seq');
-- The relay publishes every tenant's rows: its own role gets a policy that sees them all,
-- and may only read and delete (the column UPDATE grant exists because SELECT ... FOR UPDATE
-- requires one; the relay never updates).
SELECT coffer_grant('SELECT, DELETE, UPDATE (created_at)', 'outbox', '_relay');
DO $do$ BEGIN
  EXECUTE format('CREATE POLICY relay_all ON outbox TO %I USING (true)', coffer_role('_relay'));
END $do$;

-- A consumer's effect and its row here commit together: redelivery finds the row and skips.
CREATE TABLE processed_events (
    consumer        text        NOT NULL,
    event_id        uuid        NOT NULL,
    org_id          uuid        NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
SELECT coffer_tenant_table('processed_events');
SELECT coffer_grant('SELECT, INSERT', 'processed_events');
