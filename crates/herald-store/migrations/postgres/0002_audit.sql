-- Audit trail. Entries are written unsealed (audit_pending) together with the action they
-- record; the sealer moves them, numbered and hash-chained, into audit_log. Checkpoints are
-- signed statements of the chain head; audit_keys holds the signing keys (private halves
-- encrypted under the system key).

CREATE TABLE audit_pending (
    id           BIGSERIAL PRIMARY KEY,
    recorded_at  BIGINT NOT NULL,
    body         TEXT   NOT NULL
);

CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,
    hash         BYTEA  NOT NULL,
    recorded_at  BIGINT NOT NULL,
    body         TEXT   NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (recorded_at);

CREATE TABLE audit_checkpoints (
    seq         BIGINT NOT NULL,
    kind        TEXT   NOT NULL CHECK (kind IN ('periodic', 'horizon')),
    head        BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL,
    key_id      TEXT   NOT NULL,
    signature   BYTEA  NOT NULL,
    PRIMARY KEY (seq, kind)
);

CREATE TABLE audit_keys (
    key_id                  TEXT   PRIMARY KEY,
    public_key              BYTEA  NOT NULL,
    private_key_ciphertext  BYTEA  NOT NULL,
    created_at              BIGINT NOT NULL
);
