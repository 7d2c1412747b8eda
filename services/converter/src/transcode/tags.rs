//! The MP3's ID3v2.4 tags: title, artist, album, date and comment.

use ffmpeg_next as ffmpeg;

use ffmpeg::{Dictionary, format};

/// Tags copied from the source, besides the title.
pub(super) const COPIED_TAGS: [&str; 4] = ["artist", "album", "date", "comment"];

/// MP3 muxer options: ID3v2.4 tags (what the issue asks for; also FFmpeg's
/// default, pinned here so a library upgrade cannot change it).
pub(super) fn muxer_options() -> Dictionary<'static> {
    let mut options = Dictionary::new();
    options.set("id3v2_version", "4");
    options
}

/// The MP3's tags: the source's title, else `title`; plus
/// artist/album/date/comment from the container or, failing that, the audio
/// stream (Ogg and Matroska often tag the stream).
pub(super) fn output_tags(
    ictx: &format::context::Input,
    stream: &ffmpeg::Stream<'_>,
    title: &str,
) -> Dictionary<'static> {
    let container = ictx.metadata();
    let stream_tags = stream.metadata();
    let source = |key: &str| {
        container
            .get(key)
            .or_else(|| stream_tags.get(key))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };

    let mut tags = Dictionary::new();
    let title = title.trim();
    if let Some(title) = source("title") {
        tags.set("title", &title);
    } else if !title.is_empty() {
        tags.set("title", title);
    }
    for key in COPIED_TAGS {
        if let Some(value) = source(key) {
            tags.set(key, &value);
        }
    }
    // What the CLI writes too (the TSSE frame).
    let version = format::version();
    tags.set(
        "encoder",
        &format!(
            "Lavf{}.{}.{}",
            version >> 16,
            (version >> 8) & 0xff,
            version & 0xff
        ),
    );
    tags
}
