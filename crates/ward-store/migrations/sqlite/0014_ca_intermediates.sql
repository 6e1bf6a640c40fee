-- CA rotation (issue 20): the intermediates `ward ca rotate intermediate`
-- made, shared by every replica so they switch together. The intermediate
-- of ca.toml's directory (intermediate.crt) signs until the first row here
-- whose signs_from has passed; a row cancelled before its signs_from never
-- signs. Keep in step with ../postgres/0014_ca_intermediates.sql.
CREATE TABLE ca_intermediates (
    -- SHA-256 of the DER, lowercase hex.
    fingerprint  TEXT    NOT NULL PRIMARY KEY CHECK (length(fingerprint) = 64),
    der          BLOB    NOT NULL CHECK (length(der) BETWEEN 1 AND 65536),
    -- Where its key is: a file name inside the CA directory or a pkcs11: URI.
    key_ref      TEXT    NOT NULL CHECK (length(key_ref) BETWEEN 1 AND 2048),
    signs_from   INTEGER NOT NULL,
    not_after    INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    cancelled_at INTEGER
) STRICT;
CREATE INDEX ca_intermediates_signs_from ON ca_intermediates (signs_from);
