-- Muster's schema, one file for SQLite and PostgreSQL alike (both run it as written, and both
-- backends run the same statements over it): ids are TEXT UUIDv7, times are BIGINT unix
-- seconds, JSON is TEXT, hashes are lowercase hex TEXT. A later migration that needs
-- dialect-specific SQL splits this directory per backend. Every row below `tenants` carries its tenant, and the composite
-- foreign keys make a row of one tenant unable to point at another tenant's agent.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE agents (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- What registration is idempotent on: `key:<public key>`, else `machine:<machine id>`,
    -- else `host:<hostname>`.
    identity       TEXT NOT NULL,
    public_key     TEXT,
    machine_id     TEXT,
    hostname       TEXT NOT NULL,
    platform       TEXT,
    os_name        TEXT,
    os_version     TEXT,
    arch           TEXT,
    agent_version  TEXT,
    created_at     BIGINT NOT NULL,
    last_seen      BIGINT,
    -- The last heartbeat's `AgentHealth`, JSON.
    health         TEXT,
    UNIQUE (tenant_id, identity),
    UNIQUE (tenant_id, id)
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('enrol', 'admin', 'agent')),
    -- SHA-256 of the whole token text, hex. The token itself is never stored.
    hash        TEXT NOT NULL UNIQUE,
    -- Set for agent tokens only.
    agent_id    TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    CHECK ((kind = 'agent') = (agent_id IS NOT NULL)),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX tokens_agent ON tokens (tenant_id, agent_id);

-- One row per ingested report: what makes ingestion idempotent.
CREATE TABLE reports (
    report_id    TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX reports_agent ON reports (tenant_id, agent_id, received_at);

-- The latest inventory of each agent: a `DaemonReport` (the seed's flat report is stored in
-- that shape too), JSON, and its `muster_proto::inventory::inventory_hash`.
CREATE TABLE inventory (
    agent_id    TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    report      TEXT NOT NULL,
    report_id   TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);

-- Telemetry samples. The three seed figures are columns (thresholds, charts); the whole
-- `SystemMetrics` (or the seed's `system_metrics` object) is kept as JSON beside them.
CREATE TABLE metrics (
    tenant_id     TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    report_id     TEXT NOT NULL REFERENCES reports (report_id) ON DELETE CASCADE,
    sampled_at    BIGINT NOT NULL,
    cpu_usage     DOUBLE PRECISION,
    memory_usage  DOUBLE PRECISION,
    disk_usage    DOUBLE PRECISION,
    data          TEXT NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX metrics_agent_time ON metrics (tenant_id, agent_id, sampled_at);
