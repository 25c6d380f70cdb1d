-- Foundation: keys, subjects, integrations, API keys.
-- Times are milliseconds since the Unix epoch (UTC), as on SQLite, so both backends share
-- one code path.

-- The system data key, wrapped under a root key. One row, name 'system'.
CREATE TABLE system_keys (
    name          TEXT    PRIMARY KEY,
    root_version  BIGINT  NOT NULL,
    wrapped_key   BYTEA   NOT NULL,
    created_at    BIGINT  NOT NULL,
    rewrapped_at  BIGINT
);

-- Data subjects. The phone number exists only as ciphertext (under the subject's data key)
-- and as a blind index (HMAC) for look-ups; both become NULL when the subject is erased.
CREATE TABLE subjects (
    id                TEXT    PRIMARY KEY,
    phone_index       BYTEA   UNIQUE,
    phone_ciphertext  BYTEA,
    created_at        BIGINT  NOT NULL,
    restricted        BOOLEAN NOT NULL DEFAULT FALSE,
    last_inbound_at   BIGINT,
    erased_at         BIGINT
);

-- One data key per subject, wrapped under a root key. Deleting the row is crypto-shredding.
CREATE TABLE subject_keys (
    subject_id    TEXT    PRIMARY KEY REFERENCES subjects (id),
    root_version  BIGINT  NOT NULL,
    wrapped_key   BYTEA   NOT NULL,
    created_at    BIGINT  NOT NULL,
    rewrapped_at  BIGINT
);
CREATE INDEX subject_keys_by_root_version ON subject_keys (root_version);

CREATE TABLE integrations (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL
);

-- API keys: only a keyed hash of the token is stored.
CREATE TABLE api_keys (
    id              TEXT    PRIMARY KEY,
    integration_id  TEXT    NOT NULL REFERENCES integrations (id),
    token_hash      BYTEA   NOT NULL UNIQUE,
    prefix          TEXT    NOT NULL,
    scopes          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    last_used_at    BIGINT
);
CREATE INDEX api_keys_by_integration ON api_keys (integration_id, id);
