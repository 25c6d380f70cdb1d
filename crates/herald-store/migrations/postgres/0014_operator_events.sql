-- Events about no one person (issue 16: `incident.deadline`, to the operator's own endpoints)
-- go through the same outbox as the events about a subject: `subject_id` may now be null.
ALTER TABLE webhook_deliveries ALTER COLUMN subject_id DROP NOT NULL;
