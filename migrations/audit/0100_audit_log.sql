-- Audit: each org's append-only, tamper-evident log of every event.
--
-- Nothing here is ever updated or deleted. The service role may only SELECT and INSERT, and a
-- trigger on every table refuses UPDATE, DELETE and TRUNCATE whoever asks (the owner included),
-- so removing history takes a superuser disabling triggers on purpose, and that is what the
-- hash chain, the Merkle tree and the signed checkpoints then expose.

-- One row per org whose log has begun.
CREATE TABLE audit_logs (
    org_id      uuid        PRIMARY KEY,
    -- h_0 = SHA-256("coffer-audit-v1" || org_id).
    genesis     bytea       NOT NULL CHECK (length(genesis) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_entries (
    org_id          uuid        NOT NULL,
    -- 1-based; the Merkle leaf index is seq - 1.
    seq             bigint      NOT NULL CHECK (seq >= 1),
    event_id        uuid        NOT NULL,
    -- The columns below are copied out of the event for queries; `leaf` is what is proven.
    occurred_at     timestamptz NOT NULL,
    actor_kind      text        NOT NULL,
    actor_id        text        NOT NULL,
    action          text        NOT NULL,
    service         text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    appended_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Deterministic protobuf of AuditEntry{org_id, seq, event}.
    leaf            bytea       NOT NULL,
    leaf_hash       bytea       NOT NULL CHECK (length(leaf_hash) = 32),
    chain_hash      bytea       NOT NULL CHECK (length(chain_hash) = 32),
    PRIMARY KEY (org_id, seq),
    CONSTRAINT audit_entries_event_once UNIQUE (org_id, event_id)
);
CREATE INDEX audit_entries_occurred ON audit_entries (org_id, occurred_at, seq);
CREATE INDEX audit_entries_actor ON audit_entries (org_id, actor_kind, actor_id, seq);
CREATE INDEX audit_entries_action ON audit_entries (org_id, action, seq);
CREATE INDEX audit_entries_aggregate ON audit_entries (org_id, aggregate_id, seq);

-- Every perfect subtree of the org's RFC 9162 tree, leaves (level 0) included: node
-- (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level). A node never changes once
-- its subtree is complete, so roots and proofs for any size read O(log n) of these rows.
CREATE TABLE audit_nodes (
    org_id  uuid      NOT NULL,
    level   smallint  NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx     bigint    NOT NULL CHECK (idx >= 0),
    hash    bytea     NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (org_id, level, idx)
);

-- The org's checkpoint signing key: Ed25519, the private half only wrapped through KMS
-- (purpose signing_key, object "audit-checkpoint/<org_id>").
CREATE TABLE audit_signing_keys (
    org_id               uuid        PRIMARY KEY,
    -- The note key name, which is also the checkpoint origin: "<deployment>/audit/<org_id>".
    key_name             text        NOT NULL,
    public_key           bytea       NOT NULL CHECK (length(public_key) = 32),
    kms_key_id           text        NOT NULL,
    wrapped_private_key  bytea       NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);

-- Every checkpoint ever issued.
CREATE TABLE audit_checkpoints (
    org_id       uuid        NOT NULL,
    size         bigint      NOT NULL CHECK (size >= 1),
    root_hash    bytea       NOT NULL CHECK (length(root_hash) = 32),
    -- The C2SP tlog-checkpoint as a signed note.
    signed_note  text        NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, size)
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on %.% is refused',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['audit_logs', 'audit_entries', 'audit_nodes',
                               'audit_signing_keys', 'audit_checkpoints']
    LOOP
        PERFORM coffer_tenant_table(tbl::regclass);
        PERFORM coffer_grant('SELECT, INSERT', tbl::regclass);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I
                        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()',
                       tbl || '_append_only', tbl);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()',
                       tbl || '_no_truncate', tbl);
    END LOOP;
END
$$;

-- The checkpointer works across tenants: it must find every org whose log has entries no
-- checkpoint covers yet, and either `min_entries` of them or a last checkpoint (or log start)
-- older than `max_age`. This answers only that, with the owner's rights, and returns
-- identifiers and sizes. Signing happens in the org's own transaction.
CREATE FUNCTION audit_checkpoints_due(min_entries bigint, max_age interval)
    RETURNS TABLE (org_id uuid, size bigint, signed_size bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT l.org_id, e.seq, coalesce(c.size, 0)
          FROM coffer_audit.audit_logs l
          CROSS JOIN LATERAL (
                SELECT x.seq FROM coffer_audit.audit_entries x
                 WHERE x.org_id = l.org_id ORDER BY x.seq DESC LIMIT 1) e
          LEFT JOIN LATERAL (
                SELECT y.size, y.issued_at FROM coffer_audit.audit_checkpoints y
                 WHERE y.org_id = l.org_id ORDER BY y.size DESC LIMIT 1) c ON true
         WHERE e.seq > coalesce(c.size, 0)
           AND (e.seq - coalesce(c.size, 0) >= min_entries
                OR coalesce(c.issued_at, l.created_at) <= now() - max_age)
    $$;
REVOKE ALL ON FUNCTION audit_checkpoints_due(bigint, interval) FROM PUBLIC;
DO $$ BEGIN
    EXECUTE format('GRANT EXECUTE ON FUNCTION audit_checkpoints_due(bigint, interval) TO %I',
                   coffer_role());
END $$;
