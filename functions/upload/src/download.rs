//! `GET /jobs/{id}/audio`: the MP3, whole or in one byte range (RFC 9110 section 14).

use alchemist_runtime::{blob::Bucket, jwt::Authenticated, store::JobStatus};
use axum::{
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::{AppState, Error, jobs::visible_job};

pub(crate) async fn get_audio(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let job = visible_job(&state, &claims, &id).await?;
    let audio_id = match (job.status, &job.audio_id) {
        (JobStatus::Done, Some(audio_id)) => audio_id.clone(),
        (JobStatus::Failed, _) => {
            return Err(Error::NoAudio(
                "The job failed, so it has no MP3. See its error for the reason.".to_owned(),
            ));
        }
        _ => {
            return Err(Error::NoAudio(format!(
                "The job is {}; the MP3 is served once it is done.",
                job.status.as_str()
            )));
        }
    };
    let size = state.blobs.size(Bucket::Audio, &audio_id).await?;

    let range = match headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    {
        None => None,
        Some(text) => match parse_range(text, size) {
            RangeRequest::Satisfiable(start, end) => Some((start, end)),
            RangeRequest::Unsatisfiable => return Err(Error::RangeNotSatisfiable { size }),
            // A range this server does not handle (several ranges, other units) gets the whole file.
            RangeRequest::Ignored => None,
        },
    };

    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { end - start + 1 };
    let reader = state
        .blobs
        .open(Bucket::Audio, &audio_id, start)
        .await?
        .take(length);

    let mut response =
        Body::from_stream(ReaderStream::with_capacity(reader, 64 * 1024)).into_response();
    *response.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if range.is_some() {
        let value = format!("bytes {start}-{end}/{size}");
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("digits are a valid header value"),
        );
    }
    let disposition = format!("attachment; filename=\"{}\"", download_name(&job.file_name));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A parsed `Range` header.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// Inclusive first and last byte.
    Satisfiable(u64, u64),
    Unsatisfiable,
    Ignored,
}

/// Parses a single `bytes=` range against a file of `size` bytes.
pub fn parse_range(text: &str, size: u64) -> RangeRequest {
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignored;
    };
    match (first.trim(), last.trim()) {
        ("", "") => RangeRequest::Ignored,
        ("", suffix) => match suffix.parse::<u64>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(_) if size == 0 => RangeRequest::Unsatisfiable,
            Ok(suffix) => RangeRequest::Satisfiable(size.saturating_sub(suffix), size - 1),
            Err(_) => RangeRequest::Ignored,
        },
        (first, last) => {
            let Ok(first) = first.parse::<u64>() else {
                return RangeRequest::Ignored;
            };
            let last = if last.is_empty() {
                Some(size.saturating_sub(1))
            } else {
                match last.parse::<u64>() {
                    Ok(last) if last >= first => Some(last.min(size.saturating_sub(1))),
                    Ok(_) => return RangeRequest::Ignored,
                    Err(_) => return RangeRequest::Ignored,
                }
            };
            match last {
                Some(last) if first < size => RangeRequest::Satisfiable(first, last),
                _ => RangeRequest::Unsatisfiable,
            }
        }
    }
}

/// `clip.mp4` becomes `clip.mp3`; characters outside printable ASCII become `_`.
pub fn download_name(file_name: &str) -> String {
    let stem = std::path::Path::new(file_name)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("audio");
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.mp3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(
            parse_range("bytes=0-99", 1000),
            RangeRequest::Satisfiable(0, 99)
        );
        assert_eq!(
            parse_range("bytes=900-", 1000),
            RangeRequest::Satisfiable(900, 999)
        );
        assert_eq!(
            parse_range("bytes=-100", 1000),
            RangeRequest::Satisfiable(900, 999)
        );
        assert_eq!(
            parse_range("bytes=990-5000", 1000),
            RangeRequest::Satisfiable(990, 999)
        );
        assert_eq!(
            parse_range("bytes=1000-", 1000),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeRequest::Ignored);
        assert_eq!(parse_range("items=0-1", 1000), RangeRequest::Ignored);
    }

    #[test]
    fn download_names_are_safe() {
        assert_eq!(download_name("clip.mp4"), "clip.mp3");
        assert_eq!(download_name("a\"b.mkv"), "a_b.mp3");
        assert_eq!(download_name("vidéo.webm"), "vid_o.mp3");
    }
}
