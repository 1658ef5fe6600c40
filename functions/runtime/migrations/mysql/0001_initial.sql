-- Users, jobs, webhook deliveries and processed event ids (MySQL, MariaDB).
-- Times are Unix milliseconds; ids are UUID text.

CREATE TABLE users (
    id            VARCHAR(36)  NOT NULL PRIMARY KEY,
    email         VARCHAR(320) NOT NULL UNIQUE,
    password_hash TEXT         NOT NULL,
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
    callback_url     TEXT,
    audio_id         VARCHAR(64),
    audio_size       BIGINT,
    duration_seconds DOUBLE,
    warnings         VARCHAR(255) NOT NULL DEFAULT '',
    failure_reason   VARCHAR(32),
    failure_message  TEXT,
    attempts         BIGINT       NOT NULL DEFAULT 0,
    created_at       BIGINT       NOT NULL,
    updated_at       BIGINT       NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    INDEX jobs_owner_created (owner_id, created_at),
    FOREIGN KEY (owner_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE webhook_deliveries (
    id           VARCHAR(36)  NOT NULL PRIMARY KEY,
    job_id       VARCHAR(36)  NOT NULL,
    event_id     VARCHAR(255) NOT NULL,
    url          TEXT         NOT NULL,
    outcome      VARCHAR(16)  NOT NULL,
    status_code  BIGINT,
    error        TEXT,
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
