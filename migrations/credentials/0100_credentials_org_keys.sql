-- Credentials: the vault's read models and its secret material.
--
-- `credentials` and `org_keys` are projections of the event stream. `credential_secrets` and
-- `org_key_secrets` are not: they hold ciphertexts and KMS-wrapped keys, which no event carries
-- (events travel to JetStream and the audit log). They are written in the same transaction as
-- the event that announces them, are never rebuilt by replay, and are the only rows master-key
-- rotation rewrites (the wrapped key and its key id, never the ciphertext).

CREATE TABLE credentials (
    org_id         uuid        NOT NULL,
    credential_id  uuid        PRIMARY KEY,
    name           text        NOT NULL,
    purpose        text        NOT NULL,
    version        integer     NOT NULL,
    value_bytes    integer     NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CONSTRAINT credentials_org_id_name_key UNIQUE (org_id, name)
);
SELECT coffer_tenant_table('credentials');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'credentials');

CREATE TABLE credential_secrets (
    org_id         uuid        NOT NULL,
    credential_id  uuid        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    -- The master key `wrapped_dek` is wrapped under; rotation moves it.
    kms_key_id     text        NOT NULL,
    wrapped_dek    bytea       NOT NULL,
    nonce          bytea       NOT NULL CHECK (length(nonce) = 24),
    -- XChaCha20-Poly1305 with AAD (org_id, credential_id, version). Never updated.
    ciphertext     bytea       NOT NULL,
    PRIMARY KEY (credential_id, version)
);
CREATE INDEX credential_secrets_kms_key_id ON credential_secrets (kms_key_id);
SELECT coffer_tenant_table('credential_secrets');
-- Rotation may change only the wrapping, never the ciphertext.
SELECT coffer_grant('SELECT, INSERT, DELETE, UPDATE (kms_key_id, wrapped_dek)', 'credential_secrets');

CREATE TABLE org_keys (
    org_id            uuid        PRIMARY KEY,
    recipient         text        NOT NULL,
    created_at        timestamptz NOT NULL,
    recovery_exports  integer     NOT NULL DEFAULT 0,
    last_exported_at  timestamptz
);
SELECT coffer_tenant_table('org_keys');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'org_keys');

CREATE TABLE org_key_secrets (
    org_id            uuid        PRIMARY KEY,
    kms_key_id        text        NOT NULL,
    -- The AGE-SECRET-KEY-1… string, wrapped by KMS (purpose org_age_key).
    wrapped_identity  bytea       NOT NULL
);
CREATE INDEX org_key_secrets_kms_key_id ON org_key_secrets (kms_key_id);
SELECT coffer_tenant_table('org_key_secrets');
SELECT coffer_grant('SELECT, INSERT, UPDATE (kms_key_id, wrapped_identity)', 'org_key_secrets');
