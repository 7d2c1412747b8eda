//! The conversion against the real FFmpeg libraries and CLI: formats,
//! options, downmix, tags, fast path, progress, time limit and verification.

use super::*;

use super::limit::*;
use super::target::*;
use super::verify::*;

use std::path::PathBuf;
use std::process::Command;

use ffmpeg::format::Sample;

use serde_json::{Value, json};

use common::testing::{ffmpeg as ffmpeg_cli, ffprobe};

fn audio_stream(probe: &Value) -> &Value {
    probe["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|stream| stream["codec_type"] == "audio")
        .expect("an audio stream")
}

fn number(value: &Value) -> f64 {
    value
        .as_str()
        .expect("ffprobe prints numbers as strings")
        .parse()
        .expect("a number")
}

/// MD5 of the decoded samples, to compare two MP3s whatever their tags.
fn decoded_md5(path: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-f", "md5", "-"])
        .output()
        .expect("ffmpeg CLI runs");
    assert!(output.status.success());
    String::from_utf8(output.stdout).expect("utf-8")
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("tempdir"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf-8 path").to_owned()
    }
}

/// Converts with the defaults and checks the output is a readable MP3
/// that the report describes truthfully.
fn convert_ok(input: &Path, output: &Path, options: &Options, title: &str) -> (Report, Value) {
    let report = convert(input, output, options, title).expect("conversion succeeds");
    let probe = ffprobe(output);
    assert_eq!(probe["format"]["format_name"], "mp3");
    let stream = audio_stream(&probe);
    assert_eq!(stream["codec_name"], "mp3");
    assert_eq!(
        number(&stream["sample_rate"]),
        f64::from(report.sample_rate)
    );
    assert_eq!(stream["channels"], u64::from(report.channels));
    assert_eq!(
        report.output_bytes,
        std::fs::metadata(output).expect("output exists").len()
    );
    // FFmpeg's demuxer counts whole frames: LAME's delay (1105 samples)
    // and end padding (up to about two frames) on top of the audio.
    let probed = number(&probe["format"]["duration"]);
    let frame = if report.sample_rate >= 32_000 {
        1152.0
    } else {
        576.0
    };
    let padding = (1105.0 + 3.0 * frame) / f64::from(report.sample_rate);
    assert!(
        (probed - padding..=probed + 0.001).contains(&report.duration_s),
        "report says {} s, ffprobe {probed} s",
        report.duration_s
    );
    (report, probe)
}

/// The MP3 decodes to as many samples as the source (AAC sources carry
/// up to about 25 ms of priming the decoder hands out too).
fn assert_mp3_duration(report: &Report, source_s: f64) {
    assert!(
        (source_s - 0.005..=source_s + 0.03).contains(&report.duration_s),
        "{} s is not about {source_s} s",
        report.duration_s
    );
}

fn assert_close(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= expected * tolerance,
        "{actual} is not within {}% of {expected}",
        tolerance * 100.0
    );
}

#[test]
fn mp4_with_h264_and_aac_becomes_a_tagged_stereo_mp3() {
    let dir = Dir::new();
    let input = dir.str("clip.mp4");
    ffmpeg_cli(
        "-f lavfi -i testsrc=size=160x120:rate=15:duration=4 \
         -f lavfi -i sine=frequency=440:sample_rate=44100:duration=4 \
         -c:v libx264 -preset ultrafast -c:a aac -ac 2 -shortest",
        &[
            "-metadata",
            "title=Source title",
            "-metadata",
            "artist=The Artist",
            "-metadata",
            "album=The Album",
            "-metadata",
            "date=2024",
            "-metadata",
            "comment=Made in a test",
            &input,
        ],
    );
    let source_audio = number(&audio_stream(&ffprobe(Path::new(&input)))["duration"]);
    let output = dir.path("clip.mp3");

    let (report, probe) = convert_ok(
        Path::new(&input),
        &output,
        &Options::default(),
        "My talk: part 1",
    );

    assert_eq!(report.sample_rate, 44_100);
    assert_eq!(report.channels, 2);
    assert_close(report.duration_s, source_audio, 0.02);
    assert_mp3_duration(&report, 4.0);
    // A sine tone is easy: V2 gives far less than its 190 kbit/s target.
    assert!((32..=320).contains(&report.bitrate_kbps), "{report:?}");
    assert!(!report.copied);
    let tags = &probe["format"]["tags"];
    // The source's own title wins over the file name.
    assert_eq!(tags["title"], "Source title");
    assert_eq!(tags["artist"], "The Artist");
    assert_eq!(tags["album"], "The Album");
    assert_eq!(tags["date"], "2024");
    assert_eq!(tags["comment"], "Made in a test");
}

#[test]
fn output_decodes_to_the_same_samples_as_the_ffmpeg_cli() {
    let dir = Dir::new();
    let tone = "sine=frequency=300:beep_factor=4:duration=2";
    let sources = [
        // (Surround differs on purpose: our downmix matrix is normalised.)
        ("stereo.mp4", "-c:a aac -ac 2"),
        ("phone.wav", "-ar 8000 -ac 1 -c:a pcm_s16le"),
        ("plain.wav", "-ac 2 -c:a pcm_s16le"),
        ("opus.mkv", "-ac 2 -c:a libopus"),
    ];
    for (name, codec_args) in sources {
        let input = dir.str(name);
        ffmpeg_cli(&format!("-f lavfi -i {tone} {codec_args}"), &[&input]);
        let cli = dir.str(&format!("{name}.cli.mp3"));
        ffmpeg_cli(
            "-i",
            &[&input, "-vn", "-c:a", "libmp3lame", "-q:a", "2", &cli],
        );
        let ours = dir.path(&format!("{name}.ours.mp3"));

        let (_, probe) = convert_ok(Path::new(&input), &ours, &Options::default(), "t");

        assert_eq!(decoded_md5(&ours), decoded_md5(Path::new(&cli)), "{name}");
        let theirs = ffprobe(Path::new(&cli));
        for field in [
            "sample_rate",
            "channels",
            "channel_layout",
            "sample_fmt",
            "duration",
        ] {
            assert_eq!(
                audio_stream(&probe)[field],
                audio_stream(&theirs)[field],
                "{name}: {field}"
            );
        }
        assert_eq!(
            probe["format"]["tags"]["encoder"], theirs["format"]["tags"]["encoder"],
            "{name}"
        );
    }
}

#[test]
fn matroska_with_opus_keeps_48_khz_stereo() {
    let dir = Dir::new();
    let input = dir.str("clip.mkv");
    ffmpeg_cli(
        "-f lavfi -i testsrc=size=160x120:rate=15:duration=3 \
         -f lavfi -i sine=frequency=440:sample_rate=48000:duration=3 \
         -c:v libx264 -preset ultrafast -c:a libopus -ac 2",
        &["-metadata", "artist=Opus Artist", &input],
    );
    let output = dir.path("clip.mp3");

    let (report, probe) = convert_ok(Path::new(&input), &output, &Options::default(), "Opus");

    assert_eq!(report.sample_rate, 48_000);
    assert_eq!(report.channels, 2);
    assert_mp3_duration(&report, 3.0);
    assert_eq!(probe["format"]["tags"]["title"], "Opus");
    assert_eq!(probe["format"]["tags"]["artist"], "Opus Artist");
}

#[test]
fn surround_5_1_is_downmixed_to_stereo() {
    let dir = Dir::new();
    let input = dir.str("surround.m4a");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:duration=2 -af aformat=channel_layouts=5.1 -c:a aac",
        &[&input],
    );
    assert_eq!(audio_stream(&ffprobe(Path::new(&input)))["channels"], 6);
    let output = dir.path("surround.mp3");

    let (report, probe) = convert_ok(Path::new(&input), &output, &Options::default(), "5.1");

    assert_eq!(report.channels, 2);
    assert_eq!(audio_stream(&probe)["channel_layout"], "stereo");
    assert_mp3_duration(&report, 2.0);
}

#[test]
fn mono_8_khz_stays_mono_8_khz() {
    let dir = Dir::new();
    let input = dir.str("phone.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=8000:duration=3 -ac 1 -c:a pcm_s16le",
        &[&input],
    );
    let output = dir.path("phone.mp3");

    let (report, _) = convert_ok(Path::new(&input), &output, &Options::default(), "Phone");

    assert_eq!(report.sample_rate, 8_000);
    assert_eq!(report.channels, 1);
    assert_mp3_duration(&report, 3.0);
}

#[test]
fn stereo_wav_without_a_channel_layout_converts() {
    let dir = Dir::new();
    let input = dir.str("plain.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:duration=2 -ac 2 -c:a pcm_s16le",
        &[&input],
    );
    // A plain (non-extensible) WAV header has no channel mask.
    assert!(
        audio_stream(&ffprobe(Path::new(&input)))
            .get("channel_layout")
            .is_none()
    );
    let output = dir.path("plain.mp3");

    let (report, _) = convert_ok(Path::new(&input), &output, &Options::default(), "Plain");

    assert_eq!(report.channels, 2);
    assert_mp3_duration(&report, 2.0);
}

#[test]
fn a_rate_mp3_cannot_carry_becomes_44_1_khz() {
    let dir = Dir::new();
    let input = dir.str("hires.flac");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=96000:duration=2 -c:a flac",
        &[&input],
    );
    let output = dir.path("hires.mp3");

    let (report, _) = convert_ok(Path::new(&input), &output, &Options::default(), "Hi-res");

    assert_eq!(report.sample_rate, 44_100);
    assert_eq!(report.channels, 1);
    assert_mp3_duration(&report, 2.0);
}

#[test]
fn a_sample_rate_change_mid_stream_keeps_all_the_audio() {
    let dir = Dir::new();
    let first = dir.str("first.ts");
    let second = dir.str("second.ts");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 -c:a mp2 -ac 2",
        &[&first],
    );
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=660:sample_rate=48000:duration=2 \
         -c:a mp2 -ac 2 -output_ts_offset 2",
        &[&second],
    );
    let joined = dir.path("joined.ts");
    let mut bytes = std::fs::read(&first).expect("first part");
    bytes.extend(std::fs::read(&second).expect("second part"));
    std::fs::write(&joined, bytes).expect("joined file");
    let output = dir.path("joined.mp3");

    let (report, _) = convert_ok(&joined, &output, &Options::default(), "Joined");

    assert_eq!(report.sample_rate, 44_100);
    assert_mp3_duration(&report, 4.0);
}

#[test]
fn cbr_128_gives_128_kbps() {
    let dir = Dir::new();
    let input = dir.str("tone.m4a");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:duration=3 -ac 2 -c:a aac",
        &[&input],
    );
    let output = dir.path("tone.mp3");
    let options =
        Options::from_json(&json!({"quality": "cbr", "bitrate_kbps": 128})).expect("valid options");

    let (report, probe) = convert_ok(Path::new(&input), &output, &options, "CBR");

    assert_eq!(report.bitrate_kbps, 128);
    assert_close(number(&audio_stream(&probe)["bit_rate"]), 128_000.0, 0.02);
}

#[test]
fn video_without_audio_is_no_audio() {
    let dir = Dir::new();
    let input = dir.str("silent.mp4");
    ffmpeg_cli(
        "-f lavfi -i testsrc=size=160x120:rate=15:duration=1 \
         -c:v libx264 -preset ultrafast",
        &[&input],
    );
    let output = dir.path("silent.mp3");

    let error = convert(Path::new(&input), &output, &Options::default(), "x")
        .expect_err("no audio to convert");

    assert!(matches!(error, TranscodeError::NoAudio), "{error:?}");
    assert!(error.is_permanent());
    assert!(!output.exists());
}

#[test]
fn random_bytes_are_unreadable() {
    let dir = Dir::new();
    let input = dir.path("noise.mp4");
    // A fixed xorshift sequence, so the test sees the same bytes every run.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(&input, bytes).expect("write noise");
    let output = dir.path("noise.mp3");

    let error = convert(&input, &output, &Options::default(), "x").expect_err("not media");

    assert!(matches!(error, TranscodeError::Unreadable(_)), "{error:?}");
    assert!(error.is_permanent());
    assert!(!output.exists());
}

#[test]
fn a_playlist_cannot_make_ffmpeg_fetch_urls() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("address").port();
    let dir = Dir::new();
    let input = dir.path("upload.m3u8");
    std::fs::write(
        &input,
        format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n\
             http://127.0.0.1:{port}/segment.ts\n#EXT-X-ENDLIST\n"
        ),
    )
    .expect("write playlist");
    let output = dir.path("upload.mp3");

    let error = convert(&input, &output, &Options::default(), "x").expect_err("refused");

    assert!(error.is_permanent(), "{error:?}");
    assert!(!output.exists());
    assert!(
        listener.accept().is_err(),
        "FFmpeg connected to the URL in the playlist"
    );
}

#[test]
fn an_empty_file_is_unreadable() {
    let dir = Dir::new();
    let input = dir.path("empty.mp4");
    std::fs::write(&input, b"").expect("write empty file");
    let output = dir.path("empty.mp3");

    let error = convert(&input, &output, &Options::default(), "x").expect_err("empty");

    assert!(matches!(error, TranscodeError::Unreadable(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("the file is not a video or audio file FFmpeg can read: "),
        "{error}"
    );
    assert!(!output.exists());
}

#[test]
fn a_missing_input_is_a_retryable_io_error() {
    let dir = Dir::new();
    let output = dir.path("out.mp3");

    let error = convert(&dir.path("nope.mp4"), &output, &Options::default(), "x")
        .expect_err("missing input");

    assert!(matches!(error, TranscodeError::Io(_)), "{error:?}");
    assert!(!error.is_permanent());
    assert!(!output.exists());
}

#[test]
fn out_of_range_options_are_rejected_before_any_work() {
    let dir = Dir::new();
    let output = dir.path("out.mp3");
    let options = Options {
        quality: Quality::Vbr(12),
        ..Options::default()
    };

    let error = convert(&dir.path("nope.mp4"), &output, &options, "x").expect_err("bad");

    assert!(
        matches!(error, TranscodeError::InvalidOptions(_)),
        "{error:?}"
    );
    assert!(!output.exists());
}

#[test]
fn a_partial_output_is_removed_unless_kept() {
    let dir = Dir::new();
    let failed = dir.path("failed.mp3");
    let finished = dir.path("finished.mp3");
    let untouched = dir.path("untouched.mp3");
    for path in [&failed, &finished, &untouched] {
        std::fs::write(path, b"ID3").expect("write file");
    }

    {
        let mut partial = PartialOutput::new(&failed);
        partial.mark_created();
    }
    {
        let mut partial = PartialOutput::new(&finished);
        partial.mark_created();
        partial.keep();
    }
    drop(PartialOutput::new(&untouched));

    assert!(!failed.exists());
    assert!(finished.exists());
    assert!(
        untouched.exists(),
        "a file we never created is not ours to delete"
    );
}

#[test]
fn options_default_to_vbr_v2() {
    assert_eq!(Options::default().quality, Quality::Vbr(2));
    assert_eq!(
        Options::from_json(&json!({})).expect("{}"),
        Options::default()
    );
    assert_eq!(
        Options::from_json(&Value::Null).expect("null"),
        Options::default()
    );
}

#[test]
fn options_accept_every_vbr_level_and_cbr() {
    for level in 0..=9u8 {
        let options = Options::from_json(&json!({ "quality": format!("V{level}") }))
            .expect("valid VBR level");
        assert_eq!(options.quality, Quality::Vbr(level));
    }
    assert_eq!(
        Options::from_json(&json!({"quality": "v0"}))
            .expect("lower case")
            .quality,
        Quality::Vbr(0)
    );
    for kbps in [32, 192, 320] {
        let options = Options::from_json(&json!({"quality": "cbr", "bitrate_kbps": kbps}))
            .expect("valid CBR");
        assert_eq!(options.quality, Quality::Cbr(kbps));
    }
}

#[test]
fn options_reject_bad_input_naming_the_field() {
    let cases = [
        (json!({"qualty": "V2"}), "qualty"),
        (json!({"quality": "V10"}), "quality"),
        (json!({"quality": "V"}), "quality"),
        (json!({"quality": "high"}), "quality"),
        (json!({"quality": 2}), "quality"),
        (
            json!({"quality": "cbr", "bitrate_kbps": 999}),
            "bitrate_kbps",
        ),
        (
            json!({"quality": "cbr", "bitrate_kbps": 16}),
            "bitrate_kbps",
        ),
        (
            json!({"quality": "cbr", "bitrate_kbps": 192.5}),
            "bitrate_kbps",
        ),
        (
            json!({"quality": "cbr", "bitrate_kbps": "192"}),
            "bitrate_kbps",
        ),
        (json!({"quality": "cbr"}), "bitrate_kbps"),
        (
            json!({"quality": "V2", "bitrate_kbps": 192}),
            "bitrate_kbps",
        ),
        (json!({"bitrate_kbps": 192}), "bitrate_kbps"),
        (json!(["V2"]), "object"),
        (json!({"sample_rate": 96000}), "sample_rate"),
        (json!({"sample_rate": 8000}), "sample_rate"),
        (json!({"sample_rate": "44100"}), "sample_rate"),
        (json!({"channels": "5.1"}), "channels"),
        (json!({"channels": 2}), "channels"),
        (json!({"audio_track": -1}), "audio_track"),
        (json!({"audio_track": 1.5}), "audio_track"),
        (json!({"audio_track": "1"}), "audio_track"),
        (json!({"trim_start_s": -1}), "trim_start_s"),
        (json!({"trim_start_s": "1"}), "trim_start_s"),
        (json!({"trim_end_s": 0}), "trim_end_s"),
        (json!({"trim_start_s": 5, "trim_end_s": 2}), "trim_end_s"),
        (json!({"trim_start_s": 2, "trim_end_s": 2}), "trim_end_s"),
        (json!({"normalize": "yes"}), "normalize"),
        (json!({"normalize": 1}), "normalize"),
    ];
    for (value, field) in cases {
        match Options::from_json(&value).map_err(TranscodeError::from) {
            Err(TranscodeError::InvalidOptions(message)) => {
                assert!(
                    message.contains(field),
                    "{value}: {message:?} does not name {field}"
                )
            }
            other => panic!("{value}: expected InvalidOptions, got {other:?}"),
        }
    }
}

#[test]
fn only_io_errors_are_worth_a_retry() {
    let io = TranscodeError::Io(io::Error::from(io::ErrorKind::StorageFull));
    assert!(!io.is_permanent());
    for permanent in [
        TranscodeError::NoAudio,
        TranscodeError::Unreadable("x".into()),
        TranscodeError::Decode("x".into()),
        TranscodeError::InvalidOptions("x".into()),
        TranscodeError::Encode("x".into()),
    ] {
        assert!(permanent.is_permanent(), "{permanent:?}");
    }
    assert_eq!(
        TranscodeError::NoAudio.to_string(),
        "the file has no audio track"
    );
    assert_eq!(
        TranscodeError::Decode("no audio frames could be decoded".into()).to_string(),
        "the audio track could not be decoded: no audio frames could be decoded"
    );
}

#[test]
fn disk_full_from_ffmpeg_is_an_io_error() {
    let error = encode_error(
        "writing",
        ffmpeg::Error::Other {
            errno: ffmpeg::util::error::ENOSPC,
        },
    );
    assert!(matches!(error, TranscodeError::Io(_)), "{error:?}");
    let error = encode_error("writing", ffmpeg::Error::InvalidData);
    assert!(matches!(error, TranscodeError::Encode(_)), "{error:?}");
}

#[test]
fn sample_format_choice_matches_libavfilter() {
    use ffmpeg::format::sample::Type::{Packed, Planar};
    let lame = [
        Sample::I32(Planar),
        Sample::F32(Planar),
        Sample::I16(Planar),
    ];
    let cases = [
        (Sample::F32(Planar), Sample::F32(Planar)),
        (Sample::F32(Packed), Sample::F32(Planar)),
        (Sample::I16(Packed), Sample::I16(Planar)),
        (Sample::I32(Packed), Sample::I32(Planar)),
        (Sample::U8(Packed), Sample::I16(Planar)),
        (Sample::F64(Planar), Sample::I32(Planar)),
    ];
    for (source, expected) in cases {
        assert_eq!(
            pick_sample_format(source, &lame),
            Some(expected),
            "{source:?}"
        );
    }
}

#[test]
fn options_parse_rate_channels_track_trim_and_normalize() {
    let options = Options::from_json(&json!({
        "sample_rate": 22050,
        "channels": "mono",
        "audio_track": 1,
        "trim_start_s": 1.5,
        "trim_end_s": 3,
        "normalize": true,
    }))
    .expect("valid options");
    assert_eq!(
        options,
        Options {
            sample_rate: SampleRate::Hz(22_050),
            channels: Channels::Mono,
            audio_track: Some(1),
            trim_start_s: Some(1.5),
            trim_end_s: Some(3.0),
            normalize: true,
            ..Options::default()
        }
    );
    let keep = Options::from_json(&json!({
        "sample_rate": "keep",
        "channels": "Keep",
        "audio_track": null,
        "normalize": false,
    }))
    .expect("explicit defaults");
    assert_eq!(keep, Options::default());
    for rate in [22_050, 44_100, 48_000] {
        let options = Options::from_json(&json!({ "sample_rate": rate })).expect("rate");
        assert_eq!(options.sample_rate, SampleRate::Hz(rate));
    }
    let stereo = Options::from_json(&json!({"channels": "stereo"})).expect("stereo");
    assert_eq!(stereo.channels, Channels::Stereo);
    let end_only = Options::from_json(&json!({"trim_end_s": 0.5})).expect("end only");
    assert_eq!(end_only.trim_end_s, Some(0.5));
}

#[test]
fn out_of_range_built_options_are_rejected() {
    for options in [
        Options {
            sample_rate: SampleRate::Hz(96_000),
            ..Options::default()
        },
        Options {
            trim_start_s: Some(f64::NAN),
            ..Options::default()
        },
        Options {
            trim_start_s: Some(3.0),
            trim_end_s: Some(1.0),
            ..Options::default()
        },
    ] {
        assert!(
            matches!(
                options.validate().map_err(TranscodeError::from),
                Err(TranscodeError::InvalidOptions(_))
            ),
            "{options:?}"
        );
    }
}

#[test]
fn copy_is_allowed_only_when_nothing_needs_a_re_encode() {
    assert!(Options::default().allows_copy(44_100, 2));
    let same = Options {
        sample_rate: SampleRate::Hz(44_100),
        channels: Channels::Stereo,
        ..Options::default()
    };
    assert!(same.allows_copy(44_100, 2));
    for options in [
        Options {
            quality: Quality::Vbr(5),
            ..Options::default()
        },
        Options {
            sample_rate: SampleRate::Hz(22_050),
            ..Options::default()
        },
        Options {
            channels: Channels::Mono,
            ..Options::default()
        },
        Options {
            trim_start_s: Some(1.0),
            ..Options::default()
        },
        Options {
            trim_end_s: Some(1.0),
            ..Options::default()
        },
        Options {
            normalize: true,
            ..Options::default()
        },
    ] {
        assert!(!options.allows_copy(44_100, 2), "{options:?}");
    }
}

#[test]
fn sample_rate_and_channels_are_applied() {
    let dir = Dir::new();
    let input = dir.str("stereo.m4a");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 -ac 2 -c:a aac",
        &[&input],
    );
    let phone = dir.str("phone.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=8000:duration=2 -ac 1 -c:a pcm_s16le",
        &[&phone],
    );
    let cases = [
        (
            &input,
            json!({"sample_rate": 22050, "channels": "mono"}),
            22_050,
            1,
        ),
        (&input, json!({"sample_rate": 48000}), 48_000, 2),
        (&phone, json!({"channels": "stereo"}), 8_000, 2),
        (
            &phone,
            json!({"sample_rate": 44100, "channels": "keep"}),
            44_100,
            1,
        ),
    ];
    for (index, (source, json, rate, channels)) in cases.into_iter().enumerate() {
        let options = Options::from_json(&json).expect("valid options");
        let output = dir.path(&format!("out{index}.mp3"));

        let (report, probe) = convert_ok(Path::new(source), &output, &options, "t");

        assert_eq!(report.sample_rate, rate, "{json}");
        assert_eq!(report.channels, channels, "{json}");
        assert_eq!(
            number(&audio_stream(&probe)["sample_rate"]),
            f64::from(rate)
        );
        assert_mp3_duration(&report, 2.0);
    }
}

/// A Matroska file with a 2 s mono 44.1 kHz track and a 3 s stereo
/// 48 kHz one.
fn two_track_file(dir: &Dir) -> String {
    let input = dir.str("two.mkv");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 \
         -f lavfi -i sine=frequency=660:sample_rate=48000:duration=3 \
         -map 0:a -map 1:a -c:a flac -ac:a:1 2",
        &[&input],
    );
    input
}

#[test]
fn audio_track_picks_among_the_audio_streams() {
    let dir = Dir::new();
    let input = two_track_file(&dir);
    for (track, rate, channels, seconds) in [(0, 44_100, 1, 2.0), (1, 48_000, 2, 3.0)] {
        let options = Options::from_json(&json!({ "audio_track": track })).expect("valid");
        let output = dir.path(&format!("track{track}.mp3"));

        let (report, _) = convert_ok(Path::new(&input), &output, &options, "t");

        assert_eq!(report.sample_rate, rate, "track {track}");
        assert_eq!(report.channels, channels, "track {track}");
        assert_mp3_duration(&report, seconds);
    }
}

#[test]
fn an_audio_track_out_of_range_is_a_clear_permanent_error() {
    let dir = Dir::new();
    let input = two_track_file(&dir);
    let output = dir.path("none.mp3");
    let options = Options::from_json(&json!({"audio_track": 2})).expect("valid");

    let error = convert(Path::new(&input), &output, &options, "t").expect_err("no track 2");

    assert!(error.is_permanent());
    assert_eq!(
        error.to_string(),
        "invalid conversion options: `audio_track` 2 is out of range: \
         the file has 2 audio tracks (numbered from 0)"
    );
    assert!(!output.exists());
}

#[test]
fn trimming_keeps_the_asked_span() {
    let dir = Dir::new();
    let input = dir.str("six.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=6 -ac 2 -c:a pcm_s16le",
        &[&input],
    );
    let cases = [
        (json!({"trim_start_s": 1, "trim_end_s": 3.5}), 2.5),
        (json!({"trim_start_s": 4}), 2.0),
        (json!({"trim_end_s": 1.25}), 1.25),
        (json!({"trim_start_s": 5.5, "trim_end_s": 100}), 0.5),
    ];
    for (index, (json, seconds)) in cases.into_iter().enumerate() {
        let options = Options::from_json(&json).expect("valid options");
        let output = dir.path(&format!("trim{index}.mp3"));

        let (report, _) = convert_ok(Path::new(&input), &output, &options, "t");

        assert!(
            (report.duration_s - seconds).abs() < 0.002,
            "{json}: {} s instead of {seconds} s",
            report.duration_s
        );
    }
}

#[test]
fn a_trim_start_past_the_end_is_an_invalid_option() {
    let dir = Dir::new();
    let input = dir.str("short.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:duration=1 -c:a pcm_s16le",
        &[&input],
    );
    let output = dir.path("short.mp3");
    let options = Options::from_json(&json!({"trim_start_s": 10})).expect("valid");

    let error = convert(Path::new(&input), &output, &options, "t").expect_err("past end");

    assert!(
        matches!(&error, TranscodeError::InvalidOptions(message) if message.contains("trim_start_s")),
        "{error:?}"
    );
    assert!(!output.exists());
}

/// `(mean_volume, max_volume)` in dB of the decoded file, from the
/// `volumedetect` filter (which measures 16-bit samples, so a clipped
/// signal reads 0.0 dB).
fn volume(path: &Path) -> (f64, f64) {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg CLI runs");
    assert!(output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    let read = |key: &str| -> f64 {
        let line = log
            .lines()
            .find(|line| line.contains(key))
            .unwrap_or_else(|| panic!("no {key} in {log}"));
        let value = line.split(key).nth(1).expect("value").trim();
        value
            .trim_end_matches("dB")
            .trim()
            .parse()
            .expect("a number of dB")
    };
    (read("mean_volume:"), read("max_volume:"))
}

#[test]
fn normalize_brings_a_quiet_recording_up() {
    let dir = Dir::new();
    let input = dir.str("quiet.wav");
    ffmpeg_cli(
        "-f lavfi -i aevalsrc=0.01*sin(2*PI*440*t)*(1+0.5*sin(2*PI*t)):s=44100:d=5 \
         -c:a pcm_s16le",
        &[&input],
    );
    let plain = dir.path("plain.mp3");
    let loud = dir.path("loud.mp3");
    let options = Options::from_json(&json!({"normalize": true})).expect("valid");

    let (plain_report, _) = convert_ok(Path::new(&input), &plain, &Options::default(), "t");
    let (loud_report, _) = convert_ok(Path::new(&input), &loud, &options, "t");

    let (plain_mean, _) = volume(&plain);
    let (loud_mean, loud_max) = volume(&loud);
    assert!(
        loud_mean > plain_mean + 15.0,
        "normalised {loud_mean} dB vs plain {plain_mean} dB"
    );
    assert!(loud_max < 0.0, "normalised peak {loud_max} dB");
    assert_eq!(loud_report.sample_rate, 44_100);
    assert_mp3_duration(&plain_report, 5.0);
    assert_mp3_duration(&loud_report, 5.0);
}

#[test]
fn a_loud_5_1_source_is_downmixed_without_clipping() {
    let dir = Dir::new();
    let input = dir.str("loud51.wav");
    // Every channel in phase at -0.9 dBFS, as float so nothing clips in
    // the source: summed naively, the front channels would reach +7 dB.
    let tone = "0.9*sin(2*PI*440*t)";
    ffmpeg_cli(
        &format!(
            "-f lavfi -i aevalsrc={tone}|{tone}|{tone}|{tone}|{tone}|{tone}:c=5.1:s=48000:d=2 \
             -c:a pcm_f32le"
        ),
        &[&input],
    );
    assert_eq!(audio_stream(&ffprobe(Path::new(&input)))["channels"], 6);
    let output = dir.path("loud51.mp3");
    // The CLI's downmix to float is not normalised: it clips.
    let cli = dir.str("cli.mp3");
    ffmpeg_cli("-i", &[&input, "-c:a", "libmp3lame", "-q:a", "2", &cli]);

    let (report, _) = convert_ok(Path::new(&input), &output, &Options::default(), "5.1");

    assert_eq!(report.channels, 2);
    let (_, peak) = volume(&output);
    let (_, cli_peak) = volume(Path::new(&cli));
    assert!(peak < 0.0, "downmix peaks at {peak} dBFS");
    assert!(peak > -6.0, "downmix is needlessly quiet: {peak} dBFS");
    assert!(cli_peak >= 0.0, "the control did not clip: {cli_peak} dBFS");
}

#[test]
fn tags_are_id3v2_4() {
    let dir = Dir::new();
    let input = dir.str("tagged.m4a");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:duration=1 -c:a aac",
        &["-metadata", "artist=Someone", &input],
    );
    let output = dir.path("tagged.mp3");

    let (_, probe) = convert_ok(Path::new(&input), &output, &Options::default(), "Stem");

    let bytes = std::fs::read(&output).expect("read MP3");
    assert_eq!(&bytes[..5], b"ID3\x04\x00");
    assert_eq!(probe["format"]["tags"]["title"], "Stem");
    assert_eq!(probe["format"]["tags"]["artist"], "Someone");
}

#[test]
fn verification_rejects_a_wrong_duration_and_garbage() {
    assert!(check_duration(10.05, 10.0).is_ok());
    assert!(check_duration(100.9, 100.0).is_ok());
    assert!(check_duration(10.2, 10.0).is_err());
    assert!(check_duration(98.5, 100.0).is_err());

    let dir = Dir::new();
    let input = dir.str("tone.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:duration=4 -c:a pcm_s16le",
        &[&input],
    );
    let output = dir.path("tone.mp3");
    convert_ok(Path::new(&input), &output, &Options::default(), "t");
    let expect_4s = Written {
        expected_s: 4.0,
        copied: false,
        first_packet: None,
    };
    assert!(verify(&output, &expect_4s, &Watchdog::new(None)).is_ok());
    let expect_5s = Written {
        expected_s: 5.0,
        copied: false,
        first_packet: None,
    };
    let error = verify(&output, &expect_5s, &Watchdog::new(None)).expect_err("too short");
    assert!(
        error
            .to_string()
            .starts_with("the MP3 could not be encoded: the MP3 failed verification: it lasts"),
        "{error}"
    );
    let garbage = dir.path("garbage.mp3");
    std::fs::write(&garbage, [0u8; 4096]).expect("write garbage");
    let error = verify(&garbage, &expect_4s, &Watchdog::new(None)).expect_err("garbage");
    assert!(error.to_string().contains("failed verification"), "{error}");
    assert!(error.is_permanent());
}

/// An AVI with MPEG-4 video and MP3 audio, as old cameras and rips make.
fn mp3_in_avi(dir: &Dir, name: &str, seconds: u32) -> String {
    let input = dir.str(name);
    ffmpeg_cli(
        &format!(
            "-f lavfi -i testsrc=size=160x120:rate=10:duration={seconds} \
             -f lavfi -i sine=frequency=440:beep_factor=4:sample_rate=44100:duration={seconds} \
             -c:v mpeg4 -c:a libmp3lame -q:a 4 -ac 2 -shortest"
        ),
        &["-metadata", "title=From AVI", &input],
    );
    input
}

#[test]
fn mp3_audio_is_copied_without_re_encoding() {
    let dir = Dir::new();
    let input = mp3_in_avi(&dir, "clip.avi", 4);
    let output = dir.path("clip.mp3");

    let (report, probe) = convert_ok(Path::new(&input), &output, &Options::default(), "t");

    assert!(report.copied);
    assert_eq!(report.sample_rate, 44_100);
    assert_eq!(report.channels, 2);
    assert!((report.duration_s - 4.0).abs() < 0.1, "{report:?}");
    assert_eq!(probe["format"]["tags"]["title"], "From AVI");
    assert_eq!(&std::fs::read(&output).expect("read")[..5], b"ID3\x04\x00");
    // The very same MP3 frames: what `ffmpeg -i IN -vn -c:a copy` makes
    // (whose Xing header also lets players skip the decoder delay).
    let cli = dir.str("cli.mp3");
    ffmpeg_cli("-i", &[&input, "-vn", "-c:a", "copy", &cli]);
    assert_eq!(decoded_md5(&output), decoded_md5(Path::new(&cli)));

    let options = Options::from_json(&json!({"quality": "V6"})).expect("valid");
    let reencoded = dir.path("reencoded.mp3");
    let (report, _) = convert_ok(Path::new(&input), &reencoded, &options, "t");
    assert!(!report.copied);
}

#[test]
fn an_mp3_stream_that_cannot_be_copied_cleanly_is_re_encoded() {
    let dir = Dir::new();
    let first = dir.str("first.ts");
    let second = dir.str("second.ts");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=2 \
         -c:a libmp3lame -ac 2",
        &[&first],
    );
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=660:sample_rate=48000:duration=2 \
         -c:a libmp3lame -ac 2 -output_ts_offset 2",
        &[&second],
    );
    let joined = dir.path("joined.ts");
    let mut bytes = std::fs::read(&first).expect("first part");
    bytes.extend(std::fs::read(&second).expect("second part"));
    std::fs::write(&joined, bytes).expect("joined file");
    let output = dir.path("joined.mp3");

    let (report, _) = convert_ok(&joined, &output, &Options::default(), "Joined");

    assert!(!report.copied, "a copy would switch rates mid-file");
    assert_eq!(report.sample_rate, 44_100);
    assert!((report.duration_s - 4.0).abs() < 0.1, "{report:?}");
}

#[test]
fn copying_is_much_faster_than_re_encoding() {
    let dir = Dir::new();
    let input = mp3_in_avi(&dir, "minute.avi", 60);
    // A trim past the end changes nothing but forces a re-encode at the
    // same (default) quality.
    let reencode = Options::from_json(&json!({"trim_end_s": 3600})).expect("valid");

    let started = Instant::now();
    let copied = convert(
        Path::new(&input),
        &dir.path("copied.mp3"),
        &Options::default(),
        "t",
    )
    .expect("copy");
    let copy_time = started.elapsed();
    let started = Instant::now();
    let encoded =
        convert(Path::new(&input), &dir.path("encoded.mp3"), &reencode, "t").expect("re-encode");
    let encode_time = started.elapsed();

    assert!(copied.copied);
    assert!(!encoded.copied);
    assert!((copied.duration_s - encoded.duration_s).abs() < 0.1);
    eprintln!(
        "60 s MP3-in-AVI: copy {copy_time:?}, re-encode {encode_time:?}, speedup {:.1}x",
        encode_time.as_secs_f64() / copy_time.as_secs_f64()
    );
}

#[test]
fn progress_is_reported_at_most_once_a_second_and_ends_at_one() {
    let dir = Dir::new();
    let input = dir.str("long.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=48000:duration=40 -ac 2 -c:a pcm_s16le",
        &[&input],
    );
    let output = dir.path("long.mp3");
    let mut calls: Vec<(Instant, f64)> = Vec::new();

    let report = convert_with_progress(
        Path::new(&input),
        &output,
        &Options::default(),
        "t",
        &mut |fraction| calls.push((Instant::now(), fraction)),
    )
    .expect("conversion succeeds");

    assert_mp3_duration(&report, 40.0);
    assert!(calls.len() >= 2, "{calls:?}");
    assert_eq!(calls.last().map(|(_, fraction)| *fraction), Some(1.0));
    assert!(calls[0].1 < 0.1, "starts near 0: {calls:?}");
    for pair in calls.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "not monotonic: {calls:?}");
        assert!((0.0..=1.0).contains(&pair[1].1));
    }
    // All but the final "done" call are at least a second apart.
    for pair in calls[..calls.len() - 1].windows(2) {
        assert!(pair[1].0 - pair[0].0 >= PROGRESS_INTERVAL, "{calls:?}");
    }
    eprintln!(
        "progress calls: {:?}",
        calls.iter().map(|(_, f)| *f).collect::<Vec<_>>()
    );
}

#[test]
fn progress_is_throttled_and_relative_to_the_span() {
    let mut calls = Vec::new();
    let mut record = |fraction: f64| calls.push(fraction);
    let mut progress = Progress::new(&mut record);
    // Trimmed to 10..30 s of the source.
    progress.set_span(10.0, Some(30.0));
    let started = Instant::now();
    let mut position = 0.0;
    while started.elapsed() < Duration::from_millis(1_300) {
        progress.at(position);
        position += 0.5;
        std::thread::sleep(Duration::from_millis(20));
    }
    progress.finish();

    // One call right away (before the span: 0), one a second later
    // (clamped to 1 by then), and the final one.
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0], 0.0);
    assert_eq!(calls[2], 1.0);

    let mut silent = Vec::new();
    let mut record = |fraction: f64| silent.push(fraction);
    let mut unknown = Progress::new(&mut record);
    unknown.set_span(0.0, None);
    unknown.at(5.0);
    unknown.finish();
    assert_eq!(silent, [1.0], "no duration, no fractions");
}

/// The old verification: decodes every frame and counts the samples.
fn decoded_samples(path: &Path) -> (u64, u32) {
    let mut ictx = format::input(path).expect("open MP3");
    let stream = ictx.streams().best(media::Type::Audio).expect("audio");
    let index = stream.index();
    let mut decoder = codec::context::Context::from_parameters(stream.parameters())
        .and_then(|context| context.decoder().audio())
        .expect("decoder");
    let mut frame = frame::Audio::empty();
    let (mut samples, mut rate) = (0u64, 0u32);
    let mut drain = |decoder: &mut codec::decoder::Audio| {
        while decoder.receive_frame(&mut frame).is_ok() {
            samples += frame.samples() as u64;
            rate = frame.rate();
        }
    };
    for (stream, packet) in ictx.packets() {
        if stream.index() == index {
            decoder.send_packet(&packet).expect("decodes");
            drain(&mut decoder);
        }
    }
    decoder.send_eof().expect("eof");
    drain(&mut decoder);
    (samples, rate)
}

#[test]
fn counting_frame_headers_gives_the_length_a_full_decode_gives() {
    let dir = Dir::new();
    let cases: [(&str, &str, serde_json::Value); 6] = [
        (
            "stereo.wav",
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=7.3 -ac 2 -c:a pcm_s16le",
            json!({}),
        ),
        (
            "mono8k.wav",
            "-f lavfi -i sine=frequency=300:sample_rate=8000:duration=3.1 -c:a pcm_s16le",
            json!({}),
        ),
        (
            "cbr.wav",
            "-f lavfi -i sine=frequency=440:sample_rate=48000:duration=2 -c:a pcm_s16le",
            json!({"quality": "cbr", "bitrate_kbps": 96}),
        ),
        (
            "trimmed.wav",
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=6 -c:a pcm_s16le",
            json!({"trim_start_s": 1.25, "trim_end_s": 4.5}),
        ),
        (
            "short.wav",
            "-f lavfi -i sine=frequency=440:sample_rate=22050:duration=0.05 -c:a pcm_s16le",
            json!({}),
        ),
        (
            "copied.mp3",
            "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=5 -c:a libmp3lame -q:a 4",
            json!({}),
        ),
    ];
    for (name, args, options) in cases {
        let input = dir.str(name);
        ffmpeg_cli(args, &[&input]);
        let output = dir.path(&format!("{name}.out.mp3"));
        let options = Options::from_json(&options).expect("valid options");

        let report = convert(Path::new(&input), &output, &options, "t").expect(name);

        let (samples, rate) = decoded_samples(&output);
        assert_eq!(rate, report.sample_rate, "{name}");
        assert_eq!(
            report.duration_s,
            samples as f64 / f64::from(rate),
            "{name}: counted {} s, decoded {samples} samples",
            report.duration_s
        );
    }
}

#[test]
fn frame_headers_are_read_for_every_mpeg_version_and_refused_otherwise() {
    // MPEG 1 layer III, 128 kbit/s, 44.1 kHz, joint stereo.
    assert_eq!(
        FrameHeader::parse(&[0xff, 0xfb, 0x90, 0x64]),
        Some(FrameHeader {
            sample_rate: 44_100,
            channels: 2,
            samples: 1152
        })
    );
    // MPEG 2 layer III, 24 kHz, mono.
    assert_eq!(
        FrameHeader::parse(&[0xff, 0xf3, 0x54, 0xc4]),
        Some(FrameHeader {
            sample_rate: 24_000,
            channels: 1,
            samples: 576
        })
    );
    // MPEG 2.5 layer III, 8 kHz, mono.
    assert_eq!(
        FrameHeader::parse(&[0xff, 0xe3, 0x18, 0xc4]),
        Some(FrameHeader {
            sample_rate: 8_000,
            channels: 1,
            samples: 576
        })
    );
    assert_eq!(FrameHeader::parse(&[0xff, 0xfb, 0x90]), None, "too short");
    assert_eq!(FrameHeader::parse(&[0x49, 0x44, 0x33, 0x04]), None, "ID3");
    assert_eq!(
        FrameHeader::parse(&[0xff, 0xeb, 0x90, 0x64]),
        None,
        "reserved version"
    );
    assert_eq!(
        FrameHeader::parse(&[0xff, 0xfb, 0x9c, 0x64]),
        None,
        "reserved rate"
    );
    assert_eq!(
        FrameHeader::parse(&[0xff, 0xfb, 0xf0, 0x64]),
        None,
        "bad bit rate"
    );
}

#[test]
fn verification_rejects_a_truncated_or_damaged_mp3() {
    let dir = Dir::new();
    let input = dir.str("tone.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=20 -ac 2 -c:a pcm_s16le",
        &[&input],
    );
    let output = dir.path("tone.mp3");
    convert_ok(Path::new(&input), &output, &Options::default(), "t");
    let bytes = std::fs::read(&output).expect("read MP3");
    let expect_20s = Written {
        expected_s: 20.0,
        copied: false,
        first_packet: None,
    };

    // Cut off half way, as a full disk would.
    let truncated = dir.path("truncated.mp3");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let error = verify(&truncated, &expect_20s, &Watchdog::new(None)).expect_err("half is missing");
    assert!(error.to_string().contains("it lasts"), "{error}");

    // A fifth of the frames overwritten with zeros.
    let mut zeroed = bytes.clone();
    let (from, to) = (bytes.len() * 2 / 5, bytes.len() * 3 / 5);
    zeroed[from..to].fill(0);
    let damaged = dir.path("zeroed.mp3");
    std::fs::write(&damaged, &zeroed).expect("write");
    let error =
        verify(&damaged, &expect_20s, &Watchdog::new(None)).expect_err("frames are missing");
    assert!(error.to_string().contains("failed verification"), "{error}");

    // Only the ID3 tag survives.
    let tag_only = dir.path("tag-only.mp3");
    std::fs::write(&tag_only, &bytes[..200]).expect("write");
    let error = verify(&tag_only, &expect_20s, &Watchdog::new(None)).expect_err("no audio");
    assert!(error.to_string().contains("failed verification"), "{error}");
    assert!(error.is_permanent());
}

#[test]
fn a_conversion_over_its_time_limit_stops_and_leaves_nothing() {
    let dir = Dir::new();
    let input = dir.str("long.m4a");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=600 -c:a aac -b:a 48k",
        &[&input],
    );
    let output = dir.path("long.mp3");
    let limit = TimeLimit {
        factor: 0.0,
        min: Duration::from_millis(300),
    };

    let started = Instant::now();
    let error = convert_within(
        Path::new(&input),
        &output,
        &Options::default(),
        "t",
        Some(limit),
        &mut |_| {},
    )
    .expect_err("10 minutes do not convert in 0.3 s");
    let took = started.elapsed();

    assert!(
        matches!(error, TranscodeError::TimedOut { limit_s } if limit_s == 0.3),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the conversion exceeded its time limit of 0.3 s"
    );
    assert!(error.is_permanent());
    assert!(took < Duration::from_secs(2), "it went on for {took:?}");
    assert!(!output.exists(), "the partial MP3 was removed");

    // No time at all: stopped while FFmpeg opens the file.
    let none = TimeLimit {
        factor: 0.0,
        min: Duration::ZERO,
    };
    let error = convert_within(
        Path::new(&input),
        &output,
        &Options::default(),
        "t",
        Some(none),
        &mut |_| {},
    )
    .expect_err("no time");
    assert!(
        matches!(error, TranscodeError::TimedOut { .. }),
        "{error:?}"
    );
    assert!(!output.exists());
}

#[test]
fn the_time_limit_scales_with_the_input() {
    let dir = Dir::new();
    let input = dir.str("tone.wav");
    ffmpeg_cli(
        "-f lavfi -i sine=frequency=440:sample_rate=44100:duration=30 -c:a pcm_s16le",
        &[&input],
    );
    let output = dir.path("tone.mp3");
    // 0.1 s alone would not do; 0.1 s + 0.2 s per second of input does.
    let limit = TimeLimit {
        factor: 0.2,
        min: Duration::from_millis(100),
    };

    let report = convert_within(
        Path::new(&input),
        &output,
        &Options::default(),
        "t",
        Some(limit),
        &mut |_| {},
    )
    .expect("6.1 s is plenty for 30 s of audio");

    assert_mp3_duration(&report, 30.0);
    let watchdog = Watchdog::new(Some(limit));
    assert_eq!(watchdog.allowance_s(), Some(0.1));
    watchdog.cover(30.0);
    watchdog.cover(f64::NAN);
    watchdog.cover(-4.0);
    assert_eq!(watchdog.allowance_s(), Some(0.1 + 0.2 * 30.0));
    // A file that holds more than it says is judged by what it holds.
    watchdog.cover(50.0);
    watchdog.cover(40.0);
    assert_eq!(watchdog.allowance_s(), Some(0.1 + 0.2 * 50.0));
    assert!(!watchdog.expired());
    assert_eq!(Watchdog::new(None).allowance_s(), None);
    assert_eq!(seconds_text(0.25), "0.3");
    assert_eq!(seconds_text(1260.0), "1260");
}

#[test]
fn init_is_idempotent() {
    init();
    init();
}
