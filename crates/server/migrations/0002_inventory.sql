-- The fleet-wide software index and the inventory change history (store/statements/inventory.rs).
-- Written into by the ingest transaction when an agent's inventory hash changes; an unchanged
-- inventory touches none of these tables.
--
-- Ids here are INTEGER: a rowid alias on SQLite (small varints keep the 40M-row link table
-- compact) and INT4 on PostgreSQL (room for 2^31 distinct packages and hosts; selects cast
-- them to BIGINT). The store allocates them (MAX(id) + 1 within the transaction, retried when
-- a concurrent PostgreSQL transaction took the same one), since the two dialects share no
-- auto-increment syntax.

-- Each distinct (name, source, version, arch) a tenant's agents have reported. `name` as the
-- source spells it; `name_lower` is what searches match (lowercased at write time, so the
-- dialects' LIKE/ILIKE differences never matter). `arch` is '' when the source has none.
-- Rows stay when no agent holds them any more (a search finds no host for them).
CREATE TABLE packages (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    name_lower  TEXT NOT NULL,
    source      TEXT NOT NULL,
    version     TEXT NOT NULL,
    arch        TEXT NOT NULL,
    UNIQUE (tenant_id, name, source, version, arch)
);
CREATE INDEX packages_search ON packages (tenant_id, name_lower, source);

-- One row per agent with an indexed inventory: its small integer key and the hostname
-- search results are ordered by (kept equal to agents.hostname at registration and at every
-- inventory change).
CREATE TABLE software_hosts (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    agent_id    TEXT NOT NULL UNIQUE,
    hostname    TEXT NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX software_hosts_tenant ON software_hosts (tenant_id, hostname, agent_id);

-- Which host has which package (its latest inventory). Both keys belong to one tenant: the
-- store links a host only to packages of the host's tenant.
CREATE TABLE software_links (
    host_id     INTEGER NOT NULL REFERENCES software_hosts (id) ON DELETE CASCADE,
    package_id  INTEGER NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    PRIMARY KEY (host_id, package_id)
);
-- The search's index: the hosts of a package, without touching the table.
CREATE INDEX software_links_package ON software_links (package_id, host_id);

-- What changed between an agent's consecutive inventories (`inventory::diff`), newest first.
-- An agent's first inventory is its baseline and records no rows.
CREATE TABLE inventory_changes (
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    -- Unix seconds the inventory showing the change was received.
    changed_at   BIGINT NOT NULL,
    -- `software` or `hardware`.
    category     TEXT NOT NULL,
    -- `added`, `removed`, `upgraded`, `downgraded`, `changed`.
    change_kind  TEXT NOT NULL,
    -- Package name, or `cpu`, `memory`, `disk:sda`, `network:eth0`, `system`, `bios`.
    item         TEXT NOT NULL,
    old_value    TEXT,
    new_value    TEXT,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX inventory_changes_agent ON inventory_changes (tenant_id, agent_id, changed_at);
