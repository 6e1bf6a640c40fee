-- The web console (issue 21), second part: certificates searchable by DNS
-- name (exact or by suffix) and counted by profile. Keep in step with
-- ../sqlite/0012_console_dns_profile.sql.

-- The profile a certificate was issued with: `server`, `client` or `peer`
-- for tokens, renewals, offline and the CA's own certificates, the ACME
-- profile's name for ACME; NULL when not known (admin and OCSP responder
-- certificates, offline certificates recorded before this column).
ALTER TABLE certificates ADD COLUMN profile TEXT
    CHECK (profile IS NULL OR length(profile) BETWEEN 1 AND 64);

-- Rows from before this column: a token's certificates, and their renewals
-- (which keep the token), carry the token's profile.
UPDATE certificates SET profile = t.profile FROM tokens t WHERE t.id = certificates.token_id;

-- Active certificates by origin and profile: covering, so the overview
-- reads only the unexpired range.
DROP INDEX certificates_active;
CREATE INDEX certificates_active ON certificates (not_after, origin, profile, revoked_at);

-- One row per DNS SAN of a certificate, lowercase and reversed character
-- by character ("www.example.test" as "tset.elpmaxe.www"), so that an exact
-- name and a suffix (".example.test") are both one range of this index
-- (byte-wise, COLLATE "C"), newest first. Filled when a certificate is
-- recorded.
CREATE TABLE cert_dns (
    name_rev  TEXT COLLATE "C" NOT NULL CHECK (length(name_rev) BETWEEN 1 AND 253),
    issued_at TIMESTAMPTZ      NOT NULL,
    serial    TEXT             NOT NULL
);
CREATE UNIQUE INDEX cert_dns_name ON cert_dns (name_rev, issued_at DESC, serial);

-- Certificates recorded before this table are indexed after start, in
-- small transactions, in serial order: the row holds the last serial done
-- and goes when all are.
CREATE TABLE cert_dns_backfill (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    after TEXT    NOT NULL
);
INSERT INTO cert_dns_backfill (id, after) SELECT 1, '' WHERE EXISTS (SELECT 1 FROM certificates);
