-- The consent ledger (issue 5): append-only events with their evidence, each record's current
-- standing kept in step in the same transaction, and user-initiated opt-in codes.

-- Every grant, request, withdrawal and expiry, never changed or removed (GDPR Art. 7(1): the
-- controller must be able to show consent was given). The personal parts of the evidence
-- (source, locale, confirming message) are encrypted under the subject's data key, so erasing
-- the subject shreds them while the pseudonymous record stays.
CREATE TABLE consent_events (
    -- The order events were appended in (ids made in the same millisecond are not ordered).
    seq                  BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                   TEXT    NOT NULL UNIQUE,
    subject_id           TEXT    NOT NULL REFERENCES subjects (id),
    purpose              TEXT    NOT NULL,
    channel              TEXT    NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN ('granted', 'pending', 'withdrawn', 'expired')),
    method               TEXT    NOT NULL,
    notice_version       TEXT,
    notice_hash          BYTEA,
    integration_id       TEXT    REFERENCES integrations (id),
    evidence_ciphertext  BYTEA   NOT NULL,
    captured_at          BIGINT  NOT NULL,
    recorded_at          BIGINT  NOT NULL,
    expires_at           BIGINT
);
CREATE INDEX consent_events_by_subject ON consent_events (subject_id, seq);

CREATE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent_events is append-only';
END;
$$;
CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION consent_events_append_only();

-- The current standing per subject × purpose × channel: the last effective event's state.
CREATE TABLE consents (
    subject_id   TEXT    NOT NULL REFERENCES subjects (id),
    purpose      TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('granted', 'pending', 'withdrawn', 'expired')),
    expires_at   BIGINT,
    event_id     TEXT    NOT NULL REFERENCES consent_events (id),
    updated_at   BIGINT  NOT NULL,
    PRIMARY KEY (subject_id, purpose, channel)
);
CREATE INDEX consents_pending ON consents (expires_at) WHERE state = 'pending';

-- User-initiated opt-in codes: whoever sends one to the business number opts in to its
-- purpose. Only the code's hash is kept.
CREATE TABLE opt_in_codes (
    code_hash        BYTEA   PRIMARY KEY,
    integration_id   TEXT    NOT NULL REFERENCES integrations (id),
    purpose          TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    notice_version   TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    expires_at       BIGINT  NOT NULL
);

-- Frequency caps count a subject's recent messages per purpose; the index also serves every look-up
-- by subject, so it replaces the one on subject_id alone (no extra B-tree per message).
DROP INDEX messages_by_subject;
CREATE INDEX messages_by_subject_purpose ON messages (subject_id, purpose, created_at);

-- The consent event a message was sent on (the purpose's consent, or the subject's WhatsApp
-- opt-in for a business-initiated template); empty when the basis needed none (a reply inside
-- the window under contract, legal obligation, vital or legitimate interests).
ALTER TABLE messages ADD COLUMN consent_event_id TEXT;
