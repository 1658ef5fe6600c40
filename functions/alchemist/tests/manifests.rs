//! Every file of the shared real-media folders comes out as its manifest says,
//! through the `alchemist convert` program and through the HTTP pipeline.
//!
//! The folders live beside the repository (`../shared/media`,
//! `../shared/badinputs`) and are read in place. Without them these tests
//! skip, except under `CI`, where they fail.

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use alchemist_runtime::{jwt::Role, testing};
use serde_json::Value;

type Row = HashMap<String, String>;

/// What `alchemist convert` printed for one input: the MP3 or the failure reason.
#[derive(Debug)]
enum Printed {
    Mp3 { path: PathBuf },
    Failed { reason: String },
}

/// Runs the program on every file of `folder`'s manifest and parses its lines.
fn run_cli(folder: &Path, rows: &[Row], work: &Path) -> (HashMap<String, Printed>, String, String) {
    let out = work.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_alchemist"))
        .arg("convert")
        .arg("--out")
        .arg(&out)
        .args(rows.iter().map(|row| folder.join(&row["file"])))
        .env("ALCHEMIST_DATA_DIR", work.join("data"))
        .env("CONVERT_WORK_DIR", work)
        .output()
        .expect("run alchemist convert");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let any_reject = rows.iter().any(|row| row["expect"] == "reject");
    assert_eq!(
        output.status.code(),
        Some(if any_reject { 1 } else { 0 }),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let mut printed = HashMap::new();
    for line in stdout.lines() {
        let (first, rest) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        if let Some(failure) = rest.strip_prefix("failed: ") {
            let file = Path::new(first)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let reason = failure.split(':').next().unwrap().to_owned();
            printed.insert(file, Printed::Failed { reason });
        } else {
            let stem = Path::new(first)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let file = rows
                .iter()
                .map(|row| row["file"].clone())
                .find(|file| Path::new(file).file_stem().unwrap().to_string_lossy() == stem)
                .unwrap_or_else(|| panic!("no input for {first}"));
            printed.insert(
                file,
                Printed::Mp3 {
                    path: PathBuf::from(first),
                },
            );
        }
    }
    (printed, stdout, stderr)
}

fn tolerance(row: &Row) -> f64 {
    row.get("tolerance")
        .and_then(|text| text.parse().ok())
        .unwrap_or(0.15)
}

/// Checks one MP3 against its manifest row, including the `extra` checks.
fn check_mp3(row: &Row, mp3: &Path) {
    let file = &row["file"];
    let expected: f64 = row["audio_seconds"].parse().unwrap();
    let duration = testing::probe_duration(mp3);
    assert!(
        (duration - expected).abs() <= tolerance(row),
        "{file}: MP3 lasts {duration} s, expected {expected} s"
    );

    let rate = testing::probe_field(mp3, "stream=sample_rate");
    assert!(
        rate == "44100" || rate == "48000",
        "{file}: sample rate {rate}"
    );
    let channels: u32 = testing::probe_field(mp3, "stream=channels")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&channels), "{file}: {channels} channels");
    if row.get("extra").is_some_and(|extra| extra == "not_silent") {
        let volume = testing::mean_volume_db(mp3);
        assert!(volume > -60.0, "{file}: the MP3 is silent ({volume} dB)");
    }
}

fn check_rows(rows: &[Row], printed: &HashMap<String, Printed>) {
    for row in rows {
        let file = &row["file"];
        let outcome = printed
            .get(file)
            .unwrap_or_else(|| panic!("{file}: no output line"));
        match (row["expect"].as_str(), outcome) {
            ("ok", Printed::Mp3 { path }) => check_mp3(row, path),
            ("reject", Printed::Failed { reason }) => {
                assert_eq!(reason, &row["reject_reason"], "{file}")
            }
            (expect, outcome) => panic!("{file}: expected {expect}, got {outcome:?}"),
        }
    }
}

/// The text that must never leak from the playlist cases.
fn canary(folder: &Path) -> Option<String> {
    std::fs::read_to_string(folder.join("secret.txt"))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

fn assert_no_canary(canary: &str, haystack: &[u8], what: &str) {
    let found = haystack
        .windows(canary.len())
        .any(|window| window == canary.as_bytes());
    assert!(!found, "the text of secret.txt appears in {what}");
}

#[test]
fn media_manifest_through_cli() {
    let Some(folder) = testing::shared_folder("media") else {
        return;
    };
    let rows = testing::read_manifest(&folder);
    let work = tempfile::tempdir().unwrap();

    let (printed, _, _) = run_cli(&folder, &rows, work.path());

    assert_eq!(printed.len(), rows.len());
    check_rows(&rows, &printed);
    let blobs = walk(&work.path().join("data/blobs"));
    assert!(
        blobs.is_empty(),
        "the data directory keeps copies of media: {blobs:?}"
    );
}

#[test]
fn bad_inputs_manifest_through_cli() {
    let Some(folder) = testing::shared_folder("badinputs") else {
        return;
    };
    let rows = testing::read_manifest(&folder);
    let work = tempfile::tempdir().unwrap();

    let (printed, stdout, stderr) = run_cli(&folder, &rows, work.path());

    assert_eq!(printed.len(), rows.len());
    check_rows(&rows, &printed);
    if let Some(canary) = canary(&folder) {
        assert_no_canary(&canary, stdout.as_bytes(), "standard output");
        assert_no_canary(&canary, stderr.as_bytes(), "standard error");
        for entry in walk(work.path()) {
            assert_no_canary(
                &canary,
                &std::fs::read(&entry).unwrap(),
                &entry.display().to_string(),
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_manifest_through_http() {
    let Some(folder) = testing::shared_folder("badinputs") else {
        return;
    };
    let rows = testing::read_manifest(&folder);
    let work = tempfile::tempdir().unwrap();
    let served = common::serve_stack(common::options(work.path())).await;
    testing::add_user(
        served.stack.store.as_ref(),
        "qa@example.com",
        "password123",
        Role::User,
    )
    .await;
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{}/login", served.base_url))
        .basic_auth("qa@example.com", Some("password123"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();

    let mut answers = Vec::new();
    for row in &rows {
        let file = &row["file"];
        let response = client
            .post(format!("{}/uploads", served.base_url))
            .bearer_auth(&token)
            .header("x-file-name", file.as_str())
            .body(std::fs::read(folder.join(file)).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        answers.push((row, status, body));
    }

    for (row, status, body) in answers {
        let file = &row["file"];
        let job = if status == 202 {
            let url = format!(
                "{}{}",
                served.base_url,
                body["status_url"].as_str().unwrap()
            );
            let mut job = Value::Null;
            for _ in 0..1200 {
                job = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if job["status"] == "done" || job["status"] == "failed" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            job
        } else {
            // Zero-byte uploads are refused at upload time with the reason as the error code.
            serde_json::json!({ "status": "failed", "error": { "reason": body["error"] } })
        };

        match row["expect"].as_str() {
            "ok" => {
                assert_eq!(job["status"], "done", "{file}: {job}");
                let audio = client
                    .get(format!(
                        "{}/jobs/{}/audio",
                        served.base_url,
                        job["id"].as_str().unwrap()
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let mp3 = work.path().join(format!("{file}.mp3"));
                std::fs::write(&mp3, audio.bytes().await.unwrap()).unwrap();
                check_mp3(row, &mp3);
            }
            _ => {
                assert_eq!(job["status"], "failed", "{file}: {job}");
                assert_eq!(
                    job["error"]["reason"],
                    row["reject_reason"].as_str(),
                    "{file}: {job}"
                );
            }
        }
        if let Some(canary) = canary(&folder) {
            assert_no_canary(
                &canary,
                job.to_string().as_bytes(),
                &format!("the job record of {file}"),
            );
        }
    }
}

/// Playlists, manifests and concat scripts that point at a marker file, by
/// relative and by absolute path, under a media file's name.
fn reference_files(dir: &Path, marker: &Path) -> Vec<PathBuf> {
    let absolute = marker.display().to_string();
    let cases = [
        (
            "hls-relative.mp4",
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nmarker.txt\n#EXT-X-ENDLIST\n"
                .to_owned(),
        ),
        (
            "hls-absolute.mp4",
            format!("#EXTM3U\n#EXTINF:10.0,\nfile://{absolute}\n#EXT-X-ENDLIST\n"),
        ),
        (
            "concat-relative.mkv",
            "ffconcat version 1.0\nfile marker.txt\n".to_owned(),
        ),
        (
            "concat-absolute.mkv",
            format!("ffconcat version 1.0\nfile '{absolute}'\n"),
        ),
        (
            "dash-absolute.webm",
            format!(
                "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\"><Period><AdaptationSet><Representation><BaseURL>{absolute}</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
            ),
        ),
        ("m3u-bare.mp3", format!("{absolute}\n")),
    ];
    cases
        .into_iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

#[test]
fn playlists_never_leak_their_targets() {
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("marker.txt");
    let secret = format!("marker-{}", uuid::Uuid::new_v4());
    std::fs::write(&marker, &secret).unwrap();
    let inputs = reference_files(work.path(), &marker);

    let output = Command::new(env!("CARGO_BIN_EXE_alchemist"))
        .arg("convert")
        .arg("--out")
        .arg(work.path().join("out"))
        .args(&inputs)
        .env("ALCHEMIST_DATA_DIR", work.path().join("data"))
        .env("RUST_LOG", "debug")
        .output()
        .expect("run alchemist convert");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    for input in &inputs {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&input.display().to_string()))
            .unwrap_or_else(|| panic!("no line for {}", input.display()));
        assert!(
            line.contains("failed: unsupported_format") || line.contains("failed: unreadable"),
            "{line}"
        );
    }
    assert!(
        !stdout.contains(&secret),
        "the marker's text is in standard output"
    );
    assert!(
        !stderr.contains(&secret),
        "the marker's text is in the logs"
    );
    for file in walk(&work.path().join("data")) {
        let bytes = std::fs::read(&file).unwrap();
        assert_no_canary(&secret, &bytes, &file.display().to_string());
    }
    assert!(
        !work.path().join("out").exists() || walk(&work.path().join("out")).is_empty(),
        "no MP3 may come out"
    );
}
