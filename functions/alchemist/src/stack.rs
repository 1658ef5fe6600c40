//! The embedded stack: the real pipeline of four functions on local defaults.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use alchemist_events::{
    broker::{Broker, InMemoryBroker},
    triggers::Routes,
};
use alchemist_notify::webhook::WebhookSecret;
use alchemist_runtime::{
    blob::{BlobStore, DirBlobStore},
    config::{Env, Reader},
    jwt::{DEFAULT_ISSUER, DEFAULT_TTL_SECONDS, JwtKeys},
    serve::{Readiness, health_routes},
    sql::SqlStore,
    store::Store,
};
use anyhow::Context;
use axum::Router;

/// The variable that names the data directory.
pub const ENV_DATA_DIR: &str = "ALCHEMIST_DATA_DIR";

/// Name of the Trigger that routes uploads to convert.
const CONVERT_TRIGGER: &str = "convert-on-video-uploaded";

/// Settings of the embedded stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub data_dir: PathBuf,
    /// Conversions run at once; the convert Trigger's parallelism in this process.
    pub parallelism: usize,
    pub convert: alchemist_convert::Config,
    pub upload: alchemist_upload::Config,
    /// Lets webhooks reach private and loopback addresses.
    pub allow_private_webhooks: bool,
    /// `JWT_SECRET`, when set; otherwise a secret kept in the data directory.
    pub jwt_secret: Option<String>,
    /// `WEBHOOK_SECRET`, when set; otherwise a secret kept in the data directory.
    pub webhook_secret: Option<String>,
    /// Sends the `video.uploaded` event of every queued job again at start.
    /// The in-process broker keeps events in memory only, so the events of
    /// jobs queued when the last process stopped are gone. Only the server
    /// (`alchemist dev`) sets it: a one-off command must not touch jobs that
    /// another process on the same data directory is running.
    pub resume_queued_jobs: bool,
    /// Skips flushing blobs to disk, because they are transient copies of
    /// the user's own files (`alchemist convert` removes them once the MP3 is
    /// written).
    pub transient_blobs: bool,
}

impl StackOptions {
    /// Reads the options from the environment: the data directory from
    /// `ALCHEMIST_DATA_DIR` (default: the platform's data directory), and the
    /// functions' own variables.
    ///
    /// # Errors
    ///
    /// Every invalid variable, listed.
    pub fn from_env(env: &dyn Env) -> anyhow::Result<StackOptions> {
        let mut reader = Reader::new(env);
        let data_dir = match reader.optional(ENV_DATA_DIR) {
            Some(dir) => PathBuf::from(dir),
            None => dirs::data_dir()
                .map(|dir| dir.join("audio-alchemist"))
                .context("no data directory is known for this platform; set ALCHEMIST_DATA_DIR")?,
        };
        let convert = alchemist_convert::Config::read(&mut reader);
        let upload = alchemist_upload::Config::read(&mut reader);
        let allow_private_webhooks = reader.flag("WEBHOOK_ALLOW_PRIVATE");
        let jwt_secret = reader.optional("JWT_SECRET");
        let webhook_secret = reader.optional("WEBHOOK_SECRET");
        reader.finish()?;
        Ok(StackOptions {
            data_dir,
            parallelism: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
            convert,
            upload,
            allow_private_webhooks,
            jwt_secret,
            webhook_secret,
            resume_queued_jobs: false,
            transient_blobs: false,
        })
    }
}

/// The four functions wired to SQLite, a blob directory and the in-process broker.
pub struct Stack {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub broker: InMemoryBroker,
    pub keys: Arc<JwtKeys>,
    pub webhook_secret: WebhookSecret,
    /// The upload function's router, as a client reaches it.
    pub upload: Router,
    /// login and upload on one router, with health routes, for `alchemist dev`.
    pub public: Router,
    pub data_dir: PathBuf,
    /// Stops the outbox relay and the webhook retries.
    background: tokio_util::sync::CancellationToken,
    background_tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Stack {
    /// Opens (and creates) the data directory and starts the functions in it.
    ///
    /// # Errors
    ///
    /// When the directory, the database or the secrets cannot be created or read.
    pub async fn open(options: StackOptions) -> anyhow::Result<Stack> {
        let data_dir = options.data_dir.clone();
        tokio::fs::create_dir_all(&data_dir)
            .await
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;

        let database = data_dir.join("alchemist.db");
        let url = format!("sqlite://{}?mode=rwc", database.display());
        let store: Arc<dyn Store> = Arc::new(
            SqlStore::connect(&url)
                .await
                .with_context(|| format!("cannot open the database {}", database.display()))?,
        );
        let mut dir_blobs = DirBlobStore::open(data_dir.join("blobs")).await?;
        if options.transient_blobs {
            dir_blobs = dir_blobs.without_flush();
        }
        let blobs: Arc<dyn BlobStore> = Arc::new(dir_blobs);

        let secrets = Stack::secrets(&options).await?;
        let keys = Arc::new(JwtKeys::new(
            secrets.jwt.as_bytes(),
            DEFAULT_ISSUER,
            DEFAULT_ISSUER,
            DEFAULT_TTL_SECONDS,
        ));
        let webhook_text = secrets.webhook;
        let webhook_secret = WebhookSecret::parse(&webhook_text).map_err(anyhow::Error::msg)?;

        let overrides = HashMap::from([(CONVERT_TRIGGER.to_owned(), options.parallelism.max(1))]);
        let broker = InMemoryBroker::new(Routes::embedded(), &overrides);
        let shared_broker: Arc<dyn Broker> = Arc::new(broker.clone());

        let upload_state = alchemist_upload::AppState {
            store: store.clone(),
            blobs: blobs.clone(),
            broker: shared_broker,
            keys: keys.clone(),
            config: Arc::new(options.upload),
        };
        let convert_lease = options.convert.lease;
        let convert_state = alchemist_convert::AppState {
            store: store.clone(),
            blobs: blobs.clone(),
            config: Arc::new(options.convert),
        };
        let notify_state = alchemist_notify::AppState {
            store: store.clone(),
            config: Arc::new(alchemist_notify::Config {
                secret: webhook_secret.clone(),
                allow_private: options.allow_private_webhooks,
                timeout: std::time::Duration::from_secs(10),
                retry: alchemist_notify::queue::RetryPolicy::default(),
            }),
        };
        let login_state = alchemist_login::AppState {
            store: store.clone(),
            keys: keys.clone(),
            limiter: Arc::new(alchemist_login::limiter::FailureLimiter::new()),
        };

        // The broker reaches each function by its Knative Service name.
        broker.subscribe("convert", alchemist_convert::app(convert_state));
        broker.subscribe("notify", alchemist_notify::app(notify_state.clone()));

        let upload = alchemist_upload::app(upload_state.clone());
        let readiness = Readiness {
            store: Some(store.clone()),
            blobs: Some(blobs.clone()),
        };
        let public = alchemist_login::routes(login_state)
            .merge(alchemist_upload::routes(upload_state))
            .merge(health_routes(readiness));

        if options.resume_queued_jobs {
            resume_queued(store.as_ref()).await?;
        }

        let background = tokio_util::sync::CancellationToken::new();
        let relay_config = alchemist_upload::outbox::RelayConfig {
            interval: std::time::Duration::from_secs(1),
            lease: convert_lease,
        };
        let relay_task = tokio::spawn(alchemist_upload::outbox::run_relay(
            store.clone(),
            Arc::new(broker.clone()),
            relay_config,
            background.clone().cancelled_owned(),
        ));
        let retries_task = tokio::spawn(alchemist_notify::queue::run_retries(
            notify_state,
            background.clone().cancelled_owned(),
        ));

        Ok(Stack {
            store,
            blobs,
            broker,
            keys,
            webhook_secret,
            upload,
            public: alchemist_runtime::metrics::record_http(public),
            data_dir,
            background,
            background_tasks: tokio::sync::Mutex::new(vec![relay_task, retries_task]),
        })
    }

    /// The token and webhook secrets: `JWT_SECRET` and `WEBHOOK_SECRET` when
    /// set, otherwise secrets generated once and kept in the data directory.
    ///
    /// # Errors
    ///
    /// When the data directory or a secret file cannot be created or read.
    pub async fn secrets(options: &StackOptions) -> anyhow::Result<crate::services::Secrets> {
        let data_dir = &options.data_dir;
        tokio::fs::create_dir_all(data_dir)
            .await
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let jwt = match &options.jwt_secret {
            Some(secret) => secret.clone(),
            None => {
                kept_secret(&data_dir.join("jwt-secret"), || {
                    hex::encode(rand::random::<[u8; 32]>())
                })
                .await?
            }
        };
        let webhook = match &options.webhook_secret {
            Some(secret) => secret.clone(),
            None => {
                kept_secret(&data_dir.join("webhook-secret"), || {
                    WebhookSecret::generate().to_text()
                })
                .await?
            }
        };
        Ok(crate::services::Secrets { jwt, webhook })
    }

    /// Stops the outbox relay and the webhook retries, then waits for every
    /// event in flight and stops the broker.
    pub async fn shutdown(&self) {
        self.background.cancel();
        for task in self.background_tasks.lock().await.drain(..) {
            let _ = task.await;
        }
        self.broker.shutdown().await;
    }
}

/// Puts a fresh `video.uploaded` event in the outbox for every queued job,
/// for the relay to publish. A job whose first event is still on its way is
/// claimed once and its second event is ignored.
async fn resume_queued(store: &dyn Store) -> anyhow::Result<()> {
    let queued = store
        .jobs_in_status(alchemist_runtime::store::JobStatus::Queued, u32::MAX)
        .await?;
    for job in &queued {
        let event = alchemist_upload::outbox::uploaded_event(job);
        store
            .add_to_outbox(&alchemist_runtime::store::OutboxMessage::new(
                &event, job.id,
            ))
            .await?;
    }
    if !queued.is_empty() {
        tracing::info!(
            jobs = queued.len(),
            "queued jobs from the last run sent to convert again"
        );
    }
    Ok(())
}

/// Reads a secret kept in `path`, or creates it (readable by the owner only).
async fn kept_secret(path: &Path, generate: impl FnOnce() -> String) -> anyhow::Result<String> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let secret = generate();
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    tokio::io::AsyncWriteExt::write_all(&mut file, secret.as_bytes()).await?;
    Ok(secret)
}
