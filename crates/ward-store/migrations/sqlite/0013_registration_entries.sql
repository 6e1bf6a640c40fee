-- Node attestation (issue 24, part 3): registration entries map what the
-- kernel says about a caller of an agent's Workload API socket (selectors
-- such as unix:uid:1000) to a SPIFFE ID, for one node agent. Keep in step with ../postgres/0013_registration_entries.sql.
CREATE TABLE registration_entries (
    -- Public id: ent_ + 16 lowercase hex.
    id         TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 20),
    spiffe_id  TEXT NOT NULL CHECK (length(spiffe_id) BETWEEN 1 AND 2048),
    -- Canonical selectors, sorted, one per line; all must match.
    selectors  TEXT NOT NULL CHECK (length(selectors) BETWEEN 1 AND 8192),
    -- The SPIFFE ID of the one node agent allowed to obtain its SVIDs.
    node       TEXT NOT NULL CHECK (length(node) BETWEEN 1 AND 2048),
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX registration_entries_node ON registration_entries (node);
