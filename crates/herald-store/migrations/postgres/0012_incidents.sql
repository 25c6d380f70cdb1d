-- The incident register (issue 16): security incidents and possible personal-data breaches,
-- with what the notification clocks need. The facts are JSON without personal data or free
-- text; the free text (summary, assessment, measures, reasons) is sealed under the system key.
CREATE TABLE incidents (
    id               TEXT    PRIMARY KEY,
    status           TEXT    NOT NULL CHECK (status IN ('open', 'assessed', 'notified', 'closed')),
    facts            TEXT    NOT NULL,
    text_ciphertext  BYTEA   NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    version          BIGINT NOT NULL
);
CREATE INDEX incidents_by_status ON incidents (status);
