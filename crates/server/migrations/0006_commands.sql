-- Remote commands (store/statements/commands.rs): what an admin asked, each target agent's
-- state of it, the locks agents take around commands, and each tenant's signing key.
--
-- A command has one id (the wire `Command.id`) whatever the number of its targets; each
-- target's life is a `command_targets` row keyed by (command, agent). Times are unix seconds.

-- Command ids come from this one-row counter (`UPDATE ... RETURNING`): the two dialects share
-- no auto-increment syntax, and the row's lock orders concurrent creations on PostgreSQL.
CREATE TABLE command_ids (
    id       INTEGER PRIMARY KEY,
    next_id  BIGINT NOT NULL
);
INSERT INTO command_ids (id, next_id) VALUES (1, 1);

CREATE TABLE commands (
    id                  BIGINT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- `exec`, `script` or `builtin` (the wire's `type`).
    kind                TEXT NOT NULL,
    command             TEXT NOT NULL,
    -- JSON.
    parameters          TEXT NOT NULL,
    priority            BIGINT NOT NULL,
    scheduled_for       BIGINT,
    timeout_s           BIGINT,
    maintenance_window  BOOLEAN NOT NULL,
    -- JSON array of lock names.
    locks               TEXT NOT NULL,
    package_manager     BOOLEAN NOT NULL,
    expires_at          BIGINT,
    -- The admin token's id, or NULL (a dashboard session, an operator).
    created_by          TEXT,
    created_at          BIGINT NOT NULL,
    -- How many agents it was sent to.
    target_count        BIGINT NOT NULL
);
CREATE INDEX commands_tenant ON commands (tenant_id, id);

-- One row per (command, target agent). `state`: `pending` (waiting to be leased), `leased`
-- (sent, not acknowledged before `lease_expires_at`), then the agent's states (`received`,
-- `deferred`, `running`) and the terminal ones. `due_at`, `expires_at` and `priority` are
-- the command's, copied so leasing reads this table alone.
CREATE TABLE command_targets (
    command_id        BIGINT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    tenant_id         TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    state             TEXT NOT NULL,
    due_at            BIGINT NOT NULL,
    expires_at        BIGINT,
    priority          BIGINT NOT NULL,
    -- The lease that sent it last (one `commands/pending` answer), and until when it holds.
    lease_id          TEXT,
    lease_expires_at  BIGINT,
    -- How many times it was leased.
    attempts          BIGINT NOT NULL DEFAULT 0,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    reason            TEXT,
    exit_code         INTEGER,
    stdout            TEXT,
    stderr            TEXT,
    stdout_truncated  BOOLEAN NOT NULL DEFAULT FALSE,
    stderr_truncated  BOOLEAN NOT NULL DEFAULT FALSE,
    started_at        BIGINT,
    finished_at       BIGINT,
    delivered_at      BIGINT,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (command_id, agent_id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
-- Leasing and the heartbeat's count: an agent's rows by state and due time.
CREATE INDEX command_targets_agent ON command_targets (tenant_id, agent_id, state, due_at);
-- The jobs: leases run out, commands expire.
CREATE INDEX command_targets_lease ON command_targets (state, lease_expires_at);
CREATE INDEX command_targets_expiry ON command_targets (state, expires_at);

-- Named locks. `scope_key` is `tenant` for a fleet-wide lock and `agent:<id>` for one
-- machine's, so the same name in either scope are different locks. An expired row is free.
CREATE TABLE command_locks (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    scope_key        TEXT NOT NULL,
    resource         TEXT NOT NULL,
    holder_agent_id  TEXT NOT NULL,
    command_id       BIGINT,
    expires_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (tenant_id, scope_key, resource)
);
CREATE INDEX command_locks_expiry ON command_locks (expires_at);

-- Each tenant's ed25519 key pair for signing commands: the private key as a PKCS#8 document
-- (base64), never returned by any API; the public key (base64, 32 bytes) agents pin.
CREATE TABLE tenant_signing_keys (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    private_key  TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
