-- Scheduling: its own view of enrollment's agents, the ones a database may name as the agent
-- that serves it.
--
-- Fed only by the `scheduling-agents` consumer from enrollment's AgentEnrolled and AgentRevoked
-- events. It is not a projection of scheduling's own events, so rebuild-projections does not
-- rebuild it (the events it comes from live in enrollment's store). A revoked agent keeps its
-- row with `revoked_at` set; a revocation seen before the enrollment inserts the revoked row.

CREATE TABLE agents (
    org_id       uuid        NOT NULL,
    agent_id     uuid        PRIMARY KEY,
    enrolled_at  timestamptz NOT NULL,
    revoked_at   timestamptz NULL
);
SELECT coffer_tenant_table('agents');
SELECT coffer_grant('SELECT, INSERT, UPDATE', 'agents');
