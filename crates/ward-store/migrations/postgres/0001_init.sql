-- Ward CA storage, PostgreSQL dialect. Times are timestamptz (microseconds);
-- string lists are JSON text, as on SQLite, so both backends decode the same
-- way. Keep in step with ../sqlite/0001_init.sql: the store's SQL is shared.
-- Tables are created unqualified, in the first schema of search_path.

CREATE TABLE tokens (
    id                 TEXT        NOT NULL PRIMARY KEY,
    hash               BYTEA       NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    spiffe_id          TEXT        NOT NULL,
    dns_names          TEXT        NOT NULL DEFAULT '[]',
    profile            TEXT        NOT NULL CHECK (profile IN ('server', 'client', 'peer')),
    cert_ttl_secs      BIGINT      NOT NULL CHECK (cert_ttl_secs > 0),
    expires_at         TIMESTAMPTZ NOT NULL,
    max_uses           BIGINT      NOT NULL CHECK (max_uses >= 0),
    uses               BIGINT      NOT NULL DEFAULT 0 CHECK (uses >= 0),
    allowed_cidrs      TEXT        NOT NULL DEFAULT '[]',
    created_at         TIMESTAMPTZ NOT NULL,
    revoked_at         TIMESTAMPTZ,
    revoked_with_certs BOOLEAN     NOT NULL DEFAULT FALSE,
    -- Defence in depth: even a faulty UPDATE cannot overspend a token.
    CHECK (max_uses = 0 OR uses <= max_uses)
);

CREATE TABLE certificates (
    serial            TEXT        NOT NULL PRIMARY KEY,
    spiffe_id         TEXT        NOT NULL,
    token_id          TEXT        REFERENCES tokens (id),
    not_before        TIMESTAMPTZ NOT NULL,
    not_after         TIMESTAMPTZ NOT NULL,
    der               BYTEA       NOT NULL,
    fingerprint       TEXT        NOT NULL,
    issued_at         TIMESTAMPTZ NOT NULL,
    -- No foreign key: old certificates may be pruned one day.
    renewed_from      TEXT,
    revoked_at        TIMESTAMPTZ,
    revocation_reason SMALLINT    CHECK (revocation_reason BETWEEN 0 AND 10 AND revocation_reason <> 7),
    CHECK (revocation_reason IS NULL OR revoked_at IS NOT NULL)
);

CREATE INDEX certificates_token_id ON certificates (token_id);
CREATE INDEX certificates_issued_at ON certificates (issued_at);
CREATE INDEX certificates_revoked ON certificates (not_after) WHERE revoked_at IS NOT NULL;

-- One row: the last CRL number handed out. Replicas serialise on its row lock.
CREATE TABLE crl_counter (
    id    SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    value BIGINT   NOT NULL CHECK (value >= 0)
);

INSERT INTO crl_counter (id, value) VALUES (1, 0);
