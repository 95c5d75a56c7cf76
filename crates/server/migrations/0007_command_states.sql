-- Whether a tenant has any command open (pending, leased, or asked to stop) is asked about
-- once a second per tenant by the heartbeat's pending count (commands.rs, CommandHub): a seek
-- on (tenant, state), not a walk over every target the tenant ever had.
CREATE INDEX command_targets_tenant_state ON command_targets (tenant_id, state);
