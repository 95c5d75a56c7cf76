-- Dashboard login sessions. The session id lives only in the browser's cookie; the database
-- keeps its SHA-256 (hex), so a copy of this table logs nobody in. A session belongs to the
-- admin token it was opened with: it ends when that token is revoked or expires (checked on
-- every look-up) and is deleted with it. Any replica can check any session.
CREATE TABLE dashboard_sessions (
    hash        TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_id    TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_token ON dashboard_sessions (token_id);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
