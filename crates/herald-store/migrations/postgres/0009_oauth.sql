-- OAuth 2.0 for integrations (issue 15): clients, access-token signing keys, revocations, and
-- the generation every node compares to know when to re-read them (ADR 0014).

-- A revoked integration keeps its row (the audit trail names it); none of its credentials
-- authenticate again.
ALTER TABLE integrations ADD COLUMN revoked_at BIGINT;

-- Only a keyed hash of a client's secret is stored; for private_key_jwt only its public JWK.
CREATE TABLE oauth_clients (
    id              TEXT    PRIMARY KEY,
    integration_id  TEXT    NOT NULL REFERENCES integrations (id),
    name            TEXT    NOT NULL,
    auth_method     TEXT    NOT NULL CHECK (auth_method IN
                              ('client_secret_basic', 'client_secret_post', 'private_key_jwt')),
    scopes          TEXT    NOT NULL,
    secret_hash     BYTEA,
    jwk             TEXT,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    CHECK ((auth_method = 'private_key_jwt') = (jwk IS NOT NULL AND secret_hash IS NULL))
);
CREATE INDEX oauth_clients_by_integration ON oauth_clients (integration_id, id);

-- The private half (encrypted under the system key) is dropped when a key is retired.
CREATE TABLE oauth_signing_keys (
    kid                     TEXT    PRIMARY KEY,
    public_key              BYTEA    NOT NULL,
    private_key_ciphertext  BYTEA,
    created_at              BIGINT NOT NULL,
    retired_at              BIGINT,
    verify_until            BIGINT
);

-- Revoked tokens, until they would have expired anyway.
CREATE TABLE oauth_revoked_tokens (
    token_id    TEXT    PRIMARY KEY,
    client_id   TEXT    NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT NOT NULL
);
CREATE INDEX oauth_revoked_tokens_by_expiry ON oauth_revoked_tokens (expires_at);

-- The ids (hashed) of client assertions seen, until they expire: a second use is a replay.
CREATE TABLE oauth_assertions (
    client_id   TEXT    NOT NULL,
    jti_hash    BYTEA    NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti_hash)
);
CREATE INDEX oauth_assertions_by_expiry ON oauth_assertions (expires_at);

-- Moved forward in the same transaction as every revocation and key change.
CREATE TABLE oauth_generation (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  BIGINT NOT NULL
);
INSERT INTO oauth_generation (id, generation) VALUES (1, 0);
