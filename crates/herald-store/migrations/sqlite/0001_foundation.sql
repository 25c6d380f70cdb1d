-- Foundation: keys, subjects, integrations, API keys.
-- STRICT tables: SQLite refuses values of the wrong type instead of storing them.
-- Times are milliseconds since the Unix epoch (UTC); booleans are 0/1.

-- The system data key, wrapped under a root key. One row, name 'system'.
CREATE TABLE system_keys (
    name          TEXT    PRIMARY KEY,
    root_version  INTEGER NOT NULL,
    wrapped_key   BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    rewrapped_at  INTEGER
) STRICT;

-- Data subjects. The phone number exists only as ciphertext (under the subject's data key)
-- and as a blind index (HMAC) for look-ups; both become NULL when the subject is erased.
CREATE TABLE subjects (
    id                TEXT    PRIMARY KEY,
    phone_index       BLOB    UNIQUE,
    phone_ciphertext  BLOB,
    created_at        INTEGER NOT NULL,
    restricted        INTEGER NOT NULL DEFAULT 0 CHECK (restricted IN (0, 1)),
    last_inbound_at   INTEGER,
    erased_at         INTEGER
) STRICT;

-- One data key per subject, wrapped under a root key. Deleting the row is crypto-shredding.
CREATE TABLE subject_keys (
    subject_id    TEXT    PRIMARY KEY REFERENCES subjects (id),
    root_version  INTEGER NOT NULL,
    wrapped_key   BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    rewrapped_at  INTEGER
) STRICT;
CREATE INDEX subject_keys_by_root_version ON subject_keys (root_version);

CREATE TABLE integrations (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

-- API keys: only a keyed hash of the token is stored.
CREATE TABLE api_keys (
    id              TEXT    PRIMARY KEY,
    integration_id  TEXT    NOT NULL REFERENCES integrations (id),
    token_hash      BLOB    NOT NULL UNIQUE,
    prefix          TEXT    NOT NULL,
    scopes          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    last_used_at    INTEGER
) STRICT;
CREATE INDEX api_keys_by_integration ON api_keys (integration_id, id);
