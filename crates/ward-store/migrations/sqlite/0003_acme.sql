-- ACME server state (RFC 8555). Keep in step with ../postgres/0003_acme.sql.
-- Authorizations and their challenges belong to exactly one order (Ward
-- never reuses an authorization across orders), so they live in the
-- order's JSON document and change with it in one compare-and-swap on
-- `version`: two replicas validating the same order cannot both win.

CREATE TABLE acme_nonces (
    nonce      TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX acme_nonces_expiry ON acme_nonces (expires_at);

CREATE TABLE acme_eab_keys (
    id          TEXT    NOT NULL PRIMARY KEY,
    provisioner TEXT    NOT NULL,
    hmac_key    BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    account_id  TEXT
);

CREATE TABLE acme_accounts (
    id          TEXT    NOT NULL PRIMARY KEY,
    provisioner TEXT    NOT NULL,
    thumbprint  TEXT    NOT NULL,
    jwk         TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('valid', 'deactivated', 'revoked')),
    contact     TEXT    NOT NULL DEFAULT '[]',
    eab_key_id  TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (provisioner, thumbprint)
);

CREATE TABLE acme_orders (
    id          TEXT    NOT NULL PRIMARY KEY,
    account_id  TEXT    NOT NULL REFERENCES acme_accounts (id),
    provisioner TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    doc         TEXT    NOT NULL,
    cert_serial TEXT,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX acme_orders_account ON acme_orders (account_id);
CREATE INDEX acme_orders_cert ON acme_orders (cert_serial);
