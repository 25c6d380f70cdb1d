-- Data-subject rights (issue 6): restriction (GDPR Art. 18), legal holds (Art. 17(3)(b),(e)),
-- rectification (Art. 16) and the erasure ledger (Art. 17).

-- When processing was restricted, and why (the reason under the subject's data key: it may
-- name the dispute). `restricted` itself is the flag sends and deliveries check.
ALTER TABLE subjects ADD COLUMN restricted_at INTEGER;
ALTER TABLE subjects ADD COLUMN restriction_reason_ciphertext BLOB;
-- A retention duty that blocks erasure; the reason under the system key.
ALTER TABLE subjects ADD COLUMN legal_hold_at INTEGER;
ALTER TABLE subjects ADD COLUMN legal_hold_reason_ciphertext BLOB;
-- When the contact data was last corrected.
ALTER TABLE subjects ADD COLUMN rectified_at INTEGER;

-- One row per erased subject, never changed or removed: the pseudonymous id, when, and the
-- signed receipt (counts only, no personal data). Re-applied after a restore.
CREATE TABLE erasure_ledger (
    seq         INTEGER PRIMARY KEY,
    subject_id  TEXT    NOT NULL UNIQUE REFERENCES subjects (id),
    erased_at   INTEGER NOT NULL,
    receipt     TEXT    NOT NULL
) STRICT;

CREATE TRIGGER erasure_ledger_append_only_update BEFORE UPDATE ON erasure_ledger
BEGIN
    SELECT RAISE(ABORT, 'erasure_ledger is append-only');
END;
CREATE TRIGGER erasure_ledger_append_only_delete BEFORE DELETE ON erasure_ledger
BEGIN
    SELECT RAISE(ABORT, 'erasure_ledger is append-only');
END;
