//! The event catalogue against its JSON Schemas: what serde writes validates,
//! and what the schemas reject `parse_payload` rejects too.

use std::collections::BTreeSet;

use alchemist_events::catalogue::{
    AudioConverted, ConversionFailed, FailureReason, MP3_BITRATES, Payload, SCHEMA_BASE,
    VideoUploaded, build_event, parse_payload,
};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use serde_json::{Value, json};

const JOB_ID: &str = "0190a5d2-7c1e-7b3a-9f00-5a1b2c3d4e5f";

/// Compiles the payload's schema with format checks on, so that `"format": "uuid"` counts.
fn validator<P: Payload>() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(P::SCHEMA).expect("the schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

/// Wraps `data` in an event of the payload's type, as a subscriber would receive it.
fn event_with_data<P: Payload>(data: Value) -> Event {
    EventBuilderV10::new()
        .id("event-1")
        .source("/tests")
        .ty(P::TYPE)
        .data("application/json", data)
        .build()
        .expect("a valid event")
}

fn video_uploaded() -> VideoUploaded {
    VideoUploaded {
        job_id: JOB_ID.parse().unwrap(),
        owner_id: "user-1".to_owned(),
        video_id: "video-1".to_owned(),
        size: 1_048_576,
        bitrate_kbps: Some(192),
    }
}

fn audio_converted() -> AudioConverted {
    AudioConverted {
        job_id: JOB_ID.parse().unwrap(),
        owner_id: "user-1".to_owned(),
        audio_id: "audio-1".to_owned(),
        size: 65_536,
        duration_seconds: 4.25,
        warnings: vec!["truncated".to_owned()],
    }
}

fn conversion_failed(reason: FailureReason) -> ConversionFailed {
    ConversionFailed {
        job_id: JOB_ID.parse().unwrap(),
        owner_id: "user-1".to_owned(),
        reason,
        message: reason.user_message().to_owned(),
    }
}

/// Asserts that the schema accepts the serialized sample and that `parse_payload` reads it back.
#[track_caller]
fn assert_valid<P: Payload + PartialEq + std::fmt::Debug>(sample: &P) {
    let value = serde_json::to_value(sample).unwrap();
    let errors: Vec<String> = validator::<P>()
        .iter_errors(&value)
        .map(|err| err.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "schema of {} rejects {value}: {errors:?}",
        P::TYPE
    );

    let parsed: P = parse_payload(&event_with_data::<P>(value.clone()))
        .unwrap_or_else(|err| panic!("parse_payload rejects {value}: {err}"));
    assert_eq!(&parsed, sample);
}

/// Asserts that both the schema and `parse_payload` reject `data`.
#[track_caller]
fn assert_invalid<P: Payload>(case: &str, data: Value) {
    assert!(
        !validator::<P>().is_valid(&data),
        "schema of {} accepts {case}: {data}",
        P::TYPE
    );
    assert!(
        parse_payload::<P>(&event_with_data::<P>(data.clone())).is_err(),
        "parse_payload::<{}> accepts {case}: {data}",
        P::TYPE
    );
}

/// Returns `value` with `field` removed.
fn without(mut value: Value, field: &str) -> Value {
    value.as_object_mut().unwrap().remove(field);
    value
}

/// Returns `value` with `field` set to `new`.
fn with(mut value: Value, field: &str, new: Value) -> Value {
    value[field] = new;
    value
}

#[test]
fn video_uploaded_samples_validate() {
    assert_valid(&video_uploaded());
    assert_valid(&VideoUploaded {
        bitrate_kbps: None,
        ..video_uploaded()
    });
    assert_valid(&VideoUploaded {
        size: 0,
        ..video_uploaded()
    });
}

#[test]
fn audio_converted_samples_validate() {
    assert_valid(&audio_converted());
    assert_valid(&AudioConverted {
        warnings: Vec::new(),
        ..audio_converted()
    });
}

#[test]
fn every_failure_reason_validates() {
    for reason in FailureReason::ALL {
        assert_valid(&conversion_failed(reason));
    }
}

#[test]
fn invalid_video_uploaded_is_rejected() {
    let valid = serde_json::to_value(video_uploaded()).unwrap();
    let cases = [
        ("missing job_id", without(valid.clone(), "job_id")),
        ("missing owner_id", without(valid.clone(), "owner_id")),
        ("missing video_id", without(valid.clone(), "video_id")),
        ("missing size", without(valid.clone(), "size")),
        (
            "unknown field",
            with(valid.clone(), "video_bytes", json!("AAAA")),
        ),
        (
            "bitrate 100",
            with(valid.clone(), "bitrate_kbps", json!(100)),
        ),
        ("bitrate 0", with(valid.clone(), "bitrate_kbps", json!(0))),
        ("empty owner_id", with(valid.clone(), "owner_id", json!(""))),
        ("empty video_id", with(valid.clone(), "video_id", json!(""))),
        ("negative size", with(valid.clone(), "size", json!(-1))),
        (
            "job_id not a UUID",
            with(valid.clone(), "job_id", json!("job-1")),
        ),
        ("not an object", json!([1, 2, 3])),
    ];
    for (case, data) in cases {
        assert_invalid::<VideoUploaded>(case, data);
    }
}

#[test]
fn invalid_audio_converted_is_rejected() {
    let valid = serde_json::to_value(audio_converted()).unwrap();
    let cases = [
        ("missing audio_id", without(valid.clone(), "audio_id")),
        (
            "missing duration_seconds",
            without(valid.clone(), "duration_seconds"),
        ),
        (
            "unknown field",
            with(valid.clone(), "audio_url", json!("/a.mp3")),
        ),
        ("size 0", with(valid.clone(), "size", json!(0))),
        (
            "duration 0",
            with(valid.clone(), "duration_seconds", json!(0)),
        ),
        (
            "negative duration",
            with(valid.clone(), "duration_seconds", json!(-1.5)),
        ),
        (
            "unknown warning",
            with(valid.clone(), "warnings", json!(["clipped"])),
        ),
        ("empty audio_id", with(valid.clone(), "audio_id", json!(""))),
    ];
    for (case, data) in cases {
        assert_invalid::<AudioConverted>(case, data);
    }
}

#[test]
fn invalid_conversion_failed_is_rejected() {
    let valid = serde_json::to_value(conversion_failed(FailureReason::NoAudio)).unwrap();
    let cases = [
        ("missing reason", without(valid.clone(), "reason")),
        ("missing message", without(valid.clone(), "message")),
        (
            "unknown field",
            with(valid.clone(), "stderr", json!("ffmpeg output")),
        ),
        (
            "unknown reason code",
            with(valid.clone(), "reason", json!("disk_full")),
        ),
        (
            "reason code in another case",
            with(valid.clone(), "reason", json!("NoAudio")),
        ),
        ("empty message", with(valid.clone(), "message", json!(""))),
    ];
    for (case, data) in cases {
        assert_invalid::<ConversionFailed>(case, data);
    }
}

#[test]
fn parse_payload_rejects_other_type() {
    let event = build_event("/tests", JOB_ID, &audio_converted());

    let result = parse_payload::<ConversionFailed>(&event);

    assert!(result.is_err(), "{result:?}");
}

#[test]
fn parse_payload_rejects_missing_data() {
    let event = EventBuilderV10::new()
        .id("event-1")
        .source("/tests")
        .ty(AudioConverted::TYPE)
        .build()
        .unwrap();

    let result = parse_payload::<AudioConverted>(&event);

    assert!(result.is_err(), "{result:?}");
}

#[test]
fn build_event_sets_attributes() {
    let payload = video_uploaded();

    let event = build_event("/upload", JOB_ID, &payload);

    let expected_schema = format!("{SCHEMA_BASE}{}.json", VideoUploaded::TYPE);
    assert_eq!(event.ty(), VideoUploaded::TYPE);
    assert_eq!(event.source().as_str(), "/upload");
    assert_eq!(event.subject(), Some(JOB_ID));
    assert_eq!(
        event.dataschema().map(|url| url.as_str()),
        Some(expected_schema.as_str())
    );
    assert_eq!(event.datacontenttype(), Some("application/json"));
    assert!(!event.id().is_empty());
    assert!(event.time().is_some());
    assert_eq!(parse_payload::<VideoUploaded>(&event).unwrap(), payload);
}

#[test]
fn build_event_ids_are_unique() {
    let first = build_event("/upload", JOB_ID, &video_uploaded());
    let second = build_event("/upload", JOB_ID, &video_uploaded());

    assert_ne!(first.id(), second.id());
}

#[test]
fn schema_ids_match_dataschema() {
    let schemas = [
        (VideoUploaded::TYPE, VideoUploaded::SCHEMA),
        (AudioConverted::TYPE, AudioConverted::SCHEMA),
        (ConversionFailed::TYPE, ConversionFailed::SCHEMA),
    ];
    for (event_type, schema) in schemas {
        let schema: Value = serde_json::from_str(schema).unwrap();
        assert_eq!(
            schema["$id"].as_str(),
            Some(format!("{SCHEMA_BASE}{event_type}.json").as_str()),
            "$id of {event_type}"
        );
    }
}

#[test]
fn schema_files_match_catalogue() {
    let catalogue = [
        VideoUploaded::TYPE,
        AudioConverted::TYPE,
        ConversionFailed::TYPE,
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");

    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(event_type) = name.strip_suffix(".json") else {
            continue;
        };
        assert!(
            catalogue.contains(&event_type),
            "{name} in events/schemas/ has no payload type in the catalogue"
        );
        files.insert(event_type.to_owned());
    }

    for event_type in catalogue {
        assert!(
            files.contains(event_type),
            "no schema file for {event_type}"
        );
    }
}

#[test]
fn failure_reasons_match_schema_enum() {
    let schema: Value = serde_json::from_str(ConversionFailed::SCHEMA).unwrap();
    let in_schema: BTreeSet<&str> = schema["properties"]["reason"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();

    let in_code: BTreeSet<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();

    assert_eq!(in_schema, in_code);
}

#[test]
fn failure_reason_codes_round_trip() {
    for reason in FailureReason::ALL {
        let serialized = serde_json::to_value(reason).unwrap();
        assert_eq!(serialized, json!(reason.as_str()), "{reason:?}");
        assert_eq!(FailureReason::parse(reason.as_str()), Some(reason));
    }
    assert_eq!(FailureReason::parse("disk_full"), None);
}

#[test]
fn mp3_bitrates_match_schema_enum() {
    let schema: Value = serde_json::from_str(VideoUploaded::SCHEMA).unwrap();
    let in_schema: Vec<u64> = schema["properties"]["bitrate_kbps"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kbps| kbps.as_u64().unwrap())
        .collect();

    let in_code: Vec<u64> = MP3_BITRATES.iter().map(|&kbps| u64::from(kbps)).collect();

    assert_eq!(in_schema, in_code);
}
