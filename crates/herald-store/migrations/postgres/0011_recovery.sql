-- Disaster recovery: which erasure ledger file this database pairs with, and whether it was
-- restored from a backup and not yet started (start-up then insists on the ledger).
CREATE TABLE recovery_state (
    id                        BIGINT PRIMARY KEY CHECK (id = 1),
    -- Written as the first line of the erasure ledger file; a missing file is then noticed.
    ledger_id                 TEXT,
    -- Set by `herald backup restore`, cleared by the first start that re-applied the ledger.
    restored_from             TEXT,
    restored_at               BIGINT,
    -- How many erasures the backup's own copy of the ledger listed.
    restored_ledger_entries   BIGINT
);
INSERT INTO recovery_state (id) VALUES (1);

-- Backups this installation wrote (their manifests carry no personal data).
CREATE TABLE backups (
    id            TEXT    PRIMARY KEY,
    created_at    BIGINT  NOT NULL,
    file_name     TEXT    NOT NULL,
    size_bytes    BIGINT  NOT NULL,
    duration_ms   BIGINT  NOT NULL,
    manifest      TEXT    NOT NULL,
    verified_at   BIGINT,
    drilled_at    BIGINT,
    pruned_at     BIGINT
);
CREATE INDEX backups_created ON backups (created_at);
