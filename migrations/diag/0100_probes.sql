-- Diagnostics: probes that prove the event pipeline end to end.
CREATE TABLE probes (
    org_id                   uuid        NOT NULL,
    probe_id                 uuid        PRIMARY KEY,
    note                     text        NOT NULL,
    probes_sent              bigint      NOT NULL,
    last_sent_event_id       uuid        NOT NULL,
    last_sent_at             timestamptz NOT NULL,
    observations             bigint      NOT NULL DEFAULT 0,
    last_observed_event_id   uuid,
    last_observed_at         timestamptz,
    last_stream_sequence     bigint,
    last_consumer_trace_id   text
);
SELECT coffer_tenant_table('probes');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'probes');
