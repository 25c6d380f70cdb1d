-- Audit trail. Entries are written unsealed (audit_pending) together with the action they
-- record; the sealer moves them, numbered and hash-chained, into audit_log. Checkpoints are
-- signed statements of the chain head; audit_keys holds the signing keys (private halves
-- encrypted under the system key).

CREATE TABLE audit_pending (
    id           INTEGER PRIMARY KEY,
    recorded_at  INTEGER NOT NULL,
    body         TEXT    NOT NULL
) STRICT;

CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY,
    hash         BLOB    NOT NULL,
    recorded_at  INTEGER NOT NULL,
    body         TEXT    NOT NULL
) STRICT;
CREATE INDEX audit_log_by_time ON audit_log (recorded_at);

CREATE TABLE audit_checkpoints (
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('periodic', 'horizon')),
    head        BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    signature   BLOB    NOT NULL,
    PRIMARY KEY (seq, kind)
) STRICT;

CREATE TABLE audit_keys (
    key_id                  TEXT    PRIMARY KEY,
    public_key              BLOB    NOT NULL,
    private_key_ciphertext  BLOB    NOT NULL,
    created_at              INTEGER NOT NULL
) STRICT;
