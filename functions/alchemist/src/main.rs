//! `alchemist`: convert videos to MP3 on this machine, or serve every function on one port.

use std::{
    io::{IsTerminal, Read, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use alchemist::{
    batch::{self, BatchOptions, FileOutcome},
    stack::{Stack, StackOptions},
};
use alchemist_runtime::{config::ProcessEnv, jwt::Role, serve, telemetry};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Turn videos into MP3 files with the Audio-Alchemist pipeline.
#[derive(Debug, Parser)]
#[command(name = "alchemist", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert files to MP3 through the whole pipeline, running in this process.
    Convert {
        /// Directory the MP3 files are written to, as <stem>.mp3 (<stem>-2.mp3 and
        /// so on when inputs of one run share a stem).
        #[arg(long, short, default_value = ".")]
        out: PathBuf,
        /// Constant MP3 bitrate in kbit/s (32 to 320); VBR quality 2 when omitted.
        #[arg(long)]
        bitrate: Option<u32>,
        /// Files converted at once [default: the number of CPU cores].
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Replace MP3 files that already exist in the output directory.
        #[arg(long)]
        overwrite: bool,
        /// Video or audio files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Serve login and upload on one port, with convert and notify behind a broker.
    Dev {
        /// TCP port to listen on.
        #[arg(long, short, default_value_t = 8080, env = "PORT")]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Run each function as its own process on MySQL, RabbitMQ and MongoDB
        /// (DATABASE_URL, AMQP_URL, MONGODB_URL), on the next four ports, with
        /// the RabbitMQ dispatcher; the given port routes to them.
        #[arg(long)]
        services: bool,
    },
    /// Serve one function from the environment, as its own container image does.
    Serve {
        /// login, upload, convert, notify, or dispatcher (the RabbitMQ dispatcher).
        #[arg(value_parser = ["login", "upload", "convert", "notify", "dispatcher"])]
        function: String,
    },
    /// Manage user accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input. The user goes
    /// into DATABASE_URL's database when it is set, the embedded one otherwise.
    Add {
        email: String,
        /// Give the user the admin role, which can read every job.
        #[arg(long)]
        admin: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { .. } => telemetry::init_json(),
        Command::Dev { .. } => telemetry::init_text("info,sqlx=warn"),
        _ => telemetry::init_text("warn"),
    }

    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Serve { function } = &cli.command {
        serve_function(function).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut options = StackOptions::from_env(&ProcessEnv)?;
    match cli.command {
        Command::Convert {
            out,
            bitrate,
            jobs,
            overwrite,
            files,
        } => {
            if let Some(jobs) = jobs {
                options.parallelism = jobs.max(1);
            }
            let batch = BatchOptions {
                out_dir: out,
                bitrate_kbps: bitrate,
                overwrite,
            };
            convert(options, batch, files).await
        }
        Command::Dev {
            port,
            host,
            services: false,
        } => dev(options, SocketAddr::new(host, port)).await,
        Command::Dev {
            port,
            host,
            services: true,
        } => dev_services(options, SocketAddr::new(host, port)).await,
        Command::Serve { .. } => unreachable!("handled above"),
        Command::User {
            command: UserCommand::Add { email, admin },
        } => add_user(options, &email, admin).await,
    }
}

async fn convert(
    mut options: StackOptions,
    batch: BatchOptions,
    files: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    options.transient_blobs = true;
    alchemist_convert::media::check_tools().map_err(anyhow::Error::msg)?;
    if let Some(kbps) = batch.bitrate_kbps {
        anyhow::ensure!(
            alchemist_events::catalogue::MP3_BITRATES.contains(&kbps),
            "--bitrate {kbps} is not an MP3 bitrate; use one of {:?}",
            alchemist_events::catalogue::MP3_BITRATES
        );
    }
    tokio::fs::create_dir_all(&batch.out_dir)
        .await
        .with_context(|| {
            format!(
                "cannot create the output directory {}",
                batch.out_dir.display()
            )
        })?;

    let parallelism = options.parallelism;
    let stack = Arc::new(Stack::open(options).await?);
    let total = files.len();
    let progress = std::io::stderr().is_terminal();
    let mut finished = 0;
    if progress {
        eprint!("\rconverting {total} file(s)…");
    }

    let outcomes = batch::convert_all(
        stack.clone(),
        files,
        batch,
        parallelism,
        |_, input, outcome| {
            finished += 1;
            if progress {
                eprint!("\r\x1b[2K");
            }
            let mut stdout = std::io::stdout().lock();
            let _ = match outcome {
                FileOutcome::Converted {
                    mp3,
                    duration_seconds,
                    warnings,
                } => {
                    let note = if warnings.is_empty() {
                        String::new()
                    } else {
                        format!("  warning: {}", warnings.join(", "))
                    };
                    writeln!(stdout, "{}\t{duration_seconds:.3} s{note}", mp3.display())
                }
                FileOutcome::Failed { reason, message } => {
                    writeln!(stdout, "{}\tfailed: {reason}: {message}", input.display())
                }
            };
            let _ = stdout.flush();
            if progress && finished < total {
                eprint!("\r[{finished}/{total}] converting…");
            }
        },
    )
    .await?;
    stack.shutdown().await;

    let failed = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, FileOutcome::Failed { .. }))
        .count();
    if failed > 0 {
        eprintln!("{failed} of {total} file(s) failed");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn dev(mut options: StackOptions, addr: SocketAddr) -> anyhow::Result<ExitCode> {
    alchemist_convert::media::check_tools().map_err(anyhow::Error::msg)?;
    options.resume_queued_jobs = true;
    let stack = Stack::open(options).await?;
    ensure_admin(&stack).await?;
    eprintln!("data directory: {}", stack.data_dir.display());
    eprintln!(
        "webhook signing secret: {} (set WEBHOOK_SECRET to choose one)",
        stack.webhook_secret.to_text()
    );

    serve::serve(stack.public.clone(), addr, serve::shutdown_signal())
        .await
        .with_context(|| {
            format!("cannot serve on {addr}; if the port is in use, choose another with --port")
        })?;
    stack.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn serve_function(function: &str) -> anyhow::Result<()> {
    let shutdown = serve::shutdown_signal();
    match function {
        "login" => alchemist_login::run(&ProcessEnv, shutdown).await,
        "upload" => alchemist_upload::run(&ProcessEnv, shutdown).await,
        "convert" => alchemist_convert::run(&ProcessEnv, shutdown).await,
        "notify" => alchemist_notify::run(&ProcessEnv, shutdown).await,
        "dispatcher" => alchemist_dispatcher::run(&ProcessEnv, shutdown).await,
        other => anyhow::bail!("unknown function {other}"),
    }
}

async fn dev_services(options: StackOptions, addr: SocketAddr) -> anyhow::Result<ExitCode> {
    alchemist_convert::media::check_tools().map_err(anyhow::Error::msg)?;
    let urls = alchemist::services::ServiceUrls::from_env()?;
    let stack_secrets = Stack::secrets(&options).await?;

    let store = alchemist_runtime::sql::SqlStore::connect(&urls.database_url)
        .await
        .context("cannot connect to DATABASE_URL")?;
    ensure_admin_in(&store).await?;

    let program = std::env::current_exe().context("cannot find this program's path")?;
    let processes =
        alchemist::services::start(&program, addr.port(), &urls, &stack_secrets, &[]).await?;
    for (name, url) in &processes.urls {
        eprintln!("{name:8} {url}");
    }
    eprintln!("webhook signing secret: {}", stack_secrets.webhook);
    eprintln!("front port: http://{addr}");

    let served =
        alchemist::services::serve_front(&processes.urls, addr, serve::shutdown_signal()).await;
    processes.stop(serve::SHUTDOWN_GRACE).await;
    served.with_context(|| {
        format!("cannot serve on {addr}; if the port is in use, choose another with --port")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Creates the first admin from `ALCHEMIST_ADMIN_EMAIL` and
/// `ALCHEMIST_ADMIN_PASSWORD`, or with generated credentials printed once.
async fn ensure_admin(stack: &Stack) -> anyhow::Result<()> {
    ensure_admin_in(stack.store.as_ref()).await
}

async fn ensure_admin_in(store: &dyn alchemist_runtime::store::Store) -> anyhow::Result<()> {
    let local_users = u64::from(store.user_by_email(batch::LOCAL_USER).await?.is_some());
    if store.count_users().await? > local_users {
        return Ok(());
    }
    let env_email = std::env::var("ALCHEMIST_ADMIN_EMAIL")
        .ok()
        .filter(|v| !v.is_empty());
    let env_password = std::env::var("ALCHEMIST_ADMIN_PASSWORD")
        .ok()
        .filter(|v| !v.is_empty());
    let generated = env_password.is_none();
    let email = env_email
        .unwrap_or_else(|| "admin@localhost".to_owned())
        .to_lowercase();
    let password = env_password.unwrap_or_else(|| hex::encode(rand::random::<[u8; 12]>()));

    let hash = alchemist_runtime::password::hash(password.clone()).await?;
    store.create_user(&email, &hash, Role::Admin).await?;
    if generated {
        eprintln!(
            "created admin user {email} with password {password} (shown once; set ALCHEMIST_ADMIN_PASSWORD to choose one)"
        );
    } else {
        eprintln!("created admin user {email}");
    }
    Ok(())
}

async fn add_user(options: StackOptions, email: &str, admin: bool) -> anyhow::Result<ExitCode> {
    let email = email.trim().to_lowercase();
    anyhow::ensure!(
        email.contains('@') && email.len() <= 320,
        "{email:?} is not an email address"
    );
    if std::io::stdin().is_terminal() {
        eprint!("password for {email}: ");
    }
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(
        password.chars().count() >= 8,
        "the password must have at least 8 characters"
    );

    // DATABASE_URL names a deployment's database; otherwise the embedded one.
    let store: std::sync::Arc<dyn alchemist_runtime::store::Store> =
        match std::env::var("DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
        {
            Some(url) => std::sync::Arc::new(
                alchemist_runtime::sql::SqlStore::connect(&url)
                    .await
                    .context("cannot connect to DATABASE_URL")?,
            ),
            None => Stack::open(options).await?.store.clone(),
        };
    let hash = alchemist_runtime::password::hash(password).await?;
    let role = if admin { Role::Admin } else { Role::User };
    match store.create_user(&email, &hash, role).await {
        Ok(user) => {
            eprintln!(
                "created user {} ({}) with the {} role",
                user.email,
                user.id,
                role.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(alchemist_runtime::Error::Conflict(_)) => {
            anyhow::bail!("a user with the email {email} already exists")
        }
        Err(err) => Err(err.into()),
    }
}
