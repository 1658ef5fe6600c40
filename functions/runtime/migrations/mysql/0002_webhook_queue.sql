-- Webhooks waiting for their receiver, with their own retry schedule, so that
-- a receiver that is down or a notify process that dies loses none.
-- `next_attempt_at` doubles as a lease: a sender that takes a webhook moves it
-- past the end of its request, so no other sender takes it meanwhile.

CREATE TABLE webhooks (
    webhook_id      VARCHAR(255)  NOT NULL PRIMARY KEY,
    job_id          VARCHAR(36)   NOT NULL,
    url             VARCHAR(2048) NOT NULL,
    body            VARCHAR(8000) NOT NULL,
    state           VARCHAR(16)   NOT NULL,
    attempts        BIGINT        NOT NULL DEFAULT 0,
    next_attempt_at BIGINT        NOT NULL,
    last_error      VARCHAR(1024),
    created_at      BIGINT        NOT NULL,
    updated_at      BIGINT        NOT NULL,
    INDEX webhooks_due (state, next_attempt_at),
    INDEX webhooks_job (job_id),
    FOREIGN KEY (job_id) REFERENCES jobs (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
