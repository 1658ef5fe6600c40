-- Webhooks waiting for their receiver, with their own retry schedule, so that
-- a receiver that is down or a notify process that dies loses none.
-- `next_attempt_at` doubles as a lease: a sender that takes a webhook moves it
-- past the end of its request, so no other sender takes it meanwhile.

CREATE TABLE webhooks (
    webhook_id      TEXT    NOT NULL PRIMARY KEY,
    job_id          TEXT    NOT NULL REFERENCES jobs (id),
    url             TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE INDEX webhooks_due ON webhooks (state, next_attempt_at);
CREATE INDEX webhooks_job ON webhooks (job_id);
