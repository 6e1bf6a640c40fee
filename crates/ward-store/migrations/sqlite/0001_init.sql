-- Ward CA storage, SQLite dialect. Times are INTEGER microseconds since the
-- Unix epoch (UTC); string lists are JSON text. Keep in step with
-- ../postgres/0001_init.sql: the store's SQL is shared between them.

CREATE TABLE tokens (
    id                 TEXT    NOT NULL PRIMARY KEY,
    hash               BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
    spiffe_id          TEXT    NOT NULL,
    dns_names          TEXT    NOT NULL DEFAULT '[]',
    profile            TEXT    NOT NULL CHECK (profile IN ('server', 'client', 'peer')),
    cert_ttl_secs      INTEGER NOT NULL CHECK (cert_ttl_secs > 0),
    expires_at         INTEGER NOT NULL,
    max_uses           INTEGER NOT NULL CHECK (max_uses >= 0),
    uses               INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
    allowed_cidrs      TEXT    NOT NULL DEFAULT '[]',
    created_at         INTEGER NOT NULL,
    revoked_at         INTEGER,
    revoked_with_certs INTEGER NOT NULL DEFAULT 0,
    -- Defence in depth: even a faulty UPDATE cannot overspend a token.
    CHECK (max_uses = 0 OR uses <= max_uses)
) STRICT;

CREATE TABLE certificates (
    serial            TEXT    NOT NULL PRIMARY KEY,
    spiffe_id         TEXT    NOT NULL,
    token_id          TEXT    REFERENCES tokens (id),
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    der               BLOB    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    issued_at         INTEGER NOT NULL,
    -- No foreign key: old certificates may be pruned one day.
    renewed_from      TEXT,
    revoked_at        INTEGER,
    revocation_reason INTEGER CHECK (revocation_reason BETWEEN 0 AND 10 AND revocation_reason <> 7),
    CHECK (revocation_reason IS NULL OR revoked_at IS NOT NULL)
) STRICT;

CREATE INDEX certificates_token_id ON certificates (token_id);
CREATE INDEX certificates_issued_at ON certificates (issued_at);
CREATE INDEX certificates_revoked ON certificates (not_after) WHERE revoked_at IS NOT NULL;

-- One row: the last CRL number handed out.
CREATE TABLE crl_counter (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL CHECK (value >= 0)
) STRICT;

INSERT INTO crl_counter (id, value) VALUES (1, 0);
