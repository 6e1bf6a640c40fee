-- Every certificate a key of the CA directory signs is recorded with where it
-- came from; a token may bind a subject common name. Keep in step with
-- ../sqlite/0002_origin_and_cn.sql.

ALTER TABLE certificates ADD COLUMN origin TEXT NOT NULL DEFAULT 'token'
    CHECK (origin IN ('offline', 'token', 'renewal', 'admin', 'ca-server', 'ocsp-responder', 'acme'));

-- Rows from before this column: renewals name what they renewed, and the
-- only other certificates recorded without a token were the CA's own
-- server certificates.
UPDATE certificates SET origin = 'renewal' WHERE renewed_from IS NOT NULL;
UPDATE certificates SET origin = 'ca-server' WHERE token_id IS NULL AND renewed_from IS NULL;

CREATE INDEX certificates_origin ON certificates (origin);

ALTER TABLE tokens ADD COLUMN common_name TEXT;
