//! SQL text shared by both backends.
//!
//! SQLite and PostgreSQL agree on everything the store needs (`$n`
//! parameters, `RETURNING`, `COALESCE`, partial indexes); only column types
//! differ, and those live in the two migration folders. Keeping one copy of
//! each statement means the two backends cannot drift apart in semantics.
//! Time parameters are bound as microseconds on SQLite and as `timestamptz` on
//! PostgreSQL; the SQL is the same.

/// Columns of `tokens`, in the order the row decoders read them.
macro_rules! token_columns {
    () => {
        "id, hash, spiffe_id, dns_names, profile, cert_ttl_secs, expires_at, max_uses, uses, \
         allowed_cidrs, created_at, revoked_at, revoked_with_certs, common_name"
    };
}

/// Columns of `certificates`, in the order the row decoders read them.
macro_rules! certificate_columns {
    () => {
        "serial, spiffe_id, token_id, not_before, not_after, der, fingerprint, issued_at, \
         renewed_from, revoked_at, revocation_reason, origin"
    };
}

/// Inserts a token with zero uses and no revocation.
pub(crate) const INSERT_TOKEN: &str = "INSERT INTO tokens (id, hash, spiffe_id, dns_names, \
     profile, cert_ttl_secs, expires_at, max_uses, uses, allowed_cidrs, created_at, revoked_at, \
     revoked_with_certs, common_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, NULL, \
     FALSE, $11)";

/// One token by id.
pub(crate) const TOKEN_BY_ID: &str =
    concat!("SELECT ", token_columns!(), " FROM tokens WHERE id = $1");

/// SQLite's fast group commit only: the start of a read of several tokens
/// by id; the caller appends the parameters and `)`.
pub(crate) const TOKENS_BY_IDS_OPEN: &str =
    concat!("SELECT ", token_columns!(), " FROM tokens WHERE id IN (");

/// One token by the hash of its secret.
pub(crate) const TOKEN_BY_HASH: &str =
    concat!("SELECT ", token_columns!(), " FROM tokens WHERE hash = $1");

/// Every token, newest first.
pub(crate) const LIST_TOKENS: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM tokens ORDER BY created_at DESC, id"
);

/// Marks a token revoked, keeping the first revocation time.
pub(crate) const REVOKE_TOKEN: &str = "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2), \
     revoked_with_certs = (revoked_with_certs OR $3) WHERE id = $1";

/// Revokes every unrevoked, unexpired certificate issued from a token.
pub(crate) const REVOKE_TOKEN_CERTIFICATES: &str = "UPDATE certificates SET revoked_at = $2, \
     revocation_reason = $3 WHERE token_id = $1 AND revoked_at IS NULL AND not_after > $2";

/// The most rows one multi-row certificate `INSERT` takes; a batch is cut
/// into chunks of 64, 32, …, 1 rows (the binary digits of its size), so at
/// most seven statement texts exist and each stays in the statement cache.
pub(crate) const MAX_INSERT_ROWS: usize = 64;

/// How many of `remaining` rows the next multi-row `INSERT` takes: the
/// largest power of two not above `remaining` or [`MAX_INSERT_ROWS`].
pub(crate) fn insert_chunk_len(remaining: usize) -> usize {
    if remaining >= MAX_INSERT_ROWS {
        MAX_INSERT_ROWS
    } else if remaining == 0 {
        0
    } else {
        1 << remaining.ilog2()
    }
}

/// SQLite: inserts `rows` certificates (10 parameters each, in the column
/// order below) unless their serial exists, and returns the serials actually
/// inserted (group commit: a duplicate must not abort the batch's
/// transaction). `rows` must be a power of two up to [`MAX_INSERT_ROWS`].
pub(crate) fn insert_rows_sql(rows: usize) -> &'static str {
    static TEXTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..=MAX_INSERT_ROWS.ilog2())
            .map(|k| {
                let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)";
                let values = vec![row; 1 << k].join(", ");
                format!(
                    "INSERT INTO certificates (serial, spiffe_id, token_id, not_before, \
                     not_after, der, fingerprint, issued_at, renewed_from, revoked_at, \
                     revocation_reason, origin) VALUES {values} ON CONFLICT (serial) DO NOTHING \
                     RETURNING serial"
                )
            })
            .collect()
    });
    let k = rows.clamp(1, MAX_INSERT_ROWS).ilog2() as usize;
    TEXTS[k].as_str()
}

/// Parameters per row of [`insert_rows_sql`].
#[cfg(test)]
pub(crate) const INSERT_PARAMS: usize = 10;

/// Adds the uses a committed batch took from one token. The batch decided
/// them from the token row it holds locked; the condition is a second check
/// that no use is ever overspent (zero rows affected fails the batch).
pub(crate) const ADD_TOKEN_USES: &str = "UPDATE tokens SET uses = uses + $2 \
     WHERE id = $1 AND (max_uses = 0 OR uses + $2 <= max_uses)";

/// PostgreSQL only: reads and row-locks the tokens a batch names, in id
/// order so that replicas lock in one order.
pub(crate) const PG_LOCK_TOKENS: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM tokens WHERE id = ANY($1) ORDER BY id FOR UPDATE"
);

/// PostgreSQL only: a whole batch in one statement (one array per column,
/// the last saying which rows consume a use of their `token_id`): inserts
/// the certificates whose serial is new, adds one use per inserted consuming
/// row to its token (re-checking the limit, as [`ADD_TOKEN_USES`]), and
/// returns each inserted serial with how many tokens needed uses and how
/// many were updated (equal unless a limit would be overspent).
pub(crate) const PG_INSERT_CERTIFICATES: &str = "WITH v AS (SELECT * FROM UNNEST($1::text[], \
     $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bytea[], $7::text[], \
     $8::timestamptz[], $9::text[], $10::bool[], $11::text[]) AS v(serial, spiffe_id, token_id, \
     not_before, not_after, der, fingerprint, issued_at, renewed_from, consumes, origin)), \
     ins AS (INSERT INTO certificates (serial, spiffe_id, token_id, not_before, not_after, der, \
     fingerprint, issued_at, renewed_from, origin) SELECT serial, spiffe_id, token_id, not_before, \
     not_after, der, fingerprint, issued_at, renewed_from, origin FROM v \
     ON CONFLICT (serial) DO NOTHING RETURNING serial), \
     n AS (SELECT v.token_id AS id, COUNT(*) AS n FROM v JOIN ins ON ins.serial = v.serial \
     WHERE v.consumes GROUP BY v.token_id), \
     upd AS (UPDATE tokens SET uses = tokens.uses + n.n FROM n WHERE tokens.id = n.id \
     AND (tokens.max_uses = 0 OR tokens.uses + n.n <= tokens.max_uses) RETURNING tokens.id) \
     SELECT ins.serial, (SELECT COUNT(*) FROM n), (SELECT COUNT(*) FROM upd) FROM ins";

/// One certificate by serial.
pub(crate) const CERTIFICATE_BY_SERIAL: &str = concat!(
    "SELECT ",
    certificate_columns!(),
    " FROM certificates WHERE serial = $1"
);

/// A page of certificates, newest first.
pub(crate) const LIST_CERTIFICATES: &str = concat!(
    "SELECT ",
    certificate_columns!(),
    " FROM certificates ORDER BY issued_at DESC, serial LIMIT $1 OFFSET $2"
);

/// How many certificates are recorded.
pub(crate) const COUNT_CERTIFICATES: &str = "SELECT COUNT(*) FROM certificates";

/// Revokes one certificate unless it is already revoked.
pub(crate) const REVOKE_CERTIFICATE: &str = "UPDATE certificates SET revoked_at = $2, \
     revocation_reason = $3 WHERE serial = $1 AND revoked_at IS NULL";

/// Whether a certificate exists.
pub(crate) const CERTIFICATE_EXISTS: &str = "SELECT COUNT(*) FROM certificates WHERE serial = $1";

/// Unexpired revoked certificates, the content of a CRL.
pub(crate) const REVOKED_CERTIFICATES: &str = "SELECT serial, revoked_at, revocation_reason \
     FROM certificates WHERE revoked_at IS NOT NULL AND not_after > $1 \
     ORDER BY revoked_at, serial";

/// Atomically takes the next CRL number (the row lock serialises replicas):
/// one more than the last, and never less than `$1`, the current time in
/// microseconds since the epoch. The time floor keeps numbers increasing
/// even across a store restored from an old backup or created anew for a
/// CA that had published CRLs before (gates take a lower number as a
/// rollback); the `+ 1` keeps them increasing when the clock steps back.
pub(crate) const NEXT_CRL_NUMBER: &str = "UPDATE crl_counter SET value = CASE \
     WHEN value + 1 > $1 THEN value + 1 ELSE $1 END WHERE id = 1 RETURNING value";

/// Readiness probe.
pub(crate) const PING: &str = "SELECT 1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_power_of_two_chunks() {
        let chunks = |mut n: usize| {
            let mut out = Vec::new();
            while n > 0 {
                let k = insert_chunk_len(n);
                out.push(k);
                n -= k;
            }
            out
        };
        assert_eq!(chunks(1), [1]);
        assert_eq!(chunks(29), [16, 8, 4, 1]);
        assert_eq!(chunks(64), [64]);
        assert_eq!(chunks(200), [64, 64, 64, 8]);
        assert_eq!(insert_chunk_len(0), 0);
    }

    #[test]
    fn multi_row_inserts_have_their_parameters_per_row() {
        for rows in [1, 2, 4, 8, 16, 32, 64] {
            let sql = insert_rows_sql(rows);
            assert_eq!(
                sql.matches('?').count(),
                INSERT_PARAMS * rows,
                "{rows} rows"
            );
            assert!(sql.ends_with("ON CONFLICT (serial) DO NOTHING RETURNING serial"));
        }
    }
}
