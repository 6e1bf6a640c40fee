-- Root rotation (issue 20): the roots `ward ca rotate root` made. Each one
-- comes with its first intermediate, a row of ca_intermediates recorded in
-- the same transaction with the same signs_from, and the two rollover
-- certificates (RFC 4210 section 4.4): the new root's key certified by the
-- root it replaces (new_with_old) and that root's key certified by the new
-- one (old_with_new). The root of ca.toml's directory (root.crt) comes
-- first; a row cancelled before its signs_from is never distributed again.
-- Keep in step with ../sqlite/0015_ca_roots.sql.
CREATE TABLE ca_roots (
    -- SHA-256 of the DER, lowercase hex.
    fingerprint   TEXT        NOT NULL PRIMARY KEY CHECK (length(fingerprint) = 64),
    der           BYTEA       NOT NULL CHECK (length(der) BETWEEN 1 AND 65536),
    -- Where its key is: a file name inside the CA directory or a pkcs11: URI.
    key_ref       TEXT        NOT NULL CHECK (length(key_ref) BETWEEN 1 AND 2048),
    -- The root it replaces (SHA-256 hex).
    previous      TEXT        NOT NULL CHECK (length(previous) = 64),
    new_with_old  BYTEA       NOT NULL CHECK (length(new_with_old) BETWEEN 1 AND 65536),
    old_with_new  BYTEA       NOT NULL CHECK (length(old_with_new) BETWEEN 1 AND 65536),
    -- Its first intermediate (ca_intermediates.fingerprint).
    intermediate  TEXT        NOT NULL REFERENCES ca_intermediates (fingerprint),
    signs_from    TIMESTAMPTZ NOT NULL,
    not_after     TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    cancelled_at  TIMESTAMPTZ
);
CREATE INDEX ca_roots_signs_from ON ca_roots (signs_from);
