-- Enrollment read models for agents: certificate authorities, enrollment tokens, agents and
-- every certificate issued to them (the CRL is built from the revoked ones).

CREATE TABLE certificate_authorities (
    org_id               uuid        NOT NULL,
    ca_id                uuid        PRIMARY KEY,
    kind                 text        NOT NULL CHECK (kind IN ('root', 'org')),
    certificate_der      bytea       NOT NULL,
    -- The CA key exists only wrapped by the KMS master key.
    wrapped_private_key  bytea       NOT NULL,
    kms_key_id           text        NOT NULL,
    created_at           timestamptz NOT NULL,
    -- One CA per org (the root is the platform org's).
    UNIQUE (org_id)
);
SELECT coffer_tenant_table('certificate_authorities');
SELECT coffer_grant('SELECT, INSERT', 'certificate_authorities');

CREATE TABLE enrollment_tokens (
    org_id            uuid        NOT NULL,
    token_id          uuid        PRIMARY KEY,
    name              text        NOT NULL,
    display_prefix    text        NOT NULL,
    -- Lookup is by this hash; the secret itself is never stored.
    secret_sha256     bytea       NOT NULL,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    used_by_agent_id  uuid,
    revoked_at        timestamptz,
    CONSTRAINT enrollment_tokens_secret_sha256_key UNIQUE (secret_sha256)
);
SELECT coffer_tenant_table('enrollment_tokens');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'enrollment_tokens');

CREATE TABLE agents (
    org_id          uuid        NOT NULL,
    agent_id        uuid        PRIMARY KEY,
    current_serial  text        NOT NULL,
    not_after       timestamptz NOT NULL,
    enrolled_at     timestamptz NOT NULL,
    revoked_at      timestamptz
);
SELECT coffer_tenant_table('agents');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'agents');

CREATE TABLE agent_certificates (
    org_id       uuid        NOT NULL,
    serial       text        PRIMARY KEY,
    agent_id     uuid        NOT NULL,
    not_before   timestamptz NOT NULL,
    not_after    timestamptz NOT NULL,
    issued_at    timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX agent_certificates_revoked ON agent_certificates (org_id) WHERE revoked_at IS NOT NULL;
SELECT coffer_tenant_table('agent_certificates');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'agent_certificates');

-- Enroll finds a token by its hash before it knows the org (see find_api_key).
CREATE FUNCTION find_enrollment_token(hash bytea, OUT org_id uuid, OUT token_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT t.org_id, t.token_id FROM coffer_enrollment.enrollment_tokens t WHERE t.secret_sha256 = hash $$;
REVOKE ALL ON FUNCTION find_enrollment_token(bytea) FROM PUBLIC;
DO $$ BEGIN EXECUTE format('GRANT EXECUTE ON FUNCTION find_enrollment_token(bytea) TO %I', coffer_role()); END $$;

-- Every CA certificate (public material), for publishing to the bucket every service
-- follows; private keys are not returned.
CREATE FUNCTION list_ca_certificates() RETURNS TABLE (org_id uuid, certificate_der bytea)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT c.org_id, c.certificate_der FROM coffer_enrollment.certificate_authorities c $$;
REVOKE ALL ON FUNCTION list_ca_certificates() FROM PUBLIC;
DO $$ BEGIN EXECUTE format('GRANT EXECUTE ON FUNCTION list_ca_certificates() TO %I', coffer_role()); END $$;
