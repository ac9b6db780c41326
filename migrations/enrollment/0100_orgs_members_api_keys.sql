-- Enrollment read models: orgs, their members, API keys and access-token signing keys.
-- Every table is a projection of the event stream except api_key_usage (see below).

CREATE TABLE orgs (
    org_id      uuid        PRIMARY KEY,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL
);
SELECT coffer_tenant_table('orgs');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'orgs');

CREATE TABLE members (
    org_id      uuid        NOT NULL,
    user_id     uuid        PRIMARY KEY,
    email       text        NOT NULL,
    role        text        NOT NULL,
    suspended   boolean     NOT NULL DEFAULT false,
    joined_at   timestamptz NOT NULL,
    UNIQUE (org_id, email)
);
SELECT coffer_tenant_table('members');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'members');

CREATE TABLE api_keys (
    org_id          uuid        NOT NULL,
    key_id          uuid        PRIMARY KEY,
    name            text        NOT NULL,
    role            text        NOT NULL,
    scopes          text[]      NOT NULL,
    display_prefix  text        NOT NULL,
    -- Lookup is by this hash; the secret itself is never stored.
    secret_sha256   bytea       NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    CONSTRAINT api_keys_secret_sha256_key UNIQUE (secret_sha256)
);
SELECT coffer_tenant_table('api_keys');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'api_keys');

-- When each key was last exchanged for a token. Operational state, not an event: recording
-- every use as an event would flood the stream and the audit log. Not rebuilt by replay.
CREATE TABLE api_key_usage (
    org_id        uuid        NOT NULL,
    key_id        uuid        PRIMARY KEY,
    last_used_at  timestamptz NOT NULL
);
SELECT coffer_tenant_table('api_key_usage');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'api_key_usage');

-- Keys that sign access tokens. The private key is stored only wrapped by the KMS master key.
CREATE TABLE signing_keys (
    org_id               uuid        NOT NULL,
    signing_key_id       uuid        PRIMARY KEY,
    kid                  text        NOT NULL UNIQUE,
    public_key           bytea       NOT NULL,
    wrapped_private_key  bytea       NOT NULL,
    kms_key_id           text        NOT NULL,
    created_at           timestamptz NOT NULL,
    retired_at           timestamptz
);
SELECT coffer_tenant_table('signing_keys');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'signing_keys');

-- Exchange finds a key by its hash before it knows the org. This function answers that one
-- question across tenants (which org and key hold this hash) and nothing else; it runs with
-- the owner's rights, so the service role itself never bypasses row-level security.
CREATE FUNCTION find_api_key(hash bytea, OUT org_id uuid, OUT key_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT k.org_id, k.key_id FROM coffer_enrollment.api_keys k WHERE k.secret_sha256 = hash $$;
REVOKE ALL ON FUNCTION find_api_key(bytea) FROM PUBLIC;
DO $$ BEGIN EXECUTE format('GRANT EXECUTE ON FUNCTION find_api_key(bytea) TO %I', coffer_role()); END $$;
