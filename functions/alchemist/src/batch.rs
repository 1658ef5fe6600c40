//! Converting files through the embedded pipeline, as `alchemist convert` does.
//!
//! Each file goes the way an HTTP client's would: a streamed `POST /uploads`
//! to the upload function, the `video.uploaded` event through the in-process
//! broker to convert, and the MP3 back through `GET /jobs/{id}/audio`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use alchemist_runtime::{blob::Bucket, jwt::Role, store::JobStatus};
use anyhow::Context;
use axum::{body::Body, http::Request};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;
use tower::ServiceExt;
use uuid::Uuid;

use crate::stack::Stack;

/// The account that owns the jobs of `alchemist convert`.
pub const LOCAL_USER: &str = "local@alchemist.invalid";

/// The outcome of one file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileOutcome {
    Converted {
        mp3: PathBuf,
        duration_seconds: f64,
        warnings: Vec<String>,
    },
    Failed {
        reason: String,
        message: String,
    },
}

/// Options of one batch.
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    pub out_dir: PathBuf,
    pub bitrate_kbps: Option<u32>,
    /// Replace an MP3 that already exists in the output directory; without
    /// it such a file fails with `output_exists` before any work is done.
    pub overwrite: bool,
}

/// Converts `input` and writes the MP3 into the output directory.
///
/// # Errors
///
/// Only for faults of the pipeline itself; a file that cannot be converted is
/// a [`FileOutcome::Failed`].
pub async fn convert_file(
    stack: &Stack,
    token: &str,
    input: &Path,
    options: &BatchOptions,
    names: &OutputNames,
) -> anyhow::Result<FileOutcome> {
    let mp3 = names.claim(&options.out_dir, input);
    if !options.overwrite && tokio::fs::try_exists(&mp3).await.unwrap_or(true) {
        return Ok(FileOutcome::Failed {
            reason: "output_exists".to_owned(),
            message: format!(
                "{} already exists. Pass --overwrite to replace it, or choose another --out directory.",
                mp3.display()
            ),
        });
    }
    let file = match tokio::fs::File::open(input).await {
        Ok(file) => file,
        Err(err) => {
            return Ok(FileOutcome::Failed {
                reason: "not_found".to_owned(),
                message: format!("cannot open the file: {err}"),
            });
        }
    };
    let file_name = input
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut uri = "/uploads".to_owned();
    if let Some(kbps) = options.bitrate_kbps {
        uri.push_str(&format!("?bitrate_kbps={kbps}"));
    }
    let request = Request::post(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream")
        .header(
            "x-file-name",
            file_name.chars().filter(char::is_ascii).collect::<String>(),
        )
        .body(Body::from_stream(ReaderStream::with_capacity(
            file,
            256 * 1024,
        )))?;
    let response = stack.upload.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        return Ok(FileOutcome::Failed {
            reason: answer["error"].as_str().unwrap_or("rejected").to_owned(),
            message: answer["message"].as_str().unwrap_or_default().to_owned(),
        });
    }
    let job_id: Uuid = answer["job_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .context("the upload response has no job id")?;

    let job = wait_for_job(stack, job_id).await?;
    if job.status == JobStatus::Failed {
        remove_blobs(stack, &job).await;
        return Ok(FileOutcome::Failed {
            reason: job.failure_reason.unwrap_or_else(|| "internal".to_owned()),
            message: job.failure_message.unwrap_or_default(),
        });
    }

    download(stack, token, job_id, &mp3).await?;
    remove_blobs(stack, &job).await;
    Ok(FileOutcome::Converted {
        mp3,
        duration_seconds: job.duration_seconds.unwrap_or_default(),
        warnings: job.warnings,
    })
}

/// Removes the job's copies of the video and the MP3 once the MP3 is written
/// to its destination, so that the data directory keeps job records only.
async fn remove_blobs(stack: &Stack, job: &alchemist_runtime::store::Job) {
    let blobs = [
        (Bucket::Videos, Some(&job.video_id)),
        (Bucket::Audio, job.audio_id.as_ref()),
    ];
    for (bucket, id) in blobs {
        if let Some(id) = id
            && let Err(err) = stack.blobs.delete(bucket, id).await
        {
            tracing::warn!(job_id = %job.id, cause = %err, "cannot remove a blob of a finished job");
        }
    }
}

/// Polls the job until it is done or failed. Every job ends: a conversion
/// has a time limit, and an event that cannot be delivered is dead-lettered,
/// which fails the job.
async fn wait_for_job(
    stack: &Stack,
    job_id: Uuid,
) -> anyhow::Result<alchemist_runtime::store::Job> {
    let mut delay = Duration::from_millis(5);
    loop {
        let job = stack
            .store
            .job(job_id)
            .await?
            .context("the job disappeared")?;
        if job.status.is_final() {
            return Ok(job);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// Streams the job's MP3 into `path`, through a temporary name so that an
/// interrupted download leaves no half file under the final name.
async fn download(stack: &Stack, token: &str, job_id: Uuid, path: &Path) -> anyhow::Result<()> {
    let request = Request::get(format!("/jobs/{job_id}/audio"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())?;
    let response = stack.upload.clone().oneshot(request).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "downloading the MP3 failed with {}",
        response.status()
    );

    let partial = path.with_extension("mp3.part");
    let result = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                file.write_all(&data).await?;
            }
        }
        file.sync_all().await?;
        tokio::fs::rename(&partial, path)
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

/// Hands out output names, `<stem>.mp3`, adding `-2`, `-3`… when two inputs
/// of one batch share a stem.
#[derive(Debug, Default)]
pub struct OutputNames {
    taken: Mutex<HashSet<PathBuf>>,
}

impl OutputNames {
    pub fn claim(&self, out_dir: &Path, input: &Path) -> PathBuf {
        let stem = input
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "audio".into());
        let mut taken = self.taken.lock().expect("name lock is not poisoned");
        let mut candidate = out_dir.join(format!("{stem}.mp3"));
        let mut counter = 2;
        while taken.contains(&candidate) {
            candidate = out_dir.join(format!("{stem}-{counter}.mp3"));
            counter += 1;
        }
        taken.insert(candidate.clone());
        candidate
    }
}

/// Returns a token for the local account, creating the account on first use.
///
/// # Errors
///
/// When the database fails.
pub async fn local_token(stack: &Stack) -> anyhow::Result<String> {
    let user = match stack.store.user_by_email(LOCAL_USER).await? {
        Some(user) => user,
        None => {
            // This account is never used to log in, so its password is random and discarded.
            let password = hex::encode(rand::random::<[u8; 24]>());
            let hash = alchemist_runtime::password::hash(password).await?;
            match stack.store.create_user(LOCAL_USER, &hash, Role::User).await {
                Ok(user) => user,
                Err(alchemist_runtime::Error::Conflict(_)) => stack
                    .store
                    .user_by_email(LOCAL_USER)
                    .await?
                    .context("the local user disappeared")?,
                Err(err) => return Err(err.into()),
            }
        }
    };
    Ok(stack.keys.issue(&user.id, &user.email, user.role).0)
}

/// Converts every input, at most `parallelism` at once, and calls `report`
/// with each outcome in input order as soon as it is known.
///
/// # Errors
///
/// When the pipeline itself fails.
pub async fn convert_all(
    stack: Arc<Stack>,
    inputs: Vec<PathBuf>,
    options: BatchOptions,
    parallelism: usize,
    mut report: impl FnMut(usize, &Path, &FileOutcome),
) -> anyhow::Result<Vec<FileOutcome>> {
    let token = Arc::new(local_token(&stack).await?);
    let names = Arc::new(OutputNames::default());
    let options = Arc::new(options);

    let mut outcomes = Vec::with_capacity(inputs.len());
    let jobs = inputs.iter().cloned().enumerate().map(|(index, input)| {
        let (stack, token, names, options) =
            (stack.clone(), token.clone(), names.clone(), options.clone());
        async move {
            let outcome = convert_file(&stack, &token, &input, &options, &names).await;
            (index, input, outcome)
        }
    });
    let results = futures::StreamExt::buffered(futures::stream::iter(jobs), parallelism.max(1));
    futures::pin_mut!(results);
    while let Some((index, input, outcome)) = futures::StreamExt::next(&mut results).await {
        let outcome = outcome.with_context(|| format!("converting {}", input.display()))?;
        report(index, &input, &outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
