-- The provider register (issue 17): each vendor's facts (contracts, certifications, regions,
-- storage mode, deletion support, review dates) as JSON, its status, and every version with
-- who changed it and why. No personal data of data subjects.
CREATE TABLE vendors (
    id          TEXT    PRIMARY KEY,
    status      TEXT    NOT NULL CHECK (status IN ('unreviewed', 'approved', 'suspended')),
    facts       TEXT    NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE vendor_history (
    vendor_id   TEXT    NOT NULL REFERENCES vendors (id),
    version     BIGINT NOT NULL,
    status      TEXT    NOT NULL,
    facts       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (vendor_id, version)
);
