-- Users, jobs, webhook deliveries and processed event ids (MySQL, MariaDB).
-- Times are Unix milliseconds; ids are UUID text. Text columns are VARCHAR,
-- not TEXT, because MariaDB reports TEXT as BLOB and sqlx's Any driver then
-- cannot decode it as a string.

CREATE TABLE users (
    id            VARCHAR(36)  NOT NULL PRIMARY KEY,
    email         VARCHAR(320) NOT NULL UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    role          VARCHAR(16)  NOT NULL,
    created_at    BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE jobs (
    id               VARCHAR(36)  NOT NULL PRIMARY KEY,
    owner_id         VARCHAR(36)  NOT NULL,
    status           VARCHAR(16)  NOT NULL,
    file_name        VARCHAR(255) NOT NULL,
    video_id         VARCHAR(64)  NOT NULL,
    video_size       BIGINT       NOT NULL,
    bitrate_kbps     BIGINT,
    callback_url     VARCHAR(2048),
    audio_id         VARCHAR(64),
    audio_size       BIGINT,
    duration_seconds DOUBLE,
    warnings         VARCHAR(255) NOT NULL DEFAULT '',
    failure_reason   VARCHAR(32),
    failure_message  VARCHAR(1024),
    attempts         BIGINT       NOT NULL DEFAULT 0,
    created_at       BIGINT       NOT NULL,
    updated_at       BIGINT       NOT NULL,
    started_at       BIGINT,
    heartbeat_at     BIGINT,
    finished_at      BIGINT,
    INDEX jobs_owner_created (owner_id, created_at),
    INDEX jobs_status_heartbeat (status, heartbeat_at),
    FOREIGN KEY (owner_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE webhook_deliveries (
    id           VARCHAR(36)  NOT NULL PRIMARY KEY,
    job_id       VARCHAR(36)  NOT NULL,
    event_id     VARCHAR(255) NOT NULL,
    url          VARCHAR(2048) NOT NULL,
    outcome      VARCHAR(16)  NOT NULL,
    status_code  BIGINT,
    error        VARCHAR(2048),
    attempted_at BIGINT       NOT NULL,
    INDEX webhook_deliveries_job (job_id),
    FOREIGN KEY (job_id) REFERENCES jobs (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE processed_events (
    consumer     VARCHAR(32)  NOT NULL,
    source       VARCHAR(255) NOT NULL,
    event_id     VARCHAR(255) NOT NULL,
    processed_at BIGINT       NOT NULL,
    PRIMARY KEY (consumer, source, event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Events written in the same transaction as the change they announce, and
-- relayed to the broker afterwards, so that a broker outage loses none.
CREATE TABLE outbox (
    event_id        VARCHAR(255)  NOT NULL PRIMARY KEY,
    job_id          VARCHAR(36)   NOT NULL,
    event_json      VARCHAR(8000) NOT NULL,
    created_at      BIGINT        NOT NULL,
    attempts        BIGINT        NOT NULL DEFAULT 0,
    next_attempt_at BIGINT        NOT NULL,
    sent_at         BIGINT,
    last_error      VARCHAR(1024),
    INDEX outbox_due (sent_at, next_attempt_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
