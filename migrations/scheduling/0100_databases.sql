-- Scheduling: the database registry, a projection of the Database aggregate's events.
--
-- One row per live database (backup target); a removed database's row is deleted, so its name
-- is free again. The password is not here: `password_vault_ref` names a credential of the
-- same org in the credentials service.

CREATE TABLE databases (
    org_id              uuid        NOT NULL,
    database_id         uuid        PRIMARY KEY,
    name                text        NOT NULL,
    engine              text        NOT NULL,
    host                text        NOT NULL,
    port                integer     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    database            text        NOT NULL,
    db_user             text        NOT NULL,
    password_vault_ref  text        NOT NULL,
    agent_id            uuid        NOT NULL,
    version             integer     NOT NULL CHECK (version >= 1),
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    CONSTRAINT databases_org_id_name_key UNIQUE (org_id, name)
);
CREATE INDEX databases_agent_id ON databases (org_id, agent_id);
SELECT coffer_tenant_table('databases');
SELECT coffer_grant('SELECT, INSERT, UPDATE, DELETE', 'databases');
