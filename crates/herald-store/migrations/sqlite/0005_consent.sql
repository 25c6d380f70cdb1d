-- The consent ledger (issue 5): append-only events with their evidence, each record's current
-- standing kept in step in the same transaction, and user-initiated opt-in codes.

-- Every grant, request, withdrawal and expiry, never changed or removed (GDPR Art. 7(1): the
-- controller must be able to show consent was given). The personal parts of the evidence
-- (source, locale, confirming message) are encrypted under the subject's data key, so erasing
-- the subject shreds them while the pseudonymous record stays.
CREATE TABLE consent_events (
    -- The order events were appended in (ids made in the same millisecond are not ordered).
    seq                  INTEGER PRIMARY KEY,
    id                   TEXT    NOT NULL UNIQUE,
    subject_id           TEXT    NOT NULL REFERENCES subjects (id),
    purpose              TEXT    NOT NULL,
    channel              TEXT    NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN ('granted', 'pending', 'withdrawn', 'expired')),
    method               TEXT    NOT NULL,
    notice_version       TEXT,
    notice_hash          BLOB,
    integration_id       TEXT    REFERENCES integrations (id),
    evidence_ciphertext  BLOB    NOT NULL,
    captured_at          INTEGER NOT NULL,
    recorded_at          INTEGER NOT NULL,
    expires_at           INTEGER
) STRICT;
CREATE INDEX consent_events_by_subject ON consent_events (subject_id, seq);

CREATE TRIGGER consent_events_append_only_update BEFORE UPDATE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent_events is append-only');
END;
CREATE TRIGGER consent_events_append_only_delete BEFORE DELETE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent_events is append-only');
END;

-- The current standing per subject × purpose × channel: the last effective event's state.
CREATE TABLE consents (
    subject_id   TEXT    NOT NULL REFERENCES subjects (id),
    purpose      TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('granted', 'pending', 'withdrawn', 'expired')),
    expires_at   INTEGER,
    event_id     TEXT    NOT NULL REFERENCES consent_events (id),
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (subject_id, purpose, channel)
) STRICT, WITHOUT ROWID;
CREATE INDEX consents_pending ON consents (expires_at) WHERE state = 'pending';

-- User-initiated opt-in codes: whoever sends one to the business number opts in to its
-- purpose. Only the code's hash is kept.
CREATE TABLE opt_in_codes (
    code_hash        BLOB    PRIMARY KEY,
    integration_id   TEXT    NOT NULL REFERENCES integrations (id),
    purpose          TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    notice_version   TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL
) STRICT;

-- Frequency caps count a subject's recent messages per purpose; the index also serves every look-up
-- by subject, so it replaces the one on subject_id alone (no extra B-tree per message).
DROP INDEX messages_by_subject;
CREATE INDEX messages_by_subject_purpose ON messages (subject_id, purpose, created_at);

-- The consent event a message was sent on (the purpose's consent, or the subject's WhatsApp
-- opt-in for a business-initiated template); empty when the basis needed none (a reply inside
-- the window under contract, legal obligation, vital or legitimate interests).
ALTER TABLE messages ADD COLUMN consent_event_id TEXT;
