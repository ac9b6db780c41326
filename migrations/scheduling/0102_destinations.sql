-- Scheduling: storage destinations, a projection of the Destination aggregate's events.
--
-- One row per live destination; a removed destination's row is deleted, so its name is free
-- again. The access key is not here: `access_key_vault_ref` names a `storage` credential of the
-- same org in the credentials service. S3 columns are set for kind 's3', `path` for 'local'.

CREATE TABLE destinations (
    org_id                uuid        NOT NULL,
    destination_id        uuid        PRIMARY KEY,
    name                  text        NOT NULL,
    kind                  text        NOT NULL CHECK (kind IN ('s3', 'local')),
    endpoint              text        NULL,
    region                text        NULL,
    bucket                text        NULL,
    prefix                text        NULL,
    path_style            boolean     NULL,
    access_key_vault_ref  text        NULL,
    path                  text        NULL,
    version               integer     NOT NULL CHECK (version >= 1),
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    CONSTRAINT destinations_org_id_name_key UNIQUE (org_id, name),
    CONSTRAINT destinations_kind_columns CHECK (
        (kind = 's3' AND endpoint IS NOT NULL AND region IS NOT NULL AND bucket IS NOT NULL
            AND prefix IS NOT NULL AND path_style IS NOT NULL
            AND access_key_vault_ref IS NOT NULL AND path IS NULL)
        OR (kind = 'local' AND path IS NOT NULL AND endpoint IS NULL AND region IS NULL
            AND bucket IS NULL AND prefix IS NULL AND path_style IS NULL
            AND access_key_vault_ref IS NULL)
    )
);
SELECT coffer_tenant_table('destinations');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'destinations');
