-- The register of data-subject rights requests (GDPR Art. 12(3)): received, due, extended
-- (the reason encrypted under the system key), done. Overdue is derived: open and past due.
CREATE TABLE rights_requests (
    id                           TEXT    PRIMARY KEY,
    kind                         TEXT    NOT NULL CHECK (kind IN ('access', 'rectification',
                                   'restriction', 'erasure', 'objection', 'portability')),
    subject_id                   TEXT    REFERENCES subjects (id),
    channel                      TEXT,
    integration_id               TEXT    NOT NULL REFERENCES integrations (id),
    received_at                  BIGINT  NOT NULL,
    due_at                       BIGINT  NOT NULL,
    extended_months              BIGINT  NOT NULL DEFAULT 0 CHECK (extended_months BETWEEN 0 AND 2),
    extension_reason_ciphertext  BYTEA,
    extended_at                  BIGINT,
    completed_at                 BIGINT,
    created_at                   BIGINT  NOT NULL
);
CREATE INDEX rights_requests_open ON rights_requests (due_at) WHERE completed_at IS NULL;
