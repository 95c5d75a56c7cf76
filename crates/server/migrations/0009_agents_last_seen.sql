-- No query finds agents by `last_seen` (whether an agent is online depends on its own
-- heartbeat interval, so the online conditions and counts read every row of the tenant), yet
-- every heartbeat moved the agent's entry in this index: a second page written per heartbeat
-- on SQLite, and no HOT update on PostgreSQL.
DROP INDEX agents_last_seen;
