-- Users, jobs, webhook deliveries and processed event ids (SQLite).
-- Times are Unix milliseconds; ids are UUID text.

CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE jobs (
    id               TEXT    NOT NULL PRIMARY KEY,
    owner_id         TEXT    NOT NULL REFERENCES users (id),
    status           TEXT    NOT NULL,
    file_name        TEXT    NOT NULL,
    video_id         TEXT    NOT NULL,
    video_size       INTEGER NOT NULL,
    bitrate_kbps     INTEGER,
    callback_url     TEXT,
    audio_id         TEXT,
    audio_size       INTEGER,
    duration_seconds REAL,
    warnings         TEXT    NOT NULL DEFAULT '',
    failure_reason   TEXT,
    failure_message  TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    heartbeat_at     INTEGER,
    finished_at      INTEGER
);

CREATE INDEX jobs_owner_created ON jobs (owner_id, created_at);

CREATE TABLE webhook_deliveries (
    id           TEXT    NOT NULL PRIMARY KEY,
    job_id       TEXT    NOT NULL REFERENCES jobs (id),
    event_id     TEXT    NOT NULL,
    url          TEXT    NOT NULL,
    outcome      TEXT    NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    attempted_at INTEGER NOT NULL
);

CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE processed_events (
    consumer     TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, source, event_id)
);

-- Events written in the same transaction as the change they announce, and
-- relayed to the broker afterwards, so that a broker outage loses none.
CREATE TABLE outbox (
    event_id        TEXT    NOT NULL PRIMARY KEY,
    job_id          TEXT    NOT NULL,
    event_json      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER,
    last_error      TEXT
);

CREATE INDEX outbox_due ON outbox (sent_at, next_attempt_at);
CREATE INDEX jobs_status_heartbeat ON jobs (status, heartbeat_at);
