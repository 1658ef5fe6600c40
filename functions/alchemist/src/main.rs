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
        /// Directory the MP3 files are written to, as <stem>.mp3.
        #[arg(long, short, default_value = ".")]
        out: PathBuf,
        /// Constant MP3 bitrate in kbit/s (32 to 320); VBR quality 2 when omitted.
        #[arg(long)]
        bitrate: Option<u32>,
        /// Files converted at once [default: the number of CPU cores].
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Video or audio files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Serve login and upload on one port, with convert and notify behind the in-process broker.
    Dev {
        /// TCP port to listen on.
        #[arg(long, short, default_value_t = 8080, env = "PORT")]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
    },
    /// Manage user accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Add {
        email: String,
        /// Give the user the admin role, which sees every job.
        #[arg(long)]
        admin: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_dev = matches!(cli.command, Command::Dev { .. });
    telemetry::init_text(if is_dev { "info,sqlx=warn" } else { "warn" });

    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut options = StackOptions::from_env(&ProcessEnv)?;
    match cli.command {
        Command::Convert {
            out,
            bitrate,
            jobs,
            files,
        } => {
            if let Some(jobs) = jobs {
                options.parallelism = jobs.max(1);
            }
            convert(options, out, bitrate, files).await
        }
        Command::Dev { port, host } => dev(options, SocketAddr::new(host, port)).await,
        Command::User {
            command: UserCommand::Add { email, admin },
        } => add_user(options, &email, admin).await,
    }
}

async fn convert(
    options: StackOptions,
    out_dir: PathBuf,
    bitrate_kbps: Option<u32>,
    files: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    alchemist_convert::media::check_tools().map_err(anyhow::Error::msg)?;
    if let Some(kbps) = bitrate_kbps {
        anyhow::ensure!(
            alchemist_events::catalogue::MP3_BITRATES.contains(&kbps),
            "--bitrate {kbps} is not an MP3 bitrate; use one of {:?}",
            alchemist_events::catalogue::MP3_BITRATES
        );
    }
    tokio::fs::create_dir_all(&out_dir)
        .await
        .with_context(|| format!("cannot create the output directory {}", out_dir.display()))?;

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
        BatchOptions {
            out_dir,
            bitrate_kbps,
        },
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

async fn dev(options: StackOptions, addr: SocketAddr) -> anyhow::Result<ExitCode> {
    alchemist_convert::media::check_tools().map_err(anyhow::Error::msg)?;
    let stack = Stack::open(options).await?;
    ensure_admin(&stack).await?;
    eprintln!("data directory: {}", stack.data_dir.display());
    eprintln!(
        "webhook signing secret: {} (set WEBHOOK_SECRET to choose one)",
        stack.webhook_secret.to_text()
    );

    serve::serve(stack.public.clone(), addr, serve::shutdown_signal()).await?;
    stack.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Creates the first admin from `ALCHEMIST_ADMIN_EMAIL` and
/// `ALCHEMIST_ADMIN_PASSWORD`, or with generated credentials printed once.
async fn ensure_admin(stack: &Stack) -> anyhow::Result<()> {
    if stack.store.count_users().await?
        > u64::from(
            stack
                .store
                .user_by_email(batch::LOCAL_USER)
                .await?
                .is_some(),
        )
    {
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
    stack.store.create_user(&email, &hash, Role::Admin).await?;
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

    let stack = Stack::open(options).await?;
    let hash = alchemist_runtime::password::hash(password).await?;
    let role = if admin { Role::Admin } else { Role::User };
    match stack.store.create_user(&email, &hash, role).await {
        Ok(user) => {
            eprintln!(
                "created {} user {} ({})",
                role.as_str(),
                user.email,
                user.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(alchemist_runtime::Error::Conflict(_)) => {
            anyhow::bail!("a user with the email {email} already exists")
        }
        Err(err) => Err(err.into()),
    }
}
