//! `alchemist dev --services`: every function as its own process on the real
//! services (MySQL, RabbitMQ, MongoDB), plus the RabbitMQ dispatcher, behind
//! one front port.
//!
//! Each child is this program run as `alchemist serve NAME`, with the
//! environment a deployment would give that function. The front port routes
//! `/login` and `/validate` to login and everything else to upload, so the
//! same curl commands work as with plain `alchemist dev`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use tokio::process::{Child, Command};
use tracing::{error, info, warn};

/// The functions started as processes, with their port offset from the front port.
pub const FUNCTIONS: [(&str, u16); 4] =
    [("login", 1), ("upload", 2), ("convert", 3), ("notify", 4)];

/// Variables passed to every child when they are set in this process.
const PASSED_THROUGH: [&str; 14] = [
    "RUST_LOG",
    "PATH",
    "HOME",
    "TMPDIR",
    "WEBHOOK_ALLOW_PRIVATE",
    "WEBHOOK_TIMEOUT_SECONDS",
    "WEBHOOK_MAX_ATTEMPTS",
    "WEBHOOK_RETRY_SECONDS",
    "MAX_UPLOAD_BYTES",
    "CONVERT_TIMEOUT_SECONDS",
    "CONVERT_MAX_DURATION_SECONDS",
    "CONVERT_MAX_OUTPUT_BYTES",
    "CONVERT_WORK_DIR",
    "JOB_LEASE_SECONDS",
];

/// URLs of the real services.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub database_url: String,
    pub mongodb_url: String,
    pub amqp_url: String,
}

impl ServiceUrls {
    /// Reads `DATABASE_URL`, `MONGODB_URL` and `AMQP_URL`, naming every missing one.
    ///
    /// # Errors
    ///
    /// A message listing the missing variables.
    pub fn from_env() -> anyhow::Result<ServiceUrls> {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let (database_url, mongodb_url, amqp_url) =
            (read("DATABASE_URL"), read("MONGODB_URL"), read("AMQP_URL"));
        let missing: Vec<&str> = [
            ("DATABASE_URL", &database_url),
            ("MONGODB_URL", &mongodb_url),
            ("AMQP_URL", &amqp_url),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name)
        .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "--services needs {} set; `eval \"$(scripts/services env)\"` sets them for the local test services",
            missing.join(", ")
        );
        Ok(ServiceUrls {
            database_url: database_url.unwrap_or_default(),
            mongodb_url: mongodb_url.unwrap_or_default(),
            amqp_url: amqp_url.unwrap_or_default(),
        })
    }
}

/// The running children.
pub struct Processes {
    children: Vec<Running>,
    /// Base URL of each function, by name.
    pub urls: HashMap<String, String>,
}

/// One child and what it takes to start it again.
struct Running {
    name: String,
    program: std::path::PathBuf,
    env: Vec<(String, String)>,
    child: Child,
}

/// Builds the environment of one child.
fn child_env(
    name: &str,
    port: u16,
    urls: &ServiceUrls,
    secrets: &Secrets,
    ports: &HashMap<&str, u16>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PORT".to_owned(), port.to_string()),
        // The event routes have no authentication; only this machine may reach them.
        ("BIND_ADDRESS".to_owned(), "127.0.0.1".to_owned()),
        ("DATABASE_URL".to_owned(), urls.database_url.clone()),
    ];
    match name {
        "login" => env.push(("JWT_SECRET".to_owned(), secrets.jwt.clone())),
        "upload" => {
            env.push(("JWT_SECRET".to_owned(), secrets.jwt.clone()));
            env.push(("MONGODB_URL".to_owned(), urls.mongodb_url.clone()));
            env.push(("AMQP_URL".to_owned(), urls.amqp_url.clone()));
        }
        "convert" => env.push(("MONGODB_URL".to_owned(), urls.mongodb_url.clone())),
        "notify" => env.push(("WEBHOOK_SECRET".to_owned(), secrets.webhook.clone())),
        "dispatcher" => {
            env.retain(|(key, _)| key != "DATABASE_URL" && key != "PORT");
            env.push(("AMQP_URL".to_owned(), urls.amqp_url.clone()));
            for (function, port) in ports {
                env.push((
                    format!("SERVICE_URL_{}", function.to_uppercase()),
                    format!("http://127.0.0.1:{port}"),
                ));
            }
        }
        _ => {}
    }
    for key in PASSED_THROUGH {
        if let Ok(value) = std::env::var(key) {
            env.push((key.to_owned(), value));
        }
    }
    env
}

/// The secrets the children share.
#[derive(Clone)]
pub struct Secrets {
    pub jwt: String,
    pub webhook: String,
}

fn spawn(program: &Path, name: &str, env: &[(String, String)]) -> anyhow::Result<Child> {
    let child = Command::new(program)
        .args(["serve", name])
        .env_clear()
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    info!(function = name, pid = child.id(), "started");
    Ok(child)
}

/// Starts every function and the dispatcher, and waits until each is ready.
/// `extra_env` is added to every child's environment, after the rest.
///
/// # Errors
///
/// When a child cannot start, exits early, or is not ready within 60 seconds.
pub async fn start(
    program: &Path,
    front_port: u16,
    urls: &ServiceUrls,
    secrets: &Secrets,
    extra_env: &[(String, String)],
) -> anyhow::Result<Processes> {
    let ports: HashMap<&str, u16> = FUNCTIONS
        .iter()
        .map(|(name, offset)| (*name, front_port + offset))
        .collect();
    let mut processes = Processes {
        children: Vec::new(),
        urls: HashMap::new(),
    };

    let names = FUNCTIONS
        .iter()
        .map(|(name, _)| *name)
        .chain(["dispatcher"]);
    for name in names {
        let port = ports.get(name).copied().unwrap_or(0);
        let mut env = child_env(name, port, urls, secrets, &ports);
        env.extend(extra_env.iter().cloned());
        let child = spawn(program, name, &env)?;
        processes.children.push(Running {
            name: name.to_owned(),
            program: program.to_path_buf(),
            env,
            child,
        });
        if port != 0 {
            processes
                .urls
                .insert(name.to_owned(), format!("http://127.0.0.1:{port}"));
        }
    }
    processes.wait_ready().await?;
    Ok(processes)
}

impl Processes {
    /// Fails when a child has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for running in &mut self.children {
            if let Some(status) = running.child.try_wait()? {
                anyhow::bail!(
                    "{} exited with {status}; its log above gives the cause",
                    running.name
                );
            }
        }
        Ok(())
    }

    /// Waits until every function returns 200 on `/readyz`, for at most 60 seconds.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for (name, url) in self.urls.clone() {
            loop {
                self.check_running()?;
                let ready = client
                    .get(format!("{url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success());
                if ready {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{name} was not ready at {url}/readyz within 60 seconds"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // The dispatcher has no port; give it a moment to fail on bad settings.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.check_running()
    }

    /// Finds a child by its function name.
    fn child_mut(&mut self, name: &str) -> anyhow::Result<&mut Running> {
        self.children
            .iter_mut()
            .find(|running| running.name == name)
            .with_context(|| format!("no process named {name}"))
    }

    /// Kills one child with SIGKILL, as a crash would, without restarting it.
    ///
    /// # Errors
    ///
    /// When no child has that name or the signal cannot be sent.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let running = self.child_mut(name)?;
        running
            .child
            .kill()
            .await
            .with_context(|| format!("cannot kill {name}"))?;
        warn!(function = name, "killed");
        Ok(())
    }

    /// Starts a killed child again and waits until every function is ready.
    ///
    /// # Errors
    ///
    /// When no child has that name or it does not start.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let running = self.child_mut(name)?;
        let _ = running.child.kill().await;
        running.child = spawn(&running.program, name, &running.env)?;
        self.wait_ready().await
    }

    /// Sends SIGTERM to every child and waits up to `grace` for them to drain,
    /// then kills what is left.
    pub async fn stop(mut self, grace: Duration) {
        for running in &self.children {
            if let Some(pid) = running.child.id() {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
                if let Err(err) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
                    warn!(function = %running.name, cause = %err, "cannot send SIGTERM");
                }
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for running in &mut self.children {
            match tokio::time::timeout_at(deadline, running.child.wait()).await {
                Ok(Ok(status)) => info!(function = %running.name, %status, "stopped"),
                Ok(Err(err)) => {
                    error!(function = %running.name, cause = %err, "waiting for the process failed")
                }
                Err(_) => {
                    warn!(function = %running.name, "still running after the grace period; killing it");
                    let _ = running.child.kill().await;
                }
            }
        }
    }
}

/// Routes of the front port: login's paths to login, everything else to upload.
pub fn front_router(urls: &HashMap<String, String>) -> Router {
    let targets = Targets {
        login: urls["login"].clone(),
        upload: urls["upload"].clone(),
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds"),
    };
    Router::new().fallback(forward).with_state(targets)
}

#[derive(Clone)]
struct Targets {
    login: String,
    upload: String,
    client: reqwest::Client,
}

async fn forward(State(targets): State<Targets>, request: Request) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|value| value.as_str().to_owned())
        .unwrap_or_default();
    let base = match request.uri().path() {
        "/login" | "/validate" => &targets.login,
        _ => &targets.upload,
    };
    let url = format!("{base}{path_and_query}");
    if url.parse::<Uri>().is_err() {
        return StatusCode::BAD_REQUEST.into_response();
    }

    let (parts, body) = request.into_parts();
    let mut headers = parts.headers;
    headers.remove(axum::http::header::HOST);
    let outgoing = targets
        .client
        .request(parts.method, &url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    match outgoing.send().await {
        Ok(response) => {
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            answer
                .body(Body::from_stream(response.bytes_stream()))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(err) => {
            warn!(cause = %err, %url, "forwarding failed");
            StatusCode::BAD_GATEWAY.into_response()
        }
    }
}

/// Serves the front port until `shutdown` completes.
///
/// # Errors
///
/// When the port cannot be bound.
pub async fn serve_front(
    urls: &HashMap<String, String>,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    alchemist_runtime::serve::serve(front_router(urls), addr, shutdown).await
}
