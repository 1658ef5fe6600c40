//! The [`Store`] on SQL through sqlx: SQLite embedded, MySQL (or MariaDB) in production.
//!
//! One implementation serves both backends through sqlx's `Any` driver, so
//! both run the same queries. The queries stick to what both dialects share:
//! `?` placeholders, BIGINT times, no `RETURNING`. Each backend has its own
//! migrations in `functions/runtime/migrations/`, applied at start-up.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    AnyPool, Row,
    any::{AnyPoolOptions, AnyRow},
};
use uuid::Uuid;

use crate::{
    Error,
    jwt::Role,
    now_millis,
    store::{
        Claim, Completion, Job, JobStatus, NewJob, OutboxMessage, QueuedWebhook, Store, User,
        WebhookDelivery, WebhookState,
    },
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// Which SQL dialect a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

impl Backend {
    /// The backend a `sqlite:` or `mysql:` URL names.
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Some(Backend::MySql)
        } else {
            None
        }
    }
}

/// The SQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

impl SqlStore {
    /// Connects to `url` and applies the backend's migrations.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL of another database, [`Error::Database`]
    /// when the connection fails, [`Error::Migration`] when a migration fails.
    pub async fn connect(url: &str) -> Result<SqlStore, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or_else(|| {
            Error::Config("  - DATABASE_URL must start with sqlite: or mysql:".to_owned())
        })?;
        let url = match backend {
            Backend::MySql => url.replacen("mariadb:", "mysql:", 1),
            Backend::Sqlite => url.to_owned(),
        };

        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        options = match backend {
            // SQLite takes one writer at a time; WAL lets readers run beside it.
            Backend::Sqlite => options.max_connections(4).after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            }),
            Backend::MySql => options.max_connections(10),
        };
        let pool = options.connect(&url).await?;

        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::MySql => MYSQL_MIGRATIONS.run(&pool).await?,
        }
        Ok(SqlStore { pool, backend })
    }

    /// Runs a job insert or update that must change exactly one row and, in
    /// the same transaction, puts the event that announces the change in the
    /// outbox. Returns false, and writes nothing, when no row changed.
    async fn change_with_event<'q>(
        &self,
        update: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        event: &OutboxMessage,
        now: i64,
    ) -> Result<bool, Error> {
        let mut transaction = self.pool.begin().await?;
        let updated = update.execute(&mut *transaction).await?.rows_affected();
        if updated != 1 {
            transaction.rollback().await?;
            return Ok(false);
        }
        insert_outbox(event, now).execute(&mut *transaction).await?;
        transaction.commit().await?;
        Ok(true)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

const JOB_COLUMNS: &str = "id, owner_id, status, file_name, video_id, video_size, bitrate_kbps, \
     callback_url, audio_id, audio_size, duration_seconds, warnings, failure_reason, \
     failure_message, attempts, created_at, updated_at, started_at, finished_at";

const INSERT_JOB: &str = "INSERT INTO jobs (id, owner_id, status, file_name, video_id, video_size, bitrate_kbps, \
     callback_url, warnings, attempts, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, '', 0, ?, ?)";

const INSERT_OUTBOX: &str = "INSERT INTO outbox (event_id, job_id, event_json, created_at, attempts, next_attempt_at) VALUES (?, ?, ?, ?, 0, ?)";

fn bind_job<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    job: &'q NewJob,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(job.id.to_string())
        .bind(&job.owner_id)
        .bind(&job.file_name)
        .bind(&job.video_id)
        .bind(to_i64(job.video_size))
        .bind(job.bitrate_kbps.map(i64::from))
        .bind(&job.callback_url)
        .bind(now)
        .bind(now)
}

/// The insert of an outbox event, due at once.
fn insert_outbox(
    event: &OutboxMessage,
    now: i64,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(INSERT_OUTBOX)
        .bind(&event.event_id)
        .bind(event.job_id.to_string())
        .bind(&event.event_json)
        .bind(now)
        .bind(now)
}

/// Builds the update that fails a job which has not ended.
fn fail_job_query<'q>(
    id: Uuid,
    reason: &'q str,
    message: &'q str,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(
        "UPDATE jobs SET status = 'failed', failure_reason = ?, failure_message = ?, updated_at = ?, \
         finished_at = ? WHERE id = ? AND status IN ('queued', 'converting')",
    )
    .bind(reason)
    .bind(message)
    .bind(now)
    .bind(now)
    .bind(id.to_string())
}

fn outbox_from_row(row: &AnyRow) -> Result<OutboxMessage, Error> {
    let job_id: String = row.try_get("job_id")?;
    Ok(OutboxMessage {
        event_id: row.try_get("event_id")?,
        job_id: Uuid::from_str(&job_id)
            .map_err(|err| Error::Corrupt(format!("outbox job id {job_id}: {err}")))?,
        event_json: row.try_get("event_json")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
    })
}

const WEBHOOK_COLUMNS: &str =
    "webhook_id, job_id, url, body, state, attempts, next_attempt_at, last_error";

fn webhook_from_row(row: &AnyRow) -> Result<QueuedWebhook, Error> {
    let job_id: String = row.try_get("job_id")?;
    let state: String = row.try_get("state")?;
    Ok(QueuedWebhook {
        webhook_id: row.try_get("webhook_id")?,
        job_id: Uuid::from_str(&job_id)
            .map_err(|err| Error::Corrupt(format!("webhook job id {job_id}: {err}")))?,
        url: row.try_get("url")?,
        body: row.try_get("body")?,
        state: WebhookState::parse(&state)
            .ok_or_else(|| Error::Corrupt(format!("webhook state {state}")))?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
    })
}

/// Cuts an error text to what its column holds.
fn clip(text: &str) -> String {
    text.chars().take(1000).collect()
}

fn job_from_row(row: &AnyRow) -> Result<Job, Error> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let warnings: String = row.try_get("warnings")?;
    Ok(Job {
        id: Uuid::from_str(&id).map_err(|err| Error::Corrupt(format!("job id {id}: {err}")))?,
        owner_id: row.try_get("owner_id")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("job {id} has status {status}")))?,
        file_name: row.try_get("file_name")?,
        video_id: row.try_get("video_id")?,
        video_size: to_u64(row.try_get("video_size")?),
        bitrate_kbps: row
            .try_get::<Option<i64>, _>("bitrate_kbps")?
            .map(|kbps| u32::try_from(kbps).unwrap_or(0)),
        callback_url: row.try_get("callback_url")?,
        audio_id: row.try_get("audio_id")?,
        audio_size: row.try_get::<Option<i64>, _>("audio_size")?.map(to_u64),
        duration_seconds: row.try_get("duration_seconds")?,
        warnings: warnings
            .split(',')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect(),
        failure_reason: row.try_get("failure_reason")?,
        failure_message: row.try_get("failure_message")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn user_from_row(row: &AnyRow) -> Result<User, Error> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        role: Role::parse(&role).ok_or_else(|| Error::Corrupt(format!("user role {role}")))?,
    })
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, Error> {
        let id = Uuid::new_v4().to_string();
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(email)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now_millis())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(User {
                id,
                email: email.to_owned(),
                password_hash: password_hash.to_owned(),
                role,
            }),
            Err(err) if is_unique_violation(&err) => Err(Error::Conflict("a user with this email")),
            Err(err) => Err(err.into()),
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        let row = sqlx::query("SELECT id, email, password_hash, role FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn count_users(&self) -> Result<u64, Error> {
        let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(to_u64(count))
    }

    async fn create_job(&self, job: NewJob) -> Result<Job, Error> {
        bind_job(sqlx::query(INSERT_JOB), &job, now_millis())
            .execute(&self.pool)
            .await?;
        self.job(job.id).await?.ok_or(Error::NotFound("job"))
    }

    async fn create_job_with_event(
        &self,
        job: NewJob,
        event: &OutboxMessage,
    ) -> Result<Job, Error> {
        let now = now_millis();
        self.change_with_event(bind_job(sqlx::query(INSERT_JOB), &job, now), event, now)
            .await?;
        self.job(job.id).await?.ok_or(Error::NotFound("job"))
    }

    async fn add_to_outbox(&self, event: &OutboxMessage) -> Result<(), Error> {
        insert_outbox(event, now_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn jobs_in_status(&self, status: JobStatus, limit: u32) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? ORDER BY created_at, id LIMIT ?"
        ))
        .bind(status.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn due_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>, Error> {
        let rows = sqlx::query(
            "SELECT event_id, job_id, event_json, attempts FROM outbox \
             WHERE sent_at IS NULL AND next_attempt_at <= ? ORDER BY created_at, event_id LIMIT ?",
        )
        .bind(now_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn outbox_sent(&self, event_id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE event_id = ?")
            .bind(now_millis())
            .bind(event_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn outbox_retry_later(
        &self,
        event_id: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), Error> {
        let error = clip(error);
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? \
             WHERE event_id = ? AND sent_at IS NULL",
        )
        .bind(next_attempt_at)
        .bind(error)
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn stale_jobs(&self, stale_before: i64, limit: u32) -> Result<Vec<Job>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'converting' AND heartbeat_at < ? ORDER BY heartbeat_at LIMIT ?"
        ))
        .bind(stale_before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn requeue_stale_job(
        &self,
        id: Uuid,
        stale_before: i64,
        event: &OutboxMessage,
    ) -> Result<bool, Error> {
        let now = now_millis();
        let requeue = sqlx::query(
            "UPDATE jobs SET status = 'queued', updated_at = ? WHERE id = ? AND status = 'converting' AND heartbeat_at < ?",
        )
        .bind(now)
        .bind(id.to_string())
        .bind(stale_before);
        self.change_with_event(requeue, event, now).await
    }

    async fn heartbeat(&self, id: Uuid) -> Result<(), Error> {
        sqlx::query("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'converting'")
            .bind(now_millis())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn job(&self, id: Uuid) -> Result<Option<Job>, Error> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs(&self, owner_id: Option<&str>, limit: u32) -> Result<Vec<Job>, Error> {
        let rows = match owner_id {
            Some(owner) => {
                sqlx::query(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE owner_id = ? ORDER BY created_at DESC, id LIMIT ?"
                ))
                .bind(owner)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT ?"))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(job_from_row).collect()
    }

    async fn claim_job(&self, id: Uuid, lease_millis: i64) -> Result<Claim, Error> {
        let now = now_millis();
        let claimed = sqlx::query(
            "UPDATE jobs SET status = 'converting', attempts = attempts + 1, started_at = ?, heartbeat_at = ?, \
             updated_at = ? WHERE id = ? AND (status = 'queued' OR (status = 'converting' AND heartbeat_at < ?))",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(id.to_string())
        .bind(now - lease_millis)
        .execute(&self.pool)
        .await?
        .rows_affected();

        let job = self.job(id).await?.ok_or(Error::NotFound("job"))?;
        if claimed == 1 {
            return Ok(Claim::Started {
                attempt: job.attempts,
            });
        }
        if job.status.is_final() {
            return Ok(Claim::Finished(job.status));
        }
        Ok(Claim::Busy)
    }

    async fn complete_job(&self, id: Uuid, completion: &Completion) -> Result<bool, Error> {
        let now = now_millis();
        let updated = sqlx::query(
            "UPDATE jobs SET status = 'done', audio_id = ?, audio_size = ?, duration_seconds = ?, \
             warnings = ?, updated_at = ?, finished_at = ? WHERE id = ? AND status = 'converting'",
        )
        .bind(&completion.audio_id)
        .bind(to_i64(completion.audio_size))
        .bind(completion.duration_seconds)
        .bind(completion.warnings.join(","))
        .bind(now)
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn release_job(&self, id: Uuid) -> Result<(), Error> {
        sqlx::query("UPDATE jobs SET status = 'queued', updated_at = ? WHERE id = ? AND status = 'converting'")
            .bind(now_millis())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn fail_job(&self, id: Uuid, reason: &str, message: &str) -> Result<bool, Error> {
        let updated = fail_job_query(id, reason, message, now_millis())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(updated == 1)
    }

    async fn fail_job_with_event(
        &self,
        id: Uuid,
        reason: &str,
        message: &str,
        event: &OutboxMessage,
    ) -> Result<bool, Error> {
        let now = now_millis();
        self.change_with_event(fail_job_query(id, reason, message, now), event, now)
            .await
    }

    async fn enqueue_webhook(
        &self,
        job_id: Uuid,
        webhook_id: &str,
        url: &str,
        body: &str,
    ) -> Result<bool, Error> {
        let now = now_millis();
        let inserted = sqlx::query(
            "INSERT INTO webhooks (webhook_id, job_id, url, body, state, attempts, next_attempt_at, \
             created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        )
        .bind(webhook_id)
        .bind(job_id.to_string())
        .bind(url)
        .bind(body)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(err) if is_unique_violation(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    async fn due_webhooks(&self, limit: u32) -> Result<Vec<QueuedWebhook>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE state = 'pending' AND next_attempt_at <= ? \
             ORDER BY next_attempt_at, webhook_id LIMIT ?"
        ))
        .bind(now_millis())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn take_webhook(
        &self,
        webhook_id: &str,
        lease_until: i64,
    ) -> Result<Option<QueuedWebhook>, Error> {
        let now = now_millis();
        let leased = sqlx::query(
            "UPDATE webhooks SET attempts = attempts + 1, next_attempt_at = ?, updated_at = ? \
             WHERE webhook_id = ? AND state = 'pending' AND next_attempt_at <= ?",
        )
        .bind(lease_until)
        .bind(now)
        .bind(webhook_id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if leased != 1 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?"
        ))
        .bind(webhook_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn webhook_attempted(
        &self,
        webhook_id: &str,
        attempt: u32,
        state: WebhookState,
        next_attempt_at: i64,
        error: Option<&str>,
    ) -> Result<bool, Error> {
        // updated_at always changes, so MySQL counts the row even when the
        // other values stay the same.
        let updated = sqlx::query(
            "UPDATE webhooks SET state = ?, next_attempt_at = ?, last_error = ?, updated_at = ? \
             WHERE webhook_id = ? AND state = 'pending' AND attempts = ?",
        )
        .bind(state.as_str())
        .bind(next_attempt_at)
        .bind(error.map(clip))
        .bind(now_millis())
        .bind(webhook_id)
        .bind(i64::from(attempt))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn webhooks(&self, job_id: Uuid) -> Result<Vec<QueuedWebhook>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE job_id = ? ORDER BY created_at, webhook_id"
        ))
        .bind(job_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn record_delivery(&self, job_id: Uuid, delivery: &WebhookDelivery) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, job_id, event_id, url, outcome, status_code, error, attempted_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(job_id.to_string())
        .bind(&delivery.event_id)
        .bind(&delivery.url)
        .bind(&delivery.outcome)
        .bind(delivery.status_code.map(i64::from))
        .bind(&delivery.error)
        .bind(delivery.attempted_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deliveries(&self, job_id: Uuid) -> Result<Vec<WebhookDelivery>, Error> {
        let rows = sqlx::query(
            "SELECT event_id, url, outcome, status_code, error, attempted_at FROM webhook_deliveries \
             WHERE job_id = ? ORDER BY attempted_at, id",
        )
        .bind(job_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WebhookDelivery {
                    event_id: row.try_get("event_id")?,
                    url: row.try_get("url")?,
                    outcome: row.try_get("outcome")?,
                    status_code: row
                        .try_get::<Option<i64>, _>("status_code")?
                        .and_then(|code| u16::try_from(code).ok()),
                    error: row.try_get("error")?,
                    attempted_at: row.try_get("attempted_at")?,
                })
            })
            .collect()
    }
}
