-- Who an incident affected (issue 16): the subjects a credential, integration or route
-- touched in a window, computed from the audit trail. Ids, kinds and times only. A subject's
-- row stays after an erasure (ids are not personal data once the key is shredded), so the
-- breach record keeps its count; notices are never sent to an erased subject.
CREATE TABLE incident_affected (
    incident_id          TEXT    NOT NULL REFERENCES incidents (id),
    subject_id           TEXT    NOT NULL REFERENCES subjects (id),
    -- Comma-separated, sorted: changed, exported, read, sent.
    kinds                TEXT    NOT NULL,
    first_at             INTEGER NOT NULL,
    last_at              INTEGER NOT NULL,
    -- The breach notice sent to the subject through Herald, if any (notify-subjects).
    notice_message_id    TEXT,
    notice_at            INTEGER,
    PRIMARY KEY (incident_id, subject_id)
) STRICT;
