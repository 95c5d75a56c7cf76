-- The admin API: named tokens with their last use, and on each agent what the fleet list shows
-- without touching other tables: the heartbeat interval it promised (online means heard from
-- within three of them) and its latest telemetry figures, kept current at ingestion.

ALTER TABLE tokens ADD COLUMN name TEXT;
-- Unix seconds, refreshed at most once a minute, and only for admin and enrolment tokens (an
-- agent's last use is its `last_seen`).
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX tokens_tenant_created ON tokens (tenant_id, created_at);

-- NULL until the agent says (seed agents never do): the server's default applies.
ALTER TABLE agents ADD COLUMN heartbeat_interval_s BIGINT;
ALTER TABLE agents ADD COLUMN cpu_usage DOUBLE PRECISION;
ALTER TABLE agents ADD COLUMN memory_usage DOUBLE PRECISION;
ALTER TABLE agents ADD COLUMN disk_usage DOUBLE PRECISION;
-- Unix seconds of the sample the three figures come from.
ALTER TABLE agents ADD COLUMN metrics_at BIGINT;
-- The fleet list's order, and its pages.
CREATE INDEX agents_tenant_hostname ON agents (tenant_id, hostname, id);
