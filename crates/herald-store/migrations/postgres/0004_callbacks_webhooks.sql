-- Provider callbacks, customers' messages, and events to integrators.

-- Provider callbacks as received (the body encrypted under the system key), kept until
-- processed. Stored before the provider gets its 200, so nothing it sent is lost.
CREATE TABLE provider_inbox (
    id               TEXT    PRIMARY KEY,
    provider         TEXT    NOT NULL,
    body_ciphertext  BYTEA   NOT NULL,
    received_at      BIGINT  NOT NULL,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    due_at           BIGINT  NOT NULL,
    lease_owner      TEXT
);
CREATE INDEX provider_inbox_due ON provider_inbox (due_at);

-- Customers' messages: content encrypted under the subject's data key, found by the blind
-- index of the provider's id (deduplicates redelivered callbacks).
CREATE TABLE inbound_messages (
    id                  TEXT    PRIMARY KEY,
    subject_id          TEXT    NOT NULL REFERENCES subjects (id),
    channel             TEXT    NOT NULL,
    provider_ref_index  BYTEA   NOT NULL UNIQUE,
    kind                TEXT    NOT NULL,
    content_ciphertext  BYTEA,
    sent_at             BIGINT  NOT NULL,
    received_at         BIGINT  NOT NULL,
    content_purge_at    BIGINT 
);
CREATE INDEX inbound_messages_by_subject ON inbound_messages (subject_id);
CREATE INDEX inbound_messages_content_purge ON inbound_messages (content_purge_at)
    WHERE content_purge_at IS NOT NULL;

-- Integrators' endpoints; the signing secret encrypted under the system key. `events` is a
-- comma-delimited list with leading and trailing commas (",message.status,").
CREATE TABLE webhook_endpoints (
    id                    TEXT    PRIMARY KEY,
    integration_id        TEXT    NOT NULL REFERENCES integrations (id),
    url                   TEXT    NOT NULL,
    events                TEXT    NOT NULL,
    secret_ciphertext     BYTEA   NOT NULL,
    enabled               BOOLEAN NOT NULL DEFAULT TRUE,
    consecutive_failures  BIGINT  NOT NULL DEFAULT 0,
    disabled_at           BIGINT ,
    created_at            BIGINT  NOT NULL
);
CREATE INDEX webhook_endpoints_by_integration ON webhook_endpoints (integration_id);

-- One row per event and endpoint (the outbox), written with the change the event reports.
-- The payload is encrypted under the subject's data key and removed once delivered or given up.
CREATE TABLE webhook_deliveries (
    event_id            TEXT    NOT NULL,
    endpoint_id         TEXT    NOT NULL REFERENCES webhook_endpoints (id),
    event_type          TEXT    NOT NULL,
    subject_id          TEXT    NOT NULL REFERENCES subjects (id),
    payload_ciphertext  BYTEA,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts            BIGINT  NOT NULL DEFAULT 0,
    due_at              BIGINT  NOT NULL,
    lease_owner         TEXT,
    last_http_status    BIGINT ,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_subject ON webhook_deliveries (subject_id);
