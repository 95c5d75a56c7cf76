-- Enrolment tokens an admin can limit (issue 6: the enrolment bundle's single-use or
-- time-limited token; `expires_at` exists since 0001). `max_uses` NULL is unlimited; `uses`
-- counts the agents that registered with the token, each once: a re-registration of an agent
-- already counted (same tenant identity, same token) is not a new use. The count is moved by a
-- conditional `UPDATE tokens SET uses = uses + 1 WHERE ... uses < max_uses` inside the
-- registration's transaction, so two registrations racing for the last use cannot both win
-- (SQLite: one writer; PostgreSQL: the row lock, the condition re-checked after the wait).

ALTER TABLE tokens ADD COLUMN max_uses BIGINT CHECK (max_uses IS NULL OR max_uses > 0);
ALTER TABLE tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;

-- Which agent identities (`agents.identity`) each enrolment token has registered: what makes a
-- re-registration free. Rows go with their token.
CREATE TABLE enrolment_uses (
    token_id   TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    identity   TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    used_at    BIGINT NOT NULL,
    PRIMARY KEY (token_id, identity)
);
