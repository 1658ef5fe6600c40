//! Reading an MP3's frame headers, to check what ffmpeg wrote without
//! starting another process.
//!
//! Only MPEG audio Layer III is recognised, the one layer ffmpeg's libmp3lame
//! writes. An ID3v2 tag at the start is skipped, and a Xing or Info frame
//! (LAME's header frame, which holds no audio) is not counted.

use std::{
    fs::File,
    io::{self, BufReader, Read, Seek, SeekFrom},
    path::Path,
};

/// What the frame headers of an MP3 say.
#[derive(Debug, Clone, PartialEq)]
pub struct Mp3Stats {
    /// Audio frames, without the Xing or Info header frame.
    pub frames: u64,
    pub sample_rate: u32,
    pub channels: u32,
    /// Frames times samples per frame, over the sample rate; it includes the
    /// encoder's delay and padding of a few dozen milliseconds.
    pub duration_seconds: f64,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FrameHeader {
    length: usize,
    sample_rate: u32,
    channels: u32,
    samples: u32,
    /// Offset of the Xing or Info tag inside the frame.
    side_info_end: usize,
}

const MPEG1_BITRATES: [u32; 15] = [
    0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];
const MPEG2_BITRATES: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];

/// Decodes a Layer III frame header, or `None` when `bytes` are not one.
fn parse_header(bytes: [u8; 4]) -> Option<FrameHeader> {
    let word = u32::from_be_bytes(bytes);
    if word >> 21 != 0x7ff {
        return None;
    }
    let version = (word >> 19) & 0b11; // 0: MPEG 2.5, 2: MPEG 2, 3: MPEG 1
    let layer = (word >> 17) & 0b11; // 1: Layer III
    let bitrate_index = ((word >> 12) & 0b1111) as usize;
    let rate_index = ((word >> 10) & 0b11) as usize;
    let padding = (word >> 9) & 1;
    let mono = (word >> 6) & 0b11 == 0b11;
    if version == 1 || layer != 1 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }

    let mpeg1 = version == 3;
    let base_rate = [44_100, 48_000, 32_000][rate_index];
    let sample_rate = match version {
        3 => base_rate,
        2 => base_rate / 2,
        _ => base_rate / 4,
    };
    let bitrate = if mpeg1 {
        MPEG1_BITRATES[bitrate_index]
    } else {
        MPEG2_BITRATES[bitrate_index]
    } * 1000;
    let samples = if mpeg1 { 1152 } else { 576 };
    let length = (samples / 8 * bitrate / sample_rate + padding) as usize;
    let side_info = match (mpeg1, mono) {
        (true, false) => 32,
        (true, true) | (false, false) => 17,
        (false, true) => 9,
    };
    Some(FrameHeader {
        length,
        sample_rate,
        channels: if mono { 1 } else { 2 },
        samples,
        side_info_end: 4 + side_info,
    })
}

/// Counts the audio frames of the MP3 at `path`, following the frames from
/// the first header to the first byte that does not start a frame.
///
/// # Errors
///
/// The error of reading the file.
pub fn inspect(path: &Path) -> io::Result<Mp3Stats> {
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    skip_id3v2(&mut reader)?;

    let mut stats = Mp3Stats {
        frames: 0,
        sample_rate: 0,
        channels: 0,
        duration_seconds: 0.0,
    };
    let mut samples_total = 0u64;
    let mut first = true;
    loop {
        let mut head = [0u8; 4];
        if read_exact_or_end(&mut reader, &mut head)? < 4 {
            break;
        }
        let Some(header) = parse_header(head) else {
            break;
        };
        let mut body = vec![0u8; header.length.saturating_sub(4)];
        if read_exact_or_end(&mut reader, &mut body)? < body.len() {
            break;
        }
        let tag_at = header.side_info_end - 4;
        let is_info_frame = first
            && body
                .get(tag_at..tag_at + 4)
                .is_some_and(|tag| tag == b"Xing" || tag == b"Info");
        first = false;
        if is_info_frame {
            continue;
        }
        stats.frames += 1;
        stats.sample_rate = header.sample_rate;
        stats.channels = stats.channels.max(header.channels);
        samples_total += u64::from(header.samples);
    }
    if stats.sample_rate > 0 {
        stats.duration_seconds = samples_total as f64 / f64::from(stats.sample_rate);
    }
    Ok(stats)
}

fn skip_id3v2(reader: &mut BufReader<File>) -> io::Result<()> {
    let mut tag = [0u8; 10];
    if read_exact_or_end(reader, &mut tag)? == 10 && &tag[..3] == b"ID3" {
        // The size is four 7-bit bytes ("syncsafe"), excluding the 10-byte header and an optional footer.
        let size = tag[6..10]
            .iter()
            .fold(0u64, |size, byte| (size << 7) | u64::from(byte & 0x7f));
        let footer = if tag[5] & 0x10 != 0 { 10 } else { 0 };
        reader.seek(SeekFrom::Start(10 + size + footer))?;
    } else {
        reader.seek(SeekFrom::Start(0))?;
    }
    Ok(())
}

/// Reads as much of `buffer` as the file still has; returns how much.
fn read_exact_or_end(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_decode() {
        // MPEG 1 Layer III, 128 kbit/s, 44.1 kHz, stereo, no padding: 417 bytes.
        let header = parse_header([0xff, 0xfb, 0x90, 0x00]).unwrap();
        assert_eq!(header.length, 417);
        assert_eq!(header.sample_rate, 44_100);
        assert_eq!(header.channels, 2);
        assert_eq!(header.samples, 1152);
        // MPEG 1 Layer III, 320 kbit/s, 48 kHz, mono, padded.
        let header = parse_header([0xff, 0xfb, 0xe6, 0xc0]).unwrap();
        assert_eq!(header.length, 961);
        assert_eq!(header.channels, 1);
    }

    #[test]
    fn other_bytes_are_not_headers() {
        assert_eq!(parse_header(*b"ID3\x04"), None);
        assert_eq!(parse_header([0xff, 0xfd, 0x90, 0x00]), None, "Layer II");
        assert_eq!(
            parse_header([0xff, 0xfb, 0xf0, 0x00]),
            None,
            "bad bitrate index"
        );
        assert_eq!(
            parse_header([0xff, 0xfb, 0x9c, 0x00]),
            None,
            "bad sample rate index"
        );
    }
}
