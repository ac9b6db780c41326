-- A projection for the event store's own tests.
CREATE TABLE counters (
    org_id      uuid        NOT NULL,
    counter_id  uuid        PRIMARY KEY,
    total       bigint      NOT NULL,
    updates     bigint      NOT NULL,
    last_at     timestamptz NOT NULL
);
SELECT coffer_tenant_table('counters');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'counters');

-- Effects of the test consumer.
CREATE TABLE seen (
    org_id      uuid        NOT NULL,
    event_id    uuid        PRIMARY KEY,
    aggregate_id uuid       NOT NULL,
    version     bigint      NOT NULL,
    stream_seq  bigint      NOT NULL,
    trace       text
);
SELECT coffer_tenant_table('seen');
SELECT coffer_grant('SELECT, INSERT', 'seen');
