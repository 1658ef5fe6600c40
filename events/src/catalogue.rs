//! Versioned event types and their payloads.
//!
//! Each type is a reverse-DNS name ending in a version. A change that breaks
//! a payload gets a new type (`.v2`) so that old and new functions can run
//! side by side. Each payload has a JSON Schema in `events/schemas/`, named by
//! the event type, and the events point at it with `dataschema`.

use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::Error;

/// Base URI of the payload schemas; the file name is the event type plus `.json`.
pub const SCHEMA_BASE: &str = "https://audio-alchemist.dev/schemas/";

/// A payload that travels as the data of one CloudEvent type.
pub trait Payload: Serialize + DeserializeOwned {
    /// The CloudEvent `type` attribute.
    const TYPE: &'static str;
    /// The JSON Schema of this payload, as stored in `events/schemas/`.
    const SCHEMA: &'static str;

    /// Checks the rules of the schema that the Rust type cannot express.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The constant bitrates an MP3 (MPEG-1 Layer III) stream can have, in kbit/s.
pub const MP3_BITRATES: [u32; 14] = [
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];

fn check_not_empty(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(())
}

/// A video was stored and its job queued. Emitted by upload, consumed by convert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoUploaded {
    pub job_id: Uuid,
    /// Id of the user who owns the job.
    pub owner_id: String,
    /// Blob id of the video in the video bucket.
    pub video_id: String,
    /// Size of the video in bytes.
    pub size: u64,
    /// Constant MP3 bitrate in kbit/s; VBR quality 2 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
}

impl Payload for VideoUploaded {
    const TYPE: &'static str = "dev.audioalchemist.video.uploaded.v1";
    const SCHEMA: &'static str =
        include_str!("../schemas/dev.audioalchemist.video.uploaded.v1.json");

    fn check(&self) -> Result<(), String> {
        check_not_empty("owner_id", &self.owner_id)?;
        check_not_empty("video_id", &self.video_id)?;
        match self.bitrate_kbps {
            Some(kbps) if !MP3_BITRATES.contains(&kbps) => {
                Err(format!("bitrate_kbps {kbps} is not an MP3 bitrate"))
            }
            _ => Ok(()),
        }
    }
}

/// An MP3 was made and stored. Emitted by convert, consumed by notify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConverted {
    pub job_id: Uuid,
    pub owner_id: String,
    /// Blob id of the MP3 in the audio bucket.
    pub audio_id: String,
    /// Size of the MP3 in bytes.
    pub size: u64,
    /// Duration of the MP3 in seconds, measured on the output.
    pub duration_seconds: f64,
    /// Conditions the user should know about, such as `truncated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Payload for AudioConverted {
    const TYPE: &'static str = "dev.audioalchemist.audio.converted.v1";
    const SCHEMA: &'static str =
        include_str!("../schemas/dev.audioalchemist.audio.converted.v1.json");

    fn check(&self) -> Result<(), String> {
        check_not_empty("owner_id", &self.owner_id)?;
        check_not_empty("audio_id", &self.audio_id)?;
        if self.size == 0 {
            return Err("size is 0".to_owned());
        }
        if self.duration_seconds.is_nan() || self.duration_seconds <= 0.0 {
            return Err("duration_seconds is not positive".to_owned());
        }
        if let Some(warning) = self.warnings.iter().find(|w| w.as_str() != "truncated") {
            return Err(format!("unknown warning {warning}"));
        }
        Ok(())
    }
}

/// A conversion ended without an MP3. Emitted by convert, consumed by notify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionFailed {
    pub job_id: Uuid,
    pub owner_id: String,
    pub reason: FailureReason,
    /// One sentence for the user: what is wrong and what to do.
    pub message: String,
}

impl Payload for ConversionFailed {
    const TYPE: &'static str = "dev.audioalchemist.conversion.failed.v1";
    const SCHEMA: &'static str =
        include_str!("../schemas/dev.audioalchemist.conversion.failed.v1.json");

    fn check(&self) -> Result<(), String> {
        check_not_empty("owner_id", &self.owner_id)?;
        check_not_empty("message", &self.message)
    }
}

/// The reason a job failed, as a stable code that clients can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The upload has zero bytes.
    Empty,
    /// The file ends before its container says it does.
    Truncated,
    /// The file has no audio stream, or its audio stream holds no samples.
    NoAudio,
    /// The file is not a media file ffmpeg can read.
    Unreadable,
    /// A format the service does not open, such as playlists and concat scripts.
    UnsupportedFormat,
    /// The conversion exceeded its time, duration or output size limit.
    LimitExceeded,
    /// The job's event could not be processed or delivered.
    DeliveryFailed,
    /// A fault of the service itself; the job may be submitted again.
    Internal,
}

impl FailureReason {
    /// Every reason, in declaration order.
    pub const ALL: [FailureReason; 8] = [
        Self::Empty,
        Self::Truncated,
        Self::NoAudio,
        Self::Unreadable,
        Self::UnsupportedFormat,
        Self::LimitExceeded,
        Self::DeliveryFailed,
        Self::Internal,
    ];

    /// The code as it appears in payloads, job records and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Truncated => "truncated",
            Self::NoAudio => "no_audio",
            Self::Unreadable => "unreadable",
            Self::UnsupportedFormat => "unsupported_format",
            Self::LimitExceeded => "limit_exceeded",
            Self::DeliveryFailed => "delivery_failed",
            Self::Internal => "internal",
        }
    }

    /// Parses a code written by [`FailureReason::as_str`].
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == code)
    }

    /// A sentence for the user that says what is wrong and what to do.
    pub fn user_message(self) -> &'static str {
        match self {
            Self::Empty => "The file is empty (0 bytes). Send the complete file.",
            Self::Truncated => {
                "The file ends before its container says it does, as after an interrupted upload or copy. Send the complete file."
            }
            Self::NoAudio => {
                "The file has no audio to extract. Check that the video has a sound track."
            }
            Self::Unreadable => {
                "The file is not a video or audio file that can be read. Check that it is the file you meant to upload."
            }
            Self::UnsupportedFormat => {
                "The file is a playlist, manifest or script that refers to other files, which is not accepted. Upload the media file itself."
            }
            Self::LimitExceeded => {
                "The conversion exceeded the time or size limit for one job. Split the file or upload a shorter one."
            }
            Self::DeliveryFailed => {
                "The job could not be processed after several attempts. Submit the file again later."
            }
            Self::Internal => {
                "The service failed while converting the file. Submit the file again later."
            }
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Returns the id of a job's outcome event, `audio.converted` or
/// `conversion.failed`.
/// A job has one outcome, so every announcement of it, by any function and
/// however often repeated, carries this id, and consumers drop the repeats.
pub fn outcome_event_id(job_id: Uuid) -> String {
    Uuid::new_v5(&job_id, b"outcome").to_string()
}

/// Builds a CloudEvent of the payload's type with a fresh id.
///
/// `subject` is the job id, so that tools watching the broker can follow a job.
pub fn build_event<P: Payload>(source: &str, subject: &str, payload: &P) -> Event {
    build_event_with_id(&Uuid::now_v7().to_string(), source, subject, payload)
}

/// Builds a CloudEvent of the payload's type with the given id. A producer
/// that may send the same fact twice derives the id from the fact, so that
/// consumers recognise the repeat by `source` and `id`.
pub fn build_event_with_id<P: Payload>(
    id: &str,
    source: &str,
    subject: &str,
    payload: &P,
) -> Event {
    let data = serde_json::to_value(payload).expect("payload types serialize to JSON");
    EventBuilderV10::new()
        .id(id)
        .source(source)
        .ty(P::TYPE)
        .subject(subject)
        .time(chrono::Utc::now())
        .data_with_schema(
            "application/json",
            format!("{SCHEMA_BASE}{}.json", P::TYPE),
            data,
        )
        .build()
        .expect("id, source and type are set")
}

/// Reads the payload of an event whose type is `P::TYPE`.
///
/// # Errors
///
/// [`Error::InvalidPayload`] when the event has another type, no data, or data
/// that does not match the payload (the same rules as the JSON Schema).
pub fn parse_payload<P: Payload>(event: &Event) -> Result<P, Error> {
    let invalid = |reason: String| Error::InvalidPayload {
        event_type: P::TYPE.to_owned(),
        reason,
    };
    if event.ty() != P::TYPE {
        return Err(invalid(format!("event type is {}", event.ty())));
    }
    let value = match event.data() {
        Some(cloudevents::Data::Json(value)) => value.clone(),
        Some(cloudevents::Data::Binary(bytes)) => {
            serde_json::from_slice(bytes).map_err(|err| invalid(err.to_string()))?
        }
        Some(cloudevents::Data::String(text)) => {
            serde_json::from_str(text).map_err(|err| invalid(err.to_string()))?
        }
        None => return Err(invalid("the event has no data".to_owned())),
    };
    let payload: P = serde_json::from_value(value).map_err(|err| invalid(err.to_string()))?;
    payload.check().map_err(invalid)?;
    Ok(payload)
}
