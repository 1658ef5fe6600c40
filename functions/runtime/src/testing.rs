//! Helpers for the test suites: temporary stores, users, tokens, media and metrics.
//!
//! Compiled with the `testing` feature, which the function crates enable
//! for their tests, and for this crate's own unit tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use crate::{
    blob::{BlobStore, DirBlobStore},
    jwt::{JwtKeys, Role},
    sql::SqlStore,
    store::{Store, User},
};

/// The signing secret of test tokens.
pub const TEST_SECRET: &[u8] = b"test-secret-that-is-long-enough-for-hs256";

/// A SQLite store and a blob directory in a temporary directory, removed on drop.
pub struct TempDeps {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
}

/// Creates a fresh store and blob directory.
///
/// # Panics
///
/// When the temporary directory or the database cannot be created.
pub async fn temp_deps() -> TempDeps {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let store = SqlStore::connect(&url)
        .await
        .expect("open the test database");
    let blobs = DirBlobStore::open(dir.path().join("blobs"))
        .await
        .expect("open the test blob directory");
    TempDeps {
        dir,
        store: Arc::new(store),
        blobs: Arc::new(blobs),
    }
}

/// Keys with the test secret and default issuer, audience and lifetime.
pub fn keys() -> JwtKeys {
    JwtKeys::new(
        TEST_SECRET,
        crate::jwt::DEFAULT_ISSUER,
        crate::jwt::DEFAULT_ISSUER,
        3600,
    )
}

/// Creates a user with an argon2id hash of `password`.
///
/// # Panics
///
/// When the user cannot be created.
pub async fn add_user(store: &dyn Store, email: &str, password: &str, role: Role) -> User {
    let hash = crate::password::hash(password.to_owned())
        .await
        .expect("hash the test password");
    store
        .create_user(email, &hash, role)
        .await
        .expect("create the test user")
}

/// Runs ffmpeg with `args` to make a test input at `dir/name`.
///
/// # Panics
///
/// When ffmpeg is missing or fails.
pub fn make_media(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(args)
        .arg(&path)
        .output()
        .expect("ffmpeg is installed (scripts/setup installs it)");
    assert!(
        output.status.success(),
        "ffmpeg failed making {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// Makes an H.264 + AAC MP4 of `seconds` seconds with a 440 Hz tone.
pub fn video_with_audio(dir: &Path, name: &str, seconds: u32) -> PathBuf {
    let duration = seconds.to_string();
    make_media(
        dir,
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size=160x120:rate=10:duration={duration}"),
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency=440:sample_rate=44100:duration={duration}"),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ],
    )
}

/// Makes an H.264 MP4 without audio.
pub fn video_without_audio(dir: &Path, name: &str) -> PathBuf {
    make_media(
        dir,
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
    )
}

/// Duration of a media file in seconds, as ffprobe reads it.
///
/// # Panics
///
/// When ffprobe fails or prints no duration.
pub fn probe_duration(path: &Path) -> f64 {
    probe_field(path, "format=duration")
        .parse()
        .expect("ffprobe prints a duration")
}

/// Reads one `-show_entries` value of the first audio stream or the format.
///
/// # Panics
///
/// When ffprobe fails.
pub fn probe_field(path: &Path, entries: &str) -> String {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            entries,
            "-of",
            "default=noprint_wrappers=1:nokey=1",
        ])
        .arg(path)
        .output()
        .expect("ffprobe is installed");
    assert!(
        output.status.success(),
        "ffprobe failed on {}",
        path.display()
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Mean volume of a file's first audio stream in dB, as ffmpeg's volumedetect measures it.
///
/// # Panics
///
/// When ffmpeg fails or prints no mean volume.
pub fn mean_volume_db(path: &Path) -> f64 {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("mean_volume:"))
        .expect("volumedetect prints mean_volume");
    let value = line
        .split("mean_volume:")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches("dB")
        .trim();
    if value == "-inf" {
        f64::NEG_INFINITY
    } else {
        value.parse().expect("a number of dB")
    }
}

/// Finds the folder of real media named `NAME` beside the repository.
///
/// Returns `None` when it is absent. Under `CI` an absent folder fails the
/// test instead, because CI always has it.
///
/// # Panics
///
/// Under `CI` when the folder is missing.
pub fn shared_folder(name: &str) -> Option<PathBuf> {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    let root = loop {
        if dir.join("Cargo.lock").exists() {
            break dir;
        }
        if !dir.pop() {
            panic!("no workspace root above {}", env!("CARGO_MANIFEST_DIR"));
        }
    };
    let folder = root.parent().map(|parent| parent.join("shared").join(name));
    match folder {
        Some(folder) if folder.join("manifest.tsv").exists() => Some(folder),
        _ if std::env::var_os("CI").is_some() => {
            panic!("../shared/{name} is missing, and CI must have it")
        }
        _ => {
            eprintln!("skipping: ../shared/{name} is absent");
            None
        }
    }
}

/// Reads the rows of a tab-separated manifest, as maps from column name to value.
///
/// # Panics
///
/// When the file cannot be read.
pub fn read_manifest(folder: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(folder.join("manifest.tsv")).expect("read manifest.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            header
                .iter()
                .zip(line.split('\t').chain(std::iter::repeat("")))
                .map(|(key, value)| ((*key).to_owned(), value.to_owned()))
                .collect()
        })
        .collect()
}

/// Keys signing with the test secret for another issuer, for rejection tests.
pub fn foreign_keys() -> JwtKeys {
    JwtKeys::new(TEST_SECRET, "someone-else", "someone-else", 3600)
}

/// Returns the role of a test user as text, for readable assertions.
pub fn role_name(role: Role) -> &'static str {
    role.as_str()
}

/// Requests `GET /metrics` from `router` and returns the body.
///
/// # Panics
///
/// When the response is not 200 with the Prometheus text content type.
pub async fn scrape_metrics(router: &axum::Router) -> String {
    use tower::ServiceExt;

    let request = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .expect("a valid request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("a router never fails");
    assert_eq!(
        response.status(),
        axum::http::StatusCode::OK,
        "GET /metrics"
    );
    let content_type = response.headers().get(axum::http::header::CONTENT_TYPE);
    assert_eq!(
        content_type.and_then(|value| value.to_str().ok()),
        Some(crate::metrics::CONTENT_TYPE),
        "content type of GET /metrics"
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("read the metrics");
    String::from_utf8(body.to_vec()).expect("the metrics are UTF-8")
}

/// Finds the value of one series, such as `alchemist_uploads_total{outcome="empty"}`,
/// in the text of `GET /metrics`. A series that was never recorded is
/// absent and reads as 0, like a fresh counter.
///
/// # Panics
///
/// When the value is not a number.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| {
            value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{series} has a value that is not a number: {value}"))
        })
}

/// Runs a program to its end and returns its standard output, the JSON log
/// lines of a function program.
///
/// # Panics
///
/// When the program cannot start or exits with a failure status; the panic
/// message shows both of its outputs.
pub async fn run_to_success(command: &mut tokio::process::Command) -> String {
    let output = command.output().await.expect("start the program");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the program failed with {}:\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
