-- Messages: the outbox the delivery worker drains, their status history and attempts, and
-- Idempotency-Key claims. Content exists only as ciphertext under the subject's data key and
-- is deleted once the provider accepted the message (unless retention keeps it). The
-- provider's message id (a WhatsApp id embeds the recipient's number) is stored encrypted and
-- found through a blind index.

CREATE TABLE messages (
    id                   TEXT    PRIMARY KEY,
    integration_id       TEXT    NOT NULL REFERENCES integrations (id),
    subject_id           TEXT    NOT NULL REFERENCES subjects (id),
    channel              TEXT    NOT NULL,
    purpose              TEXT    NOT NULL,
    kind                 TEXT    NOT NULL CHECK (kind IN ('text', 'template')),
    template_name        TEXT,
    template_language    TEXT,
    content_ciphertext   BYTEA,
    phi                  BOOLEAN NOT NULL,
    status               TEXT    NOT NULL,
    attempts             BIGINT  NOT NULL DEFAULT 0,
    due_at               BIGINT  NOT NULL,
    lease_owner          TEXT,
    leased_until         BIGINT,
    provider_ref_index       BYTEA UNIQUE,
    provider_ref_ciphertext  BYTEA,
    error_code           TEXT,
    provider_code        BIGINT,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL,
    content_purge_at     BIGINT
);
-- The delivery worker's queue: only messages still to be sent.
CREATE INDEX messages_due ON messages (due_at) WHERE status IN ('queued', 'sending');
CREATE INDEX messages_by_subject ON messages (subject_id);
CREATE INDEX messages_content_purge ON messages (content_purge_at) WHERE content_purge_at IS NOT NULL;

-- Each status a message reached, once (status reports are redelivered).
CREATE TABLE message_history (
    message_id  TEXT   NOT NULL REFERENCES messages (id),
    status      TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (message_id, status)
);

-- Every delivery attempt and how it ended.
CREATE TABLE message_attempts (
    message_id     TEXT   NOT NULL REFERENCES messages (id),
    attempt        BIGINT NOT NULL,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT NOT NULL,
    outcome        TEXT   NOT NULL,
    http_status    BIGINT,
    provider_code  BIGINT,
    latency_ms     BIGINT NOT NULL,
    PRIMARY KEY (message_id, attempt)
);

-- Idempotency-Key claims: a hash of the caller's key, never the key.
CREATE TABLE idempotency_keys (
    integration_id  TEXT   NOT NULL,
    key_hash        BYTEA  NOT NULL,
    fingerprint     BYTEA  NOT NULL,
    message_id      TEXT   NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (integration_id, key_hash)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
