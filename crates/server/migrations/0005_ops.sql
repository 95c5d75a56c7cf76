-- The retention job deletes by time across all tenants: the oldest rows must be found without
-- scanning the tables.
CREATE INDEX metrics_time ON metrics (sampled_at);
CREATE INDEX reports_time ON reports (received_at);
CREATE INDEX agents_last_seen ON agents (last_seen);
