-- ACME nonces without a write per nonce (keep in step with
-- ../postgres/0015_acme_nonce_key.sql).
--
-- A nonce is issued without touching the database: it carries its expiry
-- and an HMAC under the one key below, which every replica of this
-- database reads (the first to start creates it). A nonce is recorded only
-- when it is used, in `acme_used_nonces`, whose primary key refuses it a
-- second time on any replica. `acme_nonces` (one row per issued nonce) is
-- no longer written; the sweep empties it as its rows expire.
CREATE TABLE acme_nonce_key (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    key        BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE acme_used_nonces (
    nonce      TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX acme_used_nonces_expiry ON acme_used_nonces (expires_at);
