-- Events about no one person (issue 16: `incident.deadline`, to the operator's own endpoints)
-- go through the same outbox as the events about a subject: `subject_id` may now be null.
-- SQLite cannot drop a NOT NULL constraint, so the table is rebuilt with its rows.
CREATE TABLE webhook_deliveries_new (
    event_id            TEXT    NOT NULL,
    endpoint_id         TEXT    NOT NULL REFERENCES webhook_endpoints (id),
    event_type          TEXT    NOT NULL,
    subject_id          TEXT    REFERENCES subjects (id),
    payload_ciphertext  BLOB,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    due_at              INTEGER NOT NULL,
    lease_owner         TEXT,
    last_http_status    INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (event_id, endpoint_id)
) STRICT;
INSERT INTO webhook_deliveries_new (event_id, endpoint_id, event_type, subject_id,
    payload_ciphertext, status, attempts, due_at, lease_owner, last_http_status, created_at,
    updated_at)
SELECT event_id, endpoint_id, event_type, subject_id, payload_ciphertext, status, attempts,
    due_at, lease_owner, last_http_status, created_at, updated_at
FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_subject ON webhook_deliveries (subject_id);
