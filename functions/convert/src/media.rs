//! Probing media and extracting audio to MP3 with ffmpeg.
//!
//! ffmpeg never chooses its own input format or protocol here:
//!
//! 1. The first bytes are checked for playlists, manifests and concat scripts,
//!    which make ffmpeg open further files or URLs; those are rejected before
//!    ffprobe runs.
//! 2. ffprobe reads the file with `-format_whitelist` (real media containers
//!    only) and `-protocol_whitelist file`. The input file has no extension, so
//!    the format is detected from the content, not from the client's file name.
//! 3. ffmpeg reads it again with the probed format forced by `-f` and the same
//!    whitelists, writes an MP3 under time, duration and size limits, and the
//!    MP3 is probed in turn: ffmpeg's exit code alone proves nothing, so the
//!    output must hold audio frames.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use alchemist_events::catalogue::FailureReason;
use ffmpeg_sidecar::{
    command::FfmpegCommand,
    event::{FfmpegEvent, LogLevel},
};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tracing::{debug, warn};

/// Demuxers ffprobe and ffmpeg may use. None of them opens other files or
/// URLs. HLS, DASH, concat, image sequences and every other demuxer are left out.
pub const FORMAT_WHITELIST: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,mp3,wav,w64,\
flac,ogg,aac,ac3,eac3,dts,asf,flv,aiff,caf,amr,nut,wv,ape,tta,dv";

/// The only protocol a call needs: the local input file.
const PROTOCOL_WHITELIST: &str = "file";

/// Largest picture (in pixels) a decoder may allocate while probing or
/// converting, since a tiny cover image can declare a huge size (16000x16000
/// asks for 256 MB). Pictures above it are skipped; the audio is unaffected.
const MAX_PIXELS: &str = "16777216";

/// Largest single memory block ffmpeg and ffprobe may allocate (256 MiB), so
/// that a header declaring a huge frame fails instead of exhausting memory.
const MAX_ALLOC: &str = "268435456";

/// Limits on one conversion.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock limit of one ffmpeg run; ffmpeg is killed when it passes.
    pub timeout: Duration,
    /// Longest MP3 written, in seconds.
    pub max_duration_seconds: u64,
    /// Largest MP3 written, in bytes.
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(600),
            max_duration_seconds: 6 * 3600,
            max_output_bytes: 512 * 1024 * 1024,
        }
    }
}

/// How to encode the MP3.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions {
    /// Constant bitrate in kbit/s; VBR quality 2 (about 190 kbit/s) when `None`.
    pub bitrate_kbps: Option<u32>,
}

/// The reason a conversion ended without an MP3.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The input is at fault; the job fails with this reason and is not retried.
    #[error("{reason}: {detail}")]
    Rejected {
        reason: FailureReason,
        detail: String,
    },
    /// ffmpeg or ffprobe could not run, or the work directory failed; a retry may succeed.
    #[error("{0}")]
    Internal(String),
}

impl MediaError {
    fn rejected(reason: FailureReason, detail: impl Into<String>) -> MediaError {
        MediaError::Rejected {
            reason,
            detail: detail.into(),
        }
    }
}

/// An audio stream as ffprobe reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioStream {
    pub index: u32,
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
    pub is_default: bool,
}

/// The streams and format ffprobe found in an input.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The demuxer name, such as `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format: String,
    /// The duration the container claims, which may be wrong either way.
    pub claimed_duration: Option<f64>,
    pub audio: Vec<AudioStream>,
}

/// A finished MP3.
#[derive(Debug, Clone)]
pub struct Converted {
    pub duration_seconds: f64,
    pub sample_rate: u32,
    pub channels: u32,
    pub frames: u64,
    /// Conditions the user should know about.
    pub warnings: Vec<String>,
}

/// Converts the media file at `input` to an MP3 at `output`.
///
/// # Errors
///
/// [`MediaError::Rejected`] with the reason shown to the user, or
/// [`MediaError::Internal`] when the tools themselves fail.
pub async fn convert(
    input: &Path,
    output: &Path,
    options: EncodeOptions,
    limits: &Limits,
) -> Result<Converted, MediaError> {
    let size = tokio::fs::metadata(input)
        .await
        .map_err(|err| MediaError::Internal(format!("cannot read the input file: {err}")))?
        .len();
    if size == 0 {
        return Err(MediaError::rejected(
            FailureReason::Empty,
            "the file has zero bytes",
        ));
    }
    sniff(input).await?;

    let probe = probe(input, limits).await?;
    let mut stream = choose_stream(&probe)
        .ok_or_else(|| {
            MediaError::rejected(FailureReason::NoAudio, "no audio stream with samples")
        })?
        .clone();
    if probe.audio.len() > 1 {
        stream = avoid_silence(input, &probe, stream, limits).await;
    }
    debug!(format = %probe.format, stream = stream.index, codec = %stream.codec, "probed");

    let log = encode(input, output, &probe, &stream, options, limits).await?;
    let measured = measure_mp3(output).await?;
    if measured.frames == 0 || measured.duration_seconds <= 0.0 {
        return Err(MediaError::rejected(
            FailureReason::NoAudio,
            "the audio stream holds no samples",
        ));
    }
    let mut warnings = Vec::new();
    if log.output_limit_reached {
        return Err(MediaError::rejected(
            FailureReason::LimitExceeded,
            "the MP3 reached the output size limit",
        ));
    }
    // -t stops at the limit without an error; a result that reaches it was cut.
    if measured.duration_seconds + 0.5 >= limits.max_duration_seconds as f64 {
        return Err(MediaError::rejected(
            FailureReason::LimitExceeded,
            "the audio is longer than the duration limit",
        ));
    }
    if log.input_truncated {
        warnings.push("truncated".to_owned());
    }
    Ok(Converted {
        warnings,
        ..measured
    })
}

/// Rejects text files that make ffmpeg open other files or URLs: HLS and other
/// M3U playlists, DASH and IMF manifests, ffconcat scripts, SDP, and XML or
/// text formats in general. Real media containers are binary.
async fn sniff(input: &Path) -> Result<(), MediaError> {
    let mut head = vec![0u8; 4096];
    let mut file = tokio::fs::File::open(input)
        .await
        .map_err(|err| MediaError::Internal(format!("cannot open the input file: {err}")))?;
    let mut filled = 0;
    while filled < head.len() {
        let read = file
            .read(&mut head[filled..])
            .await
            .map_err(|err| MediaError::Internal(format!("cannot read the input file: {err}")))?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    head.truncate(filled);

    if let Some(kind) = reference_format(&head) {
        return Err(MediaError::rejected(
            FailureReason::UnsupportedFormat,
            format!("the file is {kind}, which refers to other files"),
        ));
    }
    Ok(())
}

/// Names the playlist, manifest or script format `head` starts with, if any.
pub fn reference_format(head: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let lower = trimmed.to_ascii_lowercase();
    let starts = |prefix: &str| lower.starts_with(prefix);

    if starts("#extm3u") || starts("#ext-x-") {
        return Some("an HLS or M3U playlist");
    }
    if starts("ffconcat") {
        return Some("an ffconcat script");
    }
    if lower.contains("<mpd") {
        return Some("a DASH manifest");
    }
    if lower.contains("compositionplaylist") || lower.contains("assetmap") {
        return Some("an IMF manifest");
    }
    if starts("<?xml") || starts("<smil") {
        return Some("an XML document");
    }
    if starts("v=0") && lower.contains("\nm=") {
        return Some("an SDP session description");
    }
    if starts("[playlist]") || starts("<asx") {
        return Some("a playlist");
    }
    let lines: Vec<&str> = trimmed.lines().take(8).collect();
    if !lines.is_empty()
        && lines
            .iter()
            .all(|line| line.is_empty() || line.starts_with('#') || line.starts_with("file "))
        && lines.iter().any(|line| line.starts_with("file "))
    {
        return Some("a concat list");
    }
    None
}

#[derive(Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Deserialize)]
struct ProbeStream {
    index: u32,
    codec_type: Option<String>,
    codec_name: Option<String>,
    sample_rate: Option<String>,
    channels: Option<u32>,
    #[serde(default)]
    disposition: std::collections::HashMap<String, i64>,
}

#[derive(Deserialize)]
struct ProbeFormat {
    format_name: String,
    duration: Option<String>,
}

/// Runs ffprobe on `input` and lists its audio streams.
async fn probe(input: &Path, limits: &Limits) -> Result<Probe, MediaError> {
    let output = run_ffprobe(
        &[
            "-protocol_whitelist",
            PROTOCOL_WHITELIST,
            "-format_whitelist",
            FORMAT_WHITELIST,
            "-max_pixels",
            MAX_PIXELS,
            "-max_alloc",
            MAX_ALLOC,
            "-show_entries",
            "format=format_name,duration:stream=index,codec_type,codec_name,sample_rate,channels:stream_disposition=default,attached_pic",
        ],
        input,
        limits,
    )
    .await?;

    let format = output.format.ok_or_else(|| {
        MediaError::rejected(FailureReason::Unreadable, "ffprobe found no container")
    })?;
    let audio = output
        .streams
        .into_iter()
        .filter(|stream| stream.codec_type.as_deref() == Some("audio"))
        .filter(|stream| stream.disposition.get("attached_pic").copied().unwrap_or(0) == 0)
        .filter_map(|stream| {
            let sample_rate = stream
                .sample_rate
                .as_deref()?
                .parse::<u32>()
                .ok()
                .filter(|rate| *rate > 0)?;
            let channels = stream.channels.filter(|channels| *channels > 0)?;
            Some(AudioStream {
                index: stream.index,
                codec: stream.codec_name.unwrap_or_default(),
                sample_rate,
                channels,
                is_default: stream.disposition.get("default").copied().unwrap_or(0) == 1,
            })
        })
        .collect();
    Ok(Probe {
        claimed_duration: format
            .duration
            .as_deref()
            .and_then(|text| text.parse().ok()),
        format: format.format_name,
        audio,
    })
}

/// Picks the audio stream to extract: the first stream flagged default among
/// those with samples, or the first such stream when none is flagged.
/// `convert` then swaps it for another when it is digital silence.
pub fn choose_stream(probe: &Probe) -> Option<&AudioStream> {
    probe
        .audio
        .iter()
        .find(|stream| stream.is_default)
        .or_else(|| probe.audio.first())
}

/// Loudest level (dBFS) at or below which a stream counts as digital silence.
const SILENCE_DB: f64 = -90.0;

/// Seconds of each stream measured when looking for silence.
const SILENCE_PROBE_SECONDS: &str = "60";

/// Replaces `chosen` with another audio stream when `chosen` is digital
/// silence over its first minute and the other is not: a muted track flagged
/// default, or listed first, must not win over the one with sound. Any
/// failure to measure keeps `chosen`.
async fn avoid_silence(
    input: &Path,
    probe: &Probe,
    chosen: AudioStream,
    limits: &Limits,
) -> AudioStream {
    match max_volume(input, &probe.format, chosen.index, limits).await {
        Some(level) if level <= SILENCE_DB => {}
        _ => return chosen,
    }
    for other in probe
        .audio
        .iter()
        .filter(|other| other.index != chosen.index)
    {
        if max_volume(input, &probe.format, other.index, limits)
            .await
            .is_some_and(|level| level > SILENCE_DB)
        {
            debug!(
                silent = chosen.index,
                chosen = other.index,
                "the preferred audio stream is silent; using another"
            );
            return other.clone();
        }
    }
    chosen
}

/// Measures the loudest sample of a stream's first minute in dBFS with ffmpeg's volumedetect.
async fn max_volume(input: &Path, format: &str, index: u32, limits: &Limits) -> Option<f64> {
    let demuxer = format.split(',').next().unwrap_or(format);
    let mut command = tokio::process::Command::new(ffmpeg_sidecar::paths::ffmpeg_path());
    command
        .args([
            "-nostdin",
            "-hide_banner",
            "-protocol_whitelist",
            PROTOCOL_WHITELIST,
        ])
        .args([
            "-format_whitelist",
            FORMAT_WHITELIST,
            "-max_pixels",
            MAX_PIXELS,
            "-f",
            demuxer,
            "-i",
        ])
        .arg(input)
        .args([
            "-map",
            &format!("0:{index}"),
            "-t",
            SILENCE_PROBE_SECONDS,
            "-af",
            "volumedetect",
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(limits.timeout, command.output())
        .await
        .ok()?
        .ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let value = stderr
        .lines()
        .find_map(|line| line.split("max_volume:").nth(1))?;
    let value = value.trim().trim_end_matches("dB").trim();
    if value == "-inf" {
        return Some(f64::NEG_INFINITY);
    }
    value.parse().ok()
}

/// Runs ffprobe with `args` on `input` and parses its JSON output, mapping its
/// errors to reasons a user understands.
async fn run_ffprobe(
    args: &[&str],
    input: &Path,
    limits: &Limits,
) -> Result<ProbeOutput, MediaError> {
    let mut command = tokio::process::Command::new(ffmpeg_sidecar::ffprobe::ffprobe_path());
    command
        .args(["-v", "error", "-hide_banner", "-of", "json"])
        .args(args)
        .arg("-i")
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|err| missing_tool("ffprobe", &err))?;
    let output = tokio::time::timeout(limits.timeout, child.wait_with_output())
        .await
        .map_err(|_| MediaError::rejected(FailureReason::LimitExceeded, "ffprobe timed out"))?
        .map_err(|err| MediaError::Internal(format!("ffprobe failed: {err}")))?;

    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(classify_failure(&stderr));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|err| MediaError::Internal(format!("ffprobe printed invalid JSON: {err}")))
}

/// Maps ffmpeg's or ffprobe's error output to a failure reason.
///
/// The wording is ffmpeg's (checked against ffmpeg 5.1), so it is matched
/// here and never shown to users: they get the reason's own message.
pub fn classify_failure(stderr: &str) -> MediaError {
    let reason = if stderr.contains("not on whitelist") {
        FailureReason::UnsupportedFormat
    } else if stderr.contains("moov atom not found")
        || stderr.contains("Truncated")
        || stderr.contains("truncated")
        || stderr.contains("End of file")
    {
        FailureReason::Truncated
    } else {
        FailureReason::Unreadable
    };
    // Keep only the last line: it names the failure without echoing file contents.
    let detail = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .to_owned();
    MediaError::rejected(reason, detail)
}

fn missing_tool(tool: &str, err: &std::io::Error) -> MediaError {
    if err.kind() == std::io::ErrorKind::NotFound {
        return MediaError::Internal(format!(
            "{tool} is not installed or not on PATH; install the ffmpeg package (Debian and Ubuntu: apt-get install ffmpeg)"
        ));
    }
    MediaError::Internal(format!("cannot start {tool}: {err}"))
}

/// Conditions ffmpeg's log reported about a run.
#[derive(Debug, Default)]
struct EncodeLog {
    input_truncated: bool,
    output_limit_reached: bool,
}

/// Encodes the chosen stream to MP3 with ffmpeg, killing it after the time limit.
async fn encode(
    input: &Path,
    output: &Path,
    probe: &Probe,
    stream: &AudioStream,
    options: EncodeOptions,
    limits: &Limits,
) -> Result<EncodeLog, MediaError> {
    let demuxer = probe
        .format
        .split(',')
        .next()
        .unwrap_or(&probe.format)
        .to_owned();
    let mut command = FfmpegCommand::new();
    command
        .args([
            "-nostdin",
            "-protocol_whitelist",
            PROTOCOL_WHITELIST,
            "-format_whitelist",
            FORMAT_WHITELIST,
        ])
        .args([
            "-max_pixels",
            MAX_PIXELS,
            "-max_alloc",
            MAX_ALLOC,
            "-f",
            &demuxer,
        ])
        .input(input)
        .map(format!("0:{}", stream.index))
        .args([
            "-vn",
            "-sn",
            "-dn",
            "-map_metadata",
            "-1",
            "-c:a",
            "libmp3lame",
        ]);
    match options.bitrate_kbps {
        Some(kbps) => command.args(["-b:a", &format!("{kbps}k")]),
        None => command.args(["-q:a", "2"]),
    };
    command
        .args(["-ar", &output_sample_rate(stream.sample_rate).to_string()])
        .args(["-ac", &stream.channels.min(2).to_string()])
        .args(["-t", &limits.max_duration_seconds.to_string()])
        .args(["-fs", &limits.max_output_bytes.to_string()])
        .args(["-f", "mp3", "-y"])
        .output(output);

    let mut child = command
        .spawn()
        .map_err(|err| missing_tool("ffmpeg", &err))?;
    let events = child
        .iter()
        .map_err(|err| MediaError::Internal(format!("cannot read ffmpeg's output: {err}")))?;
    let child = Arc::new(Mutex::new(child));
    // Kills ffmpeg when this future is dropped (a cancelled request, a shutdown).
    let _guard = KillOnDrop(Arc::clone(&child));

    // The event iterator blocks on ffmpeg's pipes, so it runs on a blocking thread.
    let reader = tokio::task::spawn_blocking(move || {
        let mut errors = Vec::new();
        let mut truncated = false;
        for event in events {
            match event {
                FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, line)
                | FfmpegEvent::Error(line) => {
                    truncated |= is_truncation(&line);
                    errors.push(line);
                }
                FfmpegEvent::Log(LogLevel::Warning, line) => {
                    truncated |= is_truncation(&line);
                    debug!(ffmpeg = %line, "warning");
                }
                _ => {}
            }
        }
        (errors, truncated)
    });
    let (errors, input_truncated) = match tokio::time::timeout(limits.timeout, reader).await {
        Ok(joined) => joined
            .map_err(|err| MediaError::Internal(format!("ffmpeg reader task failed: {err}")))?,
        Err(_) => {
            warn!(
                timeout_seconds = limits.timeout.as_secs(),
                "ffmpeg timed out; killing it"
            );
            let child = Arc::clone(&child);
            let _ = tokio::task::spawn_blocking(move || {
                let mut child = child.lock().expect("ffmpeg child lock is not poisoned");
                let _ = child.kill();
                let _ = child.wait();
            })
            .await;
            return Err(MediaError::rejected(
                FailureReason::LimitExceeded,
                format!(
                    "ffmpeg ran longer than {} seconds",
                    limits.timeout.as_secs()
                ),
            ));
        }
    };
    let status = tokio::task::spawn_blocking(move || {
        child
            .lock()
            .expect("ffmpeg child lock is not poisoned")
            .wait()
    })
    .await
    .map_err(|err| MediaError::Internal(format!("waiting for ffmpeg failed: {err}")))?
    .map_err(|err| MediaError::Internal(format!("waiting for ffmpeg failed: {err}")))?;

    let joined = errors.join("\n");
    if !status.success() {
        return Err(classify_failure(&joined));
    }
    let written = tokio::fs::metadata(output)
        .await
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    Ok(EncodeLog {
        input_truncated,
        // ffmpeg stops at -fs without an error, so a full-size file means the limit cut it.
        output_limit_reached: written >= limits.max_output_bytes,
    })
}

/// Kills an ffmpeg process that is still running when dropped.
struct KillOnDrop(Arc<Mutex<ffmpeg_sidecar::child::FfmpegChild>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // A held lock means a blocking task is already waiting for or killing
        // this process, after ffmpeg closed its output; blocking here would stall.
        if let Ok(mut child) = self.0.try_lock()
            && matches!(child.as_inner_mut().try_wait(), Ok(None))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether an ffmpeg log line says the input ended before its container said
/// it would. The wording is ffmpeg's (checked against ffmpeg 5.1): the MP4
/// demuxer reports a "partial file", the Matroska demuxer a file that "ended
/// prematurely".
fn is_truncation(line: &str) -> bool {
    [
        "partial file",
        "File ended prematurely",
        "Truncating packet",
    ]
    .iter()
    .any(|marker| line.contains(marker))
}

/// MP3 has no 8, 11.025, 12, 16, 22.05 or 24 kHz that every player accepts
/// (those are MPEG-2 and 2.5 rates), so the output is 44.1 kHz for rates of
/// the 11.025 kHz family and 48 kHz for the others.
pub fn output_sample_rate(input_rate: u32) -> u32 {
    if input_rate.is_multiple_of(11_025) {
        44_100
    } else {
        48_000
    }
}

/// Counts the frames of the MP3 ffmpeg wrote and reads its duration, sample
/// rate and channels from the frame headers.
async fn measure_mp3(path: &Path) -> Result<Converted, MediaError> {
    let path = path.to_path_buf();
    let stats = tokio::task::spawn_blocking(move || crate::mp3::inspect(&path))
        .await
        .map_err(|err| MediaError::Internal(format!("reading the MP3 failed: {err}")))?
        .map_err(|err| {
            MediaError::Internal(format!("cannot read the MP3 written by ffmpeg: {err}"))
        })?;
    Ok(Converted {
        duration_seconds: stats.duration_seconds,
        sample_rate: stats.sample_rate,
        channels: stats.channels,
        frames: stats.frames,
        warnings: Vec::new(),
    })
}

/// Checks that ffmpeg and ffprobe are installed, with a message that says
/// which package to install when they are not. It looks the programs up on
/// `PATH` without running them, so it costs no process start.
///
/// # Errors
///
/// A message naming the missing tool and the package that provides it.
pub fn check_tools() -> Result<(), String> {
    for tool in [
        ffmpeg_sidecar::paths::ffmpeg_path(),
        ffmpeg_sidecar::ffprobe::ffprobe_path(),
    ] {
        if !is_executable_on_path(&tool) {
            let err = std::io::Error::from(std::io::ErrorKind::NotFound);
            if let MediaError::Internal(message) = missing_tool(&tool.display().to_string(), &err) {
                return Err(message);
            }
        }
    }
    Ok(())
}

/// Checks whether `program` names an executable file, directly or through `PATH`.
fn is_executable_on_path(program: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program);
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| executable(&dir.join(program))))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_on_path() {
        assert!(is_executable_on_path(Path::new("ffmpeg")));
        assert!(!is_executable_on_path(Path::new("no-such-program-here")));
        assert!(check_tools().is_ok());
    }

    #[test]
    fn playlists_and_scripts_are_recognised() {
        let cases: [(&[u8], &str); 6] = [
            (b"#EXTM3U\n#EXTINF:10,\nsecret.txt\n", "HLS"),
            (b"ffconcat version 1.0\nfile secret.txt\n", "ffconcat"),
            (
                b"<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash\">",
                "DASH",
            ),
            (b"\xef\xbb\xbf  #EXTM3U\n", "HLS"),
            (b"file '/etc/passwd'\nfile 'b.mp4'\n", "concat"),
            (
                b"<CompositionPlaylist xmlns=\"http://www.smpte-ra.org\">",
                "IMF",
            ),
        ];
        for (head, expected) in cases {
            let found =
                reference_format(head).unwrap_or_else(|| panic!("not recognised: {expected}"));
            assert!(found.contains(expected), "{found} for {expected}");
        }
    }

    #[test]
    fn media_headers_are_not_playlists() {
        assert_eq!(
            reference_format(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00"),
            None
        );
        assert_eq!(reference_format(b"\x1aE\xdf\xa3\x9f\x42\x86\x81\x01"), None);
        assert_eq!(reference_format(b"ID3\x04\x00\x00\x00\x00\x00\x00"), None);
        assert_eq!(reference_format(b"plain text that is not media"), None);
    }

    #[test]
    fn sample_rates_map_to_mpeg1_rates() {
        assert_eq!(output_sample_rate(8_000), 48_000);
        assert_eq!(output_sample_rate(11_025), 44_100);
        assert_eq!(output_sample_rate(22_050), 44_100);
        assert_eq!(output_sample_rate(44_100), 44_100);
        assert_eq!(output_sample_rate(48_000), 48_000);
        assert_eq!(output_sample_rate(96_000), 48_000);
    }

    #[test]
    fn default_stream_wins() {
        let stream = |index, is_default| AudioStream {
            index,
            codec: "aac".into(),
            sample_rate: 48_000,
            channels: 2,
            is_default,
        };
        let probe = Probe {
            format: "mov".into(),
            claimed_duration: None,
            audio: vec![stream(1, false), stream(2, true)],
        };
        assert_eq!(choose_stream(&probe).map(|s| s.index), Some(2));
        let probe = Probe {
            audio: vec![stream(3, false), stream(4, false)],
            ..probe
        };
        assert_eq!(choose_stream(&probe).map(|s| s.index), Some(3));
    }

    #[test]
    fn ffmpeg_errors_map_to_reasons() {
        let reason = |text: &str| match classify_failure(text) {
            MediaError::Rejected { reason, .. } => reason,
            MediaError::Internal(_) => panic!("internal"),
        };
        assert_eq!(
            reason("[hls @ 0x1] Format not on whitelist 'mov'\nx: Invalid argument"),
            FailureReason::UnsupportedFormat
        );
        assert_eq!(
            reason("[mov @ 0x1] moov atom not found\nx: Invalid data found"),
            FailureReason::Truncated
        );
        assert_eq!(
            reason("x: Invalid data found when processing input"),
            FailureReason::Unreadable
        );
    }
}
