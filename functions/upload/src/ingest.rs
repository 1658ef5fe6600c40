//! `POST /uploads`: stream a video into the blob store and queue its job.
//!
//! Two body forms are accepted:
//! - `multipart/form-data` with the video in a field named `file` and,
//!   optionally, `callback_url` and `bitrate_kbps` fields;
//! - any other content type: the raw video, its name in the `X-File-Name`
//!   header, the options as query parameters (`?callback_url=…&bitrate_kbps=…`).
//!
//! The body is never held in memory: it is copied into the blob store in
//! chunks, and the size limit is checked as the bytes arrive.

use alchemist_events::catalogue::{MP3_BITRATES, VideoUploaded, build_event};
use alchemist_runtime::{
    blob::{BlobMeta, BlobReader, Bucket, StoredBlob},
    jwt::Authenticated,
    store::{NewJob, OutboxMessage},
};
use axum::{
    Json,
    extract::{FromRequest, Multipart, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::StreamReader;
use tracing::info;
use uuid::Uuid;

use crate::{AppState, Error, SOURCE, metrics, outbox::publish_message};

/// Options of a job, from query parameters or multipart fields.
#[derive(Debug, Default, Deserialize)]
pub struct UploadOptions {
    pub callback_url: Option<String>,
    pub bitrate_kbps: Option<String>,
}

/// The answer to an accepted upload.
#[derive(Debug, Serialize, Deserialize)]
pub struct UploadAccepted {
    pub job_id: Uuid,
    pub status: String,
    pub status_url: String,
}

pub(crate) async fn create_upload(
    state: State<AppState>,
    claims: Authenticated,
    query: Query<UploadOptions>,
    request: Request,
) -> Result<impl IntoResponse, Error> {
    let result = queue_upload(state, claims, query, request).await;
    if let Err(err) = &result {
        metrics::record_failed(err);
    }
    result
}

async fn queue_upload(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Query(query): Query<UploadOptions>,
    request: Request,
) -> Result<impl IntoResponse, Error> {
    let job_id = Uuid::new_v4();
    let meta = BlobMeta {
        owner_id: claims.sub.clone(),
        job_id: job_id.to_string(),
        content_type: content_type(request.headers())
            .unwrap_or("application/octet-stream")
            .to_owned(),
    };

    let received = if is_multipart(request.headers()) {
        receive_multipart(&state, &meta, request, query).await?
    } else {
        receive_raw(&state, &meta, request, query).await?
    };
    let Received {
        blob,
        file_name,
        options,
    } = received;

    // Reject bad options after the body, so that no blob outlives the request.
    let (callback_url, bitrate_kbps) = match check_options(&options) {
        Ok(checked) => checked,
        Err(err) => {
            state.blobs.delete(Bucket::Videos, &blob.id).await?;
            return Err(err);
        }
    };
    if blob.size == 0 {
        state.blobs.delete(Bucket::Videos, &blob.id).await?;
        return Err(Error::EmptyUpload);
    }

    let new_job = NewJob {
        id: job_id,
        owner_id: claims.sub.clone(),
        file_name,
        video_id: blob.id.clone(),
        video_size: blob.size,
        bitrate_kbps,
        callback_url,
    };
    let payload = VideoUploaded {
        job_id,
        owner_id: claims.sub.clone(),
        video_id: blob.id.clone(),
        size: blob.size,
        bitrate_kbps,
    };
    // The job and its event are stored together; publishing comes after, so
    // a broker outage only delays the event (see the outbox module).
    let message = OutboxMessage::new(&build_event(SOURCE, &job_id.to_string(), &payload), job_id);
    let job = match state.store.create_job_with_event(new_job, &message).await {
        Ok(job) => job,
        Err(err) => {
            state.blobs.delete(Bucket::Videos, &blob.id).await?;
            return Err(err.into());
        }
    };
    publish_message(state.store.as_ref(), state.broker.as_ref(), &message).await?;
    info!(%job_id, size = blob.size, sha256 = %blob.sha256, "upload accepted");
    metrics::record_accepted(blob.size);

    let status_url = format!("/jobs/{job_id}");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&status_url).expect("a UUID path is a valid header value"),
    );
    Ok((
        StatusCode::ACCEPTED,
        headers,
        Json(UploadAccepted {
            job_id: job.id,
            status: job.status.as_str().to_owned(),
            status_url,
        }),
    ))
}

struct Received {
    blob: StoredBlob,
    file_name: String,
    options: UploadOptions,
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE)?.to_str().ok()
}

fn is_multipart(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|value| {
        value
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    })
}

async fn store_stream(
    state: &AppState,
    meta: &BlobMeta,
    reader: BlobReader<'_>,
) -> Result<StoredBlob, Error> {
    match state
        .blobs
        .put(Bucket::Videos, meta, reader, state.config.max_upload_bytes)
        .await
    {
        Ok(blob) => Ok(blob),
        Err(alchemist_runtime::Error::TooLarge { limit }) => Err(Error::TooLarge { limit }),
        // A body that breaks off or a multipart stream that turns malformed.
        Err(alchemist_runtime::Error::Blob(err))
            if err.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(Error::BadRequest(format!(
                "the upload body could not be read: {err}"
            )))
        }
        Err(err) => Err(err.into()),
    }
}

async fn receive_raw(
    state: &AppState,
    meta: &BlobMeta,
    request: Request,
    options: UploadOptions,
) -> Result<Received, Error> {
    let file_name = request
        .headers()
        .get("x-file-name")
        .and_then(|value| value.to_str().ok())
        .map(clean_file_name)
        .unwrap_or_else(|| "upload".to_owned());
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err));
    let blob = store_stream(state, meta, Box::pin(StreamReader::new(stream))).await?;
    Ok(Received {
        blob,
        file_name,
        options,
    })
}

async fn receive_multipart(
    state: &AppState,
    meta: &BlobMeta,
    request: Request,
    mut options: UploadOptions,
) -> Result<Received, Error> {
    let malformed = |err: axum::extract::multipart::MultipartError| {
        Error::BadRequest(format!(
            "the multipart body is malformed: {}",
            err.body_text()
        ))
    };
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|rejection| {
            Error::BadRequest(format!(
                "the multipart body is malformed: {}",
                rejection.body_text()
            ))
        })?;

    let mut received: Option<(StoredBlob, String)> = None;
    let outcome = async {
        while let Some(field) = multipart.next_field().await.map_err(malformed)? {
            match field.name().unwrap_or_default() {
                "file" if received.is_none() => {
                    let file_name = field
                        .file_name()
                        .map(clean_file_name)
                        .unwrap_or_else(|| "upload".to_owned());
                    let stream = field
                        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err));
                    let blob =
                        store_stream(state, meta, Box::pin(StreamReader::new(stream))).await?;
                    received = Some((blob, file_name));
                }
                "file" => return Err(Error::BadRequest("send one file per upload".to_owned())),
                "callback_url" => options.callback_url = Some(small_text(field).await?),
                "bitrate_kbps" => options.bitrate_kbps = Some(small_text(field).await?),
                other => {
                    return Err(Error::BadRequest(format!(
                        "unknown field {other:?}; expected file, callback_url or bitrate_kbps"
                    )));
                }
            }
        }
        Ok(())
    }
    .await;

    match (outcome, received) {
        (Ok(()), Some((blob, file_name))) => Ok(Received {
            blob,
            file_name,
            options,
        }),
        (Ok(()), None) => Err(Error::BadRequest(
            "the multipart body has no field named file".to_owned(),
        )),
        (Err(err), received) => {
            if let Some((blob, _)) = received {
                state.blobs.delete(Bucket::Videos, &blob.id).await?;
            }
            Err(err)
        }
    }
}

/// Longest text field accepted, in bytes; the route has no overall body limit.
const MAX_TEXT_FIELD_BYTES: usize = 4096;

/// Reads a text field chunk by chunk, rejecting it once it passes
/// [`MAX_TEXT_FIELD_BYTES`] instead of holding all of it in memory.
async fn small_text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, Error> {
    let name = field.name().unwrap_or_default().to_owned();
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|err| {
        Error::BadRequest(format!(
            "the multipart body is malformed: {}",
            err.body_text()
        ))
    })? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
            return Err(Error::BadRequest(format!(
                "the field {name} is longer than {MAX_TEXT_FIELD_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| Error::BadRequest(format!("the field {name} is not UTF-8 text")))
}

/// Checks the callback URL and the bitrate.
fn check_options(options: &UploadOptions) -> Result<(Option<String>, Option<u32>), Error> {
    let callback_url = match options
        .callback_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty())
    {
        None => None,
        Some(text) => {
            let url = url::Url::parse(text).map_err(|err| {
                Error::BadRequest(format!("callback_url is not a valid URL: {err}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(Error::BadRequest(
                    "callback_url must be an http or https URL with a host".to_owned(),
                ));
            }
            if text.len() > 2048 {
                return Err(Error::BadRequest(
                    "callback_url is longer than 2048 characters".to_owned(),
                ));
            }
            Some(url.to_string())
        }
    };
    let bitrate_kbps = match options
        .bitrate_kbps
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
    {
        None => None,
        Some(text) => {
            let kbps = text
                .trim_end_matches('k')
                .parse::<u32>()
                .ok()
                .filter(|kbps| MP3_BITRATES.contains(kbps));
            Some(kbps.ok_or_else(|| {
                Error::BadRequest(format!(
                    "bitrate_kbps {text:?} is not an MP3 bitrate; use one of {MP3_BITRATES:?}"
                ))
            })?)
        }
    };
    Ok((callback_url, bitrate_kbps))
}

/// Keeps the last path component of a client's file name, without control
/// characters, at most 255 bytes. The name is only displayed and used for the
/// download name; it never becomes a path on the server.
pub fn clean_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    while cleaned.len() > 255 {
        cleaned.pop();
    }
    if cleaned.is_empty() {
        "upload".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_their_paths() {
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("C:\\Users\\me\\clip.mp4"), "clip.mp4");
        assert_eq!(clean_file_name("..."), "upload");
        assert_eq!(clean_file_name("a\u{0}b\nc.mp4"), "abc.mp4");
        assert_eq!(clean_file_name(&"x".repeat(400)).len(), 255);
    }

    #[test]
    fn options_are_checked() {
        let options = |url: Option<&str>, kbps: Option<&str>| UploadOptions {
            callback_url: url.map(str::to_owned),
            bitrate_kbps: kbps.map(str::to_owned),
        };
        assert!(check_options(&options(Some("ftp://example.com/x"), None)).is_err());
        assert!(check_options(&options(Some("not a url"), None)).is_err());
        assert!(check_options(&options(None, Some("100"))).is_err());
        assert_eq!(
            check_options(&options(None, Some("192"))).unwrap().1,
            Some(192)
        );
        assert_eq!(
            check_options(&options(None, Some("128k"))).unwrap().1,
            Some(128)
        );
    }
}
