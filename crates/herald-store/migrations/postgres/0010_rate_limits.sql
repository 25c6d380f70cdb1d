-- Rate limits (issue 15): an integration's own credential rate, set at run time with
-- PATCH /v1/integrations/{id}; NULL: the configured default applies.
ALTER TABLE integrations ADD COLUMN rate_per_minute BIGINT;
ALTER TABLE integrations ADD COLUMN rate_burst BIGINT;
