-- OAuth 2.0 for integrations (issue 15): clients, access-token signing keys, revocations, and
-- the generation every node compares to know when to re-read them (ADR 0014).

-- A revoked integration keeps its row (the audit trail names it); none of its credentials
-- authenticate again.
ALTER TABLE integrations ADD COLUMN revoked_at INTEGER;

-- Only a keyed hash of a client's secret is stored; for private_key_jwt only its public JWK.
CREATE TABLE oauth_clients (
    id              TEXT    PRIMARY KEY,
    integration_id  TEXT    NOT NULL REFERENCES integrations (id),
    name            TEXT    NOT NULL,
    auth_method     TEXT    NOT NULL CHECK (auth_method IN
                              ('client_secret_basic', 'client_secret_post', 'private_key_jwt')),
    scopes          TEXT    NOT NULL,
    secret_hash     BLOB,
    jwk             TEXT,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    CHECK ((auth_method = 'private_key_jwt') = (jwk IS NOT NULL AND secret_hash IS NULL))
) STRICT;
CREATE INDEX oauth_clients_by_integration ON oauth_clients (integration_id, id);

-- The private half (encrypted under the system key) is dropped when a key is retired.
CREATE TABLE oauth_signing_keys (
    kid                     TEXT    PRIMARY KEY,
    public_key              BLOB    NOT NULL,
    private_key_ciphertext  BLOB,
    created_at              INTEGER NOT NULL,
    retired_at              INTEGER,
    verify_until            INTEGER
) STRICT;

-- Revoked tokens, until they would have expired anyway.
CREATE TABLE oauth_revoked_tokens (
    token_id    TEXT    PRIMARY KEY,
    client_id   TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX oauth_revoked_tokens_by_expiry ON oauth_revoked_tokens (expires_at);

-- The ids (hashed) of client assertions seen, until they expire: a second use is a replay.
CREATE TABLE oauth_assertions (
    client_id   TEXT    NOT NULL,
    jti_hash    BLOB    NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti_hash)
) STRICT, WITHOUT ROWID;
CREATE INDEX oauth_assertions_by_expiry ON oauth_assertions (expires_at);

-- Moved forward in the same transaction as every revocation and key change.
CREATE TABLE oauth_generation (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  INTEGER NOT NULL
) STRICT;
INSERT INTO oauth_generation (id, generation) VALUES (1, 0);
