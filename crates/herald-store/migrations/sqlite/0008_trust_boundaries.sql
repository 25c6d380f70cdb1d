-- Trust boundaries (issue 14): which integrations may see a subject, a consent ledger that
-- follows the subject's time and word, STOP that stops, the opt-out that outlives erasure,
-- callbacks that never wedge, and audit tables that refuse to be rewritten.

-- An integration is linked to a subject when it registered it, sent to it, recorded consent
-- for it or received its inbound message; only linked integrations see the subject (admin sees
-- every subject). Pseudonymous (two random ids), kept after erasure so an erased subject
-- answers 410 to those who knew it and 404 to everyone else. Never removed: a link once made
-- stays true, which lets nodes cache it.
CREATE TABLE subject_links (
    subject_id      TEXT    NOT NULL REFERENCES subjects (id),
    integration_id  TEXT    NOT NULL REFERENCES integrations (id),
    reason          TEXT    NOT NULL CHECK (reason IN ('registered', 'messaged', 'consent',
                              'inbound', 'lookup', 'rights_request')),
    linked_at       INTEGER NOT NULL,
    PRIMARY KEY (subject_id, integration_id)
) STRICT, WITHOUT ROWID;

INSERT OR IGNORE INTO subject_links (subject_id, integration_id, reason, linked_at)
    SELECT subject_id, integration_id, 'messaged', MIN(created_at) FROM messages
    GROUP BY subject_id, integration_id;
INSERT OR IGNORE INTO subject_links (subject_id, integration_id, reason, linked_at)
    SELECT subject_id, integration_id, 'consent', MIN(recorded_at) FROM consent_events
    WHERE integration_id IS NOT NULL GROUP BY subject_id, integration_id;
INSERT OR IGNORE INTO subject_links (subject_id, integration_id, reason, linked_at)
    SELECT subject_id, integration_id, 'rights_request', MIN(created_at) FROM rights_requests
    WHERE subject_id IS NOT NULL GROUP BY subject_id, integration_id;

-- Who made a consent event: the subject (a keyword, a button, a confirmation, an opt-in code,
-- WhatsApp's own control), an integration (the API, a double opt-in request) or Herald
-- (expiry, a lapse on rectification). Only the subject reopens what the subject closed.
-- Whether the event changed the standing: one older than the record's latest effective event
-- is kept as history but changes nothing (events arrive out of order).
DROP TRIGGER consent_events_append_only_update;
DROP TRIGGER consent_events_append_only_delete;
ALTER TABLE consent_events ADD COLUMN origin TEXT NOT NULL DEFAULT 'integration'
    CHECK (origin IN ('subject', 'integration', 'system'));
ALTER TABLE consent_events ADD COLUMN effective INTEGER NOT NULL DEFAULT 1
    CHECK (effective IN (0, 1));
UPDATE consent_events SET origin = 'subject'
    WHERE method IN ('inbound_keyword', 'provider_preference')
       OR (method = 'double_opt_in' AND state = 'granted');
UPDATE consent_events SET origin = 'system' WHERE method = 'system';
CREATE TRIGGER consent_events_append_only_update BEFORE UPDATE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent_events is append-only');
END;
CREATE TRIGGER consent_events_append_only_delete BEFORE DELETE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent_events is append-only');
END;

-- The standing's event time (when the latest effective event happened, by the evidence or the
-- provider's clock) and whether the subject made it.
ALTER TABLE consents ADD COLUMN effective_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE consents ADD COLUMN by_subject INTEGER NOT NULL DEFAULT 0 CHECK (by_subject IN (0, 1));
UPDATE consents SET
    effective_at = (SELECT MIN(e.captured_at, e.recorded_at) FROM consent_events AS e
                    WHERE e.id = consents.event_id),
    by_subject = (SELECT e.origin = 'subject' FROM consent_events AS e
                  WHERE e.id = consents.event_id);

-- Whether a message was business-initiated (a template outside a window the subject opened):
-- delivery re-checks the channel opt-in such a message relied on.
ALTER TABLE messages ADD COLUMN business_initiated INTEGER NOT NULL DEFAULT 0
    CHECK (business_initiated IN (0, 1));

-- Opt-outs that outlive erasure: only the blind index of the number, the channel and the date
-- (the minimum needed to honour the objection, GDPR Art. 21(3) with 17(3)(b)). A subject later
-- created for that number starts opted out.
CREATE TABLE suppressions (
    phone_index   BLOB    NOT NULL,
    channel       TEXT    NOT NULL,
    opted_out_at  INTEGER NOT NULL,
    recorded_at   INTEGER NOT NULL,
    PRIMARY KEY (phone_index, channel)
) STRICT, WITHOUT ROWID;

-- Callbacks that keep failing are dead-lettered with their reason instead of being retried
-- forever, and purged after the inbox retention like every stored callback.
ALTER TABLE provider_inbox ADD COLUMN dead_at INTEGER;
ALTER TABLE provider_inbox ADD COLUMN dead_reason TEXT;
ALTER TABLE provider_inbox ADD COLUMN purge_at INTEGER;
UPDATE provider_inbox SET purge_at = received_at + 30 * 86400000;
DROP INDEX provider_inbox_due;
CREATE INDEX provider_inbox_due ON provider_inbox (due_at) WHERE dead_at IS NULL;
CREATE INDEX provider_inbox_purge ON provider_inbox (purge_at);

-- The audit tables refuse to be rewritten: sealed entries and checkpoints are never updated;
-- sealed entries are deleted only behind a signed horizon (retention); pending entries only
-- once sealed (the sealer moves `sealed_through` forward in the transaction that seals them).
-- SQLite reuses the ids of an emptied rowid table (the sealer empties audit_pending on every
-- pass), so ids alone cannot tell sealed from unsealed here (AUTOINCREMENT would, at one more
-- page written per commit): the sealer opens a gate (`open`) in the transaction that seals and
-- closes it before committing; outside it no pending entry can be deleted.
CREATE TABLE audit_seal_mark (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    sealed_through  INTEGER NOT NULL,
    open            INTEGER NOT NULL DEFAULT 0 CHECK (open IN (0, 1))
) STRICT;
INSERT INTO audit_seal_mark (id, sealed_through) VALUES (1, 0);

CREATE TRIGGER audit_seal_mark_forward BEFORE UPDATE ON audit_seal_mark
WHEN new.sealed_through < old.sealed_through OR new.id <> old.id
BEGIN
    SELECT RAISE(ABORT, 'audit_seal_mark only moves forward');
END;
CREATE TRIGGER audit_seal_mark_kept BEFORE DELETE ON audit_seal_mark
BEGIN
    SELECT RAISE(ABORT, 'audit_seal_mark is kept');
END;
CREATE TRIGGER audit_pending_no_update BEFORE UPDATE ON audit_pending
BEGIN
    SELECT RAISE(ABORT, 'audit entries are never changed');
END;
CREATE TRIGGER audit_pending_delete_sealed_only BEFORE DELETE ON audit_pending
WHEN (SELECT open FROM audit_seal_mark WHERE id = 1) = 0
BEGIN
    SELECT RAISE(ABORT, 'an unsealed audit entry cannot be deleted');
END;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit entries are never changed');
END;
CREATE TRIGGER audit_log_delete_behind_horizon BEFORE DELETE ON audit_log
WHEN old.seq > COALESCE((SELECT MAX(seq) FROM audit_checkpoints WHERE kind = 'horizon'), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit entries are deleted only behind a signed horizon');
END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are never changed');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are never deleted');
END;
