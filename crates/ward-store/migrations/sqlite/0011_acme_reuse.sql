-- ACME additions (keep in step with ../postgres/0011_acme_reuse.sql).
--
-- Valid authorizations an account reuses in later orders for the same
-- identifier until they expire, as Let's Encrypt does (RFC 8555 §7.1.4
-- allows it). `identifier` is `dns:NAME`, `dns:*.NAME` or `ip:ADDRESS`;
-- `doc` is the CA's JSON of the authorization.
CREATE TABLE acme_valid_authz (
    account_id TEXT    NOT NULL REFERENCES acme_accounts (id),
    identifier TEXT    NOT NULL,
    doc        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, identifier)
);
CREATE INDEX acme_valid_authz_expiry ON acme_valid_authz (expires_at);

-- ARI (RFC 9773): the order that replaces a certificate. One row per
-- replaced certificate, so a second live replacement is refused
-- (`alreadyReplaced`) in the same transaction that would create it.
CREATE TABLE acme_replacements (
    cert_serial TEXT NOT NULL PRIMARY KEY,
    order_id    TEXT NOT NULL
);
CREATE INDEX acme_replacements_order ON acme_replacements (order_id);

-- EAB keys can be revoked by the admin API: a revoked key binds no new
-- account, and the account it bound is revoked with it.
ALTER TABLE acme_eab_keys ADD COLUMN revoked_at INTEGER;

-- The sweep deletes expired orders oldest first.
CREATE INDEX acme_orders_expiry ON acme_orders (expires_at);
