//! The audio copied out of a video before its upload, checked with the
//! FFmpeg CLI on the real sample files `scripts/fetch-media` downloads: the
//! same audio packets byte for byte, the same decoded sound (so the same
//! start and length), the same tags, the same bytes every time; files
//! without audio and unreadable ones are uploaded whole.

use std::path::Path;
use std::process::Command;

use common::testing::ffmpeg;
use desktop_core::extract::{Extracted, extract_audio};

/// What the FFmpeg CLI prints for `args` on `file`.
fn ffmpeg_out(file: &Path, args: &[&str]) -> String {
    let output = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(
        output.status.success(),
        "ffmpeg {args:?} on {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Each audio packet's stream, size and MD5, in order (timestamps left
/// out: Matroska counts in milliseconds).
fn audio_packets(file: &Path) -> Vec<String> {
    ffmpeg_out(file, &["-map", "0:a", "-c", "copy", "-f", "framemd5", "-"])
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            format!("{} {} {}", fields[0], fields[4], fields[5])
        })
        .collect()
}

/// The MD5 of the first audio track decoded, as the converter decodes it.
fn decoded(file: &Path) -> String {
    ffmpeg_out(file, &["-map", "0:a:0", "-f", "md5", "-"])
}

/// What `ffprobe ARGS -of json` says of `file`.
fn probe(file: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(file)
        .output()
        .expect("run ffprobe");
    serde_json::from_slice(&output.stdout).expect("ffprobe json")
}

fn tags(file: &Path) -> Vec<(String, String)> {
    let json = probe(file, &["-show_entries", "format_tags"]);
    let mut tags: Vec<(String, String)> = json["format"]["tags"]
        .as_object()
        .map(|tags| {
            tags.iter()
                // Matroska spells a tag's spaces as underscores.
                .map(|(k, v)| {
                    let key = k.to_lowercase().replace(' ', "_");
                    (key, v.as_str().unwrap_or_default().to_owned())
                })
                // Written by whichever muxer wrote the file.
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "encoder"
                            | "major_brand"
                            | "minor_version"
                            | "compatible_brands"
                            | "creation_time"
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

#[test]
fn every_sample_with_audio_travels_as_its_audio_packets_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut extracted = 0;
    for source in common::testing::media_files() {
        let name = source
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let mut progress = Vec::new();
        let first = extract_audio(&source, dir.path(), "first", &mut |p| progress.push(p));
        let second = extract_audio(&source, dir.path(), "second", &mut |_| {});
        match (first, second) {
            (
                Extracted::Audio { path, bytes },
                Extracted::Audio {
                    path: again,
                    bytes: again_bytes,
                },
            ) => {
                let written = std::fs::read(&path).expect("read extracted");
                assert_eq!(written.len() as u64, bytes, "{name}");
                assert!(
                    bytes < std::fs::metadata(&source).expect("size").len(),
                    "{name}: smaller than the video"
                );
                assert_eq!(audio_packets(&path), audio_packets(&source), "{name}");
                assert_eq!(decoded(&path), decoded(&source), "{name}: the same sound");
                assert_eq!(tags(&path), tags(&source), "{name}: the same tags");
                assert_eq!(again_bytes, bytes, "{name}");
                assert!(
                    written == std::fs::read(&again).expect("read again"),
                    "{name}: the same bytes each time"
                );
                assert_eq!(progress.last().copied(), Some(1.0), "{name}");
                assert!(
                    progress.windows(2).all(|w| w[0] <= w[1]),
                    "{name}: {progress:?}"
                );
                extracted += 1;
                std::fs::remove_file(&path).expect("remove");
                std::fs::remove_file(&again).expect("remove");
            }
            (Extracted::Whole(reason), Extracted::Whole(_)) => {
                assert_eq!(reason, "it has no audio track", "{name}");
            }
            (first, second) => panic!("{name}: {first:?} then {second:?}"),
        }
    }
    // Six of the eight samples have audio.
    assert_eq!(extracted, 6);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn files_ffmpeg_cannot_read_are_uploaded_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("holiday.mp4");
    std::fs::write(&junk, b"this is not a video, only its name says so").expect("write");
    match extract_audio(&junk, dir.path(), "junk", &mut |_| {}) {
        Extracted::Whole(reason) => assert!(reason.contains("cannot open"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let missing = dir.path().join("gone.mp4");
    assert!(matches!(
        extract_audio(&missing, dir.path(), "gone", &mut |_| {}),
        Extracted::Whole(_)
    ));
    // Nothing left behind but the junk itself.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
}

#[test]
fn the_cover_the_chapters_and_every_audio_track_travel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("concert.mkv");
    let chapters = dir.path().join("chapters.txt");
    std::fs::write(
        &chapters,
        ";FFMETADATA1\ntitle=Live\nartist=Band\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=Intro\n\
         [CHAPTER]\nTIMEBASE=1/1000\nSTART=1000\nEND=2000\ntitle=Song\n",
    )
    .expect("chapters");
    let cover = dir.path().join("cover.png");
    let cover_path = cover.to_str().expect("utf-8");
    ffmpeg(
        "-f lavfi -i color=c=red:s=64x64:d=0.04 -frames:v 1",
        &[cover_path],
    );
    ffmpeg(
        "-f lavfi -i testsrc=s=160x120:r=10:d=2 -f lavfi -i sine=frequency=440:d=2 \
         -f lavfi -i sine=frequency=880:d=2",
        &[
            "-i",
            chapters.to_str().expect("utf-8"),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-map",
            "2:a",
            "-map_metadata",
            "3",
            "-map_chapters",
            "3",
            "-c:v",
            "libx264",
            "-c:a:0",
            "libvorbis",
            "-c:a:1",
            "flac",
            "-attach",
            cover_path,
            "-metadata:s:t",
            "mimetype=image/png",
            "-metadata:s:t",
            "filename=cover.png",
            source.to_str().expect("utf-8"),
        ],
    );
    let Extracted::Audio { path, .. } = extract_audio(&source, dir.path(), "out", &mut |_| {})
    else {
        panic!("no audio extracted");
    };
    assert_eq!(audio_packets(&path), audio_packets(&source));
    let probe = probe(&path, &["-show_chapters", "-show_streams", "-show_format"]);
    let kinds: Vec<&str> = probe["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["codec_type"].as_str().unwrap_or_default())
        .collect();
    // The cover arrives as the source's demuxer shows it: FFmpeg 5.1 reads
    // a Matroska picture attachment as a one-frame picture stream, and
    // writes it back as one. Its bytes are the PNG's.
    assert_eq!(kinds, ["audio", "audio", "video"], "{probe}");
    let cover_stream = &probe["streams"][2];
    assert_eq!(cover_stream["codec_name"], "png", "{probe}");
    assert_eq!(cover_stream["tags"]["FILENAME"], "cover.png", "{probe}");
    let cover_md5 = ffmpeg_out(&path, &["-map", "0:v", "-c", "copy", "-f", "md5", "-"]);
    let source_md5 = ffmpeg_out(&source, &["-map", "0:v:1", "-c", "copy", "-f", "md5", "-"]);
    assert_eq!(cover_md5, source_md5, "the cover's bytes");
    let titles: Vec<&str> = probe["chapters"]
        .as_array()
        .expect("chapters")
        .iter()
        .map(|c| c["tags"]["title"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(titles, ["Intro", "Song"]);
    assert_eq!(probe["format"]["tags"]["ARTIST"], "Band", "{probe}");
}
