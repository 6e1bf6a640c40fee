-- The web console (issue 21): indexes for its searches and overview, and
-- one-time login links. Keep in step with ../sqlite/0010_console.sql.
-- Numbered 0010 to leave room for migrations written beside it.

-- SPIFFE IDs compare byte-wise, as on SQLite, so a prefix search is one
-- index range whatever the database's default collation.
ALTER TABLE certificates ALTER COLUMN spiffe_id TYPE TEXT COLLATE "C";

-- Search by SPIFFE ID prefix, newest first.
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id, issued_at DESC);
-- A token's certificates, newest first.
CREATE INDEX certificates_token_issued ON certificates (token_id, issued_at DESC);
-- Active certificates (unexpired) by origin and what expires next; covering,
-- so the overview never reads a certificate's DER.
CREATE INDEX certificates_active ON certificates (not_after, origin, revoked_at);
-- Recent revocations.
CREATE INDEX certificates_revoked_at ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;

-- `ward ca console-login`: only the SHA-256 of a link's secret is stored; a
-- link is used once (used_at) and only before expires_at.
CREATE TABLE console_logins (
    hash       BYTEA       NOT NULL PRIMARY KEY CHECK (length(hash) = 32),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
